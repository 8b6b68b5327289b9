//! Write hot paths, on a local lake in a temporary directory:
//! - `delta_write/overwrite_1m`: a Delta overwrite of 1M rows × 8 columns (Parquet encode with the
//!   pipeline's zstd compression, commit);
//! - `silver_merge/versioned_merge_{1,10}pct_into_1m`: the silver transform + merge step. A
//!   bronze-like batch of change rows for 1 % (10k) or 10 % (100k) of the keys, two versions per
//!   key, half of the keys existing and half new, is deduplicated to the newest row per key with
//!   `ROW_NUMBER() … = 1` (planned as the latest-per-key operator), staged as the runner stages
//!   a merge model's rows, and merged by key into a 1M-row Delta table with `sequence_by =
//!   modified_at` (only newer versions replace rows).
//!   Compare with `delta_write/overwrite_1m`, the cost of rebuilding the same table
//!   (`--full-refresh`).
//! - `scd2/incremental_1pct_into_1m`: an `scd2` model's run (timestamp strategy, `sequence_by =
//!   modified_at`) on a history of 1M rows (500k keys, two versions each) with a batch of 1 %
//!   (10k rows: 5k newer versions of existing keys, 1k late versions older than a key's current
//!   one, 4k new keys): the batch shaped and staged as the runner does, the history of its keys
//!   recomputed (`scd2::history`), staged, and merged on `_scd_id`. Against
//!   `scd2/full_refresh_1m`: the same table rebuilt from all 1.01M rows (`--full-refresh`).
//!
//! Every group samples flat with 10 samples, so the whole file runs in a few minutes.
//! Run with `cargo bench --bench write`.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::array::{Decimal128Array, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use smelter::plan::{Layer, Model, TableId};
use smelter::storage::Lake;
use smelter::table::{self, TableFormat, WriteMode, WriteRequest};

const BASE_ROWS: usize = 1_000_000;
const BATCH: usize = 65_536;

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int32, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("city", DataType::Utf8, true),
        Field::new("amount", DataType::Decimal128(15, 2), true),
        Field::new("weight", DataType::Float64, true),
        Field::new(
            "modified_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("note", DataType::Utf8, true),
    ]))
}

/// Rows `keys[i]`, version `version`: deterministic values, one batch per `BATCH` rows.
fn batches(keys: &[i64], version: u64) -> Vec<RecordBatch> {
    const STATUS: [&str; 4] = ["NEW", "PICKED", "SHIPPED", "DELIVERED"];
    keys.chunks(BATCH)
        .map(|chunk| {
            let h = |k: i64, c: u64| mix((k as u64).wrapping_mul(131).wrapping_add(c + version));
            let cols: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from_iter_values(chunk.iter().copied())),
                Arc::new(Int32Array::from_iter_values(
                    chunk.iter().map(|&k| (h(k, 1) % 50_000) as i32),
                )),
                Arc::new(StringArray::from_iter_values(
                    chunk.iter().map(|&k| STATUS[(h(k, 2) % 4) as usize]),
                )),
                Arc::new(StringArray::from_iter(chunk.iter().map(|&k| {
                    (h(k, 3) % 40 != 0).then(|| format!("city-{}", h(k, 3) % 2_000))
                }))),
                Arc::new(
                    Decimal128Array::from_iter(
                        chunk
                            .iter()
                            .map(|&k| (h(k, 4) % 30 != 0).then(|| (h(k, 4) % 10_000_000) as i128)),
                    )
                    .with_precision_and_scale(15, 2)
                    .expect("decimal"),
                ),
                Arc::new(Float64Array::from_iter(chunk.iter().map(|&k| {
                    (h(k, 5) % 25 != 0).then(|| (h(k, 5) % 100_000) as f64 / 7.0)
                }))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(chunk.iter().map(|&k| {
                        1_780_000_000_000_000 + (version as i64) * 3_600_000_000 + (k % 3_600)
                    }))
                    .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from_iter(chunk.iter().map(|&k| {
                    (h(k, 6) % 3 == 0).then(|| format!("note {}", h(k, 6)))
                }))),
            ];
            RecordBatch::try_new(schema(), cols).expect("valid batch")
        })
        .collect()
}

/// `batches` split round-robin into one partition per core, as a multi-file scan gives.
fn mem_table(data: Vec<RecordBatch>) -> Arc<MemTable> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut parts = vec![Vec::new(); cores];
    for (i, b) in data.into_iter().enumerate() {
        parts[i % cores].push(b);
    }
    Arc::new(MemTable::try_new(schema(), parts).expect("table"))
}

struct Bench {
    _dir: tempfile::TempDir,
    ctx: SessionContext,
    lake: Lake,
    format: Arc<dyn TableFormat>,
}

fn setup() -> Bench {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        "name = \"bench\"\n[source]\ntype = \"sample\"\n[[source.tables]]\nname = \"shipments\"\n\
         [storage]\nroot = \"{}\"\n\
         [format]\ntable = \"delta\"\ncompression = \"zstd\"\n[profile]\nmode = \"off\"\n",
        dir.path().join("lake").display()
    );
    let path = dir.path().join("bench.toml");
    std::fs::write(&path, toml).expect("write pipeline");
    let pipeline = smelter::config::load(&path).expect("pipeline");
    let lake = Lake::open(&pipeline).expect("lake");
    let ctx = smelter::engine::session(&pipeline, Some(&lake)).expect("session");
    let format = table::for_pipeline(&pipeline, &lake);
    Bench {
        _dir: dir,
        ctx,
        lake,
        format,
    }
}

fn id(name: &str) -> TableId {
    TableId {
        layer: Layer::Silver,
        name: name.into(),
    }
}

async fn write(b: &Bench, name: &str, sql: &str, mode: WriteMode) -> table::WriteMetrics {
    let input = b.ctx.sql(sql).await.expect("plan");
    write_df(b, name, input, mode).await
}

async fn write_df(
    b: &Bench,
    name: &str,
    input: datafusion::prelude::DataFrame,
    mode: WriteMode,
) -> table::WriteMetrics {
    let url = b.lake.table_url(&id(name));
    b.format
        .write(WriteRequest {
            ctx: &b.ctx,
            url: &url,
            input,
            mode,
            partition_by: vec![],
            txn_id: None,
            metadata: vec![],
            read_version: None,
            observer: None,
            staged: None,
        })
        .await
        .expect("write")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let b = setup();
    let base: Vec<i64> = (0..BASE_ROWS as i64).collect();
    b.ctx
        .register_table("base", mem_table(batches(&base, 0)))
        .expect("register");
    let mut group = c.benchmark_group("delta_write");
    quick(&mut group);
    group.throughput(Throughput::Elements(BASE_ROWS as u64));
    group.bench_function("overwrite_1m", |bch| {
        bch.to_async(&rt).iter(|| async {
            let m = write(&b, "written", "SELECT * FROM base", WriteMode::Overwrite).await;
            assert_eq!(m.rows_inserted, BASE_ROWS as u64);
            m
        })
    });
    group.finish();

    let mut group = c.benchmark_group("silver_merge");
    quick(&mut group);
    for pct in [1usize, 10] {
        // Change rows for `pct` % of the keys: half existing, half new, two versions each.
        let keys = BASE_ROWS * pct / 100;
        let mut changes: Vec<i64> = (0..keys as i64)
            .map(|i| {
                if i % 2 == 0 {
                    (mix(i as u64) % BASE_ROWS as u64) as i64
                } else {
                    BASE_ROWS as i64 + i
                }
            })
            .collect();
        let mut data = batches(&changes, 1);
        changes.reverse();
        data.extend(batches(&changes, 2));
        let name = format!("changes_{pct}");
        b.ctx
            .register_table(name.as_str(), mem_table(data))
            .expect("register");
        let dedup = format!(
            "SELECT order_id, customer_id, status, city, amount, weight, modified_at, note \
             FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY order_id ORDER BY modified_at DESC) \
             AS rn FROM {name}) WHERE rn = 1"
        );
        group.throughput(Throughput::Elements(2 * keys as u64));
        // Each measured merge starts from the 1M-row base (rewritten untimed), so every
        // iteration updates and inserts for real.
        group.bench_function(format!("versioned_merge_{pct}pct_into_1m"), |bch| {
            bch.to_async(&rt).iter_custom(|iters| {
                let (b, dedup) = (&b, &dedup);
                async move {
                    let mut total = std::time::Duration::ZERO;
                    for _ in 0..iters {
                        write(b, "merged", "SELECT * FROM base", WriteMode::Overwrite).await;
                        let clock = std::time::Instant::now();
                        // Staged as the runner stages a merge model's rows (the format's merge
                        // plans its input with its own planner, which does not know the
                        // latest-per-key operator).
                        let rows = b.ctx.sql(dedup).await.expect("plan");
                        let staged = smelter::engine::stage(&b.ctx, rows).await.expect("stage");
                        let m = write_df(
                            b,
                            "merged",
                            staged.df.clone(),
                            WriteMode::Merge {
                                keys: vec!["order_id".into()],
                                sequence_by: vec!["modified_at".into()],
                                delete: None,
                            },
                        )
                        .await;
                        total += clock.elapsed();
                        // Keys drawn for existing rows may repeat: at most `keys` changes.
                        let changed = m.rows_inserted + m.rows_updated;
                        assert!(changed <= keys as u64 && changed > keys as u64 * 9 / 10);
                    }
                    total
                }
            })
        });
    }
    group.finish();
}

/// Ten flat samples and a short measurement: a bench whose iterations rewrite a 1M-row table
/// untimed then runs about ten times.
fn quick(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group.sample_size(10);
    group.sampling_mode(criterion::SamplingMode::Flat);
    group.warm_up_time(std::time::Duration::from_secs(1));
    group.measurement_time(std::time::Duration::from_secs(5));
}

/// The `scd2` model of the bench: timestamp strategy over `modified_at`.
fn scd2_model() -> Model {
    let sql =
        "-- materialized: scd2\n-- unique_key: order_id\n-- sequence_by: modified_at\nSELECT 1";
    let mut problems = Vec::new();
    let header = smelter::plan::header::parse("history.sql", sql, &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    Model {
        id: id("history"),
        file: "history.sql".into(),
        header,
        sql: sql.into(),
        depends_on: Vec::new(),
        rules: Vec::new(),
        unprocessed: Vec::new(),
    }
}

/// One run of the `scd2` model over the rows of table `batch`, as the runner does it: the rows
/// shaped and staged, the history of their keys recomputed against the table (none on a full
/// refresh), staged, and merged on `_scd_id` (written over on a full refresh).
async fn scd2_run(b: &Bench, model: &Model, batch: &str, full: bool) -> table::WriteMetrics {
    use smelter::layers::scd2;
    let rows = b.ctx.table(batch).await.expect("batch");
    let shaped = scd2::shape(rows, model, "history.sql").expect("shape");
    let staged = smelter::engine::stage(&b.ctx, shaped).await.expect("stage");
    let table = if full {
        None
    } else {
        let url = b.lake.table_url(&model.id);
        let provider = b.format.provider(&b.ctx, &url).await.expect("provider");
        Some(b.ctx.read_table(provider.expect("table")).expect("read"))
    };
    let history = scd2::history(
        &b.ctx,
        model,
        scd2::Batch {
            upserts: staged.df.clone(),
            deletes: None,
            table,
            prior_deletes: None,
            run_start_us: 0,
        },
    )
    .await
    .expect("history");
    let rows = if full {
        smelter::layers::deletes::unmarked(history.rows).expect("unmarked")
    } else {
        history.rows
    };
    let history = smelter::engine::stage(&b.ctx, rows).await.expect("stage");
    let mode = if full {
        WriteMode::Overwrite
    } else {
        WriteMode::Merge {
            keys: vec![scd2::SCD_ID.into()],
            sequence_by: Vec::new(),
            delete: Some(smelter::layers::deletes::FLAG.to_string()),
        }
    };
    write_df(b, &model.id.name, history.df.clone(), mode).await
}

fn bench_scd2(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let b = setup();
    let model = scd2_model();
    // 500k keys with versions 0 and 2: a history of 1M rows.
    let keys: Vec<i64> = (0..BASE_ROWS as i64 / 2).collect();
    let mut base = batches(&keys, 0);
    base.extend(batches(&keys, 2));
    // 1 %: newer versions (3) of 5k keys, late versions (1, between a key's two) of 1k others,
    // and 4k new keys; all keys distinct, so every row is a new version.
    let newer: Vec<i64> = (0..5_000).map(|i| i * 50).collect();
    let late: Vec<i64> = (0..1_000).map(|i| i * 50 + 25).collect();
    let fresh: Vec<i64> = (0..4_000).map(|i| BASE_ROWS as i64 + i).collect();
    let mut changes = batches(&newer, 3);
    changes.extend(batches(&late, 1));
    changes.extend(batches(&fresh, 3));
    let n_changes = (newer.len() + late.len() + fresh.len()) as u64;
    let mut everything = base.clone();
    everything.extend(changes.iter().cloned());
    let n_all = (BASE_ROWS as u64) + n_changes;
    for (name, data) in [
        ("base", base),
        ("changes", changes),
        ("everything", everything),
    ] {
        b.ctx
            .register_table(name, mem_table(data))
            .expect("register");
    }
    // The 1M-row history, computed once and kept in memory: each incremental iteration starts
    // by writing it over the table (untimed).
    let history = rt.block_on(async {
        let full = scd2_run(&b, &model, "base", true).await;
        assert_eq!(full.rows_inserted, BASE_ROWS as u64);
        let url = b.lake.table_url(&model.id);
        let provider = b.format.provider(&b.ctx, &url).await.expect("provider");
        let df = b.ctx.read_table(provider.expect("table")).expect("read");
        let schema = Arc::new(df.schema().as_arrow().clone());
        let data = df.collect().await.expect("collect");
        Arc::new(MemTable::try_new(schema, vec![data]).expect("history"))
    });
    b.ctx
        .register_table("base_history", history)
        .expect("register");

    let mut group = c.benchmark_group("scd2");
    quick(&mut group);
    group.throughput(Throughput::Elements(n_changes));
    group.bench_function("incremental_1pct_into_1m", |bch| {
        bch.to_async(&rt).iter_custom(|iters| {
            let (b, model) = (&b, &model);
            async move {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    write(
                        b,
                        "history",
                        "SELECT * FROM base_history",
                        WriteMode::Overwrite,
                    )
                    .await;
                    let clock = std::time::Instant::now();
                    let m = scd2_run(b, model, "changes", false).await;
                    total += clock.elapsed();
                    // Every batch row is a new version; of the 6k existing keys touched, only
                    // the version whose interval a new one cuts is rewritten (the current one
                    // closed by a newer version, the one before a late version shortened);
                    // versions left as they were are not rewritten.
                    assert_eq!(m.rows_inserted, n_changes);
                    assert_eq!(m.rows_updated, 6_000);
                }
                total
            }
        })
    });
    group.throughput(Throughput::Elements(n_all));
    group.bench_function("full_refresh_1m", |bch| {
        bch.to_async(&rt).iter(|| async {
            let m = scd2_run(&b, &model, "everything", true).await;
            assert_eq!(m.rows_inserted, n_all);
            m
        })
    });
    group.finish();
}

criterion_group!(benches, bench, bench_scd2);
criterion_main!(benches);
