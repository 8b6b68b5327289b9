//! Delta Lake through delta-rs: streaming writes from DataFusion plans, MERGE for upserts, and
//! application transactions (`txn` actions) so a retried run never appends twice.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::common::Column;
use datafusion::functions::datetime::expr_fn::date_trunc;
use datafusion::logical_expr::{cast, lit, Expr};
use datafusion::prelude::{DataFrame, SessionContext};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use object_store::ObjectStore;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use url::Url;

use super::{TableFormat, WriteMetrics, WriteMode, WriteRequest};
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

    async fn open(&self, url: &Url) -> Result<DeltaTable> {
        if url.scheme() == "file" {
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

    fn writer_properties(&self) -> WriterProperties {
        let codec = match self.compression {
            Compression::Zstd => PqCompression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()),
            Compression::Snappy => PqCompression::SNAPPY,
            Compression::Lz4 => PqCompression::LZ4_RAW,
            Compression::Uncompressed => PqCompression::UNCOMPRESSED,
        };
        WriterProperties::builder().set_compression(codec).build()
    }

    fn commit_properties(req: &WriteRequest<'_>) -> CommitProperties {
        let mut props = CommitProperties::default().with_metadata(
            req.metadata
                .iter()
                .map(|(k, v)| (format!("smelter.{k}"), serde_json::Value::String(v.clone()))),
        );
        if let Some(id) = &req.txn_id {
            props = props.with_application_transaction(Transaction::new(id, 1));
        }
        props
    }
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
    fn name(&self) -> &'static str {
        "delta"
    }

    async fn provider(
        &self,
        ctx: &SessionContext,
        url: &Url,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        let table = self.open(url).await?;
        if table.version().is_none() {
            return Ok(None);
        }
        table.update_datafusion_session(&ctx.state())?;
        Ok(Some(table.table_provider().await?))
    }

    async fn stats(&self, url: &Url) -> Result<Option<super::TableStats>> {
        let table = self.open(url).await?;
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

    async fn committed(&self, url: &Url, txn_id: &str) -> Result<bool> {
        let table = self.open(url).await?;
        if table.version().is_none() {
            return Ok(false);
        }
        let version = table
            .snapshot()?
            .transaction_version(table.log_store().as_ref(), txn_id)
            .await?;
        Ok(version.is_some())
    }

    async fn write(&self, mut req: WriteRequest<'_>) -> Result<WriteMetrics> {
        req.input = floor_to_micros(req.input)?;
        let table = self.open(req.url).await?;
        if let Some(id) = &req.txn_id {
            if table.version().is_some()
                && table
                    .snapshot()?
                    .transaction_version(table.log_store().as_ref(), id)
                    .await?
                    .is_some()
            {
                return Ok(WriteMetrics {
                    version: table.version().map_or(-1, |v| v as i64),
                    skipped: true,
                    ..Default::default()
                });
            }
        }
        let session = Arc::new(req.ctx.state());
        let commit = Self::commit_properties(&req);
        match (&req.mode, table.version()) {
            (WriteMode::Merge { keys }, Some(_)) => {
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
                    .collect();
                let update_cols = columns.clone();
                let insert_cols = columns;
                let (table, metrics) = table
                    .merge(req.input, predicate)
                    .with_source_alias("source")
                    .with_target_alias("target")
                    .with_merge_schema(true)
                    .with_session_state(session)
                    .with_writer_properties(self.writer_properties())
                    .with_commit_properties(commit)
                    .when_matched_update(|u| {
                        update_cols.iter().fold(u, |u, c| {
                            u.update(c.as_str(), format!("source.{}", quote(c)))
                        })
                    })?
                    .when_not_matched_insert(|i| {
                        insert_cols
                            .iter()
                            .fold(i, |i, c| i.set(c.as_str(), format!("source.{}", quote(c))))
                    })?
                    .await?;
                Ok(WriteMetrics {
                    rows_inserted: metrics.num_target_rows_inserted as u64,
                    rows_updated: metrics.num_target_rows_updated as u64,
                    files_added: metrics.num_target_files_added as u64,
                    version: table.version().map_or(-1, |v| v as i64),
                    skipped: false,
                })
            }
            (mode, _) => {
                let (save, schema) = match mode {
                    WriteMode::Overwrite => (SaveMode::Overwrite, SchemaMode::Overwrite),
                    _ => (SaveMode::Append, SchemaMode::Merge),
                };
                let mut builder = table
                    .write(Vec::new())
                    .with_input_plan(req.input.logical_plan().clone())
                    .with_session_state(session)
                    .with_save_mode(save)
                    .with_writer_properties(self.writer_properties())
                    .with_target_file_size(NonZeroU64::new(self.target_file_size))
                    .with_schema_mode(schema)
                    .with_commit_properties(commit);
                if !req.partition_by.is_empty() {
                    builder = builder.with_partition_columns(req.partition_by.clone());
                }
                let table = builder.await?;
                let (rows, files) = last_commit_counts(&table).await;
                Ok(WriteMetrics {
                    rows_inserted: rows,
                    rows_updated: 0,
                    files_added: files,
                    version: table.version().map_or(-1, |v| v as i64),
                    skipped: false,
                })
            }
        }
    }
}

/// Delta Lake timestamps are microseconds. delta-rs casts nanosecond columns with a plain cast,
/// which truncates toward zero, so an instant before 1970 would move *up* to the next
/// microsecond (`1677-09-22 00:00:00.0000001` would become `.000001`). Floor them here instead:
/// every instant lands on the microsecond at or before it, whatever its sign.
fn floor_to_micros(df: DataFrame) -> Result<DataFrame> {
    let is_ns = |t: &DataType| matches!(t, DataType::Timestamp(TimeUnit::Nanosecond, _));
    if !df.schema().fields().iter().any(|f| is_ns(f.data_type())) {
        return Ok(df);
    }
    let exprs: Vec<Expr> = df
        .schema()
        .iter()
        .map(|(qualifier, field)| {
            let column = Expr::Column(Column::from((qualifier, field)));
            match field.data_type() {
                DataType::Timestamp(TimeUnit::Nanosecond, tz) => cast(
                    // date_trunc floors (Euclidean remainder) at sub-second granularity.
                    date_trunc(lit("microsecond"), column),
                    DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
                )
                .alias(field.name()),
                _ => column,
            }
        })
        .collect();
    Ok(df.select(exprs)?)
}

/// Rows and files added by the latest commit, from its `operationMetrics`.
async fn last_commit_counts(table: &DeltaTable) -> (u64, u64) {
    let Ok(mut history) = table.history(Some(1)).await else {
        return (0, 0);
    };
    let Some(info) = history.next() else {
        return (0, 0);
    };
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
    (get("num_added_rows"), get("num_added_files"))
}

/// Quotes an identifier for a delta-rs SQL expression.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
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
