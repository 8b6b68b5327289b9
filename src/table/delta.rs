//! Delta Lake through delta-rs: streaming writes from DataFusion plans, MERGE for upserts, and
//! application transactions (`txn` actions) so a retried run never appends twice.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU64;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::common::Column;
use datafusion::functions::datetime::expr_fn::date_trunc;
use datafusion::logical_expr::{cast, lit, when, Expr};
use datafusion::prelude::{DataFrame, SessionContext};
use deltalake::delta_datafusion::{DeltaScanConfig, DeltaScanNext};
use deltalake::kernel::engine::arrow_conversion::TryFromArrow;
use deltalake::kernel::schema::cast::normalize_for_delta;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::Transaction;
use deltalake::kernel::{Action, MetadataExt as _, StructType};
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::DeltaTable;
use object_store::ObjectStore;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use url::Url;

use super::partition_values::Format;
use super::{EarlierCommit, TableFormat, UnstorableColumn, WriteMetrics, WriteMode, WriteRequest};
use crate::config::{Compression, Pipeline};
use crate::error::{Error, Result};
use crate::storage::Lake;

/// Delta Lake table format.
#[derive(Debug)]
pub struct Delta {
    store: Arc<dyn ObjectStore>,
    options: HashMap<String, String>,
    compression: Compression,
    target_file_size: u64,
}

impl Delta {
    /// Delta format for a pipeline's lake.
    pub fn new(pipeline: &Pipeline, lake: &Lake) -> Self {
        Delta {
            store: lake.store(),
            options: lake.options().clone(),
            compression: pipeline.format.compression,
            target_file_size: pipeline.format.target_file_size,
        }
    }

    /// Opens the table at `url` for writing (no version loaded if none exists yet); a local
    /// directory is created first.
    async fn open_with(&self, url: &Url, create: bool) -> Result<DeltaTable> {
        if url.scheme() == "file" && create {
            if let Ok(path) = url.to_file_path() {
                std::fs::create_dir_all(&path)?;
            }
        }
        let mut table = deltalake::DeltaTableBuilder::from_url(url.clone())
            .map_err(|e| storage_error(url, e))?
            .with_storage_backend(self.store.clone(), url.clone())
            .with_storage_options(self.options.clone())
            .build()
            .map_err(|e| storage_error(url, e))?;
        // Probe first: loading a location without a log makes delta-rs log an error.
        if table
            .log_store()
            .is_delta_table_location()
            .await
            .map_err(|e| storage_error(url, e))?
        {
            table.load().await.map_err(|e| storage_error(url, e))?;
        }
        Ok(table)
    }

    /// Opens the table at `url` for reading; `None` when a local table directory does not exist
    /// (so reading or planning leaves no empty folders behind).
    async fn open(&self, url: &Url) -> Result<Option<DeltaTable>> {
        if url.scheme() == "file" && url.to_file_path().is_ok_and(|p| !p.exists()) {
            return Ok(None);
        }
        self.open_with(url, false).await.map(Some)
    }

    fn writer_properties(&self) -> WriterProperties {
        writer_properties(self.compression)
    }

    /// The commit properties of `req`; `creates`: the table has no version yet.
    fn commit_properties(req: &WriteRequest<'_>, creates: bool) -> CommitProperties {
        Self::commit_properties_with(req, creates, None)
    }

    /// [`Self::commit_properties`], recording `metrics` as the commit's `operationMetrics` (a
    /// commit Smelter builds itself; delta-rs's operations record their own).
    fn commit_properties_with(
        req: &WriteRequest<'_>,
        creates: bool,
        metrics: Option<serde_json::Value>,
    ) -> CommitProperties {
        // One `with_metadata` call: each call replaces the metadata set before.
        let metadata = req
            .metadata
            .iter()
            .map(|(k, v)| (format!("smelter.{k}"), v.clone()))
            .chain(
                req.txn_id
                    .iter()
                    .map(|id| (TXN_KEY.to_string(), id.clone())),
            )
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .chain(metrics.map(|m| ("operationMetrics".to_string(), m)));
        let mut props = CommitProperties::default().with_metadata(metadata);
        if let Some(id) = &req.txn_id {
            props = props.with_application_transaction(Transaction::new(id, 1));
        }
        // Writes computed from the table's rows all carry one application transaction id, and
        // delta-rs fails a commit when one committed since its read snapshot carries an id the
        // commit carries too: of two such writes from the same snapshot, the second conflicts.
        if let Some(read) = req.read_version {
            props = props.with_application_transaction(Transaction::new(READ_FENCE, read + 1));
        }
        // When a first commit (version 0) loses its race, delta-rs retries it as the next
        // version on top of the winner's, without checking for conflicts: a blind append of a
        // merge's or an overwrite's rows. Only an append that read nothing from the table may
        // be retried like that: a windowed append fenced at its read (no table yet) appended
        // the same catch-up window as the winner.
        if creates && (req.mode != WriteMode::Append || req.read_version.is_some()) {
            props = props.with_max_retries(0);
        }
        props
    }
}

/// The Parquet writer settings of Delta data files compressed with `compression` (zstd at
/// level 3).
pub(crate) fn writer_properties(compression: Compression) -> WriterProperties {
    let codec = match compression {
        Compression::Zstd => PqCompression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()),
        Compression::Snappy => PqCompression::SNAPPY,
        Compression::Lz4 => PqCompression::LZ4_RAW,
        Compression::Uncompressed => PqCompression::UNCOMPRESSED,
    };
    WriterProperties::builder().set_compression(codec).build()
}

/// The scan of `table`'s loaded version in `ctx`'s session.
///
/// Strings are read as the session says (`schema_force_view_types`, off in Smelter's sessions, see
/// `engine::session`); delta-rs' own default reads them as `Utf8View` whatever the session says.
/// Partition columns keep their own type instead of delta-rs' default dictionary encoding:
/// DataFusion 53 compares a dictionary column with a `Utf8View` one without a cast in some plans
/// (a correlated `NOT EXISTS` whose filter has `IS NOT DISTINCT FROM`, as the scd2 recomputation
/// runs), which fails at run time with "Invalid comparison operation: Utf8 IS NOT DISTINCT FROM
/// Utf8View".
fn scan(table: &DeltaTable, ctx: &SessionContext) -> Result<Arc<dyn TableProvider>> {
    let snapshot = table.snapshot()?.snapshot().clone();
    let views = ctx
        .state()
        .config()
        .options()
        .execution
        .parquet
        .schema_force_view_types;
    let config = DeltaScanConfig {
        wrap_partition_values: false,
        schema_force_view_types: views,
        ..DeltaScanConfig::new()
    };
    Ok(Arc::new(DeltaScanNext::new(snapshot, config)?))
}

fn storage_error(url: &Url, e: deltalake::DeltaTableError) -> Error {
    match e {
        deltalake::DeltaTableError::ObjectStore { source } => {
            crate::storage::store_error(url, source)
        }
        other => Error::Delta(other),
    }
}

#[async_trait::async_trait]
impl TableFormat for Delta {
    fn for_table(&self, _url: &Url) -> &dyn TableFormat {
        self
    }

    fn name(&self) -> &'static str {
        "delta"
    }

    async fn provider(
        &self,
        ctx: &SessionContext,
        url: &Url,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(table) = self.open(url).await? else {
            return Ok(None);
        };
        if table.version().is_none() {
            return Ok(None);
        }
        table.update_datafusion_session(&ctx.state())?;
        Ok(Some(scan(&table, ctx)?))
    }

    async fn snapshot_files(
        &self,
        ctx: &SessionContext,
        url: &Url,
    ) -> Result<Option<super::SnapshotFiles>> {
        let Some(table) = self.open(url).await? else {
            return Ok(None);
        };
        let Some(version) = table.version() else {
            return Ok(None);
        };
        let shown = crate::storage::redact(url);
        let refuse = |feature: &str| {
            Err(Error::Usage(format!(
                "{shown}: the Delta table uses {feature}, which a plain Parquet scan on the cluster would read wrongly; run this model with `[engine] mode = \"local\"`"
            )))
        };
        let snapshot = table.snapshot()?;
        let partitions = snapshot.metadata().partition_columns();
        if !partitions.is_empty() {
            return refuse(&format!(
                "partition columns ({}, whose values are kept in the log, not in the files)",
                partitions.join(", ")
            ));
        }
        if snapshot
            .metadata()
            .configuration()
            .get("delta.columnMapping.mode")
            .is_some_and(|m| m != "none")
        {
            return refuse("column mapping");
        }
        if snapshot
            .log_data()
            .iter()
            .any(|f| f.deletion_vector_descriptor().is_some())
        {
            return refuse("deletion vectors");
        }
        table.update_datafusion_session(&ctx.state())?;
        let schema = scan(&table, ctx)?.schema();
        let files = table
            .get_file_uris()?
            .map(|uri| super::file_url(&uri))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(super::SnapshotFiles {
            schema,
            files,
            version: version as i64,
        }))
    }

    async fn stats(&self, url: &Url) -> Result<Option<super::TableStats>> {
        match self.open(url).await? {
            Some(table) => table_stats(&table),
            None => Ok(None),
        }
    }

    async fn committed(&self, url: &Url, txn_id: &str) -> Result<bool> {
        let Some(table) = self.open(url).await? else {
            return Ok(false);
        };
        if table.version().is_none() {
            return Ok(false);
        }
        let version = table
            .snapshot()?
            .transaction_version(table.log_store().as_ref(), txn_id)
            .await?;
        Ok(version.is_some())
    }

    async fn alter_columns(
        &self,
        ctx: &SessionContext,
        url: &Url,
        columns: &[super::ColumnAlter],
    ) -> Result<()> {
        let Some(table) = self.open(url).await? else {
            return Ok(());
        };
        if table.version().is_none() || columns.is_empty() {
            return Ok(());
        }
        table.update_datafusion_session(&ctx.state())?;
        let partition_columns: Vec<String> =
            table.snapshot()?.metadata().partition_columns().to_vec();
        let df = ctx.read_table(scan(&table, ctx)?)?;
        let mut exprs: Vec<Expr> = Vec::new();
        for f in df.schema().fields() {
            let c = Expr::Column(Column::new_unqualified(f.name()));
            let Some(a) = columns.iter().find(|a| &a.name == f.name()) else {
                exprs.push(c);
                continue;
            };
            let mut e = if &a.data_type == f.data_type() {
                c
            } else {
                cast(c, a.data_type.clone())
            };
            if a.nullable && !f.is_nullable() {
                // A CASE without ELSE is nullable: the planner then declares the column
                // nullable in the rewritten table's schema.
                e = when(lit(true), e).end()?;
            }
            exprs.push(e.alias(f.name()));
        }
        let input = df.select(exprs)?;
        let mut builder = table
            .write(Vec::new())
            .with_input_plan(input.logical_plan().clone())
            .with_session_state(Arc::new(ctx.state()))
            .with_save_mode(SaveMode::Overwrite)
            .with_schema_mode(SchemaMode::Overwrite)
            .with_writer_properties(self.writer_properties())
            .with_target_file_size(NonZeroU64::new(self.target_file_size))
            .with_commit_properties(CommitProperties::default().with_metadata([(
                "smelter.operation".to_string(),
                serde_json::Value::String("alter_columns".into()),
            )]));
        if !partition_columns.is_empty() {
            builder = builder.with_partition_columns(partition_columns);
        }
        builder.await?;
        Ok(())
    }

    async fn provider_as_of(
        &self,
        ctx: &SessionContext,
        url: &Url,
        as_of: &super::AsOf,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(current) = self.open(url).await? else {
            return Ok(None);
        };
        let Some(latest) = current.version() else {
            return Ok(None);
        };
        let builder = deltalake::DeltaTableBuilder::from_url(url.clone())
            .map_err(|e| storage_error(url, e))?
            .with_storage_backend(self.store.clone(), url.clone())
            .with_storage_options(self.options.clone());
        let builder = match as_of {
            super::AsOf::Version(v) => builder.with_version(u64::try_from(*v).map_err(|_| {
                Error::Usage(format!(
                    "version {v} does not exist: Delta versions start at 0"
                ))
            })?),
            super::AsOf::Timestamp(t) => builder.with_timestamp(*t),
        };
        let table = builder.load().await.map_err(|e| {
            Error::Usage(format!(
                "{}: cannot read {as_of} of the Delta table (versions 0 to {latest} exist, unless VACUUM or log cleanup removed older ones): {e}",
                crate::storage::redact(url)
            ))
        })?;
        // delta-rs loads the first version for a time before it: refuse that, as Iceberg does.
        if let super::AsOf::Timestamp(t) = as_of {
            let first = table
                .history(None)
                .await
                .ok()
                .and_then(|h| h.filter_map(|c| c.timestamp).min());
            if first.is_some_and(|first| t.timestamp_millis() < first) {
                return Err(Error::Usage(format!(
                    "{}: the Delta table has no version at {as_of}: its first retained version was committed at {}",
                    crate::storage::redact(url),
                    first
                        .and_then(chrono::DateTime::from_timestamp_millis)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default()
                )));
            }
        }
        table.update_datafusion_session(&ctx.state())?;
        Ok(Some(scan(&table, ctx)?))
    }

    async fn maintain(
        &self,
        _ctx: &SessionContext,
        url: &Url,
        options: &super::MaintainOptions,
    ) -> Result<Option<super::MaintainReport>> {
        let Some(table) = self.open(url).await? else {
            return Ok(None);
        };
        if table.version().is_none() {
            return Ok(None);
        }
        let files_before = table_stats(&table)?.map_or(0, |s| s.files);
        let (table, _) = table
            .optimize()
            .with_target_size(
                NonZeroU64::new(self.target_file_size.max(1)).unwrap_or(NonZeroU64::MIN),
            )
            .with_writer_properties(self.writer_properties())
            .with_commit_properties(CommitProperties::default().with_metadata([(
                "smelter.operation".to_string(),
                serde_json::Value::String("maintain".into()),
            )]))
            .await?;
        let files_after = table_stats(&table)?.map_or(0, |s| s.files);
        let retention =
            chrono::Duration::from_std(options.retention).unwrap_or(chrono::Duration::MAX);
        // Full: also the data files no version ever added (a write killed before its commit,
        // staged files of a cluster job whose clean-up never ran), as Spark's VACUUM does.
        let (table, vacuum) = table
            .vacuum()
            .with_mode(deltalake::operations::vacuum::VacuumMode::Full)
            .with_retention_period(retention)
            .with_enforce_retention_duration(false)
            .await?;
        Ok(Some(super::MaintainReport {
            files_before,
            files_after,
            versions_expired: 0,
            files_deleted: vacuum.files_deleted.len() as u64,
            version: table.version().map_or(-1, |v| v as i64),
        }))
    }

    fn partition_problems(
        &self,
        partition_by: &[super::PartitionField],
        _schema: &Schema,
    ) -> Vec<String> {
        match super::PartitionField::plain_columns(partition_by) {
            Ok(_) => Vec::new(),
            Err(f) => vec![delta_transform_refusal(f)],
        }
    }

    fn unstorable_columns(&self, schema: &Schema) -> Vec<UnstorableColumn> {
        schema
            .fields()
            .iter()
            .filter_map(|f| unstorable(f.name().clone(), f.data_type()))
            .collect()
    }

    async fn provider_with_version(
        &self,
        ctx: &SessionContext,
        url: &Url,
    ) -> Result<Option<(Arc<dyn TableProvider>, i64)>> {
        let Some(table) = self.open(url).await? else {
            return Ok(None);
        };
        let Some(version) = table.version() else {
            return Ok(None);
        };
        table.update_datafusion_session(&ctx.state())?;
        Ok(Some((scan(&table, ctx)?, version as i64)))
    }

    async fn write(&self, req: WriteRequest<'_>) -> Result<WriteMetrics> {
        // A local table directory this write creates is removed again when the write fails
        // and left it empty, so a model failing before its first commit leaves no folder.
        let created = (req.url.scheme() == "file")
            .then(|| req.url.to_file_path().ok())
            .flatten()
            .filter(|dir| !dir.exists());
        let result = self.write_version(req).await;
        if let (Err(_), Some(dir)) = (&result, created) {
            // Not recursive: files in it may be a concurrent creator's, not yet committed.
            let _ = std::fs::remove_dir(dir);
        }
        result
    }
}

/// Why Delta Lake cannot take the partition field `f` (a transform: Delta partitions by column
/// values only), with the fix.
pub(crate) fn delta_transform_refusal(f: &super::PartitionField) -> String {
    format!(
        "`partition_by` {f} is an Iceberg partition transform, and Delta Lake partitions by column values only: add the value as a column (e.g. `date_trunc('month', ship_date) AS ship_month`) and partition by it, or store the model as Iceberg (`-- table_format: iceberg`)"
    )
}

impl Delta {
    /// [`TableFormat::write`] once the table directory exists: commits `req` as the table's next
    /// version (see there for shapes and errors).
    async fn write_version(&self, mut req: WriteRequest<'_>) -> Result<WriteMetrics> {
        // Files staged with exactly the rows to write (no check removed one, no cast since).
        let staged = req.staged.filter(|s| {
            s.df.logical_plan() == req.input.logical_plan()
                && matches!(req.mode, WriteMode::Append | WriteMode::Overwrite)
                && req.partition_by.is_empty()
        });
        req.input = super::partition_values::without_field_metadata(req.input)?;
        req.input = floor_to_micros(req.input)?;
        let partition_by = super::PartitionField::plain_columns(&req.partition_by)
            .map_err(|f| Error::Usage(delta_transform_refusal(f)))?;
        req.input = super::partition_values::refuse(req.input, &req.partition_by, Format::Delta)?;
        let mut table = self.open_with(req.url, true).await?;
        // A write computed from an earlier read of the table commits as of that read, so that
        // the commits made since are checked for conflicts.
        if let Some(read) = req.read_version {
            match (u64::try_from(read).ok(), table.version()) {
                (None, None) => {}
                (Some(read), Some(now)) if read <= now => {
                    if read < now {
                        table
                            .load_version(read)
                            .await
                            .map_err(|e| storage_error(req.url, e))?;
                    }
                }
                // Created, or replaced by a table with fewer versions, since the read.
                _ => return Err(lost_race()),
            }
        }
        // A merge into a table without a version is a plain write of its upserts (below): its
        // rows are then the table's, and the observer sees them as it does an overwrite's.
        if table.version().is_none() {
            req.input = super::upserts_only(req.input, &req.mode)?;
        }
        let observed = match req.observer.take() {
            Some(observer)
                if !matches!(req.mode, WriteMode::Merge { .. }) || table.version().is_none() =>
            {
                req.input = crate::engine::observe::observe(req.input, observer);
                true
            }
            _ => false,
        };
        // Only an overwrite changes a table's partitioning: a merge or append into the table as
        // laid out, with another `partition_by`, would be refused by delta-rs (an append) or
        // ignored (a merge).
        if req.mode != WriteMode::Overwrite && table.version().is_some() {
            let current = table.snapshot()?.metadata().partition_columns().to_vec();
            if current != partition_by {
                let shown = |c: &[String]| match c {
                    [] => "no columns".to_string(),
                    c => c.join(", "),
                };
                return Err(Error::Usage(format!(
                    "the table at {} is partitioned by {}, but the model says `partition_by` {}: \
                     a merge, append or scd2 model keeps its table's partitioning; run it once \
                     with --full-refresh to rebuild the table with the new one, or restore the \
                     header",
                    req.url,
                    shown(&current),
                    shown(&partition_by)
                )));
            }
        }
        // An overwrite always runs (a full refresh rebuilds the table), but still records its
        // transaction id, so a retry of the same run id that appends is recognised as done.
        let skippable = req.mode != WriteMode::Overwrite;
        if let (Some(id), true) = (&req.txn_id, skippable) {
            if table.version().is_some()
                && table
                    .snapshot()?
                    .transaction_version(table.log_store().as_ref(), id)
                    .await?
                    .is_some()
            {
                return Ok(earlier_commit(&table, id).await);
            }
        }
        let session = Arc::new(req.ctx.state());
        let commit = Self::commit_properties(&req, table.version().is_none());
        match (&req.mode, table.version()) {
            (
                WriteMode::Merge {
                    keys,
                    sequence_by,
                    delete,
                },
                Some(_),
            ) => {
                let predicate = keys
                    .iter()
                    .map(|k| format!("target.{q} = source.{q}", q = quote(k)))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                let columns: Vec<String> = req
                    .input
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .filter(|c| Some(c) != delete.as_ref())
                    .collect();
                let update_cols = columns.clone();
                let insert_cols = columns;
                // Deletes first: a marked row whose version is at least the target's removes
                // it; the other clauses only see unmarked rows.
                let marked = delete.as_ref().map(|f| format!("source.{}", quote(f)));
                let unmarked = marked.as_ref().map(|m| format!("NOT {m}"));
                let both = |a: Option<String>, b: Option<String>| match (a, b) {
                    (Some(a), Some(b)) => Some(format!("{a} AND {b}")),
                    (a, b) => a.or(b),
                };
                let newer = crate::table::newer_version(sequence_by, "source", "target");
                let deletes = marked.clone().map(|m| {
                    both(
                        Some(m),
                        crate::table::newer_version(sequence_by, "target", "source")
                            .map(|older| format!("NOT ({older})")),
                    )
                    .unwrap_or_default()
                });
                let mut merge = table
                    .merge(req.input, predicate)
                    .with_source_alias("source")
                    .with_target_alias("target")
                    .with_merge_schema(true)
                    .with_session_state(session)
                    .with_writer_properties(self.writer_properties())
                    .with_commit_properties(commit);
                if let Some(p) = deletes {
                    merge = merge.when_matched_delete(|d| d.predicate(p))?;
                }
                let update_when = both(unmarked.clone(), newer);
                let (table, metrics) = merge
                    .when_matched_update(|u| {
                        let u = match update_when {
                            Some(p) => u.predicate(p),
                            None => u,
                        };
                        update_cols.iter().fold(u, |u, c| {
                            u.update(c.as_str(), format!("source.{}", quote(c)))
                        })
                    })?
                    .when_not_matched_insert(|i| {
                        let i = match unmarked {
                            Some(p) => i.predicate(p),
                            None => i,
                        };
                        insert_cols
                            .iter()
                            .fold(i, |i, c| i.set(c.as_str(), format!("source.{}", quote(c))))
                    })?
                    .await?;
                Ok(WriteMetrics {
                    rows_inserted: metrics.num_target_rows_inserted as u64,
                    rows_updated: metrics.num_target_rows_updated as u64,
                    rows_deleted: metrics.num_target_rows_deleted as u64,
                    files_added: metrics.num_target_files_added as u64,
                    version: table.version().map_or(-1, |v| v as i64),
                    skipped: false,
                    earlier_commit: None,
                    stats: table_stats(&table)?,
                    observed: false,
                })
            }
            (mode, _) => {
                let overwrite = *mode == WriteMode::Overwrite;
                let (save, schema) = match mode {
                    WriteMode::Overwrite => (SaveMode::Overwrite, SchemaMode::Overwrite),
                    _ => (SaveMode::Append, SchemaMode::Merge),
                };
                if let Some(files) = staged {
                    if let Some(metrics) = commit_staged(&table, &req, files).await? {
                        return Ok(metrics);
                    }
                }
                // Rows staged before a schema relaxation, read by the write below.
                let mut staged = None;
                if overwrite && table.version().is_some() {
                    (table, staged) = relax_not_null(table, &mut req).await?;
                }
                let mut builder = table
                    .write(Vec::new())
                    .with_input_plan(req.input.logical_plan().clone())
                    .with_session_state(session)
                    .with_save_mode(save)
                    .with_writer_properties(self.writer_properties())
                    .with_target_file_size(NonZeroU64::new(self.target_file_size))
                    .with_schema_mode(schema)
                    .with_commit_properties(commit);
                // An overwrite replaces the layout too (no partition columns included).
                if overwrite || !partition_by.is_empty() {
                    builder = builder.with_partition_columns(partition_by.clone());
                }
                let table = builder.await?;
                drop(staged);
                let latest = table.history(Some(1)).await.ok().and_then(|mut h| h.next());
                Ok(WriteMetrics {
                    version: table.version().map_or(-1, |v| v as i64),
                    stats: table_stats(&table)?,
                    observed,
                    ..latest.as_ref().map(commit_counts).unwrap_or_default()
                })
            }
        }
    }
}

/// Commits `files` (written by a cluster job with `req.input`'s rows, see
/// [`super::delta_files`]) as `req`'s append or overwrite, by reference: their `add` actions,
/// and for an overwrite a `remove` of every file of the current version, in one commit with
/// `req`'s transaction ids and metadata (its `operationMetrics` counting the files' rows). A
/// table without a version is created with the files' schema and them in its first commit.
///
/// `None`, nothing committed, when the files cannot be taken as they are: the table is
/// partitioned, or its columns differ from theirs in name, order or type, or a NOT NULL
/// column of the table may get NULLs. The caller then writes the rows again.
///
/// Errors: the commit's (a concurrent writer is a conflict, exit 75).
async fn commit_staged(
    table: &DeltaTable,
    req: &WriteRequest<'_>,
    files: &super::StagedFiles,
) -> Result<Option<WriteMetrics>> {
    use deltalake::kernel::DataType as DeltaType;
    let input = normalize_for_delta(&Arc::new(files.df.schema().as_arrow().clone()));
    let Ok(schema) = StructType::try_from_arrow(input.as_ref()) else {
        return Ok(None);
    };
    let rows = files.rows();
    let overwrite = req.mode == WriteMode::Overwrite;
    let mut removed = 0usize;
    let mut actions: Vec<Action> = files.adds.iter().cloned().map(Action::Add).collect();
    let metrics = |removed: usize| {
        serde_json::json!({
            "num_added_rows": rows,
            "num_added_files": files.adds.len(),
            "num_removed_files": removed,
            "execution": "ballista",
        })
    };
    let version = match table.version() {
        None => {
            let props = Delta::commit_properties_with(req, true, Some(metrics(0)));
            let created = deltalake::operations::create::CreateBuilder::new()
                .with_log_store(table.log_store())
                .with_columns(schema.fields().cloned())
                .with_actions(actions)
                .with_save_mode(SaveMode::ErrorIfExists)
                .with_commit_properties(props)
                .await
                .map_err(|e| match e {
                    deltalake::DeltaTableError::Generic(m) if m.contains("already exists") => {
                        lost_race()
                    }
                    e => e.into(),
                })?;
            created.version().map_or(0, |v| v as i64)
        }
        Some(_) => {
            let snapshot = table.snapshot()?;
            if !snapshot.metadata().partition_columns().is_empty() {
                return Ok(None);
            }
            let current = snapshot.schema();
            let same = current.fields().len() == schema.fields().len()
                && current.fields().zip(schema.fields()).all(|(old, new)| {
                    old.name == new.name
                        && old.data_type == new.data_type
                        && (old.nullable || !new.nullable)
                        && !matches!(old.data_type, DeltaType::Struct(_))
                });
            if !same {
                return Ok(None);
            }
            if overwrite {
                for file in snapshot.log_data().iter() {
                    actions.push(Action::Remove(file.remove_action(true)));
                    removed += 1;
                }
            }
            let props = Delta::commit_properties_with(req, false, Some(metrics(removed)));
            let operation = DeltaOperation::Write {
                mode: if overwrite {
                    SaveMode::Overwrite
                } else {
                    SaveMode::Append
                },
                partition_by: None,
                predicate: None,
            };
            let commit = CommitBuilder::from(props)
                .with_actions(actions)
                .build(Some(snapshot), table.log_store(), operation)
                .await?;
            commit.version() as i64
        }
    };
    files.committed();
    tracing::info!(
        table = %crate::storage::redact(req.url),
        files = files.adds.len(),
        removed,
        version,
        "Committed the files the executors wrote, by reference."
    );
    Ok(Some(WriteMetrics {
        rows_inserted: rows.unwrap_or(0),
        files_added: files.adds.len() as u64,
        version,
        ..Default::default()
    }))
}

/// Paths of the NOT NULL fields of `fields`, descending into structs, the way delta-rs' write
/// validation collects them (`collect_non_nullable_fields`).
fn not_null_paths(fields: &StructType, prefix: &[String], out: &mut HashSet<Vec<String>>) {
    for field in fields.fields() {
        let path = [prefix, std::slice::from_ref(&field.name)].concat();
        if let deltalake::kernel::DataType::Struct(inner) = &field.data_type {
            not_null_paths(inner, &path, out);
        }
        if !field.nullable {
            out.insert(path);
        }
    }
}

/// `fields` with every NOT NULL field whose path is not in `keep` made nullable.
fn relaxed(
    fields: &StructType,
    prefix: &[String],
    keep: &HashSet<Vec<String>>,
) -> deltalake::DeltaResult<StructType> {
    Ok(StructType::try_new(
        fields
            .fields()
            .map(|field| {
                let path = [prefix, std::slice::from_ref(&field.name)].concat();
                let mut field = field.clone();
                if let deltalake::kernel::DataType::Struct(inner) = &field.data_type {
                    field.data_type =
                        deltalake::kernel::DataType::Struct(Box::new(relaxed(inner, &path, keep)?));
                }
                field.nullable = field.nullable || !keep.contains(&path);
                Ok(field)
            })
            .collect::<deltalake::DeltaResult<Vec<_>>>()?,
    )?)
}

/// Prepares `table` for the overwrite `req`.
///
/// delta-rs checks an overwrite's rows against the NOT NULL fields of the schema it replaces
/// (`validation_predicates` reads the current snapshot, even with `SchemaMode::Overwrite`), so an
/// overwrite whose SQL dropped or renamed a NOT NULL column fails with "No field named …", and one
/// that made it nullable fails on its first NULL. When the new schema keeps every NOT NULL field,
/// `table` is returned as is. Otherwise the rows are staged first (`engine::stage`: a query that
/// fails on its data fails here, before anything is committed; `req.input` then reads the staged
/// files, which the returned value keeps alive), and one metadata-only commit makes those fields
/// nullable: no row changes and readers of that version see the same data; the overwrite then
/// replaces the schema. The commit carries the write's metadata but not its transaction id.
///
/// Errors: the query's, staging I/O, and the commit's (a concurrent writer is a conflict, as for
/// the write itself).
async fn relax_not_null(
    table: DeltaTable,
    req: &mut WriteRequest<'_>,
) -> Result<(DeltaTable, Option<crate::engine::Staged>)> {
    let input = req.input.schema().as_arrow().clone();
    let current = table.snapshot()?.schema();
    let mut old = HashSet::new();
    not_null_paths(&current, &[], &mut old);
    let normalized = normalize_for_delta(&Arc::new(input));
    let mut new = HashSet::new();
    if let Ok(schema) = StructType::try_from_arrow(normalized.as_ref()) {
        not_null_paths(&schema, &[], &mut new);
    }
    if old.is_subset(&new) {
        return Ok((table, None));
    }
    let staged = crate::engine::stage(req.ctx, req.input.clone()).await?;
    req.input = staged.df.clone();
    let schema = relaxed(&current, &[], &new)?;
    let metadata = table
        .snapshot()?
        .metadata()
        .clone()
        .with_schema(&schema)
        .map_err(deltalake::DeltaTableError::from)?;
    let operation = DeltaOperation::UpdateFieldMetadata {
        fields: schema.fields().cloned().collect(),
    };
    let props = CommitProperties::default().with_metadata(
        req.metadata
            .iter()
            .map(|(k, v)| (format!("smelter.{k}"), serde_json::Value::String(v.clone()))),
    );
    let commit = CommitBuilder::from(props)
        .with_actions(vec![Action::Metadata(metadata)])
        .build(Some(table.snapshot()?), table.log_store(), operation)
        .await?;
    let mut table = table;
    table
        .load_version(commit.version() as u64)
        .await
        .map_err(|e| storage_error(req.url, e))?;
    Ok((table, Some(staged)))
}

/// Version, files, size and rows of a loaded table's snapshot (no I/O); `None` before its first
/// commit.
fn table_stats(table: &DeltaTable) -> Result<Option<super::TableStats>> {
    let Some(version) = table.version() else {
        return Ok(None);
    };
    let mut stats = super::TableStats {
        version: version as i64,
        rows: Some(0),
        ..Default::default()
    };
    // Add actions of the current snapshot: their sizes, and row counts from file statistics.
    for file in table.snapshot()?.log_data().iter() {
        stats.files += 1;
        stats.size_bytes += file.size().max(0) as u64;
        stats.rows = match (stats.rows, file.num_records()) {
            (Some(total), Some(n)) => Some(total + n as u64),
            _ => None,
        };
    }
    Ok(Some(stats))
}

/// Maps an Arrow type to its Delta type the way delta-rs' writer does (`normalize_for_delta`
/// first turns second/milli/nanosecond timestamps into microseconds and Date64 into Date32, then
/// the kernel maps the rest), so a type is refused exactly when the writer would refuse it.
fn delta_type(dt: &DataType) -> std::result::Result<(), String> {
    let schema = Arc::new(Schema::new(vec![Field::new("c", dt.clone(), true)]));
    let normalized = normalize_for_delta(&schema);
    deltalake::kernel::DataType::try_from_arrow(normalized.field(0).data_type())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The innermost part of column `path` (of type `dt`) that Delta cannot store, if any.
fn unstorable(path: String, dt: &DataType) -> Option<UnstorableColumn> {
    let error = delta_type(dt).err()?;
    let children: Vec<(String, &DataType)> = match dt {
        DataType::Struct(fields) => fields
            .iter()
            .map(|f| (format!("{path}.{}", f.name()), f.data_type()))
            .collect(),
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _) => vec![(format!("{path}[]"), f.data_type())],
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => vec![
                (format!("{path}.key"), kv[0].data_type()),
                (format!("{path}.value"), kv[1].data_type()),
            ],
            _ => Vec::new(),
        },
        // A dictionary is stored as its values.
        DataType::Dictionary(_, values) => vec![(path.clone(), values.as_ref())],
        _ => Vec::new(),
    };
    if let Some(inner) = children
        .into_iter()
        .find_map(|(path, dt)| unstorable(path, dt))
    {
        return Some(inner);
    }
    let (reason, hint) = advice(dt, error);
    Some(UnstorableColumn {
        column: path,
        data_type: dt.clone(),
        reason,
        hint,
    })
}

/// Why Delta cannot store `dt` (a type delta-rs refused with `error`) and the SQL that fixes it.
fn advice(dt: &DataType, error: String) -> (String, String) {
    let unit = |u: &TimeUnit| match u {
        TimeUnit::Second => "seconds",
        TimeUnit::Millisecond => "milliseconds",
        TimeUnit::Microsecond => "microseconds",
        TimeUnit::Nanosecond => "nanoseconds",
    };
    let (reason, hint) = match dt {
        DataType::Duration(u) => (
            "Delta Lake has no duration type".to_string(),
            format!(
                "store a number instead, e.g. `EXTRACT(EPOCH FROM <expr>)` (seconds, DOUBLE) or `CAST(<expr> AS BIGINT)` ({})",
                unit(u)
            ),
        ),
        DataType::Interval(_) => (
            "Delta Lake has no interval type".into(),
            "store a number instead, e.g. `EXTRACT(EPOCH FROM <expr>)` (seconds, DOUBLE)".into(),
        ),
        DataType::Time32(_) | DataType::Time64(_) => (
            "Delta Lake has no time-of-day type".into(),
            "store `EXTRACT(EPOCH FROM <expr>)` (seconds since midnight, DOUBLE) or `CAST(<expr> AS VARCHAR)`".into(),
        ),
        DataType::Timestamp(_, Some(_)) => (
            "Delta Lake timestamps are in UTC or without a time zone".into(),
            "convert it with `<expr> AT TIME ZONE 'UTC'`".into(),
        ),
        DataType::Float16 => (
            "Delta Lake has no half-precision float".into(),
            "store `CAST(<expr> AS FLOAT)`".into(),
        ),
        DataType::Null => (
            "an untyped NULL has no Delta type".into(),
            "give it a type, e.g. `CAST(NULL AS VARCHAR)`".into(),
        ),
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => (
            "Delta Lake stores DECIMAL(p, s) as 128-bit decimals with p <= 38 and 0 <= s <= p"
                .into(),
            super::decimal_hint(*p, *s),
        ),
        _ => (
            error,
            "cast it to a type Delta Lake stores (BOOLEAN, integers, FLOAT, DOUBLE, DECIMAL(p,s) with p <= 38, VARCHAR, BYTEA, DATE, TIMESTAMP, or structs, arrays and maps of them)".into(),
        ),
    };
    (reason, hint)
}

/// Delta Lake timestamps are microseconds. delta-rs casts nanosecond columns with a plain cast,
/// which truncates toward zero, so an instant before 1970 would move *up* to the next
/// microsecond (`1677-09-22 00:00:00.0000001` would become `.000001`). Floor them here instead:
/// every instant lands on the microsecond at or before it, whatever its sign.
pub(super) fn floor_to_micros(df: DataFrame) -> Result<DataFrame> {
    super::partition_values::map_columns(df, |field, column| match field.data_type() {
        DataType::Timestamp(TimeUnit::Nanosecond, tz) => Some(cast(
            // date_trunc floors (Euclidean remainder) at sub-second granularity.
            date_trunc(lit("microsecond"), column),
            DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        )),
        _ => None,
    })
}

/// `df` with the types a Delta write stores (delta-rs's `normalize_for_delta`: second, milli-
/// and nanosecond timestamps as microseconds, floored; `Date64` as `Date32`; …) and without
/// field metadata: what a Delta table's data files hold, so files written from it can be
/// committed as they are ([`super::delta_files`]).
///
/// Errors: planning the casts (internal).
pub fn delta_ready(df: DataFrame) -> Result<DataFrame> {
    let df = floor_to_micros(super::partition_values::without_field_metadata(df)?)?;
    let normalized = normalize_for_delta(&Arc::new(df.schema().as_arrow().clone()));
    super::partition_values::map_columns(df, |field, column| {
        let target = normalized.field_with_name(field.name()).ok()?.data_type();
        (target != field.data_type()).then(|| cast(column, target.clone()))
    })
}

/// Commit metadata key holding a write's transaction id (see [`WriteRequest::txn_id`]).
const TXN_KEY: &str = "smelter.txn_id";

/// The application transaction id every write with a [`WriteRequest::read_version`] carries
/// (its version: the read version + 1), so that two of them from one snapshot conflict.
const READ_FENCE: &str = "smelter.read_version";

/// The error of a write that lost a race another writer won since its read: the same error as
/// delta-rs's conflict checks (exit 75; nothing was committed).
fn lost_race() -> Error {
    use deltalake::kernel::transaction::{CommitConflictError, TransactionError};
    Error::Delta(deltalake::DeltaTableError::Transaction {
        source: TransactionError::CommitConflict(CommitConflictError::ConcurrentTransaction),
    })
}

/// How many of the latest commits are searched for the commit that carries a transaction id. A
/// table gets one commit per run (plus rare schema changes), so a retry finds its earlier
/// attempt's commit among the last few.
const HISTORY_SEARCH: usize = 100;

/// The counts a commit records in its `operationMetrics` (delta-rs' names: `num_added_rows` and
/// `num_added_files` for a write, `num_target_rows_inserted`, `num_target_rows_updated` and
/// `num_target_files_added` for a merge); 0 for a count it does not record.
fn commit_counts(info: &deltalake::kernel::CommitInfo) -> WriteMetrics {
    let metrics = info.info.get("operationMetrics");
    let get = |k: &str| {
        metrics
            .and_then(|m| m.get(k))
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(0)
    };
    let merge = info.operation.as_deref() == Some("MERGE");
    WriteMetrics {
        rows_inserted: get(if merge {
            "num_target_rows_inserted"
        } else {
            "num_added_rows"
        }),
        rows_updated: if merge {
            get("num_target_rows_updated")
        } else {
            0
        },
        rows_deleted: if merge {
            get("num_target_rows_deleted")
        } else {
            0
        },
        files_added: get(if merge {
            "num_target_files_added"
        } else {
            "num_added_files"
        }),
        ..Default::default()
    }
}

/// The metrics of a write skipped because its transaction id `txn_id` is already committed: the
/// counts and version of the commit that carries it, found in the latest [`HISTORY_SEARCH`]
/// commits by its `smelter.txn_id` metadata. Commits are listed newest first and every commit
/// delta-rs writes has a commitInfo, so the n-th is version `latest - n`.
async fn earlier_commit(table: &DeltaTable, txn_id: &str) -> WriteMetrics {
    let latest = table.version().map_or(-1, |v| v as i64);
    let found = match table.history(Some(HISTORY_SEARCH)).await {
        Ok(history) => history
            .enumerate()
            .find(|(_, info)| info.info.get(TXN_KEY).and_then(|v| v.as_str()) == Some(txn_id)),
        Err(e) => {
            tracing::warn!(error = %e, "Cannot read the table history to report the earlier commit.");
            None
        }
    };
    match found {
        Some((n, info)) => {
            let version = latest - n as i64;
            WriteMetrics {
                version,
                skipped: true,
                earlier_commit: Some(EarlierCommit {
                    version: Some(version),
                    attempt: info
                        .info
                        .get("smelter.attempt")
                        .and_then(|v| v.as_str())
                        .map(str::to_string),
                    timestamp_ms: info.timestamp,
                }),
                ..commit_counts(&info)
            }
        }
        None => WriteMetrics {
            version: latest,
            skipped: true,
            earlier_commit: Some(EarlierCommit::default()),
            ..Default::default()
        },
    }
}

/// Quotes an identifier for a delta-rs SQL expression.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::new_null_array;
    use arrow::datatypes::{DataType, Field, Fields, IntervalUnit, Schema, TimeUnit};
    use arrow::record_batch::RecordBatch;

    use super::*;

    /// Whether delta-rs really writes a new table with one column of type `dt`.
    async fn delta_writes(dt: &DataType) -> bool {
        let dir = tempfile::tempdir().expect("tempdir");
        let schema = Arc::new(Schema::new(vec![Field::new("c", dt.clone(), true)]));
        let batch = RecordBatch::try_new(schema, vec![new_null_array(dt, 2)]).expect("batch");
        let url = Url::from_directory_path(dir.path()).expect("url");
        let table = deltalake::DeltaTableBuilder::from_url(url)
            .expect("builder")
            .build()
            .expect("table");
        table.write(vec![batch]).await.is_ok()
    }

    fn unstorable_in(dt: &DataType) -> Option<UnstorableColumn> {
        unstorable("c".into(), dt)
    }

    #[tokio::test]
    async fn refuses_exactly_what_delta_rs_cannot_write() {
        let field = |name: &str, dt: DataType| Arc::new(Field::new(name, dt, true));
        let map = |k: DataType, v: DataType| {
            let entries = Fields::from(vec![
                Field::new("key", k, false),
                Field::new("value", v, true),
            ]);
            DataType::Map(
                Arc::new(Field::new("entries", DataType::Struct(entries), false)),
                false,
            )
        };
        let dict = |v: DataType| DataType::Dictionary(Box::new(DataType::Int32), Box::new(v));
        let stored = [
            DataType::Boolean,
            DataType::Int8,
            DataType::Int64,
            DataType::UInt8,
            DataType::UInt64,
            DataType::Float32,
            DataType::Float64,
            DataType::Utf8,
            DataType::LargeUtf8,
            DataType::Utf8View,
            DataType::Binary,
            DataType::LargeBinary,
            DataType::FixedSizeBinary(16),
            DataType::Date32,
            DataType::Date64,
            DataType::Timestamp(TimeUnit::Second, None),
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            DataType::Decimal128(38, 4),
            DataType::List(field("item", DataType::Int32)),
            DataType::LargeList(field("item", DataType::Utf8)),
            DataType::Struct(Fields::from(vec![Field::new("a", DataType::Int32, true)])),
            map(DataType::Utf8, DataType::Int64),
            dict(DataType::Utf8),
        ];
        let refused = [
            (DataType::Duration(TimeUnit::Microsecond), "c"),
            (DataType::Interval(IntervalUnit::MonthDayNano), "c"),
            (DataType::Float16, "c"),
            (DataType::Null, "c"),
            (DataType::Time64(TimeUnit::Microsecond), "c"),
            (
                DataType::Timestamp(TimeUnit::Microsecond, Some("+02:00".into())),
                "c",
            ),
            (DataType::Decimal256(50, 2), "c"),
            (
                DataType::List(field("item", DataType::Duration(TimeUnit::Second))),
                "c[]",
            ),
            (
                DataType::Struct(Fields::from(vec![Field::new(
                    "wait",
                    DataType::Interval(IntervalUnit::DayTime),
                    true,
                )])),
                "c.wait",
            ),
            (map(DataType::Utf8, DataType::Float16), "c.value"),
            (dict(DataType::Float16), "c"),
        ];
        for dt in &stored {
            assert!(unstorable_in(dt).is_none(), "{dt} should be storable");
            assert!(delta_writes(dt).await, "delta-rs did not write {dt}");
        }
        for (dt, column) in &refused {
            let found = unstorable_in(dt).unwrap_or_else(|| panic!("{dt} should be refused"));
            assert_eq!(found.column, *column, "{dt}");
            assert!(!found.hint.is_empty(), "{dt}");
            assert!(
                !delta_writes(dt).await,
                "delta-rs wrote {dt}, so it should not be refused"
            );
        }
    }

    #[test]
    fn names_every_bad_column_with_a_cast_hint() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("transit", DataType::Duration(TimeUnit::Microsecond), true),
            Field::new("note", DataType::Null, true),
        ]);
        let found: Vec<UnstorableColumn> = schema
            .fields()
            .iter()
            .filter_map(|f| unstorable(f.name().clone(), f.data_type()))
            .collect();
        assert_eq!(
            found.iter().map(|c| c.column.as_str()).collect::<Vec<_>>(),
            ["transit", "note"]
        );
        assert!(
            found[0].hint.contains("CAST(<expr> AS BIGINT)"),
            "{:?}",
            found[0]
        );
        assert!(found[0].hint.contains("microseconds"), "{:?}", found[0]);
        assert!(
            found[1].hint.contains("CAST(NULL AS VARCHAR)"),
            "{:?}",
            found[1]
        );
    }
}

#[cfg(test)]
mod floor_tests {
    use std::sync::Arc;

    use arrow::array::{AsArray, Int32Array, RecordBatch, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit, TimestampMicrosecondType};
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn nanosecond_timestamps_floor_to_microseconds() {
        // 1677-09-22 00:00:00.0000001, 1969-12-31 23:59:59.9999999, 1970-01-01 00:00:00.0000009.
        let midnight_1677_ns = -9_223_286_400_000_000_000i64;
        let ns = vec![Some(midnight_1677_ns + 100), Some(-100), Some(900), None];
        let tz: Option<Arc<str>> = Some("UTC".into());
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Nanosecond, tz.clone()),
                true,
            ),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![1, 2, 3, 4])),
                Arc::new(TimestampNanosecondArray::from(ns).with_timezone("UTC")),
            ],
        )
        .unwrap();
        let df = SessionContext::new().read_batch(batch).unwrap();
        let out = super::floor_to_micros(df).unwrap();
        let field = out
            .schema()
            .field_with_unqualified_name("at")
            .unwrap()
            .clone();
        assert_eq!(
            field.data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, tz)
        );
        let batches = out.collect().await.unwrap();
        let got: Vec<Option<i64>> = batches[0]
            .column(1)
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .collect();
        assert_eq!(
            got,
            vec![Some(midnight_1677_ns / 1000), Some(-1), Some(0), None]
        );
        assert_eq!(batches[0].schema().field(0).name(), "id");
    }
}
