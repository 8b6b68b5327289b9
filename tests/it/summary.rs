//! `smelter run --summary-json PATH`: one JSON document per invocation, for Airflow's XCom,
//! written on success and on failure, and consistent with the run log and the files on disk.

use serde_json::Value;

use crate::support::{code, stderr, Project, ONE_TABLE};

/// Runs `smelter run {p} <args> --summary-json <file>`; returns the exit code, the summary and
/// stderr.
fn run_with_summary(p: &Project, args: &[&str]) -> (i32, Value, String) {
    run_with_summary_env(p, args, &[])
}

fn run_with_summary_env(p: &Project, args: &[&str], env: &[(&str, &str)]) -> (i32, Value, String) {
    let file = p.dir.path().join("out/summary.json");
    let _ = std::fs::remove_file(&file);
    let mut all = vec!["run", "{p}"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--summary-json", file.to_str().unwrap()]);
    let out = p.smelter_env(&all, env);
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("no summary at {}: {e}\n{}", file.display(), stderr(&out)));
    let summary: Value = serde_json::from_str(&text).expect("the summary is JSON");
    for (k, v) in env {
        if k.ends_with("_TOKEN") {
            assert!(!text.contains(v), "secret {k} in the summary:\n{text}");
        }
    }
    (code(&out), summary, stderr(&out))
}

fn steps<'a>(s: &'a Value, layer: &str) -> Vec<&'a Value> {
    s["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|st| st["layer"] == layer)
        .collect()
}

#[test]
fn a_demo_run_summarises_every_step_with_rows_versions_quality_and_files() {
    let p = Project::demo(0.01);
    let (exit, s, err) =
        run_with_summary(&p, &["--logical-date", "2026-11-01", "--run-id", "sum1"]);
    assert_eq!(exit, 0, "{err}");
    assert_eq!(s["schema_version"], 1);
    assert_eq!(s["pipeline"], "demo");
    assert_eq!(s["run_id"], "sum1");
    assert_eq!(s["logical_date"], "2026-11-01");
    assert_eq!(s["exit_code"], 0);
    assert_eq!(s["status"], "success");
    assert!(s["error"].is_null(), "{s}");
    assert_eq!(
        s["layers"],
        serde_json::json!(["extract", "bronze", "silver", "gold"])
    );
    assert_eq!(s["attempt"].as_str().unwrap().len(), 36, "a UUID: {s}");
    assert!(s["duration_ms"].as_u64().is_some());

    // One step per source table in extract and bronze, one per model in silver and gold.
    assert_eq!(steps(&s, "extract").len(), 6, "{s}");
    assert_eq!(steps(&s, "bronze").len(), 6, "{s}");
    assert_eq!(steps(&s, "silver").len(), 8, "{s}");
    assert_eq!(steps(&s, "gold").len(), 3, "{s}");
    let total: u64 = s["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| st["rows_inserted"].as_u64().unwrap())
        .sum();
    assert!(total > 0);
    assert_eq!(s["rows_inserted"].as_u64().unwrap(), total);
    for st in s["steps"].as_array().unwrap() {
        assert_eq!(st["status"], "success", "{st}");
        assert!(st["duration_ms"].as_u64().is_some(), "{st}");
        if st["layer"] != "extract" {
            // A new table: its first commit is version 0.
            assert!(st["version"].as_i64().is_some(), "no version: {st}");
        }
    }

    // Quality results per rule, as declared in the model headers.
    let shipments = steps(&s, "silver")
        .into_iter()
        .find(|st| st["target"] == "silver.shipments")
        .unwrap();
    assert_eq!(shipments["materialized"], "merge", "{shipments}");
    let rules = shipments["quality"].as_array().unwrap();
    assert_eq!(rules.len(), 5, "{shipments}");
    let not_null = rules
        .iter()
        .find(|r| r["name"].as_str().unwrap().contains("shipment_id") && r["action"] == "fail")
        .unwrap_or_else(|| panic!("{shipments}"));
    assert_eq!(not_null["failed"], 0);
    assert!(rules.iter().all(|r| r["failed"].as_u64().is_some()));
    let events = steps(&s, "silver")
        .into_iter()
        .find(|st| st["target"] == "silver.shipment_events")
        .unwrap();
    let q = &events["quality"][0];
    assert_eq!(q["action"], "quarantine", "{events}");
    assert_eq!(events["quarantined"], q["failed"], "{events}");
    assert!(s["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|st| st["drift"].is_array()));

    // The report and lineage files it names exist.
    let reports = s["reports"].as_array().unwrap();
    assert_eq!(
        reports.len(),
        3,
        "bronze, silver and gold are profiled: {s}"
    );
    for r in reports {
        let url = url::Url::parse(r["url"].as_str().unwrap()).unwrap();
        let path = url.to_file_path().unwrap();
        assert!(path.is_file(), "{}", path.display());
        assert!(path.ends_with(format!(
            "_smelter/reports/sum1/{}.html",
            r["layer"].as_str().unwrap()
        )));
    }
    let lineage = s["lineage"].as_array().unwrap();
    assert_eq!(lineage.len(), 4, "{s}");
    for l in lineage {
        for kind in ["datahub", "openlineage"] {
            let path = std::path::PathBuf::from(l[kind].as_str().unwrap());
            assert!(path.is_file(), "{}", path.display());
        }
    }

    // A retry of the same run id writes nothing: the steps say so and count no rows.
    let (exit, s, err) = run_with_summary(
        &p,
        &[
            "--layer",
            "bronze",
            "--logical-date",
            "2026-11-01",
            "--run-id",
            "sum1",
        ],
    );
    assert_eq!(exit, 0, "{err}");
    assert_eq!(s["layers"], serde_json::json!(["bronze"]));
    assert!(
        steps(&s, "bronze")
            .iter()
            .all(|st| st["status"] == "already_committed"),
        "{s}"
    );
    assert_eq!(s["rows_inserted"], 0);
}

#[test]
fn failed_runs_still_write_the_summary_with_the_error() {
    // A data-quality failure: exit 3, the failing model's step, the error kind and message.
    let p = Project::custom(
        ONE_TABLE,
        &[(
            "silver/bad.sql",
            "-- expect: id not_null fail\nSELECT * FROM (VALUES (1), (NULL)) AS t(id)\n",
        )],
    );
    let (exit, s, err) = run_with_summary(&p, &["--layer", "silver", "--run-id", "f1"]);
    assert_eq!(exit, 3, "{err}");
    assert_eq!(s["exit_code"], 3);
    assert_eq!(s["status"], "failed");
    assert_eq!(s["pipeline"], "t");
    assert_eq!(s["error"]["kind"], "quality", "{s}");
    assert_eq!(s["error"]["retryable"], false);
    assert!(
        s["error"]["message"].as_str().unwrap().contains("not_null"),
        "{s}"
    );
    let failed = steps(&s, "silver");
    assert_eq!(failed.len(), 1, "{s}");
    assert_eq!(failed[0]["target"], "silver.bad");
    assert_eq!(failed[0]["status"], "failed");
    assert_eq!(failed[0]["exit_code"], 3);
    assert_eq!(failed[0]["error_kind"], "quality");
    // The rules' results are kept although nothing was written.
    assert_eq!(
        failed[0]["quality"],
        serde_json::json!([{"name": "id not_null", "action": "fail", "failed": 1}]),
        "{s}"
    );
    assert!(!p.lake().join("silver/bad/_delta_log").exists());

    // An error quoting a secret (here a literal the SQL fails on) is scrubbed in the summary.
    let secret = "summary-s3cret-4711";
    std::fs::write(
        p.dir.path().join("sql/t/silver/bad.sql"),
        format!("SELECT CAST('{secret}' AS INT) AS id\n"),
    )
    .unwrap();
    let (exit, s, err) = run_with_summary_env(
        &p,
        &["--layer", "silver", "--run-id", "f0"],
        &[("SUMMARY_TEST_TOKEN", secret)],
    );
    assert_eq!(exit, 2, "{err}");
    assert!(!err.contains(secret), "{err}");
    assert!(
        s["error"]["message"].as_str().unwrap().contains("***"),
        "{s}"
    );

    // Nothing to do: exit 99, status skipped.
    let (exit, s, err) = run_with_summary(&p, &["--layer", "bronze", "--run-id", "none"]);
    assert_eq!(exit, 99, "{err}");
    assert_eq!(s["status"], "skipped");
    assert_eq!(s["error"]["kind"], "nothing_to_do", "{s}");
    assert_eq!(s["steps"], serde_json::json!([]));

    // A pipeline file that does not load: exit 2; the pipeline is named by the file.
    std::fs::write(
        p.pipeline(),
        ONE_TABLE.replace("[storage]", "[storage]\nbucket = \"x\""),
    )
    .unwrap();
    let (exit, s, err) = run_with_summary(&p, &["--layer", "silver", "--run-id", "f2"]);
    assert_eq!(exit, 2, "{err}");
    assert_eq!(s["exit_code"], 2);
    assert_eq!(s["pipeline"], "t");
    assert!(s["attempt"].is_null());
    assert!(
        s["error"]["message"].as_str().unwrap().contains("bucket"),
        "{s}"
    );

    // A summary that cannot be written fails a successful run (exit 2, not writable).
    let blocker = p.dir.path().join("blocker");
    std::fs::write(&blocker, "a file, not a directory").unwrap();
    std::fs::write(p.pipeline(), ONE_TABLE).unwrap();
    std::fs::write(
        p.dir.path().join("sql/t/silver/bad.sql"),
        "SELECT 1 AS id\n",
    )
    .unwrap();
    let out = p.smelter(&[
        "run",
        "{p}",
        "--layer",
        "silver",
        "--run-id",
        "f3",
        "--summary-json",
        blocker.join("summary.json").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("--summary-json"), "{}", stderr(&out));
}
