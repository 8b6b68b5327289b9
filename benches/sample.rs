//! Sample-source hot path: generating LogisticsDB shipments into Arrow batches.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use smelter::config::{Source, SourceKind};
use smelter::extract::sample::{Sample, Window};

fn bench(c: &mut Criterion) {
    let sample = Sample::new(&Source {
        kind: SourceKind::Sample,
        database: "LogisticsDB".into(),
        scale_factor: 0.1,
        seed: 42,
        start_date: chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        batch_size: 65_536,
        tables: vec![],
        mssql: None,
        files: None,
    });
    let window = Window {
        lo: None,
        hi: 20_454 * 86_400_000_000,
    };
    let parts = sample.partitions("shipments", window, 1);
    let rows: usize = sample
        .read("shipments", window, parts[0])
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum();
    let mut group = c.benchmark_group("sample");
    group.sample_size(10);
    group.throughput(Throughput::Elements(rows as u64));
    group.bench_function("shipments_sf0.1_to_arrow", |b| {
        b.iter(|| {
            sample
                .read("shipments", window, parts[0])
                .unwrap()
                .map(|b| b.unwrap().num_rows())
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
