//! Iceberg tables (`[format] table = "iceberg"`): the demo on Iceberg gives the gold rows of the
//! demo on Delta, merges and appends stay idempotent, and concurrent writers lose no row. The
//! tables are read back through the SQL catalog with `datafusion_iceberg` (pyiceberg reads them
//! in `tests/python/test_iceberg_reader.py`).

use std::path::Path;
use std::sync::Arc;

use arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use iceberg_rust::catalog::identifier::Identifier;
use iceberg_rust::catalog::tabular::Tabular;
use iceberg_rust::catalog::Catalog;
use iceberg_rust::object_store::ObjectStoreBuilder;
use iceberg_sql_catalog::SqlCatalog;

use crate::support::{code, stderr, Project};

/// The demo project at `scale` with `[format] table = "iceberg"`.
fn iceberg_demo(scale: f64) -> Project {
    let p = Project::demo(scale);
    let toml = std::fs::read_to_string(p.pipeline()).unwrap();
    assert!(toml.contains("table = \"delta\""));
    std::fs::write(
        p.pipeline(),
        toml.replace("table = \"delta\"", "table = \"iceberg\""),
    )
    .unwrap();
    p
}

/// A session with the Iceberg tables `(alias, "<layer>.<name>")` of the embedded catalog of
/// `lake` registered.
async fn iceberg_ctx(lake: &Path, tables: &[(&str, &str)]) -> SessionContext {
    let db = lake.join("_iceberg/catalog.db");
    assert!(db.exists(), "no catalog at {}", db.display());
    let catalog = Arc::new(
        SqlCatalog::new(
            &format!("sqlite://{}", db.display()),
            "smelter",
            ObjectStoreBuilder::Filesystem(Arc::new(object_store::local::LocalFileSystem::new())),
        )
        .await
        .unwrap(),
    );
    let ctx = SessionContext::new();
    for (alias, id) in tables {
        let (ns, name) = id.split_once('.').unwrap();
        let t = match catalog
            .clone()
            .load_tabular(&Identifier::new(&[ns.to_string()], name))
            .await
            .unwrap_or_else(|e| panic!("load {id}: {e}"))
        {
            Tabular::Table(t) => t,
            _ => panic!("{id} is not a table"),
        };
        ctx.register_table(
            *alias,
            Arc::new(datafusion_iceberg::DataFusionTable::new_table(
                t, None, None, None,
            )),
        )
        .unwrap();
    }
    ctx
}

/// The rows of a query as sorted text lines (order-independent), with the header first.
fn sorted_rows(batches: &[arrow::record_batch::RecordBatch]) -> String {
    let text = pretty_format_batches(batches).unwrap().to_string();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('|')).collect();
    let Some((header, rows)) = lines.split_first() else {
        return String::new();
    };
    let mut rows = rows.to_vec();
    rows.sort_unstable();
    format!("{header}\n{}", rows.join("\n"))
}

async fn iceberg_rows(lake: &Path, id: &str, sql: &str) -> String {
    let ctx = iceberg_ctx(lake, &[("t", id)]).await;
    sorted_rows(&ctx.sql(sql).await.unwrap().collect().await.unwrap())
}

async fn iceberg_count(lake: &Path, id: &str, sql: &str) -> i64 {
    let ctx = iceberg_ctx(lake, &[("t", id)]).await;
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let b = batches.iter().find(|b| b.num_rows() > 0).expect("one row");
    let col = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Int64).unwrap();
    col.as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0)
}

async fn delta_rows(p: &Project, rel: &str, sql: &str) -> String {
    sorted_rows(&p.query(&[("t", rel)], sql).await)
}

/// Every gold table: catalog id and lake path.
const GOLD: [(&str, &str); 3] = [
    ("gold.daily_shipments_by_carrier", "gold/daily_shipments_by_carrier"),
    ("gold.on_time_delivery", "gold/on_time_delivery"),
    ("gold.revenue_by_customer", "gold/revenue_by_customer"),
];

fn run_day(p: &Project, day: &str, run_id: &str) {
    p.expect(
        &[
            "run",
            "{p}",
            "--logical-date",
            day,
            "--run-id",
            run_id,
        ],
        0,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_on_iceberg_gives_the_gold_rows_of_the_demo_on_delta() {
    let delta = Project::demo(0.004);
    let iceberg = iceberg_demo(0.004);
    for (day, run) in [("2026-11-03", "d1"), ("2026-11-04", "d2")] {
        run_day(&delta, day, run);
        run_day(&iceberg, day, run);
    }
    // No Delta log under the lake's tables; run state stays in Delta under _smelter/.
    assert!(!iceberg.lake().join("gold/revenue_by_customer/_delta_log").exists());
    assert!(iceberg.lake().join("gold/revenue_by_customer/metadata").is_dir());
    assert!(iceberg.lake().join("_smelter/runs/_delta_log").is_dir());
    for (id, rel) in GOLD {
        let sql = "SELECT * FROM t";
        let (want, got) = (
            delta_rows(&delta, rel, sql).await,
            iceberg_rows(&iceberg.lake(), id, sql).await,
        );
        assert!(want.lines().count() > 2, "{id} is empty");
        assert_eq!(got, want, "{id} differs between Iceberg and Delta");
    }
    // The merge and scd2 models too: the same current rows, the same history.
    for (id, rel) in [
        ("silver.shipments", "silver/shipments"),
        ("silver.customers_history", "silver/customers_history"),
    ] {
        let key = if id.ends_with("history") {
            "customer_id, valid_from, is_current"
        } else {
            "shipment_id, status, modified_at"
        };
        let sql = format!("SELECT {key} FROM t");
        assert_eq!(
            iceberg_rows(&iceberg.lake(), id, &sql).await,
            delta_rows(&delta, rel, &sql).await,
            "{id} differs between Iceberg and Delta"
        );
    }
    // A re-run of day 1 is a no-op for every model (transaction ids in the table properties).
    let before = iceberg_count(
        &iceberg.lake(),
        "silver.shipment_events",
        "SELECT COUNT(*) FROM t",
    )
    .await;
    let out = iceberg.expect(
        &[
            "run",
            "{p}",
            "--layer",
            "silver",
            "--logical-date",
            "2026-11-03",
            "--run-id",
            "d1",
        ],
        0,
    );
    let after = iceberg_count(
        &iceberg.lake(),
        "silver.shipment_events",
        "SELECT COUNT(*) FROM t",
    )
    .await;
    assert_eq!(before, after, "the re-run appended again:\n{out}");
    let current = iceberg_count(
        &iceberg.lake(),
        "silver.customers_history",
        "SELECT COUNT(*) FROM (SELECT customer_id FROM t WHERE is_current GROUP BY customer_id HAVING COUNT(*) > 1)",
    )
    .await;
    assert_eq!(current, 0, "a key has two current rows");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_appends_to_one_iceberg_table_keep_every_row_once() {
    let p = iceberg_demo(0.002);
    let ids = ["a", "b", "c", "d"];
    for id in ids {
        p.expect(
            &[
                "run",
                "{p}",
                "--layer",
                "extract",
                "--logical-date",
                "2026-11-03",
                "--run-id",
                id,
            ],
            0,
        );
    }
    // Four bronze runs at once append to the same Iceberg tables through one SQLite catalog.
    let children: Vec<_> = ids
        .iter()
        .map(|id| {
            p.command(&["run", "{p}", "--layer", "bronze", "--run-id", id], &[])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (id, child) in ids.iter().zip(children) {
        let out = child.wait_with_output().unwrap();
        match code(&out) {
            0 => {}
            // A lost race that could not be retried in-process: the run is retried, as Airflow would.
            75 => {
                p.expect(&["run", "{p}", "--layer", "bronze", "--run-id", id], 0);
            }
            c => panic!("writer {id} exited {c}: {}", stderr(&out)),
        }
    }
    for table in ["bronze.shipment_events", "bronze.shipments", "bronze.customers"] {
        for id in ids {
            let (rows, distinct) = (
                iceberg_count(
                    &p.lake(),
                    table,
                    &format!("SELECT COUNT(*) FROM t WHERE _run_id = '{id}'"),
                )
                .await,
                iceberg_count(
                    &p.lake(),
                    table,
                    &format!("SELECT COUNT(*) FROM (SELECT DISTINCT * FROM t WHERE _run_id = '{id}')"),
                )
                .await,
            );
            assert!(rows > 0, "{table}: run {id} is missing");
            assert_eq!(rows, distinct, "{table}: run {id} appended twice");
        }
    }
}

#[test]
fn iceberg_config_mistakes_exit_2_naming_the_key() {
    let p = iceberg_demo(0.002);
    let toml = std::fs::read_to_string(p.pipeline()).unwrap();
    std::fs::write(
        p.pipeline(),
        format!("{toml}\n[format.iceberg]\ncatalog = \"hive\"\n"),
    )
    .unwrap();
    let out = p.smelter(&["validate", "{p}"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("format.iceberg.catalog"), "{}", stderr(&out));
    std::fs::write(
        p.pipeline(),
        format!("{toml}\n[format.iceberg]\nuri_env = \"SMELTER_TEST_NO_SUCH_VAR\"\n"),
    )
    .unwrap();
    let out = p.smelter(&["run", "{p}", "--run-id", "x"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("SMELTER_TEST_NO_SUCH_VAR"), "{}", stderr(&out));
}
