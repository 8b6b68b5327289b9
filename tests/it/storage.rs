//! Lakes on object stores, against real emulators on 127.0.0.1: Azurite (Azure Blob) and s3s-fs
//! (S3, with SigV4 checking). The test command starts both and exports their endpoints
//! (`tests/support/emulators.py`); without them these tests skip, unless `SMELTER_REQUIRE_E2E`
//! is set, in which case they fail.
//!
//! Every test works under its own prefix in the shared bucket or container.

use std::collections::HashMap;
use std::process::Output;

use crate::http::{FaultProxy, Rule};
use crate::support::{code, stderr, Project};

/// One emulator: the root URL prefix, pipeline options, and env vars (credentials) for runs.
/// Shared with the files-source tests (`files.rs`), which read source files from it.
pub(crate) struct Backend {
    pub(crate) name: &'static str,
    pub(crate) bucket_url: String,
    pub(crate) endpoint: String,
    pub(crate) options: Vec<(&'static str, String)>,
    env: Vec<(&'static str, String)>,
    secret: String,
}

fn required(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var("SMELTER_REQUIRE_E2E").is_ok() => {
            panic!("{var} is not set: start the emulators with tests/support/emulators.py")
        }
        _ => {
            eprintln!("skipping: {var} is not set (storage emulators not running)");
            None
        }
    }
}

fn s3() -> Option<Backend> {
    let endpoint = required("SMELTER_TEST_S3")?;
    let access = required("SMELTER_TEST_S3_ACCESS_KEY")?;
    let secret = required("SMELTER_TEST_S3_SECRET_KEY")?;
    Some(Backend {
        name: "s3",
        bucket_url: "s3://lake".into(),
        endpoint: endpoint.clone(),
        options: vec![
            ("endpoint", endpoint),
            ("region", "us-east-1".into()),
            ("allow_http", "true".into()),
            ("path_style", "true".into()),
            ("max_retries", "3".into()),
            ("retry_timeout", "10s".into()),
            ("init_backoff", "50ms".into()),
        ],
        env: vec![
            ("AWS_ACCESS_KEY_ID", access),
            ("AWS_SECRET_ACCESS_KEY", secret.clone()),
        ],
        secret,
    })
}

fn azure() -> Option<Backend> {
    let account_url = required("SMELTER_TEST_AZURITE")?;
    let key = required("SMELTER_TEST_AZURITE_KEY")?;
    let endpoint = account_url
        .trim_end_matches("/devstoreaccount1")
        .to_string();
    Some(Backend {
        name: "azure",
        bucket_url: "az://lake".into(),
        endpoint: endpoint.clone(),
        options: vec![
            ("use_emulator", "true".into()),
            ("max_retries", "3".into()),
            ("retry_timeout", "10s".into()),
            ("init_backoff", "50ms".into()),
        ],
        env: vec![
            ("AZURITE_BLOB_STORAGE_URL", endpoint),
            ("AZURE_STORAGE_ACCOUNT_KEY", key.clone()),
        ],
        secret: key,
    })
}

pub(crate) fn backends() -> Vec<Backend> {
    [s3(), azure()].into_iter().flatten().collect()
}

pub(crate) fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{test}-{nanos}")
}

impl Backend {
    /// A demo project whose lake is `<bucket>/<prefix>` on this backend.
    pub(crate) fn project(
        &self,
        scale: f64,
        prefix: &str,
        extra: &[(&str, &str)],
    ) -> (Project, String) {
        let p = Project::demo(scale);
        let root = format!("{}/{prefix}", self.bucket_url);
        let mut options: Vec<(&str, &str)> =
            self.options.iter().map(|(k, v)| (*k, v.as_str())).collect();
        options.extend_from_slice(extra);
        p.set_storage(&root, &options);
        (p, root)
    }

    pub(crate) fn env(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    fn run(&self, p: &Project, args: &[&str]) -> Output {
        p.smelter_env(args, &self.env())
    }

    /// Storage options for delta-rs reading the lake back in this process.
    fn reader_options(&self) -> HashMap<String, String> {
        let mut o: HashMap<String, String> = self
            .options
            .iter()
            .filter(|(k, _)| !k.contains("retr") && !k.contains("backoff"))
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        if self.name == "s3" {
            o.insert("aws_virtual_hosted_style_request".into(), "false".into());
            o.remove("path_style");
            for (k, v) in &self.env {
                o.insert(k.to_ascii_lowercase(), v.clone());
            }
        } else {
            o.insert("azure_storage_account_key".into(), self.secret.clone());
        }
        o
    }

    /// Writes `bytes` to `rel` under the bucket (or container) with object_store, independently
    /// of Smelter's storage code.
    pub(crate) async fn put(&self, rel: &str, bytes: Vec<u8>) {
        if self.name == "azure" {
            // object_store reads the Azurite endpoint from the environment only.
            std::env::set_var("AZURITE_BLOB_STORAGE_URL", &self.endpoint);
        }
        let url = url::Url::parse(&format!("{}/{rel}", self.bucket_url)).unwrap();
        let (store, path) = object_store::parse_url_opts(&url, self.reader_options())
            .unwrap_or_else(|e| panic!("{}: store for {url}: {e}", self.name));
        object_store::ObjectStoreExt::put(&store, &path, bytes.into())
            .await
            .unwrap_or_else(|e| panic!("{}: put {url}: {e}", self.name));
    }

    /// Loads a Delta table under `root` with delta-rs, independently of Smelter's storage code.
    async fn table(&self, root: &str, rel: &str) -> deltalake::DeltaTable {
        deltalake::aws::register_handlers(None);
        deltalake::azure::register_handlers(None);
        if self.name == "azure" {
            // object_store reads the Azurite endpoint from the environment only.
            std::env::set_var("AZURITE_BLOB_STORAGE_URL", &self.endpoint);
        }
        let url = url::Url::parse(&format!("{root}/{rel}/")).unwrap();
        deltalake::DeltaTableBuilder::from_url(url)
            .unwrap()
            .with_storage_options(self.reader_options())
            .load()
            .await
            .unwrap_or_else(|e| panic!("{}: open {rel}: {e}", self.name))
    }

    /// `SELECT <expr>` over one table, as i64.
    async fn scalar(&self, root: &str, rel: &str, sql: &str) -> i64 {
        let table = self.table(root, rel).await;
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_table("t", table.table_provider().await.unwrap())
            .unwrap();
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let col =
            arrow::compute::cast(batches[0].column(0), &arrow::datatypes::DataType::Int64).unwrap();
        col.as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .value(0)
    }
}

fn assert_ok(b: &Backend, out: &Output) {
    assert!(
        out.status.success(),
        "{}: run failed ({:?}):\n{}",
        b.name,
        out.status.code(),
        stderr(out)
    );
}

fn all_output(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_runs_every_layer_on_each_object_store_and_never_shows_the_secret() {
    for b in backends() {
        let (p, root) = b.project(0.01, &unique("demo"), &[]);
        // -vv logs everything Smelter and its storage clients have to say.
        let out = b.run(
            &p,
            &[
                "run",
                "{p}",
                "--logical-date",
                "2026-11-03",
                "-vv",
                "--run-id",
                "d1",
            ],
        );
        assert_ok(&b, &out);
        let gold = b
            .scalar(
                &root,
                "gold/daily_shipments_by_carrier",
                "SELECT SUM(shipments) FROM t",
            )
            .await;
        let silver = b
            .scalar(&root, "silver/shipments", "SELECT COUNT(*) FROM t")
            .await;
        assert!(silver > 0, "{}: silver.shipments is empty", b.name);
        assert_eq!(
            gold, silver,
            "{}: gold does not reconcile with silver",
            b.name
        );
        let runs = b
            .scalar(
                &root,
                "_smelter/runs",
                "SELECT COUNT(*) FROM t WHERE run_id = 'd1'",
            )
            .await;
        assert!(runs >= 20, "{}: run log has {runs} records", b.name);

        // The secret is in no output, no lineage file, and nothing the lake holds.
        let text = all_output(&out);
        assert!(
            !text.contains(&b.secret),
            "{}: secret in the output",
            b.name
        );
        assert!(
            !text.contains("AccessKey("),
            "{}: key material in the output",
            b.name
        );
        for entry in walk(&p.dir.path().join("lineage")) {
            let body = std::fs::read(&entry).unwrap();
            assert!(
                !String::from_utf8_lossy(&body).contains(&b.secret),
                "{}: secret in {}",
                b.name,
                entry.display()
            );
        }
        if let Ok(state) = std::env::var("SMELTER_TEST_S3_DIR") {
            if b.name == "s3" {
                for entry in walk(std::path::Path::new(&state).join("lake").as_path()) {
                    let body = std::fs::read(&entry).unwrap();
                    assert!(
                        !body
                            .windows(b.secret.len())
                            .any(|w| w == b.secret.as_bytes()),
                        "secret stored in {}",
                        entry.display()
                    );
                }
            }
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_and_missing_bucket_are_fatal_and_name_the_url() {
    for b in backends() {
        let prefix = unique("creds");
        let (p, _) = b.project(0.002, &prefix, &[]);
        let wrong_secret = "wrong-secret-value-Zq81x";
        let mut env = b.env();
        for (k, v) in env.iter_mut() {
            if *k == "AWS_SECRET_ACCESS_KEY" || *k == "AZURE_STORAGE_ACCOUNT_KEY" {
                // Still valid base64 for Azure, but the wrong key.
                *v = if b.name == "azure" {
                    "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktMDEyMzQ1Njc4OQ=="
                } else {
                    wrong_secret
                };
            }
        }
        let out = p.smelter_env(&["run", "{p}", "--layer", "extract"], &env);
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{}: wrong credentials: {err}", b.name);
        assert!(
            err.contains("credentials were rejected"),
            "{}: no hint: {err}",
            b.name
        );
        assert!(err.contains(&prefix), "{}: URL not named: {err}", b.name);
        assert!(!err.contains(wrong_secret) && !err.contains("d3Jvbmcta2V5"));

        let (p, _) = b.project(0.002, &prefix, &[]);
        let missing = format!(
            "{}/{prefix}",
            b.bucket_url.replace("lake", "no-such-bucket")
        );
        let options: Vec<(&str, &str)> = b.options.iter().map(|(k, v)| (*k, v.as_str())).collect();
        p.set_storage(&missing, &options);
        let out = b.run(&p, &["run", "{p}", "--layer", "extract"]);
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{}: missing bucket: {err}", b.name);
        assert!(
            err.contains("bucket or container exists"),
            "{}: {err}",
            b.name
        );
        assert!(err.contains("no-such-bucket"), "{}: {err}", b.name);
    }
}

#[test]
fn secrets_in_the_pipeline_file_are_refused() {
    let p = Project::demo(0.002);
    p.set_storage(
        "s3://lake/x",
        &[("aws_secret_access_key", "inline-secret-123456")],
    );
    let out = p.smelter(&["validate", "{p}"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        err.contains("storage.options.aws_secret_access_key"),
        "{err}"
    );
    assert!(err.contains("environment"), "{err}");
    assert!(!err.contains("inline-secret-123456"), "{err}");

    p.set_storage("az://lake/x", &[("colour", "blue")]);
    let err = stderr(&p.smelter(&["validate", "{p}"]));
    assert!(err.contains("storage.options.colour"), "{err}");
    assert!(err.contains("use_emulator"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_concurrent_writers_never_corrupt_a_table() {
    for b in backends() {
        let (p, root) = b.project(0.004, &unique("concurrent"), &[]);
        let env = b.env();
        // Two runs of extract + bronze with different run ids, at the same moment, append to the
        // same bronze tables, state tables and run log.
        let spawn = |run_id: &str| {
            p.command(
                &[
                    "run",
                    "{p}",
                    "--layer",
                    "extract",
                    "--logical-date",
                    "2026-11-03",
                    "--run-id",
                    run_id,
                ],
                &env,
            )
            .output()
        };
        for id in ["a", "b"] {
            assert_ok(&b, &spawn(id).unwrap());
        }
        let bronze = |run_id: &str| {
            p.command(
                &["run", "{p}", "--layer", "bronze", "--run-id", run_id],
                &env,
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        };
        let (ca, cb) = (bronze("a"), bronze("b"));
        let (oa, ob) = (
            ca.wait_with_output().unwrap(),
            cb.wait_with_output().unwrap(),
        );
        // Each either committed, or failed with the retryable code; a retry then commits.
        for (id, out) in [("a", oa), ("b", ob)] {
            match code(&out) {
                0 => {}
                75 => assert_ok(
                    &b,
                    &b.run(&p, &["run", "{p}", "--layer", "bronze", "--run-id", id]),
                ),
                c => panic!("{}: writer {id} exited {c}: {}", b.name, stderr(&out)),
            }
        }
        let landed = b
            .scalar(
                &root,
                "bronze/shipments",
                "SELECT COUNT(*) FROM t WHERE _run_id = 'a'",
            )
            .await;
        assert!(landed > 0);
        for id in ["a", "b"] {
            let (rows, distinct) = (
                b.scalar(
                    &root,
                    "bronze/shipment_events",
                    &format!("SELECT COUNT(*) FROM t WHERE _run_id = '{id}'"),
                )
                .await,
                b.scalar(
                    &root,
                    "bronze/shipment_events",
                    &format!(
                        "SELECT COUNT(*) FROM (SELECT DISTINCT * FROM t WHERE _run_id = '{id}')"
                    ),
                )
                .await,
            );
            assert!(rows > 0, "{}: run {id} missing", b.name);
            assert_eq!(rows, distinct, "{}: run {id} appended twice", b.name);
        }
        let a = b
            .scalar(
                &root,
                "bronze/shipments",
                "SELECT COUNT(*) FROM t WHERE _run_id = 'a'",
            )
            .await;
        let bb = b
            .scalar(
                &root,
                "bronze/shipments",
                "SELECT COUNT(*) FROM t WHERE _run_id = 'b'",
            )
            .await;
        assert_eq!(a, bb, "{}: both runs extracted the same window", b.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_faults_are_retried_and_persistent_ones_exit_75_leaving_the_table_unchanged() {
    for b in backends() {
        let upstream = b.endpoint.trim_start_matches("http://").to_string();
        let prefix = unique("faults");
        let (p, root) = b.project(0.002, &prefix, &[]);
        assert_ok(
            &b,
            &b.run(&p, &["run", "{p}", "--layer", "extract", "--run-id", "f1"]),
        );

        // Transient: the first three commits to any Delta log get a 503; the client retries.
        let proxy = FaultProxy::start(
            upstream.clone(),
            Rule {
                method: "PUT",
                path_contains: "_delta_log/",
                faults: 3,
                cut_body: false,
            },
        )
        .await;
        let via = |p: &Project, proxy: &FaultProxy| {
            let endpoint = format!("http://127.0.0.1:{}", proxy.port);
            let mut env = b.env();
            let mut options: Vec<(&str, String)> = b.options.clone();
            if b.name == "azure" {
                env.retain(|(k, _)| *k != "AZURITE_BLOB_STORAGE_URL");
            } else {
                options.retain(|(k, _)| *k != "endpoint");
                options.push(("endpoint", endpoint.clone()));
            }
            let options: Vec<(&str, &str)> =
                options.iter().map(|(k, v)| (*k, v.as_str())).collect();
            p.set_storage(&root, &options);
            let mut env: Vec<(&str, String)> =
                env.into_iter().map(|(k, v)| (k, v.to_string())).collect();
            if b.name == "azure" {
                env.push(("AZURITE_BLOB_STORAGE_URL", endpoint));
            }
            env
        };
        let env = via(&p, &proxy);
        let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = p.smelter_env(
            &["run", "{p}", "--layer", "bronze", "--run-id", "f1"],
            &env_ref,
        );
        assert_ok(&b, &out);
        assert_eq!(proxy.injected(), 3, "{}: faults not injected", b.name);
        let version = b.table(&root, "bronze/shipments").await.version();
        let rows = b
            .scalar(&root, "bronze/shipments", "SELECT COUNT(*) FROM t")
            .await;
        assert!(rows > 0);
        drop(proxy);

        // Persistent: every commit fails. The run exits 75 and no new version appears.
        let direct: Vec<(&str, &str)> = b.options.iter().map(|(k, v)| (*k, v.as_str())).collect();
        p.set_storage(&root, &direct);
        assert_ok(
            &b,
            &b.run(&p, &["run", "{p}", "--layer", "extract", "--run-id", "f2"]),
        );
        let proxy = FaultProxy::start(
            upstream.clone(),
            Rule {
                method: "PUT",
                path_contains: "_delta_log/",
                faults: usize::MAX,
                cut_body: false,
            },
        )
        .await;
        let env = via(&p, &proxy);
        let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = p.smelter_env(
            &["run", "{p}", "--layer", "bronze", "--run-id", "f2"],
            &env_ref,
        );
        assert_eq!(code(&out), 75, "{}: {}", b.name, stderr(&out));
        assert!(proxy.injected() > 3, "{}: the client did not retry", b.name);
        assert!(
            stderr(&out).contains(&prefix),
            "{}: URL not named: {}",
            b.name,
            stderr(&out)
        );
        drop(proxy);
        assert_eq!(
            b.table(&root, "bronze/shipments").await.version(),
            version,
            "{}: a partial version became visible",
            b.name
        );
        assert_eq!(
            b.scalar(&root, "bronze/shipments", "SELECT COUNT(*) FROM t")
                .await,
            rows
        );
    }
}

/// The Airflow connection (`AIRFLOW_CONN_<ID>`) that stands for this backend's credentials:
/// the JSON form for S3 (`aws`), the URI form with a percent-encoded base64 key (`+`, `/`, `=`)
/// for Azurite (`wasb`, the account URL as host).
fn airflow_connection(b: &Backend) -> String {
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    if b.name == "s3" {
        let access = &b
            .env
            .iter()
            .find(|(k, _)| *k == "AWS_ACCESS_KEY_ID")
            .unwrap()
            .1;
        serde_json::json!({
            "conn_type": "aws",
            "login": access,
            "password": b.secret,
            "extra": {"endpoint_url": b.endpoint, "region_name": "us-east-1"},
        })
        .to_string()
    } else {
        format!(
            "wasb://devstoreaccount1:{}@{}",
            enc(&b.secret),
            enc(&format!("{}/devstoreaccount1", b.endpoint))
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_credentials_come_from_an_airflow_connection_and_never_show() {
    // Azurite through a `wasb` connection: its account URL is the endpoint (no `use_emulator`),
    // so offset listings of the Delta log are filtered on the client (Azurite ignores them).
    for b in backends() {
        let prefix = unique("airflow-conn");
        let p = Project::demo(0.002);
        let root = format!("{}/{prefix}", b.bucket_url);
        // Only what is not a credential stays in the file; no AWS_*/AZURE_* variables are set.
        let options: &[(&str, &str)] = if b.name == "s3" {
            &[("path_style", "true"), ("max_retries", "3")]
        } else {
            &[("max_retries", "3")]
        };
        p.set_storage(&root, options);
        let toml = std::fs::read_to_string(p.pipeline()).unwrap().replace(
            &format!("root = \"{root}\"\n"),
            &format!("root = \"{root}\"\nconnection = \"lake_conn\"\n"),
        );
        std::fs::write(p.pipeline(), toml).unwrap();
        let conn = airflow_connection(&b);
        let env = [("AIRFLOW_CONN_LAKE_CONN", conn.as_str())];
        let mut text = String::new();
        let summary = p.dir.path().join("summary.json");
        for layer in ["extract", "bronze"] {
            let out = p.smelter_env(
                &[
                    "run",
                    "{p}",
                    "--layer",
                    layer,
                    "--run-id",
                    "c1",
                    "-vv",
                    "--summary-json",
                    summary.to_str().unwrap(),
                ],
                &env,
            );
            assert_ok(&b, &out);
            text.push_str(&all_output(&out));
            text.push_str(&std::fs::read_to_string(&summary).unwrap());
        }
        let rows = b
            .scalar(&root, "bronze/shipments", "SELECT COUNT(*) FROM t")
            .await;
        assert!(rows > 0, "{}: bronze.shipments is empty", b.name);
        assert!(
            !text.contains(&b.secret),
            "{}: secret in the output",
            b.name
        );

        // Without the variable: a config error naming it, exit 2.
        let out = p.smelter(&["run", "{p}", "--layer", "extract"]);
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{}: {err}", b.name);
        assert!(err.contains("AIRFLOW_CONN_LAKE_CONN"), "{}: {err}", b.name);

        // A connection of the other store's type: exit 2, and still no secret.
        let other = if b.name == "s3" {
            format!("wasb://acct:{}@", b.secret.replace('/', "%2F"))
        } else {
            format!(
                r#"{{"conn_type": "aws", "login": "a", "password": "{}"}}"#,
                b.secret
            )
        };
        let out = p.smelter_env(
            &["run", "{p}", "--summary-json", summary.to_str().unwrap()],
            &[("AIRFLOW_CONN_LAKE_CONN", &other)],
        );
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{}: {err}", b.name);
        assert!(err.contains("does not fit"), "{}: {err}", b.name);
        assert!(!err.contains(&b.secret), "{}: secret in {err}", b.name);
        let written = std::fs::read_to_string(&summary).unwrap();
        assert!(written.contains("does not fit"), "{}: {written}", b.name);
        assert!(
            !written.contains(&b.secret),
            "{}: secret in {written}",
            b.name
        );
    }
}
