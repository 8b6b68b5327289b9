//! OpenLineage RunEvents (spec 2-0-2) for a layer run: `START` when the layer begins, `COMPLETE`
//! or `FAIL` when it ends, with every written table as an output dataset carrying the `schema` and
//! `columnLineage` facets, and the tables it read as inputs.
//!
//! The `columnLineage` facet is version 1-2-0: each input field of an output column lists its
//! transformations (`DIRECT` IDENTITY/TRANSFORMATION/AGGREGATION, `INDIRECT`
//! FILTER/JOIN/GROUP_BY/SORT/WINDOW/CONDITIONAL), and the facet's `dataset` list holds the
//! indirect inputs that apply to every column of the model (filters, join and group keys).
//!
//! Naming follows the OpenLineage conventions: lake tables are `(s3://bucket, prefix/layer/table)`,
//! `(abfss://container@account..., path)` or `(file, /abs/path)`, and Iceberg tables
//! `(iceberg://<catalog>, <layer>.<table>)` (the catalog names them; OpenLineage's naming spec has
//! no entry for SQL catalogs); source tables are
//! `(<source type>://<database>, <db>.<schema>.<table>)`, and the files a files-source table reads
//! are `(s3://bucket, prefix/<glob>)`, `(file, /abs/root/<glob>)` like lake paths. The job is `<namespace>` /
//! `<dag_id>.<task_id>` under Airflow, else `<pipeline>.<layer>`. The run id is a UUID derived from
//! pipeline, layer and run id, so a re-emission describes the same run. With
//! `OPENLINEAGE_PARENT_ID=<namespace>/<job>/<run uuid>` (as Airflow's OpenLineage provider passes
//! it) the run carries a `parent` facet.

use serde_json::{json, Value};
use url::Url;

use super::datahub::{FieldInputs, JobContext, Written};

const SPEC: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
const FACETS: &str = "https://openlineage.io/spec/facets";

fn producer() -> String {
    format!(
        "https://github.com/smelter-etl/smelter/tree/v{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// How datasets are named: the lake root, and the namespace of the source database.
#[derive(Debug, Clone)]
pub struct Naming {
    /// Lake root URL.
    pub lake_root: Url,
    /// Namespace of source tables, e.g. `mssql://sqlhost:1433` or `sample://LogisticsDB`.
    pub source_namespace: String,
    /// Base URL of a files source (its datasets are named like lake paths under it).
    pub files_root: Option<Url>,
}

impl Naming {
    /// `(namespace, name)` of a dataset given its DataHub URN.
    pub fn dataset(&self, urn: &str) -> (String, String) {
        let inner = urn
            .strip_prefix("urn:li:dataset:(urn:li:dataPlatform:")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or(urn);
        let mut parts = inner.splitn(2, ',');
        let platform = parts.next().unwrap_or_default();
        let rest = parts.next().unwrap_or_default();
        let name = super::datahub::urn_decode(rest.rsplit_once(',').map_or(rest, |(n, _)| n));
        let name = name.as_str();
        if platform == "mssql" {
            return (self.source_namespace.clone(), name.to_string());
        }
        // An Iceberg table: the catalog is the namespace, `<layer>.<table>` the name.
        if platform == "iceberg" {
            let (catalog, table) = name.split_once('.').unwrap_or(("", name));
            return (format!("iceberg://{catalog}"), table.to_string());
        }
        let root = match (&self.files_root, platform) {
            (Some(files), "s3" | "gcs" | "abs" | "file") => files,
            _ => &self.lake_root,
        };
        storage_dataset(root, name)
    }
}

/// `(namespace, name)` of a path under a storage root, by the OpenLineage naming conventions:
/// `(s3://bucket, path)`, `(abfss://container@account..., path)`, `(file, /absolute/path)`.
/// `name` starts with the root's bucket or container (DataHub's dataset name).
fn storage_dataset(root: &Url, name: &str) -> (String, String) {
    match root.host_str().filter(|h| !h.is_empty()) {
        Some(host) => {
            let mut ns = format!("{}://{host}", root.scheme());
            if let Some(user) = Some(root.username()).filter(|u| !u.is_empty()) {
                ns = format!("{}://{user}@{host}", root.scheme());
            }
            let path = name.strip_prefix(host).unwrap_or(name);
            (ns, path.trim_start_matches('/').to_string())
        }
        None => ("file".into(), format!("/{}", name.trim_start_matches('/'))),
    }
}

/// A stable UUID for one layer run.
pub fn run_uuid(job: &JobContext) -> String {
    let key = format!("{}\u{1f}{}\u{1f}{}", job.pipeline, job.layer, job.run_id);
    let fnv = |seed: u64| {
        key.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&fnv(0xcbf2_9ce4_8422_2325).to_be_bytes());
    bytes[8..].copy_from_slice(&fnv(0x8422_2325_cbf2_9ce4).to_be_bytes());
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn facet(path: &str, body: Value) -> Value {
    let mut v = body;
    v["_producer"] = json!(producer());
    v["_schemaURL"] = json!(format!("{FACETS}/{path}"));
    v
}

/// `inputFields` of the column-lineage facet: one per input field, with every transformation
/// by which it reaches the output.
fn input_fields(inputs: &FieldInputs, naming: &Naming) -> Vec<Value> {
    let mut by_field: Vec<(&String, &String, Vec<Value>)> = Vec::new();
    for (urn, field, t) in inputs {
        let transformation = json!({
            "type": t.openlineage_type(),
            "subtype": t.openlineage_subtype(),
            "description": "",
            "masking": false,
        });
        match by_field
            .iter_mut()
            .find(|(u, f, _)| *u == urn && *f == field)
        {
            Some((_, _, ts)) => ts.push(transformation),
            None => by_field.push((urn, field, vec![transformation])),
        }
    }
    by_field
        .into_iter()
        .map(|(urn, field, transformations)| {
            let (ns, name) = naming.dataset(urn);
            json!({
                "namespace": ns,
                "name": name,
                "field": field,
                "transformations": transformations,
            })
        })
        .collect()
}

/// The job name of a layer run.
pub fn job_name(job: &JobContext) -> String {
    match (&job.dag_id, &job.task_id) {
        (Some(dag), Some(task)) => format!("{dag}.{task}"),
        _ => format!("{}.{}", job.pipeline, job.layer),
    }
}

/// One RunEvent: `event_type` is `START`, `COMPLETE` or `FAIL`.
pub fn event(
    job: &JobContext,
    namespace: &str,
    event_type: &str,
    time_ms: i64,
    written: &[Written],
    naming: &Naming,
) -> Value {
    let time = chrono::DateTime::from_timestamp_millis(time_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut run_facets = json!({
        "processing_engine": facet(
            "1-1-1/ProcessingEngineRunFacet.json#/$defs/ProcessingEngineRunFacet",
            json!({ "name": "smelter", "version": env!("CARGO_PKG_VERSION") }),
        ),
    });
    if let Some((ns, name, run)) = std::env::var("OPENLINEAGE_PARENT_ID")
        .ok()
        .and_then(|p| parse_parent(&p))
    {
        run_facets["parent"] = facet(
            "1-1-0/ParentRunFacet.json#/$defs/ParentRunFacet",
            json!({ "job": { "namespace": ns, "name": name }, "run": { "runId": run } }),
        );
    }
    let mut inputs: Vec<(String, String)> = written
        .iter()
        .flat_map(|w| w.upstreams.iter().map(|u| naming.dataset(u)))
        .collect();
    inputs.sort();
    inputs.dedup();
    let outputs: Vec<Value> = written
        .iter()
        .map(|w| {
            let (ns, name) = naming.dataset(&w.urn);
            let fields: Vec<Value> = w
                .schema
                .fields()
                .iter()
                .map(|f| json!({ "name": f.name(), "type": crate::schema::type_name(f.data_type()) }))
                .collect();
            let lineage: serde_json::Map<String, Value> = w
                .columns
                .iter()
                .filter(|(_, inputs)| !inputs.is_empty())
                .map(|(col, inputs)| {
                    (col.clone(), json!({ "inputFields": input_fields(inputs, naming) }))
                })
                .collect();
            let mut facets = json!({
                "schema": facet(
                    "1-1-1/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet",
                    json!({ "fields": fields }),
                ),
            });
            if !lineage.is_empty() || !w.indirect.is_empty() {
                let mut body = json!({ "fields": lineage });
                if !w.indirect.is_empty() {
                    body["dataset"] = json!(input_fields(&w.indirect, naming));
                }
                facets["columnLineage"] = facet(
                    "1-2-0/ColumnLineageDatasetFacet.json#/$defs/ColumnLineageDatasetFacet",
                    body,
                );
            }
            json!({ "namespace": ns, "name": name, "facets": facets })
        })
        .collect();
    json!({
        "eventType": event_type,
        "eventTime": time,
        "producer": producer(),
        "schemaURL": SPEC,
        "run": { "runId": run_uuid(job), "facets": run_facets },
        "job": {
            "namespace": namespace,
            "name": job_name(job),
            "facets": {
                "jobType": facet(
                    "2-0-3/JobTypeJobFacet.json#/$defs/JobTypeJobFacet",
                    json!({ "processingType": "BATCH", "integration": "SMELTER", "jobType": "TASK" }),
                ),
            },
        },
        "inputs": inputs
            .into_iter()
            .map(|(ns, name)| json!({ "namespace": ns, "name": name }))
            .collect::<Vec<_>>(),
        "outputs": outputs,
    })
}

/// `namespace/job/run-uuid` (the job name may itself contain `/`).
fn parse_parent(p: &str) -> Option<(String, String, String)> {
    let (ns, rest) = p.split_once('/')?;
    let (job, run) = rest.rsplit_once('/')?;
    uuid::Uuid::parse_str(run).ok()?;
    Some((ns.to_string(), job.to_string(), run.to_string()))
}
