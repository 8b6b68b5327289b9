//! `[engine] mode = "ballista"`: the demo's silver and gold layers on a real cluster of
//! `smelter cluster` processes (one scheduler, two executors, on 127.0.0.1), compared row for row
//! with local mode; an unreachable scheduler; an executor killed while a layer runs.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use datafusion::prelude::SessionContext;

use crate::support::{code, copy_dir, out_text, Project};

/// Processes of a test cluster, killed when dropped.
struct Cluster {
    scheduler: SocketAddr,
    executors: Vec<Child>,
    scheduler_process: Child,
    _work: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self
            .executors
            .iter_mut()
            .chain(std::iter::once(&mut self.scheduler_process))
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A loopback port nothing listens on, with the next port free too (an executor takes two).
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two consecutive free loopback ports");
}

/// Waits (at most 60 s) until `addr` accepts TCP connections; fails with the process's log
/// (`log`) when it ends first.
fn wait_listening(addr: SocketAddr, what: &str, process: &mut Child, log: &Path) {
    if let Err(status) = try_listening(addr, what, process, log) {
        panic!(
            "{what} ended ({status}) before listening on {addr}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

/// Waits (at most 60 s, else fails with the log) until `addr` accepts TCP connections, or
/// until the process ends: `Err` with its exit status.
fn try_listening(
    addr: SocketAddr,
    what: &str,
    process: &mut Child,
    log: &Path,
) -> Result<(), std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Some(status) = process.try_wait().unwrap() {
            return Err(status);
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not start listening on {addr}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Starts `smelter <args>` with its output in `log`.
fn smelter_process(args: &[String], log: &Path) -> Child {
    let file = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_smelter"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("start smelter cluster")
}

impl Cluster {
    /// A scheduler and `executors` executors of one slot each; lost executors are noticed
    /// within `executor_timeout` seconds.
    fn start(executors: usize, executor_timeout: u64) -> Cluster {
        let work = tempfile::tempdir().unwrap();
        let port = free_port_pair();
        let scheduler: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = work.path().join("scheduler.log");
        let mut scheduler_process = smelter_process(
            &[
                "cluster".into(),
                "scheduler".into(),
                "--bind".into(),
                scheduler.to_string(),
                "--executor-timeout-seconds".into(),
                executor_timeout.to_string(),
            ],
            &log,
        );
        wait_listening(scheduler, "the scheduler", &mut scheduler_process, &log);
        let mut cluster = Cluster {
            scheduler,
            executors: Vec::new(),
            scheduler_process,
            _work: work,
        };
        let mut attempt = 0;
        let mut i = 0;
        while i < executors {
            let port = free_port_pair();
            let bind: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let dir = cluster._work.path().join(format!("executor-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let log = cluster._work.path().join(format!("executor-{i}.log"));
            let mut executor = smelter_process(
                &[
                    "cluster".into(),
                    "executor".into(),
                    "--scheduler".into(),
                    scheduler.to_string(),
                    "--bind".into(),
                    bind.to_string(),
                    "--slots".into(),
                    "1".into(),
                    "--work-dir".into(),
                    dir.to_str().unwrap().into(),
                    "--heartbeat-seconds".into(),
                    "1".into(),
                ],
                &log,
            );
            match try_listening(bind, "an executor", &mut executor, &log) {
                Ok(()) => {
                    cluster.executors.push(executor);
                    i += 1;
                }
                // Exit 75 (transient), as a supervisor would, restart it: Ballista's
                // scheduler may call back on the executor's gRPC port before it listens.
                Err(status) if status.code() == Some(75) && attempt < 3 => attempt += 1,
                Err(status) => panic!(
                    "an executor ended ({status}) before listening on {bind}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ),
            }
        }
        cluster
    }

    fn url(&self) -> String {
        format!("df://{}", self.scheduler)
    }
}

/// `project`'s pipeline with `[engine] mode = "ballista"` at `url`.
fn use_cluster(project: &Project, url: &str) {
    let toml = std::fs::read_to_string(project.pipeline()).unwrap();
    assert!(
        toml.contains("[engine]\n"),
        "the pipeline has an [engine] section"
    );
    let toml = toml.replace(
        "[engine]\n",
        &format!("[engine]\nmode = \"ballista\"\nscheduler = \"{url}\"\n"),
    );
    std::fs::write(project.pipeline(), toml).unwrap();
}

/// The demo at a small scale with extract and bronze run (locally), and a copy of it: the
/// copy's silver and gold run on the cluster, the original's locally.
fn demo_pair() -> (Project, Project) {
    let local = Project::demo(0.02);
    local.run_layer("extract", "r1", 0);
    local.run_layer("bronze", "r1", 0);
    let copy = Project {
        dir: tempfile::tempdir().unwrap(),
        name: local.name.clone(),
    };
    copy_dir(local.dir.path(), copy.dir.path());
    (local, copy)
}

/// The tables of `layer` in `project`'s lake.
fn tables(project: &Project, layer: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(project.lake().join(layer))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| !n.starts_with('_'))
        .collect();
    names.sort();
    names
}

/// Every row of the Delta table at `dir`, sorted, as text; floats rounded to 6 decimals (the
/// order of a float sum's terms depends on the partitioning). Columns in `skip` are left out.
async fn rows(dir: &Path, skip: &[&str]) -> String {
    use arrow::datatypes::DataType;
    let ctx = SessionContext::new();
    let url = url::Url::from_directory_path(dir).unwrap();
    let table = deltalake::open_table(url).await.unwrap();
    ctx.register_table("t", table.table_provider().await.unwrap())
        .unwrap();
    let schema = ctx.table("t").await.unwrap().schema().as_arrow().clone();
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .filter(|f| !skip.contains(&f.name().as_str()))
        .map(|f| {
            let c = format!("\"{}\"", f.name());
            match f.data_type() {
                DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                    format!("ROUND(CAST({c} AS DOUBLE), 6) AS {c}")
                }
                _ => c,
            }
        })
        .collect();
    let order: Vec<String> = (1..=columns.len()).map(|i| i.to_string()).collect();
    let sql = format!(
        "SELECT {} FROM t ORDER BY {}",
        columns.join(", "),
        order.join(", ")
    );
    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string()
}

/// The Parquet files under a table's staging directories (`staged-*`, written by executors).
#[derive(Debug, Default)]
struct Staged {
    /// Paths (relative to the table) its Delta log adds, in any version.
    referenced: Vec<String>,
    /// Paths no version adds.
    unreferenced: Vec<String>,
    /// Staging directories without a file.
    empty_dirs: usize,
}

fn staged_files(table: &Path) -> Staged {
    let mut added = std::collections::BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(table.join("_delta_log")) {
        for e in entries.map(Result::unwrap) {
            if e.path().extension().is_some_and(|x| x == "json") {
                for line in std::fs::read_to_string(e.path()).unwrap().lines() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    if let Some(path) = v["add"]["path"].as_str() {
                        added.insert(path.to_string());
                    }
                }
            }
        }
    }
    let mut staged = Staged::default();
    for dir in std::fs::read_dir(table).unwrap().map(Result::unwrap) {
        let name = dir.file_name().to_string_lossy().to_string();
        if !name.starts_with("staged-") {
            continue;
        }
        let files: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|f| format!("{name}/{}", f.unwrap().file_name().to_string_lossy()))
            .collect();
        if files.is_empty() {
            staged.empty_dirs += 1;
        }
        for f in files {
            if added.contains(&f) {
                staged.referenced.push(f);
            } else {
                staged.unreferenced.push(f);
            }
        }
    }
    staged
}

/// `smelter run {p} --layer silver` for run id `r1`.
const SILVER_R1: [&str; 8] = [
    "run",
    "{p}",
    "--layer",
    "silver",
    "--logical-date",
    "2026-11-30",
    "--run-id",
    "r1",
];

/// The silver layer's `carriers` model alone, run id `r1`.
const CARRIERS_R1: [&str; 10] = [
    "run",
    "{p}",
    "--layer",
    "silver",
    "--models",
    "carriers",
    "--logical-date",
    "2026-11-30",
    "--run-id",
    "r1",
];

/// Columns whose values are the time of the run that wrote them, not a function of the data.
const RUN_TIME_COLUMNS: [&str; 0] = [];

#[test]
fn demo_silver_and_gold_on_two_executors_equal_local_mode() {
    let cluster = Cluster::start(2, 30);
    let (local, remote) = demo_pair();
    use_cluster(&remote, &cluster.url());
    // The latest row per key, which the scheduler plans as the engine's own operator, shipped
    // to the executors with Smelter's codec.
    for p in [&local, &remote] {
        std::fs::write(
            p.dir.path().join("sql/demo/gold/latest_event.sql"),
            "-- materialized: table\n\
             SELECT shipment_id, event_id, event_type, event_at, location\n\
             FROM (\n\
               SELECT shipment_id, event_id, event_type, event_at, location,\n\
                      ROW_NUMBER() OVER (PARTITION BY shipment_id ORDER BY event_at DESC, event_id DESC) AS rn\n\
               FROM silver.shipment_events\n\
             ) AS ranked\n\
             WHERE rn = 1\n",
        )
        .unwrap();
        // An append without checks: committed by reference, profiled as the rows it added.
        std::fs::write(
            p.dir.path().join("sql/demo/gold/events_appended.sql"),
            "-- materialized: append\n\
             SELECT event_id, shipment_id, event_type FROM silver.shipment_events\n",
        )
        .unwrap();
    }
    let mut by_reference = Vec::new();
    for layer in ["silver", "gold"] {
        local.run_layer(layer, "r1", 0);
        let log = remote.run_layer(layer, "r1", 0);
        by_reference.push(
            log.matches("Committed the files the executors wrote, by reference")
                .count(),
        );
        if layer == "gold" {
            assert!(
                log.lines().any(|l| l.contains("Profiled table.")
                    && l.contains("table=gold.events_appended")
                    && l.contains("scope=Appended")),
                "an append committed by reference is profiled as appended:\n{log}"
            );
        }
        // The executors' files of every table are in its log, or deleted.
        for name in tables(&remote, layer) {
            let files = staged_files(&remote.lake().join(layer).join(&name));
            assert!(
                files.unreferenced.is_empty(),
                "{layer}.{name}: staged files no commit took: {:?}",
                files.unreferenced
            );
            assert_eq!(
                files.empty_dirs, 0,
                "{layer}.{name}: empty staging directories left"
            );
        }
    }
    // A second run with nothing new in bronze: the merges with `-- sequence_by:` get empty
    // batches, and their tables stay as they are.
    for p in [&local, &remote] {
        p.expect(
            &[
                "run",
                "{p}",
                "--layer",
                "silver",
                "--models",
                "invoices,shipments",
                "--logical-date",
                "2026-11-30",
                "--run-id",
                "r2",
            ],
            0,
        );
    }
    assert_same_tables(&local, &remote, "silver", true);
    // The demo's `table` models of silver (carriers, shipments_enriched) and every gold model
    // keep every row: their files are committed as the executors wrote them.
    let referenced = |layer: &str, name: &str| {
        !staged_files(&remote.lake().join(layer).join(name))
            .referenced
            .is_empty()
    };
    assert!(
        by_reference[0] >= 2 && by_reference[1] >= 5,
        "commits by reference per layer: {by_reference:?}"
    );
    let scheduler_log =
        std::fs::read_to_string(cluster._work.path().join("scheduler.log")).unwrap();
    assert!(
        scheduler_log.contains("LatestPerKeyExec"),
        "the latest row per key runs as the engine's operator on the cluster"
    );
    assert!(referenced("silver", "carriers") && referenced("gold", "revenue_by_customer"));
    // A model whose expectation drops rows is written again from the staged rows, which are
    // then deleted.
    assert!(!referenced("silver", "warehouses"));
    // A staged file no clean-up deleted (its executor was killed) is in no version: vacuum
    // removes it, and keeps the table's own files, wherever they are.
    let table = remote.lake().join("gold").join("revenue_by_customer");
    let kept = staged_files(&table).referenced;
    let orphan = table.join(kept[0].replace(".parquet", "-orphan.parquet"));
    std::fs::copy(table.join(&kept[0]), &orphan).unwrap();
    let out = remote.smelter(&[
        "maintain",
        "{p}",
        "--layer",
        "gold",
        "--table",
        "revenue_by_customer",
        "--retention-hours",
        "0",
    ]);
    assert_eq!(code(&out), 0, "{}", out_text(&out));
    assert!(!orphan.exists(), "vacuum removes files no version added");
    assert_same_tables(&local, &remote, "gold", true);
    // Profiles taken on the cluster (`smelter profile` scans each table there) describe the
    // same data as local ones.
    for layer in ["silver", "gold"] {
        let profile = |p: &Project| {
            let out = p.smelter(&["profile", "{p}", "--layer", layer, "--format", "json"]);
            assert_eq!(code(&out), 0, "{}", out_text(&out));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            v.as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    let columns: Vec<String> = t["columns"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| {
                            format!(
                                "{} {} nulls={} distinct={} min={} max={} top={}",
                                c["name"],
                                c["data_type"],
                                c["null_count"],
                                c["distinct_count"],
                                c["min"],
                                c["max"],
                                c["top_k"]
                            )
                        })
                        .collect();
                    format!("{} rows={} {columns:#?}", t["table"], t["row_count"])
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(profile(&remote), profile(&local), "{layer} profiles");
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    for layer in ["silver", "gold"] {
        let names = tables(&local, layer);
        assert_eq!(names, tables(&remote, layer), "{layer} tables");
        assert!(!names.is_empty());
        for name in names {
            let dir = |p: &Project| p.lake().join(layer).join(&name);
            let want = rt.block_on(rows(&dir(&local), &RUN_TIME_COLUMNS));
            let got = rt.block_on(rows(&dir(&remote), &RUN_TIME_COLUMNS));
            assert!(want.lines().count() > 4, "{layer}.{name} has rows");
            assert_eq!(
                got, want,
                "{layer}.{name}: cluster and local results differ"
            );
        }
    }
}

#[test]
fn an_unreachable_scheduler_exits_75_naming_its_url() {
    let (_local, remote) = demo_pair();
    // A port nothing listens on.
    let port = free_port_pair();
    let url = format!("df://127.0.0.1:{port}");
    use_cluster(&remote, &url);
    let args = SILVER_R1;
    let out = remote.smelter(&args);
    let text = out_text(&out);
    assert_eq!(code(&out), 75, "{text}");
    assert!(text.contains(&url), "the error names the scheduler: {text}");
    assert!(
        !remote.lake().join("silver/shipments/_delta_log").exists(),
        "nothing was written: {text}"
    );
}

/// Asserts that every table of `layer` in `got` holds the rows of the same table in `want`, and
/// that `got` has no table `want` lacks; with `all`, that it has every table of `want`.
fn assert_same_tables(want: &Project, got: &Project, layer: &str, all: bool) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (want_names, got_names) = (tables(want, layer), tables(got, layer));
    for name in &got_names {
        assert!(want_names.contains(name), "{layer}.{name} is unexpected");
    }
    if all {
        assert_eq!(got_names, want_names, "{layer} tables");
    }
    for name in got_names {
        let dir = |p: &Project| p.lake().join(layer).join(&name);
        if !dir(got).join("_delta_log").is_dir() {
            continue;
        }
        let expected = rt.block_on(rows(&dir(want), &RUN_TIME_COLUMNS));
        let actual = rt.block_on(rows(&dir(got), &RUN_TIME_COLUMNS));
        assert_eq!(actual, expected, "{layer}.{name} differs from local mode");
    }
}

#[test]
fn an_executor_killed_during_a_layer_leaves_no_wrong_rows_and_a_retry_completes() {
    let mut cluster = Cluster::start(2, 3);
    let (local, remote) = demo_pair();
    use_cluster(&remote, &cluster.url());
    // Ballista sometimes leaves a job whose tasks ran on the lost executor pending for good
    // (seen under a loaded machine): the job timeout bounds the wait, and the run exits 75.
    let toml = std::fs::read_to_string(remote.pipeline()).unwrap();
    std::fs::write(
        remote.pipeline(),
        toml.replace("[engine]\n", "[engine]\njob_timeout_seconds = 60\n"),
    )
    .unwrap();
    local.run_layer("silver", "r1", 0);
    let args = SILVER_R1;
    let mut run = remote
        .command(&args, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The log, read as it comes: the executor is killed once the first model's query has run on
    // the cluster, while the layer's other models still need it.
    let (first_query, ran) = std::sync::mpsc::channel();
    let stderr = run.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut log = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("Executed the model's query on the cluster") {
                let _ = first_query.send(());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    ran.recv_timeout(Duration::from_secs(120))
        .expect("a model's query ran on the cluster");
    let mut lost = cluster.executors.remove(0);
    lost.kill().unwrap();
    lost.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = run.kill();
            panic!("the run did not end within 300 s of losing an executor");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = reader.join().unwrap();
    let exit = status.code().unwrap_or(-1);
    eprintln!("exit {exit} after losing an executor");
    for line in text.lines().filter(|l| l.contains("ERROR")) {
        eprintln!("{line}");
    }
    match exit {
        0 => assert_same_tables(&local, &remote, "silver", true),
        75 => {
            assert!(
                text.contains(&format!("cluster error at {}", cluster.url())),
                "exit 75 names the cluster:\n{text}"
            );
            // The models committed before the failure are whole, the others absent.
            assert_same_tables(&local, &remote, "silver", false);
            remote.run_layer("silver", "r1", 0);
            assert_same_tables(&local, &remote, "silver", true);
        }
        other => panic!("exit {other} after losing an executor (want 0 or 75):\n{text}"),
    }
    // Whatever the lost executor wrote is committed once (the tables equal local mode's) or
    // deleted.
    for name in tables(&remote, "silver") {
        let files = staged_files(&remote.lake().join("silver").join(&name));
        assert!(
            files.unreferenced.is_empty(),
            "silver.{name}: staged files no commit took: {:?}",
            files.unreferenced
        );
    }
}

#[test]
fn mode_ballista_needs_a_scheduler_url_from_the_file_or_the_environment() {
    let p = Project::demo(0.02);
    let toml = std::fs::read_to_string(p.pipeline()).unwrap();
    std::fs::write(
        p.pipeline(),
        toml.replace("[engine]\n", "[engine]\nmode = \"ballista\"\n"),
    )
    .unwrap();
    let text = p.expect(&["validate", "{p}"], 2);
    assert!(
        text.contains("engine.scheduler") && text.contains("SMELTER_SCHEDULER"),
        "{text}"
    );
    let out = p.smelter_env(
        &["validate", "{p}"],
        &[("SMELTER_SCHEDULER", "127.0.0.1:50050")],
    );
    let text = out_text(&out);
    assert_eq!(code(&out), 2, "{text}");
    assert!(text.contains("df://host:port"), "{text}");
    let out = p.smelter_env(
        &["validate", "{p}"],
        &[("SMELTER_SCHEDULER", "df://127.0.0.1:50050")],
    );
    assert_eq!(code(&out), 0, "{}", out_text(&out));
    // The environment alone switches a local pipeline to the cluster, and names itself when
    // its value is wrong.
    let local = Project::demo(0.02);
    let out = local.smelter_env(
        &["validate", "{p}"],
        &[
            ("SMELTER_ENGINE_MODE", "ballista"),
            ("SMELTER_SCHEDULER", "127.0.0.1:50050"),
        ],
    );
    let text = out_text(&out);
    assert_eq!(code(&out), 2, "{text}");
    assert!(text.contains("SMELTER_SCHEDULER (environment)"), "{text}");
    let out = local.smelter_env(&["validate", "{p}"], &[("SMELTER_ENGINE_MODE", "spark")]);
    let text = out_text(&out);
    assert_eq!(code(&out), 2, "{text}");
    assert!(text.contains("SMELTER_ENGINE_MODE"), "{text}");
}

/// The TPC-H pipeline (SQL Server source, its own schema and types): extract and bronze locally,
/// silver and gold on the cluster; each gold mart equals the textbook query.
#[tokio::test(flavor = "multi_thread")]
async fn tpch_silver_and_gold_on_the_cluster_match_the_textbook_queries() {
    use crate::tpch::PASSWORD;
    let (generated, server) = crate::tpch::serve_tpch();
    let cluster = Cluster::start(2, 30);
    let p = Project::from_repo("tpch");
    let port = server.port.to_string();
    let env = [
        ("SMELTER_MSSQL_PORT", port.as_str()),
        ("SMELTER_MSSQL_ENCRYPT", "false"),
        ("SMELTER_MSSQL_PASSWORD", PASSWORD),
    ];
    for layer in ["extract", "bronze"] {
        let args = [
            "run",
            "{p}",
            "--layer",
            layer,
            "--logical-date",
            "1998-12-01",
            "--run-id",
            "tpch1",
        ];
        let out = p.smelter_env(&args, &env);
        assert_eq!(code(&out), 0, "{layer}:\n{}", out_text(&out));
    }
    use_cluster(&p, &cluster.url());
    for layer in ["silver", "gold"] {
        let text = p.run_layer(layer, "tpch1", 0);
        assert!(
            text.contains("Executed the model's query on the cluster"),
            "{layer} ran on the cluster:\n{text}"
        );
    }
    crate::tpch::assert_gold_matches_the_textbook_queries(&p, &generated).await;
}

/// Iceberg tables on the cluster: the gold rows equal those of a local run of the same data.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_on_iceberg_on_the_cluster_gives_the_local_gold_rows() {
    let cluster = Cluster::start(2, 30);
    let local = crate::iceberg::iceberg_demo(0.01);
    let remote = crate::iceberg::iceberg_demo(0.01);
    for p in [&local, &remote] {
        for layer in ["extract", "bronze"] {
            p.run_layer(layer, "r1", 0);
        }
    }
    use_cluster(&remote, &cluster.url());
    for layer in ["silver", "gold"] {
        local.run_layer(layer, "r1", 0);
        let text = remote.run_layer(layer, "r1", 0);
        assert!(
            text.contains("Executed the model's query on the cluster"),
            "{layer} ran on the cluster:\n{text}"
        );
    }
    for (id, _) in crate::iceberg::GOLD {
        let sql = "SELECT * FROM t";
        let want = crate::iceberg::iceberg_rows(&local.lake(), id, sql).await;
        let got = crate::iceberg::iceberg_rows(&remote.lake(), id, sql).await;
        assert!(want.lines().count() > 2, "{id} has rows");
        assert_eq!(got, want, "{id}: cluster and local results differ");
    }
}

/// A scheduler with no executor: the job waits for one until `job_timeout_seconds`, then the
/// run exits 75 naming the cluster, and nothing is written.
#[test]
fn a_job_no_executor_takes_exits_75_after_the_job_timeout() {
    let cluster = Cluster::start(0, 30);
    let (_local, remote) = demo_pair();
    use_cluster(&remote, &cluster.url());
    let toml = std::fs::read_to_string(remote.pipeline()).unwrap();
    std::fs::write(
        remote.pipeline(),
        toml.replace("[engine]\n", "[engine]\njob_timeout_seconds = 3\n"),
    )
    .unwrap();
    let out = remote.smelter(&CARRIERS_R1);
    let text = out_text(&out);
    assert_eq!(code(&out), 75, "{text}");
    assert!(
        text.contains(&format!("cluster error at {}", cluster.url()))
            && text.contains("job_timeout_seconds"),
        "{text}"
    );
    assert!(!remote.lake().join("silver/carriers/_delta_log").exists());
    // The job given up on is cancelled on the cluster, not left queued.
    cluster.assert_cancelled(&text);
}

impl Cluster {
    /// Checks that the run whose log is `run_log` cancelled a job and that the scheduler
    /// received the cancellation of that same job id (waiting up to 30 s for its log).
    fn assert_cancelled(&self, run_log: &str) {
        let line = run_log
            .lines()
            .find(|l| l.contains("Cancelled the cluster job."))
            .unwrap_or_else(|| panic!("the run cancelled its job:\n{run_log}"));
        let id = line
            .split("job_id=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("the line names the job: {line}"));
        let log = self._work.path().join("scheduler.log");
        let want = format!("Received cancellation request for job {id}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains(&want) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the scheduler's log has `{want}`:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// SIGTERM (how Airflow stops a task) while a model's job is on the cluster: the run exits 75,
/// writes nothing, and its job is cancelled on the cluster instead of left to run. The cluster
/// has no executor, so the job is certainly still pending when the signal arrives.
#[test]
fn a_stopped_run_cancels_its_job_on_the_cluster() {
    let cluster = Cluster::start(0, 30);
    let (_local, remote) = demo_pair();
    use_cluster(&remote, &cluster.url());
    let mut run = remote
        .command(&CARRIERS_R1, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The scheduler logs each job it accepts; the run is stopped once its job is queued there.
    let log = cluster._work.path().join("scheduler.log");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("queued with name")
    {
        assert!(
            Instant::now() < deadline && run.try_wait().unwrap().is_none(),
            "the scheduler accepted the run's job:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The client learns the job id from the scheduler's answer, just after the queueing.
    std::thread::sleep(Duration::from_secs(1));
    let rc = unsafe { libc::kill(run.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let out = run.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(75), "{text}");
    assert!(text.contains("SIGTERM"), "{text}");
    assert!(!remote.lake().join("silver/carriers/_delta_log").exists());
    cluster.assert_cancelled(&text);
}

#[test]
fn an_executor_refuses_a_work_dir_that_cannot_hold_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let work = file.join("work");
    let port = free_port_pair();
    let out = Command::new(env!("CARGO_BIN_EXE_smelter"))
        .args([
            "cluster",
            "executor",
            "--scheduler",
            &format!("127.0.0.1:{port}"),
            "--bind",
            &format!("127.0.0.1:{}", free_port_pair()),
            "--work-dir",
            work.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = out_text(&out);
    assert_eq!(code(&out), 2, "{text}");
    assert!(text.contains("--work-dir"), "{text}");
}
