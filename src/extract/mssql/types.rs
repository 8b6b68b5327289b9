//! SQL Server → Arrow type mapping and the row decoder (the extraction hot path).
//!
//! tiberius's column metadata carries no precision, scale or nullability, so the mapping is made
//! from `INFORMATION_SCHEMA.COLUMNS` ([`SourceColumn`]). Each column becomes a [`Mapping`]; the
//! [`Decoder`] appends every row's `ColumnData` to one Arrow builder per column and cuts a
//! `RecordBatch` every `batch_size` rows, so memory is bounded by one batch per partition.
//!
//! | SQL Server | Arrow | note |
//! |---|---|---|
//! | bit | Boolean | |
//! | tinyint, smallint | Int16 | Delta has no unsigned byte |
//! | int | Int32 | |
//! | bigint | Int64 | |
//! | real, float(1..24) | Float32 | |
//! | float | Float64 | |
//! | decimal(p,s), numeric(p,s) | Decimal128(p,s) | from tiberius `Numeric`, never through f64 |
//! | money / smallmoney | Decimal128(19,4) / Decimal128(10,4) | selected as `CAST(.. AS decimal(19,4))` because tiberius decodes money as f64 |
//! | date | Date32 | |
//! | time(n) | Time64(ns) | 100 ns kept |
//! | datetime | Timestamp(µs) | 1/300 s ticks rounded to the µs |
//! | smalldatetime | Timestamp(µs) | |
//! | datetime2(0..6) | Timestamp(µs) | exact, full 0001–9999 range |
//! | datetime2(7) | Timestamp(ns) | 100 ns kept in landing; Delta (µs) floors to the microsecond; values outside 1677–2262 are an error naming the column |
//! | datetimeoffset(n) | Timestamp(µs or ns as datetime2, "UTC") + `<col>_offset_minutes` Int16 | instant in UTC plus the original offset |
//! | uniqueidentifier | Utf8 | canonical lowercase `8-4-4-4-12` |
//! | char, varchar, nchar, nvarchar (incl. max), text, ntext, sysname | Utf8 | char/nchar keep their padding |
//! | binary, varbinary (incl. max), image | Binary | |
//! | xml | Utf8 | |
//! | rowversion / timestamp | Int64 | big-endian counter, usable as a watermark |
//! | anything else (sql_variant, geography, geometry, hierarchyid, ...) | error | names table and column |

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    Time64NanosecondBuilder, TimestampMicrosecondBuilder, TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use tiberius::ColumnData;

use crate::error::{Error, Result};

/// Days from 0001-01-01 (the TDS date epoch) to 1970-01-01.
const DAYS_0001_TO_1970: i64 = 719_162;
/// Days from 1900-01-01 (the datetime epoch) to 1970-01-01.
const DAYS_1900_TO_1970: i64 = 25_567;
const US_PER_DAY: i64 = 86_400_000_000;
const NS_PER_DAY: i64 = 86_400_000_000_000;

/// One column as `INFORMATION_SCHEMA.COLUMNS` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceColumn {
    /// Column name.
    pub name: String,
    /// `DATA_TYPE` (lowercase type name).
    pub data_type: String,
    /// `CHARACTER_MAXIMUM_LENGTH` (-1 for max).
    pub max_length: Option<i32>,
    /// `NUMERIC_PRECISION`.
    pub precision: Option<i32>,
    /// `NUMERIC_SCALE`.
    pub scale: Option<i32>,
    /// `DATETIME_PRECISION`.
    pub datetime_precision: Option<i32>,
    /// `IS_NULLABLE = 'YES'`.
    pub nullable: bool,
}

/// How one source column is read and built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// bit.
    Bool,
    /// tinyint, smallint.
    I16,
    /// int.
    I32,
    /// bigint.
    I64,
    /// real.
    F32,
    /// float.
    F64,
    /// decimal, numeric, money (cast), smallmoney (cast).
    Decimal(u8, i8),
    /// date.
    Date,
    /// time(n).
    Time,
    /// datetime, smalldatetime, datetime2(0..6).
    TimestampUs,
    /// datetime2(7).
    TimestampNs,
    /// datetimeoffset(0..6): instant + offset column.
    OffsetUs,
    /// datetimeoffset(7): instant + offset column.
    OffsetNs,
    /// Strings, uniqueidentifier, xml.
    Utf8,
    /// Binary types.
    Binary,
    /// rowversion.
    RowVersion,
}

/// A mapped column.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// Source column.
    pub column: SourceColumn,
    /// Builder kind.
    pub kind: Kind,
    /// The select-list expression (quoted; casts money to decimal).
    pub select: String,
}

/// Quotes a T-SQL identifier: `[name]`, with `]` doubled.
pub fn quote_ident(name: &str) -> String {
    format!("[{}]", name.replace(']', "]]"))
}

/// Parses a SQL Server type as written in T-SQL (`decimal(18,4)`, `nvarchar(max)`,
/// `datetime2(3)`, `float(24)`) into the catalog fields of a column named `name`; refuses
/// malformed names and types Smelter does not map. Used for query result columns
/// (`sys.dm_exec_describe_first_result_set` reports `system_type_name` in this form) and for
/// the targets of `casts`.
pub fn column_of_type(
    name: &str,
    type_name: &str,
    nullable: bool,
) -> std::result::Result<SourceColumn, String> {
    let t = type_name.trim().to_ascii_lowercase();
    let (base, args) = match t.split_once('(') {
        Some((b, rest)) => {
            let inner = rest
                .strip_suffix(')')
                .ok_or_else(|| format!("`{type_name}` is not a SQL Server type name"))?;
            let args: Vec<&str> = inner.split(',').map(str::trim).collect();
            (b.trim().to_string(), args)
        }
        None => (t.clone(), Vec::new()),
    };
    if base.is_empty() || !base.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("`{type_name}` is not a SQL Server type name"));
    }
    let num = |i: usize| -> std::result::Result<Option<i32>, String> {
        match args.get(i) {
            None => Ok(None),
            Some(a) if a.eq_ignore_ascii_case("max") && i == 0 => Ok(Some(-1)),
            Some(a) => a
                .parse::<i32>()
                .map(Some)
                .map_err(|_| format!("`{type_name}`: `{a}` is not a number")),
        }
    };
    let (a0, a1) = (num(0)?, num(1)?);
    if args.len() > 2 {
        return Err(format!("`{type_name}` has too many arguments"));
    }
    let mut c = SourceColumn {
        name: name.to_string(),
        data_type: base.clone(),
        max_length: None,
        precision: None,
        scale: None,
        datetime_precision: None,
        nullable,
    };
    match base.as_str() {
        "decimal" | "numeric" => {
            let p = a0.unwrap_or(18);
            let s = a1.unwrap_or(0);
            if !(1..=38).contains(&p) || !(0..=p).contains(&s) {
                return Err(format!(
                    "`{type_name}`: precision must be 1..38 and scale 0..precision"
                ));
            }
            c.precision = Some(p);
            c.scale = Some(s);
        }
        "float" => c.precision = Some(a0.unwrap_or(53)),
        "time" | "datetime2" | "datetimeoffset" => {
            let d = a0.unwrap_or(7);
            if !(0..=7).contains(&d) {
                return Err(format!(
                    "`{type_name}`: fractional second precision must be 0..7"
                ));
            }
            c.datetime_precision = Some(d);
        }
        "datetime" => c.datetime_precision = Some(3),
        "smalldatetime" => c.datetime_precision = Some(0),
        "char" | "varchar" | "nchar" | "nvarchar" | "binary" | "varbinary" => {
            c.max_length = Some(a0.unwrap_or(1));
        }
        _ if !args.is_empty() => {
            return Err(format!("`{type_name}`: `{base}` takes no arguments"));
        }
        _ => {}
    }
    map_column("", &c).map_err(|_| {
        format!("`{type_name}` is not a type Smelter maps (see docs/mssql.md for the mapping)")
    })?;
    Ok(c)
}

/// The T-SQL spelling of a parsed column type, rebuilt from its fields (never the user's text).
pub fn type_sql(c: &SourceColumn) -> String {
    let len = |l: Option<i32>| match l {
        Some(-1) => "max".to_string(),
        Some(n) => n.to_string(),
        None => "1".to_string(),
    };
    match c.data_type.as_str() {
        "decimal" | "numeric" => format!(
            "{}({},{})",
            c.data_type,
            c.precision.unwrap_or(18),
            c.scale.unwrap_or(0)
        ),
        "float" => format!("float({})", c.precision.unwrap_or(53)),
        "time" | "datetime2" | "datetimeoffset" => {
            format!("{}({})", c.data_type, c.datetime_precision.unwrap_or(7))
        }
        "char" | "varchar" | "nchar" | "nvarchar" | "binary" | "varbinary" => {
            format!("{}({})", c.data_type, len(c.max_length))
        }
        // money arrives as a float on the wire; its exact form is the decimal it maps to.
        "money" => "decimal(19,4)".into(),
        "smallmoney" => "decimal(10,4)".into(),
        other => other.to_string(),
    }
}

/// Maps one column, or explains why it cannot be extracted.
pub fn map_column(table: &str, c: &SourceColumn) -> Result<Mapping> {
    let q = quote_ident(&c.name);
    let p = c.precision.unwrap_or(18).clamp(1, 38) as u8;
    let s = c.scale.unwrap_or(0).clamp(0, 38) as i8;
    let dtp = c.datetime_precision.unwrap_or(7);
    let (kind, select) = match c.data_type.to_ascii_lowercase().as_str() {
        "bit" => (Kind::Bool, q),
        "tinyint" | "smallint" => (Kind::I16, q),
        "int" => (Kind::I32, q),
        "bigint" => (Kind::I64, q),
        "real" => (Kind::F32, q),
        "float" if c.precision.is_some_and(|p| p <= 24) => (Kind::F32, q),
        "float" => (Kind::F64, q),
        "decimal" | "numeric" => (Kind::Decimal(p, s), q),
        "money" => (
            Kind::Decimal(19, 4),
            format!("CAST({q} AS decimal(19,4)) AS {q}"),
        ),
        "smallmoney" => (
            Kind::Decimal(10, 4),
            format!("CAST({q} AS decimal(10,4)) AS {q}"),
        ),
        "date" => (Kind::Date, q),
        "time" => (Kind::Time, q),
        "datetime" | "smalldatetime" => (Kind::TimestampUs, q),
        "datetime2" if dtp <= 6 => (Kind::TimestampUs, q),
        "datetime2" => (Kind::TimestampNs, q),
        "datetimeoffset" if dtp <= 6 => (Kind::OffsetUs, q),
        "datetimeoffset" => (Kind::OffsetNs, q),
        "uniqueidentifier" | "char" | "varchar" | "nchar" | "nvarchar" | "text" | "ntext"
        | "sysname" | "xml" => (Kind::Utf8, q),
        "binary" | "varbinary" | "image" => (Kind::Binary, q),
        "rowversion" | "timestamp" => (Kind::RowVersion, q),
        other => {
            return Err(Error::Source {
                message: format!(
                    "table `{table}` column `{}` has type `{other}`, which Smelter cannot extract losslessly; convert it explicitly with `casts = {{ {} = \"nvarchar(max)\" }}` in its `[[source.tables]]` entry, or leave it out with a `query`",
                    c.name, c.name
                ),
                retryable: false,
            })
        }
    };
    Ok(Mapping {
        column: c.clone(),
        kind,
        select,
    })
}

/// The Arrow fields of the mapped columns (a datetimeoffset adds `<col>_offset_minutes`).
pub fn arrow_schema(cols: &[Mapping]) -> SchemaRef {
    let mut fields = Vec::new();
    for m in cols {
        let n = m.column.nullable;
        let name = &m.column.name;
        let dt = match m.kind {
            Kind::Bool => DataType::Boolean,
            Kind::I16 => DataType::Int16,
            Kind::I32 => DataType::Int32,
            Kind::I64 | Kind::RowVersion => DataType::Int64,
            Kind::F32 => DataType::Float32,
            Kind::F64 => DataType::Float64,
            Kind::Decimal(p, s) => DataType::Decimal128(p, s),
            Kind::Date => DataType::Date32,
            Kind::Time => DataType::Time64(TimeUnit::Nanosecond),
            Kind::TimestampUs => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::TimestampNs => DataType::Timestamp(TimeUnit::Nanosecond, None),
            Kind::OffsetUs => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Kind::OffsetNs => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            Kind::Utf8 => DataType::Utf8,
            Kind::Binary => DataType::Binary,
        };
        fields.push(Field::new(name, dt, n));
        if matches!(m.kind, Kind::OffsetUs | Kind::OffsetNs) {
            fields.push(Field::new(
                format!("{name}_offset_minutes"),
                DataType::Int16,
                n,
            ));
        }
    }
    Arc::new(Schema::new(fields))
}

enum Builder {
    Bool(BooleanBuilder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Decimal(Decimal128Builder, i8),
    Date(Date32Builder),
    Time(Time64NanosecondBuilder),
    TsUs(TimestampMicrosecondBuilder),
    TsNs(TimestampNanosecondBuilder),
    OffsetUs(TimestampMicrosecondBuilder, Int16Builder),
    OffsetNs(TimestampNanosecondBuilder, Int16Builder),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
}

impl Builder {
    fn new(kind: Kind, cap: usize) -> Builder {
        match kind {
            Kind::Bool => Builder::Bool(BooleanBuilder::with_capacity(cap)),
            Kind::I16 => Builder::I16(Int16Builder::with_capacity(cap)),
            Kind::I32 => Builder::I32(Int32Builder::with_capacity(cap)),
            Kind::I64 | Kind::RowVersion => Builder::I64(Int64Builder::with_capacity(cap)),
            Kind::F32 => Builder::F32(Float32Builder::with_capacity(cap)),
            Kind::F64 => Builder::F64(Float64Builder::with_capacity(cap)),
            Kind::Decimal(p, s) => Builder::Decimal(
                Decimal128Builder::with_capacity(cap).with_data_type(DataType::Decimal128(p, s)),
                s,
            ),
            Kind::Date => Builder::Date(Date32Builder::with_capacity(cap)),
            Kind::Time => Builder::Time(Time64NanosecondBuilder::with_capacity(cap)),
            Kind::TimestampUs => Builder::TsUs(TimestampMicrosecondBuilder::with_capacity(cap)),
            Kind::TimestampNs => Builder::TsNs(TimestampNanosecondBuilder::with_capacity(cap)),
            Kind::OffsetUs => Builder::OffsetUs(
                TimestampMicrosecondBuilder::with_capacity(cap).with_timezone("UTC"),
                Int16Builder::with_capacity(cap),
            ),
            Kind::OffsetNs => Builder::OffsetNs(
                TimestampNanosecondBuilder::with_capacity(cap).with_timezone("UTC"),
                Int16Builder::with_capacity(cap),
            ),
            Kind::Utf8 => Builder::Utf8(StringBuilder::with_capacity(cap, cap * 16)),
            Kind::Binary => Builder::Binary(BinaryBuilder::with_capacity(cap, cap * 16)),
        }
    }

    fn finish(&mut self, out: &mut Vec<ArrayRef>) {
        match self {
            Builder::Bool(b) => out.push(Arc::new(b.finish())),
            Builder::I16(b) => out.push(Arc::new(b.finish())),
            Builder::I32(b) => out.push(Arc::new(b.finish())),
            Builder::I64(b) => out.push(Arc::new(b.finish())),
            Builder::F32(b) => out.push(Arc::new(b.finish())),
            Builder::F64(b) => out.push(Arc::new(b.finish())),
            Builder::Decimal(b, _) => out.push(Arc::new(b.finish())),
            Builder::Date(b) => out.push(Arc::new(b.finish())),
            Builder::Time(b) => out.push(Arc::new(b.finish())),
            Builder::TsUs(b) => out.push(Arc::new(b.finish())),
            Builder::TsNs(b) => out.push(Arc::new(b.finish())),
            Builder::OffsetUs(b, o) => {
                out.push(Arc::new(b.finish()));
                out.push(Arc::new(o.finish()));
            }
            Builder::OffsetNs(b, o) => {
                out.push(Arc::new(b.finish()));
                out.push(Arc::new(o.finish()));
            }
            Builder::Utf8(b) => out.push(Arc::new(b.finish())),
            Builder::Binary(b) => out.push(Arc::new(b.finish())),
        }
    }

    fn len(&self) -> usize {
        match self {
            Builder::Bool(b) => b.len(),
            Builder::I16(b) => b.len(),
            Builder::I32(b) => b.len(),
            Builder::I64(b) => b.len(),
            Builder::F32(b) => b.len(),
            Builder::F64(b) => b.len(),
            Builder::Decimal(b, _) => b.len(),
            Builder::Date(b) => b.len(),
            Builder::Time(b) => b.len(),
            Builder::TsUs(b) => b.len(),
            Builder::TsNs(b) => b.len(),
            Builder::OffsetUs(b, _) => b.len(),
            Builder::OffsetNs(b, _) => b.len(),
            Builder::Utf8(b) => b.len(),
            Builder::Binary(b) => b.len(),
        }
    }
}

/// Why a value did not fit; the decoder adds table and column.
type Mismatch = String;

fn time_ns(t: tiberius::time::Time) -> i64 {
    t.increments() as i64 * 10i64.pow(9 - t.scale().min(9) as u32)
}

fn datetime2_ns(d: tiberius::time::DateTime2) -> Option<i64> {
    let days = d.date().days() as i64 - DAYS_0001_TO_1970;
    days.checked_mul(NS_PER_DAY)?.checked_add(time_ns(d.time()))
}

/// Microseconds since 1970, floored: a sub-microsecond part (datetime2(7) given to a µs column)
/// is cut toward the earlier instant whatever the sign of the result. The time of day is never
/// negative, so flooring it alone floors the whole instant.
fn datetime2_us(d: tiberius::time::DateTime2) -> i64 {
    let days = d.date().days() as i64 - DAYS_0001_TO_1970;
    days * US_PER_DAY + time_ns(d.time()).div_euclid(1000)
}

fn rescale(value: i128, from: i8, to: i8) -> Option<i128> {
    match from.cmp(&to) {
        std::cmp::Ordering::Equal => Some(value),
        std::cmp::Ordering::Less => value.checked_mul(10i128.checked_pow((to - from) as u32)?),
        std::cmp::Ordering::Greater => {
            let f = 10i128.checked_pow((from - to) as u32)?;
            (value % f == 0).then_some(value / f)
        }
    }
}

impl Builder {
    /// Appends one value; an error string describes a type mismatch or an out-of-range value.
    fn push(&mut self, v: ColumnData<'static>) -> std::result::Result<(), Mismatch> {
        match (self, v) {
            (Builder::Bool(b), ColumnData::Bit(x)) => b.append_option(x),
            (Builder::I16(b), ColumnData::U8(x)) => b.append_option(x.map(i16::from)),
            (Builder::I16(b), ColumnData::I16(x)) => b.append_option(x),
            (Builder::I32(b), ColumnData::I32(x)) => b.append_option(x),
            (Builder::I64(b), ColumnData::I64(x)) => b.append_option(x),
            (Builder::F32(b), ColumnData::F32(x)) => b.append_option(x),
            (Builder::F64(b), ColumnData::F64(x)) => b.append_option(x),
            (Builder::F64(b), ColumnData::F32(x)) => b.append_option(x.map(f64::from)),
            (Builder::Decimal(b, s), ColumnData::Numeric(x)) => match x {
                None => b.append_null(),
                Some(n) => {
                    let v = rescale(n.value(), n.scale() as i8, *s)
                        .ok_or_else(|| format!("decimal {n} does not fit scale {s}"))?;
                    b.append_value(v)
                }
            },
            (Builder::Date(b), ColumnData::Date(x)) => {
                b.append_option(x.map(|d| (d.days() as i64 - DAYS_0001_TO_1970) as i32))
            }
            (Builder::Time(b), ColumnData::Time(x)) => b.append_option(x.map(time_ns)),
            (Builder::TsUs(b), ColumnData::DateTime2(x)) => b.append_option(x.map(datetime2_us)),
            (Builder::TsUs(b), ColumnData::DateTime(x)) => b.append_option(x.map(|d| {
                let days = d.days() as i64 - DAYS_1900_TO_1970;
                // 1/300 s ticks, rounded to the nearest microsecond.
                days * US_PER_DAY + (d.seconds_fragments() as i64 * 20_000 + 3) / 6
            })),
            (Builder::TsUs(b), ColumnData::SmallDateTime(x)) => b.append_option(x.map(|d| {
                let days = d.days() as i64 - DAYS_1900_TO_1970;
                days * US_PER_DAY + d.seconds_fragments() as i64 * 60_000_000
            })),
            (Builder::TsNs(b), ColumnData::DateTime2(x)) => match x {
                None => b.append_null(),
                Some(d) => b.append_value(datetime2_ns(d).ok_or_else(out_of_ns_range)?),
            },
            (Builder::OffsetUs(b, o), ColumnData::DateTimeOffset(x)) => {
                b.append_option(x.map(|d| datetime2_us(d.datetime2())));
                o.append_option(x.map(|d| d.offset()));
            }
            (Builder::OffsetNs(b, o), ColumnData::DateTimeOffset(x)) => match x {
                None => {
                    b.append_null();
                    o.append_null();
                }
                Some(d) => {
                    b.append_value(datetime2_ns(d.datetime2()).ok_or_else(out_of_ns_range)?);
                    o.append_value(d.offset());
                }
            },
            (Builder::Utf8(b), ColumnData::String(x)) => b.append_option(x),
            (Builder::Utf8(b), ColumnData::Guid(x)) => match x {
                // Formatted on the stack: no allocation per row.
                Some(u) => b.append_value(u.hyphenated().encode_lower(&mut [0u8; 36])),
                None => b.append_null(),
            },
            (Builder::Utf8(b), ColumnData::Xml(x)) => {
                b.append_option(x.map(|x| x.into_owned().into_string()))
            }
            (Builder::Binary(b), ColumnData::Binary(x)) => b.append_option(x),
            (Builder::I64(b), ColumnData::Binary(x)) => match x {
                None => b.append_null(),
                Some(bytes) => {
                    let arr: [u8; 8] = bytes
                        .as_ref()
                        .try_into()
                        .map_err(|_| format!("rowversion of {} bytes", bytes.len()))?;
                    b.append_value(i64::from_be_bytes(arr))
                }
            },
            (_, other) => return Err(format!("unexpected value of type {other:?}")),
        }
        Ok(())
    }
}

fn out_of_ns_range() -> Mismatch {
    "value outside the Arrow nanosecond timestamp range (1677-09-21 to 2262-04-11); datetime2(7) and datetimeoffset(7) keep 100 ns, so convert such columns to datetime2(6) in a view".into()
}

/// Decodes tiberius rows into Arrow batches of `batch_size` rows.
pub struct Decoder {
    table: String,
    mappings: Vec<Mapping>,
    builders: Vec<Builder>,
    schema: SchemaRef,
    batch_size: usize,
}

impl Decoder {
    /// A decoder for the mapped columns of `table`.
    pub fn new(table: &str, mappings: Vec<Mapping>, batch_size: usize) -> Decoder {
        let batch_size = batch_size.max(1);
        let builders = mappings
            .iter()
            .map(|m| Builder::new(m.kind, batch_size))
            .collect();
        Decoder {
            table: table.to_string(),
            schema: arrow_schema(&mappings),
            mappings,
            builders,
            batch_size,
        }
    }

    /// The Arrow schema of the batches.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Appends a row; returns a batch when `batch_size` rows are buffered.
    pub fn push(&mut self, row: tiberius::Row) -> Result<Option<RecordBatch>> {
        self.push_values(row)
    }

    /// Appends one row given as its values in column order.
    pub fn push_values(
        &mut self,
        values: impl IntoIterator<Item = ColumnData<'static>>,
    ) -> Result<Option<RecordBatch>> {
        let mut n = 0;
        for (i, value) in values.into_iter().enumerate() {
            let Some(b) = self.builders.get_mut(i) else {
                return Err(self.error(i, "more values than columns".into()));
            };
            if let Err(m) = b.push(value) {
                return Err(self.error(i, m));
            }
            n += 1;
        }
        if n != self.builders.len() {
            return Err(self.error(n, "fewer values than columns".into()));
        }
        if self.builders[0].len() >= self.batch_size {
            return self.finish();
        }
        Ok(None)
    }

    /// The buffered rows as a batch, if any.
    pub fn finish(&mut self) -> Result<Option<RecordBatch>> {
        if self.builders.first().is_none_or(|b| b.len() == 0) {
            return Ok(None);
        }
        let mut arrays = Vec::with_capacity(self.schema.fields().len());
        for b in &mut self.builders {
            b.finish(&mut arrays);
        }
        Ok(Some(RecordBatch::try_new(self.schema.clone(), arrays)?))
    }

    fn error(&self, i: usize, m: Mismatch) -> Error {
        let col = self
            .mappings
            .get(i)
            .map(|m| format!("`{}` ({})", m.column.name, m.column.data_type))
            .unwrap_or_else(|| format!("#{i}"));
        Error::Source {
            message: format!("table `{}` column {col}: {m}", self.table),
            retryable: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{column_of_type, datetime2_ns, datetime2_us, map_column, type_sql, Kind};
    use tiberius::time::{Date, DateTime2, Time};

    /// A datetime2(7) value from its text, built as TDS carries it (days since 0001-01-01 and
    /// 100 ns ticks since midnight), and the same instant in ns since 1970 computed by chrono
    /// (`None` outside the i64 nanosecond range).
    fn dt2_7(s: &str) -> (DateTime2, Option<i64>) {
        let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap();
        let days = t
            .date()
            .signed_duration_since(chrono::NaiveDate::from_ymd_opt(1, 1, 1).unwrap())
            .num_days();
        let ticks = t
            .time()
            .signed_duration_since(chrono::NaiveTime::MIN)
            .num_nanoseconds()
            .unwrap()
            / 100;
        let d = DateTime2::new(Date::new(days as u32), Time::new(ticks as u64, 7));
        (d, t.and_utc().timestamp_nanos_opt())
    }

    #[test]
    fn sub_microsecond_ticks_floor_on_both_sides_of_1970() {
        for (text, floored) in [
            ("1677-09-22 00:00:00.0000001", "1677-09-22 00:00:00"),
            ("1969-12-31 23:59:59.9999999", "1969-12-31 23:59:59.999999"),
            ("1970-01-01 00:00:00.0000009", "1970-01-01 00:00:00"),
            ("2026-11-01 10:20:30.1234567", "2026-11-01 10:20:30.123456"),
        ] {
            let (d, ns) = dt2_7(text);
            let ns = ns.expect("in range");
            assert_eq!(datetime2_ns(d), Some(ns), "{text}: 100 ns kept");
            let want = chrono::NaiveDateTime::parse_from_str(floored, "%Y-%m-%d %H:%M:%S%.f")
                .unwrap()
                .and_utc()
                .timestamp_micros();
            assert_eq!(datetime2_us(d), want, "{text} floors to {floored}");
            assert_eq!(ns.div_euclid(1000), want, "{text}");
        }
        // Outside Arrow's nanosecond range: an error, never a wrapped value.
        assert_eq!(datetime2_ns(dt2_7("1677-09-21 00:00:00").0), None);
    }

    #[test]
    fn type_names_parse_into_exact_mappings() {
        let kind = |t: &str| {
            map_column("t", &column_of_type("c", t, true).unwrap())
                .unwrap()
                .kind
        };
        assert_eq!(kind("decimal(38, 38)"), Kind::Decimal(38, 38));
        assert_eq!(kind("NUMERIC"), Kind::Decimal(18, 0));
        assert_eq!(kind("datetime2(7)"), Kind::TimestampNs);
        assert_eq!(kind("datetime2(3)"), Kind::TimestampUs);
        assert_eq!(kind("float(24)"), Kind::F32);
        assert_eq!(kind("money"), Kind::Decimal(19, 4));
        assert_eq!(kind("nvarchar(max)"), Kind::Utf8);
        let c = column_of_type("c", "NVarChar(MAX)", false).unwrap();
        assert_eq!(type_sql(&c), "nvarchar(max)");
        assert_eq!(
            type_sql(&column_of_type("c", "money", true).unwrap()),
            "decimal(19,4)"
        );
        for bad in [
            "geography",
            "decimal(39,2)",
            "decimal(10,11)",
            "datetime2(8)",
            "int(4)",
            "nvarchar(x)",
            "int); DROP TABLE t; --",
            "",
        ] {
            assert!(column_of_type("c", bad, true).is_err(), "{bad} accepted");
        }
    }
}
