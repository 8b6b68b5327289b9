//! Profile history: the Delta state table `_smelter/profiles`, one row per profile.
//!
//! Columns: `table_name`, `layer`, `run_id`, `profiled_at` (UTC timestamp), `row_count`,
//! `column_count`, `size_bytes`, `drift_breaches`, and `profile` (the whole [`TableProfile`] as
//! JSON, drift findings included). Append-only; the latest `profiled_at` per table is the
//! previous profile for drift.

use std::sync::Arc;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::logical_expr::{col, lit, SortExpr};

use super::TableProfile;
use crate::error::{Error, Result};
use crate::plan::TableId;
use crate::state::{ts_type, State};

/// Name of the state table.
pub const TABLE: &str = "profiles";

/// Appends a profile of `id`.
pub async fn append(state: &State, id: &TableId, profile: &TableProfile) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("table_name", DataType::Utf8, false),
        Field::new("layer", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("profiled_at", ts_type(), false),
        Field::new("row_count", DataType::Int64, false),
        Field::new("column_count", DataType::Int64, false),
        Field::new("size_bytes", DataType::Int64, true),
        Field::new("drift_breaches", DataType::Int64, false),
        Field::new("profile", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec![id.to_string()])),
            Arc::new(StringArray::from(vec![id.layer.as_str()])),
            Arc::new(StringArray::from(vec![profile.run_id.as_str()])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![profile.profiled_at_ms * 1000])
                    .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from(vec![profile.row_count as i64])),
            Arc::new(Int64Array::from(vec![profile.column_count as i64])),
            Arc::new(Int64Array::from(vec![profile.size_bytes.map(|b| b as i64)])),
            Arc::new(Int64Array::from(vec![profile.drift.len() as i64])),
            Arc::new(StringArray::from(vec![serde_json::to_string(profile)?])),
        ],
    )?;
    state.append(TABLE, batch).await
}

/// The latest stored profile of `id`.
pub async fn latest(state: &State, id: &TableId) -> Result<Option<TableProfile>> {
    let Some(df) = state.read(TABLE).await? else {
        return Ok(None);
    };
    let batches = df
        .filter(col("table_name").eq(lit(id.to_string())))?
        .sort(vec![SortExpr::new(col("profiled_at"), false, false)])?
        .limit(0, Some(1))?
        .select_columns(&["profile"])?
        .collect()
        .await?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let text = arrow::compute::cast(batch.column(0), &DataType::Utf8)?;
    let text = text
        .as_any()
        .downcast_ref::<StringArray>()
        .filter(|a| a.is_valid(0))
        .ok_or_else(|| Error::Internal("stored profile is not a string".into()))?;
    Ok(Some(serde_json::from_str(text.value(0))?))
}
