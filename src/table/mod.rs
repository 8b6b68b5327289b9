//! Table formats behind one trait: open a table as a DataFusion provider, and write a DataFrame to
//! it with a materialization (overwrite, append, merge), optionally idempotent by transaction id.
//!
//! Delta Lake ([`delta`], the default) and Apache Iceberg ([`iceberg`]) implement [`TableFormat`];
//! `[format] table` chooses one for the lake's tables.

pub mod delta;
pub mod delta_files;
pub mod iceberg;
pub mod partition_values;
pub mod per_table;

use std::sync::Arc;

use arrow::datatypes::{DataType, Schema};
use datafusion::catalog::TableProvider;
use datafusion::prelude::{DataFrame, SessionContext};
use serde::Serialize;
use url::Url;

use crate::config::Pipeline;
use crate::error::Result;

/// How a write changes the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteMode {
    /// Replace the table's content (and schema).
    Overwrite,
    /// Add rows; new columns are merged into the schema.
    Append,
    /// Upsert by key columns: update matches, insert the rest.
    Merge {
        /// Key columns.
        keys: Vec<String>,
        /// Version columns (lexicographic, NULL lowest): when set, a matched row is updated only
        /// when the incoming version is strictly newer, so an older batch never replaces a newer
        /// row. Empty: every matched row is updated.
        sequence_by: Vec<String>,
        /// A boolean input column marking delete rows: a marked row deletes the matched row
        /// when its version is at least the row's (always, without `sequence_by`), and is never
        /// inserted; the column itself is not written. `None`: no deletes.
        delete: Option<String>,
    },
}

/// SQL text of the condition under which the row aliased `newer` holds a strictly newer version
/// than the row aliased `older` by the `sequence_by` columns: lexicographic, a NULL lower than
/// any value and equal to NULL; never NULL itself; `None` for no columns. For `(a, b)`:
/// `gt(a) OR (eq(a) AND gt(b))`, with `gt(x)` = `COALESCE(n.x > o.x, n.x IS NOT NULL AND o.x IS
/// NULL)` and `eq(x)` = `n.x IS NOT DISTINCT FROM o.x`. Shared by the formats' merges and the
/// model runner's tombstones, so both order versions alike.
pub fn newer_version(sequence_by: &[String], newer: &str, older: &str) -> Option<String> {
    let (last, before) = sequence_by.split_last()?;
    let q = |c: &str| format!("\"{}\"", c.replace('"', "\"\""));
    let gt = |c: &str| {
        let c = q(c);
        format!(
            "COALESCE({newer}.{c} > {older}.{c}, {newer}.{c} IS NOT NULL AND {older}.{c} IS NULL)"
        )
    };
    Some(before.iter().rev().fold(gt(last), |rest, c| {
        format!(
            "({} OR (({newer}.{c} IS NOT DISTINCT FROM {older}.{c}) AND {rest}))",
            gt(c),
            c = q(c)
        )
    }))
}

/// One field of a model's `partition_by`: a column, bare or under a transform
/// (`-- partition_by: region, day(ship_date), bucket(16, customer_id)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionField {
    /// The source column of the output.
    pub column: String,
    /// How its values become partition values.
    pub transform: PartitionTransform,
}

/// How a column's values become partition values. The transforms are Iceberg's (Iceberg table
/// spec v2, "Partition Transforms"); Delta Lake partitions by column values only, so it takes
/// [`PartitionTransform::Column`] and [`PartitionTransform::Identity`] alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionTransform {
    /// A bare column: the format's default for its type (Delta: the value; Iceberg: the value
    /// of an integer or string column, `day` of a DATE or TIMESTAMP column).
    Column,
    /// `identity(c)`: the value.
    Identity,
    /// `year(c)`: years since 1970 of a DATE or TIMESTAMP.
    Year,
    /// `month(c)`: months since 1970-01 of a DATE or TIMESTAMP.
    Month,
    /// `day(c)`: days since 1970-01-01 of a DATE or TIMESTAMP.
    Day,
    /// `hour(c)`: hours since 1970-01-01 00:00 of a TIMESTAMP.
    Hour,
    /// `bucket(N, c)`: `(murmur3_x86_32(c) & i32::MAX) % N`, the spec's hash bucket. Read so
    /// that a header naming it gets the reason it is refused: neither Delta Lake nor the pinned
    /// Iceberg writer can store it (see `iceberg::partition_transform`).
    Bucket(u32),
    /// `truncate(W, c)`: `c - (c mod W)` of an integer.
    Truncate(u32),
}

impl PartitionField {
    /// The field read from one header item (`c`, `day(c)`, `bucket(16, c)`); the error says
    /// what is wrong and lists the transforms.
    pub fn from_call(call: crate::plan::ident::Call) -> std::result::Result<Self, String> {
        use PartitionTransform as T;
        const KNOWN: &str = "write a column, or one of identity(c), year(c), month(c), day(c), hour(c), bucket(N, c), truncate(W, c)";
        let width = |name: &str| match call.argument {
            Some(n) if (1..=i32::MAX as u64).contains(&n) => Ok(n as u32),
            Some(n) => Err(format!(
                "`{name}({n}, …)` needs a width from 1 to {}",
                i32::MAX
            )),
            None => Err(format!(
                "`{name}` needs a width first, e.g. `{name}(16, {})`",
                call.column
            )),
        };
        let transform = match (call.function.as_deref(), call.argument) {
            (None, _) => T::Column,
            (Some(name @ ("bucket" | "truncate")), _) => {
                let n = width(name)?;
                if name == "bucket" {
                    T::Bucket(n)
                } else {
                    T::Truncate(n)
                }
            }
            (Some(name), Some(n)) => {
                return Err(format!("`{name}` takes only a column, not `{n}`; {KNOWN}"))
            }
            (Some("identity"), None) => T::Identity,
            (Some("year" | "years"), None) => T::Year,
            (Some("month" | "months"), None) => T::Month,
            (Some("day" | "days"), None) => T::Day,
            (Some("hour" | "hours"), None) => T::Hour,
            (Some(other), None) => {
                return Err(format!("unknown partition transform `{other}`; {KNOWN}"))
            }
        };
        Ok(Self {
            column: call.column,
            transform,
        })
    }

    /// The column names of `fields`, when every field is a plain column value (what Delta Lake
    /// can store); otherwise the first field that is not, for the caller's error.
    pub fn plain_columns(fields: &[Self]) -> std::result::Result<Vec<String>, &Self> {
        fields
            .iter()
            .map(|f| match f.transform {
                PartitionTransform::Column | PartitionTransform::Identity => Ok(f.column.clone()),
                _ => Err(f),
            })
            .collect()
    }
}

impl std::fmt::Display for PartitionField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use PartitionTransform as T;
        let c = crate::plan::ident::to_sql(&self.column);
        match self.transform {
            T::Column => write!(f, "{c}"),
            T::Identity => write!(f, "identity({c})"),
            T::Year => write!(f, "year({c})"),
            T::Month => write!(f, "month({c})"),
            T::Day => write!(f, "day({c})"),
            T::Hour => write!(f, "hour({c})"),
            T::Bucket(n) => write!(f, "bucket({n}, {c})"),
            T::Truncate(w) => write!(f, "truncate({w}, {c})"),
        }
    }
}

impl Serialize for PartitionField {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One write.
pub struct WriteRequest<'a> {
    /// Session the input is planned in.
    pub ctx: &'a SessionContext,
    /// Table URL.
    pub url: &'a Url,
    /// Data to write.
    pub input: DataFrame,
    /// Materialization.
    pub mode: WriteMode,
    /// Partitioning (used when the table is created; an overwrite changes a table's
    /// partitioning to it, other writes refuse a table partitioned otherwise).
    pub partition_by: Vec<PartitionField>,
    /// Idempotency id, recorded with the commit (as a Delta application transaction and as commit
    /// metadata `smelter.txn_id`): an append or merge whose id is already committed is skipped
    /// and reports the counts of the commit that carries it; an overwrite always runs and
    /// records it.
    pub txn_id: Option<String>,
    /// Commit metadata (run id, layer, model) recorded with the commit.
    pub metadata: Vec<(String, String)>,
    /// The table version `input` was computed from, when it depends on the table's state (an
    /// scd2 history recomputes the versions of its keys from the table; a versioned merge's
    /// upserts are filtered by the tombstones of the deletes committed with the table); -1 when
    /// there was no table.
    /// The write then commits as of that version, and loses (a commit conflict: nothing
    /// written, exit 75) to any other write that set it and committed since, or to a writer
    /// that created the table meanwhile: a result computed from a stale read is never
    /// committed. `None`: the write does not depend on the table's rows.
    pub read_version: Option<i64>,
    /// Shown every batch written, as the format writes it (after its own type normalization),
    /// by an overwrite, an append, or a merge into a table that has no version yet (its rows
    /// are then the table's); not used by a merge into an existing table, whose rows are not
    /// the table's. [`WriteMetrics::observed`] says whether it was used.
    pub observer: Option<Arc<dyn crate::engine::observe::BatchObserver>>,
    /// Data files of the table already written with `input`'s rows and not yet committed (a
    /// model's result written by the executors of a Ballista cluster): when `input` is still
    /// exactly [`StagedFiles::df`] (no check removed a row, no cast was added) and the format
    /// can take them as they are (a Delta append or overwrite of an unpartitioned table whose
    /// schema they match, or of a new table), the write commits them by reference instead of
    /// writing `input` again, and marks them committed.
    pub staged: Option<&'a StagedFiles>,
}

/// Data files written into a staging directory of a table by a cluster job
/// ([`delta_files::WriteFiles`]) and the scan of their rows. Dropped, it deletes the
/// directory's files that no commit took (all of them unless [`StagedFiles::committed`] was
/// called; otherwise those of task attempts whose actions never reached the driver), in the
/// background, awaited before the process exits ([`crate::interrupt::defer`]).
pub struct StagedFiles {
    /// The staged rows: a plain Parquet scan of the files, with the query's columns.
    pub df: DataFrame,
    /// The files' Delta `add` actions, paths relative to the table.
    pub adds: Vec<deltalake::kernel::Add>,
    /// The files as a plain Parquet scan's input (the query's columns; version -1).
    pub files: SnapshotFiles,
    store: Arc<dyn object_store::ObjectStore>,
    dir: object_store::path::Path,
    /// The directory on local disk (a `file://` lake), removed when it is left empty.
    local_dir: Option<std::path::PathBuf>,
    committed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for StagedFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedFiles")
            .field("dir", &self.dir)
            .field("files", &self.adds.len())
            .finish()
    }
}

impl StagedFiles {
    /// The staging directory `dir` (an object-store path in `store`; `local_dir`: the same
    /// directory on local disk, for a `file://` lake), empty so far: its clean-up is armed from
    /// here on, so a job that fails leaves no file behind.
    pub fn new(
        store: Arc<dyn object_store::ObjectStore>,
        dir: object_store::path::Path,
        local_dir: Option<std::path::PathBuf>,
        df: DataFrame,
    ) -> Self {
        StagedFiles {
            files: SnapshotFiles {
                schema: df.schema().inner().clone(),
                files: Vec::new(),
                version: -1,
            },
            df,
            adds: Vec::new(),
            store,
            dir,
            local_dir,
            committed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Records that a commit took [`StagedFiles::adds`]: they are the table's files now.
    pub fn committed(&self) {
        self.committed
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether a commit took the files ([`StagedFiles::committed`]).
    pub fn is_committed(&self) -> bool {
        self.committed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Rows of the staged files, from their statistics (`None` when a file has none).
    pub fn rows(&self) -> Option<u64> {
        self.adds.iter().try_fold(0u64, |n, add| {
            let stats: serde_json::Value = serde_json::from_str(add.stats.as_deref()?).ok()?;
            Some(n + stats.get("numRecords")?.as_u64()?)
        })
    }
}

impl Drop for StagedFiles {
    fn drop(&mut self) {
        use futures::{StreamExt, TryStreamExt};
        let keep: Arc<std::collections::HashSet<String>> =
            if self.committed.load(std::sync::atomic::Ordering::SeqCst) {
                self.adds
                    .iter()
                    .filter_map(|a| a.path.rsplit('/').next().map(str::to_string))
                    .collect::<std::collections::HashSet<_>>()
                    .into()
            } else {
                Default::default()
            };
        let (store, dir) = (self.store.clone(), self.dir.clone());
        let local_dir = self.local_dir.clone();
        crate::interrupt::defer(async move {
            let doomed = store
                .list(Some(&dir))
                .try_filter(move |m| {
                    futures::future::ready(
                        m.location
                            .filename()
                            .is_none_or(|name| !keep.contains(name)),
                    )
                })
                .map_ok(|m| m.location)
                .boxed();
            let deleted = store.delete_stream(doomed).try_collect::<Vec<_>>().await;
            match deleted {
                Ok(files) if !files.is_empty() => {
                    tracing::info!(dir = %dir, files = files.len(), "Deleted staged files no commit took.")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(dir = %dir, error = %e, "Could not delete staged files (they are in no table version; `smelter maintain` removes them once older than its retention).")
                }
            }
            if let Some(local) = local_dir {
                // Only when empty: a committed file keeps it.
                let _ = std::fs::remove_dir(local);
            }
        });
    }
}

/// A table version as a list of Parquet files ([`TableFormat::snapshot_files`]).
#[derive(Debug, Clone)]
pub struct SnapshotFiles {
    /// The table's columns, as the format's provider reads them (files written before a column
    /// was added lack it: a scan reads it as NULL).
    pub schema: arrow::datatypes::SchemaRef,
    /// Full URLs of the version's data files (`file://`, `s3://`, `az://`, ...).
    pub files: Vec<Url>,
    /// The version the files are of ([`TableStats::version`]).
    pub version: i64,
}

/// The URL of a data file location as a table's metadata holds it: a full URI, or an absolute
/// local path (a Delta log on the local file system, an Iceberg catalog on it).
///
/// Errors: neither (internal: the formats write one or the other).
pub fn file_url(location: &str) -> Result<Url> {
    let parsed = if location.starts_with('/') {
        Url::from_file_path(location).ok()
    } else {
        Url::parse(location).ok()
    };
    parsed.ok_or_else(|| {
        crate::error::Error::Internal(format!("data file location {location} is not a URL"))
    })
}

/// What a write did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WriteMetrics {
    /// Rows inserted.
    pub rows_inserted: u64,
    /// Rows updated (merge).
    pub rows_updated: u64,
    /// Rows deleted (a merge applying deletes).
    pub rows_deleted: u64,
    /// Data files added.
    pub files_added: u64,
    /// Table version after the write.
    pub version: i64,
    /// True when nothing was written: there was nothing to write, or the transaction id was
    /// already committed (then `earlier_commit` is set).
    pub skipped: bool,
    /// When the transaction id was already committed by an earlier attempt: that commit, whose
    /// counts and version the other fields then hold (what the table holds from this run id).
    pub earlier_commit: Option<EarlierCommit>,
    /// The table's size and shape after the write, when the format had its new snapshot at hand
    /// (read from the snapshot the commit produced: no extra log load).
    #[serde(skip)]
    pub stats: Option<TableStats>,
    /// True when the request's observer was shown every row the write committed (see
    /// [`WriteRequest::observer`]); false when there was no observer or it was not used.
    #[serde(skip)]
    pub observed: bool,
}

/// The commit of an earlier attempt that carries a write's transaction id.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EarlierCommit {
    /// Table version of the commit; `None` when the commit was not found in the recent history
    /// (the counts are then unknown and reported as 0).
    pub version: Option<i64>,
    /// The attempt that made it (commit metadata `smelter.attempt`), when recorded.
    pub attempt: Option<String>,
    /// Commit time, milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
}

/// Size and shape of a table's current version, from its metadata (no data scan).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableStats {
    /// Table version.
    pub version: i64,
    /// Live data files.
    pub files: u64,
    /// Total size of the live data files in bytes.
    pub size_bytes: u64,
    /// Rows, when every file records its row count.
    pub rows: Option<u64>,
}

/// A column a table format cannot store, found before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnstorableColumn {
    /// The column, with `.field`, `.key`/`.value` and `[]` steps when the culprit is nested
    /// (e.g. `legs[].wait`).
    pub column: String,
    /// The Arrow type the format cannot store (the nested field's own type for a nested culprit).
    pub data_type: DataType,
    /// Why the format cannot store it.
    pub reason: String,
    /// How to fix it in the model's SQL, e.g. "store `CAST(<expr> AS BIGINT)`".
    pub hint: String,
}

/// A table format: Delta Lake or Apache Iceberg.
#[async_trait::async_trait]
pub trait TableFormat: Send + Sync + std::fmt::Debug {
    /// Format name, e.g. `delta`.
    fn name(&self) -> &'static str;

    /// The format of the table at `url` itself: this one, or, for the formats of a plan whose
    /// models override the pipeline's format ([`per_table::PerTable`]), the table's own.
    fn for_table(&self, url: &Url) -> &dyn TableFormat;

    /// A provider for the table at `url`, or `None` if no table exists there yet.
    async fn provider(
        &self,
        ctx: &SessionContext,
        url: &Url,
    ) -> Result<Option<Arc<dyn TableProvider>>>;

    /// Like [`TableFormat::provider`], with the table version the provider reads (for
    /// [`WriteRequest::read_version`]). The default takes the version first, so the provider
    /// reads it or a later one: a write pinned at it conflicts with whatever the read saw.
    async fn provider_with_version(
        &self,
        ctx: &SessionContext,
        url: &Url,
    ) -> Result<Option<(Arc<dyn TableProvider>, i64)>> {
        let version = self.stats(url).await?.map_or(-1, |s| s.version);
        Ok(self.provider(ctx, url).await?.map(|p| (p, version)))
    }

    /// Checks the format's own settings before anything runs (an Iceberg catalog that cannot
    /// be reached from this configuration), so a run fails with exit 2 before extracting.
    fn check(&self) -> Result<()> {
        Ok(())
    }

    /// The Parquet data files of the current version of the table at `url`, with the columns
    /// its provider reads, for a plain Parquet scan that needs no table-format code (a query
    /// executed on a Ballista cluster, whose executors cannot run the formats' own scans).
    /// `None` if no table exists there.
    ///
    /// Errors: a table that uses a feature a plain scan of its files would get wrong (Delta
    /// partition columns, which are not stored in the files; deletion vectors; column mapping;
    /// Iceberg delete files) is a usage error naming the table and the feature. Smelter writes
    /// none of these features except Delta partitioning (`-- partition_by:`).
    async fn snapshot_files(
        &self,
        ctx: &SessionContext,
        url: &Url,
    ) -> Result<Option<SnapshotFiles>>;

    /// Writes `req.input` with `req.mode`.
    async fn write(&self, req: WriteRequest<'_>) -> Result<WriteMetrics>;

    /// Version, file count, size and (when known) rows of the table at `url`, from its metadata;
    /// `None` if no table exists there.
    async fn stats(&self, url: &Url) -> Result<Option<TableStats>>;

    /// Whether a write with this idempotency id has been committed to the table.
    async fn committed(&self, url: &Url, txn_id: &str) -> Result<bool>;

    /// Changes the type and/or nullability of existing columns (the schema evolution that
    /// `on_schema_change = "sync_all_columns"` allows: lossless widenings, and NOT NULL columns
    /// that a source stopped sending becoming nullable). Rewrites the data copy-on-write in one
    /// commit, keeping partitioning and committed transaction ids; values are unchanged because
    /// callers only pass lossless changes ([`crate::schema::is_widening`]).
    async fn alter_columns(
        &self,
        ctx: &SessionContext,
        url: &Url,
        columns: &[ColumnAlter],
    ) -> Result<()>;

    /// A provider for the version of the table at `url` named by `as_of` (for debugging reads:
    /// `smelter show --as-of`); `None` if no table exists there. A version or time before the
    /// table's history, or one whose files were removed by maintenance, is a usage error
    /// naming the versions that can be read.
    async fn provider_as_of(
        &self,
        ctx: &SessionContext,
        url: &Url,
        as_of: &AsOf,
    ) -> Result<Option<Arc<dyn TableProvider>>>;

    /// Compacts small data files, expires old versions and removes the files no retained
    /// version references (Delta: OPTIMIZE + VACUUM; Iceberg: rewrite + expire snapshots +
    /// orphan-file removal). Rows are unchanged. `None` if no table exists at `url`.
    async fn maintain(
        &self,
        ctx: &SessionContext,
        url: &Url,
        options: &MaintainOptions,
    ) -> Result<Option<MaintainReport>>;

    /// Every column of `schema` this format cannot store (one entry per column, naming the
    /// innermost culprit), empty when it can store them all. Checked at plan time and before a
    /// write, so a bad output type is a model error (exit 2) rather than a writer failure.
    fn unstorable_columns(&self, schema: &Schema) -> Vec<UnstorableColumn>;

    /// What is wrong with partitioning an output of `schema` by `partition_by` in this format
    /// (a transform Delta Lake cannot store, a transform the column's type does not take), one
    /// message per field, empty when nothing is. Columns missing from `schema` are the caller's
    /// to report. Checked at plan time, so it is a model error (exit 2) before anything runs.
    fn partition_problems(&self, partition_by: &[PartitionField], schema: &Schema) -> Vec<String>;
}

/// Which version of a table to read ([`TableFormat::provider_as_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsOf {
    /// A table version: the Delta version, or the Iceberg sequence number (both as
    /// [`TableStats::version`] reports them).
    Version(i64),
    /// The version current at this instant.
    Timestamp(chrono::DateTime<chrono::Utc>),
}

impl std::fmt::Display for AsOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AsOf::Version(v) => write!(f, "version {v}"),
            AsOf::Timestamp(t) => write!(f, "time {}", t.to_rfc3339()),
        }
    }
}

impl std::str::FromStr for AsOf {
    type Err = String;

    /// An integer is a version; anything else must be an RFC 3339 timestamp
    /// (`2026-11-30T12:00:00Z`) or a date (`2026-11-30`, midnight UTC).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if let Ok(v) = s.parse::<i64>() {
            return Ok(AsOf::Version(v));
        }
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            return Ok(AsOf::Timestamp(t.with_timezone(&chrono::Utc)));
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            return Ok(AsOf::Timestamp(
                d.and_time(chrono::NaiveTime::MIN).and_utc(),
            ));
        }
        Err(format!(
            "`{s}` is neither a version (an integer) nor a time (RFC 3339, e.g. 2026-11-30T12:00:00Z, or a date)"
        ))
    }
}

/// Settings of [`TableFormat::maintain`].
#[derive(Debug, Clone)]
pub struct MaintainOptions {
    /// Versions (snapshots) older than this are expired and the files only they reference are
    /// removed; files younger than it are never removed (a writer may be about to commit them).
    pub retention: std::time::Duration,
    /// Compaction target file size in bytes.
    pub target_file_size: u64,
}

/// What [`TableFormat::maintain`] did to one table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MaintainReport {
    /// Live data files before.
    pub files_before: u64,
    /// Live data files after compaction.
    pub files_after: u64,
    /// Versions (snapshots) expired; for Delta, 0 (VACUUM keeps the log).
    pub versions_expired: u64,
    /// Files deleted from storage (data files, and Iceberg manifests) no retained version
    /// references.
    pub files_deleted: u64,
    /// Table version after maintenance.
    pub version: i64,
}

/// One column change for [`TableFormat::alter_columns`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnAlter {
    /// Column name.
    pub name: String,
    /// New type (a lossless widening of the old one, or the same type).
    pub data_type: arrow::datatypes::DataType,
    /// Make the column nullable.
    pub nullable: bool,
}

/// One problem per column of a model's output that `format` cannot store, each naming the model
/// file (`shown`), the column, its type, why and how to fix it.
pub fn unstorable_problems(format: &dyn TableFormat, shown: &str, schema: &Schema) -> Vec<String> {
    format
        .unstorable_columns(schema)
        .into_iter()
        .map(|c| {
            format!(
                "{shown}: column `{}` has type {}, which the {} table format cannot store: {}; {}",
                c.column,
                c.data_type,
                format.name(),
                c.reason,
                c.hint
            )
        })
        .collect()
}

/// The fix for a decimal a table format cannot store (both store p <= 38, 0 <= s <= p): the
/// nearest storable `CAST`.
pub(crate) fn decimal_hint(p: u8, s: i8) -> String {
    format!(
        "store `CAST(<expr> AS DECIMAL({}, {}))`",
        p.min(38),
        s.clamp(0, p.min(38) as i8)
    )
}

/// The table format configured for a pipeline (`[format] table`), for bronze and run state.
pub fn for_pipeline(pipeline: &Pipeline, lake: &crate::storage::Lake) -> Arc<dyn TableFormat> {
    open(pipeline, lake, pipeline.format.table)
}

fn open(
    pipeline: &Pipeline,
    lake: &crate::storage::Lake,
    kind: crate::config::TableKind,
) -> Arc<dyn TableFormat> {
    match kind {
        crate::config::TableKind::Delta => Arc::new(delta::Delta::new(pipeline, lake)),
        crate::config::TableKind::Iceberg => Arc::new(iceberg::Iceberg::new(pipeline, lake)),
    }
}

/// The table formats of a plan: the pipeline's, and each model's own where its header sets
/// `table_format` (its quarantine table follows it). One [`TableFormat`] that hands each call
/// to the format of the table its URL names ([`per_table::PerTable`]).
pub fn for_plan(plan: &crate::plan::Plan, lake: &crate::storage::Lake) -> Arc<dyn TableFormat> {
    let tables = plan.models.iter().flat_map(|m| {
        let kind = m.header.table_format.unwrap_or(plan.pipeline.format.table);
        [
            (lake.table_url(&m.id), kind),
            (
                lake.table_url(&crate::plan::TableId {
                    layer: m.id.layer,
                    name: crate::quarantine::table_name(&m.id.name),
                }),
                kind,
            ),
        ]
    });
    Arc::new(per_table::PerTable::new(
        lake,
        plan.pipeline.format.table,
        tables,
        |kind| open(&plan.pipeline, lake, kind),
    ))
}

/// The rows of `input` a write in `mode` puts into a table that has no version yet: for a merge
/// with a delete flag column, the rows not flagged, without that column (there is nothing to
/// delete); otherwise `input` as is.
///
/// Errors: planning the filter (the flag column is missing or not boolean).
pub(crate) fn upserts_only(
    input: datafusion::prelude::DataFrame,
    mode: &WriteMode,
) -> Result<datafusion::prelude::DataFrame> {
    let WriteMode::Merge {
        delete: Some(flag), ..
    } = mode
    else {
        return Ok(input);
    };
    let marked =
        datafusion::logical_expr::Expr::Column(datafusion::common::Column::new_unqualified(flag));
    Ok(input
        .filter(marked.is_not_true())?
        .drop_columns(&[flag.as_str()])?)
}

#[cfg(test)]
mod as_of_tests {
    use super::AsOf;

    #[test]
    fn as_of_reads_versions_times_and_dates() {
        assert_eq!("3".parse::<AsOf>(), Ok(AsOf::Version(3)));
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-30T12:00:00+01:00").unwrap();
        assert_eq!(
            "2026-11-30T12:00:00+01:00".parse::<AsOf>(),
            Ok(AsOf::Timestamp(t.with_timezone(&chrono::Utc)))
        );
        assert_eq!(
            "2026-11-30".parse::<AsOf>().unwrap().to_string(),
            "time 2026-11-30T00:00:00+00:00"
        );
        assert!("yesterday"
            .parse::<AsOf>()
            .unwrap_err()
            .contains("RFC 3339"));
    }
}
