//! Profiler hot path: a full profile (both scans: aggregates, then histograms, exact distinct
//! counts and top-k) of a generated in-memory table of 1M rows × 20 columns.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use datafusion::prelude::SessionContext;
use smelter::profile::{profile_dataframe, ProfileOptions};

const ROWS: usize = 1_000_000;
const BATCH: usize = 65_536;

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// 20 columns: 6 integer, 5 float, 5 string (low to high cardinality), 2 temporal, 1 boolean,
/// 1 key; about 2 % NULLs in the nullable ones.
fn batches() -> (Arc<Schema>, Vec<RecordBatch>) {
    let mut fields = vec![Field::new("id", DataType::Int64, false)];
    for i in 0..6 {
        fields.push(Field::new(format!("i{i}"), DataType::Int32, true));
    }
    for i in 0..5 {
        fields.push(Field::new(format!("f{i}"), DataType::Float64, true));
    }
    for i in 0..5 {
        fields.push(Field::new(format!("s{i}"), DataType::Utf8, true));
    }
    fields.push(Field::new("d", DataType::Date32, true));
    fields.push(Field::new(
        "t",
        DataType::Timestamp(TimeUnit::Microsecond, None),
        true,
    ));
    fields.push(Field::new("b", DataType::Boolean, true));
    let schema = Arc::new(Schema::new(fields));
    let cards = [5u64, 50, 1_000, 20_000, 1_000_000];
    let mut out = Vec::new();
    for start in (0..ROWS).step_by(BATCH) {
        let ids: Vec<u64> = (start as u64..(start + BATCH).min(ROWS) as u64).collect();
        let h = |r: u64, c: u64| mix(r.wrapping_mul(31).wrapping_add(c));
        let null = |r: u64, c: u64| h(r, c + 100) % 50 == 0;
        let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(
            ids.iter().map(|&r| r as i64),
        ))];
        for c in 0..6u64 {
            cols.push(Arc::new(Int32Array::from_iter(ids.iter().map(|&r| {
                (!null(r, c)).then(|| (h(r, c) % 10u64.pow(c as u32 + 1)) as i32)
            }))));
        }
        for c in 6..11u64 {
            cols.push(Arc::new(Float64Array::from_iter(ids.iter().map(|&r| {
                (!null(r, c)).then(|| (h(r, c) % 1_000_000) as f64 / 997.0 * c as f64)
            }))));
        }
        for (k, c) in (11..16u64).enumerate() {
            cols.push(Arc::new(StringArray::from_iter(ids.iter().map(|&r| {
                (!null(r, c)).then(|| format!("v{}", h(r, c) % cards[k]))
            }))));
        }
        cols.push(Arc::new(Date32Array::from_iter(ids.iter().map(|&r| {
            (!null(r, 16)).then(|| 19_000 + (h(r, 16) % 1_500) as i32)
        }))));
        cols.push(Arc::new(TimestampMicrosecondArray::from_iter(
            ids.iter().map(|&r| {
                (!null(r, 17)).then(|| 1_700_000_000_000_000 + (h(r, 17) % 10u64.pow(13)) as i64)
            }),
        )));
        cols.push(Arc::new(BooleanArray::from_iter(
            ids.iter()
                .map(|&r| (!null(r, 18)).then(|| h(r, 18) % 3 == 0)),
        )));
        out.push(RecordBatch::try_new(schema.clone(), cols).expect("valid batch"));
    }
    (schema, out)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (schema, data) = batches();
    let ctx = SessionContext::new();
    // One partition per core, as a scan of a multi-file table would give.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut parts = vec![Vec::new(); cores];
    for (i, b) in data.into_iter().enumerate() {
        parts[i % cores].push(b);
    }
    let table = datafusion::datasource::MemTable::try_new(schema, parts).expect("table");
    ctx.register_table("wide", Arc::new(table))
        .expect("register");
    let options = ProfileOptions::default();
    let mut group = c.benchmark_group("profile");
    group.sample_size(10);
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("full_1m_rows_20_cols", |b| {
        b.to_async(&rt).iter(|| async {
            let df = ctx.table("wide").await.expect("table");
            let p = profile_dataframe("wide", df, &options, None)
                .await
                .expect("profile");
            assert_eq!(p.row_count, ROWS as u64);
            p
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
