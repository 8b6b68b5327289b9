//! Partition values the table formats cannot store, refused before anything is committed.
//!
//! [`refuse`] wraps a write's input so that a row whose partition value the format would lose
//! fails the write's execution with an error naming the column and how to map the value in the
//! SQL. Exit 2 in a model (`sql_on_data`), 3 in a bronze load; nothing is committed.
//!
//! - **Delta Lake**: an empty string in a string partition column. The protocol serializes a
//!   partition value as a string in the log, where an empty string means NULL ("Partition Value
//!   Serialization", delta-io/delta PROTOCOL.md), so `''` would read back as NULL, and a NOT NULL
//!   column would make the committed table unreadable.
//! - **Iceberg** (iceberg-rust 0.10, the pinned writer): NULL in any partition column (its
//!   partitioned writer drops those rows from the files it writes, silently), and a value
//!   before 1970 where its transforms round the wrong way or fail (the day or hour of a
//!   timestamp, the year of a date). String partition fields are refused at plan time
//!   (`iceberg::partition_transform`).

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Column, DataFusionError};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::prelude::DataFrame;

use crate::error::Result;

/// The phrase every refusal's message holds, by which the error module recognises it in the
/// text delta-rs keeps of a failed write's query error.
pub const UNSTORABLE_PARTITION_VALUE: &str = "cannot be stored as a partition value";

/// The table format being written, for its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Delta,
    Iceberg,
}

/// `df`, with the source columns of `partition_by` checked row by row against `format`'s rules
/// (see the module doc; the empty string only where it is the partition value itself, not
/// under a transform such as `bucket`); `df` itself when no column needs a check.
pub fn refuse(
    df: DataFrame,
    partition_by: &[super::PartitionField],
    format: Format,
) -> Result<DataFrame> {
    map_columns(df, |field, column| {
        let fields: Vec<_> = partition_by
            .iter()
            .filter(|p| &p.column == field.name())
            .collect();
        if fields.is_empty() {
            return None;
        }
        let string = matches!(
            field.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        );
        let as_value = fields.iter().any(|p| {
            matches!(
                p.transform,
                super::PartitionTransform::Column | super::PartitionTransform::Identity
            )
        });
        // iceberg-rust 0.10 rounds a timestamp's day and hour toward zero (the spec rounds
        // down), and panics on the year of a DATE before 1970.
        let before_epoch_wrong = fields.iter().any(|p| {
            use super::PartitionTransform as T;
            match field.data_type() {
                DataType::Timestamp(_, _) => {
                    matches!(p.transform, T::Column | T::Day | T::Hour)
                }
                DataType::Date32 | DataType::Date64 => p.transform == T::Year,
                _ => false,
            }
        });
        let check = Check {
            column: field.name().clone(),
            empty: format == Format::Delta && string && as_value,
            before_epoch: format == Format::Iceberg && before_epoch_wrong,
            null: format == Format::Iceberg,
            strip_metadata: false,
            format,
            signature: Signature::any(1, Volatility::Immutable),
        };
        (check.empty || check.null || check.before_epoch)
            .then(|| ScalarUDF::new_from_impl(check).call(vec![column]))
    })
}

/// `df` with each column for which `map` gives an expression (given the field and the column)
/// replaced by that expression under the column's name; `df` itself when `map` gives none.
pub fn map_columns(df: DataFrame, map: impl Fn(&Field, Expr) -> Option<Expr>) -> Result<DataFrame> {
    let mut changed = false;
    let exprs: Vec<Expr> = df
        .schema()
        .iter()
        .map(|(qualifier, field)| {
            let column = Expr::Column(Column::from((qualifier, field)));
            match map(field, column.clone()) {
                Some(e) => {
                    changed = true;
                    e.alias(field.name())
                }
                None => column,
            }
        })
        .collect();
    if !changed {
        return Ok(df);
    }
    Ok(df.select(exprs)?)
}

/// `df` with the field metadata of its columns removed, when a table it scans has field
/// metadata (`df` itself otherwise).
///
/// Iceberg readers put `PARQUET:field_id` on every field. A query that combines such a column
/// with one of a Delta table (`UNION ALL`) gets a physical schema holding the metadata while
/// the batches of the Delta side lack it, and delta-rs's writer refuses batches whose schema
/// differs from the plan's. Field ids are Iceberg's own numbering, so no written table keeps
/// them: the Iceberg writer numbers fields itself.
pub fn without_field_metadata(df: DataFrame) -> Result<DataFrame> {
    use datafusion::common::tree_node::TreeNode;
    use datafusion::logical_expr::LogicalPlan;
    let scans_metadata = df.logical_plan().exists(|p| {
        Ok(matches!(p, LogicalPlan::TableScan(s)
            if s.source.schema().fields().iter().any(|f| !f.metadata().is_empty())))
    })?;
    if !scans_metadata {
        return Ok(df);
    }
    map_columns(df, |field, column| {
        Some(
            ScalarUDF::new_from_impl(Check {
                column: field.name().clone(),
                empty: false,
                null: false,
                before_epoch: false,
                strip_metadata: true,
                format: Format::Delta,
                signature: Signature::any(1, Volatility::Immutable),
            })
            .call(vec![column]),
        )
    })
}

/// `smelter_partition_value(v)`: `v` unchanged (same type and nullability; without field
/// metadata if `strip_metadata`), or an execution error naming the column when a row holds a
/// value the format cannot store.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Check {
    column: String,
    /// Refuse the empty string.
    empty: bool,
    /// Refuse NULL.
    null: bool,
    /// Refuse a value before 1970-01-01 (Iceberg `day`/`hour` of a timestamp, `year` of a date).
    before_epoch: bool,
    /// Return the field without its metadata ([`without_field_metadata`]).
    strip_metadata: bool,
    format: Format,
    signature: Signature,
}

/// What a refused row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Problem {
    Null,
    Empty,
    BeforeEpoch,
}

impl Check {
    fn refusal(&self, problem: Problem) -> DataFusionError {
        let (c, q) = (&self.column, crate::plan::ident::to_sql(&self.column));
        let message = match (problem, self.format) {
            (Problem::Null, _) => format!(
                "partition column `{c}` holds NULL, which {UNSTORABLE_PARTITION_VALUE} in an \
                 Iceberg table here (the iceberg-rust writer drops such rows): map it in the \
                 SQL, e.g. COALESCE({q}, <a value>), or partition by another column"
            ),
            (Problem::BeforeEpoch, _) => format!(
                "partition column `{c}` holds a value before 1970-01-01, which \
                 {UNSTORABLE_PARTITION_VALUE} under this transform in an Iceberg table here \
                 (the iceberg-rust writer computes the day or hour of such a timestamp toward \
                 zero, where the Iceberg spec rounds down, and fails on the year of such a \
                 date): partition by a column the model computes, e.g. \
                 `CAST({q} AS DATE) AS {c}_date`, or `EXTRACT(YEAR FROM {q}) AS {c}_year`"
            ),
            (_, Format::Delta) => format!(
                "partition column `{c}` holds an empty string, which \
                 {UNSTORABLE_PARTITION_VALUE} in a Delta table (the protocol reads it back as \
                 NULL): map it in the SQL, e.g. NULLIF({q}, '') for NULL or \
                 COALESCE(NULLIF({q}, ''), '(blank)'), or partition by another column"
            ),
            (_, Format::Iceberg) => format!(
                "partition column `{c}` holds an empty string, which \
                 {UNSTORABLE_PARTITION_VALUE} in an Iceberg table here (the iceberg-rust \
                 writer fails on it): map it in the SQL, e.g. COALESCE(NULLIF({q}, ''), \
                 '(blank)'), or partition by another column"
            ),
        };
        DataFusionError::Execution(message)
    }
}

impl ScalarUDFImpl for Check {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn name(&self) -> &str {
        "smelter_partition_value"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(args[0].clone())
    }

    fn return_field_from_args(
        &self,
        args: ReturnFieldArgs,
    ) -> datafusion::common::Result<FieldRef> {
        let f = &args.arg_fields[0];
        Ok(if self.strip_metadata {
            std::sync::Arc::new(Field::new(f.name(), f.data_type().clone(), f.is_nullable()))
        } else {
            f.clone()
        })
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let value = args.args.into_iter().next().expect("one argument");
        let array = match &value {
            ColumnarValue::Scalar(s) => s.to_array()?,
            ColumnarValue::Array(a) => a.clone(),
        };
        if self.null && array.null_count() > 0 {
            return Err(self.refusal(Problem::Null));
        }
        if self.empty {
            let strings = arrow::compute::cast(&array, &DataType::Utf8)?;
            if strings.as_string::<i32>().iter().any(|v| v == Some("")) {
                return Err(self.refusal(Problem::Empty));
            }
        }
        if self.before_epoch {
            let ticks = arrow::compute::cast(&array, &DataType::Int64)?;
            let ticks = ticks.as_primitive::<arrow::datatypes::Int64Type>();
            if arrow::compute::min(ticks).is_some_and(|m| m < 0) {
                return Err(self.refusal(Problem::BeforeEpoch));
            }
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_quotes_a_column_sql_would_fold() {
        let check = |c: &str| Check {
            column: c.into(),
            empty: true,
            null: false,
            before_epoch: false,
            strip_metadata: false,
            format: Format::Delta,
            signature: Signature::any(1, Volatility::Immutable),
        };
        let text = check("region").refusal(Problem::Empty).to_string();
        assert!(text.contains("NULLIF(region, '')"), "{text}");
        let text = check("Region").refusal(Problem::Empty).to_string();
        assert!(text.contains("NULLIF(\"Region\", '')"), "{text}");
        assert!(text.contains(UNSTORABLE_PARTITION_VALUE), "{text}");
        let text = check("a b").refusal(Problem::BeforeEpoch).to_string();
        assert!(text.contains("CAST(\"a b\" AS DATE)"), "{text}");
        assert!(text.contains(UNSTORABLE_PARTITION_VALUE), "{text}");
    }
}
