//! Schema changes and the `on_schema_change` policy, shared by every stage that compares an
//! expected schema with a new one: extraction (contract → discovered source schema), bronze
//! (table → landed files) and incremental models (table → model output).
//!
//! [`diff`] lists the changes column by column; [`OnSchemaChange::check`] decides which of them
//! the policy allows. The policy names are dbt's (`on_schema_change` of incremental models),
//! without dbt's `ignore`: Smelter never casts silently.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Schema};
use serde::{Deserialize, Serialize};

/// What a changed schema does.
///
/// | change | `fail` | `append_new_columns` (default) | `sync_all_columns` |
/// |---|---|---|---|
/// | column added | refused | added to the table | added to the table |
/// | column removed | refused | kept, NULL from then on | kept, NULL from then on |
/// | lossless widening (int → bigint, decimal(p,s) → decimal(p',s) with p' > p, varchar(n) → varchar(m > n)) | refused | refused | table widened |
/// | any other type change | refused | refused | refused |
/// | NOT NULL → nullable | table stays NOT NULL | table stays NOT NULL | table column made nullable |
/// | nullable → NOT NULL | allowed | allowed | allowed |
///
/// Where the table stays NOT NULL, a NULL that really arrives is rejected by the table format as a
/// bad value (exit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSchemaChange {
    /// Any difference stops the run (exit 2).
    Fail,
    /// New columns are added; removed columns stay, NULL from then on; type changes stop the run.
    #[default]
    AppendNewColumns,
    /// Like `append_new_columns`, and lossless type widenings are applied to the table.
    SyncAllColumns,
}

impl OnSchemaChange {
    /// The valid spellings, for error messages.
    pub const CHOICES: &'static str = "`fail`, `append_new_columns`, `sync_all_columns`";

    /// Parses a policy name as written in a pipeline file or a model header.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "fail" => Some(Self::Fail),
            "append_new_columns" => Some(Self::AppendNewColumns),
            "sync_all_columns" => Some(Self::SyncAllColumns),
            _ => None,
        }
    }

    /// The policy's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::AppendNewColumns => "append_new_columns",
            Self::SyncAllColumns => "sync_all_columns",
        }
    }

    /// Whether the policy allows `change`.
    pub fn allows(self, change: &ColumnChange) -> bool {
        match (self, change) {
            // Stricter data than the table's: nothing to change, nothing stored is affected.
            (_, ColumnChange::NowNotNull { .. }) => true,
            // The table keeps its NOT NULL constraint (unless `sync_all_columns` relaxes it), so
            // a NULL that really arrives is rejected as a bad value (exit 3), never stored.
            (_, ColumnChange::NowNullable { .. }) => true,
            (Self::Fail, _) => false,
            (_, ColumnChange::Added { .. } | ColumnChange::Removed { .. }) => true,
            (Self::SyncAllColumns, ColumnChange::TypeChanged { widening, .. }) => *widening,
            (_, ColumnChange::TypeChanged { .. }) => false,
        }
    }

    /// The changes the policy refuses (empty: the new schema may be written).
    pub fn refused(self, changes: &[ColumnChange]) -> Vec<&ColumnChange> {
        changes.iter().filter(|c| !self.allows(c)).collect()
    }
}

impl fmt::Display for OnSchemaChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One column's difference between an old and a new schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum ColumnChange {
    /// The new schema has a column the old one lacks.
    Added {
        /// Column.
        column: String,
        /// Its type.
        data_type: String,
    },
    /// The old schema has a column the new one lacks.
    Removed {
        /// Column.
        column: String,
        /// Its type.
        data_type: String,
    },
    /// The column's type changed.
    TypeChanged {
        /// Column.
        column: String,
        /// Old type (the declared source type when known, else the Arrow type).
        from: String,
        /// New type.
        to: String,
        /// Whether every old value fits the new type exactly ([`is_widening`]).
        widening: bool,
    },
    /// A NOT NULL column became nullable.
    NowNullable {
        /// Column.
        column: String,
    },
    /// A nullable column became NOT NULL (never a problem for the data already stored).
    NowNotNull {
        /// Column.
        column: String,
    },
}

impl ColumnChange {
    /// The column the change is about.
    pub fn column(&self) -> &str {
        match self {
            Self::Added { column, .. }
            | Self::Removed { column, .. }
            | Self::TypeChanged { column, .. }
            | Self::NowNullable { column }
            | Self::NowNotNull { column } => column,
        }
    }
}

impl fmt::Display for ColumnChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Added { column, data_type } => write!(f, "column `{column}` added ({data_type})"),
            Self::Removed { column, data_type } => {
                write!(f, "column `{column}` removed (was {data_type})")
            }
            Self::TypeChanged {
                column,
                from,
                to,
                widening,
            } => write!(
                f,
                "column `{column}` changed type from {from} to {to} ({})",
                if *widening {
                    "a lossless widening"
                } else {
                    "not a lossless widening"
                }
            ),
            Self::NowNullable { column } => write!(f, "column `{column}` became nullable"),
            Self::NowNotNull { column } => write!(f, "column `{column}` became NOT NULL"),
        }
    }
}

/// A column as compared: name, Arrow type, nullability, and the source's declared type when
/// known (`varchar(20)`, which Arrow spells `Utf8` whatever the length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnShape {
    /// Column name (compared exactly: quoted identifiers keep their case).
    pub name: String,
    /// Arrow type.
    pub data_type: DataType,
    /// Nullable.
    pub nullable: bool,
    /// Declared source type, e.g. SQL Server `decimal(19,4)`.
    pub source_type: Option<String>,
}

impl ColumnShape {
    /// The shapes of an Arrow schema's fields (no declared types).
    pub fn of_schema(schema: &Schema) -> Vec<ColumnShape> {
        schema
            .fields()
            .iter()
            .map(|f| ColumnShape {
                name: f.name().clone(),
                data_type: f.data_type().clone(),
                nullable: f.is_nullable(),
                source_type: None,
            })
            .collect()
    }

    fn shown_type(&self) -> String {
        match &self.source_type {
            Some(t) => format!("{t} ({})", type_name(&self.data_type)),
            None => type_name(&self.data_type),
        }
    }
}

/// The Arrow schema of column shapes (declared types are dropped).
pub fn arrow_schema(columns: &[ColumnShape]) -> Schema {
    Schema::new(
        columns
            .iter()
            .map(|c| arrow::datatypes::Field::new(&c.name, c.data_type.clone(), c.nullable))
            .collect::<Vec<_>>(),
    )
}

/// The changes from `old` to `new`, in the order of `old`'s columns, then the added ones.
pub fn diff(old: &[ColumnShape], new: &[ColumnShape]) -> Vec<ColumnChange> {
    let mut out = Vec::new();
    for o in old {
        match new.iter().find(|n| n.name == o.name) {
            None => out.push(ColumnChange::Removed {
                column: o.name.clone(),
                data_type: o.shown_type(),
            }),
            Some(n) => {
                let declared_differs = matches!((&o.source_type, &n.source_type), (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b));
                if storage_type(&o.data_type) != storage_type(&n.data_type) || declared_differs {
                    out.push(ColumnChange::TypeChanged {
                        column: o.name.clone(),
                        from: o.shown_type(),
                        to: n.shown_type(),
                        widening: is_widening(&o.data_type, &n.data_type)
                            && declared_widening(
                                o.source_type.as_deref(),
                                n.source_type.as_deref(),
                            ),
                    });
                }
                match (o.nullable, n.nullable) {
                    (false, true) => out.push(ColumnChange::NowNullable {
                        column: o.name.clone(),
                    }),
                    (true, false) => out.push(ColumnChange::NowNotNull {
                        column: o.name.clone(),
                    }),
                    _ => {}
                }
            }
        }
    }
    for n in new {
        if !old.iter().any(|o| o.name == n.name) {
            out.push(ColumnChange::Added {
                column: n.name.clone(),
                data_type: n.shown_type(),
            });
        }
    }
    out
}

/// The type as stored: Arrow's several layouts of one logical type (`Utf8`, `LargeUtf8` and
/// `Utf8View`; the binary ones; dictionary encoding) are one type in Parquet and Delta, and
/// DataFusion reads tables back with the view layouts, so they never count as a change. A
/// nanosecond timestamp is a microsecond one: Delta Lake and Iceberg (v1, v2) store timestamps
/// in microseconds and the writers floor to them, so a model's `CAST(x AS TIMESTAMP)`
/// (nanoseconds in DataFusion) matches the table it wrote. Nested types are normalized inside
/// (a `List(Utf8View)` is a `List(Utf8)`), without field metadata.
pub fn storage_type(t: &DataType) -> DataType {
    use arrow::datatypes::{Field, Fields};
    let field = |f: &Field| {
        Arc::new(Field::new(
            f.name(),
            storage_type(f.data_type()),
            f.is_nullable(),
        ))
    };
    match t {
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
        DataType::Dictionary(_, v) => storage_type(v),
        DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, tz) => {
            DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, tz.clone())
        }
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f) => DataType::List(field(f)),
        DataType::Struct(fs) => DataType::Struct(fs.iter().map(|f| field(f)).collect::<Fields>()),
        DataType::Map(f, sorted) => DataType::Map(field(f), *sorted),
        other => other.clone(),
    }
}

/// A type as shown to users: its stored form ([`storage_type`]) in Arrow's display form, so a
/// column the contract declares `Utf8` never shows as `Utf8View` because DataFusion read it back
/// with the view layout.
pub fn type_name(t: &DataType) -> String {
    storage_type(t).to_string()
}

/// A type by its SQL name, as a model's SQL would cast to it (`VARCHAR`, `BIGINT`,
/// `DECIMAL(p,s)`, `TIMESTAMP`); a type SQL has no name for shows as [`type_name`].
pub fn sql_type_name(t: &DataType) -> String {
    use DataType::*;
    match t {
        Utf8 | LargeUtf8 | Utf8View => "VARCHAR".into(),
        Boolean => "BOOLEAN".into(),
        Int8 => "TINYINT".into(),
        Int16 => "SMALLINT".into(),
        Int32 => "INT".into(),
        Int64 => "BIGINT".into(),
        UInt8 => "TINYINT UNSIGNED".into(),
        UInt16 => "SMALLINT UNSIGNED".into(),
        UInt32 => "INT UNSIGNED".into(),
        UInt64 => "BIGINT UNSIGNED".into(),
        Float32 => "REAL".into(),
        Float64 => "DOUBLE".into(),
        Decimal32(p, s) | Decimal64(p, s) | Decimal128(p, s) | Decimal256(p, s) => {
            format!("DECIMAL({p},{s})")
        }
        Date32 | Date64 => "DATE".into(),
        Timestamp(_, None) => "TIMESTAMP".into(),
        Timestamp(_, Some(_)) => "TIMESTAMP WITH TIME ZONE".into(),
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => "BYTEA".into(),
        other => type_name(other),
    }
}

/// Whether every value of Arrow type `from` is exactly representable in `to` (a lossless
/// widening): integers to wider integers (or to a float with enough mantissa: int8/16/32 →
/// float64), float32 → float64, decimal(p,s) → decimal(p',s') with s' ≥ s and p' − s' ≥ p − s,
/// integers to a decimal with enough integer digits, and string/binary to their large or view
/// forms. Equal types are a widening too.
pub fn is_widening(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    fn int_digits(t: &DataType) -> Option<u8> {
        match t {
            Int8 => Some(3),
            Int16 => Some(5),
            Int32 => Some(10),
            Int64 => Some(19),
            _ => None,
        }
    }
    fn int_rank(t: &DataType) -> Option<u8> {
        match t {
            Int8 => Some(1),
            Int16 => Some(2),
            Int32 => Some(3),
            Int64 => Some(4),
            _ => None,
        }
    }
    if from == to {
        return true;
    }
    match (from, to) {
        (a, b) if int_rank(a).is_some() && int_rank(b).is_some() => int_rank(a) < int_rank(b),
        (Int8 | Int16 | Int32, Float64) | (Int8 | Int16, Float32) | (Float32, Float64) => true,
        (Decimal128(p, s), Decimal128(p2, s2)) | (Decimal128(p, s), Decimal256(p2, s2)) => {
            s2 >= s && (*p2 as i16 - *s2 as i16) >= (*p as i16 - *s as i16)
        }
        (a, Decimal128(p, s) | Decimal256(p, s)) if int_digits(a).is_some() => {
            (*p as i16 - *s as i16) >= int_digits(a).unwrap_or(u8::MAX) as i16
        }
        (Utf8, LargeUtf8 | Utf8View) | (Binary, LargeBinary | BinaryView) => true,
        (Timestamp(u1, tz1), Timestamp(u2, tz2)) => {
            // Finer units keep every instant of the coarser one within Arrow's range used here.
            tz1 == tz2 && unit_rank(u1) <= unit_rank(u2)
        }
        _ => false,
    }
}

fn unit_rank(u: &arrow::datatypes::TimeUnit) -> u8 {
    use arrow::datatypes::TimeUnit::*;
    match u {
        Second => 0,
        Millisecond => 1,
        Microsecond => 2,
        Nanosecond => 3,
    }
}

/// Whether a declared source type widens: `varchar(10)` → `varchar(50)` or `varchar(max)`
/// (same family of character or binary type, longer or unlimited), or an unchanged or unknown
/// declared type (the Arrow types then decide).
fn declared_widening(from: Option<&str>, to: Option<&str>) -> bool {
    let (Some(from), Some(to)) = (from, to) else {
        return true;
    };
    if from.eq_ignore_ascii_case(to) {
        return true;
    }
    let split = |t: &str| -> (String, Option<String>) {
        let t = t.trim().to_ascii_lowercase();
        match t.split_once('(') {
            Some((base, rest)) => (
                base.trim().to_string(),
                Some(rest.trim_end_matches(')').trim().to_string()),
            ),
            None => (t, None),
        }
    };
    let (fb, fl) = split(from);
    let (tb, tl) = split(to);
    let family = |b: &str| match b {
        "char" | "varchar" => Some(1),
        "nchar" | "nvarchar" => Some(2),
        "binary" | "varbinary" => Some(3),
        _ => None,
    };
    let len = |l: &Option<String>| -> Option<u64> {
        match l.as_deref() {
            Some("max") => Some(u64::MAX),
            Some(n) => n.parse().ok(),
            None => Some(1),
        }
    };
    // char(n) → varchar(m ≥ n) keeps values, nchar/nvarchar likewise; varchar → char pads: not lossless.
    let fixed_to_var_ok = !(fb.starts_with('v') || fb.starts_with("nv")) || tb.contains("var");
    match (family(&fb), family(&tb)) {
        (Some(a), Some(b)) if a == b => {
            fixed_to_var_ok && len(&fl).zip(len(&tl)).is_some_and(|(f, t)| t >= f)
        }
        // varchar → nvarchar widens the character set.
        (Some(1), Some(2)) => len(&fl).zip(len(&tl)).is_some_and(|(f, t)| t >= f),
        // Other declared types: the Arrow types decide (decimal precision lives there).
        (None, None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nanosecond_timestamp_is_stored_as_microseconds_and_is_no_change() {
        use arrow::datatypes::TimeUnit::{Microsecond, Millisecond, Nanosecond};
        let table = vec![shape(
            "at",
            DataType::Timestamp(Microsecond, Some("UTC".into())),
            true,
            None,
        )];
        let same = vec![shape(
            "at",
            DataType::Timestamp(Nanosecond, Some("UTC".into())),
            true,
            None,
        )];
        assert!(diff(&table, &same).is_empty());
        // Another zone, or a coarser unit, is still a change.
        let naive = vec![shape(
            "at",
            DataType::Timestamp(Nanosecond, None),
            true,
            None,
        )];
        assert_eq!(diff(&table, &naive).len(), 1);
        let ms = vec![shape(
            "at",
            DataType::Timestamp(Millisecond, None),
            true,
            None,
        )];
        assert_eq!(diff(&naive, &ms).len(), 1);
    }

    fn shape(name: &str, t: DataType, nullable: bool, src: Option<&str>) -> ColumnShape {
        ColumnShape {
            name: name.into(),
            data_type: t,
            nullable,
            source_type: src.map(String::from),
        }
    }

    #[test]
    fn widenings() {
        use DataType::*;
        assert!(is_widening(&Int32, &Int64));
        assert!(!is_widening(&Int64, &Int32));
        assert!(!is_widening(&Int64, &Float64));
        assert!(is_widening(&Decimal128(10, 2), &Decimal128(12, 2)));
        assert!(is_widening(&Decimal128(10, 2), &Decimal128(13, 4)));
        assert!(!is_widening(&Decimal128(10, 2), &Decimal128(10, 3)));
        assert!(!is_widening(&Decimal128(10, 2), &Decimal128(12, 1)));
        assert!(is_widening(&Int32, &Decimal128(10, 0)));
        assert!(!is_widening(&Int64, &Decimal128(18, 0)));
        assert!(!is_widening(&Utf8, &Int64));
        assert!(!is_widening(&Float64, &Float32));
    }

    #[test]
    fn layouts_of_one_type_are_no_change() {
        let old = vec![shape("s", DataType::Utf8View, false, None)];
        let new = vec![shape("s", DataType::Utf8, false, None)];
        assert!(diff(&old, &new).is_empty());
    }

    #[test]
    fn declared_lengths() {
        assert!(declared_widening(Some("varchar(10)"), Some("varchar(50)")));
        assert!(declared_widening(Some("varchar(10)"), Some("varchar(max)")));
        assert!(!declared_widening(Some("varchar(50)"), Some("varchar(10)")));
        assert!(declared_widening(Some("char(3)"), Some("varchar(3)")));
        assert!(!declared_widening(Some("varchar(3)"), Some("char(3)")));
        assert!(declared_widening(Some("varchar(3)"), Some("nvarchar(3)")));
        assert!(declared_widening(Some("int"), Some("bigint")));
    }

    #[test]
    fn diff_and_policies() {
        use DataType::*;
        let old = vec![
            shape("id", Int32, false, Some("int")),
            shape("code", Utf8, true, Some("varchar(10)")),
            shape("gone", Utf8, true, None),
            shape("amount", Decimal128(10, 2), true, None),
        ];
        let new = vec![
            shape("id", Int64, false, Some("bigint")),
            shape("code", Utf8, true, Some("varchar(5)")),
            shape("amount", Decimal128(10, 2), true, None),
            shape("extra", Utf8, true, None),
        ];
        let changes = diff(&old, &new);
        assert_eq!(changes.len(), 4, "{changes:?}");
        assert!(
            matches!(&changes[0], ColumnChange::TypeChanged { column, widening: true, .. } if column == "id")
        );
        assert!(
            matches!(&changes[1], ColumnChange::TypeChanged { column, widening: false, .. } if column == "code")
        );
        assert!(matches!(&changes[2], ColumnChange::Removed { column, .. } if column == "gone"));
        assert!(matches!(&changes[3], ColumnChange::Added { column, .. } if column == "extra"));
        assert_eq!(OnSchemaChange::Fail.refused(&changes).len(), 4);
        let nullable = diff(
            &[shape("id", Int32, false, None)],
            &[shape("id", Int32, true, None)],
        );
        assert!(OnSchemaChange::Fail.refused(&nullable).is_empty());
        assert_eq!(OnSchemaChange::AppendNewColumns.refused(&changes).len(), 2);
        let refused = OnSchemaChange::SyncAllColumns.refused(&changes);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].column(), "code");
        assert!(diff(&old, &old).is_empty());
    }
}
