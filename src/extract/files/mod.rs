//! The files source (`[source] type = "files"`): CSV, Parquet and JSON-lines files matched by a
//! glob under a local directory or an S3/Azure prefix, landed incrementally like Databricks Auto
//! Loader: each run lands only the files no earlier run landed.
//!
//! Exactly-once landing: the manifest of a run lists the source files it landed, and bronze
//! records them in `_smelter/files` after its own commit. At extract for run `R`, if state
//! already holds files for `R` (a retry after bronze), exactly those land again (bronze's
//! transaction id then appends nothing); otherwise the listed files minus every file recorded
//! for any run land. A crash between extract and bronze records nothing, so the next extract of
//! `R` lists again and loses nothing. See docs/files.md.

mod decode;
mod listing;

use std::sync::Arc;

use super::source::{ReadRequest, Source, TableRead, Verdict};
use crate::config::{FileFormat, FilesTable, Pipeline, SourceTable};
use crate::error::{Error, Result};
use crate::schema::{ColumnChange, ColumnShape};
use crate::state::LandedFile;
use crate::storage::Lake;
use listing::Listed;

/// Rows read per file to infer CSV and JSON column types (see docs/files.md).
pub const INFER_ROWS: usize = 1000;

/// Files under a root, read with the table's `path` glob and `format`.
pub struct FilesSource {
    pipeline: Pipeline,
}

impl FilesSource {
    /// The files source of a pipeline (`[source] type = "files"`). Nothing is opened until a
    /// table is discovered or read.
    pub fn new(pipeline: &Pipeline) -> Self {
        FilesSource {
            pipeline: pipeline.clone(),
        }
    }

    /// The store of the source root: `source.root` if set, else the lake root.
    fn root(&self) -> Result<(Lake, bool)> {
        let files = self.pipeline.source.files.as_ref();
        match files.and_then(|f| f.root.as_deref()) {
            Some(root) => Ok((
                Lake::open_root(
                    &self.pipeline,
                    root,
                    &files.map(|f| f.options.clone()).unwrap_or_default(),
                )?,
                false,
            )),
            None => Ok((Lake::open(&self.pipeline)?, true)),
        }
    }

    fn settings<'a>(&self, table: &'a SourceTable) -> Result<&'a FilesTable> {
        table.files.as_ref().ok_or_else(|| {
            Error::Internal(format!(
                "files table `{}` has no files settings",
                table.name
            ))
        })
    }
}

/// URL of the files source's base: `source.root`, else the lake root (no store is opened).
/// Names the source's datasets in lineage.
pub fn root_url(pipeline: &Pipeline) -> Result<url::Url> {
    let mut other = pipeline.clone();
    if let Some(root) = pipeline
        .source
        .files
        .as_ref()
        .and_then(|f| f.root.as_deref())
    {
        other.storage.root = root.to_string();
    }
    Ok(crate::storage::check(&other)?.0)
}

#[async_trait::async_trait]
impl Source for FilesSource {
    fn kind(&self) -> &'static str {
        "files"
    }

    async fn discover(&self, table: &SourceTable) -> Result<Vec<ColumnShape>> {
        let spec = self.settings(table)?;
        let (root, is_lake) = self.root()?;
        let listed = listing::list(&root, spec, is_lake).await?;
        let Some(first) = listed.first() else {
            return Err(Error::Source {
                message: format!(
                    "table `{}`: no files match `{}` under {}; nothing to discover the columns from",
                    table.name,
                    spec.path,
                    crate::storage::redact(root.root())
                ),
                retryable: false,
            });
        };
        decode::infer(&root, first, spec).await
    }

    async fn read(&self, req: ReadRequest<'_>) -> Result<TableRead> {
        let table = req.table;
        let spec = self.settings(table)?.clone();
        let (root, is_lake) = self.root()?;
        let listed = listing::list(&root, &spec, is_lake).await?;
        let landed = req.state.landed_files(&table.name).await?;
        let selected = listing::select(&listed, &landed, req.run_id);
        if selected.is_empty() {
            return Err(Error::NothingToDo(if listed.is_empty() {
                format!(
                    "table `{}`: no files match `{}` under {}",
                    table.name,
                    spec.path,
                    crate::storage::redact(root.root())
                )
            } else {
                format!(
                    "table `{}`: no new files match `{}` ({} matched, all landed by earlier runs)",
                    table.name,
                    spec.path,
                    listed.len()
                )
            }));
        }
        // The columns: the contract's (exact types the values are converted to), plus any
        // column the first file has that the contract lacks (so `on_schema_change` sees it);
        // without a contract, those inferred from the first file.
        let found = decode::infer(&root, &selected[0], &spec).await?;
        let columns = match super::contract::read(&self.pipeline, &table.name)? {
            Some((_, mut contract)) => {
                if spec.format == FileFormat::Parquet {
                    let shown = crate::plan::display_path(
                        &self.pipeline,
                        &super::contract::path(&self.pipeline, &table.name),
                    );
                    check_footers(&root, &selected, &spec, table, &shown, &mut contract).await?;
                }
                for c in found {
                    if !contract.iter().any(|k| k.name == c.name) {
                        contract.push(c);
                    }
                }
                contract
            }
            None => found,
        };
        let schema = Arc::new(crate::schema::arrow_schema(&columns));
        let parts = table.partitions.max(1).min(selected.len());
        let mut partitions = Vec::with_capacity(parts);
        let (rejected_tx, rejected) = match table.on_error {
            crate::quarantine::OnError::Quarantine => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                (Some(tx), Some(rx))
            }
            crate::quarantine::OnError::Fail => (None, None),
        };
        for p in 0..parts {
            let files: Vec<Listed> = selected.iter().skip(p).step_by(parts).cloned().collect();
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let reader = decode::Reader {
                store: root.store(),
                spec: spec.clone(),
                schema: schema.clone(),
                batch_size: self.pipeline.source.batch_size,
                table: table.name.clone(),
                columns: columns.clone(),
                on_error: table.on_error,
                rejected: rejected_tx.clone(),
            };
            tokio::spawn(async move {
                for file in files {
                    if let Err(e) = reader.read(&file, &tx).await {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            });
            partitions.push(rx);
        }
        Ok(TableRead {
            columns,
            schema,
            watermark_col: None,
            partitions,
            source_files: selected.iter().map(LandedFile::from).collect(),
            rejected,
            change_version: None,
            snapshot: false,
        })
    }

    fn discovers_nullability(&self) -> bool {
        false
    }

    /// Keeps a hand-set type that every file value converts into: a lossless conversion of the
    /// discovered type (Parquet's exact type, or a CSV/JSON type inferred from the first rows);
    /// for CSV and JSON, whose types are only inferred, also a type that the first
    /// [`INFER_ROWS`] rows of the first file all read as. A declared `source_type` is kept
    /// when those rows all fit it.
    async fn keeps(
        &self,
        table: &SourceTable,
        found: &ColumnShape,
        declared: &ColumnShape,
    ) -> Result<Verdict> {
        let lossless = super::contract::converts_losslessly(&found.data_type, &declared.data_type);
        let spec = self.settings(table)?;
        if lossless && declared.source_type.is_none() {
            return Ok(Verdict::Keep("it converts losslessly".into()));
        }
        if spec.format == FileFormat::Parquet && !lossless {
            return Ok(Verdict::Replace(
                "the files' type does not convert losslessly into it".into(),
            ));
        }
        let (root, is_lake) = self.root()?;
        let listed = listing::list(&root, spec, is_lake).await?;
        let Some(first) = listed.first() else {
            return Ok(Verdict::Replace("no file to check the values of".into()));
        };
        let column = ColumnShape {
            nullable: true,
            ..declared.clone()
        };
        Ok(
            match decode::fits(&root, first, spec, &table.name, &column).await {
                None => Verdict::Keep(format!(
                    "the first {INFER_ROWS} rows of `{}` all read as it",
                    first.rel
                )),
                Some(problem) => Verdict::Replace(problem),
            },
        )
    }

    fn label(&self, _pipeline: &Pipeline, table: &SourceTable) -> String {
        match &table.files {
            Some(f) => format!("files:{}", f.path),
            None => format!("files:{}", table.name),
        }
    }
}

/// Footers read at once when checking a run's Parquet files against the contract.
const FOOTER_READS: usize = 8;

/// Compares the footer schema of every Parquet file the run lands with the contract, column by
/// column, before anything lands. A file type that converts losslessly into the contract's type
/// ([`crate::schema::is_widening`]: `Int32` into `Int64`) is read as the contract's type. Any
/// other difference is a schema change from the contract to the file, which the table's
/// `on_schema_change` policy decides: `sync_all_columns` allows a lossless widening of the
/// contract's type (the column then lands with the file's wider type, and bronze widens the
/// table); everything else stops the run (exit 2), naming the file, the column, the contract's
/// type and the file's. `contract` is updated in place with the widened types.
async fn check_footers(
    root: &Lake,
    files: &[Listed],
    spec: &FilesTable,
    table: &SourceTable,
    shown: &str,
    contract: &mut [ColumnShape],
) -> Result<()> {
    use futures::{StreamExt, TryStreamExt};
    let reads: Vec<_> = files
        .iter()
        .map(|f| Box::pin(decode::infer(root, f, spec)))
        .collect();
    let footers: Vec<Vec<ColumnShape>> = futures::stream::iter(reads)
        .buffered(FOOTER_READS)
        .try_collect()
        .await?;
    for (file, found) in files.iter().zip(footers) {
        for column in contract.iter_mut() {
            let Some(in_file) = found.iter().find(|f| f.name == column.name) else {
                continue;
            };
            let (want, have) = (&column.data_type, &in_file.data_type);
            if super::contract::converts_losslessly(have, want) {
                continue;
            }
            let change = ColumnChange::TypeChanged {
                column: column.name.clone(),
                from: crate::schema::type_name(want),
                to: crate::schema::type_name(have),
                widening: crate::schema::is_widening(want, have),
            };
            if table.on_schema_change.allows(&change) {
                column.data_type = have.clone();
                continue;
            }
            return Err(Error::Source {
                message: format!(
                    "file `{}`: column `{}` is {} in the file but {} in the contract {shown}, and {} does not convert losslessly to {}; `on_schema_change = \"{}\"` does not allow it. Fix the file, or review the change and run `smelter source sync` (or edit the contract's `arrow_type`)",
                    file.rel,
                    column.name,
                    crate::schema::type_name(have),
                    crate::schema::type_name(want),
                    crate::schema::type_name(have),
                    crate::schema::type_name(want),
                    table.on_schema_change,
                ),
                retryable: false,
            });
        }
    }
    Ok(())
}
