//! `smelter plan --changed`: models whose SQL, header, upstream tables or source contracts
//! changed since their last successful build, from the fingerprints in the run log; on a
//! pipeline of its own (a files source with two CSV tables and three models). Also the
//! `[airflow]` policy in `plan --format json` and `smelter airflow pools`.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::support::{code, expect_code, out_text, Project};

const PIPELINE: &str = r#"
name = "t"
[source]
type = "files"
root = "incoming"
[[source.tables]]
name = "readings"
path = "readings/*.csv"
key = ["reading_id"]
[[source.tables]]
name = "sites"
path = "sites/*.csv"
key = ["site_id"]
[storage]
root = "lake"
"#;

const CLEAN: &str = "-- materialized: table
SELECT reading_id, site_id, celsius FROM bronze.readings WHERE celsius IS NOT NULL
";

const SITES: &str = "-- materialized: table
-- description: one row per site
SELECT site_id, name FROM bronze.sites
";

const DAILY: &str = "-- materialized: table
SELECT s.name, COUNT(*) AS readings, AVG(r.celsius) AS mean_celsius
FROM silver.clean_readings r JOIN silver.sites s ON r.site_id = s.site_id
GROUP BY s.name
";

fn project() -> Project {
    let p = Project::custom(
        PIPELINE,
        &[
            ("silver/clean_readings.sql", CLEAN),
            ("silver/sites.sql", SITES),
            ("gold/site_daily.sql", DAILY),
        ],
    );
    let incoming = p.dir.path().join("incoming");
    std::fs::create_dir_all(incoming.join("readings")).unwrap();
    std::fs::create_dir_all(incoming.join("sites")).unwrap();
    std::fs::write(
        incoming.join("readings/day1.csv"),
        "reading_id,site_id,celsius\n1,10,20.5\n2,10,21.0\n3,20,\n4,20,18.25\n",
    )
    .unwrap();
    std::fs::write(
        incoming.join("sites/all.csv"),
        "site_id,name\n10,north\n20,south\n",
    )
    .unwrap();
    p.ok(&["source", "sync", "{p}"]);
    p
}

/// `smelter plan {p} --changed --format json <extra>`: the exit code and the document.
fn changed(p: &Project, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["plan", "{p}", "--changed", "--format", "json"];
    args.extend_from_slice(extra);
    let out = p.smelter(&args);
    let doc = serde_json::from_str(&String::from_utf8_lossy(&out.stdout))
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", out_text(&out)));
    (code(&out), doc)
}

/// The changed models and their reasons, as `[(model, [reasons])]`.
fn listed(doc: &Value) -> Vec<(String, Vec<String>)> {
    doc["changed"]
        .as_array()
        .unwrap_or_else(|| panic!("no `changed` list: {doc}"))
        .iter()
        .map(|c| {
            (
                c["model"].as_str().unwrap().to_string(),
                c["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

fn pair(model: &str, reasons: &[&str]) -> (String, Vec<String>) {
    (
        model.to_string(),
        reasons.iter().map(|r| r.to_string()).collect(),
    )
}

fn edit(p: &Project, rel: &str, f: impl FnOnce(String) -> String) {
    let path = p.dir.path().join(rel);
    let before = std::fs::read_to_string(&path).unwrap();
    let after = f(before.clone());
    assert_ne!(before, after, "the edit of {rel} changed nothing");
    std::fs::write(path, after).unwrap();
}

#[test]
fn edits_of_models_and_contracts_list_exactly_the_models_they_affect() {
    let p = project();

    // Nothing built yet: every model, because there is no earlier run.
    let (exit, doc) = changed(&p, &[]);
    assert_eq!(exit, 0, "{doc}");
    assert_eq!(doc["since_run"], Value::Null);
    assert_eq!(
        listed(&doc),
        vec![
            pair("silver.clean_readings", &["no earlier run"]),
            pair("silver.sites", &["no earlier run"]),
            pair("gold.site_daily", &["no earlier run"]),
        ]
    );

    for layer in ["extract", "bronze", "silver", "gold"] {
        p.run_layer(layer, "r1", 0);
    }
    // Unchanged: exit 99, with an empty list.
    let (exit, doc) = changed(&p, &["--since-last-success"]);
    assert_eq!(exit, 99, "{doc}");
    assert_eq!(
        doc,
        json!({"pipeline": "t", "since_run": "r1", "changed": []})
    );
    let table = p.expect(&["plan", "{p}", "--changed"], 99);
    assert!(
        table.contains("0 model(s) changed since run `r1`"),
        "{table}"
    );

    // Layout, comments and keyword case are not changes, in SQL or in a contract.
    edit(&p, "sql/t/silver/sites.sql", |s| {
        s.replace(
            "SELECT site_id, name FROM bronze.sites",
            "select site_id,\n       name\n  from bronze.sites -- all sites",
        )
    });
    edit(&p, "schemas/t/sites.toml", |s| format!("# reviewed\n{s}\n"));
    assert_eq!(changed(&p, &[]).0, 99);

    // A changed query: the model and everything downstream of it, not its sibling.
    edit(&p, "sql/t/silver/clean_readings.sql", |s| {
        s.replace(
            "WHERE celsius IS NOT NULL",
            "WHERE celsius IS NOT NULL AND celsius > -60",
        )
    });
    let (exit, doc) = changed(&p, &[]);
    assert_eq!(exit, 0, "{doc}");
    assert_eq!(
        listed(&doc),
        vec![
            pair("silver.clean_readings", &["sql"]),
            pair("gold.site_daily", &["upstream:silver.clean_readings"]),
        ]
    );
    assert_eq!(doc["changed"][0]["last_run"], "r1");
    let table = p.ok(&["plan", "{p}", "--changed"]);
    assert!(
        table.contains("silver.clean_readings") && table.contains("sql"),
        "{table}"
    );

    // Rebuilding them (a later run) makes them current again.
    p.run_layer("silver", "r2", 0);
    p.run_layer("gold", "r2", 0);
    assert_eq!(changed(&p, &[]).0, 99);

    // Against the older run r1, the edit still shows.
    let (exit, doc) = changed(&p, &["--since-run", "r1"]);
    assert_eq!(exit, 0, "{doc}");
    assert_eq!(doc["since_run"], "r1");
    assert_eq!(
        listed(&doc),
        vec![
            pair("silver.clean_readings", &["sql"]),
            pair("gold.site_daily", &["upstream:silver.clean_readings"]),
        ]
    );
    assert_eq!(changed(&p, &["--since-run", "r2"]).0, 99);
    let text = expect_code(
        &p.smelter(&["plan", "{p}", "--changed", "--since-run", "r9"]),
        &["--since-run r9"],
        2,
    );
    assert!(
        text.contains("no run `r9`") && text.contains("`r2`") && text.contains("`r1`"),
        "{text}"
    );

    // A header edit, and a contract edit: the models reading that table, and downstream.
    edit(&p, "sql/t/silver/sites.sql", |s| {
        s.replace("one row per site", "one row per monitoring site")
    });
    edit(&p, "schemas/t/readings.toml", |s| {
        s.replacen("nullable = true", "nullable = false", 1)
    });
    let (_, doc) = changed(&p, &[]);
    assert_eq!(
        listed(&doc),
        vec![
            pair("silver.clean_readings", &["upstream:bronze.readings"]),
            pair("silver.sites", &["header"]),
            pair(
                "gold.site_daily",
                &["upstream:silver.clean_readings", "upstream:silver.sites"]
            ),
        ]
    );
    // Exactly those go into a full refresh.
    p.ok(&[
        "run",
        "{p}",
        "--layer",
        "silver",
        "--full-refresh",
        "--models",
        "silver.clean_readings,silver.sites",
        "--logical-date",
        "2026-11-30",
        "--run-id",
        "r3",
    ]);
    let (_, doc) = changed(&p, &[]);
    assert_eq!(
        listed(&doc),
        vec![pair(
            "gold.site_daily",
            &["upstream:silver.clean_readings", "upstream:silver.sites"]
        )]
    );
}

/// A run log written before fingerprints existed (no `fingerprint`, `attempt` or `exit_code`
/// column) is read as "fingerprint unknown", and the next run appends to it.
#[tokio::test(flavor = "multi_thread")]
async fn run_logs_without_fingerprints_count_as_unknown() {
    use arrow::array::{Date32Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let p = project();
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("layer", DataType::Utf8, false),
        Field::new("target", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("rows_updated", DataType::Int64, false),
        Field::new("logical_date", DataType::Date32, false),
        Field::new("started_at", ts(), false),
        Field::new("duration_ms", DataType::Int64, false),
        Field::new("message", DataType::Utf8, true),
        Field::new("details", DataType::Utf8, false),
    ]));
    let s = |v: &str| Arc::new(StringArray::from(vec![v])) as arrow::array::ArrayRef;
    let batch = arrow::array::RecordBatch::try_new(
        schema,
        vec![
            s("old1"),
            s("t"),
            s("silver"),
            s("silver.sites"),
            s("success"),
            Arc::new(Int64Array::from(vec![2])),
            Arc::new(Int64Array::from(vec![0])),
            Arc::new(Date32Array::from(vec![20_000])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![1_700_000_000_000_000]).with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from(vec![5])),
            Arc::new(StringArray::from(vec![None::<&str>])),
            s("{}"),
        ],
    )
    .unwrap();
    let dir = p.lake().join("_smelter/runs");
    std::fs::create_dir_all(&dir).unwrap();
    deltalake::DeltaTable::try_from_url(url::Url::from_directory_path(&dir).unwrap())
        .await
        .unwrap()
        .write(vec![batch])
        .await
        .unwrap();

    let (exit, doc) = changed(&p, &[]);
    assert_eq!(exit, 0, "{doc}");
    assert_eq!(
        listed(&doc),
        vec![
            pair("silver.clean_readings", &["no earlier run"]),
            pair("silver.sites", &["fingerprint unknown"]),
            pair("gold.site_daily", &["no earlier run"]),
        ]
    );
    assert_eq!(doc["changed"][1]["last_run"], "old1");

    for layer in ["extract", "bronze", "silver"] {
        p.run_layer(layer, "new1", 0);
    }
    let (_, doc) = changed(&p, &[]);
    assert_eq!(
        listed(&doc),
        vec![pair("gold.site_daily", &["no earlier run"])]
    );
}

#[test]
fn airflow_policy_is_in_the_plan_and_pools_come_from_the_tenants() {
    let policy = "\n[airflow]\nmax_retries = 4\ninitial_delay_seconds = 60\nbackoff_multiplier = 3.0\nretryable_exit_codes = [75]\ntenant = \"acme\"\nconcurrency_per_tenant = 2\n";
    let p = Project::custom(
        &format!("{PIPELINE}{policy}"),
        &[("silver/sites.sql", SITES)],
    );
    let plan: Value = serde_json::from_str(&p.ok(&["plan", "{p}", "--format", "json"])).unwrap();
    assert_eq!(
        plan["airflow"],
        json!({
            "max_retries": 4, "initial_delay_seconds": 60, "backoff_multiplier": 3.0,
            "retryable_exit_codes": [75], "tenant": "acme", "concurrency_per_tenant": 2,
            "pool": "smelter_tenant_acme"
        })
    );
    assert_eq!(plan["source"]["type"], "files");

    // A second pipeline of the same tenant, and one without a tenant.
    let dir = p.dir.path().join("pipelines");
    let second = PIPELINE.replace("name = \"t\"", "name = \"t2\"");
    std::fs::write(dir.join("t2.toml"), format!("{second}{policy}")).unwrap();
    std::fs::write(
        dir.join("t3.toml"),
        PIPELINE.replace("name = \"t\"", "name = \"t3\""),
    )
    .unwrap();
    let files: Vec<String> = ["t", "t2", "t3"]
        .iter()
        .map(|n| dir.join(format!("{n}.toml")).display().to_string())
        .collect();
    let mut args = vec!["airflow", "pools"];
    args.extend(files.iter().map(String::as_str));
    let pools: Value = serde_json::from_str(&p.ok(&args)).unwrap();
    assert_eq!(
        pools,
        json!({"smelter_tenant_acme": {
            "slots": 2, "description": "Smelter tenant acme: pipelines t, t2", "include_deferred": false
        }})
    );
    // Same input, same file: importing it again changes nothing.
    assert_eq!(serde_json::from_str::<Value>(&p.ok(&args)).unwrap(), pools);

    // Two pipelines of one tenant that disagree on its slots.
    std::fs::write(
        dir.join("t2.toml"),
        format!(
            "{second}{}",
            policy.replace("concurrency_per_tenant = 2", "concurrency_per_tenant = 5")
        ),
    )
    .unwrap();
    let text = expect_code(&p.smelter(&args), &args, 2);
    assert!(
        text.contains("t2.toml") && text.contains("airflow.concurrency_per_tenant"),
        "{text}"
    );

    // A bad value is a configuration error for every command.
    std::fs::write(
        dir.join("t3.toml"),
        format!("{PIPELINE}\n[airflow]\nbackoff_multiplier = 0\n"),
    )
    .unwrap();
    let text = expect_code(
        &p.smelter(&["plan", files[2].as_str(), "--format", "json"]),
        &["plan t3"],
        2,
    );
    assert!(text.contains("airflow.backoff_multiplier"), "{text}");
}
