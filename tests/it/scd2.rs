//! `materialized: scd2` end to end: the demo's customer history after day 1, day 2 and a re-run
//! of day 1 (current rows equal `silver.customers`; a point-in-time query gives day 1's
//! customers), and the types of the validity columns on a schema of this test's own.

use arrow::datatypes::{DataType, TimeUnit};

use crate::support::{files_pipeline, Project};

/// Every row of `sql` over `tables` as text (`|`-separated values, NULL as `∅`), sorted.
async fn rows(p: &Project, tables: &[(&str, &str)], sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    for b in p.query(tables, sql).await {
        for i in 0..b.num_rows() {
            let values: Vec<String> = b
                .columns()
                .iter()
                .map(|c| {
                    if c.is_null(i) {
                        "∅".to_string()
                    } else {
                        arrow::util::display::array_value_to_string(c, i).unwrap()
                    }
                })
                .collect();
            out.push(values.join("|"));
        }
    }
    out.sort();
    out
}

const CUSTOMER: &str =
    "customer_id, customer_name, email, country, region, segment, created_at, modified_at";

/// The question, "what did customer X look like on date D", on the demo: after day 1,
/// day 2 (customers changed) and day 1 again (an Airflow clear of an older run), the history
/// has exactly one current row per customer, equal to `silver.customers`, and the versions
/// valid at the last change day 1 saw are day 1's customers.
#[tokio::test(flavor = "multi_thread")]
async fn demo_customer_history_answers_point_in_time_questions() {
    let p = Project::demo(0.01);
    let day = |date: &str, id: &str| {
        p.ok(&["run", "{p}", "--logical-date", date, "--run-id", id]);
    };
    let silver = [("s", "silver/customers")];
    let both = [("s", "silver/customers"), ("h", "silver/customers_history")];
    day("2026-11-01", "day1");
    let day1 = rows(&p, &silver, &format!("SELECT {CUSTOMER} FROM s")).await;
    let seen = rows(
        &p,
        &silver,
        "SELECT CAST(MAX(modified_at) AS VARCHAR) FROM s",
    )
    .await;
    day("2026-11-02", "day2");
    day("2026-11-01", "day1");

    let now = rows(&p, &both, &format!("SELECT {CUSTOMER} FROM s")).await;
    assert_ne!(
        now, day1,
        "day 2 changed no customer: the test would prove nothing"
    );
    let current = rows(
        &p,
        &both,
        &format!("SELECT {CUSTOMER} FROM h WHERE is_current"),
    )
    .await;
    assert_eq!(current, now, "the current versions are silver.customers");
    let closed = rows(&p, &both, "SELECT _scd_id FROM h WHERE NOT is_current").await;
    assert!(!closed.is_empty(), "no customer has an older version");

    // As of the last change day 1 had seen: exactly day 1's customers.
    let as_of = rows(
        &p,
        &both,
        &format!(
            "SELECT {CUSTOMER} FROM h WHERE valid_from <= TIMESTAMP '{at}' \
             AND (valid_to IS NULL OR valid_to > TIMESTAMP '{at}')",
            at = seen[0]
        ),
    )
    .await;
    assert_eq!(as_of, day1);
}

/// The validity columns keep the `sequence_by` column's type exactly (a timestamp without time
/// zone stays one, a date stays a date); the check strategy, which has no such column, starts
/// versions at the run's start as a UTC timestamp.
#[tokio::test(flavor = "multi_thread")]
async fn scd2_validity_columns_have_the_type_of_the_version_column() {
    let history = |strategy: &str| {
        format!(
            "-- materialized: scd2\n-- unique_key: patient_id\n{strategy}\n\
             SELECT patient_id, ward, admitted_at, admitted_on FROM bronze.stays\n"
        )
    };
    let p = Project::custom(
        &files_pipeline("stays", "patient_id"),
        &[
            (
                "silver/by_time.sql",
                &history("-- sequence_by: admitted_at"),
            ),
            ("silver/by_day.sql", &history("-- sequence_by: admitted_on")),
            // The check strategy takes one row per key.
            (
                "silver/by_ward.sql",
                &history("-- check_cols: ward").replace(
                    "FROM bronze.stays",
                    "FROM bronze.stays WHERE admitted_on < DATE '2026-11-02'",
                ),
            ),
        ],
    );
    let dir = p.dir.path().join("incoming/stays");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("a.csv"),
        "patient_id,ward,admitted_at,admitted_on\n\
         1,north,2026-11-01T08:00:00,2026-11-01\n\
         2,south,2026-11-01T09:30:00.250,2026-11-01\n\
         1,east,2026-11-03T10:00:00,2026-11-03\n",
    )
    .unwrap();
    p.expect(&["source", "sync", "{p}"], 0);
    p.run_layer("all", "r1", 0);
    for (table, version_column, versions) in [
        ("by_time", Some("admitted_at"), 3),
        ("by_day", Some("admitted_on"), 3),
        ("by_ward", None, 2),
    ] {
        let batches = p
            .query(&[("h", &format!("silver/{table}"))], "SELECT * FROM h")
            .await;
        let schema = batches[0].schema();
        let of = |c: &str| schema.field_with_name(c).unwrap().data_type().clone();
        let want = match version_column {
            Some(c) => of(c),
            None => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        };
        assert_eq!(of("valid_from"), want, "{table}");
        assert_eq!(of("valid_to"), want, "{table}");
        let n: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(n, versions, "{table}");
    }
    // The sequence column's values are the interval bounds, unconverted.
    let bounds = rows(
        &p,
        &[("h", "silver/by_time")],
        "SELECT patient_id, CAST(valid_from AS VARCHAR), CAST(valid_to AS VARCHAR) FROM h",
    )
    .await;
    assert_eq!(
        bounds,
        vec![
            "1|2026-11-01T08:00:00|2026-11-03T10:00:00",
            "1|2026-11-03T10:00:00|∅",
            "2|2026-11-01T09:30:00.250|∅",
        ]
    );
}
