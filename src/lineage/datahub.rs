//! DataHub metadata change proposals (MCPs) for every table a layer writes: dataset properties,
//! schema, upstream lineage with fine-grained (column) lineage, the pipeline and layer as a
//! DataFlow and DataJob, and the run as DataProcessInstance events.
//!
//! URN patterns:
//! - source tables: `urn:li:dataset:(urn:li:dataPlatform:mssql,<db>.<schema>.<table>,<ENV>)`
//! - lake tables: `urn:li:dataset:(urn:li:dataPlatform:delta-lake,<root path>/<layer>/<table>,<ENV>)`
//! - flow: `urn:li:dataFlow:(airflow,<dag id>,<ENV>)` under Airflow, else `(smelter,<pipeline>,<ENV>)`
//! - job: `urn:li:dataJob:(<flow urn>,<task id or layer>)`
//! - column: `urn:li:schemaField:(<dataset urn>,<field path>)`
//!
//! Inside a URN, `,`, `(`, `)` and `␟` are percent-encoded in every name and field path (as the
//! SDK's `UrnEncoder` does: `count(x)` becomes `count%28x%29`), so an unaliased aggregate or a
//! quoted column name gives a URN DataHub parses. Fine-grained lineage has one entry per output
//! column and transformation: direct edges carry `IDENTITY`, `TRANSFORM` or `AGGREGATE`; indirect
//! ones carry their OpenLineage subtype (`FILTER`, `JOIN`, `GROUP_BY`, `SORT`, `WINDOW`,
//! `CONDITIONAL`), with every output column as downstreams (`FIELD_SET`) when the edge applies
//! to the whole model. Source tables (SQL Server objects, a files source's globs) get their own
//! `schemaMetadata` with the declared types as native types, and `datasetProperties`.

use arrow::datatypes::{DataType, Schema};
use serde_json::{json, Value};

use super::{ColumnRef, Indirect, Kind, Transformation};

/// Inputs of one output column, one per edge: (dataset URN, column, transformation).
pub type FieldInputs = Vec<(String, String, Transformation)>;

/// A source dataset (a SQL Server table or a files source's glob) a bronze table reads.
#[derive(Debug, Clone)]
pub struct SourceDataset {
    /// Dataset URN.
    pub urn: String,
    /// Display name (`LogisticsDB.dbo.carriers`, or the glob's location).
    pub name: String,
    /// DataHub platform (`mssql`, `s3`, `abs`, `gcs`, `file`).
    pub platform: String,
    /// Columns in source order: the Arrow type they land as, and the type the source declares
    /// (SQL Server `nvarchar(200)`), from the schema contract when it has one.
    pub columns: Vec<crate::schema::ColumnShape>,
    /// Descriptive properties (the contract file, the bronze table).
    pub properties: Vec<(String, String)>,
}

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
    /// Per output column, its inputs (as dataset URN + column) and transformations.
    pub columns: Vec<(String, FieldInputs)>,
    /// Indirect inputs that apply to every column (filters, joins, groups, sorts).
    pub indirect: FieldInputs,
    /// The source dataset a bronze table reads, described with its declared types.
    pub source: Option<SourceDataset>,
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

/// Characters DataHub's URN grammar reserves inside an id (`UrnEncoder.RESERVED_CHARS` of the
/// acryl-datahub SDK), with their percent-encodings.
const RESERVED: [(char, &str); 4] = [
    (',', "%2C"),
    ('(', "%28"),
    (')', "%29"),
    ('\u{241f}', "%E2%90%9F"),
];

/// `s` with DataHub's reserved URN characters percent-encoded (as the SDK's
/// `UrnEncoder.encode_string`); other characters, `%` included, stay as they are.
pub fn urn_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match RESERVED.iter().find(|(r, _)| *r == c) {
            Some((_, enc)) => out.push_str(enc),
            None => out.push(c),
        }
    }
    out
}

/// The inverse of [`urn_encode`].
pub fn urn_decode(s: &str) -> String {
    RESERVED.iter().fold(s.to_string(), |acc, (c, enc)| {
        acc.replace(enc, &c.to_string())
    })
}

fn dataset_urn(platform: &str, name: &str, env: &str) -> String {
    format!(
        "urn:li:dataset:(urn:li:dataPlatform:{platform},{},{env})",
        urn_encode(name)
    )
}

/// URN of a lake dataset.
pub fn lake_urn(path: &str, env: &str) -> String {
    dataset_urn("delta-lake", path, env)
}

/// URN of an Iceberg table `<layer>.<name>` in catalog `catalog`: platform `iceberg`, name
/// `<catalog>.<layer>.<name>` (DataHub's Iceberg source names datasets `<namespace>.<table>`,
/// prefixed by the platform instance, here the catalog).
pub fn iceberg_urn(catalog: &str, table: &str, env: &str) -> String {
    dataset_urn("iceberg", &format!("{catalog}.{table}"), env)
}

/// URN of a SQL Server source table.
pub fn mssql_urn(object: &str, env: &str) -> String {
    dataset_urn("mssql", object, env)
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
    dataset_urn(platform, &format!("{}/{glob}", base.trim_matches('/')), env)
}

/// The DataHub platform of a dataset URN (`mssql`, `delta-lake`, `s3`, ...).
pub fn platform_of(urn: &str) -> &str {
    urn.strip_prefix("urn:li:dataset:(urn:li:dataPlatform:")
        .and_then(|s| s.split(',').next())
        .unwrap_or("")
}

/// URN of a column, its field path encoded with [`urn_encode`].
pub fn field_urn(dataset: &str, field: &str) -> String {
    format!("urn:li:schemaField:({dataset},{})", urn_encode(field))
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

/// `schemaMetadata` of a dataset on `platform`: per column its path, DataHub logical type (from
/// the Arrow type: `STRING` for every string layout), nullability and native type (`native`
/// when the source declares one, else the Arrow type as stored).
fn schema_metadata(
    name: &str,
    platform: &str,
    columns: &[crate::schema::ColumnShape],
    raw: String,
    stamp: &Value,
) -> Value {
    let fields: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({
                "fieldPath": c.name,
                "nullable": c.nullable,
                "type": { "type": { datahub_type(&c.data_type): {} } },
                "nativeDataType": c.source_type.clone()
                    .unwrap_or_else(|| crate::schema::type_name(&c.data_type)),
                "recursive": false,
                "isPartOfKey": false,
            })
        })
        .collect();
    json!({
        "schemaName": name,
        "platform": format!("urn:li:dataPlatform:{platform}"),
        "version": 0,
        "created": stamp,
        "lastModified": stamp,
        "hash": "",
        "platformSchema": { "com.linkedin.schema.OtherSchema": { "rawSchema": raw } },
        "fields": fields,
    })
}

/// `fineGrainedLineages` of one dataset: per output column one entry per transformation (its
/// upstreams the inputs with that transformation), then one entry per indirect subtype that
/// applies to every column (downstreams: all of them, `FIELD_SET`).
fn fine_grained(w: &Written) -> Vec<Value> {
    let entry =
        |upstreams: Vec<String>, many: bool, downstreams: Vec<String>, t: Transformation| {
            json!({
                "upstreamType": "FIELD_SET",
                "upstreams": upstreams,
                "downstreamType": if many { "FIELD_SET" } else { "FIELD" },
                "downstreams": downstreams,
                "transformOperation": t.datahub_operation(),
                "confidenceScore": 1.0,
            })
        };
    let by_transformation = |inputs: &FieldInputs| {
        let mut groups: std::collections::BTreeMap<Transformation, Vec<String>> =
            std::collections::BTreeMap::new();
        for (ds, c, t) in inputs {
            groups.entry(*t).or_default().push(field_urn(ds, c));
        }
        groups
    };
    let mut out = Vec::new();
    for (col, inputs) in &w.columns {
        for (t, upstreams) in by_transformation(inputs) {
            out.push(entry(upstreams, false, vec![field_urn(&w.urn, col)], t));
        }
    }
    let all: Vec<String> = w
        .columns
        .iter()
        .map(|(c, _)| field_urn(&w.urn, c))
        .collect();
    if !all.is_empty() {
        for (t, upstreams) in by_transformation(&w.indirect) {
            out.push(entry(upstreams, true, all.clone(), t));
        }
    }
    out
}

/// MCPs of a source dataset: `datasetProperties` and `schemaMetadata` with declared types.
fn source_mcps(s: &SourceDataset, stamp: &Value) -> Vec<Value> {
    let props: serde_json::Map<String, Value> = s
        .properties
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let raw = s
        .columns
        .iter()
        .map(|c| {
            format!(
                "{} {}{}",
                c.name,
                c.source_type
                    .clone()
                    .unwrap_or_else(|| crate::schema::type_name(&c.data_type)),
                if c.nullable { "" } else { " NOT NULL" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        mcp(
            "dataset",
            &s.urn,
            "datasetProperties",
            json!({ "name": s.name, "customProperties": props }),
        ),
        mcp(
            "dataset",
            &s.urn,
            "schemaMetadata",
            schema_metadata(&s.name, &s.platform, &s.columns, raw, stamp),
        ),
    ]
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
        let mut props = json!({
            "name": w.name,
            "customProperties": {
                "location": w.location,
                "format": if platform_of(&w.urn) == "iceberg" { "iceberg" } else { "delta" },
                "layer": w.layer,
                "run_id": job.run_id,
                "pipeline": job.pipeline,
            },
        });
        if let Some(d) = &w.description {
            props["description"] = json!(d);
        }
        out.push(mcp("dataset", &w.urn, "datasetProperties", props));
        out.push(mcp(
            "dataset",
            &w.urn,
            "schemaMetadata",
            schema_metadata(
                &w.name,
                platform_of(&w.urn),
                &crate::schema::ColumnShape::of_schema(&w.schema),
                w.schema.to_string(),
                &stamp,
            ),
        ));
        if !w.upstreams.is_empty() {
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
                    "fineGrainedLineages": fine_grained(w),
                }),
            ));
        }
        if let Some(s) = &w.source {
            out.extend(source_mcps(s, &stamp));
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
    let inputs: Vec<&String> = inputs.into_iter().collect();
    let outputs: Vec<&String> = written.iter().map(|w| &w.urn).collect();
    out.push(mcp(
        "dataJob",
        &job_urn,
        "dataJobInputOutput",
        json!({ "inputDatasets": inputs, "outputDatasets": outputs }),
    ));
    // The run itself read and wrote these datasets.
    let instance = instance_urn(job);
    out.push(mcp(
        "dataProcessInstance",
        &instance,
        "dataProcessInstanceInput",
        json!({ "inputs": inputs }),
    ));
    out.push(mcp(
        "dataProcessInstance",
        &instance,
        "dataProcessInstanceOutput",
        json!({ "outputs": outputs }),
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

/// Inputs of one column as (dataset URN, column, transformation), direct ones first, given a
/// table-name → URN map.
pub fn column_inputs(
    direct: &[(ColumnRef, Kind)],
    indirect: &[(ColumnRef, Indirect)],
    urn_of: impl Fn(&str) -> Option<String>,
) -> FieldInputs {
    let direct = direct.iter().map(|(c, k)| (c, Transformation::Direct(*k)));
    let indirect = indirect
        .iter()
        .map(|(c, s)| (c, Transformation::Indirect(*s)));
    direct
        .chain(indirect)
        .filter_map(|(c, t)| urn_of(&c.table).map(|u| (u, c.column.clone(), t)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_characters_are_percent_encoded_in_field_urns_and_decode_back() {
        let ds = lake_urn("lake/gold/t", "PROD");
        assert_eq!(
            field_urn(&ds, "count(a.b)"),
            "urn:li:schemaField:(urn:li:dataset:(urn:li:dataPlatform:delta-lake,lake/gold/t,PROD),count%28a.b%29)"
        );
        assert_eq!(urn_encode("label (x, y) 50%"), "label %28x%2C y%29 50%");
        assert_eq!(urn_decode(&urn_encode("a,(b)\u{241f}")), "a,(b)\u{241f}");
        assert_eq!(platform_of(&mssql_urn("Db.dbo.t", "PROD")), "mssql");
    }

    #[test]
    fn every_string_layout_is_a_string() {
        for t in [DataType::Utf8, DataType::Utf8View, DataType::LargeUtf8] {
            assert_eq!(datahub_type(&t), "com.linkedin.schema.StringType");
        }
    }
}
