//! Bronze: append each table's landed files to `bronze.<table>` with metadata columns
//! (`_run_id`, `_ingested_at`, `_source`), then commit the new watermark.
//!
//! Idempotent: the append carries a Delta application transaction `smelter:<run_id>`, so a retried
//! run id finds it committed and appends nothing. The watermark is committed after the data, and
//! again on a retry, so a crash between the two never skips rows.

use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::logical_expr::{cast, col, lit};
use datafusion::prelude::ParquetReadOptions;
use datafusion::scalar::ScalarValue;
use tracing::info;

use super::RunContext;
use crate::error::{Error, Result};
use crate::extract::read_manifest;
use crate::plan::Layer;
use crate::state::{now_us, RunRecord};
use crate::table::{WriteMetrics, WriteMode, WriteRequest};

/// Schema of a bronze table: the source columns plus the metadata columns.
pub fn bronze_schema(source: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = source.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("_run_id", DataType::Utf8, false));
    fields.push(Field::new(
        "_ingested_at",
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    ));
    fields.push(Field::new("_source", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// Runs the bronze layer.
pub async fn run(rc: &RunContext<'_>) -> Result<Vec<RunRecord>> {
    let mut records = Vec::new();
    let mut missing = Vec::new();
    for id in rc.plan.bronze_tables() {
        let clock = Instant::now();
        let started = now_us();
        let Some(manifest) = read_manifest(rc.lake, &id.name, &rc.params.run_id).await? else {
            missing.push(id.name.clone());
            continue;
        };
        let url = rc.lake.table_url(&id);
        let txn = format!("smelter:{}", rc.params.run_id);
        let mut schema_changes = Vec::new();
        let metrics = if manifest.rows == 0 {
            WriteMetrics {
                skipped: true,
                ..Default::default()
            }
        } else {
            let landing = rc.lake.landing_url(&id.name, &rc.params.run_id);
            let files: Vec<String> = manifest
                .files
                .iter()
                .map(|f| landing.join(f).map(|u| u.to_string()))
                .collect::<Result<_, _>>()
                .map_err(|e| Error::Internal(format!("bad landing file name: {e}")))?;
            let df = rc
                .ctx
                .read_parquet(files, ParquetReadOptions::default())
                .await?;
            let mut exprs: Vec<_> = df.schema().columns().into_iter().map(col).collect();
            exprs.push(lit(rc.params.run_id.as_str()).alias("_run_id"));
            exprs.push(
                cast(
                    lit(ScalarValue::TimestampMicrosecond(
                        Some(started),
                        Some("UTC".into()),
                    )),
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                )
                .alias("_ingested_at"),
            );
            exprs.push(lit(manifest.source.as_str()).alias("_source"));
            let input = df.select(exprs)?;
            let policy = rc
                .plan
                .pipeline
                .source
                .tables
                .iter()
                .find(|t| t.name == id.name)
                .map(|t| t.on_schema_change)
                .unwrap_or(rc.plan.pipeline.on_schema_change);
            let shown_landing = crate::storage::redact(&landing);
            let (input, changes) = super::evolve_schema(rc, &id, input, policy, |m| {
                Error::Source {
                    message: format!(
                        "table `{id}`: the files landed for run `{}` at {shown_landing} no longer match the table: {m}; review the source change, set `on_schema_change` on the table in the pipeline file, or rebuild the bronze table",
                        rc.params.run_id
                    ),
                    retryable: false,
                }
            })
            .await?;
            schema_changes = changes;
            rc.format
                .write(WriteRequest {
                    ctx: &rc.ctx,
                    url: &url,
                    input,
                    mode: WriteMode::Append,
                    partition_by: Vec::new(),
                    txn_id: Some(txn),
                    metadata: vec![
                        ("run_id".into(), rc.params.run_id.clone()),
                        ("layer".into(), "bronze".into()),
                    ],
                })
                .await?
        };
        rc.state
            .commit_files(&id.name, &rc.params.run_id, &manifest.source_files)
            .await?;
        if let Some(wm) = &manifest.watermark_to {
            if manifest.watermark_from.as_ref() != Some(wm) {
                rc.state
                    .commit_watermark(&id.name, wm, &rc.params.run_id)
                    .await?;
            }
        }
        info!(
        pipeline = %rc.plan.pipeline.name,
            layer = "bronze",
            table = %id,
            run_id = %rc.params.run_id,
            rows = metrics.rows_inserted,
            skipped = metrics.skipped,
            duration_ms = clock.elapsed().as_millis() as u64,
            "Appended bronze table."
        );
        let profile = if metrics.skipped {
            None
        } else {
            crate::profile::after_write(rc, &id).await?
        };
        let mut record = rc.record(
            Layer::Bronze,
            id.to_string(),
            started,
            clock.elapsed().as_millis() as u64,
            &metrics,
            serde_json::json!({
                "landed_rows": manifest.rows,
                "schema_changes": schema_changes,
                "version": metrics.version,
                "drift": profile.as_ref().map(|p| &p.drift),
            }),
        );
        record.profile = profile;
        records.push(record);
    }
    if records.is_empty() {
        return Err(Error::NothingToDo(format!(
            "no landed files for run id `{}` (tables: {}); run the extract layer with this run id first",
            rc.params.run_id,
            missing.join(", ")
        )));
    }
    Ok(records)
}
