//! Extract: read each source table (fully, or incrementally past its watermark) and land it as
//! immutable Parquet under `landing/<table>/run=<run_id>/`, with a `_manifest.json` written last.
//!
//! Partitions are read in parallel; each streams batches through a bounded channel into its own
//! Parquet file, so memory stays bounded whatever the table size. The new watermark goes into the
//! manifest only: bronze commits it to state after its own commit, so a crash in between
//! re-extracts instead of skipping rows.

pub mod contract;
pub mod files;
pub mod mssql;
pub mod sample;
pub mod source;

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

use crate::config::{Pipeline, ReadMode, SourceTable};
use crate::error::{Error, Result};
use crate::plan::{Plan, RunParams};
use crate::schema::{ColumnChange, ColumnShape};
use crate::state::{State, Watermark};
use crate::storage::Lake;
use source::{ReadRequest, Source};

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
    /// Source files landed (files source); recorded in state by bronze after its commit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_files: Vec<crate::state::LandedFile>,
    /// The columns as the source declares them (Arrow type, nullability, declared source type):
    /// bronze checks every landed value against them. Empty in manifests of older versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<contract::ContractColumn>,
    /// Files of rows the source rejected under `on_error = "quarantine"` (relative to the
    /// landing directory, in the shape of [`crate::quarantine::rejected_schema`]); bronze loads
    /// them into `bronze._quarantine_<table>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected_files: Vec<String>,
    /// Rows in `rejected_files`.
    #[serde(default)]
    pub rejected_rows: u64,
    /// Whether the landed rows are the table's whole content (`detect_deletes`, or a
    /// change-tracking first sync or full re-sync): bronze then adds a delete row for every key
    /// of the table's current state that is missing from them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub snapshot: bool,
}

/// Name of the operation column of tables that track deletes: `'U'` (upsert: the row exists
/// with these values) or `'D'` (the key was deleted).
pub const OP_COLUMN: &str = "_op";

/// Name of the SQL Server change-tracking version column (`SYS_CHANGE_VERSION`) of tables read
/// with `mode = "change_tracking"`.
pub const CHANGE_VERSION_COLUMN: &str = "_change_version";

/// The columns a table's rows carry after its source columns and before bronze's metadata
/// columns: `_op` (Utf8, NOT NULL) for tables that track deletes, then `_change_version`
/// (Int64, NOT NULL) for change tracking; none for other tables.
pub fn change_columns(table: &SourceTable) -> Vec<ColumnShape> {
    let mut out = Vec::new();
    if table.tracks_deletes() {
        out.push(ColumnShape {
            name: OP_COLUMN.into(),
            data_type: DataType::Utf8,
            nullable: false,
            source_type: None,
        });
    }
    if table.mode == crate::config::ReadMode::ChangeTracking {
        out.push(ColumnShape {
            name: CHANGE_VERSION_COLUMN.into(),
            data_type: DataType::Int64,
            nullable: false,
            source_type: None,
        });
    }
    out
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
///
/// `full_refresh` reads change-tracked tables in full (a re-sync); other tables read as always.
pub async fn run(
    plan: &Plan,
    lake: &Lake,
    state: &State,
    params: &RunParams,
    full_refresh: bool,
) -> Result<Vec<ExtractMetrics>> {
    let source = source::open(&plan.pipeline);
    let source = source.as_ref();
    // Tables are read concurrently, `engine.threads` at a time (each with its own
    // `partitions` connections); results keep the pipeline's table order.
    let threads = plan.pipeline.engine.threads.max(1);
    let mut results =
        futures::stream::iter(plan.pipeline.source.tables.iter().map(|table| async move {
            let result =
                extract_table(plan, source, lake, state, params, table, full_refresh).await;
            (table, result)
        }))
        .buffered(threads);
    let mut out = Vec::new();
    // Tables with nothing new (files source) land nothing; only when every table has nothing
    // is the run "nothing to do" (exit 99).
    let mut nothing = Vec::new();
    while let Some((table, result)) = results.next().await {
        match result {
            Ok(m) => out.push(m),
            Err(Error::NothingToDo(why)) => {
                info!(table = %table.name, reason = %why, "Nothing to land.");
                nothing.push(why);
            }
            // Whatever fails names the table and its landing directory; a source error names
            // its source file in the message, so the landing directory is not given as `file`.
            // The reads still in flight are dropped: a retried run id cleans their landing
            // directories first.
            Err(e) => {
                let dir = crate::storage::redact(&lake.landing_url(&table.name, &params.run_id));
                let file = (!matches!(e, Error::Source { .. })).then_some(dir.as_str());
                return Err(e.in_table(&format!("landing.{}", table.name), &dir, file));
            }
        }
    }
    if out.is_empty() && !nothing.is_empty() {
        return Err(Error::NothingToDo(nothing.join("; ")));
    }
    Ok(out)
}

async fn extract_table(
    plan: &Plan,
    source: &dyn Source,
    lake: &Lake,
    state: &State,
    params: &RunParams,
    table: &SourceTable,
    full_refresh: bool,
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

    let watermark_from = match table.mode {
        ReadMode::Full => None,
        ReadMode::Watermark => state.watermark(&table.name).await?,
        // A watermark of another kind (the table was read by a watermark column before) is no
        // synced version: the table is synced in full.
        ReadMode::ChangeTracking => state
            .watermark(&table.name)
            .await?
            .filter(|w| w.kind == Watermark::CHANGE_VERSION),
    };
    let read = source
        .read(ReadRequest {
            table,
            watermark_from: watermark_from.as_ref(),
            hi_us: params.window_end_us(),
            run_id: &params.run_id,
            lake,
            state,
            full_refresh,
        })
        .await?;
    check_contract(&plan.pipeline, table, &read.columns)?;
    let wm_col = read.watermark_col;
    let partitions = read.partitions;
    let source_files = read.source_files;
    let snapshot = table.detect_deletes || read.snapshot;
    let change_version = read.change_version.map(Watermark::change_version);
    let columns = contract::ContractColumn::of(&read.columns);
    let rejected = land_rejected(
        store.clone(),
        StorePath::from(format!("{dir}/{REJECTED_FILE}")),
        read.rejected,
    );

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
    let landed = futures::stream::iter(tasks)
        .buffer_unordered(table.partitions.max(1))
        .try_collect::<Vec<_>>();
    let (results, rejected_rows) = futures::future::try_join(landed, rejected).await?;
    if rejected_rows > 0 {
        tracing::warn!(table = %table.name, rows = rejected_rows, policy = "quarantine", "Rejected rows landed for quarantine.");
    }

    let mut files: Vec<String> = results.iter().filter_map(|r| r.0.clone()).collect();
    files.sort();
    let rows = results.iter().map(|r| r.1).sum();
    let max_wm = results
        .iter()
        .filter_map(|r| r.2.clone())
        .max_by_key(|w| w.value);
    let watermark_to = change_version.or(max_wm).or_else(|| watermark_from.clone());
    let manifest = Manifest {
        table: table.name.clone(),
        run_id: params.run_id.clone(),
        logical_date: params.logical_date.to_string(),
        source: source.label(&plan.pipeline, table),
        rows,
        files: files.clone(),
        watermark_from,
        watermark_to,
        source_files,
        columns,
        rejected_files: if rejected_rows > 0 {
            vec![REJECTED_FILE.to_string()]
        } else {
            Vec::new()
        },
        rejected_rows,
        snapshot,
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

/// Name of the landed file of rejected rows, in the landing directory.
const REJECTED_FILE: &str = "rejected-0000.parquet";

/// Lands the rows a source rejected (if it can reject any) as one Parquet file at `path`, while
/// the partitions land; returns how many. Nothing is written when no row is rejected.
async fn land_rejected(
    store: std::sync::Arc<dyn ObjectStore>,
    path: StorePath,
    rx: Option<tokio::sync::mpsc::UnboundedReceiver<arrow::record_batch::RecordBatch>>,
) -> Result<u64> {
    let Some(mut rx) = rx else { return Ok(0) };
    let mut writer: Option<AsyncArrowWriter<ParquetObjectWriter>> = None;
    let mut rows = 0u64;
    while let Some(batch) = rx.recv().await {
        if batch.num_rows() == 0 {
            continue;
        }
        rows += batch.num_rows() as u64;
        if writer.is_none() {
            writer = Some(AsyncArrowWriter::try_new(
                ParquetObjectWriter::new(store.clone(), path.clone()),
                batch.schema(),
                None,
            )?);
        }
        if let Some(w) = writer.as_mut() {
            w.write(&batch).await?;
        }
    }
    if let Some(w) = writer {
        w.close().await?;
    }
    Ok(rows)
}

/// Compares the columns the source has now with the table's contract (if it has one) and
/// applies the table's `on_schema_change` policy: every change is logged, column by column; a
/// change the policy refuses stops the extraction before anything lands (exit 2).
fn check_contract(pipeline: &Pipeline, table: &SourceTable, columns: &[ColumnShape]) -> Result<()> {
    let Some((_, expected)) = contract::read(pipeline, &table.name)? else {
        return Ok(());
    };
    let changes = crate::schema::diff(&expected, columns);
    for change in &changes {
        tracing::warn!(table = %table.name, change = %change, policy = %table.on_schema_change, "Source schema differs from its contract.");
    }
    let refused: Vec<&ColumnChange> = table.on_schema_change.refused(&changes);
    if refused.is_empty() {
        return Ok(());
    }
    Err(Error::Source {
        message: format!(
            "table `{}`: the source schema no longer matches its contract {} and `on_schema_change = \"{}\"` does not allow: {}; review the change, then run `smelter source sync {}` (or choose another on_schema_change policy)",
            table.name,
            crate::plan::display_path(pipeline, &contract::path(pipeline, &table.name)),
            table.on_schema_change,
            refused.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
            crate::plan::display_path(pipeline, &pipeline.file),
        ),
        retryable: false,
    })
}

/// The columns planning uses for a table whose bronze table does not exist yet, before bronze's
/// metadata columns: its [`source_columns`], then its [`change_columns`].
pub fn planning_columns(pipeline: &Pipeline, table: &SourceTable) -> Result<Vec<ColumnShape>> {
    let mut columns = source_columns(pipeline, table)?;
    columns.extend(change_columns(table));
    Ok(columns)
}

/// A table's source columns as planning knows them without asking the source: its contract,
/// else the source's built-in schema (the sample). Without either, the error names the table
/// and the command that writes the contract (exit 2).
pub fn source_columns(pipeline: &Pipeline, table: &SourceTable) -> Result<Vec<ColumnShape>> {
    if let Some((_, columns)) = contract::read(pipeline, &table.name)? {
        return Ok(columns);
    }
    source::open(pipeline)
        .builtin_columns(table)
        .ok_or_else(|| {
            Error::config(
                crate::plan::display_path(pipeline, &pipeline.file),
                format!(
                    "table `bronze.{}` has no schema contract ({} is missing) and does not exist in the lake yet; run `smelter source sync {}` to write it from the source",
                    table.name,
                    crate::plan::display_path(pipeline, &contract::path(pipeline, &table.name)),
                    crate::plan::display_path(pipeline, &pipeline.file),
                ),
            )
        })
}

/// What `source sync` found for one table.
#[derive(Debug, Clone, Serialize)]
pub struct SyncResult {
    /// Table.
    pub table: String,
    /// Contract file, as shown (relative to the project root).
    pub file: String,
    /// `new`, `unchanged` or `changed`.
    pub status: &'static str,
    /// Column changes from the old contract to the source (empty for new or unchanged).
    pub changes: Vec<ColumnChange>,
    /// Hand-set columns and settings kept or replaced (with why), and other differences
    /// (source label, key, watermark).
    pub notes: Vec<String>,
    /// Columns of the contract the table format cannot store (see
    /// [`contract::unstorable_problems`]); the command then fails (exit 2).
    pub unstorable: Vec<String>,
}

/// Discovers the schema of each table (all, or those named in `only`) from the source and
/// writes its contract file, unless `check` is set; returns what changed per table. An existing
/// contract is merged with the source, keeping what was set by hand where the source agrees
/// ([`contract::merge`]). Unknown
/// table names are an error listing the valid ones (exit 2).
pub async fn sync_contracts(
    pipeline: &Pipeline,
    only: Option<&[String]>,
    check: bool,
) -> Result<Vec<SyncResult>> {
    let tables: Vec<&SourceTable> = match only {
        None => pipeline.source.tables.iter().collect(),
        Some(names) => {
            let mut out = Vec::new();
            for n in names {
                match pipeline.source.tables.iter().find(|t| &t.name == n) {
                    Some(t) => out.push(t),
                    None => {
                        return Err(Error::Usage(format!(
                            "--tables: `{n}` is not a source table of {}; valid choices: {}{}",
                            crate::plan::display_path(pipeline, &pipeline.file),
                            pipeline
                                .source
                                .tables
                                .iter()
                                .map(|t| t.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                            crate::plan::suggest(
                                n,
                                pipeline.source.tables.iter().map(|t| t.name.as_str())
                            )
                        )))
                    }
                }
            }
            out
        }
    };
    let source = source::open(pipeline);
    let mut results = Vec::new();
    for table in tables {
        let found = source.discover(table).await?;
        let label = source.label(pipeline, table);
        let file = contract::path(pipeline, &table.name);
        let shown = crate::plan::display_path(pipeline, &file);
        let (new, columns, status, changes, notes) = match contract::read(pipeline, &table.name) {
            Ok(Some((old, old_columns))) => {
                let merged =
                    contract::merge(source.as_ref(), table, &old, &old_columns, found).await?;
                let new = contract::Contract {
                    table: table.name.clone(),
                    source: label,
                    key: merged.key,
                    watermark: merged.watermark,
                    columns: contract::ContractColumn::of(&merged.columns),
                };
                let changes = crate::schema::diff(&old_columns, &merged.columns);
                let mut notes = merged.notes;
                if old.source != new.source {
                    notes.push(format!("source `{}` → `{}`", old.source, new.source));
                }
                if old.key != new.key {
                    notes.push(format!("key {:?} → {:?}", old.key, new.key));
                }
                if old.watermark != new.watermark {
                    notes.push(format!(
                        "watermark {:?} → {:?}",
                        old.watermark, new.watermark
                    ));
                }
                let status = if old == new { "unchanged" } else { "changed" };
                (new, merged.columns, status, changes, notes)
            }
            // A contract that no longer parses is replaced.
            Ok(None) | Err(_) => (
                contract::Contract::new(label, table, &found),
                found,
                "new",
                Vec::new(),
                Vec::new(),
            ),
        };
        // A type the contract cannot record is not written (it would not parse back).
        let unrepresentable = contract::unrepresentable_problems(&shown, &table.name, &columns);
        let writable = unrepresentable.is_empty();
        let mut unstorable = unrepresentable;
        unstorable.extend(contract::unstorable_problems(
            pipeline,
            &table.name,
            &columns,
        ));
        if !check && writable && status != "unchanged" {
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::config(&shown, format!("cannot create directory: {e}")))?;
            }
            std::fs::write(&file, new.render()?)
                .map_err(|e| Error::config(&shown, format!("cannot write contract: {e}")))?;
        }
        info!(table = %table.name, file = %shown, status, changes = changes.len(), "Synced source schema contract.");
        results.push(SyncResult {
            table: table.name.clone(),
            file: shown,
            status,
            changes,
            notes,
            unstorable,
        });
    }
    Ok(results)
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
