//! Rows that break their declared types: the `on_error` policy and the quarantine shape shared by
//! the files source (malformed rows, found while decoding, with their file and line) and bronze
//! (landed values that do not fit the declared type, found before the append).
//!
//! [`check`] finds, per row, the first value that breaks its column's declared type: a decimal
//! with more digits than its precision (Arrow's `null_if_overflow_precision`; neither Arrow arrays
//! nor the Parquet writer check this by themselves), a string longer than a declared
//! `varchar(n)`/`nvarchar(n)`/`char(n)`/`nchar(n)` (counted in characters), or a NULL in a column
//! declared NOT NULL. With `on_error = "fail"` the first one stops the run (exit 3, naming
//! `bronze.<table>`, the column, the declared type, the value and the file); with `quarantine` the
//! rows go to `bronze._quarantine_<table>` in the shape of [`rejected_schema`]: every original
//! value as text, then `_error_column`, `_error`, `_source_file`, `_source_line` (bronze adds
//! `_run_id` and `_quarantined_at`). See docs/errors.md.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray, UInt32Array,
};
use arrow::datatypes::{DataType, Decimal128Type, Decimal256Type, Field, Schema, SchemaRef};

use crate::error::{Error, Result};
use crate::schema::ColumnShape;

/// What a row that breaks its declared type (or, in the files source, does not parse) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The run stops, naming the table, column, declared type, value and file (exit 3; exit 2
    /// for a files-source row that does not parse).
    #[default]
    Fail,
    /// The row goes to `bronze._quarantine_<table>`; the good rows load and the run succeeds.
    Quarantine,
}

impl OnError {
    /// The valid spellings, for error messages.
    pub const CHOICES: &'static str = "`fail`, `quarantine`";

    /// Parses a policy name as written in a pipeline file.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "fail" => Some(Self::Fail),
            "quarantine" => Some(Self::Quarantine),
            _ => None,
        }
    }

    /// The policy's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Quarantine => "quarantine",
        }
    }
}

impl std::fmt::Display for OnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Name of the quarantine table of bronze table `table`: `_quarantine_<table>` (in the bronze
/// layer, like the `<layer>._quarantine_<model>` tables of expectations).
pub fn table_name(table: &str) -> String {
    format!("_quarantine_{table}")
}

/// Longest value text kept in an error message, in characters.
const SHOWN_CHARS: usize = 60;

/// `value` for a message: at most [`SHOWN_CHARS`] characters, `…` marking a cut.
pub fn shown(value: &str) -> String {
    match value.char_indices().nth(SHOWN_CHARS) {
        Some((at, _)) => format!("{}…", &value[..at]),
        None => value.to_string(),
    }
}

/// The declared type of a column as shown: the source's (`decimal(19,4)`), else Arrow's.
pub fn declared(column: &ColumnShape) -> String {
    column
        .source_type
        .clone()
        .unwrap_or_else(|| column.data_type.to_string())
}

/// The maximum length in characters a declared source type allows: `n` for `varchar(n)`,
/// `nvarchar(n)`, `char(n)`, `nchar(n)` (any case, spaces allowed); `None` for `max` and for
/// every other type.
pub fn max_chars(source_type: &str) -> Option<usize> {
    let t = source_type.trim().to_ascii_lowercase();
    let (name, rest) = t.split_once('(')?;
    if !matches!(
        name.trim(),
        "varchar" | "nvarchar" | "char" | "nchar" | "character" | "character varying"
    ) {
        return None;
    }
    rest.trim_end().strip_suffix(')')?.trim().parse().ok()
}

/// One row that breaks its declared type: the first offending column of the row.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// Row index in the batch (0-based).
    pub row: usize,
    /// The column.
    pub column: String,
    /// The declared type, as shown ([`declared`]).
    pub declared: String,
    /// What is wrong, with the value (truncated), e.g. "value `1e17` does not fit decimal(19,4)".
    pub reason: String,
}

/// The rows of `batch` that break the declared types of `columns` (matched by name; columns the
/// batch lacks are skipped), at most one per row (its first offending column), in row order.
pub fn check(columns: &[ColumnShape], batch: &RecordBatch) -> Vec<Violation> {
    let mut bad: Vec<Option<Violation>> = vec![None; batch.num_rows()];
    for c in columns {
        let Some(array) = batch.column_by_name(&c.name) else {
            continue;
        };
        let declared = declared(c);
        let mut flag = |row: usize, reason: String| {
            if bad[row].is_none() {
                bad[row] = Some(Violation {
                    row,
                    column: c.name.clone(),
                    declared: declared.clone(),
                    reason,
                });
            }
        };
        if !c.nullable && array.null_count() > 0 {
            for row in (0..array.len()).filter(|&i| array.is_null(i)) {
                flag(
                    row,
                    format!("NULL in a column declared NOT NULL ({declared})"),
                );
            }
        }
        // Values that do not fit the precision: null after `null_if_overflow_precision`.
        let overflow: Option<(ArrayRef, u8)> = match (&c.data_type, array.data_type()) {
            (DataType::Decimal128(p, _), DataType::Decimal128(..)) => Some((
                Arc::new(
                    array
                        .as_primitive::<Decimal128Type>()
                        .null_if_overflow_precision(*p),
                ),
                *p,
            )),
            (DataType::Decimal256(p, _), DataType::Decimal256(..)) => Some((
                Arc::new(
                    array
                        .as_primitive::<Decimal256Type>()
                        .null_if_overflow_precision(*p),
                ),
                *p,
            )),
            _ => None,
        };
        if let Some((checked, p)) = overflow {
            if checked.null_count() != array.null_count() {
                for row in (0..array.len()).filter(|&i| array.is_valid(i) && checked.is_null(i)) {
                    flag(
                        row,
                        format!(
                            "value `{}` has more than the {p} digits of {declared}",
                            shown(&text_of(array, row))
                        ),
                    );
                }
            }
        }
        if let Some(n) = c.source_type.as_deref().and_then(max_chars) {
            if let Some(strings) = array.as_string_opt::<i32>() {
                for (row, v) in strings.iter().enumerate() {
                    if let Some(v) = v.filter(|v| v.chars().count() > n) {
                        flag(
                            row,
                            format!(
                                "value `{}` is {} characters long, more than the {n} of {declared}",
                                shown(v),
                                v.chars().count()
                            ),
                        );
                    }
                }
            }
        }
    }
    bad.into_iter().flatten().collect()
}

/// The text of one value, as Arrow displays it (`NULL` for a null). Decimals are written out in
/// full: Arrow's display cuts a value to the type's precision, which is exactly what an
/// overflowing value exceeds.
fn text_of(array: &dyn Array, row: usize) -> String {
    use arrow::datatypes::format_decimal_str;
    if array.is_null(row) {
        return "NULL".into();
    }
    match array.data_type() {
        DataType::Decimal128(_, scale) => format_decimal_str(
            &array
                .as_primitive::<Decimal128Type>()
                .value(row)
                .to_string(),
            usize::MAX,
            *scale,
        ),
        DataType::Decimal256(_, scale) => format_decimal_str(
            &array
                .as_primitive::<Decimal256Type>()
                .value(row)
                .to_string(),
            usize::MAX,
            *scale,
        ),
        _ => arrow::util::display::array_value_to_string(array, row)
            .unwrap_or_else(|e| format!("<{e}>")),
    }
}

/// The shape of rejected rows for a table with columns `names`: each column as nullable text,
/// then `_error_column`, `_error`, `_source_file` and `_source_line` (the 1-based line of a source
/// file, or the 1-based row of a landing file; NULL when unknown).
pub fn rejected_schema<'a>(names: impl IntoIterator<Item = &'a str>) -> SchemaRef {
    let mut fields: Vec<Field> = names
        .into_iter()
        .map(|n| Field::new(n, DataType::Utf8, true))
        .collect();
    fields.push(Field::new("_error_column", DataType::Utf8, true));
    fields.push(Field::new("_error", DataType::Utf8, false));
    fields.push(Field::new("_source_file", DataType::Utf8, false));
    fields.push(Field::new("_source_line", DataType::Int64, true));
    Arc::new(Schema::new(fields))
}

/// One rejected row, before it is gathered into a batch.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// Row index in the batch the rows are taken from.
    pub row: usize,
    /// The offending column, when one is known (not for a row with the wrong number of fields).
    pub column: Option<String>,
    /// What is wrong.
    pub reason: String,
    /// The 1-based source line (files source) or landing row.
    pub line: Option<i64>,
}

impl From<&Violation> for Rejected {
    fn from(v: &Violation) -> Self {
        Rejected {
            row: v.row,
            column: Some(v.column.clone()),
            reason: v.reason.clone(),
            line: None,
        }
    }
}

/// The rejected `rows` of `batch`, every value as text (Arrow's display form; NULL stays NULL),
/// in the shape of [`rejected_schema`] over the batch's column names, from file `file`.
pub fn rejected_batch(batch: &RecordBatch, rows: &[Rejected], file: &str) -> Result<RecordBatch> {
    let schema = batch.schema();
    let out_schema = rejected_schema(schema.fields().iter().map(|f| f.name().as_str()));
    let take = UInt32Array::from_iter_values(rows.iter().map(|r| r.row as u32));
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(out_schema.fields().len());
    for array in batch.columns() {
        let taken = arrow::compute::take(array.as_ref(), &take, None)?;
        let text: StringArray = (0..taken.len())
            .map(|i| taken.is_valid(i).then(|| text_of(taken.as_ref(), i)))
            .collect();
        columns.push(Arc::new(text));
    }
    columns.push(Arc::new(StringArray::from_iter(
        rows.iter().map(|r| r.column.as_deref()),
    )));
    columns.push(Arc::new(StringArray::from_iter_values(
        rows.iter().map(|r| r.reason.as_str()),
    )));
    columns.push(Arc::new(StringArray::from_iter_values(
        rows.iter().map(|_| file),
    )));
    columns.push(Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.line))));
    Ok(RecordBatch::try_new(out_schema, columns)?)
}

/// `batch` without the rows in `rows` (sorted or not).
pub fn without_rows(batch: &RecordBatch, rows: &[Rejected]) -> Result<RecordBatch> {
    if rows.is_empty() {
        return Ok(batch.clone());
    }
    let mut keep = vec![true; batch.num_rows()];
    for r in rows {
        keep[r.row] = false;
    }
    Ok(arrow::compute::filter_record_batch(
        batch,
        &BooleanArray::from(keep),
    )?)
}

/// The error of a value that breaks its declared type under `on_error = "fail"` (exit 3):
/// names `bronze.<table>`, the column, the declared type and the value (in the reason), and the
/// file, with the line (files source) or row (landing file) when known. The hint (see
/// `Error::hint`) suggests `on_error = "quarantine"`.
pub fn fail(table: &str, v: &Violation, file: &str, line: Option<(&str, i64)>) -> Error {
    let at = match line {
        Some((what, n)) => format!("{file}, {what} {n}"),
        None => file.to_string(),
    };
    Error::Rejected {
        table: format!("bronze.{table}"),
        column: v.column.clone(),
        file: file.to_string(),
        message: format!("bronze.{table}: column `{}`: {} ({at})", v.column, v.reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Decimal128Array;

    fn shape(name: &str, t: DataType, nullable: bool, source: Option<&str>) -> ColumnShape {
        ColumnShape {
            name: name.into(),
            data_type: t,
            nullable,
            source_type: source.map(Into::into),
        }
    }

    #[test]
    fn max_chars_reads_declared_lengths() {
        assert_eq!(max_chars("varchar(5)"), Some(5));
        assert_eq!(max_chars("NVARCHAR (50)"), Some(50));
        assert_eq!(max_chars("char(1)"), Some(1));
        assert_eq!(max_chars("nvarchar(max)"), None);
        assert_eq!(max_chars("decimal(19,4)"), None);
        assert_eq!(max_chars("text"), None);
    }

    #[test]
    fn check_finds_wide_decimals_long_strings_and_nulls() {
        let dec = Decimal128Array::from(vec![Some(1_0000), Some(10i128.pow(17) * 10_000), None])
            .with_precision_and_scale(19, 4)
            .unwrap();
        let s = StringArray::from(vec![Some("abc"), Some("ab"), Some("abcdef")]);
        let batch = RecordBatch::try_from_iter(vec![
            ("v", Arc::new(dec) as ArrayRef),
            ("s", Arc::new(s) as ArrayRef),
        ])
        .unwrap();
        let columns = [
            shape(
                "v",
                DataType::Decimal128(19, 4),
                false,
                Some("decimal(19,4)"),
            ),
            shape("s", DataType::Utf8, true, Some("varchar(5)")),
        ];
        let found = check(&columns, &batch);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!((found[0].row, found[0].column.as_str()), (1, "v"));
        assert!(
            found[0]
                .reason
                .contains("100000000000000000.0000` has more than the 19 digits"),
            "{}",
            found[0].reason
        );
        assert_eq!((found[1].row, found[1].column.as_str()), (2, "v"));
        assert!(found[1].reason.contains("NOT NULL"));
        let rejected: Vec<Rejected> = found.iter().map(Rejected::from).collect();
        let out = rejected_batch(&batch, &rejected, "f.parquet").unwrap();
        assert_eq!(out.num_rows(), 2);
        assert_eq!(
            out.column(0).as_string::<i32>().value(0),
            "100000000000000000.0000"
        );
        assert_eq!(without_rows(&batch, &rejected).unwrap().num_rows(), 1);
    }
}
