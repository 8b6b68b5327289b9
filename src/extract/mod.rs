//! Extract: read each source table (fully, or incrementally past its watermark) and land it as
//! immutable Parquet under `landing/<table>/run=<run_id>/`, with a `_manifest.json` written last.
//!
//! Partitions are read in parallel; each streams batches through a bounded channel into its own
//! Parquet file, so memory stays bounded whatever the table size. The new watermark goes into the
//! manifest only: bronze commits it to state after its own commit, so a crash in between
//! re-extracts instead of skipping rows.

pub mod mssql;
pub mod sample;

use std::time::Instant;

use arrow::array::{Array, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, TimeUnit};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::async_writer::ParquetObjectWriter;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use tracing::info;

use arrow::record_batch::RecordBatch;

use crate::config::{SourceKind, SourceTable};
use crate::error::{Error, Result};
use crate::plan::{Plan, RunParams};
use crate::state::{State, Watermark};
use crate::storage::Lake;
use sample::{Sample, Window};

/// What landed for one table in one run; written as `_manifest.json` after the data files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Lake table name.
    pub table: String,
    /// Run id.
    pub run_id: String,
    /// Logical date of the run.
    pub logical_date: String,
    /// `<type>:<database>.<object>` of the source, stored in bronze `_source`.
    pub source: String,
    /// Rows landed.
    pub rows: u64,
    /// Data file names, relative to the landing directory.
    pub files: Vec<String>,
    /// Watermark the extraction started after (exclusive), if incremental.
    pub watermark_from: Option<Watermark>,
    /// Highest watermark value landed; committed to state by bronze.
    pub watermark_to: Option<Watermark>,
}

/// Metrics of one table's extraction.
#[derive(Debug, Clone, Serialize)]
pub struct ExtractMetrics {
    /// Table.
    pub table: String,
    /// Rows landed.
    pub rows: u64,
    /// Files written.
    pub files: usize,
    /// Wall time in ms.
    pub duration_ms: u64,
}

/// Runs the extract layer for every source table.
pub async fn run(
    plan: &Plan,
    lake: &Lake,
    state: &State,
    params: &RunParams,
) -> Result<Vec<ExtractMetrics>> {
    let mut out = Vec::new();
    for table in &plan.pipeline.source.tables {
        // Whatever fails names the table and its landing directory.
        let landed = extract_table(plan, lake, state, params, table)
            .await
            .map_err(|e| {
                let dir = crate::storage::redact(&lake.landing_url(&table.name, &params.run_id));
                e.in_table(&format!("landing.{}", table.name), &dir, Some(&dir))
            })?;
        out.push(landed);
    }
    Ok(out)
}

/// Batches of one partition, produced by a task and drained by the landing writer.
type Partition = tokio::sync::mpsc::Receiver<Result<RecordBatch>>;

async fn extract_table(
    plan: &Plan,
    lake: &Lake,
    state: &State,
    params: &RunParams,
    table: &SourceTable,
) -> Result<ExtractMetrics> {
    let started = Instant::now();
    let store = lake.store();
    let dir_url = lake.landing_url(&table.name, &params.run_id);
    let dir = lake.path_of(&dir_url)?;
    // A retried run id starts from a clean landing directory.
    let old: Vec<_> = store
        .list(Some(&dir))
        .map_ok(|m| m.location)
        .try_collect()
        .await?;
    for location in old {
        store.delete(&location).await?;
    }

    let watermark_from = match &table.watermark {
        Some(_) => state.watermark(&table.name).await?,
        None => None,
    };
    let hi = (sample::days_since_epoch(params.logical_date) as i64 + 1) * 86_400_000_000;
    let source = &plan.pipeline.source;
    let (kind, partitions, wm_col) = match (source.kind, &source.mssql) {
        (SourceKind::Mssql, Some(settings)) => {
            let read = mssql::start_read(
                settings,
                table,
                watermark_from.as_ref(),
                hi,
                source.batch_size,
            )
            .await?;
            ("mssql", read.partitions, read.watermark_col)
        }
        _ => {
            let (parts, wm_col) = sample_partitions(plan, source, table, &watermark_from, hi)?;
            ("sample", parts, wm_col)
        }
    };

    let tasks = partitions.into_iter().enumerate().map(|(i, mut rx)| {
        let store = store.clone();
        let file = format!("part-{i:04}.parquet");
        let path = StorePath::from(format!("{dir}/{file}"));
        async move {
            let mut writer: Option<AsyncArrowWriter<ParquetObjectWriter>> = None;
            let mut rows = 0u64;
            let mut max_wm: Option<Watermark> = None;
            while let Some(batch) = rx.recv().await {
                let batch = batch?;
                if batch.num_rows() == 0 {
                    continue;
                }
                rows += batch.num_rows() as u64;
                if let Some(idx) = wm_col {
                    if let Some(m) = column_max(batch.column(idx).as_ref()) {
                        if max_wm.as_ref().is_none_or(|w| m.value > w.value) {
                            max_wm = Some(m);
                        }
                    }
                }
                if writer.is_none() {
                    let props = WriterProperties::builder()
                        .set_compression(Compression::ZSTD(
                            ZstdLevel::try_new(1).unwrap_or_default(),
                        ))
                        .build();
                    writer = Some(AsyncArrowWriter::try_new(
                        ParquetObjectWriter::new(store.clone(), path.clone()),
                        batch.schema(),
                        Some(props),
                    )?);
                }
                if let Some(w) = writer.as_mut() {
                    w.write(&batch).await?;
                }
            }
            let file = match writer {
                Some(w) => {
                    w.close().await?;
                    Some(file)
                }
                None => None,
            };
            Ok::<_, Error>((file, rows, max_wm))
        }
    });
    // Every partition runs at once: each holds its own source connection.
    let results: Vec<_> = futures::stream::iter(tasks)
        .buffer_unordered(table.partitions.max(1))
        .try_collect()
        .await?;

    let mut files: Vec<String> = results.iter().filter_map(|r| r.0.clone()).collect();
    files.sort();
    let rows = results.iter().map(|r| r.1).sum();
    let max_wm = results
        .iter()
        .filter_map(|r| r.2.clone())
        .max_by_key(|w| w.value);
    let watermark_to = max_wm.or_else(|| watermark_from.clone());
    let manifest = Manifest {
        table: table.name.clone(),
        run_id: params.run_id.clone(),
        logical_date: params.logical_date.to_string(),
        source: format!("{kind}:{}.{}", source.database, table.object),
        rows,
        files: files.clone(),
        watermark_from,
        watermark_to,
    };
    let manifest_path = StorePath::from(format!("{dir}/_manifest.json"));
    store
        .put(
            &manifest_path,
            PutPayload::from(serde_json::to_vec_pretty(&manifest)?),
        )
        .await?;
    let duration_ms = started.elapsed().as_millis() as u64;
    info!(pipeline = %plan.pipeline.name, layer = "extract", table = %table.name, run_id = %params.run_id, rows, files = files.len(), duration_ms, "Landed table.");
    Ok(ExtractMetrics {
        table: table.name.clone(),
        rows,
        files: files.len(),
        duration_ms,
    })
}

/// Starts the sample generator's partitions, each on a blocking thread feeding a channel.
fn sample_partitions(
    plan: &Plan,
    source: &crate::config::Source,
    table: &SourceTable,
    watermark_from: &Option<Watermark>,
    hi: i64,
) -> Result<(Vec<Partition>, Option<usize>)> {
    let sample = Sample::new(source);
    let lo = watermark_from
        .as_ref()
        .map(|w| w.value - table.lookback_seconds * 1_000_000);
    let window = Window { lo, hi };
    let schema = Sample::schema(&table.name)?;
    let wm_col = match &table.watermark {
        Some(c) => Some(schema.index_of(c).map_err(|_| {
            Error::config(
                plan.pipeline.file.display(),
                format!(
                    "key `source.tables.watermark`: table `{}` has no column `{c}`",
                    table.name
                ),
            )
        })?),
        None => None,
    };
    let mut parts = Vec::new();
    for range in sample.partitions(&table.name, window, table.partitions) {
        let reader = sample.read(&table.name, window, range)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            for batch in reader {
                if tx.blocking_send(batch).is_err() {
                    break;
                }
            }
        });
        parts.push(rx);
    }
    Ok((parts, wm_col))
}

/// Reads the manifest of a table's landing for a run, if the extraction finished.
pub async fn read_manifest(lake: &Lake, table: &str, run_id: &str) -> Result<Option<Manifest>> {
    let dir = lake.path_of(&lake.landing_url(table, run_id))?;
    let path = StorePath::from(format!("{dir}/_manifest.json"));
    match lake.store().get(&path).await {
        Ok(r) => Ok(Some(serde_json::from_slice(&r.bytes().await?)?)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Highest watermark value in a column (timestamps in microseconds, or integers).
fn column_max(array: &dyn Array) -> Option<Watermark> {
    match array.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => array
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .and_then(arrow::compute::max)
            .map(Watermark::timestamp),
        // Floored to the microsecond: the next window re-reads that microsecond rather than
        // skipping rows in it (dedup by key happens downstream).
        DataType::Timestamp(TimeUnit::Nanosecond, _) => array
            .as_any()
            .downcast_ref::<arrow::array::TimestampNanosecondArray>()
            .and_then(arrow::compute::max)
            .map(|ns| Watermark::timestamp(ns.div_euclid(1000))),
        DataType::Int32 => array
            .as_any()
            .downcast_ref::<arrow::array::Int32Array>()
            .and_then(arrow::compute::max)
            .map(|v| Watermark::integer(v as i64)),
        DataType::Int16 => array
            .as_any()
            .downcast_ref::<arrow::array::Int16Array>()
            .and_then(arrow::compute::max)
            .map(|v| Watermark::integer(v as i64)),
        DataType::Int64 => array
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .and_then(arrow::compute::max)
            .map(Watermark::integer),
        _ => None,
    }
}
