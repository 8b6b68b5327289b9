//! End-to-end runs on the sample source: every layer, idempotent reruns, incremental days, and
//! each materialization checked against values computed independently from bronze.

use crate::support::{code, stderr, Project, ONE_TABLE};

#[tokio::test(flavor = "multi_thread")]
async fn demo_runs_all_layers_and_gold_matches_silver() {
    let p = Project::demo(0.002);
    let out = p.ok(&[
        "run",
        "{p}",
        "--logical-date",
        "2026-10-31",
        "--run-id",
        "r1",
    ]);
    assert!(out.contains("gold.on_time_delivery"), "{out}");
    // Silver shipments hold exactly one row per distinct bronze key.
    let distinct = p
        .scalar(
            &[("b", "bronze/shipments")],
            "SELECT COUNT(DISTINCT shipment_id) FROM b",
        )
        .await;
    let silver = p
        .scalar(&[("s", "silver/shipments")], "SELECT COUNT(*) FROM s")
        .await;
    assert_eq!(distinct, silver);
    let bronze = p
        .scalar(&[("b", "bronze/shipments")], "SELECT COUNT(*) FROM b")
        .await;
    assert!(
        bronze > silver,
        "the sample has duplicates and late updates: {bronze} vs {silver}"
    );
    // Gold totals reconcile with silver.
    let gold = p
        .scalar(
            &[("g", "gold/daily_shipments_by_carrier")],
            "SELECT SUM(shipments) FROM g",
        )
        .await;
    assert_eq!(gold, silver);
    // Cleaning happened: no lower-case or padded statuses, no negative weights.
    let dirty = p
        .scalar(
            &[("s", "silver/shipments")],
            "SELECT COUNT(*) FROM s WHERE status <> UPPER(TRIM(status)) OR weight_kg < 0",
        )
        .await;
    assert_eq!(dirty, 0);
    let dirty_bronze = p
        .scalar(
            &[("b", "bronze/shipments")],
            "SELECT COUNT(*) FROM b WHERE status <> UPPER(TRIM(status)) OR weight_kg < 0",
        )
        .await;
    assert!(dirty_bronze > 0, "the generator must produce dirt");
}

#[tokio::test(flavor = "multi_thread")]
async fn bronze_rerun_with_same_run_id_does_not_duplicate() {
    let p = Project::demo(0.002);
    p.ok(&[
        "run",
        "{p}",
        "--layer",
        "extract",
        "--logical-date",
        "2026-10-31",
        "--run-id",
        "r1",
    ]);
    p.ok(&[
        "run",
        "{p}",
        "--layer",
        "bronze",
        "--logical-date",
        "2026-10-31",
        "--run-id",
        "r1",
    ]);
    let first = p
        .scalar(&[("b", "bronze/shipments")], "SELECT COUNT(*) FROM b")
        .await;
    let out = p.ok(&[
        "run",
        "{p}",
        "--layer",
        "bronze",
        "--logical-date",
        "2026-10-31",
        "--run-id",
        "r1",
    ]);
    assert!(out.contains("already_committed"), "{out}");
    let second = p
        .scalar(&[("b", "bronze/shipments")], "SELECT COUNT(*) FROM b")
        .await;
    assert_eq!(first, second);
    // Bronze for a run id that never extracted has nothing to do (exit 99).
    let out = p.smelter(&["run", "{p}", "--layer", "bronze", "--run-id", "never"]);
    assert_eq!(code(&out), 99, "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn incremental_day_two_merges_late_updates() {
    let p = Project::demo(0.002);
    p.ok(&[
        "run",
        "{p}",
        "--logical-date",
        "2026-10-31",
        "--run-id",
        "d0",
    ]);
    let before = p
        .scalar(&[("s", "silver/shipments")], "SELECT COUNT(*) FROM s")
        .await;
    let in_transit = p
        .scalar(
            &[("s", "silver/shipments")],
            "SELECT COUNT(*) FROM s WHERE status <> 'DELIVERED' AND status <> 'CANCELLED'",
        )
        .await;
    assert!(in_transit > 0);
    let out = p.ok(&[
        "run",
        "{p}",
        "--logical-date",
        "2026-11-02",
        "--run-id",
        "d2",
    ]);
    // Day-2 bronze holds only the changed and new versions of this run.
    let d2_rows = p
        .scalar(
            &[("b", "bronze/shipments")],
            "SELECT COUNT(*) FROM b WHERE _run_id = 'd2'",
        )
        .await;
    let d0_rows = p
        .scalar(
            &[("b", "bronze/shipments")],
            "SELECT COUNT(*) FROM b WHERE _run_id = 'd0'",
        )
        .await;
    assert!(
        d2_rows > 0 && d2_rows < d0_rows,
        "{d2_rows} vs {d0_rows}\n{out}"
    );
    let after = p
        .scalar(&[("s", "silver/shipments")], "SELECT COUNT(*) FROM s")
        .await;
    let distinct = p
        .scalar(
            &[("b", "bronze/shipments")],
            "SELECT COUNT(DISTINCT shipment_id) FROM b",
        )
        .await;
    assert_eq!(after, distinct, "merge keeps one row per key");
    assert!(after > before, "new shipments arrived");
    // Every silver row carries the latest bronze version of its key.
    let stale = p
        .scalar(
            &[("s", "silver/shipments"), ("b", "bronze/shipments")],
            "SELECT COUNT(*) FROM s JOIN (SELECT shipment_id, MAX(modified_at) AS m FROM b GROUP BY shipment_id) l \
             ON s.shipment_id = l.shipment_id WHERE s.modified_at <> l.m",
        )
        .await;
    assert_eq!(stale, 0);
    // Events are appended once per run, and a rerun of silver does not append again.
    let events = p
        .scalar(&[("e", "silver/shipment_events")], "SELECT COUNT(*) FROM e")
        .await;
    p.ok(&[
        "run",
        "{p}",
        "--layer",
        "silver",
        "--logical-date",
        "2026-11-02",
        "--run-id",
        "d2",
    ]);
    let again = p
        .scalar(&[("e", "silver/shipment_events")], "SELECT COUNT(*) FROM e")
        .await;
    assert_eq!(events, again);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_materialization_writes_what_it_says() {
    let p = Project::custom(
        ONE_TABLE,
        &[
            (
                "silver/latest.sql",
                "-- materialized: merge\n-- unique_key: shipment_id\n\
                 SELECT shipment_id, status, modified_at FROM (\n\
                   SELECT shipment_id, UPPER(TRIM(status)) AS status, modified_at,\n\
                   ROW_NUMBER() OVER (PARTITION BY shipment_id ORDER BY modified_at DESC) AS rn\n\
                   FROM bronze.shipments WHERE _run_id = {{ run_id }}) x WHERE rn = 1",
            ),
            (
                "silver/log.sql",
                "-- materialized: append\nSELECT {{ run_id }} AS run_id, COUNT(*) AS n FROM bronze.shipments WHERE _run_id = {{ run_id }}",
            ),
            (
                "gold/status_counts.sql",
                "-- materialized: table\nSELECT status, COUNT(*) AS n FROM silver.latest GROUP BY status",
            ),
        ],
    );
    p.ok(&[
        "run",
        "{p}",
        "--logical-date",
        "2025-12-31",
        "--run-id",
        "a",
    ]);
    let delivered_before = p
        .scalar(
            &[("g", "gold/status_counts")],
            "SELECT n FROM g WHERE status = 'DELIVERED'",
        )
        .await;
    p.ok(&[
        "run",
        "{p}",
        "--logical-date",
        "2026-01-05",
        "--run-id",
        "b",
    ]);
    // append: one row per run.
    assert_eq!(
        p.scalar(&[("l", "silver/log")], "SELECT COUNT(*) FROM l")
            .await,
        2
    );
    // merge: late updates (deliveries) replaced the older versions.
    let delivered_after = p
        .scalar(
            &[("g", "gold/status_counts")],
            "SELECT n FROM g WHERE status = 'DELIVERED'",
        )
        .await;
    assert!(delivered_after > delivered_before);
    let keys = p
        .scalar(
            &[("b", "bronze/shipments")],
            "SELECT COUNT(DISTINCT shipment_id) FROM b",
        )
        .await;
    assert_eq!(
        p.scalar(&[("s", "silver/latest")], "SELECT COUNT(*) FROM s")
            .await,
        keys
    );
    // table: overwritten, so gold totals equal silver rows (not accumulated).
    assert_eq!(
        p.scalar(&[("g", "gold/status_counts")], "SELECT SUM(n) FROM g")
            .await,
        keys
    );
    // full refresh rebuilds the merge model from the selected run only.
    p.ok(&[
        "run",
        "{p}",
        "--layer",
        "silver",
        "--models",
        "latest",
        "--run-id",
        "b",
        "--full-refresh",
    ]);
    let b_keys = p
        .scalar(
            &[("b", "bronze/shipments")],
            "SELECT COUNT(DISTINCT shipment_id) FROM b WHERE _run_id = 'b'",
        )
        .await;
    assert_eq!(
        p.scalar(&[("s", "silver/latest")], "SELECT COUNT(*) FROM s")
            .await,
        b_keys
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn merge_refuses_duplicate_keys_with_exit_3() {
    let p = Project::custom(
        ONE_TABLE,
        &[(
            "silver/bad.sql",
            "-- materialized: merge\n-- unique_key: shipment_id\nSELECT shipment_id, status FROM bronze.shipments",
        )],
    );
    p.ok(&[
        "run",
        "{p}",
        "--layer",
        "extract",
        "--logical-date",
        "2025-12-31",
        "--run-id",
        "a",
    ]);
    p.ok(&[
        "run",
        "{p}",
        "--layer",
        "bronze",
        "--logical-date",
        "2025-12-31",
        "--run-id",
        "a",
    ]);
    let out = p.smelter(&["run", "{p}", "--layer", "silver", "--run-id", "a"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("occur more than once"),
        "{}",
        stderr(&out)
    );
    assert!(
        !p.lake().join("silver/bad/_delta_log").exists()
            || std::fs::read_dir(p.lake().join("silver/bad/_delta_log"))
                .unwrap()
                .count()
                == 0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_run_fields() {
    let p = Project::demo(0.002);
    let out = p.smelter(&[
        "run",
        "{p}",
        "--layer",
        "extract",
        "--run-id",
        "j1",
        "--log-format",
        "json",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let line = stderr(&out)
        .lines()
        .find(|l| l.contains("Landed table."))
        .expect("a landed log line")
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["run_id"], "j1");
    assert_eq!(v["layer"], "extract");
    assert!(
        v["rows"].as_u64().is_some() && v["duration_ms"].as_u64().is_some(),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn expectations_warn_drop_quarantine_and_fail() {
    let p = Project::custom(
        ONE_TABLE,
        &[
            (
                "silver/checked.sql",
                "-- materialized: table\n\
                 -- expect: weight_kg not_null quarantine; weight_kg >= 0 drop; status = UPPER(status) warn; row_count >= 1 fail\n\
                 SELECT shipment_id, weight_kg, status FROM bronze.shipments WHERE _run_id = {{ run_id }}",
            ),
            (
                "gold/strict.sql",
                "-- materialized: table\n-- expect: shipment_id < 0 fail\nSELECT shipment_id FROM silver.checked",
            ),
        ],
    );
    p.ok(&[
        "run",
        "{p}",
        "--layer",
        "extract",
        "--logical-date",
        "2025-12-31",
        "--run-id",
        "q",
    ]);
    p.ok(&[
        "run",
        "{p}",
        "--layer",
        "bronze",
        "--logical-date",
        "2025-12-31",
        "--run-id",
        "q",
    ]);
    p.ok(&[
        "run",
        "{p}",
        "--layer",
        "silver",
        "--logical-date",
        "2025-12-31",
        "--run-id",
        "q",
    ]);
    let b = &[("b", "bronze/shipments")];
    let total = p.scalar(b, "SELECT COUNT(*) FROM b").await;
    let nulls = p
        .scalar(b, "SELECT COUNT(*) FROM b WHERE weight_kg IS NULL")
        .await;
    let negative = p
        .scalar(b, "SELECT COUNT(*) FROM b WHERE weight_kg < 0")
        .await;
    assert!(
        nulls > 0 && negative > 0,
        "the generator makes NULL and negative weights"
    );
    let q = &[("q", "silver/_quarantine_checked")];
    assert_eq!(p.scalar(q, "SELECT COUNT(*) FROM q").await, nulls);
    assert_eq!(
        p.scalar(
            q,
            "SELECT COUNT(*) FROM q WHERE _failed_rules = 'weight_kg not_null' AND _run_id = 'q'"
        )
        .await,
        nulls
    );
    let s = &[("s", "silver/checked")];
    assert_eq!(
        p.scalar(s, "SELECT COUNT(*) FROM s").await,
        total - nulls - negative
    );
    // Warn keeps the rows: lower-case statuses are still there.
    assert!(
        p.scalar(s, "SELECT COUNT(*) FROM s WHERE status <> UPPER(status)")
            .await
            > 0
    );
    // Results per rule are in the run log.
    let runs = p
        .query(
            &[("r", "_smelter/runs")],
            "SELECT details FROM r WHERE target = 'silver.checked'",
        )
        .await;
    let details = arrow::util::pretty::pretty_format_batches(&runs)
        .unwrap()
        .to_string();
    assert!(
        details.contains("weight_kg >= 0") && details.contains(&format!("\"failed\":{negative}")),
        "{details}"
    );
    // Fail: exit 3 and nothing written for the model.
    let out = p.smelter(&["run", "{p}", "--layer", "gold", "--run-id", "q"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("shipment_id < 0"), "{}", stderr(&out));
    assert!(!p
        .lake()
        .join("gold/strict/_delta_log/00000000000000000000.json")
        .exists());
}
