//! Layer runs: extract, bronze, and the SQL model layers (silver, gold) over one model runner.
//!
//! Each step returns [`RunRecord`]s, which feed the run log, the logs and the summary.

pub mod bronze;
pub mod deletes;
pub mod model;
pub mod scd2;
pub mod snapshot_deletes;
pub mod window;

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
    /// This invocation's attempt id (a UUID): every run-log record and commit of this process
    /// carries it, so the attempts of one run id (Airflow retries) can be told apart.
    pub attempt: String,
    /// The Ballista cluster of `[engine] mode = "ballista"`, connected on first use (see
    /// [`RunContext::cluster`]).
    pub cluster: tokio::sync::OnceCell<crate::engine::ballista::Cluster>,
}

impl Runtime {
    /// Opens the lake of `plan` and a session over it.
    pub fn open(plan: &Plan) -> Result<Runtime> {
        let lake = Lake::open(&plan.pipeline)?;
        let format = crate::table::for_plan(plan, &lake);
        format.check()?;
        let ctx = crate::engine::session(&plan.pipeline, Some(&lake))?;
        let state = State::new(&lake, format.clone(), ctx.clone());
        Ok(Runtime {
            lake,
            format,
            ctx,
            state,
            attempt: uuid::Uuid::new_v4().to_string(),
            cluster: tokio::sync::OnceCell::new(),
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
            attempt: &self.attempt,
            ctx: self.ctx.clone(),
            models: None,
            full_refresh: false,
            registered: Arc::default(),
            fingerprints: Arc::new(crate::plan::fingerprint::of_plan(plan)),
            cluster: &self.cluster,
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
    /// This invocation's attempt id (see [`Runtime::attempt`]).
    pub attempt: &'a str,
    /// Query session.
    pub ctx: SessionContext,
    /// Only these models (silver/gold), if given.
    pub models: Option<Vec<String>>,
    /// Rebuild merge/append models from scratch.
    pub full_refresh: bool,
    /// Lake tables registered in `ctx` and unchanged since (see [`RunContext::register`]).
    pub registered: Arc<tokio::sync::Mutex<std::collections::HashSet<TableId>>>,
    /// The fingerprint of every bronze table and model, by `<layer>.<table>`, recorded with
    /// their steps in the run log (see [`crate::plan::fingerprint`]).
    pub fingerprints:
        Arc<std::collections::BTreeMap<String, crate::plan::fingerprint::Fingerprint>>,
    /// The runtime's cluster connection (see [`RunContext::cluster`]).
    pub cluster: &'a tokio::sync::OnceCell<crate::engine::ballista::Cluster>,
}

impl RunContext<'_> {
    /// A run-log record for a step that started at `started` (µs) and took `duration_ms`. Its
    /// status is `success` when this attempt committed the write, `already_committed` when an
    /// earlier attempt of the run id had (the counts are then that commit's), and `skipped` when
    /// there was nothing to write.
    pub fn record(
        &self,
        layer: Layer,
        target: String,
        started: i64,
        duration_ms: u64,
        metrics: &WriteMetrics,
        details: serde_json::Value,
    ) -> RunRecord {
        let (status, message) = match (&metrics.earlier_commit, metrics.skipped) {
            (Some(earlier), _) => (
                "already_committed",
                Some(match earlier.version {
                    Some(v) => format!(
                        "run id `{}` was already committed at table version {v} by an earlier attempt{}; nothing written",
                        self.params.run_id,
                        earlier
                            .attempt
                            .as_ref()
                            .map(|a| format!(" ({a})"))
                            .unwrap_or_default()
                    ),
                    None => format!(
                        "run id `{}` was already committed by an earlier attempt (its commit is no longer in the recent history, so its counts are unknown); nothing written",
                        self.params.run_id
                    ),
                }),
            ),
            (None, true) => ("skipped", None),
            (None, false) => ("success", None),
        };
        RunRecord {
            run_id: self.params.run_id.clone(),
            attempt: self.attempt.to_string(),
            pipeline: self.plan.pipeline.name.clone(),
            layer: layer.as_str().into(),
            status: status.into(),
            exit_code: None,
            rows: metrics.rows_inserted,
            rows_updated: metrics.rows_updated,
            rows_deleted: metrics.rows_deleted,
            logical_date: self.params.logical_day(),
            started_at: started,
            duration_ms,
            message,
            details: details.to_string(),
            fingerprint: self
                .fingerprints
                .get(&target)
                .map(crate::plan::fingerprint::Fingerprint::to_json),
            target,
            profile: None,
        }
    }

    /// The record of a step or layer that failed with `error`: its target is the model or table
    /// the error names, else the layer; it carries the exit code, the message and the error's kind.
    pub fn failure(&self, layer: Layer, started: i64, error: &Error) -> RunRecord {
        let target = error
            .named("model")
            .or_else(|| error.named("table"))
            .unwrap_or_else(|| layer.as_str().to_string());
        let info = crate::state::summary::ErrorSummary::of(error);
        let mut details = serde_json::json!({
            "kind": info.kind,
            "retryable": info.retryable,
            "hint": info.hint,
            "context": info.context,
        });
        // A quality failure keeps what it measured (every rule's result, or the drift findings).
        if let (Some(serde_json::Value::Object(found)), Some(d)) =
            (error.findings(), details.as_object_mut())
        {
            d.extend(found.clone());
        }
        let duration_ms = ((now_us() - started).max(0) / 1000) as u64;
        let mut record = self.record(
            layer,
            target,
            started,
            duration_ms,
            &WriteMetrics::default(),
            details,
        );
        record.status = "failed".into();
        record.exit_code = Some(info.exit_code);
        record.message = Some(info.message);
        record
    }

    /// Commit metadata for a write of this run: `run_id`, `attempt`, then `extra`.
    pub fn commit_metadata(&self, extra: &[(&str, String)]) -> Vec<(String, String)> {
        [
            ("run_id", self.params.run_id.clone()),
            ("attempt", self.attempt.to_string()),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
    }

    /// Registers the current version of a lake table in the session as `<layer>.<name>`, once per
    /// run: a table registered before and not written since ([`RunContext::written`]) is kept,
    /// so each table's log is loaded once however many models read it.
    pub async fn register(&self, id: &TableId) -> Result<()> {
        // Held while registering: a model planning against a table never sees it deregistered.
        let mut registered = self.registered.lock().await;
        if registered.contains(id) {
            return Ok(());
        }
        let url = self.lake.table_url(id);
        // On a cluster, a table is read as a plain Parquet scan of its current files.
        let provider = if self.distributed() {
            let files = self
                .format
                .snapshot_files(&self.ctx, &url)
                .await
                .map_err(|e| match e {
                    Error::Usage(m) => Error::Usage(format!("table `{id}`: {m}")),
                    e => e,
                })?;
            match files {
                Some(files) => Some(crate::engine::ballista::listing_table(&files)?),
                None => None,
            }
        } else {
            self.format.provider(&self.ctx, &url).await?
        };
        let provider = provider.ok_or_else(|| {
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
        registered.insert(id.clone());
        Ok(())
    }

    /// Whether models execute on a Ballista cluster (`[engine] mode = "ballista"`).
    pub fn distributed(&self) -> bool {
        matches!(
            self.plan.pipeline.engine.mode,
            crate::config::EngineMode::Ballista { .. }
        )
    }

    /// The cluster models execute on, connected on the first call; `None` in local mode.
    ///
    /// Errors: the scheduler cannot be reached ([`Error::Cluster`], exit 75).
    pub async fn cluster(&self) -> Result<Option<&crate::engine::ballista::Cluster>> {
        let crate::config::EngineMode::Ballista { scheduler } = &self.plan.pipeline.engine.mode
        else {
            return Ok(None);
        };
        self.cluster
            .get_or_try_init(|| {
                crate::engine::ballista::Cluster::connect(
                    scheduler,
                    &self.ctx,
                    self.plan.pipeline.engine.job_timeout,
                )
            })
            .await
            .map(Some)
    }

    /// Forgets the registration of `id` after this run wrote it: the next [`RunContext::register`]
    /// loads its new version.
    pub async fn written(&self, id: &TableId) {
        self.registered.lock().await.remove(id);
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

/// What the layers of one invocation produced, for the summary: the run-log records and the
/// profile reports written.
#[derive(Debug, Default)]
pub struct RunOutput {
    /// Run-log records in order: the steps that finished, and a `failed` record for a layer
    /// that failed.
    pub records: Vec<RunRecord>,
    /// Profile reports written: the layer and the report's URL.
    pub reports: Vec<(Layer, url::Url)>,
}

/// Runs one layer and records its steps in the run log: the steps that finished, and when the
/// layer fails (or a stop is requested, see [`crate::interrupt`]) one `failed` record naming the
/// model or table at fault with the exit code and message. A layer with nothing to do records
/// nothing. The records (and the report written) are added to `out` whether the layer
/// succeeded or not.
pub async fn run_layer(rc: &RunContext<'_>, layer: Layer, out: &mut RunOutput) -> Result<()> {
    let started_ms = chrono::Utc::now().timestamp_millis();
    let started = now_us();
    crate::lineage::emit::layer_started(rc, layer, started_ms).await;
    let mut records = Vec::new();
    let result = tokio::select! {
        result = run_steps(rc, layer, &mut records) => result,
        signal = crate::interrupt::requested() => Err(Error::Interrupted(signal)),
    };
    let profiles: Vec<_> = records.iter().filter_map(|r| r.profile.clone()).collect();
    if !matches!(result, Err(Error::NothingToDo(_))) {
        crate::lineage::emit::layer_run(rc, layer, result.is_ok(), started_ms, &profiles).await;
    }
    match result {
        Ok(()) => {
            let logged = rc.state.record(&records).await;
            if logged.is_ok() {
                if let Some(url) = crate::profile::write_report(rc, layer, &profiles).await {
                    out.reports.push((layer, url));
                }
            }
            out.records.extend(records);
            logged
        }
        Err(e) => {
            if !matches!(e, Error::NothingToDo(_)) {
                records.push(rc.failure(layer, started, &e));
                // The original error is what the caller must see; a lake that cannot take the
                // run log (disk full, no permission) is usually the same fault.
                if let Err(log) = rc.state.record(&records).await {
                    tracing::warn!(error = %log.user_message(), "Cannot record the failed attempt in the run log.");
                }
            }
            out.records.extend(records);
            Err(e)
        }
    }
}

/// Runs the steps of one layer, pushing one record per finished step into `records` (so the
/// steps that committed before a failure are still recorded).
async fn run_steps(rc: &RunContext<'_>, layer: Layer, records: &mut Vec<RunRecord>) -> Result<()> {
    match layer {
        Layer::Extract => {
            let started = now_us();
            let metrics =
                crate::extract::run(rc.plan, rc.lake, rc.state, rc.params, rc.full_refresh).await?;
            records.extend(metrics.iter().map(|m| {
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
            }));
            Ok(())
        }
        Layer::Bronze => bronze::run(rc, records).await,
        Layer::Silver | Layer::Gold => model::run(rc, layer, records).await,
    }
}
