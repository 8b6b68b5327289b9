//! Apache Iceberg tables through the `iceberg-rust` family (`iceberg-rust`, `datafusion_iceberg`,
//! `iceberg-sql-catalog`), with a SQL catalog (embedded SQLite by default).
//!
//! Why this family and not the Apache `iceberg` crate: at the pinned DataFusion 53 the Apache
//! crate can only append (`fast_append`), while this one has public `replace` and `overwrite`
//! (copy-on-write) transactions, and stores through `object_store` like the rest of Smelter (see
//! `docs/iceberg.md`). The choice stays behind [`super::TableFormat`].
//!
//! How each write maps to Iceberg (spec: <https://iceberg.apache.org/spec/>):
//! - overwrite: one `replace` snapshot holding only the new data files;
//! - append: one `append` snapshot;
//! - merge: copy-on-write: the data files holding a matched key are read, merged with the batch
//!   and rewritten, and one `overwrite` snapshot swaps them (files without a match stay);
//! - transaction ids (idempotency, like Delta's `txn` actions): the table property
//!   [`TXNS_PROPERTY`] holds the last [`TXN_HISTORY`] ids with their counts, set in the same
//!   metadata commit as the data.
//!
//! Concurrency: `iceberg-sql-catalog` 0.10 swaps the metadata pointer with
//! `UPDATE … WHERE metadata_location = <previous>` but does not check that a row was updated, so
//! a writer that lost the race would believe it committed. Every commit here is therefore
//! verified against a fresh read of the catalog; a lost append is retried on the new snapshot
//! (its data files are already written), a lost overwrite or merge fails with a retryable error
//! (exit 75) and nothing of it is visible.
//!
//! Run state under `_smelter/` stays in Delta Lake ([`super::delta::Delta`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::Column;
use datafusion::logical_expr::{cast, lit, Expr};
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion_iceberg::table::DataFusionTableConfigBuilder;
use datafusion_iceberg::DataFusionTable;
use futures::StreamExt;
use iceberg_rest_catalog::apis::configuration::Configuration as RestConfiguration;
use iceberg_rest_catalog::catalog::RestCatalog;
use iceberg_rest_catalog::oauth2_client_credentials::OAuth2ClientCredentials;
use iceberg_rust::catalog::commit::{CommitTable, TableRequirement, TableUpdate};
use iceberg_rust::catalog::identifier::Identifier;
use iceberg_rust::catalog::tabular::Tabular;
use iceberg_rust::catalog::Catalog;
use iceberg_rust::object_store::ObjectStoreBuilder;
use iceberg_rust::spec::partition::PartitionSpec;
use iceberg_rust::spec::schema::Schema as IcebergSchema;
use iceberg_rust::spec::types::{ListType, PrimitiveType, StructField, StructType, Type};
use iceberg_rust::table::Table;
use iceberg_sql_catalog::SqlCatalog;
use serde::{Deserialize, Serialize};
use url::Url;

use super::delta::Delta;
use super::{
    AsOf, ColumnAlter, EarlierCommit, MaintainOptions, MaintainReport, TableFormat, TableStats,
    UnstorableColumn, WriteMetrics, WriteMode, WriteRequest,
};
use crate::config::{CatalogKind, Pipeline, RestAuth};
use crate::error::{Error, Result};
use crate::storage::{Backend, Lake};

/// Table property holding the last [`TXN_HISTORY`] transaction ids committed to the table
/// (JSON array of [`TxnEntry`], newest last).
pub const TXNS_PROPERTY: &str = "smelter.txns";

/// Table property naming the pipeline that writes the table: a table of another pipeline that
/// shares the catalog is refused rather than overwritten.
pub const PIPELINE_PROPERTY: &str = "smelter.pipeline";

/// How many transaction ids a table remembers. A table gets one commit per run, so a retry finds
/// its earlier attempt among the last few.
const TXN_HISTORY: usize = 100;

/// How many times a lost append is committed again on the winner's snapshot.
const APPEND_RETRIES: usize = 5;

/// One committed transaction id, with what its commit did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TxnEntry {
    id: String,
    #[serde(default)]
    rows_inserted: u64,
    #[serde(default)]
    rows_updated: u64,
    #[serde(default)]
    rows_deleted: u64,
    #[serde(default)]
    files_added: u64,
    #[serde(default)]
    version: i64,
    #[serde(default)]
    timestamp_ms: i64,
    #[serde(default)]
    attempt: Option<String>,
}

/// Apache Iceberg table format with a SQL or REST catalog.
#[derive(Debug)]
pub struct Iceberg {
    root: Url,
    /// The lake root as Iceberg locations spell it: an absolute path for a local lake,
    /// `s3://bucket/prefix` for S3.
    location_root: std::result::Result<String, String>,
    catalog_name: String,
    /// The pipeline writing through this format ([`PIPELINE_PROPERTY`]).
    pipeline: String,
    /// How to reach the catalog, or why it cannot be reached (a config problem, reported on
    /// first use). Holds secrets; its `Debug` shows none.
    connect: std::result::Result<Connect, String>,
    builder: std::result::Result<ObjectStoreBuilder, String>,
    delta: Delta,
    catalog: tokio::sync::OnceCell<Connected>,
}

/// How to reach the catalog, with the secrets read from the environment.
enum Connect {
    /// A SQL catalog at this database URI (may hold a password).
    Sql(String),
    /// A REST catalog server.
    Rest {
        /// Base URI, without `/v1`.
        uri: String,
        warehouse: Option<String>,
        /// The prefix to use when the server's `/v1/config` gives none.
        prefix: Option<String>,
        /// A bearer token, if any.
        token: Option<String>,
        /// OAuth2 client credentials, if any.
        oauth2: Option<Arc<OAuth2ClientCredentials>>,
    },
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Connect::Sql(_) => f.write_str("Sql"),
            Connect::Rest { .. } => f.write_str("Rest"),
        }
    }
}

/// A connected catalog.
#[derive(Clone)]
enum Connected {
    Sql(Arc<SqlCatalog>),
    Rest(Arc<RestCatalog>),
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Connected::Sql(_) => f.write_str("Sql"),
            Connected::Rest(_) => f.write_str("Rest"),
        }
    }
}

impl Connected {
    fn catalog(&self) -> Arc<dyn Catalog> {
        match self {
            Connected::Sql(c) => c.clone(),
            Connected::Rest(c) => c.clone(),
        }
    }
}

impl Iceberg {
    /// Iceberg format for a pipeline's lake; catalog problems (a missing URI variable, a remote
    /// lake without a catalog path, Azure) are reported by the first table operation (exit 2).
    pub fn new(pipeline: &Pipeline, lake: &Lake) -> Self {
        let root = lake.root().clone();
        let backend = object_store::ObjectStoreScheme::parse(&root)
            .map(|(s, _)| match s {
                object_store::ObjectStoreScheme::AmazonS3 => Backend::S3,
                object_store::ObjectStoreScheme::MicrosoftAzure => Backend::Azure,
                _ => Backend::Local,
            })
            .unwrap_or(Backend::Local);
        let cfg = &pipeline.format.iceberg;
        let file = || format!("{}", pipeline.file.display());
        let (location_root, builder) = match backend {
            Backend::Local => match root.to_file_path() {
                Ok(p) => (
                    Ok(p.to_string_lossy().trim_end_matches('/').to_string()),
                    Ok(ObjectStoreBuilder::Filesystem(Arc::new(
                        object_store::local::LocalFileSystem::new(),
                    ))),
                ),
                Err(()) => (
                    Err("the lake root is not a local path".to_string()),
                    Err(String::new()),
                ),
            },
            Backend::S3 => (
                Ok(root.as_str().trim_end_matches('/').to_string()),
                Ok(ObjectStoreBuilder::S3(Box::new(
                    crate::storage::s3_builder(&root, lake.options()),
                ))),
            ),
            Backend::Azure => {
                let why = "Iceberg tables on Azure are not supported yet: iceberg-rust 0.10 \
                           addresses Azure through the ADLS Gen2 endpoint only; use table = \
                           \"delta\" on Azure"
                    .to_string();
                (Err(why.clone()), Err(why))
            }
        };
        let env = |key: &str, var: &str| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    format!(
                        "{}: key `format.iceberg.{key}`: environment variable `{var}` is not set (or is empty)",
                        file()
                    )
                })
        };
        let connect = match &cfg.kind {
            CatalogKind::Sql { path } => match (&cfg.uri_env, path, backend) {
                (Some(var), _, _) => env("uri_env", var).map(Connect::Sql),
                (None, Some(path), _) => Ok(Connect::Sql(sqlite_uri(path))),
                (None, None, Backend::Local) => match root.to_file_path() {
                    Ok(p) => Ok(Connect::Sql(sqlite_uri(
                        &p.join("_iceberg").join("catalog.db"),
                    ))),
                    Err(()) => Err("the lake root is not a local path".into()),
                },
                (None, None, _) => Err(format!(
                    "{}: key `format.iceberg`: a remote lake needs `path` (a SQLite file for the \
                     embedded catalog) or `uri_env` (a catalog database URI)",
                    file()
                )),
            },
            CatalogKind::Rest {
                uri,
                warehouse,
                prefix,
                auth,
            } => rest_connect(uri, &cfg.uri_env, warehouse, prefix, auth, &env),
        };
        Iceberg {
            root,
            location_root,
            catalog_name: cfg.name.clone(),
            pipeline: pipeline.name.clone(),
            connect,
            builder,
            delta: Delta::new(pipeline, lake),
            catalog: tokio::sync::OnceCell::new(),
        }
    }

    /// Whether `url` is run state (under `_smelter/`), kept in Delta.
    fn is_state(&self, url: &Url) -> bool {
        self.relative(url)
            .is_some_and(|r| r.starts_with("_smelter/") || r == "_smelter")
    }

    fn relative(&self, url: &Url) -> Option<String> {
        let root = self.root.as_str().trim_end_matches('/');
        url.as_str()
            .strip_prefix(root)
            .map(|r| r.trim_matches('/').to_string())
    }

    /// Catalog identifier (`<layer>.<name>`) of the table at `url`, and the location to create
    /// it at: the lake path, or `None` when the catalog assigns locations (REST).
    fn ident(&self, url: &Url) -> Result<(Identifier, Option<String>)> {
        let rel = self.relative(url).ok_or_else(|| {
            Error::Internal(format!(
                "table {} is not under the lake root",
                crate::storage::redact(url)
            ))
        })?;
        let (namespace, name) = rel.split_once('/').ok_or_else(|| {
            Error::Internal(format!("table path `{rel}` has no layer (<layer>/<name>)"))
        })?;
        let root = self
            .location_root
            .clone()
            .map_err(|m| self.config_error(m))?;
        let location = match self.connect {
            Ok(Connect::Rest { .. }) => None,
            _ => Some(format!("{root}/{rel}")),
        };
        Ok((Identifier::new(&[namespace.to_string()], name), location))
    }

    fn config_error(&self, message: String) -> Error {
        Error::Usage(message)
    }

    /// The catalog, connected on first use.
    async fn connected(&self) -> Result<Connected> {
        self.catalog
            .get_or_try_init(|| async {
                let connect = self
                    .connect
                    .as_ref()
                    .map_err(|m| self.config_error(m.clone()))?;
                let builder = self.builder.clone().map_err(|m| self.config_error(m))?;
                match connect {
                    Connect::Sql(uri) => {
                        if let Some(path) = uri.strip_prefix("sqlite://") {
                            let path = path.split('?').next().unwrap_or(path);
                            if let Some(dir) = std::path::Path::new(path).parent() {
                                std::fs::create_dir_all(dir)?;
                            }
                        }
                        if uri.starts_with("postgres://") || uri.starts_with("postgresql://") {
                            check_postgres(&format!("catalog `{}`", self.catalog_name), uri)
                                .await?;
                        }
                        let catalog = SqlCatalog::new(uri, &self.catalog_name, builder)
                            .await
                            .map_err(|e| {
                                catalog_error(&format!("catalog `{}`", self.catalog_name), e.into())
                            })?;
                        Ok::<_, Error>(Connected::Sql(Arc::new(catalog)))
                    }
                    Connect::Rest {
                        uri,
                        warehouse,
                        prefix,
                        token,
                        oauth2,
                    } => Ok(Connected::Rest(Arc::new(
                        rest_catalog(
                            uri,
                            warehouse.as_deref(),
                            prefix.as_deref(),
                            token,
                            oauth2,
                            builder,
                        )
                        .await?,
                    ))),
                }
            })
            .await
            .cloned()
    }

    /// The catalog, connected on first use.
    async fn catalog(&self) -> Result<Arc<dyn Catalog>> {
        Ok(self.connected().await?.catalog())
    }

    /// A catalog that reads what is committed now: a SQL catalog with an empty metadata
    /// cache; the REST catalog itself (it caches no metadata).
    async fn fresh(&self) -> Result<Arc<dyn Catalog>> {
        Ok(match self.connected().await? {
            Connected::Sql(c) => Arc::new(c.duplicate(&self.catalog_name)),
            Connected::Rest(c) => c,
        })
    }

    /// The table `ident` as the catalog holds it now, after a commit to it. Errors: the catalog
    /// is unreachable, or the table was dropped meanwhile (a lost race, exit 75).
    async fn reload(&self, ident: &Identifier) -> Result<Table> {
        self.load(ident)
            .await?
            .ok_or_else(|| lost(ident, "its table was dropped"))
    }

    /// The table at `ident` as committed now, or `None`.
    async fn load(&self, ident: &Identifier) -> Result<Option<Table>> {
        let catalog = self.fresh().await?;
        let rest = matches!(self.connected().await?, Connected::Rest(_));
        // The REST spec's `HEAD` endpoints are optional (servers list them in `/v1/config`), so
        // a REST table is loaded directly.
        if !rest
            && !catalog
                .tabular_exists(ident)
                .await
                .map_err(|e| catalog_error(&ident.to_string(), e))?
        {
            return Ok(None);
        }
        match catalog.clone().load_tabular(ident).await {
            Ok(Tabular::Table(t)) => Ok(Some(as_current(t).await?)),
            Ok(_) => Err(Error::Usage(format!(
                "`{ident}` in the Iceberg catalog is a view, not a table"
            ))),
            Err(iceberg_rust::error::Error::CatalogNotFound) => {
                if rest {
                    // iceberg-rest-catalog 0.10 reports any failed table load as not found:
                    // a namespace read with the same credentials tells an unreachable or
                    // refusing server (its error) from a missing table.
                    match catalog.load_namespace(ident.namespace()).await {
                        Ok(_) => {}
                        Err(e) if rest_status(&e) == Some(404) => {}
                        Err(e) => return Err(catalog_error(&ident.to_string(), e)),
                    }
                }
                Ok(None)
            }
            Err(e) => Err(catalog_error(&ident.to_string(), e)),
        }
    }

    /// Creates the table (and its namespace) with `schema`, partitioned by `partition_by`.
    async fn create(
        &self,
        ident: &Identifier,
        location: Option<&str>,
        schema: IcebergSchema,
        partition_by: &[super::PartitionField],
    ) -> Result<Table> {
        let catalog = self.catalog().await?;
        let namespace = ident.namespace().clone();
        // Record the namespace as pyiceberg does (`exists = true`); it is already there after
        // the first table, and a concurrent creator may win: only the table creation below
        // must succeed. (iceberg-sql-catalog 0.10's `namespace_exists` is unimplemented.)
        let _ = catalog
            .create_namespace(
                &namespace,
                Some(HashMap::from([("exists".to_string(), "true".to_string())])),
            )
            .await;
        let mut builder = Table::builder();
        builder.with_name(ident.name());
        if let Some(location) = location {
            builder.with_location(location);
        }
        if !partition_by.is_empty() {
            // Partition field ids start at 1000, as the Iceberg spec's reference
            // implementation numbers them.
            builder.with_partition_spec(spec_for(
                &ident.to_string(),
                &schema,
                partition_by,
                0,
                &[],
                1000,
            )?);
        }
        builder
            .with_schema(schema)
            .build(namespace.as_ref(), catalog)
            .await
            .map_err(|e| match rest_status(&e) {
                // A REST server's answer other than "already exists" says what is wrong.
                Some(status) if status != 409 => catalog_error(&ident.to_string(), e),
                _ => Error::Storage {
                    url: ident.to_string(),
                    message: format!("cannot create the Iceberg table (another writer may have created it at the same time): {}", crate::storage::scrub(&e.to_string())),
                    retryable: true,
                },
            })
    }

    /// Commits a schema change (`AddSchema` + `SetCurrentSchema`) and returns the reloaded
    /// table. iceberg-rust's transactions add a schema without making it current, so the
    /// change is its own metadata commit, made before the data commit that needs it.
    ///
    /// iceberg-rust 0.10 reads and writes with the schema of the current snapshot, and gives a
    /// new snapshot that schema's id, whatever the table's current schema is. So the new schema
    /// replaces the current snapshot's schema under the same id: readers of every snapshot then
    /// see it (an added column reads as NULL from older files, a widened one widened), and the
    /// next snapshot is written with it. Only the changes `on_schema_change` allows (added
    /// optional columns, lossless widenings, NOT NULL dropped) or a full replace reach here.
    ///
    /// A REST catalog server refuses a schema under an id the table already uses (the spec
    /// gives every schema its own id). There the new schema is added under a new id (or an
    /// equal earlier schema made current again) and made current; the table is then loaded
    /// with its current schema standing in for its snapshot's ([`as_current`]), so the data
    /// commit that follows is written with the new schema and its snapshot carries the new id.
    async fn set_schema(&self, table: Table, schema: IcebergSchema) -> Result<Table> {
        let ident = table.identifier().clone();
        let last_column_id =
            max_field_id(&schema.fields().clone()).max(table.metadata().last_column_id);
        let requirement = TableRequirement::AssertCurrentSchemaId {
            current_schema_id: table.metadata().current_schema_id,
        };
        let expected = schema.clone();
        let rest = matches!(self.connected().await?, Connected::Rest(_));
        let mut updates = Vec::new();
        let earlier = table
            .metadata()
            .schemas
            .values()
            .find(|s| shape(s.fields()) == shape(expected.fields()))
            .map(|s| *s.schema_id());
        match (rest, earlier) {
            (true, Some(id)) => {
                updates.push(TableUpdate::SetCurrentSchema { schema_id: id });
            }
            (true, None) => {
                let id = table.metadata().schemas.keys().copied().max().unwrap_or(0) + 1;
                let mut b = IcebergSchema::builder();
                b.with_schema_id(id);
                for f in schema.fields().iter() {
                    b.with_struct_field(f.clone());
                }
                let schema = b
                    .build()
                    .map_err(|e| Error::Internal(format!("Iceberg schema: {e}")))?;
                updates.push(TableUpdate::AddSchema {
                    schema,
                    last_column_id: Some(last_column_id),
                });
                updates.push(TableUpdate::SetCurrentSchema { schema_id: -1 });
            }
            (false, _) => {
                updates.push(TableUpdate::AddSchema {
                    schema,
                    last_column_id: Some(last_column_id),
                });
                updates.push(TableUpdate::SetCurrentSchema { schema_id: -1 });
            }
        }

        let now = self.update_metadata(&table, requirement, updates).await?;
        let current = now
            .metadata()
            .current_schema(None)
            .map_err(|e| catalog_error(&ident.to_string(), e.into()))?;
        if shape(current.fields()) != shape(expected.fields()) {
            return Err(lost(
                &ident,
                "another writer changed its schema at the same time",
            ));
        }
        Ok(now)
    }

    /// Writes `df` as data files of `table` (not committed): its columns are put in the table
    /// schema's order and cast to its types; a table column `df` lacks is written as NULL.
    async fn write_files(
        &self,
        table: &Table,
        df: DataFrame,
    ) -> Result<Vec<iceberg_rust::spec::manifest::DataFile>> {
        let schema = table
            .current_schema(None)
            .map_err(|e| catalog_error(&table.identifier().to_string(), e))?;
        let target: Schema =
            schema
                .fields()
                .try_into()
                .map_err(|e: iceberg_rust::spec::error::Error| {
                    catalog_error(&table.identifier().to_string(), e.into())
                })?;
        let target: SchemaRef = Arc::new(target);
        let df = super::delta::floor_to_micros(df)?;
        let present: BTreeSet<String> = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let exprs: Vec<Expr> = target
            .fields()
            .iter()
            .map(|f| {
                if present.contains(f.name()) {
                    Expr::Column(Column::new_unqualified(f.name())).alias(f.name())
                } else {
                    cast(
                        lit(datafusion::scalar::ScalarValue::Null),
                        f.data_type().clone(),
                    )
                    .alias(f.name())
                }
            })
            .collect();
        let stream = df.select(exprs)?.execute_stream().await?;
        let target2 = target.clone();
        // Empty batches are dropped: iceberg-rust 0.10's partitioned writer panics on them.
        let batches = stream
            .filter(|b| futures::future::ready(b.as_ref().map_or(true, |b| b.num_rows() > 0)))
            .map(move |b| {
                let b = b.map_err(|e| arrow::error::ArrowError::ExternalError(Box::new(e)))?;
                conform(&b, &target2)
            });
        let files = iceberg_rust::arrow::write::write_parquet_partitioned(table, batches, None)
            .await
            .map_err(Error::from)?;
        let misread = misread_bounds(schema.fields());
        files
            .into_iter()
            .map(|f| without_bounds(f, &misread))
            .collect()
    }

    /// Commits `kind` on `table` plus the transaction-id property, and verifies the commit
    /// against a fresh read of the catalog. A lost append is committed again on the winner's
    /// snapshot, unless the winner carries the same transaction id (another attempt of the same
    /// run committed it: its entry is returned with the table, and nothing more is committed);
    /// any other lost commit is a retryable error.
    async fn commit(
        &self,
        table: Table,
        kind: CommitKind,
        req: &WriteRequest<'_>,
        mut entry: TxnEntry,
    ) -> Result<(Table, Option<TxnEntry>)> {
        let ident = table.identifier().clone();
        self.owned(&table)?;
        let mut table = table;
        for _ in 0..=APPEND_RETRIES {
            let before: BTreeSet<i64> = table.metadata().snapshots.keys().copied().collect();
            entry.version = table.metadata().last_sequence_number + 1;
            let mut props = txn_properties(&table, req, &entry);
            props.push((PIPELINE_PROPERTY.to_string(), self.pipeline.clone()));
            let tx = table.new_transaction(None);
            let tx = match &kind {
                CommitKind::Append(files) => tx.append_data(files.clone()),
                CommitKind::Replace(files) => tx.replace(files.clone()),
                CommitKind::Overwrite(files, old) => tx.overwrite(files.clone(), old.clone()),
                CommitKind::Properties => tx,
            };
            match tx.update_properties(props).commit().await {
                Ok(()) => {}
                // A REST catalog refuses a commit whose requirement no longer holds; whether
                // another attempt of this run won is read below, as for a SQL catalog.
                Err(e) if is_conflict(&e) => {}
                Err(e) => return Err(catalog_error(&ident.to_string(), e)),
            }
            let ours: Option<i64> = table
                .metadata()
                .snapshots
                .keys()
                .copied()
                .find(|id| !before.contains(id));
            let now = self.reload(&ident).await?;
            let won = match ours {
                Some(id) => now.metadata().snapshots.contains_key(&id),
                None => txns(&now)
                    .iter()
                    .any(|t| Some(&t.id) == req.txn_id.as_ref()),
            };
            if won {
                return Ok((now, None));
            }
            // Only a plain append may be committed again on the winner's snapshot: a write
            // computed from the table (or from a window read with it) is stale now.
            if !matches!(kind, CommitKind::Append(_)) || req.read_version.is_some() {
                return Err(lost(&ident, "another writer committed to it first"));
            }
            if let Some(theirs) = req
                .txn_id
                .as_ref()
                .and_then(|id| txns(&now).into_iter().find(|t| &t.id == id))
            {
                return Ok((now, Some(theirs)));
            }
            tracing::info!(table = %ident, "Another writer committed first; committing the append again on its snapshot.");
            table = now;
        }
        Err(lost(&ident, "other writers kept committing first"))
    }

    /// Commits `files` as the whole content of `table` (a rewrite by `operation`, recorded in
    /// `smelter.last_commit`; no transaction id) and returns the table after it.
    async fn replace_all(
        &self,
        ctx: &SessionContext,
        url: &Url,
        table: Table,
        files: Vec<iceberg_rust::spec::manifest::DataFile>,
        operation: &str,
    ) -> Result<Table> {
        let req = WriteRequest {
            ctx,
            url,
            input: ctx.read_empty()?,
            mode: WriteMode::Overwrite,
            partition_by: Vec::new(),
            txn_id: None,
            metadata: vec![("operation".into(), operation.into())],
            read_version: None,
            observer: None,
            staged: None,
        };
        Ok(self
            .commit(table, CommitKind::Replace(files), &req, TxnEntry::default())
            .await?
            .0)
    }

    /// The Iceberg schema for `arrow` on `table` (field ids kept by name, new fields numbered
    /// after the table's last column id). `keep_missing`: table columns absent from `arrow`
    /// stay (append, merge); else the schema is `arrow`'s alone (overwrite).
    fn schema_for(
        &self,
        table: Option<&Table>,
        arrow: &Schema,
        keep_missing: bool,
    ) -> Result<IcebergSchema> {
        let (old, mut next, schema_id) = match table {
            Some(t) => {
                let s = t
                    .current_schema(None)
                    .map_err(|e| catalog_error(&t.identifier().to_string(), e))?;
                // The schema keeps its id: see `set_schema`.
                (
                    Some(s.fields().clone()),
                    t.metadata().last_column_id,
                    *s.schema_id(),
                )
            }
            None => (None, 0, 0),
        };
        let refuse = |c: UnstorableColumn| {
            Error::Usage(format!(
                "column `{}` has type {}, which the iceberg table format cannot store: {}; {}",
                c.column, c.data_type, c.reason, c.hint
            ))
        };
        let mut fields = Vec::new();
        match (&old, keep_missing) {
            // Append and merge: the table's columns in their order (a column the input lacks
            // stays, made optional; a required column stays required only while the input
            // cannot be NULL there), then the input's new columns.
            (Some(old), true) => {
                for prior in old.iter() {
                    match arrow.field_with_name(&prior.name) {
                        Ok(f) => {
                            let mut field = to_field(f, Some(prior), &mut next).map_err(refuse)?;
                            field.required = prior.required && !f.is_nullable();
                            fields.push(field);
                        }
                        Err(_) => {
                            let mut field = prior.clone();
                            field.required = false;
                            fields.push(field);
                        }
                    }
                }
                for f in arrow.fields() {
                    if old.get_name(f.name()).is_none() {
                        let mut field = to_field(f, None, &mut next).map_err(refuse)?;
                        field.required = false;
                        fields.push(field);
                    }
                }
            }
            // Overwrite (or a new table): the input's columns, ids kept by name.
            _ => {
                for f in arrow.fields() {
                    let prior = old.as_ref().and_then(|o| o.get_name(f.name()));
                    fields.push(to_field(f, prior, &mut next).map_err(refuse)?);
                }
            }
        }
        // An unchanged schema keeps its id (no schema commit).
        if let (Some(t), Some(old)) = (table, &old) {
            if shape(old) == shape(&StructType::new(fields.clone())) {
                return Ok(t
                    .current_schema(None)
                    .map_err(|e| catalog_error(&t.identifier().to_string(), e))?
                    .clone());
            }
        }
        let mut b = IcebergSchema::builder();
        b.with_schema_id(schema_id);
        for f in fields {
            b.with_struct_field(f);
        }
        b.build()
            .map_err(|e| Error::Internal(format!("Iceberg schema: {e}")))
    }

    /// The table, created or with its schema changed so it can take `arrow`'s columns, and
    /// partitioned by `partition_by`: `keep_missing` is false for an overwrite, which changes a
    /// table partitioned otherwise to the new spec (its own metadata commit, before the data
    /// commit that replaces every file); other writes refuse such a table (usage error).
    async fn prepare(
        &self,
        ident: &Identifier,
        location: Option<&str>,
        table: Option<Table>,
        arrow: &Schema,
        keep_missing: bool,
        partition_by: &[super::PartitionField],
    ) -> Result<Table> {
        let schema = self.schema_for(table.as_ref(), arrow, keep_missing)?;
        let t = match table {
            None => return self.create(ident, location, schema, partition_by).await,
            Some(t) => {
                let current = t
                    .current_schema(None)
                    .map_err(|e| catalog_error(&ident.to_string(), e))?;
                if shape(current.fields()) == shape(schema.fields()) {
                    t
                } else {
                    self.set_schema(t, schema.clone()).await?
                }
            }
        };
        let shown = ident.to_string();
        let metadata = t.metadata();
        let current = metadata
            .default_partition_spec()
            .map_err(|e| catalog_error(&shown, e.into()))?;
        let next_field_id = metadata
            .partition_specs
            .values()
            .flat_map(|s| s.fields().iter().map(|f| *f.field_id()))
            .chain([metadata.last_partition_id, 999])
            .max()
            .unwrap_or(999)
            + 1;
        let next_spec_id = metadata.partition_specs.keys().copied().max().unwrap_or(0) + 1;
        let earlier: Vec<&PartitionSpec> = metadata.partition_specs.values().collect();
        let wanted = spec_for(
            &shown,
            &schema,
            partition_by,
            next_spec_id,
            &earlier,
            next_field_id,
        )?;
        if spec_shape(current) == spec_shape(&wanted) {
            return Ok(t);
        }
        if keep_missing {
            // Each spec in the header's own syntax (`region_id, day(shipped_at)`), its source
            // columns named by the table schema.
            let names = |s: &PartitionSpec| match s.fields().as_slice() {
                [] => "nothing".to_string(),
                f => f
                    .iter()
                    .map(|f| {
                        use iceberg_rust::spec::partition::Transform as X;
                        let c = schema
                            .fields()
                            .get(*f.source_id() as usize)
                            .map_or_else(|| f.name().clone(), |c| c.name.clone());
                        let c = crate::plan::ident::to_sql(&c);
                        match f.transform() {
                            X::Identity => c,
                            X::Bucket(n) => format!("bucket({n}, {c})"),
                            X::Truncate(w) => format!("truncate({w}, {c})"),
                            other => format!("{other}({c})"),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            return Err(Error::Usage(format!(
                "the Iceberg table `{shown}` is partitioned by {}, but the model says `partition_by` {}: a merge, append or scd2 model keeps its table's partitioning; run it once with --full-refresh to rebuild the table with the new one, or restore the header",
                names(current),
                names(&wanted)
            )));
        }
        // A spec the table had before is made the default again rather than added twice
        // (Java's `reuseOrCreateNewSpecId`); its fields have the same ids (see `spec_for`).
        let existing = metadata
            .partition_specs
            .values()
            .find(|s| spec_shape(s) == spec_shape(&wanted))
            .cloned();
        match existing {
            Some(spec) => self.set_spec(t, spec, false).await,
            None => self.set_spec(t, wanted, true).await,
        }
    }

    /// Commits `updates` to `table`'s metadata if `requirement` still holds, and returns the
    /// table reloaded from a fresh catalog read (whether or not this commit won: the SQL
    /// catalog does not say, a REST catalog answers 409; callers check the reloaded table).
    async fn update_metadata(
        &self,
        table: &Table,
        requirement: TableRequirement,
        updates: Vec<TableUpdate>,
    ) -> Result<Table> {
        let ident = table.identifier().clone();
        self.owned(table)?;
        let outcome = table
            .catalog()
            .update_table(CommitTable {
                identifier: ident.clone(),
                requirements: vec![requirement],
                updates,
            })
            .await;
        match outcome {
            // A REST catalog's 409: the requirement no longer held; the callers see it on the
            // reloaded table.
            Ok(_) => {}
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(catalog_error(&ident.to_string(), e)),
        }
        self.reload(&ident).await
    }

    /// Commits `spec` as the table's default partition spec (`AddSpec` when `add`, else `spec`
    /// is one of the table's specs; then `SetDefaultSpec`, conditional on the current default)
    /// and returns the reloaded table. Only an overwrite
    /// calls this: its data commit then replaces every file, so no file of the old spec stays
    /// current.
    async fn set_spec(&self, table: Table, spec: PartitionSpec, add: bool) -> Result<Table> {
        let ident = table.identifier().clone();
        let spec_id = *spec.spec_id();
        let requirement = TableRequirement::AssertDefaultSpecId {
            default_spec_id: table.metadata().default_spec_id,
        };
        let mut updates = Vec::new();
        if add {
            updates.push(TableUpdate::AddSpec { spec });
        }
        updates.push(TableUpdate::SetDefaultSpec { spec_id });
        let t = self.update_metadata(&table, requirement, updates).await?;
        if t.metadata().default_spec_id != spec_id {
            return Err(lost(
                &ident,
                "another writer changed its partitioning first",
            ));
        }
        Ok(t)
    }

    /// Copy-on-write merge of `input` into `table` (which has a snapshot).
    async fn merge(
        &self,
        req: &WriteRequest<'_>,
        table: Table,
        keys: &[String],
        sequence_by: &[String],
        delete: Option<&String>,
    ) -> Result<(Table, CommitKind, TxnEntry)> {
        let ctx = req.ctx;
        let ident = table.identifier().clone();
        // datafusion_iceberg 0.10 cannot add the file path columns to a partitioned table's scan:
        // a partitioned table is rewritten whole.
        let partitioned = table
            .metadata()
            .default_partition_spec()
            .map(|spec| !spec.fields().is_empty())
            .unwrap_or(false);
        let provider = if partitioned {
            current(table.clone())
        } else {
            let config = DataFusionTableConfigBuilder::default()
                .enable_data_file_path_column(true)
                .enable_manifest_file_path_column(true)
                .build()
                .map_err(|e| Error::Internal(format!("Iceberg scan config: {e}")))?;
            Arc::new(DataFusionTable::new_with_config(
                Tabular::Table(table.clone()),
                None,
                None,
                None,
                Some(config),
            ))
        };
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let (t_name, s_name, a_name) = (
            format!("__smelter_target_{tag}"),
            format!("__smelter_source_{tag}"),
            format!("__smelter_affected_{tag}"),
        );
        ctx.register_table(t_name.as_str(), provider)?;
        ctx.register_table(s_name.as_str(), req.input.clone().into_view())?;
        let result = self
            .merge_registered(
                req,
                &table,
                (&t_name, &s_name, &a_name),
                partitioned,
                keys,
                sequence_by,
                delete,
            )
            .await;
        for n in [&t_name, &s_name, &a_name] {
            let _ = ctx.deregister_table(n.as_str());
        }
        let (files, rewrite, entry) = result?;
        let kind = match rewrite {
            Rewrite::Files(old) => CommitKind::Overwrite(files, old),
            Rewrite::All => CommitKind::Replace(files),
            // Nothing written: only the transaction id is committed.
            Rewrite::Nothing if files.is_empty() => CommitKind::Properties,
            Rewrite::Nothing => CommitKind::Append(files),
        };
        let _ = ident;
        Ok((table, kind, entry))
    }

    #[allow(clippy::too_many_arguments)]
    async fn merge_registered(
        &self,
        req: &WriteRequest<'_>,
        table: &Table,
        (t_name, s_name, a_name): (&str, &str, &str),
        whole: bool,
        keys: &[String],
        sequence_by: &[String],
        delete: Option<&String>,
    ) -> Result<(
        Vec<iceberg_rust::spec::manifest::DataFile>,
        Rewrite,
        TxnEntry,
    )> {
        let ctx = req.ctx;
        let q = |c: &str| format!("\"{}\"", c.replace('"', "\"\""));
        let on = keys
            .iter()
            .map(|k| format!("t.{c} = s.{c}", c = q(k)))
            .collect::<Vec<_>>()
            .join(" AND ");
        // Column names of datafusion_iceberg's `enable_*_file_path_column` options.
        let (dpath, mpath) = ("__data_file_path", "__manifest_file_path");
        let mut old: HashMap<String, Vec<String>> = HashMap::new();
        // An empty batch changes nothing: a partitioned table is not rewritten for it.
        if whole && ctx.table(s_name).await?.count().await? == 0 {
            return Ok((Vec::new(), Rewrite::Nothing, TxnEntry::default()));
        }
        if !whole {
            let affected = ctx
                .sql(&format!(
                    "SELECT DISTINCT t.{d} AS f, t.{m} AS m FROM {t} t JOIN {s} s ON {on}",
                    d = q(dpath),
                    m = q(mpath),
                    t = q(t_name),
                    s = q(s_name)
                ))
                .await?
                .collect()
                .await?;
            for b in &affected {
                let f = string_column(b, 0)?;
                let m = string_column(b, 1)?;
                for (f, m) in f.into_iter().zip(m) {
                    if let (Some(f), Some(m)) = (f, m) {
                        old.entry(m).or_default().push(f);
                    }
                }
            }
        }
        let source_cols: Vec<String> = req
            .input
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|c| Some(c) != delete)
            .collect();
        let marked = delete.map(|f| format!("s.{}", q(f)));
        let unmarked = marked
            .as_ref()
            .map(|m| format!("NOT {m}"))
            .unwrap_or_else(|| "TRUE".into());
        let inserts_where = format!("WHERE {unmarked}");
        let s_cols = source_cols
            .iter()
            .map(|c| format!("s.{}", q(c)))
            .collect::<Vec<_>>()
            .join(", ");
        if old.is_empty() && !whole {
            // No key matches: the unmarked rows are appended.
            let df = ctx
                .sql(&format!(
                    "SELECT {s_cols} FROM {s} s {inserts_where}",
                    s = q(s_name)
                ))
                .await?;
            let files = self.write_files(table, df).await?;
            let entry = TxnEntry {
                rows_inserted: record_count(&files),
                files_added: files.len() as u64,
                ..Default::default()
            };
            return Ok((files, Rewrite::Nothing, entry));
        }
        // The affected files' rows.
        let paths: Vec<String> = old.values().flatten().cloned().collect();
        let list = paths
            .iter()
            .map(|p| format!("'{}'", p.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(", ");
        let table_cols: Vec<String> = table
            .current_schema(None)
            .map_err(|e| catalog_error(&table.identifier().to_string(), e))?
            .iter()
            .map(|f| f.name.clone())
            .collect();
        let t_cols = table_cols
            .iter()
            .map(|c| format!("t.{}", q(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let only_affected = if whole {
            String::new()
        } else {
            format!("WHERE t.{} IN ({list})", q(dpath))
        };
        ctx.register_table(
            a_name,
            ctx.sql(&format!(
                "SELECT {t_cols} FROM {t} t {only_affected}",
                t = q(t_name)
            ))
            .await?
            .into_view(),
        )?;
        let newer = crate::table::newer_version(sequence_by, "s", "t");
        let older = crate::table::newer_version(sequence_by, "t", "s");
        let del = match (&marked, older) {
            (Some(m), Some(o)) => format!("({m} AND NOT ({o}))"),
            (Some(m), None) => format!("({m})"),
            (None, _) => "FALSE".into(),
        };
        let upd = match newer {
            Some(n) => format!("(({unmarked}) AND ({n}))"),
            None => format!("({unmarked})"),
        };
        let matched_cols = table_cols
            .iter()
            .map(|c| {
                if source_cols.contains(c) {
                    format!(
                        "CASE WHEN COALESCE({upd}, FALSE) THEN s.{c} ELSE t.{c} END AS {c}",
                        c = q(c)
                    )
                } else {
                    format!("t.{c} AS {c}", c = q(c))
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let insert_cols = table_cols
            .iter()
            .map(|c| {
                if source_cols.contains(c) {
                    format!("s.{c} AS {c}", c = q(c))
                } else {
                    format!("NULL AS {c}", c = q(c))
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let (a, s) = (q(a_name), q(s_name));
        let rows = ctx
            .sql(&format!(
                "SELECT {t_cols} FROM {a} t LEFT ANTI JOIN {s} s ON {on} \
                 UNION ALL \
                 SELECT {matched_cols} FROM {a} t JOIN {s} s ON {on} WHERE NOT COALESCE({del}, FALSE) \
                 UNION ALL \
                 SELECT {insert_cols} FROM {s} s LEFT ANTI JOIN {a} t ON {on} WHERE COALESCE({unmarked}, FALSE)"
            ))
            .await?;
        let counts = ctx
            .sql(&format!(
                "SELECT \
                   SUM(CASE WHEN COALESCE({del}, FALSE) THEN 1 ELSE 0 END) AS deleted, \
                   SUM(CASE WHEN NOT COALESCE({del}, FALSE) AND COALESCE({upd}, FALSE) THEN 1 ELSE 0 END) AS updated \
                 FROM {a} t JOIN {s} s ON {on}"
            ))
            .await?
            .collect()
            .await?;
        let inserted = ctx
            .sql(&format!(
                "SELECT s.* FROM {s} s LEFT ANTI JOIN {a} t ON {on} WHERE COALESCE({unmarked}, FALSE)"
            ))
            .await?
            .count()
            .await? as u64;
        let (deleted, updated) = counts
            .first()
            .map(|b| (int_at(b, 0), int_at(b, 1)))
            .unwrap_or((0, 0));
        let files = self.write_files(table, rows).await?;
        let entry = TxnEntry {
            rows_inserted: inserted,
            rows_updated: updated,
            rows_deleted: deleted,
            files_added: files.len() as u64,
            ..Default::default()
        };
        let rewrite = if whole {
            Rewrite::All
        } else {
            Rewrite::Files(old)
        };
        Ok((files, rewrite, entry))
    }
}

/// The metrics of a write whose transaction id an earlier commit carries: that commit's.
fn earlier(e: TxnEntry) -> WriteMetrics {
    WriteMetrics {
        rows_inserted: e.rows_inserted,
        rows_updated: e.rows_updated,
        rows_deleted: e.rows_deleted,
        files_added: e.files_added,
        version: e.version,
        skipped: true,
        earlier_commit: Some(EarlierCommit {
            version: Some(e.version),
            attempt: e.attempt,
            timestamp_ms: Some(e.timestamp_ms),
        }),
        stats: None,
        observed: false,
    }
}

/// Which data files a merge rewrites.
enum Rewrite {
    /// None: the batch matched no key, its rows are appended.
    Nothing,
    /// These (manifest path → data file paths).
    Files(HashMap<String, Vec<String>>),
    /// Every file (a partitioned table).
    All,
}

/// What a data commit does.
enum CommitKind {
    /// Add files.
    Append(Vec<iceberg_rust::spec::manifest::DataFile>),
    /// Replace every file.
    Replace(Vec<iceberg_rust::spec::manifest::DataFile>),
    /// Add files and remove these (manifest path → data file paths).
    Overwrite(
        Vec<iceberg_rust::spec::manifest::DataFile>,
        HashMap<String, Vec<String>>,
    ),
    /// No data: only the transaction id is recorded.
    Properties,
}

/// Field ids of the columns (nested too) whose manifest bounds iceberg-rust 0.10 gets wrong,
/// so readers pruning on them (and datafusion_iceberg, which turns a file's equal bounds into a
/// constant) would skip or misread rows:
/// - decimals of precision <= 18: Parquet stores them as INT32/INT64, whose statistics are
///   little-endian integers, and iceberg-rust decodes every decimal bound as big-endian bytes;
/// - every type but int, long, float, double, date, time and the timestamps: iceberg-rust merges
///   the bounds of a file's row groups for those types only, and keeps the first row group's
///   bounds for the others (strings, binary, booleans, decimals, UUIDs), which are wrong for a
///   file of more than one row group.
fn misread_bounds(fields: &StructType) -> BTreeSet<i32> {
    fn walk(t: &Type, id: i32, out: &mut BTreeSet<i32>) {
        use PrimitiveType as P;
        match t {
            Type::Primitive(
                P::Int
                | P::Long
                | P::Float
                | P::Double
                | P::Date
                | P::Time
                | P::Timestamp
                | P::Timestamptz,
            ) => {}
            Type::Primitive(_) => {
                out.insert(id);
            }
            Type::Struct(s) => s.iter().for_each(|f| walk(&f.field_type, f.id, out)),
            Type::List(l) => walk(&l.element, l.element_id, out),
            Type::Map(m) => {
                walk(&m.key, m.key_id, out);
                walk(&m.value, m.value_id, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    fields
        .iter()
        .for_each(|f| walk(&f.field_type, f.id, &mut out));
    out
}

/// `file` without lower and upper bounds for the columns `ids` (bounds are optional in the
/// Iceberg spec: a reader then cannot prune on them, and reads every such file).
fn without_bounds(
    file: iceberg_rust::spec::manifest::DataFile,
    ids: &BTreeSet<i32>,
) -> Result<iceberg_rust::spec::manifest::DataFile> {
    if ids.is_empty() {
        return Ok(file);
    }
    let strip = |b: &Option<HashMap<i32, iceberg_rust::spec::values::Value>>| {
        b.as_ref().map(|m| {
            m.iter()
                .filter(|(k, _)| !ids.contains(k))
                .map(|(k, v)| (*k, v.clone()))
                .collect()
        })
    };
    iceberg_rust::spec::manifest::DataFile::builder()
        .with_content(file.content().clone())
        .with_file_path(file.file_path().clone())
        .with_file_format(file.file_format().clone())
        .with_partition(file.partition().clone())
        .with_record_count(*file.record_count())
        .with_file_size_in_bytes(*file.file_size_in_bytes())
        .with_column_sizes(file.column_sizes().clone())
        .with_value_counts(file.value_counts().clone())
        .with_null_value_counts(file.null_value_counts().clone())
        .with_nan_value_counts(file.nan_value_counts().clone())
        .with_lower_bounds(strip(file.lower_bounds()))
        .with_upper_bounds(strip(file.upper_bounds()))
        .with_key_metadata(file.key_metadata().clone())
        .with_split_offsets(file.split_offsets().clone())
        .with_equality_ids(file.equality_ids().clone())
        .with_sort_order_id(*file.sort_order_id())
        .build()
        .map_err(|e| Error::Internal(format!("Iceberg data file: {e}")))
}

/// The partition spec `spec_id` of `partition_by` over `schema`: a field equal to one of an
/// `earlier` spec (source column and transform) keeps that field's id, new fields are numbered
/// from `first_field_id`. `shown`: the table, for errors (a column that is not in the schema, or a
/// transform its type does not take: [`partition_transform`]).
fn spec_for(
    shown: &str,
    schema: &IcebergSchema,
    partition_by: &[super::PartitionField],
    spec_id: i32,
    earlier: &[&PartitionSpec],
    first_field_id: i32,
) -> Result<PartitionSpec> {
    if let Some(problem) = duplicate_source(partition_by) {
        return Err(Error::Usage(format!("`{shown}`: {problem}")));
    }
    let mut spec = PartitionSpec::builder();
    // An unpartitioned spec has no fields (the builder wants them set even then).
    spec.with_spec_id(spec_id).with_fields(Vec::new());
    let mut next_id = first_field_id;
    for field in partition_by {
        let source = schema.get_name(&field.column).ok_or_else(|| {
            Error::Usage(format!(
                "`{shown}`: partition column `{}` is not a column of the table",
                field.column
            ))
        })?;
        let (transform, name) = partition_transform(field, &source.field_type)
            .map_err(|e| Error::Usage(format!("`{shown}`: {e}")))?;
        // A field an earlier spec had (same source column and transform) keeps its id, as the
        // spec requires of v2 tables ("Partition Evolution").
        let field_id = earlier
            .iter()
            .flat_map(|s| s.fields())
            .find(|f| *f.source_id() == source.id && *f.transform() == transform)
            .map(|f| *f.field_id())
            .unwrap_or_else(|| {
                next_id += 1;
                next_id - 1
            });
        spec.with_partition_field(iceberg_rust::spec::partition::PartitionField::new(
            source.id, field_id, &name, transform,
        ));
    }
    spec.build()
        .map_err(|e| Error::Internal(format!("Iceberg partition spec: {e}")))
}

/// The problem with `partition_by` naming one column twice (`bucket(4, id), truncate(100, id)`):
/// iceberg-rust 0.10 keys a data file's partition fields by source column, so the second field
/// of a column would get no value and the commit would fail.
fn duplicate_source(partition_by: &[super::PartitionField]) -> Option<String> {
    let mut seen = BTreeSet::new();
    partition_by.iter().find(|f| !seen.insert(&f.column)).map(|f| {
        format!(
            "`partition_by` {f}: column `{}` is partitioned twice; the pinned Iceberg writer (iceberg-rust 0.10) takes one partition field per column",
            f.column
        )
    })
}

/// What makes two partition specs the same layout: each field's source column, transform and
/// name, in order (not the spec or field ids).
fn spec_shape(spec: &PartitionSpec) -> Vec<(i32, String, String)> {
    spec.fields()
        .iter()
        .map(|f| (*f.source_id(), f.transform().to_string(), f.name().clone()))
        .collect()
}

/// The Iceberg transform and partition field name of `field` over the column `source` (names as
/// Java's and pyiceberg's `PartitionSpec` builders give them: `c`, `c_day`, `c_bucket`,
/// `c_trunc`, …).
///
/// Errors (the message, without the table): a transform iceberg-rust 0.10's writer cannot
/// write for the column's type. That writer splits files by Int32, Int64 and Utf8 partition
/// values only (so no identity of a DATE), and derives each data file's partition value from
/// the transformed minimum and maximum of the source column, so only order-preserving
/// transforms work (no `bucket`; its value-level hash also differs from the spec's). Its
/// `month` is one more than the spec's, so it is refused too.
fn partition_transform(
    field: &super::PartitionField,
    source: &Type,
) -> std::result::Result<(iceberg_rust::spec::partition::Transform, String), String> {
    use super::PartitionTransform as T;
    use iceberg_rust::spec::partition::Transform;
    use PrimitiveType as P;
    let name = &field.column;
    let Type::Primitive(p) = source else {
        return Err(partition_type_error(field, source));
    };
    let integer = matches!(p, P::Int | P::Long);
    let temporal = matches!(p, P::Date | P::Timestamp);
    let (transform, suffix) = match field.transform {
        T::Column | T::Identity if matches!(p, P::String) => return Err(format!(
            "`partition_by` {field}: the pinned Iceberg writer (iceberg-rust 0.10) cannot partition by a string: it summarizes each manifest's string partition values by the first file's value only, so readers (Smelter's own included) would skip files that hold other values; partition by an integer the model computes instead, e.g. a region number, or `truncate(W, c)` of an integer"
        )),
        T::Column if integer => (Transform::Identity, None),
        T::Column if temporal => (Transform::Day, Some("day")),
        // iceberg-rust 0.10 splits files by Int32, Int64 and Utf8 partition values only.
        T::Identity if integer => (Transform::Identity, None),
        T::Year if temporal => (Transform::Year, Some("year")),
        T::Month => return Err(format!(
            "`partition_by` {field}: the pinned Iceberg writer (iceberg-rust 0.10) numbers months from 1 where the Iceberg spec numbers them from 0, so readers would prune every file wrongly; partition by a column the model computes instead, e.g. `date_trunc('month', {c}) AS {n}_month` (a DATE or TIMESTAMP: partitioned by day), or by `year({c})`",
            c = crate::plan::ident::to_sql(name),
            n = name
        )),
        T::Day if temporal => (Transform::Day, Some("day")),
        T::Hour if matches!(p, P::Timestamp) => (Transform::Hour, Some("hour")),
        T::Bucket(_) => return Err(format!(
            "`partition_by` {field}: the pinned Iceberg writer (iceberg-rust 0.10) cannot write bucket partitions: it derives a data file's partition value from the column's minimum and maximum, which only order-preserving transforms allow, and hashes values with another width than the Iceberg spec; partition by a column the model computes instead, e.g. `{c} % 16 AS {c}_bucket` and `-- partition_by: {c}_bucket`",
            c = crate::plan::ident::to_sql(name)
        )),
        T::Truncate(w) if integer => (Transform::Truncate(w), Some("trunc")),
        _ => return Err(partition_type_error(field, source)),
    };
    Ok((
        transform,
        suffix.map_or_else(|| name.clone(), |s| format!("{name}_{s}")),
    ))
}

fn partition_type_error(field: &super::PartitionField, source: &Type) -> String {
    format!(
        "`partition_by` {field} cannot partition a column of Iceberg type {source}: a bare column or identity() takes an integer (a bare DATE or TIMESTAMP column is partitioned by day); year() and day() take a DATE or TIMESTAMP (without time zone); hour() a TIMESTAMP; truncate(W, c) an integer. Cast the column in the model's SQL to a type the transform takes, e.g. `CAST({c} AS BIGINT) AS {c}` or `CAST({c} AS DATE) AS {c}`",
        c = crate::plan::ident::to_sql(&field.column)
    )
}

/// Rows in `files`, from their manifest entries' record counts.
fn record_count(files: &[iceberg_rust::spec::manifest::DataFile]) -> u64 {
    files
        .iter()
        .map(|f| (*f.record_count()).max(0) as u64)
        .sum()
}

fn sqlite_uri(path: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// `table` with its current schema standing in for its current snapshot's schema, when they
/// differ (a schema change committed through a REST catalog, [`Iceberg::set_schema`]).
///
/// iceberg-rust 0.10 reads a table, writes its data files and numbers a new snapshot's schema
/// with the current snapshot's schema, whatever the table's current schema is. The stand-in
/// is local (never committed): the schema map under the snapshot's schema id holds the current
/// schema, with the current schema's own id, so reads see the current schema as every other
/// Iceberg reader does, and the next snapshot is written with it and carries its id.
async fn as_current(table: Table) -> Result<Table> {
    let metadata = table.metadata();
    let snapshot_schema = metadata
        .current_snapshot(None)
        .ok()
        .flatten()
        .and_then(|s| *s.schema_id());
    let current = metadata.current_schema_id;
    let (Some(old), Some(schema)) = (snapshot_schema, metadata.schemas.get(&current)) else {
        return Ok(table);
    };
    if old == current {
        return Ok(table);
    }
    let mut metadata = metadata.clone();
    metadata.schemas.insert(old, schema.clone());
    Table::new(
        table.identifier().clone(),
        table.catalog(),
        table.object_store(),
        metadata,
    )
    .await
    .map_err(|e| catalog_error(&table.identifier().to_string(), e))
}

/// A DataFusion provider of `table`'s current snapshot (every row, no branch).
fn current(table: Table) -> Arc<dyn TableProvider> {
    exact(
        &table,
        Arc::new(DataFusionTable::new_table(table.clone(), None, None, None)),
    )
}

/// `provider` of `table`, without filter pushdown when a partition spec of the table (any of
/// them: older snapshots are read too) has a transform other than identity. datafusion_iceberg
/// 0.10 prunes such partitions by applying a strict comparison to the transformed value
/// (`ts > X` becomes `day(ts) > day(X)`), which skips the partition holding X and loses its
/// rows; DataFusion then filters every row itself.
fn exact(table: &Table, provider: Arc<dyn TableProvider>) -> Arc<dyn TableProvider> {
    let transformed = table.metadata().partition_specs.values().any(|spec| {
        spec.fields()
            .iter()
            .any(|f| *f.transform() != iceberg_rust::spec::partition::Transform::Identity)
    });
    if transformed {
        Arc::new(NoFilterPushdown(provider))
    } else {
        provider
    }
}

/// A provider that takes no filters: DataFusion filters its rows (see [`exact`]).
#[derive(Debug)]
struct NoFilterPushdown(Arc<dyn TableProvider>);

#[async_trait::async_trait]
impl TableProvider for NoFilterPushdown {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> datafusion::datasource::TableType {
        self.0.table_type()
    }

    async fn scan(
        &self,
        state: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        self.0.scan(state, projection, filters, limit).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<datafusion::logical_expr::TableProviderFilterPushDown>> {
        Ok(vec![
            datafusion::logical_expr::TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }
}

/// A commit that another writer won: retryable, nothing of it is visible.
fn lost(ident: &Identifier, why: &str) -> Error {
    Error::Storage {
        url: ident.to_string(),
        message: format!(
            "the Iceberg commit to `{ident}` did not take effect: {why}; nothing of this write is visible, retry the run"
        ),
        retryable: true,
    }
}

/// An Iceberg or catalog error: storage faults keep their classification; a catalog database
/// error is retryable (locked or unreachable database); the rest names the table.
fn catalog_error(what: &str, e: iceberg_rust::error::Error) -> Error {
    use iceberg_rust::error::Error as E;
    match e {
        E::ObjectStore(e) => match Url::parse(&format!("iceberg://{}", what.replace(' ', "_"))) {
            Ok(u) => crate::storage::store_error(&u, e),
            Err(_) => Error::ObjectStore(e),
        },
        E::Arrow(e) => Error::Arrow(e),
        E::Parquet(e) => Error::Parquet(e),
        E::IO(e) => Error::Io(e),
        E::External(e) => match e.downcast_ref::<iceberg_sql_catalog::error::Error>() {
            Some(iceberg_sql_catalog::error::Error::SqlError(sql)) => sql_catalog_error(what, sql),
            _ => Error::Storage {
                url: what.to_string(),
                message: format!("Iceberg catalog: {}", crate::storage::scrub(&e.to_string())),
                retryable: true,
            },
        },
        // iceberg-rest-catalog 0.10's answer when a table load failed without an HTTP answer
        // (the connection broke, or the answer could not be read).
        E::InvalidFormat(m) if m.starts_with("Entity returned from load_view") => Error::Storage {
            url: what.to_string(),
            message: "the REST catalog did not answer (the connection failed or its answer could \
                      not be read)"
                .into(),
            retryable: true,
        },
        other => {
            let message = crate::storage::scrub(&match &other {
                // The server's own answer, without the client's "doesn't have the right format".
                E::InvalidFormat(m) => m
                    .split_once("Response content: ")
                    .map_or(m.as_str(), |(_, content)| content)
                    .to_string(),
                E::NotFound(m) => m.clone(),
                o => o.to_string(),
            });
            match rest_status(&other) {
                Some(status) => Error::Storage {
                    url: what.to_string(),
                    message: match status {
                        401 => format!(
                            "the REST catalog refused Smelter's credentials (HTTP 401): check \
                             `format.iceberg.token_env` or `credential_env`; {message}"
                        ),
                        403 => format!(
                            "the REST catalog refused the request (HTTP 403): the principal of \
                             `format.iceberg.token_env` or `credential_env` lacks a grant, or a \
                             policy of the server forbids it; {message}"
                        ),
                        409 => format!(
                            "the REST catalog refused the commit (HTTP 409: another writer \
                             committed first); {message}"
                        ),
                        _ => format!("the REST catalog answered HTTP {status}: {message}"),
                    },
                    // A conflict, a timeout, throttling and server faults may pass on retry.
                    retryable: matches!(status, 408 | 409 | 429) || status >= 500,
                },
                None => Error::Storage {
                    url: what.to_string(),
                    message: format!("Iceberg: {message}"),
                    retryable: false,
                },
            }
        }
    }
}

/// An error of the SQL catalog's database (SQLite or Postgres through sqlx) as [`Error::Storage`]:
/// retryable (exit 75) when the database may answer on a later attempt (it cannot be reached,
/// the pool timed out, a serialization failure or deadlock, too many connections, a shutdown,
/// SQLSTATE classes 08, 40, 53, 57), a config error (exit 2) when it refuses what the pipeline
/// asks (no such database or role, a wrong password, a missing privilege: classes 28, 3D, 42;
/// a malformed URI). Class codes: PostgreSQL's "Appendix A. PostgreSQL Error Codes".
fn sql_catalog_error(what: &str, e: &sqlx::Error) -> Error {
    let hint = "the SQL catalog's database (`format.iceberg.uri_env`)";
    let (message, retryable) = match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let refused = ["28", "3D", "42"]
                .iter()
                .any(|class| code.starts_with(class));
            (
                format!(
                    "{hint} refused the request: {} (SQLSTATE {code})",
                    db.message()
                ),
                !refused,
            )
        }
        sqlx::Error::Configuration(c) => (format!("{hint} cannot be used: {c}"), false),
        sqlx::Error::PoolTimedOut => (
            format!("{hint} did not accept a connection within sqlx's pool timeout (30 s)"),
            true,
        ),
        other => (format!("{hint}: {other}"), true),
    };
    Error::Storage {
        url: what.to_string(),
        message: crate::storage::scrub(&message),
        retryable,
    }
}

/// Checks a PostgreSQL catalog database with one connection before the catalog's pool opens:
/// the pool would retry a refused connection or a failing table creation until its 30 s
/// timeout and then report only the timeout. A refusal is reported at once with its SQLSTATE
/// ([`sql_catalog_error`]); a user without `CREATE` on its current schema is a config error,
/// because the catalog runs `CREATE TABLE IF NOT EXISTS` for its two tables on every new
/// connection, which PostgreSQL checks against that privilege even when the tables exist.
async fn check_postgres(what: &str, uri: &str) -> Result<()> {
    use sqlx::Connection;
    let mut connection = sqlx::postgres::PgConnection::connect(uri)
        .await
        .map_err(|e| sql_catalog_error(what, &e))?;
    let (schema, may_create): (Option<String>, bool) = sqlx::query_as(
        "SELECT current_schema()::text, \
         COALESCE(has_schema_privilege(current_schema(), 'CREATE'), false)",
    )
    .fetch_one(&mut connection)
    .await
    .map_err(|e| sql_catalog_error(what, &e))?;
    let _ = connection.close().await;
    match (schema, may_create) {
        (Some(_), true) => Ok(()),
        (schema, _) => Err(Error::Storage {
            url: what.to_string(),
            message: match schema {
                Some(schema) => format!(
                    "the SQL catalog's database (`format.iceberg.uri_env`): its user may not \
                     create tables in schema `{schema}`, and the catalog creates its tables \
                     `iceberg_tables` and `iceberg_namespace_properties` there on every \
                     connection (`CREATE TABLE IF NOT EXISTS`); grant it (`GRANT CREATE ON \
                     SCHEMA {schema} TO <user>`) or use a database the user owns"
                ),
                None => "the SQL catalog's database (`format.iceberg.uri_env`): the user's \
                         `search_path` names no existing schema to hold the catalog's tables"
                    .to_string(),
            },
            retryable: false,
        }),
    }
}

/// The HTTP status of a REST catalog's error answer, if `e` is one: iceberg-rest-catalog 0.10
/// reports a 404 as `NotFound` and any other error status as `InvalidFormat("Response status:
/// <status>, …")`.
fn rest_status(e: &iceberg_rust::error::Error) -> Option<u16> {
    match e {
        iceberg_rust::error::Error::NotFound(_) => Some(404),
        iceberg_rust::error::Error::InvalidFormat(m) => m
            .strip_prefix("Response status: ")
            .and_then(|r| r.get(..3))
            .and_then(|code| code.parse().ok()),
        _ => None,
    }
}

/// Whether `e` is a REST catalog's `409 Conflict`: a commit whose requirement no longer held
/// (another writer committed first).
fn is_conflict(e: &iceberg_rust::error::Error) -> bool {
    rest_status(e) == Some(409)
}

/// What [`Iceberg`] needs to open a REST catalog, with its secrets read through `env(key,
/// variable)`; `Err` is the config problem, reported on first use.
fn rest_connect(
    uri: &Option<String>,
    uri_env: &Option<String>,
    warehouse: &Option<String>,
    prefix: &Option<String>,
    auth: &RestAuth,
    env: &dyn Fn(&str, &str) -> std::result::Result<String, String>,
) -> std::result::Result<Connect, String> {
    let uri = match (uri, uri_env) {
        (Some(u), _) => u.clone(),
        (None, Some(var)) => env("uri_env", var)?.trim_end_matches('/').to_string(),
        (None, None) => return Err("a REST catalog needs `format.iceberg.uri`".into()),
    };
    let (token, oauth2) = match auth {
        RestAuth::None => (None, None),
        RestAuth::Bearer { token_env } => {
            (Some(env("token_env", token_env)?.trim().to_string()), None)
        }
        RestAuth::OAuth2 {
            credential_env,
            server_uri,
            scope,
        } => {
            let credential = env("credential_env", credential_env)?.trim().to_string();
            let Some((id, secret)) = credential.split_once(':') else {
                return Err(format!(
                    "key `format.iceberg.credential_env`: the variable `{credential_env}` must \
                     hold `client_id:client_secret`"
                ));
            };
            let server_uri = server_uri
                .clone()
                .unwrap_or_else(|| format!("{uri}/v1/oauth/tokens"));
            let oauth2 = OAuth2ClientCredentials::new(
                server_uri,
                id.to_string(),
                secret.to_string(),
                None,
                Some(scope.clone()),
            );
            (None, Some(Arc::new(oauth2)))
        }
    };
    Ok(Connect::Rest {
        uri,
        warehouse: warehouse.clone(),
        prefix: prefix.clone(),
        token,
        oauth2,
    })
}

/// Opens a REST catalog: asks the server's `GET /v1/config` (with the warehouse, if any) for
/// the URL prefix, as the REST catalog spec requires of clients
/// (<https://iceberg.apache.org/rest-catalog-spec/>; the server's `overrides` win over the
/// configured `prefix`, which wins over the server's `defaults`, as in pyiceberg). Data
/// files are read and written through `builder` (the lake's object store), not through
/// credentials the server vends. Errors: the server is unreachable (retryable), refuses the
/// credentials or the warehouse (usage).
async fn rest_catalog(
    uri: &str,
    warehouse: Option<&str>,
    prefix: Option<&str>,
    token: &Option<String>,
    oauth2: &Option<Arc<OAuth2ClientCredentials>>,
    builder: ObjectStoreBuilder,
) -> Result<RestCatalog> {
    use iceberg_rest_catalog::configuration_rewriter::ConfigurationRewriter;
    let mut configuration = RestConfiguration {
        base_path: uri.to_string(),
        user_agent: Some(format!("smelter/{}", env!("CARGO_PKG_VERSION"))),
        client: reqwest::Client::new(),
        basic_auth: None,
        oauth_access_token: None,
        bearer_access_token: token.clone(),
        api_key: None,
        aws_v4_key: None,
    };
    let what = format!("the REST catalog at {uri}");
    let rewriter = oauth2.clone().map(|o| o as Arc<dyn ConfigurationRewriter>);
    let authenticated = match &rewriter {
        Some(r) => match r.rewrite_configuration(configuration.clone()).await {
            Ok(c) => c,
            Err(e) => {
                let credentials = oauth2.as_deref().expect("a rewriter is OAuth2's");
                return Err(token_error(&what, credentials, e).await);
            }
        },
        None => configuration.clone(),
    };
    let config =
        iceberg_rest_catalog::apis::configuration_api_api::get_config(&authenticated, warehouse)
            .await
            .map_err(|e| catalog_error(&what, e.into()))?;
    let prefix = config
        .overrides
        .get("prefix")
        .map(String::as_str)
        .or(prefix)
        .or_else(|| config.defaults.get("prefix").map(String::as_str));
    if let Some(base) = config.overrides.get("uri") {
        configuration.base_path = base.trim_end_matches('/').to_string();
    }
    let catalog = RestCatalog::new(prefix, configuration, rewriter, Some(builder), true);
    // One authenticated read checks the prefix (or warehouse) and the credentials before any
    // table is touched: a wrong prefix would otherwise read as tables that do not exist yet.
    if let Err(e) = catalog.list_namespaces(None).await {
        return Err(match rest_status(&e) {
            Some(404) => Error::Usage(format!(
                "the REST catalog at {uri} has no catalog at prefix `{}` (HTTP 404): check \
                 `format.iceberg.prefix` and `warehouse`; {}",
                prefix.unwrap_or_default(),
                crate::storage::scrub(&match &e {
                    iceberg_rust::error::Error::NotFound(m) => m.clone(),
                    o => o.to_string(),
                })
            )),
            _ => catalog_error(&what, e),
        });
    }
    Ok(catalog)
}

/// The error of an OAuth2 token request to `credentials.server_uri`. A refusal (HTTP 400, 401,
/// 403) is a usage error naming the setting at fault, read from the server's OAuth2 error code
/// (RFC 6749 §5.2: `invalid_client`/`unauthorized_client` → `credential_env`, `invalid_scope` →
/// `scope`, `unsupported_grant_type` → the server does not do client credentials), which the
/// client library drops, so the refused request is sent once more to read it; a missing token
/// endpoint (HTTP 404) names `oauth2_server_uri`; anything else (unreachable, server fault) is
/// retryable.
async fn token_error(
    what: &str,
    credentials: &OAuth2ClientCredentials,
    e: iceberg_rust::error::Error,
) -> Error {
    let endpoint = &credentials.server_uri;
    let reqwest_error = match &e {
        iceberg_rust::error::Error::External(inner) => inner.downcast_ref::<reqwest::Error>(),
        _ => None,
    };
    let status = reqwest_error
        .and_then(reqwest::Error::status)
        .map(|s| s.as_u16());
    match (status, reqwest_error) {
        (Some(404), _) => Error::Usage(format!(
            "{what}: the OAuth2 token endpoint {endpoint} was not found (HTTP 404): set \
             `format.iceberg.oauth2_server_uri`"
        )),
        (Some(s @ (400 | 401 | 403)), _) => {
            let (code, description) = oauth2_refusal(credentials).await;
            let setting = match code.as_str() {
                "invalid_scope" => "the scope asked for (`format.iceberg.scope`) is not granted",
                "unsupported_grant_type" => {
                    "the server does not grant tokens for client credentials"
                }
                _ => "it refused the client credentials of `format.iceberg.credential_env`",
            };
            let detail = match (code.is_empty(), description.is_empty()) {
                (true, _) => String::new(),
                (false, true) => format!(": {code}"),
                (false, false) => format!(": {code}: {description}"),
            };
            Error::Usage(crate::storage::scrub(&format!(
                "{what}: the OAuth2 token endpoint {endpoint} answered HTTP {s}{detail}; {setting}"
            )))
        }
        (None, Some(request)) => Error::Storage {
            url: what.to_string(),
            message: crate::storage::scrub(&format!(
                "the OAuth2 token endpoint {endpoint} could not be reached: {}",
                std::error::Error::source(request)
                    .map_or_else(|| request.to_string(), |c| c.to_string())
            )),
            retryable: true,
        },
        _ => catalog_error(what, e),
    }
}

/// The OAuth2 error code and description (RFC 6749 §5.2) with which the token endpoint refuses
/// `credentials`, asked once more (at most 10 s); empty strings when its answer has none.
async fn oauth2_refusal(credentials: &OAuth2ClientCredentials) -> (String, String) {
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_id", credentials.client_id.as_str()),
        ("client_secret", credentials.client_secret.as_str()),
    ];
    if let Some(scope) = &credentials.scope {
        form.push(("scope", scope));
    }
    let answer = async {
        let response = reqwest::Client::new()
            .post(&credentials.server_uri)
            .form(&form)
            .send()
            .await
            .ok()?;
        serde_json::from_str::<serde_json::Value>(&response.text().await.ok()?).ok()
    };
    let body = tokio::time::timeout(std::time::Duration::from_secs(10), answer)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let field = |k: &str| {
        body.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    (field("error"), field("error_description"))
}

impl From<iceberg_rust::error::Error> for Error {
    fn from(e: iceberg_rust::error::Error) -> Self {
        catalog_error("the Iceberg table", e)
    }
}

fn string_column(b: &RecordBatch, i: usize) -> Result<Vec<Option<String>>> {
    let a = arrow::compute::cast(b.column(i), &DataType::Utf8)?;
    let a = a
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .ok_or_else(|| Error::Internal("string column expected".into()))?;
    Ok(a.iter().map(|v| v.map(str::to_string)).collect())
}

fn int_at(b: &RecordBatch, i: usize) -> u64 {
    arrow::compute::cast(b.column(i), &DataType::Int64)
        .ok()
        .and_then(|a| {
            a.as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .filter(|a| !a.is_empty() && a.is_valid(0))
                .map(|a| a.value(0).max(0) as u64)
        })
        .unwrap_or(0)
}

/// `batch` with the types and field metadata (Parquet field ids) of `target`.
fn conform(
    batch: &RecordBatch,
    target: &SchemaRef,
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .zip(target.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<std::result::Result<_, _>>()?;
    RecordBatch::try_new(target.clone(), columns)
}

/// What makes two schemas the same for Smelter: each field's id, name, optionality and type,
/// in order (a schema read back from metadata JSON differs from the one built in memory in
/// details that do not matter, such as its field lookup).
fn shape(s: &StructType) -> Vec<(i32, String, bool, String)> {
    s.iter()
        .map(|f| {
            (
                f.id,
                f.name.clone(),
                f.required,
                format!("{:?}", f.field_type),
            )
        })
        .collect()
}

fn max_field_id(s: &StructType) -> i32 {
    fn of(t: &Type) -> i32 {
        match t {
            Type::Struct(s) => max_field_id(s),
            Type::List(l) => l.element_id.max(of(&l.element)),
            Type::Map(m) => m.key_id.max(m.value_id).max(of(&m.key)).max(of(&m.value)),
            Type::Primitive(_) => 0,
        }
    }
    s.iter()
        .map(|f| f.id.max(of(&f.field_type)))
        .max()
        .unwrap_or(0)
}

/// The Iceberg field for Arrow field `f`, keeping `prior`'s ids (same name) and numbering new
/// ones from `next`.
fn to_field(
    f: &Field,
    prior: Option<&StructField>,
    next: &mut i32,
) -> std::result::Result<StructField, UnstorableColumn> {
    let id = match prior {
        Some(p) => p.id,
        None => {
            *next += 1;
            *next
        }
    };
    let field_type = to_type(f.name(), f.data_type(), prior.map(|p| &p.field_type), next)?;
    Ok(StructField {
        id,
        name: f.name().clone(),
        required: !f.is_nullable(),
        field_type,
        doc: None,
    })
}

/// The Iceberg type Smelter stores an Arrow type as (see [`unstorable`] for the refusals).
fn to_type(
    path: &str,
    dt: &DataType,
    prior: Option<&Type>,
    next: &mut i32,
) -> std::result::Result<Type, UnstorableColumn> {
    use PrimitiveType as P;
    let p = |t: P| Ok(Type::Primitive(t));
    match dt {
        DataType::Boolean => p(P::Boolean),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            p(P::Int)
        }
        DataType::Int64 | DataType::UInt32 => p(P::Long),
        DataType::Float16 | DataType::Float32 => p(P::Float),
        DataType::Float64 => p(P::Double),
        DataType::Decimal32(pr, s)
        | DataType::Decimal64(pr, s)
        | DataType::Decimal128(pr, s)
        | DataType::Decimal256(pr, s)
            if *pr <= 38 && *s >= 0 && (*s as u8) <= *pr =>
        {
            p(P::Decimal {
                precision: *pr as u32,
                scale: *s as u32,
            })
        }
        DataType::Date32 | DataType::Date64 => p(P::Date),
        DataType::Time32(_) | DataType::Time64(_) => p(P::Time),
        DataType::Timestamp(_, None) => p(P::Timestamp),
        DataType::Timestamp(_, Some(_)) => p(P::Timestamptz),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => p(P::String),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => p(P::Binary),
        DataType::FixedSizeBinary(n) => p(P::Fixed(*n as u64)),
        DataType::Dictionary(_, v) => to_type(path, v, prior, next),
        DataType::Struct(fields) => {
            let old = match prior {
                Some(Type::Struct(s)) => Some(s),
                _ => None,
            };
            let fields = fields
                .iter()
                .map(|c| {
                    let nested = Field::new(
                        format!("{path}.{}", c.name()),
                        c.data_type().clone(),
                        c.is_nullable(),
                    );
                    to_field(&nested, old.and_then(|o| o.get_name(c.name())), next).map(|mut sf| {
                        sf.name = c.name().clone();
                        sf
                    })
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(Type::Struct(StructType::new(fields)))
        }
        DataType::List(e) | DataType::LargeList(e) => {
            let old = match prior {
                Some(Type::List(l)) => Some(l),
                _ => None,
            };
            let element_id = match old {
                Some(l) => l.element_id,
                None => {
                    *next += 1;
                    *next
                }
            };
            let element = to_type(
                &format!("{path}[]"),
                e.data_type(),
                old.map(|l| &*l.element),
                next,
            )?;
            Ok(Type::List(ListType {
                element_id,
                element_required: !e.is_nullable(),
                element: Box::new(element),
            }))
        }
        other => Err(refusal(path, other)),
    }
}

/// Why Iceberg (as Smelter writes it) cannot store `dt`, and the SQL that fixes it.
fn refusal(path: &str, dt: &DataType) -> UnstorableColumn {
    let (reason, hint) = match dt {
        DataType::UInt64 => (
            "Iceberg has no unsigned 64-bit integer".to_string(),
            "store `CAST(<expr> AS DECIMAL(20, 0))` or `CAST(<expr> AS BIGINT)`".to_string(),
        ),
        DataType::Duration(_) | DataType::Interval(_) => (
            "Iceberg has no duration or interval type".into(),
            "store a number instead, e.g. `EXTRACT(EPOCH FROM <expr>)` (seconds, DOUBLE)".into(),
        ),
        DataType::Null => (
            "an untyped NULL has no Iceberg type".into(),
            "give it a type, e.g. `CAST(NULL AS VARCHAR)`".into(),
        ),
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => (
            "Iceberg stores DECIMAL(p, s) with p <= 38 and 0 <= s <= p".into(),
            super::decimal_hint(*p, *s),
        ),
        DataType::Map(_, _) => (
            "Smelter does not write Iceberg maps yet".into(),
            "store `to_json(<expr>)`-style text, or an array of structs".into(),
        ),
        _ => (
            format!("Iceberg has no type for {dt}"),
            "cast it to a type Iceberg stores (BOOLEAN, INT, BIGINT, FLOAT, DOUBLE, DECIMAL(p,s) with p <= 38, VARCHAR, BYTEA, DATE, TIME, TIMESTAMP, or structs and arrays of them)".into(),
        ),
    };
    UnstorableColumn {
        column: path.to_string(),
        data_type: dt.clone(),
        reason,
        hint,
    }
}

/// The object-store path of an Iceberg location (`/abs/path` on a local lake,
/// `s3://bucket/key` on S3).
fn object_path(location: &str) -> object_store::path::Path {
    let key = match location.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, k)| k),
        None => location,
    };
    object_store::path::Path::from(key)
}

/// Deletes the data files and manifests under `table`'s location that no retained snapshot
/// references and that were last modified before `cutoff_ms` (a writer's files not yet
/// committed are younger). Metadata JSON files are kept. Returns how many were deleted.
async fn remove_orphans(table: &Table, cutoff_ms: i64) -> Result<u64> {
    let mut keep: BTreeSet<object_store::path::Path> = BTreeSet::new();
    let m = table.metadata();
    for snapshot in m.snapshots.values() {
        keep.insert(object_path(snapshot.manifest_list()));
        let manifests = table.manifests(None, Some(*snapshot.snapshot_id())).await?;
        for manifest in &manifests {
            keep.insert(object_path(&manifest.manifest_path));
        }
        for entry in table.datafiles(&manifests, None, (None, None)).await? {
            let (_, entry) = entry?;
            keep.insert(object_path(entry.data_file().file_path()));
        }
    }
    let store = table.object_store();
    let root = object_path(&m.location);
    let mut deleted = 0;
    let mut listing = store.list(Some(&root));
    let mut doomed = Vec::new();
    while let Some(meta) = listing.next().await {
        let meta = meta?;
        let name = meta.location.filename().unwrap_or_default();
        let is_metadata_json = name.ends_with(".metadata.json") || name == "version-hint.text";
        if is_metadata_json
            || keep.contains(&meta.location)
            || meta.last_modified.timestamp_millis() >= cutoff_ms
        {
            continue;
        }
        doomed.push(meta.location);
    }
    for path in doomed {
        object_store::ObjectStoreExt::delete(store.as_ref(), &path).await?;
        deleted += 1;
    }
    Ok(deleted)
}

/// The transaction ids committed to `table` (oldest first).
fn txns(table: &Table) -> Vec<TxnEntry> {
    table
        .metadata()
        .properties
        .get(TXNS_PROPERTY)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

/// Table properties to set with a commit: the transaction id list with `entry` added, and the
/// commit metadata under `smelter.last_commit`.
fn txn_properties(
    table: &Table,
    req: &WriteRequest<'_>,
    entry: &TxnEntry,
) -> Vec<(String, String)> {
    let mut props = Vec::new();
    if let Some(id) = &req.txn_id {
        let mut list = txns(table);
        list.retain(|t| &t.id != id);
        let mut e = entry.clone();
        e.id = id.clone();
        e.timestamp_ms = chrono::Utc::now().timestamp_millis();
        e.attempt = req
            .metadata
            .iter()
            .find(|(k, _)| k == "attempt")
            .map(|(_, v)| v.clone());
        list.push(e);
        let skip = list.len().saturating_sub(TXN_HISTORY);
        let list: Vec<_> = list.into_iter().skip(skip).collect();
        props.push((
            TXNS_PROPERTY.to_string(),
            serde_json::to_string(&list).unwrap_or_else(|_| "[]".into()),
        ));
    }
    let meta: serde_json::Map<String, serde_json::Value> = req
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    props.push((
        "smelter.last_commit".to_string(),
        serde_json::Value::Object(meta).to_string(),
    ));
    props
}

/// Version (the last sequence number), files, size and rows of `table`'s current snapshot;
/// `None` before its first snapshot. Reads the snapshot's manifests.
async fn table_stats(table: &Table) -> Result<Option<TableStats>> {
    if table.metadata().current_snapshot_id.is_none() {
        return Ok(None);
    }
    let manifests = table.manifests(None, None).await?;
    let files = table.datafiles(&manifests, None, (None, None)).await?;
    let mut stats = TableStats {
        version: table.metadata().last_sequence_number,
        rows: Some(0),
        ..Default::default()
    };
    for f in files {
        let (_, entry) = f?;
        if *entry.status() == iceberg_rust::spec::manifest::Status::Deleted {
            continue;
        }
        let d = entry.data_file();
        stats.files += 1;
        stats.size_bytes += (*d.file_size_in_bytes()).max(0) as u64;
        stats.rows = stats.rows.map(|r| r + (*d.record_count()).max(0) as u64);
    }
    Ok(Some(stats))
}

#[async_trait::async_trait]
impl TableFormat for Iceberg {
    fn for_table(&self, _url: &Url) -> &dyn TableFormat {
        self
    }

    fn name(&self) -> &'static str {
        "iceberg"
    }

    async fn provider(
        &self,
        ctx: &SessionContext,
        url: &Url,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        if self.is_state(url) {
            return self.delta.provider(ctx, url).await;
        }
        let (ident, _) = self.ident(url)?;
        match self.load(&ident).await? {
            Some(t) if t.metadata().current_snapshot_id.is_some() => Ok(Some(current(t))),
            _ => Ok(None),
        }
    }

    async fn snapshot_files(
        &self,
        ctx: &SessionContext,
        url: &Url,
    ) -> Result<Option<super::SnapshotFiles>> {
        if self.is_state(url) {
            return self.delta.snapshot_files(ctx, url).await;
        }
        let (ident, _) = self.ident(url)?;
        let Some(table) = self.load(&ident).await? else {
            return Ok(None);
        };
        if table.metadata().current_snapshot_id.is_none() {
            return Ok(None);
        }
        let manifests = table.manifests(None, None).await?;
        let mut files = Vec::new();
        for entry in table.datafiles(&manifests, None, (None, None)).await? {
            let (_, entry) = entry?;
            if *entry.status() == iceberg_rust::spec::manifest::Status::Deleted {
                continue;
            }
            let d = entry.data_file();
            if *d.content() != iceberg_rust::spec::manifest::Content::Data {
                return Err(Error::Usage(format!(
                    "{}: the Iceberg table has delete files, which a plain Parquet scan on the cluster would ignore; run this model with `[engine] mode = \"local\"`",
                    crate::storage::redact(url)
                )));
            }
            files.push(super::file_url(d.file_path())?);
        }
        let version = table.metadata().last_sequence_number;
        let schema = current(table).schema();
        Ok(Some(super::SnapshotFiles {
            schema,
            files,
            version,
        }))
    }

    async fn stats(&self, url: &Url) -> Result<Option<TableStats>> {
        if self.is_state(url) {
            return self.delta.stats(url).await;
        }
        let (ident, _) = self.ident(url)?;
        match self.load(&ident).await? {
            Some(t) => table_stats(&t).await,
            None => Ok(None),
        }
    }

    async fn committed(&self, url: &Url, txn_id: &str) -> Result<bool> {
        if self.is_state(url) {
            return self.delta.committed(url, txn_id).await;
        }
        let (ident, _) = self.ident(url)?;
        Ok(match self.load(&ident).await? {
            Some(t) => txns(&t).iter().any(|e| e.id == txn_id),
            None => false,
        })
    }

    async fn alter_columns(
        &self,
        ctx: &SessionContext,
        url: &Url,
        columns: &[ColumnAlter],
    ) -> Result<()> {
        if self.is_state(url) {
            return self.delta.alter_columns(ctx, url, columns).await;
        }
        let (ident, _) = self.ident(url)?;
        let Some(table) = self.load(&ident).await? else {
            return Ok(());
        };
        if columns.is_empty() || table.metadata().current_snapshot_id.is_none() {
            return Ok(());
        }
        // Rewrite copy-on-write: read every row, cast, replace. The schema commit comes first
        // (see `set_schema`), then the data commit.
        let df = ctx.read_table(current(table.clone()))?;
        let exprs: Vec<Expr> = df
            .schema()
            .fields()
            .iter()
            .map(|f| {
                let c = Expr::Column(Column::new_unqualified(f.name()));
                match columns.iter().find(|a| &a.name == f.name()) {
                    Some(a) if &a.data_type != f.data_type() => {
                        cast(c, a.data_type.clone()).alias(f.name())
                    }
                    _ => c,
                }
            })
            .collect();
        let df = df.select(exprs)?;
        let fields: Vec<Field> = df
            .schema()
            .fields()
            .iter()
            .map(|f| {
                let nullable =
                    f.is_nullable() || columns.iter().any(|a| &a.name == f.name() && a.nullable);
                f.as_ref().clone().with_nullable(nullable)
            })
            .collect();
        let arrow = Schema::new(Fields::from(fields));
        let staged = crate::engine::stage(ctx, df).await?;
        let schema = self.schema_for(Some(&table), &arrow, false)?;
        let table = self.set_schema(table, schema).await?;
        let files = self.write_files(&table, staged.df.clone()).await?;
        self.replace_all(ctx, url, table, files, "alter_columns")
            .await?;
        Ok(())
    }

    async fn provider_as_of(
        &self,
        ctx: &SessionContext,
        url: &Url,
        as_of: &AsOf,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        if self.is_state(url) {
            return self.delta.provider_as_of(ctx, url, as_of).await;
        }
        let (ident, _) = self.ident(url)?;
        let Some(table) = self.load(&ident).await? else {
            return Ok(None);
        };
        let m = table.metadata();
        let mut snapshots: Vec<_> = m.snapshots.values().collect();
        snapshots.sort_by_key(|s| *s.sequence_number());
        let found = match as_of {
            AsOf::Version(v) => snapshots.iter().find(|s| s.sequence_number() == v),
            AsOf::Timestamp(t) => snapshots
                .iter()
                .rev()
                .find(|s| *s.timestamp_ms() <= t.timestamp_millis()),
        };
        let Some(snapshot) = found else {
            let versions: Vec<String> = snapshots
                .iter()
                .map(|s| {
                    format!(
                        "{} ({})",
                        s.sequence_number(),
                        chrono::DateTime::from_timestamp_millis(*s.timestamp_ms())
                            .map(|t| t.to_rfc3339())
                            .unwrap_or_default()
                    )
                })
                .collect();
            return Err(Error::Usage(format!(
                "`{ident}` has no snapshot for {as_of}; the retained versions are: {}",
                if versions.is_empty() {
                    "none".to_string()
                } else {
                    versions.join(", ")
                }
            )));
        };
        let id = *snapshot.snapshot_id();
        Ok(Some(exact(
            &table,
            Arc::new(DataFusionTable::new_table(
                table.clone(),
                None,
                Some(id),
                None,
            )),
        )))
    }

    async fn maintain(
        &self,
        ctx: &SessionContext,
        url: &Url,
        options: &MaintainOptions,
    ) -> Result<Option<MaintainReport>> {
        if self.is_state(url) {
            return self.delta.maintain(ctx, url, options).await;
        }
        let (ident, _) = self.ident(url)?;
        let Some(table) = self.load(&ident).await? else {
            return Ok(None);
        };
        self.owned(&table)?;
        let Some(before) = table_stats(&table).await? else {
            return Ok(None);
        };
        // Compaction: more than one data file is rewritten into as few as the writer makes, in
        // one `replace` snapshot (the rows are read from the current snapshot). A rewrite that
        // would not reduce the file count (a partitioned table already holding about one file
        // per partition) is deleted instead of committed.
        let table = if before.files > 1 {
            let df = ctx.read_table(current(table.clone()))?;
            let files = self.write_files(&table, df).await?;
            if files.len() as u64 >= before.files {
                tracing::info!(table = %ident, files = before.files, "Compaction skipped: rewriting the table would not reduce its file count (a partitioned table holds a file per partition).");
                let store = table.object_store();
                for f in &files {
                    let _ = object_store::ObjectStoreExt::delete(
                        store.as_ref(),
                        &object_path(f.file_path()),
                    )
                    .await;
                }
                table
            } else {
                self.replace_all(ctx, url, table, files, "maintain").await?
            }
        } else {
            table
        };
        let after = table_stats(&table).await?.unwrap_or_default();
        // Expiry: snapshots older than the retention, never the current one.
        let cutoff = chrono::Utc::now().timestamp_millis()
            - i64::try_from(options.retention.as_millis()).unwrap_or(i64::MAX);
        let snapshots_before = table.metadata().snapshots.len();
        let mut table = table;
        match table
            .new_transaction(None)
            .expire_snapshots(Some(cutoff), Some(1), false, true, false)
            .commit()
            .await
        {
            Ok(()) => {}
            // A REST server whose policy keeps snapshots (it expires them itself): the
            // compaction above stands, and the refusal is reported.
            Err(e) if rest_status(&e) == Some(403) => {
                tracing::warn!(table = %ident, error = %catalog_error(&ident.to_string(), e), "The catalog refused snapshot expiry; no snapshot expired.");
            }
            Err(e) => return Err(catalog_error(&ident.to_string(), e)),
        }
        let table = self.reload(&ident).await?;
        let expired = snapshots_before.saturating_sub(table.metadata().snapshots.len()) as u64;
        let deleted = remove_orphans(&table, cutoff).await?;
        Ok(Some(MaintainReport {
            files_before: before.files,
            files_after: after.files,
            versions_expired: expired,
            files_deleted: deleted,
            version: table.metadata().last_sequence_number,
        }))
    }

    fn check(&self) -> Result<()> {
        match [
            self.location_root.as_ref().err(),
            self.builder.as_ref().err(),
            self.connect.as_ref().err(),
        ]
        .into_iter()
        .flatten()
        .next()
        {
            Some(problem) => Err(self.config_error(problem.clone())),
            None => Ok(()),
        }
    }

    async fn provider_with_version(
        &self,
        ctx: &SessionContext,
        url: &Url,
    ) -> Result<Option<(Arc<dyn TableProvider>, i64)>> {
        if self.is_state(url) {
            return self.delta.provider_with_version(ctx, url).await;
        }
        let (ident, _) = self.ident(url)?;
        match self.load(&ident).await? {
            Some(t) if t.metadata().current_snapshot_id.is_some() => {
                let version = t.metadata().last_sequence_number;
                Ok(Some((current(t), version)))
            }
            _ => Ok(None),
        }
    }

    fn partition_problems(
        &self,
        partition_by: &[super::PartitionField],
        schema: &Schema,
    ) -> Vec<String> {
        partition_by
            .iter()
            .filter_map(|p| {
                let field = schema.field_with_name(&p.column).ok()?;
                let ty = to_type(p.column.as_str(), field.data_type(), None, &mut 0).ok()?;
                partition_transform(p, &ty).err()
            })
            .chain(duplicate_source(partition_by))
            .collect()
    }

    fn unstorable_columns(&self, schema: &Schema) -> Vec<UnstorableColumn> {
        let mut next = 0;
        schema
            .fields()
            .iter()
            .filter_map(|f| to_type(f.name(), f.data_type(), None, &mut next).err())
            .collect()
    }

    async fn write(&self, req: WriteRequest<'_>) -> Result<WriteMetrics> {
        if self.is_state(req.url) {
            return self.delta.write(req).await;
        }
        let (ident, _) = self.ident(req.url)?;
        let existing = self.load(&ident).await?;
        if let Some(t) = &existing {
            self.owned(t)?;
        }
        let created = existing.is_none();
        let result = self.write_version(req, existing).await;
        if result.is_err() && created {
            self.unregister_if_empty(&ident).await;
        }
        result
    }
}

impl Iceberg {
    /// Refuses a table another pipeline writes ([`PIPELINE_PROPERTY`]): two pipelines that share
    /// a catalog share its `bronze`, `silver` and `gold` names. Checked before every commit
    /// (data, schema, partition spec, maintenance), so another pipeline's table is never
    /// changed or taken over.
    fn owned(&self, table: &Table) -> Result<()> {
        match table.metadata().properties.get(PIPELINE_PROPERTY) {
            Some(owner) if *owner != self.pipeline => Err(Error::Usage(format!(
                "the Iceberg table `{}` in the catalog was written by pipeline `{owner}` (table property `{PIPELINE_PROPERTY}`), not by `{}`: two pipelines share the catalog's `bronze`, `silver` and `gold` names; give each pipeline its own catalog (`format.iceberg` prefix or warehouse, or SQL catalog)",
                table.identifier(),
                self.pipeline
            ))),
            _ => Ok(()),
        }
    }

    /// Unregisters the table `ident` when it has no snapshot: a write that created it and then
    /// failed leaves no table behind for readers to find (its first metadata file and any data
    /// files it wrote stay under the location, unreferenced; the next creation writes new
    /// ones). A table
    /// another writer has committed to meanwhile is kept; catalog errors are ignored (the write's
    /// own error is the one reported).
    async fn unregister_if_empty(&self, ident: &Identifier) {
        let Ok(Some(table)) = self.load(ident).await else {
            return;
        };
        if table.metadata().current_snapshot_id.is_some() {
            return;
        }
        if let Ok(catalog) = self.catalog().await {
            if let Err(e) = catalog.drop_table(ident).await {
                tracing::warn!(table = %ident, error = %e, "Could not unregister the empty table a failed write created.");
            }
        }
    }

    /// [`TableFormat::write`] of a table that is not run state, given the table as loaded
    /// before the write (`None`: not registered yet, the write creates it).
    async fn write_version(
        &self,
        mut req: WriteRequest<'_>,
        existing: Option<Table>,
    ) -> Result<WriteMetrics> {
        let (ident, location) = self.ident(req.url)?;
        req.input = super::partition_values::refuse(
            req.input,
            &req.partition_by,
            super::partition_values::Format::Iceberg,
        )?;
        let has_snapshot = existing
            .as_ref()
            .is_some_and(|t| t.metadata().current_snapshot_id.is_some());
        if let (Some(id), true, Some(t)) =
            (&req.txn_id, req.mode != WriteMode::Overwrite, &existing)
        {
            if let Some(e) = txns(t).into_iter().find(|e| &e.id == id) {
                return Ok(earlier(e));
            }
        }
        // An input computed from an older version of the table is never committed: the commit
        // below is conditional on the metadata loaded here, so pinning that metadata to the
        // version read is enough.
        if let Some(read) = req.read_version {
            let now = existing
                .as_ref()
                .filter(|_| has_snapshot)
                .map_or(-1, |t| t.metadata().last_sequence_number);
            if now != read {
                return Err(lost(
                    &ident,
                    &format!("it was computed from version {read}, and another writer committed version {now} since"),
                ));
            }
        }
        // A merge into a table without a snapshot is a plain write of its upserts (below).
        if !has_snapshot {
            req.input = super::upserts_only(req.input, &req.mode)?;
        }
        let observed = match req.observer.take() {
            Some(observer) if !matches!(req.mode, WriteMode::Merge { .. }) || !has_snapshot => {
                req.input = crate::engine::observe::observe(req.input, observer);
                true
            }
            _ => false,
        };
        let mode = req.mode.clone();
        let (table, kind, entry) = match (&mode, existing) {
            (
                WriteMode::Merge {
                    keys,
                    sequence_by,
                    delete,
                },
                Some(t),
            ) if has_snapshot => {
                let input_schema = req.input.schema().as_arrow().clone();
                let without_flag = Schema::new(
                    input_schema
                        .fields()
                        .iter()
                        .filter(|f| Some(f.name()) != delete.as_ref())
                        .cloned()
                        .collect::<Vec<_>>(),
                );
                let t = self
                    .prepare(
                        &ident,
                        location.as_deref(),
                        Some(t),
                        &without_flag,
                        true,
                        &req.partition_by,
                    )
                    .await?;
                self.merge(&req, t, keys, sequence_by, delete.as_ref())
                    .await?
            }
            (mode, existing) => {
                let overwrite = *mode == WriteMode::Overwrite;
                let arrow = req.input.schema().as_arrow().clone();
                let t = self
                    .prepare(
                        &ident,
                        location.as_deref(),
                        existing,
                        &arrow,
                        !overwrite,
                        &req.partition_by,
                    )
                    .await?;
                let files = self.write_files(&t, req.input.clone()).await?;
                let entry = TxnEntry {
                    rows_inserted: record_count(&files),
                    files_added: files.len() as u64,
                    ..Default::default()
                };
                let kind = if overwrite {
                    CommitKind::Replace(files)
                } else if files.is_empty() {
                    CommitKind::Properties
                } else {
                    CommitKind::Append(files)
                };
                (t, kind, entry)
            }
        };
        let kind = match kind {
            CommitKind::Append(f) if f.is_empty() => CommitKind::Properties,
            k => k,
        };
        let (table, theirs) = self.commit(table, kind, &req, entry.clone()).await?;
        if let Some(e) = theirs {
            return Ok(earlier(e));
        }
        Ok(WriteMetrics {
            rows_inserted: entry.rows_inserted,
            rows_updated: entry.rows_updated,
            rows_deleted: entry.rows_deleted,
            files_added: entry.files_added,
            version: table.metadata().last_sequence_number,
            skipped: false,
            earlier_commit: None,
            stats: table_stats(&table).await?,
            observed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_catalog_answers_are_classified_by_status() {
        use iceberg_rust::error::Error as E;
        let answer = |status: &str| {
            E::InvalidFormat(format!(
                "Response status: {status}, Response content: {{\"error\":{{}}}}"
            ))
        };
        assert_eq!(rest_status(&answer("409 Conflict")), Some(409));
        assert!(is_conflict(&answer("409 Conflict")));
        assert!(!is_conflict(&answer("404 Not Found")));
        assert_eq!(rest_status(&E::NotFound("t".into())), Some(404));
        assert_eq!(rest_status(&E::InvalidFormat("bad JSON".into())), None);
        let kind = |e: E| catalog_error("gold.t", e).kind();
        assert_eq!(kind(answer("401 Unauthorized")), crate::error::Kind::Usage);
        assert_eq!(
            kind(answer("503 Service Unavailable")),
            crate::error::Kind::Transient
        );
        assert_eq!(
            kind(answer("429 Too Many Requests")),
            crate::error::Kind::Transient
        );
        assert_eq!(kind(answer("400 Bad Request")), crate::error::Kind::Usage);
        let refused = catalog_error("gold.t", answer("403 Forbidden")).to_string();
        assert!(refused.contains("token_env"), "{refused}");
    }

    #[test]
    fn a_rest_catalog_reads_its_secrets_from_the_environment_and_shows_none() {
        let env = |_: &str, var: &str| match var {
            "TOKEN" => Ok("tok-secret".to_string()),
            "CRED" => Ok("client:cred-secret".to_string()),
            "BAD" => Ok("no-colon".to_string()),
            other => Err(format!("`{other}` is not set")),
        };
        let uri = Some("http://127.0.0.1:1".to_string());
        let bearer = RestAuth::Bearer {
            token_env: "TOKEN".into(),
        };
        let c = rest_connect(&uri, &None, &None, &None, &bearer, &env).unwrap();
        assert!(matches!(&c, Connect::Rest { token: Some(t), .. } if t == "tok-secret"));
        assert_eq!(format!("{c:?}"), "Rest");
        let oauth = |var: &str| RestAuth::OAuth2 {
            credential_env: var.into(),
            server_uri: None,
            scope: "catalog".into(),
        };
        let c = rest_connect(&uri, &None, &None, &None, &oauth("CRED"), &env).unwrap();
        match &c {
            Connect::Rest {
                oauth2: Some(o), ..
            } => {
                assert_eq!(o.client_id, "client");
                assert_eq!(o.server_uri, "http://127.0.0.1:1/v1/oauth/tokens");
            }
            other => panic!("{other:?}"),
        }
        let bad = rest_connect(&uri, &None, &None, &None, &oauth("BAD"), &env).unwrap_err();
        assert!(
            bad.contains("client_id:client_secret") && !bad.contains("no-colon"),
            "{bad}"
        );
        let unset = rest_connect(&None, &Some("URI".into()), &None, &None, &bearer, &env);
        assert!(unset.unwrap_err().contains("`URI`"));
    }

    #[test]
    fn locations_map_to_object_store_paths() {
        assert_eq!(
            object_path("/tmp/lake/silver/t/data/x.parquet").as_ref(),
            "tmp/lake/silver/t/data/x.parquet"
        );
        assert_eq!(
            object_path("s3://bucket/prefix/silver/t/metadata/m.avro").as_ref(),
            "prefix/silver/t/metadata/m.avro"
        );
    }

    #[test]
    fn types_map_to_iceberg_or_are_refused_with_a_hint() {
        let mut next = 0;
        let ok = |dt: DataType, next: &mut i32| to_type("c", &dt, None, next);
        assert_eq!(
            ok(DataType::Int16, &mut next).unwrap(),
            Type::Primitive(PrimitiveType::Int)
        );
        assert_eq!(
            ok(
                DataType::Timestamp(
                    arrow::datatypes::TimeUnit::Nanosecond,
                    Some("+02:00".into())
                ),
                &mut next
            )
            .unwrap(),
            Type::Primitive(PrimitiveType::Timestamptz)
        );
        assert_eq!(
            ok(DataType::Decimal128(38, 4), &mut next).unwrap(),
            Type::Primitive(PrimitiveType::Decimal {
                precision: 38,
                scale: 4
            })
        );
        let nested = DataType::List(Arc::new(Field::new(
            "item",
            DataType::Struct(Fields::from(vec![Field::new(
                "wait",
                DataType::Duration(arrow::datatypes::TimeUnit::Second),
                true,
            )])),
            true,
        )));
        let refused = ok(nested, &mut next).unwrap_err();
        assert_eq!(refused.column, "c[].wait");
        assert!(refused.hint.contains("EXTRACT(EPOCH"), "{}", refused.hint);
        let refused = ok(DataType::Decimal256(50, 2), &mut next).unwrap_err();
        assert!(refused.hint.contains("DECIMAL(38, 2)"), "{}", refused.hint);
        assert!(ok(DataType::UInt64, &mut next).is_err());
    }

    #[test]
    fn field_ids_are_kept_by_name_and_new_ones_follow_the_last() {
        let prior = StructField {
            id: 7,
            name: "a".into(),
            required: true,
            field_type: Type::Primitive(PrimitiveType::Long),
            doc: None,
        };
        let mut next = 9;
        let kept = to_field(
            &Field::new("a", DataType::Int64, true),
            Some(&prior),
            &mut next,
        )
        .unwrap();
        assert_eq!((kept.id, next), (7, 9));
        let new = to_field(&Field::new("b", DataType::Utf8, false), None, &mut next).unwrap();
        assert_eq!((new.id, new.required, next), (10, true, 10));
    }
}
