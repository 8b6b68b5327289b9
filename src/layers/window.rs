//! Catch-up windows: which bronze rows a model reads through `{{ unprocessed('bronze.<t>') }}`
//! (see [`crate::plan`]'s template), so that a run whose silver failed or was skipped leaves no
//! bronze rows behind and a retried run id reads exactly what its first attempt read.
//!
//! A window is a set of `(bronze table, bronze run id)` pairs: the `_run_id` values present in
//! the model's windowed bronze tables that no committed run of the model consumed. A run's window
//! is recorded in `_smelter/windows` (`pending`) before its write and marked `committed` after
//! it; a run id that already has a window reads that one again. A pending window whose write did
//! commit (the process died between the commit and the marker) is recognised by the run id's
//! transaction id in the model's table (every windowed incremental model's write carries one),
//! so its rows are not read twice. Two concurrent runs with different run ids may open the same
//! window: the runner commits an `append` model's write as of the table version read before
//! [`open`] (see [`crate::table::WriteRequest::read_version`]), so the second commit conflicts
//! (exit 75) and its retry reads what is left. `--full-refresh` reads all of bronze, and records
//! that.
//! The same idea as SQLMesh's interval tracking and Auto Loader's processed-file log, applied to
//! bronze run ids.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::common::TableReference;
use datafusion::logical_expr::col;

use super::RunContext;
use crate::error::{Error, Result};
use crate::plan::Model;

/// The transaction id a model run's write carries (also used for appends' idempotency).
pub fn txn_id(run_id: &str) -> String {
    format!("smelter:{run_id}")
}

/// The window of `model` for this run: for each of `model.unprocessed` (in order), the bronze
/// run ids to read; `None` when the model has no catch-up window. Records the window before
/// returning it. Errors: reading the lake or the state.
pub async fn open(rc: &RunContext<'_>, model: &Model) -> Result<Option<Vec<Vec<String>>>> {
    if model.unprocessed.is_empty() {
        return Ok(None);
    }
    let name = model.id.to_string();
    let run_id = rc.params.run_id.as_str();
    let entries = rc.state.windows(&name).await?;
    let mine: BTreeSet<(String, String)> = entries
        .iter()
        .filter(|e| e.run_id == run_id)
        .filter_map(|e| e.bronze.clone())
        .collect();
    let recorded = entries.iter().any(|e| e.run_id == run_id);
    let pairs = if recorded && !rc.full_refresh {
        // A retry reads its window again, less what a later run committed meanwhile (it read
        // this run's pairs while this run had not committed).
        let consumed = consumed(rc, model, &entries).await?;
        mine.difference(&consumed).cloned().collect()
    } else {
        let consumed = if rc.full_refresh {
            BTreeSet::new()
        } else {
            consumed(rc, model, &entries).await?
        };
        let mut pairs = BTreeSet::new();
        for table in &model.unprocessed {
            for run in bronze_runs(rc, &table.name).await? {
                let pair = (table.name.clone(), run);
                if !consumed.contains(&pair) {
                    pairs.insert(pair);
                }
            }
        }
        let new: Vec<(String, String)> = pairs.difference(&mine).cloned().collect();
        if !recorded || !new.is_empty() {
            rc.state.record_window(&name, run_id, &new, false).await?;
        }
        pairs.extend(mine);
        pairs
    };
    tracing::info!(
        model = %model.id,
        run_id,
        bronze_runs = pairs.len(),
        reused = recorded && !rc.full_refresh,
        "Catch-up window."
    );
    Ok(Some(
        model
            .unprocessed
            .iter()
            .map(|t| {
                pairs
                    .iter()
                    .filter(|(table, _)| *table == t.name)
                    .map(|(_, run)| run.clone())
                    .collect()
            })
            .collect(),
    ))
}

/// Marks this run's window of `model` as consumed, after its write committed.
pub async fn commit(rc: &RunContext<'_>, model: &Model) -> Result<()> {
    if model.unprocessed.is_empty() {
        return Ok(());
    }
    rc.state
        .record_window(&model.id.to_string(), &rc.params.run_id, &[], true)
        .await
}

/// The pairs consumed by committed runs of `model` other than this one: marked windows, and
/// pending windows whose run id's transaction is in the model's table.
async fn consumed(
    rc: &RunContext<'_>,
    model: &Model,
    entries: &[crate::state::WindowEntry],
) -> Result<BTreeSet<(String, String)>> {
    let mut runs: BTreeMap<&str, bool> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.run_id != rc.params.run_id) {
        *runs.entry(e.run_id.as_str()).or_default() |= e.committed;
    }
    let url = rc.lake.table_url(&model.id);
    let mut done = BTreeSet::new();
    for (run, marked) in runs {
        if marked || rc.format.committed(&url, &txn_id(run)).await? {
            done.insert(run);
        }
    }
    Ok(entries
        .iter()
        .filter(|e| done.contains(e.run_id.as_str()))
        .filter_map(|e| e.bronze.clone())
        .collect())
}

/// The distinct `_run_id` values of `bronze.<table>` (registered in the run's session).
async fn bronze_runs(rc: &RunContext<'_>, table: &str) -> Result<Vec<String>> {
    let batches = rc
        .ctx
        .table(TableReference::partial("bronze", table))
        .await?
        .select(vec![datafusion::logical_expr::cast(
            col("_run_id"),
            arrow::datatypes::DataType::Utf8,
        )])?
        .distinct()?
        .collect()
        .await?;
    let mut out = Vec::new();
    for b in &batches {
        let runs = b
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .ok_or_else(|| Error::Internal("bronze _run_id is not text".into()))?;
        out.extend(runs.iter().flatten().map(str::to_string));
    }
    Ok(out)
}
