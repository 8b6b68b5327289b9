//! Emission of lineage after each layer run. A failure here never fails or rolls back the data
//! write: it is logged as a warning.

use std::collections::BTreeMap;

use tracing::{info, warn};

use super::datahub::{self, JobContext, Written};
use crate::error::Result;
use crate::extract::sample::Sample;
use crate::layers::RunContext;
use crate::plan::{Layer, TableId};
use crate::storage::sanitize;

/// Emits the MCPs of one layer run (`ok` tells whether the layer succeeded).
pub async fn layer_run(rc: &RunContext<'_>, layer: Layer, ok: bool, started_ms: i64) {
    let Some(dir) = rc.plan.pipeline.lineage.datahub_dir.clone() else {
        return;
    };
    match build(rc, layer, ok, started_ms).await {
        Ok(mcps) => {
            let dir = dir.join(sanitize(&rc.params.run_id));
            let path = dir.join(format!("{layer}.json"));
            let written = std::fs::create_dir_all(&dir).and_then(|_| {
                std::fs::write(&path, serde_json::to_vec_pretty(&mcps).unwrap_or_default())
            });
            match written {
                Ok(()) => {
                    info!(layer = %layer, mcps = mcps.len(), file = %path.display(), "Wrote DataHub MCPs.")
                }
                Err(e) => {
                    warn!(layer = %layer, file = %path.display(), error = %e, "Could not write DataHub MCPs; the data write stands.")
                }
            }
        }
        Err(e) => {
            warn!(layer = %layer, error = %e, "Could not build lineage; the data write stands.")
        }
    }
}

fn job_context(rc: &RunContext<'_>, layer: Layer, started_ms: i64) -> JobContext {
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

async fn build(
    rc: &RunContext<'_>,
    layer: Layer,
    ok: bool,
    started_ms: i64,
) -> Result<Vec<serde_json::Value>> {
    let job = job_context(rc, layer, started_ms);
    let env = &job.env;
    let now = chrono::Utc::now().timestamp_millis();
    let mut written = Vec::new();
    let source_urn = |object: &str| {
        datahub::mssql_urn(
            &format!("{}.{}", rc.plan.pipeline.source.database, object),
            env,
        )
    };
    if ok {
        match layer {
            Layer::Extract => {}
            Layer::Bronze => {
                for t in &rc.plan.pipeline.source.tables {
                    let id = TableId {
                        layer: Layer::Bronze,
                        name: t.name.clone(),
                    };
                    let src = source_urn(&t.object);
                    let schema =
                        crate::layers::bronze::bronze_schema(Sample::schema(&t.name)?.as_ref());
                    let columns = schema
                        .fields()
                        .iter()
                        .map(|f| {
                            let inputs = if f.name().starts_with('_') {
                                Vec::new()
                            } else {
                                vec![(src.clone(), f.name().clone(), super::Kind::Identity)]
                            };
                            (f.name().clone(), inputs)
                        })
                        .collect();
                    written.push(Written {
                        urn: datahub::lake_urn(&lake_path(rc, &id), env),
                        name: id.to_string(),
                        location: crate::storage::redact(&rc.lake.table_url(&id)),
                        layer: layer.to_string(),
                        schema: schema.as_ref().clone(),
                        columns,
                        upstreams: vec![src],
                        description: None,
                    });
                }
            }
            Layer::Silver | Layer::Gold => {
                let (planned, _) = crate::layers::model::plan_all(rc.plan).await?;
                let lineage = super::for_pipeline(rc.plan, &planned);
                let urns: BTreeMap<String, String> = rc
                    .plan
                    .bronze_tables()
                    .iter()
                    .chain(rc.plan.models.iter().map(|m| &m.id))
                    .map(|id| (id.to_string(), datahub::lake_urn(&lake_path(rc, id), env)))
                    .collect();
                for (id, logical) in planned.iter().filter(|(id, _)| id.layer == layer) {
                    let model = rc.plan.models.iter().find(|m| m.id == *id);
                    let Some((cols, _)) = lineage.models.get(&id.to_string()) else {
                        continue;
                    };
                    let columns = cols
                        .iter()
                        .map(|c| {
                            (
                                c.column.clone(),
                                datahub::column_inputs(&c.inputs, |t| urns.get(t).cloned()),
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
                        upstreams: model
                            .map(|m| {
                                m.depends_on
                                    .iter()
                                    .filter_map(|d| urns.get(&d.to_string()).cloned())
                                    .collect()
                            })
                            .unwrap_or_default(),
                        description: model.and_then(|m| m.header.description.clone()),
                    });
                }
            }
        }
    }
    let mut mcps = datahub::run_event_mcps(&job, None, started_ms);
    mcps.extend(datahub::dataset_mcps(&job, &written, now));
    mcps.extend(datahub::run_event_mcps(&job, Some(ok), now));
    Ok(mcps)
}
