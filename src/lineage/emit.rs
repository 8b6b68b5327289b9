//! Emission of lineage for each layer run: DataHub MCPs (to a file and/or GMS over REST) and
//! OpenLineage RunEvents (to a file and/or an HTTP collector). A failure here never fails or rolls
//! back the data write: it is logged as a warning, and `smelter lineage emit` can send it again.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use tracing::{info, warn};

use super::datahub::{self, JobContext, SourceDataset, Written};
use super::openlineage::{self, Naming};
use super::sink;
use super::Transformation;
use crate::error::Result;
use crate::layers::RunContext;
use crate::plan::{Layer, TableId};
use crate::profile::TableProfile;
use crate::storage::run_dir_name;

/// Whether any lineage output is configured.
fn enabled(rc: &RunContext<'_>) -> bool {
    let l = &rc.plan.pipeline.lineage;
    l.datahub_dir.is_some()
        || l.datahub_rest.is_some()
        || l.openlineage_dir.is_some()
        || l.openlineage_url.is_some()
}

/// Emits the OpenLineage `START` event of a layer run to the HTTP collector, if one is set.
pub async fn layer_started(rc: &RunContext<'_>, layer: Layer, started_ms: i64) {
    let l = &rc.plan.pipeline.lineage;
    let Some(url) = &l.openlineage_url else {
        return;
    };
    let job = job_context(rc, layer, started_ms);
    let start = openlineage::event(&job, &l.namespace, "START", started_ms, &[], &naming(rc));
    if let Err(e) = sink::post(
        url,
        start.to_string().into_bytes(),
        &[],
        sink::OPENLINEAGE_TOKEN_ENV,
        l.retries,
    )
    .await
    {
        warn!(layer = %layer, error = %e, "Could not send the OpenLineage START event; the run goes on.");
    }
}

/// Emits the lineage of one finished layer run (`ok` tells whether it succeeded). Failures are
/// warnings: the data write stands.
pub async fn layer_run(
    rc: &RunContext<'_>,
    layer: Layer,
    ok: bool,
    started_ms: i64,
    profiles: &[Arc<TableProfile>],
) {
    if !enabled(rc) {
        return;
    }
    let now = chrono::Utc::now().timestamp_millis();
    let written = if ok {
        match datasets(rc, layer, profiles).await {
            Ok(w) => w,
            Err(e) => {
                warn!(layer = %layer, error = %e, "Could not build lineage; the data write stands.");
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    let job = job_context(rc, layer, started_ms);
    for problem in deliver(rc, &job, &written, ok, now, false).await {
        warn!(layer = %layer, error = %problem, "Could not emit lineage; the data write stands.");
    }
}

/// Sends the lineage of one layer run to every configured output; returns the problems.
/// `with_start` also sends the OpenLineage `START` event over HTTP (for re-emission).
pub async fn deliver(
    rc: &RunContext<'_>,
    job: &JobContext,
    written: &[Written],
    ok: bool,
    ended_ms: i64,
    with_start: bool,
) -> Vec<String> {
    let l = &rc.plan.pipeline.lineage;
    let layer = &job.layer;
    let files = files(l, &job.run_id, layer);
    let mut problems = Vec::new();

    let mut mcps = datahub::run_event_mcps(job, None, job.started_ms);
    mcps.extend(datahub::dataset_mcps(job, written, ended_ms));
    mcps.extend(datahub::run_event_mcps(job, Some(ok), ended_ms));
    if let Some(path) = &files.datahub {
        let body = serde_json::to_vec_pretty(&mcps).unwrap_or_default();
        match sink::write_file(path, &body) {
            Ok(()) => {
                info!(layer = %layer, mcps = mcps.len(), file = %path.display(), "Wrote DataHub MCPs.")
            }
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    if let Some(gms) = &l.datahub_rest {
        match sink::datahub_rest(gms, &mcps, l.datahub_batch_size, l.retries).await {
            Ok(requests) => {
                info!(layer = %layer, mcps = mcps.len(), requests, gms = %crate::storage::redact(gms), "Sent DataHub MCPs.")
            }
            Err(e) => problems.push(format!("DataHub REST: {e}")),
        }
    }

    let naming = naming(rc);
    let start = openlineage::event(job, &l.namespace, "START", job.started_ms, &[], &naming);
    let end_type = if ok { "COMPLETE" } else { "FAIL" };
    let end = openlineage::event(job, &l.namespace, end_type, ended_ms, written, &naming);
    if let Some(path) = &files.openlineage {
        let body = format!("{start}\n{end}\n");
        match sink::write_file(path, body.as_bytes()) {
            Ok(()) => info!(layer = %layer, file = %path.display(), "Wrote OpenLineage events."),
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    if let Some(url) = &l.openlineage_url {
        let events: Vec<&Value> = if with_start {
            vec![&start, &end]
        } else {
            vec![&end]
        };
        for e in events {
            if let Err(e) = sink::post(
                url,
                e.to_string().into_bytes(),
                &[],
                sink::OPENLINEAGE_TOKEN_ENV,
                l.retries,
            )
            .await
            {
                problems.push(format!("OpenLineage: {e}"));
                break;
            }
        }
    }
    problems
}

/// The lineage files of one layer run, each set when its directory is configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Files {
    /// DataHub MCPs: `<datahub_dir>/<run dir>/<layer>.json`.
    pub datahub: Option<std::path::PathBuf>,
    /// OpenLineage events: `<openlineage_dir>/<run dir>/<layer>.jsonl`.
    pub openlineage: Option<std::path::PathBuf>,
}

/// Where the lineage of `layer` in run `run_id` is written (the run directory is
/// [`run_dir_name`]).
pub fn files(l: &crate::config::Lineage, run_id: &str, layer: &str) -> Files {
    let run_dir = run_dir_name(run_id);
    Files {
        datahub: l
            .datahub_dir
            .as_ref()
            .map(|d| d.join(&run_dir).join(format!("{layer}.json"))),
        openlineage: l
            .openlineage_dir
            .as_ref()
            .map(|d| d.join(&run_dir).join(format!("{layer}.jsonl"))),
    }
}

fn naming(rc: &RunContext<'_>) -> Naming {
    let source = &rc.plan.pipeline.source;
    Naming {
        lake_root: rc.lake.root().clone(),
        source_namespace: match &source.mssql {
            Some(m) => format!("mssql://{}:{}", m.host, m.port.unwrap_or(1433)),
            None => format!("sample://{}", source.database),
        },
        files_root: files_root(&rc.plan.pipeline),
    }
}

/// Base URL of the pipeline's files source, if it reads files.
fn files_root(pipeline: &crate::config::Pipeline) -> Option<url::Url> {
    (pipeline.source.kind == crate::config::SourceKind::Files)
        .then(|| crate::extract::files::root_url(pipeline).ok())
        .flatten()
}

/// The DataHub job context of a layer run (Airflow ids from the environment when set).
pub fn job_context(rc: &RunContext<'_>, layer: Layer, started_ms: i64) -> JobContext {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    JobContext {
        env: rc.plan.pipeline.lineage.env.clone(),
        pipeline: rc.plan.pipeline.name.clone(),
        layer: layer.to_string(),
        run_id: rc.params.run_id.clone(),
        dag_id: env("AIRFLOW_CTX_DAG_ID"),
        task_id: env("AIRFLOW_CTX_TASK_ID"),
        started_ms,
    }
}

/// Dataset path used in lake URNs: the root's bucket/host and path, then `<layer>/<table>`.
fn lake_path(rc: &RunContext<'_>, id: &TableId) -> String {
    let root = rc.lake.root();
    let base = format!("{}{}", root.host_str().unwrap_or(""), root.path());
    format!("{}/{}/{}", base.trim_matches('/'), id.layer, id.name)
}

/// The DataHub URN of lake table `id`: a `delta-lake` dataset named by its path, or an
/// `iceberg` dataset named by its catalog and identifier.
fn table_urn(rc: &RunContext<'_>, id: &TableId, env: &str) -> String {
    match rc.plan.table_kind(id) {
        crate::config::TableKind::Delta => datahub::lake_urn(&lake_path(rc, id), env),
        crate::config::TableKind::Iceberg => {
            datahub::iceberg_urn(&rc.plan.pipeline.format.iceberg.name, &id.to_string(), env)
        }
    }
}

/// The lake tables a layer writes.
pub fn tables_of(rc: &RunContext<'_>, layer: Layer) -> Vec<TableId> {
    match layer {
        Layer::Extract => Vec::new(),
        Layer::Bronze => rc.plan.bronze_tables(),
        Layer::Silver | Layer::Gold => rc
            .plan
            .models
            .iter()
            .filter(|m| m.id.layer == layer)
            .map(|m| m.id.clone())
            .collect(),
    }
}

/// The datasets a successful layer run wrote, with their column lineage and, from `profiles`,
/// their profiles.
pub async fn datasets(
    rc: &RunContext<'_>,
    layer: Layer,
    profiles: &[Arc<TableProfile>],
) -> Result<Vec<Written>> {
    let env = &rc.plan.pipeline.lineage.env;
    let mut written = Vec::new();
    let files_root = files_root(&rc.plan.pipeline);
    // A database object, or for a files source the object is the table's glob.
    let source_urn = |object: &str| match &files_root {
        Some(root) => datahub::files_urn(root, object, env),
        None => datahub::mssql_urn(
            &format!("{}.{}", rc.plan.pipeline.source.database, object),
            env,
        ),
    };
    {
        match layer {
            Layer::Extract => {}
            Layer::Bronze => {
                for t in &rc.plan.pipeline.source.tables {
                    let id = TableId {
                        layer: Layer::Bronze,
                        name: t.name.clone(),
                    };
                    // A table read through a `query` links to the tables the query names, but
                    // its columns are not traced through the T-SQL.
                    let (upstreams, src) = match &t.files {
                        Some(f) => (vec![source_urn(&f.path)], Some(source_urn(&f.path))),
                        None => (
                            t.upstream_objects().iter().map(|o| source_urn(o)).collect(),
                            t.query.is_none().then(|| source_urn(&t.object)),
                        ),
                    };
                    // The schema as written, whatever the source type.
                    let Some(provider) =
                        rc.format.provider(&rc.ctx, &rc.lake.table_url(&id)).await?
                    else {
                        continue;
                    };
                    let schema = provider.schema();
                    let columns = schema
                        .fields()
                        .iter()
                        .map(|f| {
                            let inputs = match &src {
                                Some(src) if !f.name().starts_with('_') => vec![(
                                    src.clone(),
                                    f.name().clone(),
                                    Transformation::Direct(super::Kind::Identity),
                                )],
                                _ => Vec::new(),
                            };
                            (f.name().clone(), inputs)
                        })
                        .collect();
                    let source = src.map(|urn| source_dataset(rc, t, urn, &schema));
                    written.push(Written {
                        urn: table_urn(rc, &id, env),
                        name: id.to_string(),
                        location: crate::storage::redact(&rc.lake.table_url(&id)),
                        layer: layer.to_string(),
                        schema: schema.as_ref().clone(),
                        columns,
                        indirect: Vec::new(),
                        source,
                        upstreams,
                        description: None,
                        profile: None,
                    });
                }
            }
            Layer::Silver | Layer::Gold => {
                let (planned, _) = crate::layers::model::plan_all(
                    rc.plan,
                    Some((rc.lake, rc.format.as_ref())),
                    true,
                )
                .await?;
                let lineage = super::for_pipeline(rc.plan, &planned);
                let urns: BTreeMap<String, String> = rc
                    .plan
                    .bronze_tables()
                    .iter()
                    .chain(rc.plan.models.iter().map(|m| &m.id))
                    .map(|id| (id.to_string(), table_urn(rc, id, env)))
                    .collect();
                for (id, logical) in planned.iter().filter(|(id, _)| id.layer == layer) {
                    let model = rc.plan.models.iter().find(|m| m.id == *id);
                    let Some(report) = lineage.models.get(&id.to_string()) else {
                        continue;
                    };
                    let urn_of = |t: &str| urns.get(t).cloned();
                    let columns = report
                        .columns
                        .iter()
                        .map(|c| {
                            (
                                c.column.clone(),
                                datahub::column_inputs(&c.inputs, &c.indirect, urn_of),
                            )
                        })
                        .collect();
                    written.push(Written {
                        urn: urns[&id.to_string()].clone(),
                        name: id.to_string(),
                        location: crate::storage::redact(&rc.lake.table_url(id)),
                        layer: layer.to_string(),
                        schema: logical.schema().as_arrow().clone(),
                        columns,
                        indirect: datahub::column_inputs(&[], &report.indirect, urn_of),
                        source: None,
                        upstreams: model
                            .map(|m| {
                                m.depends_on
                                    .iter()
                                    .filter_map(|d| urns.get(&d.to_string()).cloned())
                                    .collect()
                            })
                            .unwrap_or_default(),
                        description: model.and_then(|m| m.header.description.clone()),
                        profile: None,
                    });
                }
            }
        }
    }
    for w in &mut written {
        w.profile = profiles.iter().find(|p| p.table == w.name).cloned();
    }
    Ok(written)
}

/// The source dataset bronze table `t` reads (URN `urn`), described by its schema contract (the
/// declared source types), else by the columns bronze stores (`bronze`, without its metadata
/// columns).
fn source_dataset(
    rc: &RunContext<'_>,
    t: &crate::config::SourceTable,
    urn: String,
    bronze: &arrow::datatypes::Schema,
) -> SourceDataset {
    let pipeline = &rc.plan.pipeline;
    let columns = crate::extract::source_columns(pipeline, t).unwrap_or_else(|_| {
        crate::schema::ColumnShape::of_schema(bronze)
            .into_iter()
            .filter(|c| !c.name.starts_with('_'))
            .collect()
    });
    let platform = datahub::platform_of(&urn).to_string();
    let name = match &t.files {
        Some(f) => format!(
            "{}/{}",
            files_root(pipeline)
                .map(|r| crate::storage::redact(&r))
                .unwrap_or_default()
                .trim_end_matches('/'),
            f.path
        ),
        None => format!("{}.{}", pipeline.source.database, t.object),
    };
    let mut properties = vec![("bronze_table".to_string(), format!("bronze.{}", t.name))];
    let contract = crate::extract::contract::path(pipeline, &t.name);
    if contract.exists() {
        properties.push((
            "schema_contract".into(),
            crate::plan::display_path(pipeline, &contract),
        ));
    }
    SourceDataset {
        urn,
        name,
        platform,
        columns,
        properties,
    }
}
