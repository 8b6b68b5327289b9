//! The run log (`_smelter/runs`) tells the truth per attempt: the steps that committed before a
//! failure, the failed step with its exit code and message, and on a retry of the same run id
//! what the table holds from that run id (read from the commit that carries it), not the retry's
//! no-op.

use crate::support::{code, stderr, Project, ONE_TABLE};

const EVENTS: &str = "-- materialized: append
SELECT shipment_id, status, _run_id AS run_id FROM bronze.shipments WHERE _run_id = {{ run_id }}";

/// Data-dependent: the divisor counts no row, so the division fails on the data (exit 2).
const BAD: &str = "-- materialized: table
SELECT status, SUM(shipment_id) / COUNT(CASE WHEN false THEN 1 END) AS ratio
FROM silver.a_events GROUP BY status";

const FIXED: &str = "-- materialized: table
SELECT status, COUNT(*) AS shipments FROM silver.a_events GROUP BY status";

/// One run-log row: (attempt, layer, target, status, rows, exit_code, message).
type Row = (String, String, String, String, i64, Option<i32>, String);

async fn run_log(p: &Project, run_id: &str) -> Vec<Row> {
    let batches = p
        .query(
            &[("r", "_smelter/runs")],
            &format!(
                "SELECT attempt, layer, target, status, rows, exit_code, COALESCE(message, '') AS m \
                 FROM r WHERE run_id = '{run_id}' ORDER BY started_at, target"
            ),
        )
        .await;
    let mut out = Vec::new();
    for b in &batches {
        use arrow::array::{Array, AsArray};
        use arrow::datatypes::{Int32Type, Int64Type};
        let s = |i: usize, r: usize| {
            let c = arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8).unwrap();
            c.as_string::<i32>().value(r).to_string()
        };
        for r in 0..b.num_rows() {
            let exit = b.column(5).as_primitive::<Int32Type>();
            out.push((
                s(0, r),
                s(1, r),
                s(2, r),
                s(3, r),
                b.column(4).as_primitive::<Int64Type>().value(r),
                (!exit.is_null(r)).then(|| exit.value(r)),
                s(6, r),
            ));
        }
    }
    out
}

fn find<'a>(rows: &'a [Row], attempt: &str, target: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.0 == attempt && r.2 == target)
        .unwrap_or_else(|| panic!("no record of {target} in attempt {attempt}: {rows:#?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_attempt_and_its_retry_are_both_recorded_truthfully() {
    let p = Project::custom(
        ONE_TABLE,
        &[("silver/a_events.sql", EVENTS), ("silver/b_ratio.sql", BAD)],
    );
    let run = [
        "run",
        "{p}",
        "--logical-date",
        "2026-11-01",
        "--run-id",
        "r1",
    ];
    let out = p.smelter(&run);
    assert_eq!(code(&out), 2, "{}", stderr(&out));

    // Attempt 1: extract, bronze and the append model committed; the ratio model failed.
    let log = run_log(&p, "r1").await;
    let first = log
        .iter()
        .find(|r| r.3 == "failed")
        .expect("a failed record")
        .0
        .clone();
    let failed = find(&log, &first, "silver.b_ratio");
    assert_eq!(failed.3, "failed");
    assert_eq!(failed.5, Some(2), "{failed:?}");
    assert!(
        failed.6.contains("b_ratio.sql"),
        "names the file: {failed:?}"
    );
    assert!(
        failed.6.to_lowercase().contains("divide by zero"),
        "{failed:?}"
    );
    let events = find(&log, &first, "silver.a_events");
    assert_eq!(events.3, "success");
    let table_rows = p
        .scalar(&[("e", "silver/a_events")], "SELECT COUNT(*) FROM e")
        .await;
    assert!(table_rows > 0);
    assert_eq!(events.4, table_rows);
    assert_eq!(find(&log, &first, "bronze.shipments").3, "success");
    assert!(
        log.iter().all(|r| r.0 == first),
        "one attempt so far: {log:#?}"
    );

    // The analyst fixes the model; Airflow retries the same run id.
    std::fs::write(p.dir.path().join("sql/t/silver/b_ratio.sql"), FIXED).unwrap();
    let retry = ["run", "{p}", "--layer", "silver", "--run-id", "r1"];
    p.ok(&retry);
    let log = run_log(&p, "r1").await;
    let second = log
        .iter()
        .find(|r| r.0 != first)
        .expect("records of the retry")
        .0
        .clone();
    // The append model was committed by attempt 1: the retry writes nothing and reports what
    // the table holds from this run id, with the commit's version and attempt.
    let events = find(&log, &second, "silver.a_events");
    assert_eq!(events.3, "already_committed", "{events:?}");
    assert_eq!(events.4, table_rows, "{events:?}");
    assert!(events.6.contains(&first), "{events:?}");
    assert!(events.6.contains("version 0"), "{events:?}");
    assert_eq!(
        p.scalar(&[("e", "silver/a_events")], "SELECT COUNT(*) FROM e")
            .await,
        table_rows,
        "nothing appended twice"
    );
    let ratio = find(&log, &second, "silver.b_ratio");
    assert_eq!((ratio.3.as_str(), ratio.5), ("success", None));
    // Attempt 1's records are kept as they were.
    assert_eq!(find(&log, &first, "silver.b_ratio").3, "failed");

    // A third attempt of bronze alone: already committed, with the rows of attempt 1.
    let bronze_rows = p
        .scalar(&[("b", "bronze/shipments")], "SELECT COUNT(*) FROM b")
        .await;
    let out = p.ok(&["run", "{p}", "--layer", "bronze", "--run-id", "r1"]);
    assert!(out.contains("already_committed"), "{out}");
    let log = run_log(&p, "r1").await;
    let third: Vec<&Row> = log
        .iter()
        .filter(|r| r.0 != first && r.0 != second)
        .collect();
    assert_eq!(third.len(), 1, "{log:#?}");
    assert_eq!(
        (third[0].2.as_str(), third[0].3.as_str(), third[0].4),
        ("bronze.shipments", "already_committed", bronze_rows)
    );
}
