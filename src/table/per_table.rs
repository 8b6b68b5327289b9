//! The table formats of one plan: the pipeline's (`[format] table`), and a model's own where its
//! header overrides it (`-- table_format: iceberg`).
//!
//! [`PerTable`] implements [`TableFormat`] by handing every call to the format of the table its
//! URL names, so the model runner, state, profiles, maintenance and `show` need no change to
//! work on a lake that holds both formats. Run state under `_smelter/` and every table without
//! an override use the pipeline's format.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::Schema;
use datafusion::catalog::TableProvider;
use datafusion::prelude::SessionContext;
use url::Url;

use super::{
    AsOf, ColumnAlter, MaintainOptions, MaintainReport, PartitionField, SnapshotFiles, TableFormat,
    TableStats, UnstorableColumn, WriteMetrics, WriteRequest,
};
use crate::config::TableKind;
use crate::error::{Error, Result};

/// A [`TableFormat`] that dispatches by table URL (see the module doc).
#[derive(Debug)]
pub struct PerTable {
    /// The pipeline's format, for every URL not in `overrides`.
    default: Arc<dyn TableFormat>,
    /// Each format in use, by name (the default's included).
    formats: HashMap<&'static str, Arc<dyn TableFormat>>,
    /// The format of each overridden table, by its URL without a trailing `/`.
    overrides: HashMap<String, Arc<dyn TableFormat>>,
    /// Every model table, by its URL without a trailing `/`: its format and its folder, checked
    /// on write for a table of the other format.
    tables: HashMap<String, (TableKind, object_store::path::Path)>,
    /// The lake's store, for that check.
    store: Arc<dyn object_store::ObjectStore>,
}

fn key(url: &Url) -> &str {
    url.as_str().trim_end_matches('/')
}

impl PerTable {
    /// The formats of `tables` (each model table's URL, and the kind it is written in) over
    /// `default_kind` (the pipeline's), opening each kind in use once with `open`.
    pub fn new(
        lake: &crate::storage::Lake,
        default_kind: TableKind,
        tables: impl IntoIterator<Item = (Url, TableKind)>,
        open: impl Fn(TableKind) -> Arc<dyn TableFormat>,
    ) -> Self {
        let default = open(default_kind);
        let mut by_kind: HashMap<TableKind, Arc<dyn TableFormat>> =
            HashMap::from([(default_kind, default.clone())]);
        let mut overrides = HashMap::new();
        let mut all = HashMap::new();
        for (url, kind) in tables {
            if let Ok(path) = lake.path_of(&url) {
                all.insert(key(&url).to_string(), (kind, path));
            }
            if kind == default_kind {
                continue;
            }
            let format = by_kind.entry(kind).or_insert_with(|| open(kind)).clone();
            overrides.insert(key(&url).to_string(), format);
        }
        Self {
            default,
            formats: by_kind.into_values().map(|f| (f.name(), f)).collect(),
            overrides,
            tables: all,
            store: lake.store(),
        }
    }

    fn of(&self, url: &Url) -> &Arc<dyn TableFormat> {
        self.overrides.get(key(url)).unwrap_or(&self.default)
    }

    /// Refuses a write to a model table whose folder holds a table of the other format (a
    /// model whose `table_format` changed after its table was written): the two would share
    /// one folder, and readers of the old one would see stale rows. Looks for the other
    /// format's log in the folder (Delta: `_delta_log/`; Iceberg: a `metadata/*.metadata.json`),
    /// which needs no catalog.
    async fn check_no_other(&self, url: &Url) -> Result<()> {
        use futures::StreamExt;
        let Some((kind, folder)) = self.tables.get(key(url)) else {
            return Ok(());
        };
        let (other, marker, suffix) = match kind {
            TableKind::Delta => (TableKind::Iceberg, "metadata", ".metadata.json"),
            TableKind::Iceberg => (TableKind::Delta, "_delta_log", ".json"),
        };
        let prefix = folder.clone().join(marker);
        let mut listing = self.store.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| crate::storage::store_error(url, e))?;
            if meta.location.as_ref().ends_with(suffix) {
                return Err(Error::Usage(format!(
                    "the table at {} is stored as {}, and its model now says `table_format: {}`: a table keeps its format; delete the table's folder (and, for Iceberg, its catalog entry) to rebuild it, or restore the header",
                    crate::storage::redact(url),
                    other.name(),
                    kind.name()
                )));
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl TableFormat for PerTable {
    fn name(&self) -> &'static str {
        self.default.name()
    }

    fn for_table(&self, url: &Url) -> &dyn TableFormat {
        self.of(url).as_ref()
    }

    async fn provider(
        &self,
        ctx: &SessionContext,
        url: &Url,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        self.of(url).provider(ctx, url).await
    }

    async fn provider_with_version(
        &self,
        ctx: &SessionContext,
        url: &Url,
    ) -> Result<Option<(Arc<dyn TableProvider>, i64)>> {
        self.of(url).provider_with_version(ctx, url).await
    }

    fn check(&self) -> Result<()> {
        self.formats.values().try_for_each(|f| f.check())
    }

    async fn snapshot_files(
        &self,
        ctx: &SessionContext,
        url: &Url,
    ) -> Result<Option<SnapshotFiles>> {
        self.of(url).snapshot_files(ctx, url).await
    }

    async fn write(&self, req: WriteRequest<'_>) -> Result<WriteMetrics> {
        self.check_no_other(req.url).await?;
        self.of(req.url).write(req).await
    }

    async fn stats(&self, url: &Url) -> Result<Option<TableStats>> {
        self.of(url).stats(url).await
    }

    async fn committed(&self, url: &Url, txn_id: &str) -> Result<bool> {
        self.of(url).committed(url, txn_id).await
    }

    async fn alter_columns(
        &self,
        ctx: &SessionContext,
        url: &Url,
        columns: &[ColumnAlter],
    ) -> Result<()> {
        self.of(url).alter_columns(ctx, url, columns).await
    }

    async fn provider_as_of(
        &self,
        ctx: &SessionContext,
        url: &Url,
        as_of: &AsOf,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        self.of(url).provider_as_of(ctx, url, as_of).await
    }

    async fn maintain(
        &self,
        ctx: &SessionContext,
        url: &Url,
        options: &MaintainOptions,
    ) -> Result<Option<MaintainReport>> {
        self.of(url).maintain(ctx, url, options).await
    }

    fn unstorable_columns(&self, schema: &Schema) -> Vec<UnstorableColumn> {
        self.default.unstorable_columns(schema)
    }

    fn partition_problems(&self, partition_by: &[PartitionField], schema: &Schema) -> Vec<String> {
        self.default.partition_problems(partition_by, schema)
    }
}
