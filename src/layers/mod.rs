//! Layer runs: extract, bronze, and the SQL model layers (silver, gold) over one model runner.
//!
//! Each step returns [`RunRecord`]s, which feed the run log, the logs and the summary.

pub mod bronze;
pub mod model;

use std::sync::Arc;

use datafusion::common::Column;
use datafusion::logical_expr::{lit, when, Expr};
use datafusion::prelude::{DataFrame, SessionContext};

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
            logical_date: self.params.logical_day(),
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

/// Applies the `on_schema_change` policy before a write into table `id`, if it exists: compares
/// the table's columns with `new` (the columns about to be written), refuses the changes the
/// policy does not allow with the error `refuse` builds from the list (it names the model or
/// table), and applies to the table the allowed changes the write cannot make itself (lossless
/// widenings; NOT NULL columns that are no longer written become nullable, and with
/// `sync_all_columns` so do NOT NULL columns whose new data is declared nullable). Added columns are merged by the write, declared nullable (the table's older rows
/// hold NULL in them). Returns the input to write and the changes, for the run log.
pub async fn evolve_schema(
    rc: &RunContext<'_>,
    id: &TableId,
    input: DataFrame,
    policy: crate::schema::OnSchemaChange,
    refuse: impl FnOnce(String) -> Error,
) -> Result<(DataFrame, Vec<crate::schema::ColumnChange>)> {
    use crate::schema::{diff, ColumnChange, ColumnShape};
    let url = rc.lake.table_url(id);
    let Some(provider) = rc.format.provider(&rc.ctx, &url).await? else {
        return Ok((input, Vec::new()));
    };
    let new = input.schema().as_arrow().clone();
    let new = &new;
    let old_schema = provider.schema();
    let changes = diff(
        &ColumnShape::of_schema(&old_schema),
        &ColumnShape::of_schema(new),
    );
    let refused = policy.refused(&changes);
    if !refused.is_empty() {
        return Err(refuse(format!(
            "`on_schema_change = \"{policy}\"` does not allow: {}",
            refused
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    let mut alters: Vec<crate::table::ColumnAlter> = Vec::new();
    for change in &changes {
        let Ok(old) = old_schema.field_with_name(change.column()) else {
            continue;
        };
        let wanted = match change {
            ColumnChange::TypeChanged { .. } => {
                new.field_with_name(old.name())
                    .ok()
                    .map(|n| crate::table::ColumnAlter {
                        name: old.name().clone(),
                        data_type: n.data_type().clone(),
                        nullable: old.is_nullable() || n.is_nullable(),
                    })
            }
            ColumnChange::NowNullable { .. }
                if policy == crate::schema::OnSchemaChange::SyncAllColumns =>
            {
                Some(crate::table::ColumnAlter {
                    name: old.name().clone(),
                    data_type: old.data_type().clone(),
                    nullable: true,
                })
            }
            ColumnChange::Removed { .. } if !old.is_nullable() => Some(crate::table::ColumnAlter {
                name: old.name().clone(),
                data_type: new
                    .field_with_name(old.name())
                    .map(|n| n.data_type().clone())
                    .unwrap_or_else(|_| old.data_type().clone()),
                nullable: true,
            }),
            _ => None,
        };
        if let Some(w) = wanted {
            match alters.iter_mut().find(|a| a.name == w.name) {
                Some(a) => a.nullable |= w.nullable,
                None => alters.push(w),
            }
        }
    }
    if !alters.is_empty() {
        rc.format.alter_columns(&rc.ctx, &url, &alters).await?;
    }
    for change in &changes {
        tracing::warn!(table = %id, change = %change, policy = %policy, "Schema changed; applied per on_schema_change.");
    }
    let added: Vec<&str> = changes
        .iter()
        .filter(|c| matches!(c, ColumnChange::Added { .. }))
        .map(ColumnChange::column)
        .filter(|c| new.field_with_name(c).is_ok_and(|f| !f.is_nullable()))
        .collect();
    let input = if added.is_empty() {
        input
    } else {
        let mut exprs = Vec::new();
        for f in new.fields() {
            let c = Expr::Column(Column::new_unqualified(f.name()));
            exprs.push(if added.contains(&f.name().as_str()) {
                // A CASE without ELSE is nullable.
                when(lit(true), c).end()?.alias(f.name())
            } else {
                c
            });
        }
        input.select(exprs)?
    };
    Ok((input, changes))
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
