//! The model runner shared by silver and gold: for each model in run order, register the tables
//! it reads, plan its SQL with DataFusion (binding the templated values as parameters), check merge
//! keys, and write it with its materialization.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use datafusion::datasource::MemTable;
use datafusion::logical_expr::LogicalPlan;

use datafusion::error::DataFusionError;
use datafusion::prelude::{DataFrame, SessionContext};
use tracing::info;

use super::RunContext;
use crate::error::{Error, Result};
use crate::plan::{display_path, graph, Layer, Materialization, Model, Plan, RunParams, TableId};
use crate::quality;
use crate::state::{now_us, RunRecord};
use crate::table::{WriteMode, WriteRequest};

/// Runs the models of `layer` (all, or those named with `--models`), pushing one record per
/// written model into `records`.
///
/// Up to `engine.threads` models run at once; a model starts when every model of this run it
/// reads has been written (models outside the selection are read as they are). After a failure
/// no model starts; the ones running finish (and are recorded), and the first error is returned.
pub async fn run(rc: &RunContext<'_>, layer: Layer, records: &mut Vec<RunRecord>) -> Result<()> {
    use futures::stream::{FuturesUnordered, StreamExt};
    let mut pending: Vec<&Model> = rc
        .plan
        .layer_models(layer)
        .filter(|model| {
            rc.models.as_ref().is_none_or(|only| {
                only.iter()
                    .any(|m| *m == model.id.name || *m == model.id.to_string())
            })
        })
        .collect();
    if pending.is_empty() {
        return Err(Error::NothingToDo(format!("no {layer} models selected")));
    }
    refuse_unplannable(rc, &pending).await?;
    let threads = rc.plan.pipeline.engine.threads.max(1);
    let mut in_flight: BTreeSet<TableId> = BTreeSet::new();
    let mut running = FuturesUnordered::new();
    let mut failure: Option<Error> = None;
    loop {
        while failure.is_none() && running.len() < threads {
            let waits = |m: &Model| {
                m.depends_on
                    .iter()
                    .any(|d| in_flight.contains(d) || pending.iter().any(|p| p.id == *d))
            };
            let Some(next) = pending.iter().position(|m| !waits(m)) else {
                break;
            };
            let model = pending.remove(next);
            in_flight.insert(model.id.clone());
            running.push(async move {
                // Whatever fails in the model's step (its SQL on the data, the write, the disk)
                // names the model and its file; the kind comes from the inner error.
                let result = run_model(rc, model).await.map_err(|e| {
                    e.in_model(
                        &model.id.to_string(),
                        &display_path(&rc.plan.pipeline, &model.file),
                        &crate::storage::redact(&rc.lake.table_url(&model.id)),
                    )
                });
                // Inside the model's future, not in this loop: the registrations' lock may be
                // held by another model's future, which only makes progress while `running`
                // is polled.
                rc.written(&model.id).await;
                (model, result)
            });
        }
        let Some((model, result)) = running.next().await else {
            break;
        };
        in_flight.remove(&model.id);
        match result {
            Ok(record) => records.push(record),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn run_model(rc: &RunContext<'_>, model: &Model) -> Result<RunRecord> {
    let clock = Instant::now();
    let started = now_us();
    for dep in &model.depends_on {
        rc.register(dep).await?;
    }
    // An append that consumes a catch-up window is committed as of the table version read
    // before its window: another run that consumed the same window and committed since makes
    // this commit conflict (exit 75; the retry reads the window that is left) instead of
    // appending the window's rows twice.
    let window_read = if model.header.materialized == Materialization::Append
        && !model.unprocessed.is_empty()
        && !rc.full_refresh
    {
        Some(
            rc.format
                .stats(&rc.lake.table_url(&model.id))
                .await?
                .map_or(-1, |s| s.version),
        )
    } else {
        None
    };
    let window = super::window::open(rc, model).await?;
    let df = plan_model(
        &rc.ctx,
        rc.plan,
        model,
        rc.params,
        window.as_deref().unwrap_or_default(),
    )
    .await?;
    // Refuse an output type the format cannot store before any table folder is created.
    let shown = display_path(&rc.plan.pipeline, &model.file);
    let format = rc.format.for_table(&rc.lake.table_url(&model.id));
    let mut unstorable = crate::table::unstorable_problems(format, &shown, df.schema().as_arrow());
    unstorable.extend(partition_problems(
        format,
        &shown,
        model,
        df.schema().as_arrow(),
    ));
    if !unstorable.is_empty() {
        return Err(Error::Invalid(unstorable));
    }
    // Optimize once here: an error in constant folding (`CAST('DHL01' AS INT)`) is then reported
    // with the model file, before the table format turns it into text.
    df.clone()
        .into_optimized_plan()
        .map_err(|e| sql_error(&display_path(&rc.plan.pipeline, &model.file), e))?;
    // On a cluster the query runs there once; the rest of the step reads its staged result.
    // The rows of a Delta table or append model are written by the executors into the
    // table's staging directory, to be committed by reference when nothing changes them; other
    // results (merges and histories, which this process rewrites anyway) come back here.
    let url = rc.lake.table_url(&model.id);
    let by_reference = format.name() == "delta"
        && model.header.partition_by.is_empty()
        && (rc.full_refresh
            || matches!(
                model.header.materialized,
                Materialization::Table | Materialization::Append
            ));
    let (df, _distributed, cluster_files) = match rc.cluster().await? {
        Some(cluster) if by_reference => {
            let df = crate::table::delta::delta_ready(df)?;
            let files = cluster
                .write_delta_files(&rc.ctx, df, &url, &rc.plan.pipeline.format)
                .await?;
            (files.df.clone(), None, Some(files))
        }
        Some(cluster) => {
            let staged = cluster.execute(&rc.ctx, df).await?;
            (staged.df.clone(), Some(staged), None)
        }
        None => (df, None, None),
    };
    // A check-strategy history dates its versions by the runs that saw them: bronze cannot
    // rebuild it, so a full refresh adds to it like any run (as dbt keeps snapshots).
    let check_history =
        model.header.materialized == Materialization::Scd2 && model.header.sequence_by.is_empty();
    if rc.full_refresh && check_history {
        tracing::warn!(model = %model.id, "A check_cols history cannot be rebuilt from bronze (its versions are dated by the runs that saw them): --full-refresh reads all of bronze into it and keeps its history.");
    }
    let mode = match (model.header.materialized, rc.full_refresh && !check_history) {
        (_, true) | (Materialization::Table, _) => WriteMode::Overwrite,
        (Materialization::Append, _) => WriteMode::Append,
        (Materialization::Merge, _) => WriteMode::Merge {
            keys: model.header.unique_key.clone(),
            sequence_by: model.header.sequence_by.clone(),
            delete: None,
        },
        // The recomputed history of the batch's keys replaces their versions by surrogate key
        // (and removes the versions it no longer holds).
        (Materialization::Scd2, _) => WriteMode::Merge {
            keys: vec![super::scd2::SCD_ID.to_string()],
            sequence_by: Vec::new(),
            delete: Some(super::deletes::FLAG.to_string()),
        },
    };
    let is_scd2 = model.header.materialized == Materialization::Scd2;
    let df = as_written(&rc.plan.pipeline, df, model, &shown)?;
    // Delete rows skip the schema checks and expectations: they carry a key and a version.
    let (df, deletes) = super::deletes::split(&rc.ctx, df).await?;
    let mode = match (mode, &deletes) {
        (
            WriteMode::Merge {
                keys, sequence_by, ..
            },
            Some(_),
        ) if !is_scd2 => WriteMode::Merge {
            keys,
            sequence_by,
            delete: Some(super::deletes::FLAG.to_string()),
        },
        (mode, _) => mode,
    };
    // Incremental models keep their table: its schema changes only as the policy allows.
    // A schema change evolve_schema commits (a widening rewrites the table) is this run's own:
    // the window's append is then committed as of the version after it, provided nothing else
    // was committed since the window was read.
    let version_now = || async {
        Ok::<_, Error>(
            rc.format
                .stats(&rc.lake.table_url(&model.id))
                .await?
                .map_or(-1, |s| s.version),
        )
    };
    let before_evolve = match window_read {
        Some(_) if mode != WriteMode::Overwrite => Some(version_now().await?),
        _ => None,
    };
    let (df, schema_changes) = if mode == WriteMode::Overwrite {
        (df, Vec::new())
    } else {
        let policy = model
            .header
            .on_schema_change
            .unwrap_or(rc.plan.pipeline.on_schema_change);
        super::evolve_schema(rc, &model.id, df, policy, |m| Error::Sql {
            location: shown,
            message: format!(
                "the output of `{}` no longer matches its table: {m}; cast the column in SQL to the table's type, set another `-- on_schema_change:`, or rebuild the table with `--full-refresh`",
                model.id
            ),
        })
        .await?
    };
    let window_read = match (window_read, before_evolve) {
        (Some(read), Some(before)) if read == before && !schema_changes.is_empty() => {
            Some(version_now().await?)
        }
        (read, _) => read,
    };
    let is_merge_model = model.header.materialized == Materialization::Merge;
    // A model whose rows are checked before the commit runs its query once, into a local
    // stage: the checks, the quarantine split and the write all read the stage.
    // The rows of a merge or an scd2 history are staged here even when a cluster staged the
    // query's: `as_written` added the engine's operators (the newest row per key), which the
    // format's merge cannot plan.
    let (df, expectations, quarantined, _stage) = check_expectations(
        rc,
        model,
        df,
        is_merge_model || is_scd2,
        cluster_files.is_some() && !(is_merge_model || is_scd2),
    )
    .await?;
    // Appends are made idempotent per run id; overwrite and merge are idempotent by nature.
    // A full refresh of an append model records the run id too: retrying that run id then
    // appends nothing on top of the rebuilt table. A model with a catch-up window records it
    // whatever its materialization: the window's state recognises a committed run by it.
    let txn_id = (model.header.materialized == Materialization::Append
        || !model.unprocessed.is_empty())
    .then(|| super::window::txn_id(&rc.params.run_id));
    // The history is staged too: the format's merge plans its input with its own planner, which
    // knows none of the engine's operators.
    // It is computed from a read of the table, so it is committed as of that read: a run that
    // committed to the table since makes this commit conflict (exit 75) instead of leaving two
    // histories of a key side by side.
    let (df, _history, read_version) = if is_scd2 {
        let (staged, read_version) =
            scd2_rows(rc, model, df, deletes.as_ref(), &mode, started, &txn_id).await?;
        (staged.df.clone(), Some(staged), Some(read_version))
    } else {
        (df, None, None)
    };
    // A merge model's keys are checked on a full refresh too: the rebuilt table must be one
    // the next merge can match against.
    if is_merge_model {
        let checked = match &deletes {
            Some(d) => super::deletes::marked_union(df.clone(), d.df.clone())?,
            None => df.clone(),
        };
        check_merge_keys(rc.plan, model, &checked, &model.header.unique_key).await?;
    }
    // A merge's deletes: its tombstones are committed before the table. A versioned merge's
    // upserts are filtered by the tombstones as read here, so its table is committed as of the
    // version before that read: a run that committed deletes since makes the commit conflict
    // (exit 75), instead of an older upsert bringing back a key that run deleted.
    let (df, _kept, read_version) = match (&deletes, is_merge_model) {
        (Some(d), true) => {
            let overwrite = mode == WriteMode::Overwrite;
            let read_version = if overwrite || model.header.sequence_by.is_empty() {
                None
            } else {
                Some(rc.format.stats(&url).await?.map_or(-1, |s| s.version))
            };
            let (df, kept) =
                super::deletes::merge_input(rc, model, df, d.df.clone(), overwrite, txn_id.clone())
                    .await?;
            (df, kept, read_version)
        }
        _ => (df, None, read_version.or(window_read)),
    };
    let streamed = crate::profile::stream_profiler(rc, &model.id, df.schema().as_arrow(), &mode)?;
    let metrics = rc
        .format
        .write(WriteRequest {
            ctx: &rc.ctx,
            url: &url,
            input: df,
            mode,
            partition_by: model.header.partition_by.clone(),
            txn_id,
            metadata: rc.commit_metadata(&[
                ("layer", model.id.layer.to_string()),
                ("model", model.id.to_string()),
            ]),
            read_version,
            observer: streamed.as_ref().map(crate::profile::Streamed::observer),
            staged: cluster_files.as_ref(),
        })
        .await?;
    let message = if metrics.earlier_commit.is_some() {
        "Model already committed by an earlier attempt of this run id: nothing written (the counts are that commit's)."
    } else {
        "Wrote model."
    };
    info!(
        pipeline = %rc.plan.pipeline.name,
        layer = %model.id.layer,
        model = %model.id,
        run_id = %rc.params.run_id,
        rows = metrics.rows_inserted,
        rows_updated = metrics.rows_updated,
        rows_deleted = metrics.rows_deleted,
        duration_ms = clock.elapsed().as_millis() as u64,
        "{message}"
    );
    super::window::commit(rc, model).await?;
    let profile = if metrics.skipped {
        None
    } else {
        crate::profile::after_write(rc, &model.id, &metrics, streamed, cluster_files.as_ref())
            .await?
    };
    let mut record = rc.record(
        model.id.layer,
        model.id.to_string(),
        started,
        clock.elapsed().as_millis() as u64,
        &metrics,
        serde_json::json!({
            "materialized": model.header.materialized.as_str(),
            "version": metrics.version,
            "rows_deleted": metrics.rows_deleted,
            "files_added": metrics.files_added,
            "expectations": expectations,
            "quarantined": quarantined,
            "schema_changes": schema_changes,
            "drift": profile.as_ref().map(|p| &p.drift),
        }),
    );
    record.profile = profile;
    Ok(record)
}

/// The rows an scd2 model merges (see [`super::scd2::history`]), staged, and the table version
/// they were computed from (-1: no table; see [`WriteRequest::read_version`]); its delete events
/// are recorded first (a full refresh rebuilds them), in a commit carrying `txn_id`.
async fn scd2_rows(
    rc: &RunContext<'_>,
    model: &Model,
    upserts: DataFrame,
    deletes: Option<&super::deletes::Deletes>,
    mode: &WriteMode,
    started: i64,
    txn_id: &Option<String>,
) -> Result<(crate::engine::Staged, i64)> {
    use super::scd2;
    let overwrite = *mode == WriteMode::Overwrite;
    let read = |url: url::Url| async move {
        match rc.format.provider(&rc.ctx, &url).await? {
            Some(p) => Ok::<_, Error>(Some(rc.ctx.read_table(p)?)),
            None => Ok(None),
        }
    };
    let sidecar = super::deletes::sidecar_url(rc, model, scd2::DELETES);
    let tracks = model.header.hard_deletes != crate::plan::HardDeletes::Ignore;
    let url = rc.lake.table_url(&model.id);
    let (read_version, table, prior_deletes) = if overwrite {
        // A rebuild reads none of the table, but is ordered with the runs that do.
        let version = rc.format.stats(&url).await?.map_or(-1, |s| s.version);
        (version, None, None)
    } else {
        let (version, table) = match rc.format.provider_with_version(&rc.ctx, &url).await? {
            Some((p, version)) => (version, Some(rc.ctx.read_table(p)?)),
            None => (-1, None),
        };
        (
            version,
            table,
            if tracks {
                read(sidecar.clone()).await?
            } else {
                None
            },
        )
    };
    let history = scd2::history(
        &rc.ctx,
        model,
        scd2::Batch {
            upserts,
            deletes: deletes.map(|d| d.df.clone()),
            table,
            prior_deletes,
            run_start_us: started,
        },
    )
    .await?;
    let rows = if overwrite {
        super::deletes::unmarked(history.rows)?
    } else {
        history.rows
    };
    let staged = crate::engine::stage(&rc.ctx, rows).await?;
    if let Some(events) = history.deletes {
        let events = crate::engine::stage(&rc.ctx, events).await?;
        if overwrite || events.df.clone().count().await? > 0 {
            let keys = model
                .header
                .unique_key
                .iter()
                .chain(std::iter::once(&model.header.scd_columns[0]))
                .cloned()
                .collect();
            rc.format
                .write(WriteRequest {
                    ctx: &rc.ctx,
                    url: &sidecar,
                    input: events.df.clone(),
                    mode: if overwrite {
                        WriteMode::Overwrite
                    } else {
                        WriteMode::Merge {
                            keys,
                            sequence_by: Vec::new(),
                            delete: None,
                        }
                    },
                    partition_by: Vec::new(),
                    txn_id: txn_id.clone(),
                    metadata: rc.commit_metadata(&[
                        ("model", model.id.to_string()),
                        ("operation", "scd2_deletes".into()),
                    ]),
                    read_version: None,
                    observer: None,
                    staged: None,
                })
                .await?;
        }
    }
    Ok((staged, read_version))
}

/// Applies the model's expectations; quarantined rows go to `<layer>._quarantine_<model>`.
/// Returns the rows to write, the results per rule, the number of rows quarantined, and the
/// stage the rows are read from: with rules, or when `stage` is set (a merge, whose keys are
/// checked next), the model's query (and its rules' joins and windows) is executed once into
/// [`crate::engine::stage`], which must live until the write is done.
///
/// `staged_input`: `df` is exactly a scan of staged files (a cluster job's result, to be
/// written as it is): it is not staged again, and when no rule removed a row it is returned as
/// it is, so that the write can commit those files by reference.
async fn check_expectations(
    rc: &RunContext<'_>,
    model: &Model,
    df: DataFrame,
    stage: bool,
    staged_input: bool,
) -> Result<(
    DataFrame,
    Vec<quality::RuleResult>,
    u64,
    Option<crate::engine::Staged>,
)> {
    if model.rules.is_empty() {
        if !stage || staged_input {
            return Ok((df, Vec::new(), 0, None));
        }
        let staged = crate::engine::stage(&rc.ctx, df).await?;
        return Ok((staged.df.clone(), Vec::new(), 0, Some(staged)));
    }
    let name = model.id.to_string();
    let input = df.clone();
    let mut flagged = quality::flag(&rc.ctx, &name, df, &model.rules).await?;
    let staged = crate::engine::stage(&rc.ctx, flagged.df).await?;
    flagged.df = staged.df.clone();
    let outcome = quality::decide(&name, flagged, &model.rules, &rc.params.run_id).await?;
    let quarantined: u64 = outcome
        .results
        .iter()
        .filter(|r| r.action == quality::Action::Quarantine)
        .map(|r| r.failed)
        .sum();
    if let (Some(q), true) = (outcome.quarantine, quarantined > 0) {
        let id = TableId {
            layer: model.id.layer,
            name: crate::quarantine::table_name(&model.id.name),
        };
        let url = rc.lake.table_url(&id);
        let m = rc
            .format
            .write(WriteRequest {
                ctx: &rc.ctx,
                url: &url,
                input: q,
                mode: WriteMode::Append,
                partition_by: Vec::new(),
                txn_id: Some(format!("smelter:{}", rc.params.run_id)),
                metadata: rc.commit_metadata(&[("model", model.id.to_string())]),
                read_version: None,
                observer: None,
                staged: None,
            })
            .await?;
        info!(model = %model.id, quarantine = %id, rows = m.rows_inserted, "Quarantined rows.");
    }
    let removed: u64 = outcome
        .results
        .iter()
        .filter(|r| {
            matches!(
                r.action,
                quality::Action::Quarantine | quality::Action::Drop
            )
        })
        .map(|r| r.failed)
        .sum();
    if staged_input && removed == 0 {
        return Ok((input, outcome.results, quarantined, Some(staged)));
    }
    Ok((outcome.good, outcome.results, quarantined, Some(staged)))
}

/// Plans a model's SQL with its parameters bound (`unprocessed`: its catch-up windows' bronze
/// run ids, one list per [`Model::unprocessed`] table; empty lists when shorter); errors name
/// the file, line and column.
pub async fn plan_model(
    ctx: &SessionContext,
    plan: &Plan,
    model: &Model,
    params: &RunParams,
    unprocessed: &[Vec<String>],
) -> Result<DataFrame> {
    let shown = display_path(&plan.pipeline, &model.file);
    let windows: Vec<Vec<String>> = (0..model.unprocessed.len())
        .map(|i| unprocessed.get(i).cloned().unwrap_or_default())
        .collect();
    let df = ctx
        .sql(&model.sql)
        .await
        .and_then(|df| df.with_param_values(plan.param_values(params, &windows)))
        .map_err(|e| sql_error(&shown, e))?;
    let schema = df.schema();
    let h = &model.header;
    let partition_columns: Vec<String> = h.partition_by.iter().map(|p| p.column.clone()).collect();
    for (name, key) in [
        ("unique_key", &h.unique_key),
        ("partition_by", &partition_columns),
        ("sequence_by", &h.sequence_by),
        ("check_cols", &h.check_cols),
    ]
    .into_iter()
    .flat_map(|(name, columns)| columns.iter().map(move |c| (name, c)))
    {
        if schema.field_with_unqualified_name(key).is_err() {
            return Err(Error::Sql {
                location: format!("{shown}:{}", h.line(name)),
                message: format!(
                    "`{name}` column `{key}` is not in the model's output; columns: {}{}",
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    crate::plan::ident::case_hint(
                        key,
                        schema.fields().iter().map(|f| f.name().as_str())
                    )
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default()
                ),
            });
        }
    }
    Ok(df)
}

/// [`crate::table::TableFormat::partition_problems`] of `model`'s header over its output
/// `schema`, each prefixed with the model file and the header line.
fn partition_problems(
    format: &dyn crate::table::TableFormat,
    shown: &str,
    model: &Model,
    schema: &arrow::datatypes::Schema,
) -> Vec<String> {
    let line = model.header.line("partition_by");
    format
        .partition_problems(&model.header.partition_by, schema)
        .into_iter()
        .map(|p| format!("{shown}:{line}: {p}"))
        .collect()
}

/// A model's planned rows as its materialization writes them: a versioned merge (and its full
/// refresh) keeps only the newest version of each key in the batch ([`newest_per_key`]); an
/// `scd2` model gets its history columns ([`super::scd2::shape`]). Planning uses the same, so
/// lineage and the schema later models see are those of the table.
///
/// A model that applies deletes also gets the [`super::deletes::FLAG`] column (and loses `_op`):
/// see [`super::deletes::mark`]; within a batch a delete beats an upsert of the same version.
fn as_written(
    pipeline: &crate::config::Pipeline,
    df: DataFrame,
    model: &Model,
    shown: &str,
) -> Result<DataFrame> {
    let df = super::deletes::mark(pipeline, df, model, shown)?;
    match model.header.materialized {
        Materialization::Merge if !model.header.sequence_by.is_empty() => {
            newest_per_key(df, &model.header.unique_key, &model.header.sequence_by)
        }
        Materialization::Scd2 => super::scd2::shape(df, model, shown),
        _ => Ok(df),
    }
}

/// The newest row of each `keys` value by `sequence_by` (descending, NULL lowest), as
/// `ROW_NUMBER() OVER (PARTITION BY keys ORDER BY sequence_by DESC NULLS LAST, …) = 1`, which the
/// engine executes as a hash aggregation keeping the best row (`engine::dedup`). Ties on the
/// sequence are broken by the other non-nested columns in output order, descending, so the row
/// kept does not depend on the input's order.
fn newest_per_key(df: DataFrame, keys: &[String], sequence_by: &[String]) -> Result<DataFrame> {
    use datafusion::common::Column;
    use datafusion::functions_window::expr_fn::row_number;
    use datafusion::logical_expr::{col, lit, ExprFunctionExt};
    const RN: &str = "__smelter_sequence_rn";
    let column = |name: &str| col(Column::new_unqualified(name));
    // A delete outranks an upsert of the same version.
    let flag = df
        .schema()
        .field_with_unqualified_name(super::deletes::FLAG)
        .is_ok()
        .then_some(super::deletes::FLAG);
    let order = sequence_by
        .iter()
        .map(String::as_str)
        .chain(flag)
        .chain(
            df.schema()
                .fields()
                .iter()
                .filter(|f| {
                    !f.data_type().is_nested()
                        && !keys.contains(f.name())
                        && !sequence_by.contains(f.name())
                        && f.name() != super::deletes::FLAG
                })
                .map(|f| f.name().as_str()),
        )
        .map(|c| column(c).sort(false, false))
        .collect::<Vec<_>>();
    let rn = row_number()
        .partition_by(keys.iter().map(|k| column(k)).collect())
        .order_by(order)
        .build()?
        .alias(RN);
    Ok(df
        .window(vec![rn])?
        .filter(col(RN).eq(lit(1u64)))?
        .drop_columns(&[RN])?)
}

/// Plans every model (as `smelter validate` does, no data read) and fails with the problems of
/// `models` and of the models they depend on, so that a header or SQL error stops the layer
/// before any of its models writes, not after others committed. Errors: [`Error::Invalid`]
/// (exit 2) with every problem found; reading bronze schemas from the lake.
async fn refuse_unplannable(rc: &RunContext<'_>, models: &[&Model]) -> Result<()> {
    let (_, problems) = plan_all(rc.plan, Some((rc.lake, rc.format.as_ref())), true).await?;
    if problems.is_empty() {
        return Ok(());
    }
    // The selected models and their upstream models, by the file that problems start with.
    let mut ids: BTreeSet<&TableId> = models.iter().map(|m| &m.id).collect();
    loop {
        let before = ids.len();
        let upstream: Vec<&TableId> = rc
            .plan
            .models
            .iter()
            .filter(|m| ids.contains(&m.id))
            .flat_map(|m| m.depends_on.iter())
            .collect();
        ids.extend(upstream);
        if ids.len() == before {
            break;
        }
    }
    let files: Vec<String> = rc
        .plan
        .models
        .iter()
        .filter(|m| ids.contains(&m.id))
        .map(|m| format!("{}:", display_path(&rc.plan.pipeline, &m.file)))
        .collect();
    let ours: Vec<String> = problems
        .into_iter()
        .filter(|p| files.iter().any(|f| p.starts_with(f.as_str())))
        .collect();
    if ours.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid(ours))
}

/// Maps a DataFusion planning error to `file:line:col: message`.
pub fn sql_error(shown: &str, e: DataFusionError) -> Error {
    let span = e.diagnostic().and_then(|d| {
        d.span
            .or_else(|| d.notes.iter().find_map(|n| n.span))
            .map(|s| (s.start.line, s.start.column))
    });
    let message = graph::syntax_message(&e).unwrap_or_else(|| e.strip_backtrace());
    let message = message
        .trim_start_matches("Error during planning: ")
        .trim_start_matches("Schema error: ")
        .to_string();
    let message = crate::plan::ident::with_case_hint(&e, message);
    match span {
        Some((line, col)) if line > 0 => Error::Sql {
            location: format!("{shown}:{line}:{col}"),
            message,
        },
        _ => {
            let located = graph::located(shown, &message);
            let (location, message) = located
                .split_once(": ")
                .map(|(l, m)| (l.to_string(), m.to_string()))
                .unwrap_or((shown.to_string(), message));
            Error::Sql { location, message }
        }
    }
}

/// Merge keys must be non-null and unique in the model result, or MERGE would duplicate rows.
async fn check_merge_keys(
    plan: &Plan,
    model: &Model,
    df: &DataFrame,
    keys: &[String],
) -> Result<()> {
    use datafusion::functions_aggregate::expr_fn::{count, sum};
    use datafusion::logical_expr::{col, lit, when, Expr};
    let key_cols: Vec<_> = keys.iter().map(|k| col(format!("\"{k}\""))).collect();
    // One pass: count the rows of each key value, then the rows with a NULL key part and the
    // key values seen more than once.
    let group_cols: Vec<_> = keys
        .iter()
        .map(|k| col(datafusion::common::Column::new_unqualified(k)))
        .collect();
    let any_null = group_cols
        .iter()
        .cloned()
        .map(|c| c.is_null())
        .reduce(|a, b| a.or(b))
        .unwrap_or(lit(false));
    let counts = df
        .clone()
        .aggregate(key_cols, vec![count(lit(1)).alias("__n")])?
        .aggregate(
            vec![],
            vec![
                sum(when(any_null.clone(), col("__n")).otherwise(lit(0i64))?).alias("nulls"),
                count(
                    when(
                        Expr::Not(Box::new(any_null)).and(col("__n").gt(lit(1i64))),
                        lit(1i64),
                    )
                    .end()?,
                )
                .alias("dups"),
            ],
        )?
        .collect()
        .await?;
    let nulls = crate::engine::first_count(&counts, "nulls");
    let dups = crate::engine::first_count(&counts, "dups");
    let shown = display_path(&plan.pipeline, &model.file);
    if nulls > 0 {
        return Err(Error::Quality {
            model: model.id.to_string(),
            message: format!(
                "{nulls} row(s) have a NULL merge key ({}) in {shown}; filter them or fix the source",
                keys.join(", ")
            ),
            findings: serde_json::Value::Null,
        });
    }
    if dups > 0 {
        return Err(Error::Quality {
            model: model.id.to_string(),
            message: format!(
                "{dups} merge key value(s) of ({}) occur more than once in {shown}; keep the newest version per key with a `-- sequence_by: <version column>` header line, or deduplicate in SQL",
                keys.join(", ")
            ),
            findings: serde_json::Value::Null,
        });
    }
    Ok(())
}

/// One problem per key column of the source table `table` (its `key`, else its contract's)
/// that its bronze table's `schema` lacks, naming the pipeline file, the table and its columns.
fn key_problems(
    plan: &Plan,
    table: &crate::config::SourceTable,
    schema: &arrow::datatypes::SchemaRef,
) -> Vec<String> {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    crate::extract::contract::key(&plan.pipeline, table)
        .into_iter()
        .filter(|k| schema.field_with_name(k).is_err())
        .map(|k| {
            format!(
                "{}: table `bronze.{}`: key column `{k}` is not one of its columns ({}){}; fix `key` in its `[[source.tables]]` entry",
                display_path(&plan.pipeline, &plan.pipeline.file),
                table.name,
                names.join(", "),
                crate::plan::ident::case_hint(&k, names.iter().copied())
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default()
            )
        })
        .collect()
}

/// The lake tables planning may read schemas from: bronze tables that exist take their schema
/// from the lake.
pub type LakeTables<'a> = (&'a crate::storage::Lake, &'a dyn crate::table::TableFormat);

/// Plans every model in run order against empty tables (no data is read): returns each model's
/// optimized plan and every problem found, with file:line:col.
///
/// A bronze table's schema comes from, in order: the table in the lake (when `lake` is given and
/// the table exists), the source's schema contract, the source's built-in schema (the sample);
/// otherwise the table is a problem naming `smelter source sync`, and the models reading it are
/// not planned. A lake that cannot be read is logged once and not asked again, so planning
/// works offline and without the lake's credentials (`validate` as a lint step), unless
/// `strict` (a run, which needs the lake anyway): then its error is returned, so an unreachable
/// catalog or store is retried (exit 75) and a refused credential is exit 2, rather than the
/// SQL errors planning from an outdated contract would give.
pub async fn plan_all(
    plan: &Plan,
    lake: Option<LakeTables<'_>>,
    strict: bool,
) -> Result<(Vec<(TableId, LogicalPlan)>, Vec<String>)> {
    let ctx = crate::engine::session(&plan.pipeline, None)?;
    let register = |id: &TableId, schema| -> Result<()> {
        let table = MemTable::try_new(schema, vec![vec![]])?;
        let catalog = ctx
            .catalog("datafusion")
            .and_then(|c| c.schema(id.layer.as_str()))
            .ok_or_else(|| Error::Internal("layer schema missing".into()))?;
        catalog.register_table(id.name.clone(), Arc::new(table))?;
        Ok(())
    };
    let mut problems = Vec::new();
    let mut failed: BTreeSet<TableId> = BTreeSet::new();
    let mut lake = lake;
    for table in &plan.pipeline.source.tables {
        let id = TableId {
            layer: Layer::Bronze,
            name: table.name.clone(),
        };
        let existing = match lake {
            Some((store, format)) => match format.provider(&ctx, &store.table_url(&id)).await {
                Ok(p) => p.map(|p| p.schema()),
                Err(e) if strict => return Err(e),
                Err(e) => {
                    tracing::warn!(table = %id, error = %e, "Cannot read the lake; planning from the contracts (a run would stop here).");
                    // Not asked again for every table: it would wait for the same timeout.
                    lake = None;
                    None
                }
            },
            None => None,
        };
        let schema = match existing {
            Some(schema) => schema,
            None => match crate::extract::planning_columns(&plan.pipeline, table) {
                Ok(columns) => {
                    let unstorable = crate::extract::contract::unstorable_problems(
                        &plan.pipeline,
                        &table.name,
                        &columns,
                    );
                    if !unstorable.is_empty() {
                        problems.extend(unstorable);
                        failed.insert(id);
                        continue;
                    }
                    super::bronze::bronze_schema(&crate::schema::arrow_schema(&columns))
                }
                Err(e) => {
                    problems.push(e.to_string());
                    failed.insert(id);
                    continue;
                }
            },
        };
        problems.extend(key_problems(plan, table, &schema));
        register(&id, schema)?;
    }
    let params = RunParams {
        logical_date: chrono::Utc::now().date_naive(),
        run_id: "validate".into(),
    };
    let mut planned = Vec::new();
    let lake = crate::storage::Lake::in_memory();
    let format = crate::table::for_plan(plan, &lake);
    for model in &plan.models {
        if let Some(dep) = model.depends_on.iter().find(|d| failed.contains(*d)) {
            failed.insert(model.id.clone());
            problems.push(format!(
                "{}: not planned because `{dep}` has errors",
                display_path(&plan.pipeline, &model.file)
            ));
            continue;
        }
        // A placeholder window (not an empty one, which the optimizer would fold into an empty
        // relation, dropping the model's lineage).
        let windows = vec![vec![params.run_id.clone()]; model.unprocessed.len()];
        match plan_model(&ctx, plan, model, &params, &windows)
            .await
            .and_then(|df| {
                as_written(
                    &plan.pipeline,
                    df,
                    model,
                    &display_path(&plan.pipeline, &model.file),
                )
            })
            .and_then(super::deletes::unmarked)
        {
            Ok(df) => {
                let shown = display_path(&plan.pipeline, &model.file);
                let format = format.for_table(&lake.table_url(&model.id));
                problems.extend(crate::table::unstorable_problems(
                    format,
                    &shown,
                    df.schema().as_arrow(),
                ));
                problems.extend(partition_problems(
                    format,
                    &shown,
                    model,
                    df.schema().as_arrow(),
                ));
                problems.extend(
                    quality::column_problems(
                        &ctx,
                        &model.id.to_string(),
                        &model.rules,
                        df.schema(),
                    )
                    .await,
                );
                register(&model.id, Arc::new(df.schema().as_arrow().clone()))?;
                match df.into_optimized_plan() {
                    Ok(p) => planned.push((model.id.clone(), p)),
                    Err(e) => problems.push(sql_error(&shown, e).to_string()),
                }
            }
            Err(e) => {
                failed.insert(model.id.clone());
                problems.push(e.to_string());
            }
        }
    }
    Ok((planned, problems))
}
