//! SQL Server column types of the fixture server: parsing declarations such as `decimal(38,10)`,
//! the Arrow storage of each type, COLMETADATA type info and the TDS encoding of one value.

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
    Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, Int8Array, LargeStringArray,
    StringArray, StringViewArray, Time64NanosecondArray, TimestampMicrosecondArray,
    TimestampNanosecondArray, UInt8Array,
};
use arrow::datatypes::{DataType, Field, TimeUnit};

/// Days from 0001-01-01 to 1970-01-01.
pub const DAYS_0001_TO_1970: i64 = 719_162;
/// Days from 1900-01-01 to 1970-01-01.
pub const DAYS_1900_TO_1970: i64 = 25_567;
const NS_PER_DAY: i64 = 86_400_000_000_000;

/// The collation sent with character types: SQL_Latin1_General_CP1_CI_AS (code page 1252).
pub const COLLATION: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];

/// A declared SQL Server column type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlType {
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    Bit,
    Real,
    Float,
    Decimal(u8, u8),
    Numeric(u8, u8),
    Money,
    SmallMoney,
    Date,
    Time(u8),
    DateTime,
    SmallDateTime,
    DateTime2(u8),
    DateTimeOffset(u8),
    UniqueIdentifier,
    Char(u16),
    /// `None` is `(max)`.
    VarChar(Option<u16>),
    NChar(u16),
    NVarChar(Option<u16>),
    Binary(u16),
    VarBinary(Option<u16>),
    /// rowversion (`timestamp` in the catalog): binary(8) on the wire, a big-endian counter.
    RowVersion,
    Xml,
    /// A type the fixture only declares in its catalog (sql_variant, geography, ...).
    Other(String),
}

impl SqlType {
    /// Parses `name` or `name(args)`, case-insensitively.
    pub fn parse(decl: &str) -> SqlType {
        let decl = decl.trim().to_ascii_lowercase();
        let (name, args) = match decl.find('(') {
            Some(i) => (
                decl[..i].trim().to_string(),
                decl[i + 1..].trim_end_matches(')').to_string(),
            ),
            None => (decl.clone(), String::new()),
        };
        let nums: Vec<&str> = args.split(',').map(str::trim).collect();
        let n = |i: usize, d: u16| nums.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
        let len = |d: u16| {
            if args == "max" {
                None
            } else {
                Some(n(0, d))
            }
        };
        match name.as_str() {
            "tinyint" => SqlType::TinyInt,
            "smallint" => SqlType::SmallInt,
            "int" => SqlType::Int,
            "bigint" => SqlType::BigInt,
            "bit" => SqlType::Bit,
            "real" => SqlType::Real,
            "float" => SqlType::Float,
            "decimal" => SqlType::Decimal(n(0, 18) as u8, n(1, 0) as u8),
            "numeric" => SqlType::Numeric(n(0, 18) as u8, n(1, 0) as u8),
            "money" => SqlType::Money,
            "smallmoney" => SqlType::SmallMoney,
            "date" => SqlType::Date,
            "time" => SqlType::Time(n(0, 7) as u8),
            "datetime" => SqlType::DateTime,
            "smalldatetime" => SqlType::SmallDateTime,
            "datetime2" => SqlType::DateTime2(n(0, 7) as u8),
            "datetimeoffset" => SqlType::DateTimeOffset(n(0, 7) as u8),
            "uniqueidentifier" => SqlType::UniqueIdentifier,
            "char" => SqlType::Char(n(0, 1)),
            "varchar" => SqlType::VarChar(len(1)),
            "nchar" => SqlType::NChar(n(0, 1)),
            "nvarchar" => SqlType::NVarChar(len(1)),
            "binary" => SqlType::Binary(n(0, 1)),
            "varbinary" => SqlType::VarBinary(len(1)),
            "rowversion" | "timestamp" => SqlType::RowVersion,
            "xml" => SqlType::Xml,
            _ => SqlType::Other(name),
        }
    }

    /// The SQL type a computed result column of Arrow type `dt` is sent as.
    pub fn for_arrow(dt: &DataType) -> SqlType {
        match dt {
            DataType::UInt8 => SqlType::TinyInt,
            DataType::Int8 | DataType::Int16 => SqlType::SmallInt,
            DataType::Int32 => SqlType::Int,
            DataType::Int64 | DataType::UInt32 | DataType::UInt64 => SqlType::BigInt,
            DataType::Boolean => SqlType::Bit,
            DataType::Float32 => SqlType::Real,
            DataType::Float64 => SqlType::Float,
            DataType::Decimal128(p, s) => SqlType::Decimal(*p, (*s).max(0) as u8),
            DataType::Date32 => SqlType::Date,
            DataType::Time64(_) => SqlType::Time(7),
            DataType::Timestamp(TimeUnit::Nanosecond, _) => SqlType::DateTime2(7),
            DataType::Timestamp(_, _) => SqlType::DateTime2(6),
            DataType::Binary | DataType::LargeBinary => SqlType::VarBinary(None),
            _ => SqlType::NVarChar(None),
        }
    }

    /// The SQL type of a result field: the fixture's declaration in field metadata, or from Arrow.
    pub fn of_field(field: &Field) -> SqlType {
        match field.metadata().get("sqltype") {
            Some(decl) => {
                let t = SqlType::parse(decl);
                if t.storage() == *field.data_type() {
                    t
                } else {
                    SqlType::for_arrow(field.data_type())
                }
            }
            None => SqlType::for_arrow(field.data_type()),
        }
    }

    /// The Arrow type fixture values of this SQL type are stored as.
    pub fn storage(&self) -> DataType {
        match self {
            SqlType::TinyInt => DataType::UInt8,
            SqlType::SmallInt => DataType::Int16,
            SqlType::Int => DataType::Int32,
            SqlType::BigInt => DataType::Int64,
            SqlType::Bit => DataType::Boolean,
            SqlType::Real => DataType::Float32,
            SqlType::Float => DataType::Float64,
            SqlType::Decimal(p, s) | SqlType::Numeric(p, s) => DataType::Decimal128(*p, *s as i8),
            SqlType::Money => DataType::Decimal128(19, 4),
            SqlType::SmallMoney => DataType::Decimal128(10, 4),
            SqlType::Date => DataType::Date32,
            SqlType::Time(_) => DataType::Time64(TimeUnit::Nanosecond),
            SqlType::DateTime | SqlType::SmallDateTime => {
                DataType::Timestamp(TimeUnit::Microsecond, None)
            }
            SqlType::DateTime2(n) if *n <= 6 => DataType::Timestamp(TimeUnit::Microsecond, None),
            SqlType::DateTime2(_) => DataType::Timestamp(TimeUnit::Nanosecond, None),
            SqlType::Binary(_) | SqlType::VarBinary(_) | SqlType::RowVersion => DataType::Binary,
            _ => DataType::Utf8,
        }
    }

    /// `(data_type, character_maximum_length, numeric_precision, numeric_scale, datetime_precision)`
    /// as INFORMATION_SCHEMA.COLUMNS reports them.
    pub fn catalog(&self) -> (String, Option<i32>, Option<i32>, Option<i32>, Option<i32>) {
        let max = |l: &Option<u16>| Some(l.map_or(-1, i32::from));
        match self {
            SqlType::TinyInt => ("tinyint".into(), None, Some(3), Some(0), None),
            SqlType::SmallInt => ("smallint".into(), None, Some(5), Some(0), None),
            SqlType::Int => ("int".into(), None, Some(10), Some(0), None),
            SqlType::BigInt => ("bigint".into(), None, Some(19), Some(0), None),
            SqlType::Bit => ("bit".into(), None, None, None, None),
            SqlType::Real => ("real".into(), None, Some(24), None, None),
            SqlType::Float => ("float".into(), None, Some(53), None, None),
            SqlType::Decimal(p, s) => (
                "decimal".into(),
                None,
                Some(*p as i32),
                Some(*s as i32),
                None,
            ),
            SqlType::Numeric(p, s) => (
                "numeric".into(),
                None,
                Some(*p as i32),
                Some(*s as i32),
                None,
            ),
            SqlType::Money => ("money".into(), None, Some(19), Some(4), None),
            SqlType::SmallMoney => ("smallmoney".into(), None, Some(10), Some(4), None),
            SqlType::Date => ("date".into(), None, None, None, Some(0)),
            SqlType::Time(n) => ("time".into(), None, None, None, Some(*n as i32)),
            SqlType::DateTime => ("datetime".into(), None, None, None, Some(3)),
            SqlType::SmallDateTime => ("smalldatetime".into(), None, None, None, Some(0)),
            SqlType::DateTime2(n) => ("datetime2".into(), None, None, None, Some(*n as i32)),
            SqlType::DateTimeOffset(n) => {
                ("datetimeoffset".into(), None, None, None, Some(*n as i32))
            }
            SqlType::UniqueIdentifier => ("uniqueidentifier".into(), None, None, None, None),
            SqlType::Char(n) => ("char".into(), Some(*n as i32), None, None, None),
            SqlType::VarChar(l) => ("varchar".into(), max(l), None, None, None),
            SqlType::NChar(n) => ("nchar".into(), Some(*n as i32), None, None, None),
            SqlType::NVarChar(l) => ("nvarchar".into(), max(l), None, None, None),
            SqlType::Binary(n) => ("binary".into(), Some(*n as i32), None, None, None),
            SqlType::VarBinary(l) => ("varbinary".into(), max(l), None, None, None),
            SqlType::RowVersion => ("timestamp".into(), None, None, None, None),
            SqlType::Xml => ("xml".into(), Some(-1), None, None, None),
            SqlType::Other(name) => (name.clone(), None, None, None, None),
        }
    }

    /// The type as `sys.dm_exec_describe_first_result_set` spells it in `system_type_name`.
    pub fn type_name(&self) -> String {
        let (name, len, p, s, dp) = self.catalog();
        let size = |l: Option<i32>| match l {
            Some(l) if l >= 0 => l.to_string(),
            _ => "max".to_string(),
        };
        match self {
            SqlType::Decimal(..) | SqlType::Numeric(..) => {
                format!("{name}({},{})", p.unwrap_or(18), s.unwrap_or(0))
            }
            SqlType::Time(_) | SqlType::DateTime2(_) | SqlType::DateTimeOffset(_) => {
                format!("{name}({})", dp.unwrap_or(7))
            }
            SqlType::Char(_)
            | SqlType::VarChar(_)
            | SqlType::NChar(_)
            | SqlType::NVarChar(_)
            | SqlType::Binary(_)
            | SqlType::VarBinary(_) => format!("{name}({})", size(len)),
            _ => name,
        }
    }

    /// TYPE_INFO of COLMETADATA.
    pub fn type_info(&self, out: &mut Vec<u8>) {
        match self {
            SqlType::TinyInt => out.extend_from_slice(&[0x26, 1]),
            SqlType::SmallInt => out.extend_from_slice(&[0x26, 2]),
            SqlType::Int => out.extend_from_slice(&[0x26, 4]),
            SqlType::BigInt | SqlType::Other(_) => out.extend_from_slice(&[0x26, 8]),
            SqlType::Bit => out.extend_from_slice(&[0x68, 1]),
            SqlType::Real => out.extend_from_slice(&[0x6D, 4]),
            SqlType::Float => out.extend_from_slice(&[0x6D, 8]),
            SqlType::Decimal(p, s) => out.extend_from_slice(&[0x6A, decimal_len(*p), *p, *s]),
            SqlType::Numeric(p, s) => out.extend_from_slice(&[0x6C, decimal_len(*p), *p, *s]),
            SqlType::Money => out.extend_from_slice(&[0x6E, 8]),
            SqlType::SmallMoney => out.extend_from_slice(&[0x6E, 4]),
            SqlType::Date => out.push(0x28),
            SqlType::Time(n) => out.extend_from_slice(&[0x29, *n]),
            SqlType::DateTime => out.extend_from_slice(&[0x6F, 8]),
            SqlType::SmallDateTime => out.extend_from_slice(&[0x6F, 4]),
            SqlType::DateTime2(n) => out.extend_from_slice(&[0x2A, *n]),
            SqlType::DateTimeOffset(n) => out.extend_from_slice(&[0x2B, *n]),
            SqlType::UniqueIdentifier => out.extend_from_slice(&[0x24, 16]),
            SqlType::Char(n) => string_info(out, 0xAF, Some(*n), true),
            SqlType::VarChar(l) => string_info(out, 0xA7, *l, true),
            SqlType::NChar(n) => string_info(out, 0xEF, Some(n * 2), true),
            SqlType::NVarChar(l) => string_info(out, 0xE7, l.map(|n| n * 2), true),
            SqlType::Binary(n) => string_info(out, 0xAD, Some(*n), false),
            SqlType::RowVersion => string_info(out, 0xAD, Some(8), false),
            SqlType::VarBinary(l) => string_info(out, 0xA5, *l, false),
            SqlType::Xml => out.extend_from_slice(&[0xF1, 0]),
        }
    }

    fn is_plp(&self) -> bool {
        matches!(
            self,
            SqlType::VarChar(None)
                | SqlType::NVarChar(None)
                | SqlType::VarBinary(None)
                | SqlType::Xml
        )
    }

    /// Writes a NULL in ROW form.
    pub fn encode_null(&self, out: &mut Vec<u8>) {
        if self.is_plp() {
            out.extend_from_slice(&u64::MAX.to_le_bytes());
        } else if matches!(
            self,
            SqlType::Char(_)
                | SqlType::VarChar(_)
                | SqlType::NChar(_)
                | SqlType::NVarChar(_)
                | SqlType::Binary(_)
                | SqlType::VarBinary(_)
                | SqlType::RowVersion
        ) {
            out.extend_from_slice(&0xFFFFu16.to_le_bytes());
        } else {
            out.push(0);
        }
    }
}

fn decimal_len(p: u8) -> u8 {
    match p {
        0..=9 => 5,
        10..=19 => 9,
        20..=28 => 13,
        _ => 17,
    }
}

fn time_len(n: u8) -> usize {
    match n {
        0..=2 => 3,
        3..=4 => 4,
        _ => 5,
    }
}

fn string_info(out: &mut Vec<u8>, ty: u8, len: Option<u16>, collation: bool) {
    out.push(ty);
    out.extend_from_slice(&len.unwrap_or(0xFFFF).to_le_bytes());
    if collation {
        out.extend_from_slice(&COLLATION);
    }
}

/// A typed view of one result column, downcast once per batch.
pub enum Col<'a> {
    U8(&'a UInt8Array),
    I8(&'a Int8Array),
    I16(&'a Int16Array),
    I32(&'a Int32Array),
    I64(&'a Int64Array),
    Bool(&'a BooleanArray),
    F32(&'a Float32Array),
    F64(&'a Float64Array),
    Dec(&'a Decimal128Array),
    Date(&'a Date32Array),
    Time(&'a Time64NanosecondArray),
    TsUs(&'a TimestampMicrosecondArray),
    TsNs(&'a TimestampNanosecondArray),
    Str(&'a StringArray),
    LStr(&'a LargeStringArray),
    VStr(&'a StringViewArray),
    Bin(&'a BinaryArray),
    /// Anything else is sent as its display string.
    Other(ArrayRef),
}

impl<'a> Col<'a> {
    /// Downcasts `array` once.
    pub fn new(array: &'a ArrayRef) -> Col<'a> {
        let a = array.as_ref();
        match a.data_type() {
            DataType::UInt8 => Col::U8(a.as_primitive()),
            DataType::Int8 => Col::I8(a.as_primitive()),
            DataType::Int16 => Col::I16(a.as_primitive()),
            DataType::Int32 => Col::I32(a.as_primitive()),
            DataType::Int64 => Col::I64(a.as_primitive()),
            DataType::Boolean => Col::Bool(a.as_boolean()),
            DataType::Float32 => Col::F32(a.as_primitive()),
            DataType::Float64 => Col::F64(a.as_primitive()),
            DataType::Decimal128(_, _) => Col::Dec(a.as_primitive()),
            DataType::Date32 => Col::Date(a.as_primitive()),
            DataType::Time64(TimeUnit::Nanosecond) => Col::Time(a.as_primitive()),
            DataType::Timestamp(TimeUnit::Microsecond, _) => Col::TsUs(a.as_primitive()),
            DataType::Timestamp(TimeUnit::Nanosecond, _) => Col::TsNs(a.as_primitive()),
            DataType::Utf8 => Col::Str(a.as_string()),
            DataType::LargeUtf8 => Col::LStr(a.as_string()),
            DataType::Utf8View => Col::VStr(a.as_string_view()),
            DataType::Binary => Col::Bin(a.as_binary()),
            _ => Col::Other(
                arrow::compute::cast(a, &DataType::Utf8).unwrap_or_else(|_| array.clone()),
            ),
        }
    }

    /// Whether row `i` is NULL.
    pub fn is_null(&self, i: usize) -> bool {
        match self {
            Col::U8(a) => a.is_null(i),
            Col::I8(a) => a.is_null(i),
            Col::I16(a) => a.is_null(i),
            Col::I32(a) => a.is_null(i),
            Col::I64(a) => a.is_null(i),
            Col::Bool(a) => a.is_null(i),
            Col::F32(a) => a.is_null(i),
            Col::F64(a) => a.is_null(i),
            Col::Dec(a) => a.is_null(i),
            Col::Date(a) => a.is_null(i),
            Col::Time(a) => a.is_null(i),
            Col::TsUs(a) => a.is_null(i),
            Col::TsNs(a) => a.is_null(i),
            Col::Str(a) => a.is_null(i),
            Col::LStr(a) => a.is_null(i),
            Col::VStr(a) => a.is_null(i),
            Col::Bin(a) => a.is_null(i),
            Col::Other(a) => a.is_null(i),
        }
    }

    fn int(&self, i: usize) -> i64 {
        match self {
            Col::U8(a) => a.value(i) as i64,
            Col::I8(a) => a.value(i) as i64,
            Col::I16(a) => a.value(i) as i64,
            Col::I32(a) => a.value(i) as i64,
            Col::I64(a) => a.value(i),
            Col::Bool(a) => a.value(i) as i64,
            Col::F32(a) => a.value(i) as i64,
            Col::F64(a) => a.value(i) as i64,
            Col::Dec(a) => a.value(i) as i64,
            Col::Date(a) => a.value(i) as i64,
            Col::Time(a) => a.value(i),
            Col::TsUs(a) => a.value(i),
            Col::TsNs(a) => a.value(i),
            _ => 0,
        }
    }

    fn float(&self, i: usize) -> f64 {
        match self {
            Col::F32(a) => a.value(i) as f64,
            Col::F64(a) => a.value(i),
            _ => self.int(i) as f64,
        }
    }

    fn text(&self, i: usize) -> std::borrow::Cow<'_, str> {
        match self {
            Col::Str(a) => a.value(i).into(),
            Col::LStr(a) => a.value(i).into(),
            Col::VStr(a) => a.value(i).into(),
            Col::Other(a) => a
                .as_any()
                .downcast_ref::<StringArray>()
                .map(|s| s.value(i).to_string())
                .unwrap_or_default()
                .into(),
            Col::Bin(a) => String::from_utf8_lossy(a.value(i)),
            _ => self.int(i).to_string().into(),
        }
    }

    /// (days since the epoch, nanoseconds of the day) of a date, time or timestamp.
    fn day_ns(&self, i: usize) -> (i64, i64) {
        match self {
            Col::TsUs(a) => {
                let v = a.value(i);
                (
                    v.div_euclid(86_400_000_000),
                    v.rem_euclid(86_400_000_000) * 1000,
                )
            }
            Col::Date(a) => (a.value(i) as i64, 0),
            _ => {
                let v = self.int(i);
                (v.div_euclid(NS_PER_DAY), v.rem_euclid(NS_PER_DAY))
            }
        }
    }
}

/// Writes the value of row `i` of `col` as SQL type `ty` (ROW form; NULLs included).
pub fn encode_value(ty: &SqlType, col: &Col<'_>, i: usize, out: &mut Vec<u8>) {
    if col.is_null(i) {
        ty.encode_null(out);
        return;
    }
    match ty {
        SqlType::TinyInt => out.extend_from_slice(&[1, col.int(i) as u8]),
        SqlType::SmallInt => {
            out.push(2);
            out.extend_from_slice(&(col.int(i) as i16).to_le_bytes());
        }
        SqlType::Int => {
            out.push(4);
            out.extend_from_slice(&(col.int(i) as i32).to_le_bytes());
        }
        SqlType::BigInt | SqlType::Other(_) => {
            out.push(8);
            out.extend_from_slice(&col.int(i).to_le_bytes());
        }
        SqlType::Bit => out.extend_from_slice(&[1, (col.int(i) != 0) as u8]),
        SqlType::Real => {
            out.push(4);
            out.extend_from_slice(&(col.float(i) as f32).to_le_bytes());
        }
        SqlType::Float => {
            out.push(8);
            out.extend_from_slice(&col.float(i).to_le_bytes());
        }
        SqlType::Decimal(p, _) | SqlType::Numeric(p, _) => {
            let v = match col {
                Col::Dec(a) => a.value(i),
                _ => col.int(i) as i128,
            };
            let len = decimal_len(*p);
            out.push(len);
            out.push(if v < 0 { 0 } else { 1 });
            let abs = v.unsigned_abs().to_le_bytes();
            out.extend_from_slice(&abs[..(len - 1) as usize]);
        }
        SqlType::Money => {
            let v = match col {
                Col::Dec(a) => a.value(i) as i64,
                _ => col.int(i),
            };
            out.push(8);
            out.extend_from_slice(&((v >> 32) as i32).to_le_bytes());
            out.extend_from_slice(&(v as u32).to_le_bytes());
        }
        SqlType::SmallMoney => {
            let v = match col {
                Col::Dec(a) => a.value(i) as i32,
                _ => col.int(i) as i32,
            };
            out.push(4);
            out.extend_from_slice(&v.to_le_bytes());
        }
        SqlType::Date => {
            out.push(3);
            let days = col.int(i) + DAYS_0001_TO_1970;
            out.extend_from_slice(&(days as u32).to_le_bytes()[..3]);
        }
        SqlType::Time(n) => {
            out.push(time_len(*n) as u8);
            put_time(out, col.day_ns(i).1, *n);
        }
        SqlType::DateTime2(n) => {
            out.push(time_len(*n) as u8 + 3);
            let (days, ns) = col.day_ns(i);
            put_datetime2(out, days, ns, *n);
        }
        SqlType::DateTimeOffset(n) => {
            let (days, ns, offset) = parse_dto(&col.text(i));
            out.push(time_len(*n) as u8 + 5);
            put_datetime2(out, days, ns, *n);
            out.extend_from_slice(&offset.to_le_bytes());
        }
        SqlType::DateTime => {
            let (days, ns) = col.day_ns(i);
            let us_of_day = ns / 1000;
            let ticks = ((us_of_day as i128 * 300 + 500_000) / 1_000_000) as u32;
            out.push(8);
            out.extend_from_slice(&((days + DAYS_1900_TO_1970) as i32).to_le_bytes());
            out.extend_from_slice(&ticks.to_le_bytes());
        }
        SqlType::SmallDateTime => {
            let (days, ns) = col.day_ns(i);
            let minutes = ns / 60_000_000_000;
            out.push(4);
            out.extend_from_slice(&((days + DAYS_1900_TO_1970) as u16).to_le_bytes());
            out.extend_from_slice(&(minutes as u16).to_le_bytes());
        }
        SqlType::UniqueIdentifier => {
            let u = uuid::Uuid::parse_str(&col.text(i)).unwrap_or_default();
            let b = u.as_bytes();
            out.push(16);
            out.extend_from_slice(&[b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6]]);
            out.extend_from_slice(&b[8..16]);
        }
        SqlType::Char(n) | SqlType::VarChar(Some(n)) => {
            let mut s = col.text(i).into_owned().into_bytes();
            if matches!(ty, SqlType::Char(_)) {
                s.resize((*n as usize).max(s.len()), b' ');
            }
            out.extend_from_slice(&(s.len() as u16).to_le_bytes());
            out.extend_from_slice(&s);
        }
        SqlType::NChar(n) | SqlType::NVarChar(Some(n)) => {
            let text = col.text(i);
            let len_at = out.len();
            out.extend_from_slice(&[0, 0]);
            let mut units = 0usize;
            for u in text.encode_utf16() {
                out.extend_from_slice(&u.to_le_bytes());
                units += 1;
            }
            if matches!(ty, SqlType::NChar(_)) {
                while units < *n as usize {
                    out.extend_from_slice(&(b' ' as u16).to_le_bytes());
                    units += 1;
                }
            }
            out[len_at..len_at + 2].copy_from_slice(&((units * 2) as u16).to_le_bytes());
        }
        SqlType::Binary(_) | SqlType::VarBinary(Some(_)) | SqlType::RowVersion => {
            let b = match col {
                Col::Bin(a) => a.value(i).to_vec(),
                _ => col.text(i).into_owned().into_bytes(),
            };
            out.extend_from_slice(&(b.len() as u16).to_le_bytes());
            out.extend_from_slice(&b);
        }
        SqlType::VarChar(None) => put_plp(out, col.text(i).as_bytes()),
        SqlType::NVarChar(None) | SqlType::Xml => {
            let bytes: Vec<u8> = col
                .text(i)
                .encode_utf16()
                .flat_map(|u| u.to_le_bytes())
                .collect();
            put_plp(out, &bytes);
        }
        SqlType::VarBinary(None) => match col {
            Col::Bin(a) => put_plp(out, a.value(i)),
            _ => put_plp(out, col.text(i).as_bytes()),
        },
    }
}

fn put_plp(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    for chunk in data.chunks(8000) {
        out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&0u32.to_le_bytes());
}

fn put_time(out: &mut Vec<u8>, ns_of_day: i64, scale: u8) {
    let increments = (ns_of_day / 10i64.pow(9 - scale as u32)) as u64;
    out.extend_from_slice(&increments.to_le_bytes()[..time_len(scale)]);
}

fn put_datetime2(out: &mut Vec<u8>, days: i64, ns_of_day: i64, scale: u8) {
    put_time(out, ns_of_day, scale);
    out.extend_from_slice(&((days + DAYS_0001_TO_1970) as u32).to_le_bytes()[..3]);
}

/// Parses the fixture form of a datetimeoffset, `YYYY-MM-DD HH:MM:SS[.fffffff] +HH:MM` (local time
/// and offset), into (UTC days since the epoch, UTC nanoseconds of the day, offset minutes).
pub fn parse_dto(s: &str) -> (i64, i64, i16) {
    let (local, off) = s.rsplit_once(' ').unwrap_or((s, "+00:00"));
    let sign = if off.starts_with('-') { -1 } else { 1 };
    let hm: Vec<i64> = off[1..].split(':').filter_map(|x| x.parse().ok()).collect();
    let offset = sign * (hm.first().copied().unwrap_or(0) * 60 + hm.get(1).copied().unwrap_or(0));
    let dt =
        chrono::NaiveDateTime::parse_from_str(local, "%Y-%m-%d %H:%M:%S%.f").unwrap_or_default();
    let utc = dt - chrono::Duration::minutes(offset);
    let days = utc
        .date()
        .signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default())
        .num_days();
    let ns = utc
        .time()
        .signed_duration_since(chrono::NaiveTime::default())
        .num_nanoseconds()
        .unwrap_or(0);
    (days, ns, offset as i16)
}

/// Builds a fixture field of declared type `decl`.
pub fn field(name: &str, decl: &str, nullable: bool) -> Field {
    let ty = SqlType::parse(decl);
    Field::new(name, ty.storage(), nullable).with_metadata(
        [("sqltype".to_string(), decl.to_string())]
            .into_iter()
            .collect(),
    )
}
