//! The one abstraction over where data comes from. Every source kind (the sample generator, SQL
//! Server, files) implements [`Source`]: discover a table's exact columns, and read one window of
//! it as partitions of Arrow record batches. Nothing outside `extract/` names a concrete source;
//! [`open`] picks the implementation from `[source] type`.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::config::{Pipeline, SourceKind, SourceTable};
use crate::error::Result;
use crate::schema::ColumnShape;
use crate::state::{State, Watermark};
use crate::storage::Lake;

/// Batches of one partition, produced by a task and drained by the landing writer. An `Err`
/// item ends the partition with that error.
pub type Partition = tokio::sync::mpsc::Receiver<Result<RecordBatch>>;

/// One table's read, started: its columns and one receiver per partition.
pub struct TableRead {
    /// The columns as the source declares them (Arrow type, nullability, declared type).
    pub columns: Vec<ColumnShape>,
    /// Arrow schema of the batches (the same columns, in order).
    pub schema: SchemaRef,
    /// Index of the watermark column in `schema`, if the table is incremental.
    pub watermark_col: Option<usize>,
    /// One receiver per partition; each partition is fed by its own task (and connection).
    pub partitions: Vec<Partition>,
    /// Source files this read lands (files source only; recorded in the manifest, and in state
    /// by bronze after its commit, so that each file lands once).
    pub source_files: Vec<crate::state::LandedFile>,
    /// Rows the source rejected under `on_error = "quarantine"` (files source: rows that do not
    /// parse or break their declared type), in the shape of
    /// [`crate::quarantine::rejected_schema`]; landed beside the data as `rejected-0000.parquet`
    /// and loaded by bronze into `bronze._quarantine_<table>`. The senders close when every
    /// partition is done.
    pub rejected: Option<tokio::sync::mpsc::UnboundedReceiver<RecordBatch>>,
    /// Change tracking (`mode = "change_tracking"`): the version the read is complete up to,
    /// committed by bronze as the table's watermark ([`crate::state::Watermark::change_version`]);
    /// `None` for other reads. The batches then end with the columns `_op` and
    /// `_change_version` ([`super::change_columns`]).
    pub change_version: Option<i64>,
    /// Whether the rows are the table's whole content (a change-tracking first sync or full
    /// re-sync), so bronze turns the keys missing from them into deletes. Tables with
    /// `detect_deletes` are snapshots whatever the source says.
    pub snapshot: bool,
}

/// What `source sync` does with a contract column edited by hand (see [`Source::keeps`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the hand-set column; the text says why (every source value converts into it).
    Keep(String),
    /// Replace it with the discovered column; the text says why.
    Replace(String),
}

/// What one extraction asks of a source.
pub struct ReadRequest<'a> {
    /// The table.
    pub table: &'a SourceTable,
    /// Last committed watermark (exclusive lower bound before the lookback), if incremental.
    pub watermark_from: Option<&'a Watermark>,
    /// Exclusive upper bound of timestamp watermarks: the end of the logical date, in µs since
    /// the epoch (UTC).
    pub hi_us: i64,
    /// The run id (a retried run id must read the same input again).
    pub run_id: &'a str,
    /// The lake (for sources that keep their own progress, such as files landed before).
    pub lake: &'a Lake,
    /// Run state.
    pub state: &'a State,
    /// Read the whole table even where an incremental read is possible (`--full-refresh`;
    /// change tracking then re-syncs in full).
    pub full_refresh: bool,
}

/// A source of tables.
#[async_trait::async_trait]
pub trait Source: Send + Sync {
    /// Source kind as written in `[source] type`: `sample`, `mssql`, `files`.
    fn kind(&self) -> &'static str;

    /// The table's columns when they are known without asking anything (the sample's built-in
    /// schema); `None` for sources that must be asked (planning then needs a contract).
    fn builtin_columns(&self, _table: &SourceTable) -> Option<Vec<ColumnShape>> {
        None
    }

    /// Discovers the table's columns from the source itself: the SQL Server catalog, file
    /// footers or inference, or the built-in schema. Errors name the table; an unreachable
    /// source is retryable (exit 75).
    async fn discover(&self, table: &SourceTable) -> Result<Vec<ColumnShape>>;

    /// Whether discovery knows each column's nullability. A catalog does; inference from files
    /// does not (every inferred column is nullable), so `source sync` keeps a contract's
    /// hand-set NOT NULL for such a source.
    fn discovers_nullability(&self) -> bool {
        true
    }

    /// Whether `source sync` keeps a contract's hand-set column `declared` (its Arrow type,
    /// declared `source_type` and nullability) for a column the source now discovers as
    /// `found`, which differs from it. The default (a source whose catalog is the truth, and
    /// whose values land in the types it declares) replaces it.
    async fn keeps(
        &self,
        _table: &SourceTable,
        found: &ColumnShape,
        _declared: &ColumnShape,
    ) -> Result<Verdict> {
        Ok(Verdict::Replace(format!(
            "the source declares it {}",
            super::contract::shown(found)
        )))
    }

    /// Starts reading one window of the table.
    async fn read(&self, req: ReadRequest<'_>) -> Result<TableRead>;

    /// `<kind>:<database>.<object>`: stored in bronze `_source` and used in lineage.
    fn label(&self, pipeline: &Pipeline, table: &SourceTable) -> String {
        format!(
            "{}:{}.{}",
            self.kind(),
            pipeline.source.database,
            table.object
        )
    }
}

/// The source configured in `[source]`.
pub fn open(pipeline: &Pipeline) -> Box<dyn Source> {
    match (pipeline.source.kind, &pipeline.source.mssql) {
        (SourceKind::Mssql, Some(settings)) => Box::new(super::mssql::SqlServer::new(
            settings.clone(),
            pipeline.source.batch_size,
        )),
        (SourceKind::Files, _) => Box::new(super::files::FilesSource::new(pipeline)),
        _ => Box::new(super::sample::SampleSource::new(&pipeline.source)),
    }
}
