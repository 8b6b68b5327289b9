//! DataHub metadata change proposals (MCPs) for every table a layer writes: dataset properties,
//! schema, upstream lineage with fine-grained (column) lineage, the pipeline and layer as a
//! DataFlow and DataJob, and the run as DataProcessInstance events.
//!
//! URN patterns:
//! - source tables: `urn:li:dataset:(urn:li:dataPlatform:mssql,<db>.<schema>.<table>,<ENV>)`
//! - lake tables: `urn:li:dataset:(urn:li:dataPlatform:delta-lake,<root path>/<layer>/<table>,<ENV>)`
//! - flow: `urn:li:dataFlow:(airflow,<dag id>,<ENV>)` under Airflow, else `(smelter,<pipeline>,<ENV>)`
//! - job: `urn:li:dataJob:(<flow urn>,<task id or layer>)`

use arrow::datatypes::{DataType, Schema};
use serde_json::{json, Value};

use super::{ColumnRef, Kind};

/// Direct inputs of one output column: (dataset URN, column, kind).
pub type FieldInputs = Vec<(String, String, Kind)>;

/// One dataset written by a layer, with its direct column lineage.
#[derive(Debug, Clone)]
pub struct Written {
    /// Dataset URN.
    pub urn: String,
    /// Display name, e.g. `silver.shipments`.
    pub name: String,
    /// Location URL (without credentials).
    pub location: String,
    /// Layer.
    pub layer: String,
    /// Arrow schema of the written table.
    pub schema: Schema,
    /// Per output column, its direct inputs (as dataset URN + column) and kinds.
    pub columns: Vec<(String, FieldInputs)>,
    /// Upstream dataset URNs.
    pub upstreams: Vec<String>,
    /// Description from the model header.
    pub description: Option<String>,
    /// The table's profile after the write, when profiling is on.
    pub profile: Option<std::sync::Arc<crate::profile::TableProfile>>,
}

/// Context of one layer run for DataHub.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// Environment (fabric), e.g. `PROD`.
    pub env: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Layer.
    pub layer: String,
    /// Run id.
    pub run_id: String,
    /// Airflow DAG id, when run by Airflow.
    pub dag_id: Option<String>,
    /// Airflow task id, when run by Airflow.
    pub task_id: Option<String>,
    /// Start time, ms since epoch.
    pub started_ms: i64,
}

/// URN of a lake dataset.
pub fn lake_urn(path: &str, env: &str) -> String {
    format!("urn:li:dataset:(urn:li:dataPlatform:delta-lake,{path},{env})")
}

/// URN of a SQL Server source table.
pub fn mssql_urn(object: &str, env: &str) -> String {
    format!("urn:li:dataset:(urn:li:dataPlatform:mssql,{object},{env})")
}

/// URN of the files a files-source table reads: platform `s3`, `gcs`, `abs` (Azure) or `file`
/// by the scheme of the source root `root`, and name `<bucket or container>/<path>/<glob>` (for
/// `file`, the absolute path without its leading `/`).
pub fn files_urn(root: &url::Url, glob: &str, env: &str) -> String {
    let platform = match root.scheme() {
        "s3" | "s3a" => "s3",
        "gs" => "gcs",
        "file" => "file",
        _ => "abs",
    };
    let base = format!("{}{}", root.host_str().unwrap_or(""), root.path());
    format!(
        "urn:li:dataset:(urn:li:dataPlatform:{platform},{}/{glob},{env})",
        base.trim_matches('/')
    )
}

fn field_urn(dataset: &str, field: &str) -> String {
    format!("urn:li:schemaField:({dataset},{field})")
}

fn mcp(entity_type: &str, urn: &str, aspect_name: &str, aspect: Value) -> Value {
    json!({
        "entityType": entity_type,
        "entityUrn": urn,
        "changeType": "UPSERT",
        "aspectName": aspect_name,
        "aspect": { "json": aspect },
    })
}

fn datahub_type(t: &DataType) -> &'static str {
    match t {
        DataType::Boolean => "com.linkedin.schema.BooleanType",
        d if d.is_numeric() => "com.linkedin.schema.NumberType",
        DataType::Date32 | DataType::Date64 => "com.linkedin.schema.DateType",
        DataType::Timestamp(..) | DataType::Time32(_) | DataType::Time64(_) => {
            "com.linkedin.schema.TimeType"
        }
        DataType::Binary | DataType::LargeBinary | DataType::FixedSizeBinary(_) => {
            "com.linkedin.schema.BytesType"
        }
        DataType::List(_) | DataType::LargeList(_) => "com.linkedin.schema.ArrayType",
        DataType::Struct(_) => "com.linkedin.schema.RecordType",
        DataType::Null => "com.linkedin.schema.NullType",
        _ => "com.linkedin.schema.StringType",
    }
}

fn transform(k: Kind) -> &'static str {
    match k {
        Kind::Identity => "IDENTITY",
        Kind::Transform => "TRANSFORM",
        Kind::Aggregate => "AGGREGATE",
    }
}

/// The flow and job URNs of a layer run.
pub fn job_urns(job: &JobContext) -> (String, String) {
    let flow = match &job.dag_id {
        Some(dag) => format!("urn:li:dataFlow:(airflow,{dag},{})", job.env),
        None => format!("urn:li:dataFlow:(smelter,{},{})", job.pipeline, job.env),
    };
    let task = job.task_id.clone().unwrap_or_else(|| job.layer.clone());
    let job_urn = format!("urn:li:dataJob:({flow},{task})");
    (flow, job_urn)
}

/// MCPs describing the datasets written by one layer run, and the job that wrote them.
pub fn dataset_mcps(job: &JobContext, written: &[Written], now_ms: i64) -> Vec<Value> {
    let stamp = json!({ "time": now_ms, "actor": "urn:li:corpuser:smelter" });
    let mut out = Vec::new();
    for w in written {
        out.push(mcp(
            "dataset",
            &w.urn,
            "datasetProperties",
            json!({
                "name": w.name,
                "description": w.description,
                "customProperties": {
                    "location": w.location,
                    "format": "delta",
                    "layer": w.layer,
                    "run_id": job.run_id,
                    "pipeline": job.pipeline,
                },
            }),
        ));
        let fields: Vec<Value> = w
            .schema
            .fields()
            .iter()
            .map(|f| {
                json!({
                    "fieldPath": f.name(),
                    "nullable": f.is_nullable(),
                    "type": { "type": { datahub_type(f.data_type()): {} } },
                    "nativeDataType": crate::schema::type_name(f.data_type()),
                    "recursive": false,
                    "isPartOfKey": false,
                })
            })
            .collect();
        out.push(mcp(
            "dataset",
            &w.urn,
            "schemaMetadata",
            json!({
                "schemaName": w.name,
                "platform": "urn:li:dataPlatform:delta-lake",
                "version": 0,
                "created": stamp,
                "lastModified": stamp,
                "hash": "",
                "platformSchema": { "com.linkedin.schema.OtherSchema": { "rawSchema": w.schema.to_string() } },
                "fields": fields,
            }),
        ));
        if !w.upstreams.is_empty() {
            let fine: Vec<Value> = w
                .columns
                .iter()
                .filter(|(_, inputs)| !inputs.is_empty())
                .map(|(col, inputs)| {
                    let kind = inputs.iter().map(|(_, _, k)| *k).max().unwrap_or(Kind::Identity);
                    json!({
                        "upstreamType": "FIELD_SET",
                        "upstreams": inputs.iter().map(|(ds, c, _)| field_urn(ds, c)).collect::<Vec<_>>(),
                        "downstreamType": "FIELD",
                        "downstreams": [field_urn(&w.urn, col)],
                        "transformOperation": transform(kind),
                        "confidenceScore": 1.0,
                    })
                })
                .collect();
            out.push(mcp(
                "dataset",
                &w.urn,
                "upstreamLineage",
                json!({
                    "upstreams": w.upstreams.iter().map(|u| json!({
                        "auditStamp": stamp,
                        "dataset": u,
                        "type": "TRANSFORMED",
                    })).collect::<Vec<_>>(),
                    "fineGrainedLineages": fine,
                }),
            ));
        }
    }
    for w in written {
        if let Some(p) = &w.profile {
            out.push(mcp("dataset", &w.urn, "datasetProfile", dataset_profile(p)));
        }
    }
    let (flow, job_urn) = job_urns(job);
    out.push(mcp(
        "dataFlow",
        &flow,
        "dataFlowInfo",
        json!({ "name": job.dag_id.clone().unwrap_or_else(|| job.pipeline.clone()), "customProperties": { "pipeline": job.pipeline } }),
    ));
    let inputs: std::collections::BTreeSet<&String> =
        written.iter().flat_map(|w| w.upstreams.iter()).collect();
    out.push(mcp(
        "dataJob",
        &job_urn,
        "dataJobInfo",
        json!({
            "name": job.task_id.clone().unwrap_or_else(|| job.layer.clone()),
            "type": { "string": "COMMAND" },
            "customProperties": { "layer": job.layer, "pipeline": job.pipeline },
        }),
    ));
    out.push(mcp(
        "dataJob",
        &job_urn,
        "dataJobInputOutput",
        json!({
            "inputDatasets": inputs.into_iter().collect::<Vec<_>>(),
            "outputDatasets": written.iter().map(|w| w.urn.clone()).collect::<Vec<_>>(),
        }),
    ));
    out
}

/// URN of the process instance of one layer run.
pub fn instance_urn(job: &JobContext) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&job.pipeline, &job.layer, &job.run_id).hash(&mut h);
    format!("urn:li:dataProcessInstance:smelter-{:016x}", h.finish())
}

/// MCPs of a run event: `STARTED`, or `COMPLETE` with `SUCCESS`/`FAILURE`.
pub fn run_event_mcps(job: &JobContext, status: Option<bool>, now_ms: i64) -> Vec<Value> {
    let urn = instance_urn(job);
    let (_, job_urn) = job_urns(job);
    let mut out = Vec::new();
    if status.is_none() {
        out.push(mcp(
            "dataProcessInstance",
            &urn,
            "dataProcessInstanceProperties",
            json!({
                "name": format!("{}:{}:{}", job.pipeline, job.layer, job.run_id),
                "type": "BATCH_SCHEDULED",
                "created": { "time": job.started_ms, "actor": "urn:li:corpuser:smelter" },
                "customProperties": { "run_id": job.run_id },
            }),
        ));
        out.push(mcp(
            "dataProcessInstance",
            &urn,
            "dataProcessInstanceRelationships",
            json!({ "upstreamInstances": [], "parentTemplate": job_urn }),
        ));
    }
    let mut event = json!({
        "timestampMillis": now_ms,
        "status": if status.is_some() { "COMPLETE" } else { "STARTED" },
        "attempt": 1,
    });
    if let Some(ok) = status {
        event["result"] = json!({
            "type": if ok { "SUCCESS" } else { "FAILURE" },
            "nativeResultType": "smelter",
        });
    }
    out.push(mcp(
        "dataProcessInstance",
        &urn,
        "dataProcessInstanceRunEvent",
        event,
    ));
    out
}

/// Direct inputs of one column as (dataset URN, column, kind), given a table-name → URN map.
pub fn column_inputs(
    inputs: &[(ColumnRef, Kind)],
    urn_of: impl Fn(&str) -> Option<String>,
) -> Vec<(String, String, Kind)> {
    inputs
        .iter()
        .filter_map(|(c, k)| urn_of(&c.table).map(|u| (u, c.column.clone(), *k)))
        .collect()
}

/// A profile as DataHub's `datasetProfile` timeseries aspect (numbers DataHub keeps as text are
/// written as text).
pub fn dataset_profile(p: &crate::profile::TableProfile) -> Value {
    let text = |v: Option<f64>| v.map(|x| x.to_string());
    let fields: Vec<Value> = p
        .columns
        .iter()
        .map(|c| {
            let mut f = json!({
                "fieldPath": c.name,
                "nullCount": c.null_count,
                "nullProportion": c.null_proportion,
            });
            let mut set = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    f[k] = v;
                }
            };
            set("uniqueCount", c.distinct_count.map(|v| json!(v)));
            set("uniqueProportion", c.distinct_proportion.map(|v| json!(v)));
            set("min", c.min.clone().map(Value::from));
            set("max", c.max.clone().map(Value::from));
            set("mean", text(c.mean).map(Value::from));
            set("median", text(c.median).map(Value::from));
            set("stdev", text(c.stddev).map(Value::from));
            if !c.quantiles.is_empty() {
                set(
                    "quantiles",
                    Some(json!(c
                        .quantiles
                        .iter()
                        .map(|q| json!({ "quantile": q.quantile.to_string(), "value": q.value.to_string() }))
                        .collect::<Vec<_>>())),
                );
            }
            if !c.top_k.is_empty() {
                set(
                    "distinctValueFrequencies",
                    Some(json!(c
                        .top_k
                        .iter()
                        .map(|v| json!({ "value": v.value, "frequency": v.count }))
                        .collect::<Vec<_>>())),
                );
            }
            if let Some(h) = &c.histogram {
                set(
                    "histogram",
                    Some(json!({
                        "boundaries": h.edges.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                        "heights": h.counts.iter().map(|&n| n as f64).collect::<Vec<_>>(),
                    })),
                );
            }
            f
        })
        .collect();
    let mut aspect = json!({
        "timestampMillis": p.profiled_at_ms,
        "partitionSpec": { "type": "FULL_TABLE", "partition": "FULL_TABLE_SNAPSHOT" },
        "rowCount": p.row_count,
        "columnCount": p.column_count,
        "fieldProfiles": fields,
    });
    if let Some(size) = p.size_bytes {
        aspect["sizeInBytes"] = json!(size);
    }
    aspect
}
