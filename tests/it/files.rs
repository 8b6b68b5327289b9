//! The files source: CSV, gzip CSV, zstd JSON lines and Parquet files written by the test into
//! a temp project land through extract and bronze into a silver model; contracts from
//! `source sync`; incremental landing across runs, retries and a crash between extract and
//! bronze; malformed rows, corrupt files and globs that match nothing; files on S3 (s3s-fs) and
//! Azure Blob (Azurite) when the emulators run (`tests/support/emulators.py`).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use crate::support::{expect_code, Project};

const PIPELINE: &str = r#"
name = "t"
[source]
type = "files"
root = "incoming"
[[source.tables]]
name = "orders"
path = "orders/*.csv"
key = ["order_id"]
[[source.tables]]
name = "fx_rates"
path = "fx/*.parquet"
[storage]
root = "lake"
"#;

const SILVER: &str = "SELECT o.order_id, o.customer, o.amount * f.rate AS amount_eur\nFROM bronze.orders o JOIN bronze.fx_rates f ON o.currency = f.currency\n";

fn expect(p: &Project, args: &[&str], want: i32) -> String {
    p.expect(args, want)
}

fn layer(p: &Project, layer: &str, run_id: &str, want: i32) -> String {
    p.run_layer(layer, run_id, want)
}

fn write(p: &Project, rel: &str, bytes: &[u8]) {
    let path = p.dir.path().join("incoming").join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// `n` order lines starting at `first`, with a header.
fn orders_csv(first: i64, n: i64) -> String {
    let mut s = String::from("order_id,customer,currency,amount,ordered_on\n");
    for i in first..first + n {
        s.push_str(&format!(
            "{i},cust-{i},{},{}.25,2026-11-{:02}\n",
            if i % 2 == 0 { "USD" } else { "GBP" },
            i * 10,
            1 + i % 28
        ));
    }
    s
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn write_fx(p: &Project, rel: &str) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("currency", DataType::Utf8, false),
        Field::new("rate", DataType::Float64, false),
        Field::new("rate_id", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["USD", "GBP"])),
            Arc::new(Float64Array::from(vec![0.5, 2.0])),
            Arc::new(Int64Array::from(vec![1, 2])),
        ],
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    write(p, rel, &buf);
}

fn project() -> Project {
    let p = Project::custom(PIPELINE, &[("silver/orders_eur.sql", SILVER)]);
    std::fs::create_dir_all(p.dir.path().join("incoming")).unwrap();
    p
}

async fn count(p: &Project, table: &str) -> i64 {
    p.scalar(&[("b", table)], "SELECT COUNT(*) FROM b").await
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_gzip_csv_and_parquet_land_through_bronze_and_silver() {
    let p = project();
    write(&p, "orders/a.csv", orders_csv(1, 3).as_bytes());
    write(&p, "orders/b.csv.gz", &gzip(orders_csv(4, 2).as_bytes()));
    // Only `*.csv` matches: the gzip file needs its own glob.
    let toml = std::fs::read_to_string(p.pipeline())
        .unwrap()
        .replace("\"orders/*.csv\"", "\"orders/*.csv*\"\nformat = \"csv\"");
    std::fs::write(p.pipeline(), toml).unwrap();
    write_fx(&p, "fx/rates.parquet");

    // No contract yet: planning names the command that writes it.
    let text = expect(&p, &["validate", "{p}"], 2);
    assert!(text.contains("source sync"), "{text}");
    expect(&p, &["source", "sync", "{p}"], 0);
    let contract = std::fs::read_to_string(p.dir.path().join("schemas/t/orders.toml")).unwrap();
    assert!(contract.contains("order_id"), "{contract}");
    let fx = std::fs::read_to_string(p.dir.path().join("schemas/t/fx_rates.toml")).unwrap();
    assert!(fx.contains("rate_id"), "{fx}");
    // Planning now works offline from the contracts (the files are not read).
    std::fs::rename(p.dir.path().join("incoming"), p.dir.path().join("away")).unwrap();
    expect(&p, &["validate", "{p}"], 0);
    std::fs::rename(p.dir.path().join("away"), p.dir.path().join("incoming")).unwrap();

    expect(
        &p,
        &[
            "run",
            "{p}",
            "--logical-date",
            "2026-11-30",
            "--run-id",
            "r1",
        ],
        0,
    );
    assert_eq!(count(&p, "bronze/orders").await, 5);
    assert_eq!(count(&p, "bronze/fx_rates").await, 2);
    // Order 2 is USD (rate 0.5): 20.25 * 0.5.
    let batches = p
        .query(
            &[("s", "silver/orders_eur")],
            "SELECT CAST(amount_eur * 1000 AS BIGINT) FROM s WHERE order_id = 2",
        )
        .await;
    let v = arrow::compute::cast(batches[0].column(0), &DataType::Int64).unwrap();
    assert_eq!(
        v.as_any().downcast_ref::<Int64Array>().unwrap().value(0),
        10_125
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn zstd_json_lines_land_with_contract_types() {
    let p = Project::custom(
        r#"
name = "t"
[source]
type = "files"
root = "incoming"
[[source.tables]]
name = "events"
path = "events/**/*.jsonl.zst"
[storage]
root = "lake"
"#,
        &[],
    );
    let mut lines = String::new();
    for i in 0..10 {
        lines.push_str(&format!(
            "{{\"event_id\": {i}, \"kind\": \"k{}\", \"amount\": \"{i}.50\"}}\n",
            i % 3
        ));
    }
    write(
        &p,
        "events/2026/11/part1.jsonl.zst",
        &zstd::encode_all(lines.as_bytes(), 3).unwrap(),
    );
    expect(&p, &["source", "sync", "{p}"], 0);
    // Review the contract: amounts are exact decimals.
    let path = p.dir.path().join("schemas/t/events.toml");
    let contract = std::fs::read_to_string(&path).unwrap();
    assert!(contract.contains("amount"), "{contract}");
    let at = contract
        .find("name = \"amount\"")
        .expect("an amount column");
    let edited = format!(
        "{}{}",
        &contract[..at],
        contract[at..].replacen("\"Utf8\"", "\"Decimal128(15, 2)\"", 1)
    );
    std::fs::write(&path, &edited).unwrap();
    layer(&p, "extract", "r1", 0);
    layer(&p, "bronze", "r1", 0);
    let total = p
        .scalar(
            &[("b", "bronze/events")],
            "SELECT CAST(SUM(amount) * 100 AS BIGINT) FROM b",
        )
        .await;
    // 0.5 + 1.5 + ... + 9.5 = 50.
    assert_eq!(total, 5000, "{edited}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_file_lands_once_across_runs_retries_and_crashes() {
    let p = project();
    write(&p, "orders/a.csv", orders_csv(1, 2).as_bytes());
    write(&p, "orders/b.csv", orders_csv(3, 2).as_bytes());
    write_fx(&p, "fx/rates.parquet");
    expect(&p, &["source", "sync", "{p}"], 0);

    // Run 1 lands A and B.
    layer(&p, "extract", "r1", 0);
    layer(&p, "bronze", "r1", 0);
    assert_eq!(count(&p, "bronze/orders").await, 4);

    // Run 2 lands only C; fx has nothing new, so only orders lands.
    write(&p, "orders/c.csv", orders_csv(5, 3).as_bytes());
    layer(&p, "extract", "r2", 0);
    layer(&p, "bronze", "r2", 0);
    assert_eq!(count(&p, "bronze/orders").await, 7);
    assert_eq!(count(&p, "bronze/fx_rates").await, 2);

    // A retry of run 2 lands C again (not D, added since) and bronze does not duplicate it.
    write(&p, "orders/d.csv", orders_csv(8, 1).as_bytes());
    layer(&p, "extract", "r2", 0);
    let manifest =
        std::fs::read_to_string(p.lake().join("landing/orders/run=r2/_manifest.json")).unwrap();
    assert!(
        manifest.contains("orders/c.csv") && !manifest.contains("orders/d.csv"),
        "{manifest}"
    );
    layer(&p, "bronze", "r2", 0);
    assert_eq!(count(&p, "bronze/orders").await, 7);

    // Run 3 extracts D, then "crashes" before bronze; E arrives; run 3 is retried from extract.
    layer(&p, "extract", "r3", 0);
    write(&p, "orders/e.csv", orders_csv(9, 4).as_bytes());
    layer(&p, "extract", "r3", 0);
    layer(&p, "bronze", "r3", 0);
    assert_eq!(count(&p, "bronze/orders").await, 12);
    let distinct = p
        .scalar(
            &[("b", "bronze/orders")],
            "SELECT COUNT(DISTINCT order_id) FROM b",
        )
        .await;
    assert_eq!(distinct, 12);

    // Nothing new anywhere: exit 99, naming the globs.
    let text = layer(&p, "extract", "r4", 99);
    assert!(
        text.contains("orders/*.csv") && text.contains("fx/*.parquet"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_rows_corrupt_files_and_empty_globs_are_named() {
    let p = project();
    write_fx(&p, "fx/rates.parquet");
    write(&p, "orders/a.csv", orders_csv(1, 2).as_bytes());
    expect(&p, &["source", "sync", "{p}"], 0);

    // Line 3 (the header is line 1) has a bad amount.
    let mut bad = orders_csv(3, 3);
    bad = bad.replace("40.25", "forty");
    write(&p, "orders/b.csv", bad.as_bytes());
    let text = layer(&p, "extract", "r1", 2);
    assert!(text.contains("orders/b.csv"), "{text}");
    assert!(text.contains("line 3"), "{text}");
    assert!(
        text.contains("`amount`") && text.contains("forty"),
        "{text}"
    );
    assert!(!text.contains("internal error"), "{text}");
    std::fs::remove_file(p.dir.path().join("incoming/orders/b.csv")).unwrap();

    // A Parquet file that is not Parquet.
    write(&p, "fx/broken.parquet", b"not parquet at all");
    let text = layer(&p, "extract", "r1", 2);
    assert!(text.contains("fx/broken.parquet"), "{text}");
    std::fs::remove_file(p.dir.path().join("incoming/fx/broken.parquet")).unwrap();

    // A glob matching nothing, for every table: nothing to do (99), naming the globs.
    let toml = std::fs::read_to_string(p.pipeline())
        .unwrap()
        .replace("orders/*.csv", "orders/*.tsv")
        .replace("fx/*.parquet", "fx/*.pq");
    std::fs::write(p.pipeline(), toml).unwrap();
    let text = layer(&p, "extract", "r1", 99);
    assert!(
        text.contains("orders/*.tsv") && text.contains("fx/*.pq"),
        "{text}"
    );

    // A missing base directory is a config error.
    std::fs::remove_dir_all(p.dir.path().join("incoming")).unwrap();
    let text = layer(&p, "extract", "r1", 2);
    assert!(text.contains("incoming"), "{text}");
}

#[test]
fn keys_of_other_sources_are_refused() {
    let p = Project::custom(
        r#"
name = "t"
[source]
type = "files"
host = "db"
[[source.tables]]
name = "orders"
path = "orders/*.csv"
format = "xlsx"
watermark = "ts"
on_error = "skip"
[storage]
root = "lake"
"#,
        &[],
    );
    let text = expect(&p, &["validate", "{p}"], 2);
    for want in [
        "source.host",
        "source.tables[0].format",
        "source.tables[0].watermark",
        "source.tables[0].on_error",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    assert!(Path::new(&p.pipeline()).exists());
}

/// The TPC-H dump (SF 0.01) as CSV and as Parquet lands through the files source and the
/// `sql/tpch` models (silver and gold) with every row.
#[tokio::test(flavor = "multi_thread")]
async fn tpch_dump_lands_as_csv_and_parquet_through_the_tpch_models() {
    let generated = crate::tds::tpch::generate(0.01).unwrap();
    for ext in ["csv", "parquet"] {
        let p = Project::from_repo("tpch");
        crate::tds::tpch::write_dump(&generated, &p.dir.path().join("dump")).unwrap();
        let mut toml = String::from(
            "name = \"tpch\"\nmodels_dir = \"sql/tpch\"\n[source]\ntype = \"files\"\nroot = \"dump\"\n",
        );
        for (table, _) in &generated {
            toml.push_str(&format!(
                "[[source.tables]]\nname = \"{table}\"\npath = \"{table}.{ext}\"\n"
            ));
        }
        toml.push_str("[storage]\nroot = \"lake\"\n");
        std::fs::write(p.pipeline(), toml).unwrap();
        expect(&p, &["source", "sync", "{p}"], 0);
        expect(
            &p,
            &[
                "run",
                "{p}",
                "--logical-date",
                "2026-11-30",
                "--run-id",
                "t1",
            ],
            0,
        );
        for (table, batches) in &generated {
            let want: usize = batches.iter().map(|b| b.num_rows()).sum();
            let got = count(&p, &format!("silver/{table}")).await;
            assert_eq!(got, want as i64, "{ext}: silver.{table}");
        }
    }
}

const MEASUREMENTS: &str = r#"
name = "m"
[source]
type = "files"
root = "incoming"
[[source.tables]]
name = "meas"
path = "m/*.parquet"
[storage]
root = "lake"
"#;

fn write_parquet(p: &Project, rel: &str, columns: Vec<(&str, arrow::array::ArrayRef)>) {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    write(p, rel, &buf);
}

fn ids32(v: &[i32]) -> arrow::array::ArrayRef {
    Arc::new(arrow::array::Int32Array::from(v.to_vec()))
}

fn ids64(v: &[i64]) -> arrow::array::ArrayRef {
    Arc::new(Int64Array::from(v.to_vec()))
}

fn floats(v: &[f64]) -> arrow::array::ArrayRef {
    Arc::new(Float64Array::from(v.to_vec()))
}

/// A Parquet file whose column type differs from the contract is never cast silently: a type
/// that converts losslessly into the contract's lands; any other stops extraction (exit 2)
/// naming the file, the column and both types; `sync_all_columns` lands a lossless widening of
/// the contract's type and widens the bronze table.
#[tokio::test(flavor = "multi_thread")]
async fn parquet_column_types_are_checked_against_the_contract() {
    let p = Project::custom(MEASUREMENTS, &[]);
    write_parquet(
        &p,
        "m/a.parquet",
        vec![("id", ids64(&[1, 2])), ("qty", floats(&[1.5, 2.5]))],
    );
    expect(&p, &["source", "sync", "{p}"], 0);
    layer(&p, "extract", "r1", 0);
    layer(&p, "bronze", "r1", 0);

    // Int32 into the contract's Int64: lossless, lands.
    write_parquet(
        &p,
        "m/b.parquet",
        vec![("id", ids32(&[3])), ("qty", floats(&[3.5]))],
    );
    layer(&p, "extract", "r2", 0);
    layer(&p, "bronze", "r2", 0);
    assert_eq!(count(&p, "bronze/meas").await, 3);

    // Text where the contract says Float64: refused before anything lands.
    let qty: arrow::array::ArrayRef = Arc::new(StringArray::from(vec!["4.5"]));
    write_parquet(&p, "m/c.parquet", vec![("id", ids64(&[4])), ("qty", qty)]);
    let text = layer(&p, "extract", "r3", 2);
    for want in [
        "m/c.parquet",
        "`qty`",
        "Float64",
        "Utf8",
        "append_new_columns",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    assert!(!text.contains("Utf8View"), "{text}");
    // The structured `file` field is the source file's, never the landing directory.
    assert!(!text.contains("file=\"file://"), "{text}");
    assert!(
        !p.lake().join("landing/meas/run=r3/_manifest.json").exists(),
        "nothing lands"
    );
    std::fs::remove_file(p.dir.path().join("incoming/m/c.parquet")).unwrap();

    // Int64 where the contract says Int32: a widening of the contract, refused by the default
    // policy and applied by `sync_all_columns`.
    let contract = p.dir.path().join("schemas/m/meas.toml");
    let text = std::fs::read_to_string(&contract).unwrap();
    std::fs::write(&contract, text.replacen("\"Int64\"", "\"Int32\"", 1)).unwrap();
    let p2 = Project::custom(MEASUREMENTS, &[]);
    std::fs::create_dir_all(p2.dir.path().join("schemas/m")).unwrap();
    std::fs::copy(&contract, p2.dir.path().join("schemas/m/meas.toml")).unwrap();
    write_parquet(
        &p2,
        "m/a.parquet",
        vec![("id", ids64(&[1 << 40])), ("qty", floats(&[1.0]))],
    );
    let text = layer(&p2, "extract", "r1", 2);
    assert!(text.contains("Int64 in the file but Int32"), "{text}");
    let toml = std::fs::read_to_string(p2.pipeline()).unwrap().replace(
        "path = \"m/*.parquet\"",
        "path = \"m/*.parquet\"\non_schema_change = \"sync_all_columns\"",
    );
    std::fs::write(p2.pipeline(), toml).unwrap();
    layer(&p2, "extract", "r1", 0);
    layer(&p2, "bronze", "r1", 0);
    assert_eq!(
        p2.scalar(&[("b", "bronze/meas")], "SELECT MAX(id) FROM b")
            .await,
        1 << 40
    );
}

/// Lists, structs and maps in Parquet files are recorded in the contract exactly (Arrow's
/// display form parses back) and land as nested columns, not text.
#[tokio::test(flavor = "multi_thread")]
async fn nested_parquet_columns_round_trip_through_the_contract() {
    use arrow::array::{ListBuilder, MapBuilder, StringBuilder, StructArray};
    let p = Project::custom(MEASUREMENTS, &[]);
    let mut tags = ListBuilder::new(StringBuilder::new());
    tags.append_value([Some("a"), Some("b")]);
    tags.append_value([Some("c")]);
    let mut attrs = MapBuilder::new(
        None,
        StringBuilder::new(),
        arrow::array::Int64Builder::new(),
    );
    attrs.keys().append_value("k");
    attrs.values().append_value(7);
    attrs.append(true).unwrap();
    attrs.append(true).unwrap();
    let point = StructArray::from(vec![
        (
            Arc::new(Field::new("x", DataType::Int64, true)),
            ids64(&[1, 2]),
        ),
        (
            Arc::new(Field::new("y", DataType::Float64, true)),
            floats(&[0.5, 1.5]),
        ),
    ]);
    write_parquet(
        &p,
        "m/a.parquet",
        vec![
            ("id", ids64(&[1, 2])),
            ("tags", Arc::new(tags.finish())),
            ("attrs", Arc::new(attrs.finish())),
            ("point", Arc::new(point)),
        ],
    );
    expect(&p, &["source", "sync", "{p}"], 0);
    let contract = std::fs::read_to_string(p.dir.path().join("schemas/m/meas.toml")).unwrap();
    assert!(contract.contains("arrow_type = \"List(Utf8"), "{contract}");
    assert!(contract.contains("Map("), "{contract}");
    assert!(
        contract.contains("Struct(\\\"x\\\": Int64") || contract.contains("Struct(\"x\": Int64"),
        "{contract}"
    );
    // The contract is what the source has: a second sync changes nothing.
    let text = expect(&p, &["source", "sync", "{p}", "--check"], 0);
    assert!(text.contains("unchanged"), "{text}");
    layer(&p, "extract", "r1", 0);
    layer(&p, "bronze", "r1", 0);
    let b = [("b", "bronze/meas")];
    assert_eq!(
        p.scalar(&b, "SELECT SUM(cardinality(tags)) FROM b").await,
        3
    );
    assert_eq!(p.scalar(&b, "SELECT SUM(point['x']) FROM b").await, 3);
    assert_eq!(
        p.scalar(&b, "SELECT SUM(cardinality(attrs)) FROM b").await,
        1
    );
}

/// A column type the lake's table format cannot store (a Parquet time of day) is named with
/// its table and type by `source sync` and `validate` (exit 2), not first at bronze; set to
/// `Utf8` in the contract it lands as text.
#[tokio::test(flavor = "multi_thread")]
async fn unstorable_contract_types_are_refused_at_sync_and_validate() {
    let p = Project::custom(MEASUREMENTS, &[]);
    let starts: arrow::array::ArrayRef =
        Arc::new(arrow::array::Time64MicrosecondArray::from(vec![
            8 * 3_600_000_000,
            9 * 3_600_000_000,
        ]));
    write_parquet(
        &p,
        "m/a.parquet",
        vec![("id", ids64(&[1, 2])), ("starts", starts)],
    );
    for args in [&["source", "sync", "{p}"][..], &["validate", "{p}"][..]] {
        let text = expect(&p, args, 2);
        assert!(
            text.contains("`meas.starts`") && text.contains("Time64(µs)"),
            "{args:?}: {text}"
        );
    }
    let path = p.dir.path().join("schemas/m/meas.toml");
    let contract = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, contract.replace("\"Time64(µs)\"", "\"Utf8\"")).unwrap();
    expect(&p, &["validate", "{p}"], 0);
    layer(&p, "extract", "r1", 0);
    layer(&p, "bronze", "r1", 0);
    let rows = p
        .query(&[("b", "bronze/meas")], "SELECT starts FROM b ORDER BY id")
        .await;
    let v = arrow::compute::cast(rows[0].column(0), &DataType::Utf8).unwrap();
    assert_eq!(
        v.as_any().downcast_ref::<StringArray>().unwrap().value(0),
        "08:00:00"
    );
}

/// Run ids that differ only in characters a directory name cannot hold (`x/y`, `x_y`) land in
/// different directories, and bronze reads each run's own landing.
#[tokio::test(flavor = "multi_thread")]
async fn run_ids_map_to_distinct_landing_directories() {
    let p = project();
    write_fx(&p, "fx/rates.parquet");
    write(&p, "orders/a.csv", orders_csv(1, 2).as_bytes());
    expect(&p, &["source", "sync", "{p}"], 0);
    layer(&p, "extract", "x/y", 0);
    layer(&p, "bronze", "x/y", 0);
    assert_eq!(count(&p, "bronze/orders").await, 2);
    write(&p, "orders/b.csv", orders_csv(3, 3).as_bytes());
    layer(&p, "extract", "x_y", 0);
    layer(&p, "bronze", "x_y", 0);
    assert_eq!(count(&p, "bronze/orders").await, 5);
    let landing = p.lake().join("landing/orders");
    let mut dirs: Vec<String> = std::fs::read_dir(&landing)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(dirs, ["run=x@2Fy", "run=x_y"]);
    let airflow = "scheduled__2026-11-01T00:00:00+00:00";
    write(&p, "orders/c.csv", orders_csv(6, 1).as_bytes());
    layer(&p, "extract", airflow, 0);
    assert!(landing
        .join(format!("run={airflow}/_manifest.json"))
        .exists());
    layer(&p, "bronze", airflow, 0);
    assert_eq!(count(&p, "bronze/orders").await, 6);
}

/// CSV type inference treats the configured `null_value` as NULL: a numeric column holding the
/// marker is inferred as a number, not text, and the marker lands as NULL.
#[tokio::test(flavor = "multi_thread")]
async fn csv_inference_reads_null_value_as_null() {
    let p = Project::custom(
        r#"
name = "n"
[source]
type = "files"
root = "incoming"
[[source.tables]]
name = "readings"
path = "r/*.csv"
null_value = "N/A"
[storage]
root = "lake"
"#,
        &[],
    );
    write(
        &p,
        "r/a.csv",
        b"sensor,value,taken_on\n1,N/A,2026-11-01\n2,2.5,N/A\n3,,2026-11-03\n",
    );
    expect(&p, &["source", "sync", "{p}"], 0);
    let contract = std::fs::read_to_string(p.dir.path().join("schemas/n/readings.toml")).unwrap();
    assert!(
        contract.contains("name = \"value\"\narrow_type = \"Float64\""),
        "{contract}"
    );
    assert!(
        contract.contains("name = \"taken_on\"\narrow_type = \"Date32\""),
        "{contract}"
    );
    layer(&p, "extract", "r1", 0);
    layer(&p, "bronze", "r1", 0);
    let b = [("b", "bronze/readings")];
    assert_eq!(p.scalar(&b, "SELECT COUNT(value) FROM b").await, 1);
    assert_eq!(p.scalar(&b, "SELECT COUNT(taken_on) FROM b").await, 2);
}

/// Lineage of a files source names the files by the OpenLineage conventions (namespace `file`,
/// name the absolute path of the glob under the source root; DataHub platform `file`), not the
/// database of the sample source.
#[tokio::test(flavor = "multi_thread")]
async fn lineage_names_the_source_files() {
    let p = project();
    let toml = std::fs::read_to_string(p.pipeline()).unwrap().replace(
        "[storage]",
        "[lineage]\nopenlineage_file = \"ol\"\ndatahub_file = \"dh\"\n[storage]",
    );
    std::fs::write(p.pipeline(), toml).unwrap();
    write_fx(&p, "fx/rates.parquet");
    write(&p, "orders/a.csv", orders_csv(1, 2).as_bytes());
    expect(&p, &["source", "sync", "{p}"], 0);
    layer(&p, "extract", "r1", 0);
    layer(&p, "bronze", "r1", 0);
    let ol = std::fs::read_to_string(p.dir.path().join("ol/r1/bronze.jsonl")).unwrap();
    let incoming = std::fs::canonicalize(p.dir.path().join("incoming")).unwrap();
    let want = format!(
        "\"name\":\"{}/orders/*.csv\",\"namespace\":\"file\"",
        incoming.display()
    );
    assert!(ol.replace(' ', "").contains(&want), "{want}\n{ol}");
    assert!(!ol.contains("LogisticsDB"), "{ol}");
    // Types as the table stores them, not DataFusion's read-back layout.
    assert!(!ol.contains("Utf8View"), "{ol}");
    let dh = std::fs::read_to_string(p.dir.path().join("dh/r1/bronze.json")).unwrap();
    assert!(dh.contains("urn:li:dataPlatform:file,"), "{dh}");
    assert!(!dh.contains("LogisticsDB"), "{dh}");
}

/// A file that is not the compression its name says is named with what it is not.
#[tokio::test(flavor = "multi_thread")]
async fn bad_gzip_is_named() {
    let p = project();
    write_fx(&p, "fx/rates.parquet");
    let toml = std::fs::read_to_string(p.pipeline())
        .unwrap()
        .replace("\"orders/*.csv\"", "\"orders/*.csv*\"\nformat = \"csv\"");
    std::fs::write(p.pipeline(), toml).unwrap();
    write(&p, "orders/a.csv", orders_csv(1, 2).as_bytes());
    expect(&p, &["source", "sync", "{p}"], 0);
    let mut truncated = gzip(orders_csv(3, 50).as_bytes());
    truncated.truncate(truncated.len() / 2);
    write(&p, "orders/b.csv.gz", &truncated);
    let text = layer(&p, "extract", "r1", 2);
    assert!(
        text.contains("file `orders/b.csv.gz`: not valid gzip:"),
        "{text}"
    );
    assert!(!text.contains("malformed row"), "{text}");
}

/// A pipeline reading sensor files from `root` (an object-store URL) into a local lake, with
/// `[source.options]` for the emulator.
fn remote_project(root: &str, options: &[(&'static str, String)]) -> Project {
    let mut opts = String::new();
    for (k, v) in options {
        opts.push_str(&format!("{k} = \"{v}\"\n"));
    }
    Project::custom(
        &format!(
            r#"
name = "t"
[source]
type = "files"
root = "{root}"
[source.options]
{opts}
[[source.tables]]
name = "readings"
path = "readings/*.csv*"
format = "csv"
key = ["reading_id"]
[[source.tables]]
name = "alerts"
path = "alerts/*.jsonl"
[[source.tables]]
name = "stations"
path = "stations/*.parquet"
[storage]
root = "lake"
"#
        ),
        &[],
    )
}

/// `n` sensor readings starting at `first`, with a header; a quoted note spans two lines.
fn readings_csv(first: i64, n: i64) -> String {
    let mut s = String::from("reading_id,station,celsius,note\n");
    for i in first..first + n {
        s.push_str(&format!(
            "{i},st-{},{}.5,\"{}\"\n",
            i % 2,
            i - 10,
            if i % 3 == 0 {
                "recalibrated\nafter storm"
            } else {
                "ok"
            }
        ));
    }
    s
}

fn parquet_bytes(columns: Vec<(&str, arrow::array::ArrayRef)>) -> Vec<u8> {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    buf
}

/// The files source reads CSV (plain and gzip), JSON lines and Parquet from S3 (s3s-fs) and
/// Azure Blob (Azurite) with credentials from the environment; a second run lands only the new
/// file, and a retried run id lands the same files again without duplicating them in bronze.
#[tokio::test(flavor = "multi_thread")]
async fn files_on_s3_and_azurite_land_once() {
    for b in crate::storage::backends() {
        let prefix = crate::storage::unique("files-source");
        let root = format!("{}/{prefix}/incoming", b.bucket_url);
        let at = |rel: &str| format!("{prefix}/incoming/{rel}");
        b.put(&at("readings/a.csv"), readings_csv(1, 3).into_bytes())
            .await;
        b.put(
            &at("readings/b.csv.gz"),
            gzip(readings_csv(4, 2).as_bytes()),
        )
        .await;
        let mut alerts = String::new();
        for i in 0..4 {
            alerts.push_str(&format!(
                "{{\"alert_id\": {i}, \"level\": \"{}\"}}\n",
                ["low", "high"][i % 2]
            ));
        }
        b.put(&at("alerts/x.jsonl"), alerts.into_bytes()).await;
        let elevation: arrow::array::ArrayRef =
            Arc::new(Float64Array::from(vec![Some(12.5), None]));
        b.put(
            &at("stations/s.parquet"),
            parquet_bytes(vec![
                ("station_id", ids32(&[0, 1])),
                ("elevation_m", elevation),
            ]),
        )
        .await;

        let p = remote_project(&root, &b.options);
        let run =
            |args: &[&str], want: i32| expect_code(&p.smelter_env(args, &b.env()), args, want);
        let layer = |layer: &'static str, run_id: &'static str| {
            run(
                &[
                    "run",
                    "{p}",
                    "--layer",
                    layer,
                    "--logical-date",
                    "2026-11-30",
                    "--run-id",
                    run_id,
                ],
                0,
            )
        };
        run(&["source", "sync", "{p}"], 0);
        let contract =
            std::fs::read_to_string(p.dir.path().join("schemas/t/readings.toml")).unwrap();
        assert!(contract.contains("celsius"), "{}: {contract}", b.name);
        layer("extract", "r1");
        layer("bronze", "r1");
        assert_eq!(count(&p, "bronze/readings").await, 5, "{}", b.name);
        assert_eq!(count(&p, "bronze/alerts").await, 4, "{}", b.name);
        assert_eq!(count(&p, "bronze/stations").await, 2, "{}", b.name);
        // Reading 3's note spans two lines inside quotes; it lands as one value.
        let multi = p
            .scalar(
                &[("b", "bronze/readings")],
                "SELECT COUNT(*) FROM b WHERE note = 'recalibrated\nafter storm' AND celsius = -7.5",
            )
            .await;
        assert_eq!(multi, 1, "{}", b.name);

        // Run 2 lands only the new file.
        b.put(&at("readings/c.csv"), readings_csv(6, 4).into_bytes())
            .await;
        layer("extract", "r2");
        layer("bronze", "r2");
        assert_eq!(count(&p, "bronze/readings").await, 9, "{}", b.name);
        assert_eq!(count(&p, "bronze/alerts").await, 4, "{}", b.name);

        // A retry of run 2 lands c.csv again (not d.csv, added since) and appends nothing.
        b.put(&at("readings/d.csv"), readings_csv(10, 1).into_bytes())
            .await;
        layer("extract", "r2");
        let manifest =
            std::fs::read_to_string(p.lake().join("landing/readings/run=r2/_manifest.json"))
                .unwrap();
        assert!(
            manifest.contains("readings/c.csv") && !manifest.contains("readings/d.csv"),
            "{}: {manifest}",
            b.name
        );
        layer("bronze", "r2");
        assert_eq!(count(&p, "bronze/readings").await, 9, "{}", b.name);
        let distinct = p
            .scalar(
                &[("b", "bronze/readings")],
                "SELECT COUNT(DISTINCT reading_id) FROM b",
            )
            .await;
        assert_eq!(distinct, 9, "{}", b.name);
    }
}

/// A Parquet value that breaks its declared type (a string longer than the contract's
/// `varchar(n)`, a NULL in a NOT NULL column) stops extraction (exit 3) naming the source file
/// and its row, not a landing file; with `on_error = "quarantine"` such rows land in
/// `bronze._quarantine_<table>` with the source file and row, and the others in bronze.
#[tokio::test(flavor = "multi_thread")]
async fn parquet_values_breaking_the_contract_name_the_source_file_and_row() {
    let names =
        |v: &[Option<&str>]| -> arrow::array::ArrayRef { Arc::new(StringArray::from(v.to_vec())) };
    let ids =
        |v: &[Option<i64>]| -> arrow::array::ArrayRef { Arc::new(Int64Array::from(v.to_vec())) };
    let p = Project::custom(MEASUREMENTS, &[]);
    write_parquet(
        &p,
        "m/a.parquet",
        vec![("id", ids(&[Some(1)])), ("name", names(&[Some("ab")]))],
    );
    expect(&p, &["source", "sync", "{p}"], 0);
    let path = p.dir.path().join("schemas/m/meas.toml");
    let contract = std::fs::read_to_string(&path).unwrap();
    let contract = contract
        .replacen("nullable = true", "nullable = false", 1)
        .replace(
            "name = \"name\"\n",
            "name = \"name\"\nsource_type = \"varchar(5)\"\n",
        );
    assert!(
        contract.contains("varchar(5)") && contract.contains("nullable = false"),
        "{contract}"
    );
    std::fs::write(&path, &contract).unwrap();
    // Re-running sync keeps the declared type: the first file's values fit it.
    let text = expect(&p, &["source", "sync", "{p}"], 0);
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("varchar(5)"),
        "{text}"
    );

    write_parquet(
        &p,
        "m/b.parquet",
        vec![
            ("id", ids(&[Some(2), Some(3), Some(4)])),
            ("name", names(&[Some("cd"), None, Some("much-too-long")])),
        ],
    );
    let text = layer(&p, "extract", "r1", 3);
    for want in [
        "bronze.meas",
        "`name`",
        "varchar(5)",
        "much-too-long",
        "m/b.parquet, row 3",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    assert!(!text.contains("landing"), "{text}");

    write_parquet(
        &p,
        "m/b.parquet",
        vec![
            ("id", ids(&[Some(2), None, Some(4)])),
            ("name", names(&[Some("cd"), Some("ef"), Some("gh")])),
        ],
    );
    let text = layer(&p, "extract", "r1", 3);
    for want in ["`id`", "NOT NULL", "m/b.parquet, row 2"] {
        assert!(text.contains(want), "{want}: {text}");
    }

    // Quarantine: both bad rows are set aside with their file and row; the rest land.
    write_parquet(
        &p,
        "m/b.parquet",
        vec![
            ("id", ids(&[Some(2), None, Some(4), Some(5)])),
            (
                "name",
                names(&[Some("cd"), Some("ef"), Some("much-too-long"), None]),
            ),
        ],
    );
    let toml = std::fs::read_to_string(p.pipeline()).unwrap().replace(
        "path = \"m/*.parquet\"",
        "path = \"m/*.parquet\"\non_error = \"quarantine\"",
    );
    std::fs::write(p.pipeline(), toml).unwrap();
    layer(&p, "extract", "r1", 0);
    layer(&p, "bronze", "r1", 0);
    assert_eq!(count(&p, "bronze/meas").await, 3);
    let rows = p
        .scalar(
            &[("q", "bronze/_quarantine_meas")],
            "SELECT SUM(_source_line) FROM q WHERE _source_file = 'm/b.parquet'",
        )
        .await;
    assert_eq!(rows, 2 + 3, "rows 2 and 3 of m/b.parquet");
}

/// A connection that drops while a CSV file streams from S3 or Azure (every read of the file is
/// cut off halfway) is transient: extraction exits 75 naming the file, and nothing lands.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_dropped_while_a_file_streams_exits_75() {
    use crate::http::{FaultProxy, Rule};
    for b in crate::storage::backends() {
        let prefix = crate::storage::unique("files-cut");
        // 20000 rows: inference (the first 1000) fits in the first half of the file.
        b.put(
            &format!("{prefix}/incoming/readings/big.csv"),
            readings_csv(1, 20_000).into_bytes(),
        )
        .await;
        let proxy = FaultProxy::start(
            b.endpoint.trim_start_matches("http://").to_string(),
            Rule {
                method: "GET",
                path_contains: "big.csv",
                faults: usize::MAX,
                cut_body: true,
            },
        )
        .await;
        let via = format!("http://127.0.0.1:{}", proxy.port);
        let mut options = b.options.clone();
        let mut env: Vec<(&str, &str)> = b.env();
        if b.name == "azure" {
            env.retain(|(k, _)| *k != "AZURITE_BLOB_STORAGE_URL");
            env.push(("AZURITE_BLOB_STORAGE_URL", &via));
        } else {
            options.retain(|(k, _)| *k != "endpoint");
            options.push(("endpoint", via.clone()));
        }
        let p = remote_project(&format!("{}/{prefix}/incoming", b.bucket_url), &options);
        let args = [
            "run",
            "{p}",
            "--layer",
            "extract",
            "--logical-date",
            "2026-11-30",
            "--run-id",
            "r1",
        ];
        let text = expect_code(&p.smelter_env(&args, &env), &args, 75);
        assert!(text.contains("big.csv"), "{}: {text}", b.name);
        assert!(proxy.injected() > 0, "{}: no read was cut", b.name);
        assert!(
            !p.lake()
                .join("landing/readings/run=r1/_manifest.json")
                .exists(),
            "{}: nothing lands",
            b.name
        );
    }
}
