//! The SQL Server source against the TDS fixture server: every type round-trips, incremental
//! windows, partition coverage, faults with retry, login failures and unsupported types.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int16Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Int64Type, TimeUnit};

use crate::support::{code, stderr, Project};
use crate::tds::{self, FixtureOptions, ServerOptions, TdsServer};

const PASSWORD: &str = "Fixture-S3cret!pw";

pub(crate) fn server(fixtures: FixtureOptions) -> TdsServer {
    TdsServer::start(ServerOptions {
        password: Some(PASSWORD.into()),
        fixtures,
        ..Default::default()
    })
    .expect("start TDS fixture server")
}

/// A project reading `tables` (TOML `[[source.tables]]` bodies) from the fixture server.
pub(crate) fn project(server: &TdsServer, tables: &[&str], extra_source: &str) -> Project {
    project_at(&format!("port = {}", server.port), tables, extra_source)
}

/// A project reaching the server through `address` (`port = ..` or `instance = ..` lines).
fn project_at(address: &str, tables: &[&str], extra_source: &str) -> Project {
    let mut toml = format!(
        r#"
name = "t"
[source]
type = "mssql"
host = "127.0.0.1"
{address}
user = "reader"
password_env = "T_MSSQL_PASSWORD"
encrypt = false
batch_size = 1000
{extra_source}
"#
    );
    if !extra_source.contains("connect_timeout_seconds") {
        toml.push_str("connect_timeout_seconds = 10\n");
    }
    for t in tables {
        toml.push_str("[[source.tables]]\n");
        toml.push_str(t);
        toml.push('\n');
    }
    toml.push_str("[storage]\nroot = \"lake\"\n");
    Project::custom(&toml, &[])
}

pub(crate) const ENV: &[(&str, &str)] = &[("T_MSSQL_PASSWORD", PASSWORD)];

fn run(p: &Project, layer: &str, date: &str, run_id: &str) -> std::process::Output {
    p.smelter_env(
        &[
            "run",
            "{p}",
            "--layer",
            layer,
            "--logical-date",
            date,
            "--run-id",
            run_id,
        ],
        ENV,
    )
}

fn ok(p: &Project, layer: &str, date: &str, run_id: &str) {
    let out = run(p, layer, date, run_id);
    assert_eq!(
        code(&out),
        0,
        "{layer} {date} {run_id} failed:\n{}",
        stderr(&out)
    );
}

/// Runs a layer that must fail with exit `want`; returns its stderr.
fn fails(p: &Project, layer: &str, date: &str, run_id: &str, want: i32) -> String {
    let out = run(p, layer, date, run_id);
    let err = stderr(&out);
    assert_eq!(code(&out), want, "{layer} {date} {run_id}:\n{err}");
    err
}

/// Every landed batch of a table and run.
fn landed(p: &Project, table: &str, run_id: &str) -> Vec<RecordBatch> {
    let dir = p.lake().join(format!("landing/{table}/run={run_id}"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|f| f.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let file = std::fs::File::open(&f).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        out.extend(reader.map(|b| b.unwrap()));
    }
    out
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

fn concat(batches: &[RecordBatch]) -> RecordBatch {
    arrow::compute::concat_batches(&batches[0].schema(), batches).unwrap()
}

/// A count over the fixture tables, computed independently of the server.
async fn fixture_count(opts: &FixtureOptions, sql: &str) -> i64 {
    let ctx = tds::fixtures::session(opts).unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let c = arrow::compute::cast(batches[0].column(0), &DataType::Int64).unwrap();
    c.as_primitive::<Int64Type>().value(0)
}

fn pad(a: &ArrayRef, n: usize) -> ArrayRef {
    let s = a.as_string::<i32>();
    Arc::new(StringArray::from_iter(s.iter().map(|v| {
        v.map(|v| {
            let len = v.chars().count();
            format!("{v}{}", " ".repeat(n.saturating_sub(len)))
        })
    })))
}

/// The expected landed columns for `dbo.AllTypes`, derived from the fixture's own values.
fn expected_all_types() -> Vec<(String, ArrayRef)> {
    let fixture = tds::fixtures::all_types().unwrap();
    let mut out = Vec::new();
    for (i, (name, decl)) in tds::fixtures::ALL_TYPES.iter().enumerate() {
        let a = fixture.column(i).clone();
        let name = name.to_string();
        match *decl {
            "tinyint" => out.push((name, arrow::compute::cast(&a, &DataType::Int16).unwrap())),
            "char(10)" => out.push((name, pad(&a, 10))),
            "nchar(5)" => out.push((name, pad(&a, 5))),
            d if d.starts_with("datetimeoffset") => {
                let ns = d == "datetimeoffset(7)";
                let s = a.as_string::<i32>();
                let parsed: Vec<Option<(i64, i64, i16)>> =
                    s.iter().map(|v| v.map(tds::types::parse_dto)).collect();
                let instant: ArrayRef = if ns {
                    Arc::new(
                        TimestampNanosecondArray::from_iter(
                            parsed
                                .iter()
                                .map(|p| p.map(|(d, n, _)| d * 86_400_000_000_000 + n)),
                        )
                        .with_timezone("UTC"),
                    )
                } else {
                    Arc::new(
                        TimestampMicrosecondArray::from_iter(
                            parsed
                                .iter()
                                .map(|p| p.map(|(d, n, _)| d * 86_400_000_000 + n / 1000)),
                        )
                        .with_timezone("UTC"),
                    )
                };
                out.push((name.clone(), instant));
                out.push((
                    format!("{name}_offset_minutes"),
                    Arc::new(Int16Array::from_iter(parsed.iter().map(|p| p.map(|x| x.2)))),
                ));
            }
            _ => out.push((name, a)),
        }
    }
    out
}

#[test]
fn every_type_round_trips_exactly() {
    let s = server(FixtureOptions::default());
    let p = project(
        &s,
        &[r#"name = "alltypes"
object = "dbo.AllTypes"
key = ["id"]"#],
        "",
    );
    ok(&p, "extract", "2026-11-01", "types");
    let got = concat(&landed(&p, "alltypes", "types"));
    assert_eq!(got.num_rows(), 4);
    let schema = got.schema();
    let expected = expected_all_types();
    assert_eq!(
        schema.fields().len(),
        expected.len(),
        "landed columns: {:?}",
        schema.fields().iter().map(|f| f.name()).collect::<Vec<_>>()
    );
    for (name, want) in &expected {
        let idx = schema
            .index_of(name)
            .unwrap_or_else(|_| panic!("column {name} missing"));
        let have = got.column(idx);
        assert_eq!(have.data_type(), want.data_type(), "type of column {name}");
        assert_eq!(have.as_ref(), want.as_ref(), "values of column {name}");
    }
    // Spot checks of the mapping itself, independent of the fixture's storage.
    let ty = |n: &str| schema.field_with_name(n).unwrap().data_type().clone();
    assert_eq!(ty("c_dec38_38"), DataType::Decimal128(38, 38));
    assert_eq!(ty("c_money"), DataType::Decimal128(19, 4));
    assert_eq!(ty("c_smallmoney"), DataType::Decimal128(10, 4));
    assert_eq!(
        ty("c_dt2_7"),
        DataType::Timestamp(TimeUnit::Nanosecond, None)
    );
    assert_eq!(
        ty("c_dt2_3"),
        DataType::Timestamp(TimeUnit::Microsecond, None)
    );
    assert_eq!(ty("c_time7"), DataType::Time64(TimeUnit::Nanosecond));
    let offsets = got
        .column(schema.index_of("c_dto7_offset_minutes").unwrap())
        .as_primitive::<arrow::datatypes::Int16Type>()
        .clone();
    assert_eq!(offsets.value(0), 330);
    assert_eq!(offsets.value(1), -480);
    // Money went through a server-side cast to decimal, never through f64.
    let sent = s.received();
    assert!(
        sent.iter().any(|r| r
            .sql
            .contains("CAST([c_money] AS decimal(19,4)) AS [c_money]")),
        "money select: {sent:?}"
    );
}

/// Microseconds since 1970 of a UTC timestamp text.
fn micros(s: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .unwrap()
        .and_utc()
        .timestamp_micros()
}

#[tokio::test(flavor = "multi_thread")]
async fn sub_microsecond_ticks_floor_in_bronze_also_before_1970() {
    let s = server(FixtureOptions::default());
    let p = project(
        &s,
        &[r#"name = "instants"
query = "SELECT id, c_dt2_7, c_dto7 FROM dbo.AllTypes"
key = ["id"]"#],
        "",
    );
    ok(&p, "extract", "2026-11-01", "f1");
    ok(&p, "bronze", "2026-11-01", "f1");
    let got = concat(
        &p.query(
            &[("t", "bronze/instants")],
            "SELECT c_dt2_7, c_dto7 FROM t ORDER BY id",
        )
        .await,
    );
    let us = |i: usize| -> Vec<Option<i64>> {
        got.column(i)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
            .iter()
            .collect()
    };
    let (dt2, dto) = (us(0), us(1));
    // The two pre-1970 values with a sub-microsecond part floor to the earlier microsecond.
    assert_eq!(dt2[0], Some(micros("1677-09-22 00:00:00")), "c_dt2_7 row 1");
    assert_eq!(
        dto[3],
        Some(micros("1969-12-31 23:59:59.999999")),
        "c_dto7 row 4"
    );
    // Every value is the fixture's 100 ns instant floored, on either side of 1970.
    let fixture = tds::fixtures::all_types().unwrap();
    let index = |n: &str| {
        tds::fixtures::ALL_TYPES
            .iter()
            .position(|(c, _)| *c == n)
            .unwrap()
    };
    let want_dt2: Vec<Option<i64>> = fixture
        .column(index("c_dt2_7"))
        .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
        .iter()
        .map(|v| v.map(|ns| ns.div_euclid(1000)))
        .collect();
    let want_dto: Vec<Option<i64>> = fixture
        .column(index("c_dto7"))
        .as_string::<i32>()
        .iter()
        .map(|v| {
            v.map(tds::types::parse_dto)
                .map(|(d, ns, _)| (d * 86_400_000_000_000 + ns).div_euclid(1000))
        })
        .collect();
    assert_eq!(dt2, want_dt2);
    assert_eq!(dto, want_dto);
}

#[test]
fn unsupported_type_names_table_and_column() {
    let s = server(FixtureOptions::default());
    let p = project(
        &s,
        &[r#"name = "odd"
object = "dbo.Unsupported""#],
        "",
    );
    let err = fails(&p, "extract", "2026-11-01", "odd", 2);
    assert!(err.contains("dbo.Unsupported"), "{err}");
    assert!(
        err.contains("c_variant") && err.contains("sql_variant"),
        "{err}"
    );
    // Discovery failed before any data query was sent.
    assert!(!s
        .received()
        .iter()
        .any(|r| r.sql.contains("FROM [dbo].[Unsupported]")));
}

#[test]
fn login_failure_is_fatal_and_never_shows_the_password() {
    let s = server(FixtureOptions::default());
    let p = project(&s, &[r#"name = "carriers""#], "");
    let wrong = "Wrong-Pa55word-123";
    let out = p.smelter_env(
        &["run", "{p}", "--layer", "extract", "--run-id", "l1"],
        &[("T_MSSQL_PASSWORD", wrong)],
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(err.contains("18456"), "{err}");
    assert!(!err.contains(wrong) && !String::from_utf8_lossy(&out.stdout).contains(wrong));

    s.faults.reject_login.store(true, Ordering::SeqCst);
    let out = run(&p, "extract", "2026-11-01", "l2");
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(!stderr(&out).contains(PASSWORD));
}

#[test]
fn missing_password_env_is_a_usage_error() {
    let s = server(FixtureOptions::default());
    let p = project(&s, &[r#"name = "carriers""#], "");
    let out = p.smelter(&["run", "{p}", "--layer", "extract", "--run-id", "m1"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(err.contains("T_MSSQL_PASSWORD"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn watermark_incremental_across_two_logical_dates() {
    let opts = FixtureOptions::default();
    let s = server(opts.clone());
    let p = project(
        &s,
        &[r#"name = "shipments"
key = ["shipment_id"]
watermark = "modified_at""#],
        "",
    );
    // Day 1, with a crash after extract: the retry re-extracts the same window.
    ok(&p, "extract", "2026-11-01", "d1");
    let first = rows(&landed(&p, "shipments", "d1"));
    ok(&p, "extract", "2026-11-01", "d1");
    assert_eq!(rows(&landed(&p, "shipments", "d1")), first);
    ok(&p, "bronze", "2026-11-01", "d1");
    let want1 = fixture_count(
        &opts,
        "SELECT COUNT(*) FROM dbo.shipments WHERE modified_at < TIMESTAMP '2026-11-02 00:00:00'",
    )
    .await;
    assert_eq!(first as i64, want1);

    // Day 2 starts after the committed watermark.
    ok(&p, "extract", "2026-11-02", "d2");
    ok(&p, "bronze", "2026-11-02", "d2");
    let second = rows(&landed(&p, "shipments", "d2"));
    let want2 = fixture_count(
        &opts,
        "SELECT COUNT(*) FROM dbo.shipments WHERE modified_at >= TIMESTAMP '2026-11-02 00:00:00' \
         AND modified_at < TIMESTAMP '2026-11-03 00:00:00'",
    )
    .await;
    assert!(want2 > 0);
    assert_eq!(second as i64, want2);
    let total = p
        .scalar(&[("b", "bronze/shipments")], "SELECT COUNT(*) FROM b")
        .await;
    assert_eq!(total, want1 + want2);

    // The watermark travelled as a bound parameter, never as SQL text.
    let day2: Vec<_> = s
        .received()
        .into_iter()
        .filter(|r| r.sql.contains("[modified_at] > @P1"))
        .collect();
    assert!(!day2.is_empty(), "no incremental query: {:?}", s.received());
    for r in &day2 {
        assert!(!r.sql.contains("2026-11"), "literal in {}", r.sql);
        assert_eq!(r.params.len(), 2, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_cover_every_key_once() {
    let s = server(FixtureOptions {
        big_rows: 10_007,
        ..Default::default()
    });
    let p = project(
        &s,
        &[
            r#"name = "big"
object = "dbo.Big"
key = ["id"]
partitions = 4"#,
            // A nullable key: the NULL row must land too (first partition).
            r#"name = "alltypes"
object = "dbo.AllTypes"
key = ["c_int"]
partitions = 3"#,
        ],
        "",
    );
    ok(&p, "extract", "2026-11-01", "p1");
    let big = landed(&p, "big", "p1");
    let files = std::fs::read_dir(p.lake().join("landing/big/run=p1"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "parquet")
        })
        .count();
    assert_eq!(files, 4);
    let mut ids: Vec<i64> = big
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=10_007).collect::<Vec<_>>());
    assert_eq!(rows(&landed(&p, "alltypes", "p1")), 4);
    let range_queries = s
        .received()
        .into_iter()
        .filter(|r| r.sql.contains("FROM [dbo].[Big] WHERE"))
        .count();
    assert_eq!(range_queries, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_connection_and_deadlock_retry_without_duplicates() {
    let opts = FixtureOptions::default();
    let s = server(opts.clone());
    let p = project(
        &s,
        &[r#"name = "shipments"
key = ["shipment_id"]
watermark = "modified_at"
partitions = 2"#],
        "",
    );
    let source = fixture_count(
        &opts,
        "SELECT COUNT(*) FROM dbo.shipments WHERE modified_at < TIMESTAMP '2026-11-02 00:00:00'",
    )
    .await;

    // The connection drops mid-stream: transient.
    *s.faults.only_matching.lock().unwrap() = Some("FROM [dbo].[shipments] WHERE".into());
    s.faults.drop_after_rows.store(700, Ordering::SeqCst);
    s.faults.drops.store(1, Ordering::SeqCst);
    let out = run(&p, "extract", "2026-11-01", "f1");
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(stderr(&out).contains("shipments"), "{}", stderr(&out));

    // A deadlock victim on the retry: transient again.
    s.faults.deadlocks.store(1, Ordering::SeqCst);
    let out = run(&p, "extract", "2026-11-01", "f1");
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(stderr(&out).contains("1205"), "{}", stderr(&out));

    // The next retry of the same run id succeeds; bronze gets every row exactly once.
    ok(&p, "extract", "2026-11-01", "f1");
    ok(&p, "bronze", "2026-11-01", "f1");
    ok(&p, "bronze", "2026-11-01", "f1");
    let landed_rows = rows(&landed(&p, "shipments", "f1")) as i64;
    assert_eq!(landed_rows, source);
    let bronze = p
        .scalar(&[("b", "bronze/shipments")], "SELECT COUNT(*) FROM b")
        .await;
    assert_eq!(bronze, source);
    let runs = p
        .scalar(
            &[("b", "bronze/shipments")],
            "SELECT COUNT(DISTINCT _run_id) FROM b",
        )
        .await;
    assert_eq!(runs, 1);
}

#[test]
fn query_timeout_is_transient() {
    let s = server(FixtureOptions::default());
    let p = project(&s, &[r#"name = "carriers""#], "query_timeout_seconds = 1");
    *s.faults.only_matching.lock().unwrap() = Some("FROM [dbo].[carriers]".into());
    s.faults.stall_ms.store(4_000, Ordering::SeqCst);
    s.faults.stalls.store(1, Ordering::SeqCst);
    let out = run(&p, "extract", "2026-11-01", "t1");
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    ok(&p, "extract", "2026-11-01", "t1");
}

#[tokio::test(flavor = "multi_thread")]
async fn logistics_pipeline_runs_end_to_end_against_the_fixture() {
    let opts = FixtureOptions::default();
    let s = TdsServer::start(ServerOptions {
        fixtures: opts.clone(),
        ..Default::default()
    })
    .unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let toml = std::fs::read_to_string(repo.join("pipelines/logistics.toml")).unwrap();
    let p = Project::custom(&toml, &[]);
    crate::support::copy_dir(&repo.join("sql/demo"), &p.dir.path().join("sql/demo"));
    crate::support::copy_dir(
        &repo.join("schemas/logistics"),
        &p.dir.path().join("schemas/logistics"),
    );
    let port = s.port.to_string();
    let env = [
        ("SMELTER_MSSQL_PORT", port.as_str()),
        ("SMELTER_MSSQL_ENCRYPT", "false"),
        ("SMELTER_MSSQL_PASSWORD", "any"),
    ];
    let out = p.smelter_env(
        &[
            "run",
            "{p}",
            "--logical-date",
            "2026-11-01",
            "--run-id",
            "e2e",
        ],
        &env,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for table in tds::fixtures::SAMPLE_TABLES {
        let landed = rows(&landed(&p, table, "e2e")) as i64;
        let bronze = p
            .scalar(
                &[("b", &format!("bronze/{table}"))],
                "SELECT COUNT(*) FROM b",
            )
            .await;
        assert_eq!(landed, bronze, "{table}");
        let source = fixture_count(
            &opts,
            &format!(
                "SELECT COUNT(*) FROM dbo.{table} WHERE modified_at < TIMESTAMP '2026-11-02 00:00:00'"
            ),
        )
        .await;
        assert_eq!(landed, source, "{table}");
    }
    let gold = p
        .scalar(
            &[("g", "gold/revenue_by_customer")],
            "SELECT COUNT(*) FROM g",
        )
        .await;
    assert!(gold > 0);
    // Lineage describes the SQL Server tables with the types their contracts declare.
    let bronze: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(p.dir.path().join("lineage/e2e/bronze.json")).unwrap(),
    )
    .unwrap();
    let schema = bronze
        .iter()
        .find(|m| {
            m["aspectName"] == "schemaMetadata"
                && m["entityUrn"]
                    == "urn:li:dataset:(urn:li:dataPlatform:mssql,LogisticsDB.dbo.carriers,PROD)"
        })
        .expect("schemaMetadata of the source table");
    let code = schema["aspect"]["json"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fieldPath"] == "carrier_code")
        .unwrap();
    assert_eq!(code["nativeDataType"], "nvarchar(200)", "{code}");
    assert_eq!(
        code["type"]["type"],
        serde_json::json!({ "com.linkedin.schema.StringType": {} })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn query_sources_take_watermarks_partitions_and_exact_types() {
    let opts = FixtureOptions {
        big_rows: 3_001,
        ..Default::default()
    };
    let s = server(opts.clone());
    let p = project(
        &s,
        &[
            r#"name = "even"
query = "SELECT id, amount, name, CAST(amount * 2 AS decimal(20,4)) AS doubled FROM dbo.Big WHERE id % 2 = 0;"
key = ["id"]
partitions = 3"#,
            r#"name = "recent"
query = """
SELECT s.shipment_id, s.modified_at
FROM dbo.shipments AS s
"""
key = ["shipment_id"]
watermark = "modified_at""#,
        ],
        "",
    );
    ok(&p, "extract", "2026-11-01", "q1");

    // Types come from the server's description of the query, not from the values.
    let even = concat(&landed(&p, "even", "q1"));
    let schema = even.schema();
    let ty = |n: &str| schema.field_with_name(n).unwrap().data_type().clone();
    assert_eq!(ty("amount"), DataType::Decimal128(18, 4));
    assert_eq!(ty("doubled"), DataType::Decimal128(20, 4));
    assert_eq!(ty("name"), DataType::Utf8);
    let mut ids: Vec<i64> = even.column(0).as_primitive::<Int64Type>().values().to_vec();
    ids.sort_unstable();
    assert_eq!(ids, (1..=3_001).filter(|i| i % 2 == 0).collect::<Vec<_>>());
    let amount = even
        .column(1)
        .as_primitive::<arrow::datatypes::Decimal128Type>();
    let doubled = even
        .column(3)
        .as_primitive::<arrow::datatypes::Decimal128Type>();
    for i in 0..even.num_rows() {
        assert_eq!(doubled.value(i), amount.value(i) * 2);
    }
    let sent = s.received();
    let reads: Vec<_> = sent
        .iter()
        .filter(|r| r.sql.contains("FROM (SELECT id, amount") && r.sql.contains(") AS [q]"))
        .collect();
    // MIN/MAX of the key plus three range reads, all over the derived table.
    assert_eq!(reads.len(), 4, "{sent:?}");
    assert!(sent.iter().any(
        |r| r.sql.contains("sys.dm_exec_describe_first_result_set(@P1")
            && r.params.iter().any(|v| v.contains("FROM dbo.Big"))
    ));

    // The watermark filter applies to the query's output, as a bound parameter.
    let recent = rows(&landed(&p, "recent", "q1")) as i64;
    let want = fixture_count(
        &opts,
        "SELECT COUNT(*) FROM dbo.shipments WHERE modified_at < TIMESTAMP '2026-11-02 00:00:00'",
    )
    .await;
    assert_eq!(recent, want);
    ok(&p, "bronze", "2026-11-01", "q1");
    ok(&p, "extract", "2026-11-02", "q2");
    let day2 = rows(&landed(&p, "recent", "q2")) as i64;
    let want2 = fixture_count(
        &opts,
        "SELECT COUNT(*) FROM dbo.shipments WHERE modified_at >= TIMESTAMP '2026-11-02 00:00:00' \
         AND modified_at < TIMESTAMP '2026-11-03 00:00:00'",
    )
    .await;
    assert_eq!(day2, want2);
    assert!(s.received().iter().any(|r| r
        .sql
        .contains(") AS [q] WHERE [modified_at] > @P1 AND [modified_at] < @P2")));

    // A query the server cannot describe fails before any data moves, naming the table.
    let bad = project(
        &s,
        &[r#"name = "broken"
query = "SELECT no_such_column FROM dbo.Big""#],
        "",
    );
    let err = fails(&bad, "extract", "2026-11-01", "q3", 2);
    assert!(
        err.contains("broken") && err.contains("cannot describe"),
        "{err}"
    );
    assert!(err.contains("no_such_column"), "{err}");
}

#[test]
fn casts_opt_in_for_unsupported_types() {
    let s = server(FixtureOptions::default());
    let p = project(
        &s,
        &[r#"name = "odd"
object = "dbo.Unsupported"
casts = { c_variant = "nvarchar(max)", c_geo = "NVARCHAR(max)" }"#],
        "",
    );
    ok(&p, "extract", "2026-11-01", "c1");
    let got = concat(&landed(&p, "odd", "c1"));
    let col = |n: &str| {
        got.column(got.schema().index_of(n).unwrap())
            .as_string::<i32>()
            .value(0)
            .to_string()
    };
    assert_eq!(col("c_variant"), "x");
    assert_eq!(col("c_geo"), "POINT(0 0)");
    assert!(s
        .received()
        .iter()
        .any(|r| r.sql.contains("CAST([c_geo] AS nvarchar(max)) AS [c_geo]")));

    // A cast target Smelter does not map, or a malformed one, is refused by validation.
    for (casts, what) in [
        (r#"{ id = "geography" }"#, "casts.id"),
        (r#"{ id = "int); DROP TABLE x; --" }"#, "casts.id"),
    ] {
        let bad = project(
            &s,
            &[&format!(
                "name = \"odd\"\nobject = \"dbo.Unsupported\"\ncasts = {casts}"
            )],
            "",
        );
        let out = bad.smelter(&["validate", "{p}"]);
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        assert!(stderr(&out).contains(what), "{}", stderr(&out));
    }
    // A cast of a column the source does not have names it.
    let missing = project(
        &s,
        &[r#"name = "odd"
object = "dbo.Unsupported"
casts = { c_nope = "nvarchar(max)" }"#],
        "",
    );
    let out = run(&missing, "extract", "2026-11-01", "c2");
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("c_nope"), "{}", stderr(&out));
}

#[test]
fn named_instance_port_comes_from_the_sql_browser() {
    let s = TdsServer::start(ServerOptions {
        password: Some(PASSWORD.into()),
        instance: Some("LOGISTICS".into()),
        ..Default::default()
    })
    .unwrap();
    let browser = s.browser_port.unwrap();
    let p = project_at(
        &format!("instance = \"logistics\"\nbrowser_port = {browser}"),
        &[r#"name = "carriers""#],
        "packet_size = 8192",
    );
    ok(&p, "extract", "2026-11-01", "i1");
    assert!(rows(&landed(&p, "carriers", "i1")) > 0);
    // The asked-for packet size was granted on every connection.
    let sessions = s.sessions();
    assert!(!sessions.is_empty());
    assert!(
        sessions.iter().all(|x| x.packet_size == 8192),
        "{sessions:?}"
    );

    // An instance the browser does not know: no answer, a transient error naming it.
    let p = project_at(
        &format!("instance = \"OTHER\"\nbrowser_port = {browser}"),
        &[r#"name = "carriers""#],
        "connect_timeout_seconds = 1",
    );
    let err = fails(&p, "extract", "2026-11-01", "i2", 75);
    assert!(
        err.contains("SQL Browser") && err.contains("OTHER"),
        "{err}"
    );
}

#[test]
fn encryption_is_on_by_default_and_verifies_the_server_certificate() {
    let s = TdsServer::start(ServerOptions {
        password: Some(PASSWORD.into()),
        tls: Some(tds::test_identity()),
        ..Default::default()
    })
    .unwrap();
    let address = format!("port = {}", s.port);
    // `encrypt` is left at its default (on) in every project below.
    let tls_project = |extra: &str| {
        let toml = format!(
            r#"
name = "t"
[source]
type = "mssql"
host = "127.0.0.1"
{address}
user = "reader"
password_env = "T_MSSQL_PASSWORD"
connect_timeout_seconds = 10
{extra}
[[source.tables]]
name = "carriers"
[storage]
root = "lake"
"#
        );
        let p = Project::custom(&toml, &[]);
        std::fs::write(p.dir.path().join("ca.pem"), tds::TEST_CA).unwrap();
        p
    };

    // The server's CA given as a file: verified, encrypted, and the data arrives.
    let p = tls_project(r#"ca_certificate = "ca.pem""#);
    ok(&p, "extract", "2026-11-01", "tls1");
    let plain = rows(&landed(&p, "carriers", "tls1"));
    assert!(plain > 0);
    let sessions = s.sessions();
    assert!(!sessions.is_empty());
    assert!(sessions.iter().all(|x| x.encrypted), "{sessions:?}");

    // Trusting any certificate is an explicit choice, and it works too.
    let p = tls_project("trust_server_certificate = true");
    ok(&p, "extract", "2026-11-01", "tls2");
    assert_eq!(rows(&landed(&p, "carriers", "tls2")), plain);

    // Without either, the unknown CA is refused: a fatal error with the way out.
    let p = tls_project("");
    let err = fails(&p, "extract", "2026-11-01", "tls3", 2);
    assert!(err.contains("TLS"), "{err}");
    assert!(err.contains("trust_server_certificate"), "{err}");
    assert!(!err.contains(PASSWORD));
}

#[tokio::test(flavor = "multi_thread")]
async fn rowversion_watermark_lookback_and_password_file() {
    let opts = FixtureOptions::default();
    let s = server(opts.clone());
    let toml = format!(
        r#"
name = "t"
[source]
type = "mssql"
host = "127.0.0.1"
port = {port}
user = "reader"
password_file = "secrets/mssql"
encrypt = false
connect_timeout_seconds = 10
[[source.tables]]
name = "versioned"
object = "dbo.Versioned"
key = ["id"]
watermark = "rv"
[[source.tables]]
name = "shipments"
key = ["shipment_id"]
watermark = "modified_at"
lookback_seconds = 3600
[storage]
root = "lake"
"#,
        port = s.port
    );
    // The password comes from a mounted secret file; its trailing newline is not part of it.
    let p = Project::custom(&toml, &[]);
    std::fs::create_dir_all(p.dir.path().join("secrets")).unwrap();
    std::fs::write(p.dir.path().join("secrets/mssql"), format!("{PASSWORD}\n")).unwrap();
    let day = |date: &str, run: &str| {
        let out = p.smelter(&[
            "run",
            "{p}",
            "--layer",
            "extract",
            "--logical-date",
            date,
            "--run-id",
            run,
        ]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let out = p.smelter(&[
            "run",
            "{p}",
            "--layer",
            "bronze",
            "--logical-date",
            date,
            "--run-id",
            run,
        ]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    };
    day("2026-11-01", "r1");

    // rowversion lands as its big-endian counter.
    let v = concat(&landed(&p, "versioned", "r1"));
    let rv = v
        .column(v.schema().index_of("rv").unwrap())
        .as_primitive::<Int64Type>();
    let ids = v.column(0).as_primitive::<arrow::datatypes::Int32Type>();
    for i in 0..v.num_rows() {
        assert_eq!(
            rv.value(i),
            tds::fixtures::ROW_VERSIONS[ids.value(i) as usize - 1]
        );
    }
    assert_eq!(v.num_rows(), tds::fixtures::ROW_VERSIONS.len());

    day("2026-11-02", "r2");
    // Nothing is newer than the committed rowversion: the bound watermark filters every row.
    assert_eq!(rows(&landed(&p, "versioned", "r2")), 0);
    let max = tds::fixtures::ROW_VERSIONS
        .iter()
        .max()
        .unwrap()
        .to_string();
    assert!(
        s.received()
            .iter()
            .any(|r| r.sql.contains("[rv] > CONVERT(binary(8), @P1)")
                && r.params == vec![max.clone()]),
        "{:?}",
        s.received()
    );

    // Day 2 of the timestamp watermark re-reads the last hour of day 1 (the lookback).
    let want = fixture_count(
        &opts,
        "SELECT COUNT(*) FROM dbo.shipments WHERE modified_at < TIMESTAMP '2026-11-03 00:00:00' AND \
         modified_at > (SELECT MAX(modified_at) FROM dbo.shipments \
                        WHERE modified_at < TIMESTAMP '2026-11-02 00:00:00') - INTERVAL '1 hour'",
    )
    .await;
    let only_day2 = fixture_count(
        &opts,
        "SELECT COUNT(*) FROM dbo.shipments WHERE modified_at >= TIMESTAMP '2026-11-02 00:00:00' \
         AND modified_at < TIMESTAMP '2026-11-03 00:00:00'",
    )
    .await;
    let got = rows(&landed(&p, "shipments", "r2")) as i64;
    assert_eq!(got, want);
    assert!(
        want > only_day2,
        "the lookback re-read nothing: {want} vs {only_day2}"
    );
}

/// SIGTERM (how Airflow stops a task) while a source query is in flight: one log line, exit 75,
/// nothing landed; the retry with the same run id lands the table.
#[test]
fn sigterm_abandons_the_step_in_flight_and_exits_75() {
    let s = server(FixtureOptions::default());
    let p = project(&s, &[r#"name = "carriers""#], "query_timeout_seconds = 120");
    *s.faults.only_matching.lock().unwrap() = Some("FROM [dbo].[carriers]".into());
    s.faults.stall_ms.store(5_000, Ordering::SeqCst);
    s.faults.stalls.store(1, Ordering::SeqCst);
    let args = [
        "run",
        "{p}",
        "--layer",
        "extract",
        "--logical-date",
        "2026-11-01",
        "--run-id",
        "term",
    ];
    let child = p
        .command(&args, ENV)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn smelter");
    // The stall is taken when the extraction query reaches the server: it is then in flight.
    let mut waited = 0;
    while s.faults.stalls.load(Ordering::SeqCst) > 0 {
        assert!(
            waited < 300,
            "the extraction query never reached the server"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
        waited += 1;
    }
    // SAFETY: signalling our own child process by its pid.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 75, "{err}");
    assert!(err.contains("stopped by SIGTERM"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !p.lake()
            .join("landing/carriers/run=term/_manifest.json")
            .exists(),
        "an abandoned extraction publishes no manifest"
    );
    // The interrupted attempt is in the run log, with exit code 75.
    let failed = tokio::runtime::Runtime::new().unwrap().block_on(p.scalar(
        &[("r", "_smelter/runs")],
        "SELECT COUNT(*) FROM r WHERE run_id = 'term' AND layer = 'extract' \
         AND status = 'failed' AND exit_code = 75 AND message LIKE '%SIGTERM%'",
    ));
    assert_eq!(failed, 1);
    ok(&p, "extract", "2026-11-01", "term");
    assert!(p
        .lake()
        .join("landing/carriers/run=term/_manifest.json")
        .exists());
}

/// `[source] connection`: host, port, login, password, database and extras come from Airflow's
/// `AIRFLOW_CONN_<ID>`, in the URI form (percent-encoded, as `Connection.get_uri()` writes it)
/// and in the JSON form, with a password full of URI and JSON metacharacters; the password never
/// shows, a wrong one is a login failure (exit 2) and a connection of another type is refused.
#[test]
fn source_credentials_come_from_an_airflow_connection_in_uri_and_json_forms() {
    let password = r#"p@ss:w/rd?#%&=+ "{}'\é"#;
    let s = TdsServer::start(ServerOptions {
        password: Some(password.into()),
        fixtures: FixtureOptions::default(),
        ..Default::default()
    })
    .expect("start TDS fixture server");
    let p = Project::custom(
        r#"
name = "t"
[source]
type = "mssql"
connection = "sql_server_default"
connect_timeout_seconds = 10
[[source.tables]]
name = "carriers"
[storage]
root = "lake"
"#,
        &[],
    );
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let uri = format!(
        "mssql://reader:{}@127.0.0.1:{}/LogisticsDB?encrypt=false",
        enc(password),
        s.port
    );
    let json = serde_json::json!({
        "conn_type": "mssql",
        "host": "127.0.0.1",
        "port": s.port,
        "schema": "LogisticsDB",
        "login": "reader",
        "password": password,
        "extra": {"encrypt": false},
    })
    .to_string();
    let shown = |out: &std::process::Output| {
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(out));
        text.contains(password) || text.contains(&enc(password))
    };
    for (form, conn) in [("uri", &uri), ("json", &json)] {
        let env = [("AIRFLOW_CONN_SQL_SERVER_DEFAULT", conn.as_str())];
        let out = p.smelter_env(
            &["run", "{p}", "--layer", "extract", "--run-id", form, "-v"],
            &env,
        );
        assert_eq!(code(&out), 0, "{form}: {}", stderr(&out));
        assert!(!shown(&out), "{form}: the password shows");
        assert!(
            rows(&landed(&p, "carriers", form)) > 0,
            "{form}: nothing landed"
        );
        // The database comes from the connection's schema; the plan never holds the password.
        let out = p.smelter_env(&["plan", "{p}", "--format", "json"], &env);
        assert_eq!(code(&out), 0, "{form}: {}", stderr(&out));
        let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(plan["source"]["database"], "LogisticsDB", "{form}");
        assert!(!shown(&out), "{form}: the password shows in the plan");
    }

    // A wrong password in the connection: a login failure, exit 2, neither password shown.
    let wrong = uri.replace(&enc(password), &enc("Wr0ng-p@ss:word"));
    let out = p.smelter_env(
        &["run", "{p}", "--layer", "extract", "--run-id", "bad"],
        &[("AIRFLOW_CONN_SQL_SERVER_DEFAULT", &wrong)],
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(err.contains("18456"), "{err}");
    assert!(!err.contains("Wr0ng-p@ss:word") && !shown(&out), "{err}");

    // A connection of another type: a config error naming the key and the type.
    let out = p.smelter_env(
        &["run", "{p}", "--layer", "extract", "--run-id", "wasb"],
        &[(
            "AIRFLOW_CONN_SQL_SERVER_DEFAULT",
            &uri.replace("mssql://", "wasb://"),
        )],
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        err.contains("source.connection") && err.contains("`wasb`"),
        "{err}"
    );
    assert!(!shown(&out), "{err}");
}
