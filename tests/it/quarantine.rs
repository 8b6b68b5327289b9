//! Rows that break their declared types (issue 13 item 4, issue 12 item 4): with
//! `on_error = "fail"` the run stops with exit 3 (a value that does not fit its declared type) or
//! 2 (a files-source row that does not parse), naming the table, column, declared type, value and
//! file; with `on_error = "quarantine"` the good rows load, the bad ones land in
//! `bronze._quarantine_<table>` with the reason, column, file and line, the run exits 0, and a
//! retry of the same run id adds nothing. No case may exit 1.
//!
//! The sample source only generates valid values, so the demo cases put a decimal with 18 integer
//! digits into `declared_value` (declared `decimal(19,4)`) in the landed Parquet file between
//! extract and bronze, as a faulty extractor would. The files cases use their own CSV and contract.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Decimal128Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

use crate::support::{code, stderr, Project, ONE_TABLE};

/// 10^17 in `decimal(19,4)`: 18 integer digits, 3 more than the 15 the type allows.
const TOO_WIDE: i128 = 10i128.pow(17) * 10_000;

fn run(p: &Project, layer: &str, run_id: &str) -> std::process::Output {
    let out = p.smelter(&[
        "run",
        "{p}",
        "--layer",
        layer,
        "--logical-date",
        "2026-11-30",
        "--run-id",
        run_id,
    ]);
    assert_ne!(code(&out), 1, "exit 1 (a bug):\n{}", stderr(&out));
    out
}

fn ok(p: &Project, layer: &str, run_id: &str) -> String {
    let out = run(p, layer, run_id);
    assert_eq!(code(&out), 0, "{layer}:\n{}", stderr(&out));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The sample `shipments` table with `on_error` set on the table.
fn sample(on_error: &str) -> Project {
    let toml = ONE_TABLE.replace(
        "watermark = \"modified_at\"",
        &format!("watermark = \"modified_at\"\non_error = \"{on_error}\""),
    );
    assert!(toml.contains("on_error"));
    Project::custom(&toml, &[])
}

/// Extracts run `r1`, then puts [`TOO_WIDE`] into `declared_value` of the first and third rows of
/// the landed file; returns the landed row count.
fn land_too_wide(p: &Project) -> usize {
    ok(p, "extract", "r1");
    let path = p.lake().join("landing/shipments/run=r1/part-0000.parquet");
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    let mut rows = 0;
    let mut out = Vec::new();
    for (n, b) in batches.iter().enumerate() {
        let i = b.schema().index_of("declared_value").unwrap();
        let values = b
            .column(i)
            .as_primitive::<arrow::datatypes::Decimal128Type>();
        let changed: Decimal128Array = (0..values.len())
            .map(|r| {
                if n == 0 && (r == 0 || r == 2) {
                    Some(TOO_WIDE)
                } else {
                    values.is_valid(r).then(|| values.value(r))
                }
            })
            .collect::<Decimal128Array>()
            .with_precision_and_scale(19, 4)
            .unwrap();
        let mut columns = b.columns().to_vec();
        columns[i] = Arc::new(changed);
        out.push(RecordBatch::try_new(b.schema(), columns).unwrap());
        rows += b.num_rows();
    }
    let file = std::fs::File::create(&path).unwrap();
    let mut w = ArrowWriter::try_new(file, out[0].schema(), None).unwrap();
    for b in &out {
        w.write(b).unwrap();
    }
    w.close().unwrap();
    rows
}

#[test]
fn demo_value_wider_than_its_decimal_fails_with_exit_3() {
    let p = sample("fail");
    land_too_wide(&p);
    let out = run(&p, "bronze", "r1");
    let err = stderr(&out);
    assert_eq!(code(&out), 3, "{err}");
    for want in [
        "bronze.shipments",
        "`declared_value`",
        "decimal(19,4)",
        "100000000000000000.0000",
        "landing/shipments/run=r1/part-0000.parquet",
        "row 1",
        "on_error = \"quarantine\"",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    assert!(
        !p.lake().join("bronze/shipments/_delta_log").exists(),
        "nothing may be stored"
    );
}

#[tokio::test]
async fn demo_value_wider_than_its_decimal_is_quarantined() {
    let p = sample("quarantine");
    let landed = land_too_wide(&p) as i64;
    let text = ok(&p, "bronze", "r1");
    assert!(text.contains("Quarantined rows"), "{text}");
    assert!(text.contains("2 row(s) quarantined"), "{text}");
    let b = &[("b", "bronze/shipments")];
    let q = &[("q", "bronze/_quarantine_shipments")];
    assert_eq!(p.scalar(b, "SELECT COUNT(*) FROM b").await, landed - 2);
    assert_eq!(
        p.scalar(
            b,
            "SELECT COUNT(*) FROM b WHERE declared_value >= 1000000000000000"
        )
        .await,
        0
    );
    let rows = quarantined(&p).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (n, row) in rows.iter().enumerate() {
        assert_eq!(row.value, "100000000000000000.0000");
        assert_eq!(row.column, "declared_value");
        assert!(row.error.contains("more than the 19 digits"), "{row:?}");
        assert!(
            row.file
                .ends_with("landing/shipments/run=r1/part-0000.parquet"),
            "{row:?}"
        );
        assert_eq!(row.line, [1, 3][n]);
        assert_eq!(row.run_id, "r1");
    }
    // Every original value is kept, as text: the shipment id of the first landed row.
    assert!(p.scalar(q, "SELECT COUNT(shipment_id) FROM q").await == 2);

    // A retry of the same run id adds nothing, to either table.
    ok(&p, "bronze", "r1");
    assert_eq!(p.scalar(b, "SELECT COUNT(*) FROM b").await, landed - 2);
    assert_eq!(p.scalar(q, "SELECT COUNT(*) FROM q").await, 2);
}

/// One quarantined row as read back with delta-rs and DataFusion.
#[derive(Debug)]
struct QRow {
    value: String,
    column: String,
    error: String,
    file: String,
    line: i64,
    run_id: String,
}

async fn quarantined(p: &Project) -> Vec<QRow> {
    let batches = p
        .query(
            &[("q", "bronze/_quarantine_shipments")],
            "SELECT declared_value, _error_column, _error, _source_file, _source_line, _run_id FROM q ORDER BY _source_line",
        )
        .await;
    let mut out = Vec::new();
    for b in batches {
        let s = |i: usize| {
            arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8).unwrap()
        };
        let cols: Vec<_> = (0..6).map(s).collect();
        for r in 0..b.num_rows() {
            let v = |i: usize| cols[i].as_string::<i32>().value(r).to_string();
            out.push(QRow {
                value: v(0),
                column: v(1),
                error: v(2),
                file: v(3),
                line: v(4).parse().unwrap(),
                run_id: v(5),
            });
        }
    }
    out
}

const FILES: &str = r#"
name = "t"
on_error = "ON_ERROR"
[source]
type = "files"
root = "incoming"
[[source.tables]]
name = "orders"
path = "orders/*.csv"
key = ["order_id"]
[storage]
root = "lake"
"#;

/// The contract of `orders`: `customer` declared `varchar(8)`, `amount` `decimal(10,2)`.
const CONTRACT: &str = r#"
table = "orders"
source = "files:orders/*.csv"
key = ["order_id"]

[[columns]]
name = "order_id"
arrow_type = "Int64"
nullable = false

[[columns]]
name = "customer"
source_type = "varchar(8)"
arrow_type = "Utf8"
nullable = true

[[columns]]
name = "amount"
source_type = "decimal(10,2)"
arrow_type = "Decimal128(10, 2)"
nullable = true
"#;

/// Line 3 has an amount that is not a number, line 5 a customer longer than `varchar(8)`, line 8
/// (after a quoted field spanning lines 6 and 7) one field too many.
const CSV: &str = "order_id,customer,amount\n\
1,alice,10.50\n\
2,bob,forty\n\
3,carol,7.25\n\
4,bartholomew-the-third,1.00\n\
5,\"da\nve\",2.00\n\
6,erin,3.00,extra\n\
7,frank,4.00\n";

fn files(on_error: &str, csv: &str) -> Project {
    let p = Project::custom(&FILES.replace("ON_ERROR", on_error), &[]);
    let dir = p.dir.path();
    std::fs::create_dir_all(dir.join("incoming/orders")).unwrap();
    std::fs::write(dir.join("incoming/orders/a.csv"), csv).unwrap();
    std::fs::create_dir_all(dir.join("schemas/t")).unwrap();
    std::fs::write(dir.join("schemas/t/orders.toml"), CONTRACT).unwrap();
    p
}

#[test]
fn files_row_that_does_not_parse_fails_with_exit_2() {
    let p = files("fail", CSV);
    let out = run(&p, "extract", "r1");
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    for want in ["orders/a.csv", "line 3", "`amount`", "`forty`"] {
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn files_row_with_too_many_fields_fails_with_exit_2() {
    let p = files(
        "fail",
        "order_id,customer,amount\n1,alice,1.00\n2,bob,2.00,extra\n",
    );
    let out = run(&p, "extract", "r1");
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    for want in ["orders/a.csv", "line 3", "4 fields where the header has 3"] {
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn files_value_longer_than_its_varchar_fails_with_exit_3() {
    let p = files("fail", &CSV.replace("2,bob,forty", "2,bob,40"));
    let out = run(&p, "extract", "r1");
    let err = stderr(&out);
    assert_eq!(code(&out), 3, "{err}");
    for want in [
        "bronze.orders",
        "`customer`",
        "varchar(8)",
        "bartholomew-the-third",
        "orders/a.csv, line 5",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    assert!(!p.lake().join("bronze/orders").exists());
}

#[tokio::test]
async fn files_bad_rows_are_quarantined_with_file_and_line() {
    let p = files("quarantine", CSV);
    ok(&p, "extract", "r1");
    let text = ok(&p, "bronze", "r1");
    assert!(text.contains("3 row(s) quarantined"), "{text}");
    let b = &[("b", "bronze/orders")];
    let q = &[("q", "bronze/_quarantine_orders")];
    assert_eq!(
        p.scalar(b, "SELECT SUM(order_id) FROM b").await,
        1 + 3 + 5 + 7,
        "the good rows load"
    );
    let batches = p
        .query(
            q,
            "SELECT order_id, customer, amount, _error_column, _error, _source_file, CAST(_source_line AS VARCHAR) AS line, _run_id FROM q ORDER BY _source_line",
        )
        .await;
    let rows: Vec<Vec<String>> = batches
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).map(move |r| {
                (0..b.num_columns())
                    .map(|c| {
                        let s =
                            arrow::compute::cast(b.column(c), &arrow::datatypes::DataType::Utf8)
                                .unwrap();
                        s.as_string::<i32>().value(r).to_string()
                    })
                    .collect()
            })
        })
        .collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0][..4], ["2", "bob", "forty", "amount"], "{rows:?}");
    assert!(rows[0][4].contains("`forty` is not a valid"), "{rows:?}");
    assert_eq!(rows[0][5..], ["orders/a.csv", "3", "r1"], "{rows:?}");
    assert_eq!(
        rows[1][..4],
        ["4", "bartholomew-the-third", "1.00", "customer"],
        "{rows:?}"
    );
    assert!(
        rows[1][4].contains("more than the 8 of varchar(8)"),
        "{rows:?}"
    );
    assert_eq!(rows[1][5..], ["orders/a.csv", "5", "r1"], "{rows:?}");
    // The wrong number of fields: no column at fault, the whole record in the reason.
    assert_eq!(rows[2][..3], ["6", "erin", "3.00"], "{rows:?}");
    assert!(
        rows[2][4].contains("4 fields where the header has 3: `6,erin,3.00,extra`"),
        "{rows:?}"
    );
    assert_eq!(rows[2][5..], ["orders/a.csv", "8", "r1"], "{rows:?}");

    // A retry of the same run id (extract and bronze again) adds nothing.
    ok(&p, "extract", "r1");
    ok(&p, "bronze", "r1");
    assert_eq!(p.scalar(b, "SELECT COUNT(*) FROM b").await, 4);
    assert_eq!(p.scalar(q, "SELECT COUNT(*) FROM q").await, 3);
    assert_eq!(
        p.scalar(q, "SELECT COUNT(*) FROM q WHERE _error_column IS NULL")
            .await,
        1
    );
}

#[test]
fn unknown_on_error_policy_names_the_key_and_the_choices() {
    let p = files("skip", CSV);
    let out = p.smelter(&["validate", "{p}"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    for want in ["on_error", "`skip`", "`fail`, `quarantine`"] {
        assert!(err.contains(want), "{want}: {err}");
    }
}

/// Line 3's `customer` is not valid UTF-8 (a Latin-1 `ü`).
const NOT_UTF8: &[u8] = b"order_id,customer,amount\n1,alice,1.00\n2,m\xfcller,2.00\n3,carol,3.00\n";

#[test]
fn files_field_that_is_not_utf8_fails_with_exit_2() {
    let p = files("fail", "");
    std::fs::write(p.dir.path().join("incoming/orders/a.csv"), NOT_UTF8).unwrap();
    let out = run(&p, "extract", "r1");
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    for want in ["orders/a.csv", "line 3", "`customer`", "not valid UTF-8"] {
        assert!(err.contains(want), "{want}: {err}");
    }
}

/// Line 2 is cut short, line 4 is not valid UTF-8, line 5 is blank, line 6 is not an object.
const JSONL: &[u8] = b"{\"id\": 1, \"name\": \"a\"}\n{\"id\": 2, \"name\": \n{\"id\": 3, \"name\": \"c\"}\n{\"id\": 4, \"name\": \"\xff\"}\n\n[5]\n{\"id\": 7, \"name\": \"g\"}\n";

fn json_project(on_error: &str) -> Project {
    let toml = FILES.replace("ON_ERROR", on_error).replace(
        "name = \"orders\"\npath = \"orders/*.csv\"\nkey = [\"order_id\"]",
        "name = \"events\"\npath = \"events/*.jsonl\"",
    );
    assert!(toml.contains("events/*.jsonl"));
    let p = Project::custom(&toml, &[]);
    let dir = p.dir.path().join("incoming/events");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.jsonl"), JSONL).unwrap();
    // Inference skips the unreadable lines.
    let out = p.smelter(&["source", "sync", "{p}"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    p
}

#[test]
fn files_json_line_that_does_not_parse_fails_with_exit_2() {
    let p = json_project("fail");
    let out = run(&p, "extract", "r1");
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    for want in ["events/a.jsonl", "line 2", "not valid JSON"] {
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[tokio::test]
async fn files_unreadable_rows_are_quarantined_with_file_and_line() {
    let p = json_project("quarantine");
    ok(&p, "extract", "r1");
    ok(&p, "bronze", "r1");
    let b = &[("b", "bronze/events")];
    let q = &[("q", "bronze/_quarantine_events")];
    assert_eq!(p.scalar(b, "SELECT SUM(id) FROM b").await, 1 + 3 + 7);
    assert_eq!(p.scalar(q, "SELECT COUNT(*) FROM q").await, 3);
    for (line, why) in [
        (2, "not valid JSON"),
        (4, "not valid UTF-8"),
        (6, "not a JSON object"),
    ] {
        let sql = format!(
            "SELECT COUNT(*) FROM q WHERE _source_line = {line} AND _source_file = 'events/a.jsonl' AND _error LIKE '%{why}%'"
        );
        assert_eq!(p.scalar(q, &sql).await, 1, "line {line}");
    }

    // CSV: the field is kept as text with the invalid byte replaced, the column named.
    let p = files("quarantine", "");
    std::fs::write(p.dir.path().join("incoming/orders/a.csv"), NOT_UTF8).unwrap();
    ok(&p, "extract", "r1");
    ok(&p, "bronze", "r1");
    let b = &[("b", "bronze/orders")];
    let q = &[("q", "bronze/_quarantine_orders")];
    assert_eq!(p.scalar(b, "SELECT SUM(order_id) FROM b").await, 1 + 3);
    assert_eq!(
        p.scalar(
            q,
            "SELECT COUNT(*) FROM q WHERE _source_line = 3 AND _error_column = 'customer' AND customer = 'm\u{FFFD}ller' AND _error LIKE '%not valid UTF-8%'"
        )
        .await,
        1
    );
}
