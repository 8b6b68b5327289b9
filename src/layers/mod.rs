//! Layer runs: extract, bronze, and the SQL model layers (silver, gold) over one model runner.
//!
//! Each step returns [`RunRecord`]s, which feed the run log, the logs and the summary.

pub mod bronze;
pub mod model;

use std::sync::Arc;

use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::plan::{Layer, Plan, RunParams, TableId};
use crate::state::{now_us, RunRecord, State};
use crate::storage::Lake;
use crate::table::{TableFormat, WriteMetrics};

/// The lake, table format, query session and state of one pipeline, opened once per command.
pub struct Runtime {
    /// The lake.
    pub lake: Lake,
    /// Table format.
    pub format: Arc<dyn TableFormat>,
    /// Query session.
    pub ctx: SessionContext,
    /// Run state.
    pub state: State,
}

impl Runtime {
    /// Opens the lake of `plan` and a session over it.
    pub fn open(plan: &Plan) -> Result<Runtime> {
        let lake = Lake::open(&plan.pipeline)?;
        let format = crate::table::for_pipeline(&plan.pipeline, &lake);
        let ctx = crate::engine::session(&plan.pipeline, Some(&lake))?;
        let state = State::new(&lake, format.clone(), ctx.clone());
        Ok(Runtime {
            lake,
            format,
            ctx,
            state,
        })
    }

    /// A run context over this runtime.
    pub fn context<'a>(&'a self, plan: &'a Plan, params: &'a RunParams) -> RunContext<'a> {
        RunContext {
            plan,
            lake: &self.lake,
            format: self.format.clone(),
            state: &self.state,
            params,
            ctx: self.ctx.clone(),
            models: None,
            full_refresh: false,
        }
    }
}

/// Everything a layer run needs.
pub struct RunContext<'a> {
    /// The plan.
    pub plan: &'a Plan,
    /// The lake.
    pub lake: &'a Lake,
    /// Table format.
    pub format: Arc<dyn TableFormat>,
    /// Run state.
    pub state: &'a State,
    /// Run parameters.
    pub params: &'a RunParams,
    /// Query session.
    pub ctx: SessionContext,
    /// Only these models (silver/gold), if given.
    pub models: Option<Vec<String>>,
    /// Rebuild merge/append models from scratch.
    pub full_refresh: bool,
}

impl RunContext<'_> {
    /// A run-log record for a step that started at `started` (µs) and took `duration_ms`.
    pub fn record(
        &self,
        layer: Layer,
        target: String,
        started: i64,
        duration_ms: u64,
        metrics: &WriteMetrics,
        details: serde_json::Value,
    ) -> RunRecord {
        RunRecord {
            run_id: self.params.run_id.clone(),
            pipeline: self.plan.pipeline.name.clone(),
            layer: layer.as_str().into(),
            target,
            status: if metrics.skipped {
                "skipped"
            } else {
                "success"
            }
            .into(),
            rows: metrics.rows_inserted,
            rows_updated: metrics.rows_updated,
            logical_date: crate::extract::sample::days_since_epoch(self.params.logical_date),
            started_at: started,
            duration_ms,
            message: None,
            details: details.to_string(),
            profile: None,
        }
    }

    /// Registers the current version of a lake table in the session as `<layer>.<name>`.
    pub async fn register(&self, id: &TableId) -> Result<()> {
        let url = self.lake.table_url(id);
        let provider = self
            .format
            .provider(&self.ctx, &url)
            .await?
            .ok_or_else(|| {
                Error::Usage(format!(
                    "table `{id}` does not exist yet at {}; run the {} layer first",
                    crate::storage::redact(&url),
                    id.layer
                ))
            })?;
        let schema = self
            .ctx
            .catalog("datafusion")
            .and_then(|c| c.schema(id.layer.as_str()))
            .ok_or_else(|| Error::Internal(format!("schema {} missing", id.layer)))?;
        schema.deregister_table(&id.name)?;
        schema.register_table(id.name.clone(), provider)?;
        Ok(())
    }
}

/// Runs one layer and records its steps in the run log.
pub async fn run_layer(rc: &RunContext<'_>, layer: Layer) -> Result<Vec<RunRecord>> {
    let started_ms = chrono::Utc::now().timestamp_millis();
    crate::lineage::emit::layer_started(rc, layer, started_ms).await;
    let result = run_steps(rc, layer).await;
    let profiles: Vec<_> = result
        .as_ref()
        .map(|records| records.iter().filter_map(|r| r.profile.clone()).collect())
        .unwrap_or_default();
    if !matches!(result, Err(Error::NothingToDo(_))) {
        crate::lineage::emit::layer_run(rc, layer, result.is_ok(), started_ms, &profiles).await;
    }
    let records = result?;
    rc.state.record(&records).await?;
    crate::profile::write_report(rc, layer, &profiles).await;
    Ok(records)
}

async fn run_steps(rc: &RunContext<'_>, layer: Layer) -> Result<Vec<RunRecord>> {
    let records = match layer {
        Layer::Extract => {
            let started = now_us();
            let metrics = crate::extract::run(rc.plan, rc.lake, rc.state, rc.params).await?;
            metrics
                .iter()
                .map(|m| {
                    let written = WriteMetrics {
                        rows_inserted: m.rows,
                        files_added: m.files as u64,
                        ..Default::default()
                    };
                    rc.record(
                        Layer::Extract,
                        format!("landing.{}", m.table),
                        started,
                        m.duration_ms,
                        &written,
                        serde_json::json!({ "files": m.files }),
                    )
                })
                .collect()
        }
        Layer::Bronze => bronze::run(rc).await?,
        Layer::Silver | Layer::Gold => model::run(rc, layer).await?,
    };
    Ok(records)
}
