//! The TPC-H pipeline (`pipelines/tpch.toml`, `sql/tpch/`) end to end against the TDS fixture
//! server serving `tpchgen` data as SQL Server tables (`tpch.*`, TPC-H's SQL types).
//!
//! One run of every layer at a small scale factor, then: bronze holds every generated row with the
//! declared types (char(n) padded on the wire, decimal(15,2) exact), silver is trimmed and renamed,
//! and each gold mart equals the textbook TPC-H query (original column names, validation
//! parameters) run by DataFusion directly over the generated tables, bypassing SQL Server,
//! extract, bronze and silver. The Python test `tests/python/test_tpch_duckdb.py` checks the same
//! marts against DuckDB.

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use crate::support::{code, stderr, Project};
use crate::tds::{tpch, FixtureOptions, ServerOptions, TdsServer};

/// Small enough for seconds per layer, large enough that every query returns rows.
pub(crate) const SCALE: f64 = 0.01;
pub(crate) const PASSWORD: &str = "Tpch-Fixture-pw1";

/// `(gold mart, textbook TPC-H query with its output columns named as the mart's, ORDER BY list
/// that makes the comparison deterministic)`.
const MARTS: &[(&str, &str, &str)] = &[
    (
        "q1_pricing_summary",
        "SELECT l_returnflag AS return_flag, l_linestatus AS line_status,
                SUM(l_quantity) AS sum_qty, SUM(l_extendedprice) AS sum_base_price,
                SUM(l_extendedprice * (1 - l_discount)) AS sum_disc_price,
                SUM(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge,
                AVG(l_quantity) AS avg_qty, AVG(l_extendedprice) AS avg_price,
                AVG(l_discount) AS avg_disc, COUNT(*) AS count_order
         FROM lineitem
         WHERE l_shipdate <= DATE '1998-12-01' - INTERVAL '90 days'
         GROUP BY l_returnflag, l_linestatus",
        "return_flag, line_status",
    ),
    (
        "q3_shipping_priority",
        "SELECT l_orderkey AS order_key, SUM(l_extendedprice * (1 - l_discount)) AS revenue,
                o_orderdate AS order_date, o_shippriority AS ship_priority
         FROM customer, orders, lineitem
         WHERE c_mktsegment = 'BUILDING' AND c_custkey = o_custkey AND l_orderkey = o_orderkey
           AND o_orderdate < DATE '1995-03-15' AND l_shipdate > DATE '1995-03-15'
         GROUP BY l_orderkey, o_orderdate, o_shippriority
         ORDER BY revenue DESC, o_orderdate
         LIMIT 10",
        "order_key",
    ),
    (
        "q5_local_supplier_volume",
        "SELECT n_name AS nation_name, SUM(l_extendedprice * (1 - l_discount)) AS revenue
         FROM customer, orders, lineitem, supplier, nation, region
         WHERE c_custkey = o_custkey AND l_orderkey = o_orderkey AND l_suppkey = s_suppkey
           AND c_nationkey = s_nationkey AND s_nationkey = n_nationkey
           AND n_regionkey = r_regionkey AND r_name = 'ASIA'
           AND o_orderdate >= DATE '1994-01-01' AND o_orderdate < DATE '1995-01-01'
         GROUP BY n_name",
        "nation_name",
    ),
    (
        "q10_returned_items",
        "SELECT c_custkey AS cust_key, c_name AS customer_name,
                SUM(l_extendedprice * (1 - l_discount)) AS revenue, c_acctbal AS account_balance,
                n_name AS nation_name, c_address AS address, c_phone AS phone, c_comment AS comment
         FROM customer, orders, lineitem, nation
         WHERE c_custkey = o_custkey AND l_orderkey = o_orderkey
           AND o_orderdate >= DATE '1993-10-01' AND o_orderdate < DATE '1994-01-01'
           AND l_returnflag = 'R' AND c_nationkey = n_nationkey
         GROUP BY c_custkey, c_name, c_acctbal, c_phone, n_name, c_address, c_comment
         ORDER BY revenue DESC
         LIMIT 20",
        "cust_key",
    ),
];

/// The generated tables in a DataFusion session under their TPC-H names.
fn reference(tables: &[(&str, Vec<RecordBatch>)]) -> SessionContext {
    let ctx = SessionContext::new();
    for (name, batches) in tables {
        let t = MemTable::try_new(tpch::schema(name).unwrap(), vec![batches.clone()]).unwrap();
        ctx.register_table(*name, std::sync::Arc::new(t)).unwrap();
    }
    ctx
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// The TPC-H tables at [`SCALE`], and a TDS fixture server serving them as SQL Server tables
/// (`tpch.*`, password [`PASSWORD`]).
pub(crate) fn serve_tpch() -> (Vec<(&'static str, Vec<RecordBatch>)>, TdsServer) {
    let generated = tpch::generate(SCALE).unwrap();
    let server = TdsServer::start(ServerOptions {
        password: Some(PASSWORD.into()),
        fixtures: FixtureOptions {
            tpch_scale_factor: SCALE,
            ..Default::default()
        },
        ..Default::default()
    })
    .expect("start TDS fixture server");
    (generated, server)
}

#[tokio::test(flavor = "multi_thread")]
async fn tpch_pipeline_runs_end_to_end_and_matches_the_textbook_queries() {
    let (generated, server) = serve_tpch();
    let p = Project::from_repo("tpch");
    // Planning works offline from the committed contracts, and they match the source.
    let validated = p.smelter(&["validate", "{p}"]);
    assert_eq!(code(&validated), 0, "validate:\n{}", stderr(&validated));
    let port = server.port.to_string();
    let env = [
        ("SMELTER_MSSQL_PORT", port.as_str()),
        ("SMELTER_MSSQL_ENCRYPT", "false"),
        ("SMELTER_MSSQL_PASSWORD", PASSWORD),
    ];
    let check = p.smelter_env(&["source", "sync", "{p}", "--check"], &env);
    assert_eq!(
        code(&check),
        0,
        "the committed contracts differ from the source:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        stderr(&check)
    );
    let out = p.smelter_env(
        &[
            "run",
            "{p}",
            "--logical-date",
            "1998-12-01",
            "--run-id",
            "tpch1",
        ],
        &[
            ("SMELTER_MSSQL_PORT", &port),
            ("SMELTER_MSSQL_ENCRYPT", "false"),
            ("SMELTER_MSSQL_PASSWORD", PASSWORD),
        ],
    );
    assert_eq!(code(&out), 0, "tpch run failed:\n{}", stderr(&out));

    // Bronze: every generated row landed once.
    for (table, batches) in &generated {
        let rel = format!("bronze/{table}");
        let n = p
            .scalar(
                &[("b", rel.as_str())],
                "SELECT COUNT(*) FROM b WHERE _run_id = 'tpch1'",
            )
            .await;
        assert_eq!(n as usize, rows(batches), "bronze.{table}");
        assert!(n > 0, "bronze.{table} is empty");
    }

    // Types as the catalog declares them; char(n) arrives padded and silver trims it.
    let bronze = p
        .query(&[("b", "bronze/lineitem")], "SELECT * FROM b LIMIT 1")
        .await;
    let schema = bronze[0].schema();
    for (col, want) in [
        ("l_orderkey", DataType::Int64),
        ("l_linenumber", DataType::Int32),
        ("l_quantity", DataType::Decimal128(15, 2)),
        ("l_extendedprice", DataType::Decimal128(15, 2)),
        ("l_shipdate", DataType::Date32),
    ] {
        assert_eq!(
            schema.field_with_name(col).unwrap().data_type(),
            &want,
            "{col}"
        );
    }
    let unpadded = p
        .scalar(
            &[("b", "bronze/lineitem")],
            "SELECT COUNT(*) FROM b WHERE CHARACTER_LENGTH(l_shipmode) <> 10",
        )
        .await;
    assert_eq!(unpadded, 0, "char(10) values arrive padded to 10");
    let padded = p
        .scalar(
            &[("s", "silver/lineitem")],
            "SELECT COUNT(*) FROM s WHERE ship_mode <> RTRIM(ship_mode) OR ship_mode = ''",
        )
        .await;
    assert_eq!(padded, 0, "silver trims char padding");

    assert_gold_matches_the_textbook_queries(&p, &generated).await;
}

/// Asserts that each gold mart of the TPC-H project `p` equals the textbook query over the
/// `generated` tables.
pub(crate) async fn assert_gold_matches_the_textbook_queries(
    p: &Project,
    generated: &[(&str, Vec<RecordBatch>)],
) {
    // Gold: each mart equals the textbook query over the generated data.
    let reference = reference(generated);
    for (mart, sql, order) in MARTS {
        let rel = format!("gold/{mart}");
        let got = p
            .query(
                &[("g", rel.as_str())],
                &format!("SELECT * FROM g ORDER BY {order}"),
            )
            .await;
        let want = reference
            .sql(&format!("SELECT * FROM ({sql}) ORDER BY {order}"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert!(rows(&want) > 0, "{mart}: the reference query returns rows");
        let got = arrow::util::pretty::pretty_format_batches(&got)
            .unwrap()
            .to_string();
        let want = arrow::util::pretty::pretty_format_batches(&want)
            .unwrap()
            .to_string();
        assert_eq!(got, want, "gold.{mart}");
    }
}

/// The dump holds the same rows as the served tables, as Parquet and as CSV with a header.
#[test]
fn dump_writes_every_table_as_parquet_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let generated = tpch::generate(0.001).unwrap();
    tpch::write_dump(&generated, dir.path()).unwrap();
    for (table, batches) in &generated {
        let file = std::fs::File::open(dir.path().join(format!("{table}.parquet"))).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let parquet: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        assert_eq!(rows(&parquet), rows(batches), "{table}.parquet rows");
        let want = tpch::schema(table).unwrap();
        for (got, want) in parquet[0].schema().fields().iter().zip(want.fields()) {
            assert_eq!(got.name(), want.name(), "{table}.parquet");
            assert_eq!(got.data_type(), want.data_type(), "{table}.parquet");
        }
        let csv = std::fs::read_to_string(dir.path().join(format!("{table}.csv"))).unwrap();
        let mut lines = csv.lines();
        let header: Vec<&str> = want.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(lines.next(), Some(header.join(",").as_str()), "{table}.csv");
        assert_eq!(lines.count(), rows(batches), "{table}.csv rows");
    }
}
