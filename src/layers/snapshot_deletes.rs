//! Bronze rows of tables that track deletes (`detect_deletes = true`, or
//! `mode = "change_tracking"`): the operation column `_op` and the delete rows of full
//! snapshots.
//!
//! Every landed row is an upsert (`_op = 'U'`) unless the source says otherwise (change
//! tracking lands its own `_op`). When the landing is the table's whole content (the manifest's
//! `snapshot`), every key of the table's **current state** in bronze that is missing from it gets
//! a delete row: `_op = 'D'`, the key, and all other columns copied from the key's newest bronze
//! row (for change tracking, `_change_version` is the snapshot's version instead). The current
//! state is the newest bronze row of each key across all earlier runs (by `_change_version`,
//! then `_ingested_at`), unless that row is itself a delete: a key deleted once is not deleted
//! again, and a key that re-appears is an upsert again.
//!
//! The delete rows are planned as part of the run's one bronze append (same Delta transaction
//! id), so a retried run id appends neither them nor the landed rows twice. Cost: one pass over
//! the bronze table (the newest row per key runs as the engine's hash aggregation, see
//! `engine::dedup`) and one over the landed keys.

use datafusion::common::{Column, JoinType};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{binary_expr, cast, lit, Expr, ExprFunctionExt, Operator};
use datafusion::prelude::{DataFrame, ParquetReadOptions};
use datafusion::scalar::ScalarValue;
use tracing::{info, warn};

use super::RunContext;
use crate::config::{ReadMode, SourceTable};
use crate::error::{Error, Result};
use crate::extract::{Manifest, CHANGE_VERSION_COLUMN, OP_COLUMN};
use crate::plan::TableId;

/// Bronze's own metadata columns, which the delete rows take from the run, not the copied row.
const METADATA: [&str; 3] = ["_run_id", super::bronze::INGESTED_AT, "_source"];

fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

/// The rows bronze appends for a table that tracks deletes: `landed` (the run's landed rows, if
/// any) with `_op = 'U'` where the landing has no `_op`, plus the delete rows when the manifest
/// marks a snapshot. `files` are the URLs of every landed data file (the snapshot's keys are
/// read from all of them, also from rows bronze quarantines). `None` when there is nothing to
/// append.
///
/// A snapshot with rows the source rejected (`on_error = "quarantine"`) detects no deletes in
/// that run (the rejected rows' keys are unknown) and says so in a warning.
pub async fn with_ops(
    rc: &RunContext<'_>,
    id: &TableId,
    table: &SourceTable,
    manifest: &Manifest,
    landed: Option<DataFrame>,
    files: &[String],
) -> Result<Option<DataFrame>> {
    let landed = match landed {
        Some(df) if df.schema().field_with_unqualified_name(OP_COLUMN).is_err() => {
            Some(with_upsert_op(df)?)
        }
        other => other,
    };
    if !manifest.snapshot {
        return Ok(landed);
    }
    if manifest.rejected_rows > 0 {
        warn!(table = %id, rows = manifest.rejected_rows, "The source rejected rows of this full snapshot, whose keys are unknown: no deletes detected in this run.");
        return Ok(landed);
    }
    let url = rc.lake.table_url(id);
    let Some(provider) = rc.format.provider(&rc.ctx, &url).await? else {
        return Ok(landed);
    };
    let keys = crate::extract::contract::key(&rc.plan.pipeline, table);
    let bronze = rc.ctx.read_table(provider)?;
    let shown = crate::plan::display_path(&rc.plan.pipeline, &rc.plan.pipeline.file);
    if keys.is_empty() {
        return Err(Error::config(
            shown,
            format!("table `{id}` detects deletes but has no key columns: set `key = [..]` in its `[[source.tables]]` entry"),
        ));
    }
    for k in &keys {
        if bronze.schema().field_with_unqualified_name(k).is_err() {
            return Err(Error::config(
                shown,
                format!("table `{id}`: key column `{k}` is not a column of the bronze table, so deletes cannot be detected; check `key` in its `[[source.tables]]` entry"),
            ));
        }
    }
    let change_tracked = table.mode == ReadMode::ChangeTracking;
    let current = current_state(rc, bronze, &keys, change_tracked)?;

    // The current keys the snapshot lacks.
    const KEY: &str = "__smelter_snapshot_key_";
    let missing = if files.is_empty() {
        current
    } else {
        let snapshot = rc
            .ctx
            .read_parquet(files.to_vec(), ParquetReadOptions::default())
            .await?
            .select(
                keys.iter()
                    .enumerate()
                    .map(|(i, k)| column(k).alias(format!("{KEY}{i}")))
                    .collect::<Vec<Expr>>(),
            )?;
        let on: Vec<Expr> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                binary_expr(
                    column(k),
                    Operator::IsNotDistinctFrom,
                    column(&format!("{KEY}{i}")),
                )
            })
            .collect();
        // A landed row without a key (a file whose header lacks the key column, a wrong
        // delimiter, a NULL key) leaves the snapshot's keys unknown: every key would look gone.
        let any_null = (0..keys.len())
            .map(|i| column(&format!("{KEY}{i}")).is_null())
            .reduce(|a, b| a.or(b))
            .unwrap_or(lit(false));
        let nulls = snapshot.clone().filter(any_null)?.count().await?;
        if nulls > 0 {
            return Err(Error::Quality {
                model: id.to_string(),
                message: format!(
                    "{nulls} landed row(s) of this full snapshot have a NULL key ({}), so the keys the snapshot holds are unknown and no deletes can be detected; nothing was written. Check the landed files' header and delimiter, or drop rows without a key at the source",
                    keys.join(", ")
                ),
                findings: serde_json::Value::Null,
            });
        }
        current.join_on(snapshot, JoinType::LeftAnti, on)?
    };

    // Delete rows in the shape of the landed rows (or, for an empty snapshot, of the bronze
    // table without its metadata columns).
    let target: Vec<arrow::datatypes::Field> = match &landed {
        Some(df) => df
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect(),
        None => missing
            .schema()
            .fields()
            .iter()
            .filter(|f| !METADATA.contains(&f.name().as_str()))
            .map(|f| f.as_ref().clone())
            .collect(),
    };
    let version = manifest.watermark_to.as_ref().map(|w| w.value);
    let have = missing.schema().clone();
    let exprs: Vec<Expr> = target
        .iter()
        .map(|f| {
            let name = f.name().as_str();
            let e = match name {
                OP_COLUMN => lit("D"),
                CHANGE_VERSION_COLUMN if change_tracked && version.is_some() => {
                    lit(ScalarValue::Int64(version))
                }
                _ => match have.field_with_unqualified_name(name) {
                    Ok(h) if h.data_type() == f.data_type() => column(name),
                    Ok(_) => cast(column(name), f.data_type().clone()),
                    // A column the landing has and bronze does not (added since): NULL.
                    Err(_) => cast(lit(ScalarValue::Null), f.data_type().clone()),
                },
            };
            e.alias(name)
        })
        .collect();
    let deletes = missing.select(exprs)?;
    info!(table = %id, run_id = %rc.params.run_id, "Full snapshot: keys of the bronze table missing from it land as deletes (_op = 'D').");
    Ok(Some(match landed {
        Some(df) => df.union(deletes)?,
        None => deletes,
    }))
}

/// The newest bronze row of each key from runs other than this one, where that row is not a
/// delete (a bronze table written before `_op` existed holds upserts only).
fn current_state(
    rc: &RunContext<'_>,
    bronze: DataFrame,
    keys: &[String],
    change_tracked: bool,
) -> Result<DataFrame> {
    const RN: &str = "__smelter_current_rn";
    let has_op = bronze
        .schema()
        .field_with_unqualified_name(OP_COLUMN)
        .is_ok();
    let bronze = bronze.filter(column("_run_id").not_eq(lit(rc.params.run_id.as_str())))?;
    let bronze = if has_op {
        bronze
    } else {
        with_upsert_op(bronze)?
    };
    let versioned = change_tracked
        && bronze
            .schema()
            .field_with_unqualified_name(CHANGE_VERSION_COLUMN)
            .is_ok();
    let order: Vec<_> = versioned
        .then_some(CHANGE_VERSION_COLUMN)
        .into_iter()
        .chain([super::bronze::INGESTED_AT, OP_COLUMN])
        .map(|c| column(c).sort(false, false))
        .collect();
    let rn = row_number()
        .partition_by(keys.iter().map(|k| column(k)).collect())
        .order_by(order)
        .build()?
        .alias(RN);
    Ok(bronze
        .window(vec![rn])?
        .filter(
            column(RN)
                .eq(lit(1u64))
                .and(column(OP_COLUMN).not_eq(lit("D"))),
        )?
        .drop_columns(&[RN])?)
}

/// `df` with an operation column `_op` of `'U'` (upsert) after its columns: rows landed or
/// appended before their table tracked deletes.
fn with_upsert_op(df: DataFrame) -> Result<DataFrame> {
    let mut exprs: Vec<Expr> = df
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    exprs.push(lit("U").alias(OP_COLUMN));
    Ok(df.select(exprs)?)
}
