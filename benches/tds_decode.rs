//! Extraction hot path: SQL Server rows → Arrow batches, on a 10-column mixed table
//! (bigint, int, decimal(18,4), float, nvarchar(50), varchar(10), bit, datetime2(7), date,
//! uniqueidentifier).
//!
//! - `decode/rows_to_arrow`: the [`Decoder`] alone, over row values already parsed by tiberius
//!   (built once with `Row::builder`; a query's rows share their column list, so only the values
//!   are handed over, as `Decoder::push` does with a `Row` from the wire).
//! - `decode/wire_to_arrow`: one connection to the in-process TDS fixture server, reading the
//!   table through tiberius and the decoder (server encoding shares the same cores).
//! - `decode/wire_tls_to_arrow`: the same over TLS 1.2.

#[path = "../tests/support/tds/mod.rs"]
mod tds;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::StreamExt;
use smelter::config::{MssqlSource, PasswordSource};
use smelter::extract::mssql::connect::connect;
use smelter::extract::mssql::types::{map_column, Decoder, Mapping, SourceColumn};
use tiberius::numeric::Numeric;
use tiberius::{ColumnData, ColumnType, Row};

const ROWS: usize = 200_000;

fn mappings() -> Vec<Mapping> {
    tds::fixtures::BIG
        .iter()
        .map(|(name, decl)| {
            let t = tds::types::SqlType::parse(decl);
            let (data_type, len, p, s, dp) = t.catalog();
            map_column(
                "dbo.Big",
                &SourceColumn {
                    name: name.to_string(),
                    data_type,
                    max_length: len,
                    precision: p,
                    scale: s,
                    datetime_precision: dp,
                    nullable: *name != "id",
                },
            )
            .unwrap()
        })
        .collect()
}

fn rows(n: usize) -> Vec<Vec<ColumnData<'static>>> {
    use tiberius::time::{Date, DateTime2, Time};
    (1..=n as i64)
        .map(|i| {
            Row::builder()
                .column("id", ColumnType::Int8, ColumnData::I64(Some(i)))
                .column(
                    "qty",
                    ColumnType::Int4,
                    ColumnData::I32((i % 7 != 0).then_some((i % 1000) as i32)),
                )
                .column(
                    "amount",
                    ColumnType::Decimaln,
                    ColumnData::Numeric(Some(Numeric::new_with_scale(i as i128 * 12_345, 4))),
                )
                .column(
                    "price",
                    ColumnType::Float8,
                    ColumnData::F64(Some(i as f64 * 0.25)),
                )
                .column(
                    "name",
                    ColumnType::NVarchar,
                    ColumnData::String(Some(format!("customer name {i}").into())),
                )
                .column(
                    "code",
                    ColumnType::BigVarChar,
                    ColumnData::String((i % 5 != 0).then(|| format!("C{:05}", i % 100_000).into())),
                )
                .column("flag", ColumnType::Bit, ColumnData::Bit(Some(i % 2 == 0)))
                .column(
                    "created_at",
                    ColumnType::Datetime2,
                    ColumnData::DateTime2(Some(DateTime2::new(
                        Date::new(739_000 + (i % 365) as u32),
                        Time::new((i as u64 * 1_000_001) % 863_999_999_999, 7),
                    ))),
                )
                .column(
                    "day",
                    ColumnType::Daten,
                    ColumnData::Date(Some(Date::new(739_000 + (i % 365) as u32))),
                )
                .column(
                    "ref",
                    ColumnType::Guid,
                    ColumnData::Guid(Some(uuid::Uuid::from_u128(i as u128))),
                )
                .build()
                .into_iter()
                .collect()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("rows_to_arrow", |b| {
        b.iter_batched(
            || rows(ROWS),
            |rows| {
                let mut d = Decoder::new("dbo.Big", mappings(), 65_536);
                let mut n = 0;
                for r in rows {
                    if let Some(batch) = d.push_values(r).unwrap() {
                        n += batch.num_rows();
                    }
                }
                n + d.finish().unwrap().map_or(0, |b| b.num_rows())
            },
            criterion::BatchSize::LargeInput,
        )
    });

    let rt = tokio::runtime::Runtime::new().unwrap();
    std::env::set_var("SMELTER_BENCH_PASSWORD", "bench");
    let sql = format!(
        "SELECT {} FROM [dbo].[Big]",
        mappings()
            .iter()
            .map(|m| m.select.clone())
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Plaintext, then TLS 1.2 (the certificate trusted explicitly).
    for (name, tls) in [("wire_to_arrow", false), ("wire_tls_to_arrow", true)] {
        let server = tds::TdsServer::start(tds::ServerOptions {
            fixtures: tds::FixtureOptions {
                big_rows: ROWS,
                ..Default::default()
            },
            tls: tls.then(tds::test_identity),
            ..Default::default()
        })
        .unwrap();
        let settings = MssqlSource {
            host: "127.0.0.1".into(),
            port: Some(server.port),
            instance: None,
            user: "bench".into(),
            password: PasswordSource::Env("SMELTER_BENCH_PASSWORD".into()),
            encrypt: tls,
            trust_server_certificate: tls,
            connect_timeout: Duration::from_secs(10),
            query_timeout: Duration::from_secs(60),
            application_name: "smelter-bench".into(),
            packet_size: 32_767,
            ca_certificate: None,
            browser_port: 1434,
        };
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let mut client = connect(&settings).await.unwrap();
                let mut d = Decoder::new("dbo.Big", mappings(), 65_536);
                let mut stream = client
                    .query(sql.as_str(), &[])
                    .await
                    .unwrap()
                    .into_row_stream();
                let mut n = 0;
                while let Some(r) = stream.next().await {
                    if let Some(batch) = d.push(r.unwrap()).unwrap() {
                        n += batch.num_rows();
                    }
                }
                n + d.finish().unwrap().map_or(0, |b| b.num_rows())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
