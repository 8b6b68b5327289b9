//! Bronze: append each table's landed files to `bronze.<table>` with metadata columns
//! (`_run_id`, `_ingested_at`, `_source`), then commit the new watermark. Tables that track
//! deletes also get `_op` and, for full snapshots, delete rows ([`super::deletes`]).
//!
//! Idempotent: the append carries a Delta application transaction `smelter:<run_id>`, so a retried
//! run id finds it committed and appends nothing. The watermark is committed after the data, and
//! again on a retry, so a crash between the two never skips rows.

use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::logical_expr::{cast, col, lit};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::ParquetReadOptions;
use datafusion::scalar::ScalarValue;
use tracing::{info, warn};

use super::RunContext;
use url::Url;

use crate::error::{Error, Kind, Result};
use crate::extract::{read_manifest, Manifest};
use crate::plan::{Layer, TableId};
use crate::quarantine::{OnError, Rejected};
use crate::state::{now_us, RunRecord};
use crate::table::{WriteMetrics, WriteMode, WriteRequest};

/// The ingestion time column of every bronze row (UTC; a delete row gets its run's).
pub const INGESTED_AT: &str = "_ingested_at";

/// Schema of a bronze table: the source columns plus the metadata columns.
pub fn bronze_schema(source: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = source.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("_run_id", DataType::Utf8, false));
    fields.push(Field::new(
        INGESTED_AT,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    ));
    fields.push(Field::new("_source", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// Runs the bronze layer.
///
/// A table whose load fails is named in the error (`bronze.<table>`); when the landed data is at
/// fault, [`diagnose`] names the column and the landing file and decides the kind.
pub async fn run(rc: &RunContext<'_>, records: &mut Vec<RunRecord>) -> Result<()> {
    use futures::{StreamExt, TryStreamExt};
    // Tables load concurrently, `engine.threads` at a time: each is its own Delta/Iceberg table
    // and the state tables take concurrent appends. Records keep the plan's order; the first
    // failure in that order is reported, and the loads still in flight are dropped as a killed
    // process would leave them (each load is idempotent by run id).
    let threads = rc.plan.pipeline.engine.threads.max(1);
    let loaded: Vec<(TableId, Option<RunRecord>)> =
        futures::stream::iter(rc.plan.bronze_tables().into_iter().map(|id| async move {
            let record = load_table(rc, &id).await?;
            Ok::<_, Error>((id, record))
        }))
        .buffered(threads)
        .try_collect()
        .await?;
    let missing: Vec<String> = loaded
        .iter()
        .filter(|(_, r)| r.is_none())
        .map(|(id, _)| id.name.clone())
        .collect();
    if missing.len() == loaded.len() {
        return Err(Error::NothingToDo(format!(
            "no landed files for run id `{}` (tables: {}): the extract layer of this run id has not run, or landed nothing new; run it with this run id first (`--layer extract`), or use `--layer all`",
            rc.params.run_id,
            missing.join(", ")
        )));
    }
    records.extend(loaded.into_iter().filter_map(|(_, r)| r));
    Ok(())
}

/// Loads one bronze table from its landed files (see [`append`]), then records its landed
/// files and watermark in the run state; `None` when the run id landed nothing for it.
async fn load_table(rc: &RunContext<'_>, id: &TableId) -> Result<Option<RunRecord>> {
    let clock = Instant::now();
    let started = now_us();
    let Some(manifest) = read_manifest(rc.lake, &id.name, &rc.params.run_id).await? else {
        return Ok(None);
    };
    let mut schema_changes = Vec::new();
    let mut quarantined = 0;
    let mut streamed = None;
    // An empty snapshot still deletes the keys bronze holds.
    let metrics = if manifest.rows == 0 && manifest.rejected_rows == 0 && !manifest.snapshot {
        WriteMetrics {
            skipped: true,
            ..Default::default()
        }
    } else {
        match append(rc, id, &manifest, started).await {
            Ok((m, changes, q, s)) => {
                schema_changes = changes;
                quarantined = q;
                streamed = s;
                m
            }
            Err(e @ Error::Rejected { .. }) => return Err(e),
            Err(e) => return Err(diagnose(rc, id, &manifest, e).await),
        }
    };
    rc.state
        .commit_files(&id.name, &rc.params.run_id, &manifest.source_files)
        .await?;
    if let Some(wm) = &manifest.watermark_to {
        if manifest.watermark_from.as_ref() != Some(wm) {
            rc.state
                .commit_watermark(&id.name, wm, &rc.params.run_id)
                .await?;
        }
    }
    info!(
        pipeline = %rc.plan.pipeline.name,
        layer = "bronze",
        table = %id,
        run_id = %rc.params.run_id,
        rows = metrics.rows_inserted,
        skipped = metrics.skipped,
        duration_ms = clock.elapsed().as_millis() as u64,
        "Appended bronze table."
    );
    let profile = if metrics.skipped {
        None
    } else {
        crate::profile::after_write(rc, id, &metrics, streamed, None).await?
    };
    let mut record = rc.record(
        Layer::Bronze,
        id.to_string(),
        started,
        clock.elapsed().as_millis() as u64,
        &metrics,
        serde_json::json!({
            "landed_rows": manifest.rows,
            "quarantined": quarantined,
            "schema_changes": schema_changes,
            "version": metrics.version,
            "drift": profile.as_ref().map(|p| &p.drift),
        }),
    );
    record.profile = profile;
    Ok(Some(record))
}

/// URLs of a manifest's landing files.
fn landing_files(rc: &RunContext<'_>, table: &str, manifest: &Manifest) -> Result<Vec<Url>> {
    let landing = rc.lake.landing_url(table, &rc.params.run_id);
    manifest
        .files
        .iter()
        .map(|f| landing.join(f))
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Internal(format!("bad landing file name: {e}")))
}

/// Appends the landed files of one table, with the metadata columns, idempotently by run id,
/// after applying the table's `on_schema_change` policy to the landed columns; returns what was
/// written, the schema changes applied and the rows quarantined.
///
/// Every landed value is first checked against its declared type ([`crate::quarantine::check`],
/// a scan of the landing files). A value that breaks it stops the load with
/// `on_error = "fail"` (exit 3, nothing written); with `quarantine` the offending rows, and the
/// rows the source already rejected, are appended to `bronze._quarantine_<table>` (same run-id
/// transaction) and the good rows to the table.
async fn append(
    rc: &RunContext<'_>,
    id: &TableId,
    manifest: &Manifest,
    started: i64,
) -> Result<(
    WriteMetrics,
    Vec<crate::schema::ColumnChange>,
    u64,
    Option<crate::profile::Streamed>,
)> {
    let urls = landing_files(rc, &id.name, manifest)?;
    let files: Vec<String> = urls.iter().map(Url::to_string).collect();
    let policy = rc
        .plan
        .pipeline
        .source
        .tables
        .iter()
        .find(|t| t.name == id.name);
    let on_error = policy
        .map(|t| t.on_error)
        .unwrap_or(rc.plan.pipeline.on_error);
    let scan = scan_landing(rc, manifest, &urls).await?;
    if let (Some((v, file, row)), OnError::Fail) = (&scan.first, on_error) {
        return Err(crate::quarantine::fail(
            &id.name,
            v,
            file,
            Some(("row", *row as i64)),
        ));
    }
    let mut quarantined = 0;
    let df = if scan.violations == 0 {
        if files.is_empty() {
            None
        } else {
            Some(
                rc.ctx
                    .read_parquet(files.clone(), ParquetReadOptions::default())
                    .await?,
            )
        }
    } else {
        let schema = scan
            .schema
            .clone()
            .ok_or_else(|| Error::Internal("landing files with bad rows but no schema".into()))?;
        let bad = landing_rows(rc, &scan, &urls, true)?;
        let bad = rc.ctx.read_table(Arc::new(StreamingTable::try_new(
            bad.schema().clone(),
            vec![bad],
        )?))?;
        let good = landing_rows(rc, &scan, &urls, false)?;
        let good = rc
            .ctx
            .read_table(Arc::new(StreamingTable::try_new(schema, vec![good])?))?;
        quarantined += write_quarantine(rc, id, manifest, Some(bad), started).await?;
        Some(good)
    };
    if scan.violations == 0 && manifest.rejected_rows > 0 {
        quarantined += write_quarantine(rc, id, manifest, None, started).await?;
    }
    let df = match policy.filter(|t| t.tracks_deletes()) {
        Some(table) => {
            super::snapshot_deletes::with_ops(rc, id, table, manifest, df, &files).await?
        }
        None => df,
    };
    let Some(df) = df else {
        // Every row of the run was rejected by the source.
        return Ok((
            WriteMetrics {
                skipped: true,
                ..Default::default()
            },
            Vec::new(),
            quarantined,
            None,
        ));
    };
    let mut exprs: Vec<_> = df.schema().columns().into_iter().map(col).collect();
    exprs.push(lit(rc.params.run_id.as_str()).alias("_run_id"));
    exprs.push(ingested_at(started).alias(INGESTED_AT));
    exprs.push(lit(manifest.source.as_str()).alias("_source"));
    let input = df.select(exprs)?;
    let policy = policy
        .map(|t| t.on_schema_change)
        .unwrap_or(rc.plan.pipeline.on_schema_change);
    let landing = crate::storage::redact(&rc.lake.landing_url(&id.name, &rc.params.run_id));
    let (input, changes) = super::evolve_schema(rc, id, input, policy, |m| Error::Source {
        message: format!(
            "table `{id}`: the files landed for run `{}` at {landing} no longer match the table: {m}; review the source change, set `on_schema_change` on the table in the pipeline file, or rebuild the bronze table",
            rc.params.run_id
        ),
        retryable: false,
    })
    .await?;
    let streamed =
        crate::profile::stream_profiler(rc, id, input.schema().as_arrow(), &WriteMode::Append)?;
    let metrics = rc
        .format
        .write(WriteRequest {
            ctx: &rc.ctx,
            url: &rc.lake.table_url(id),
            input,
            mode: WriteMode::Append,
            partition_by: Vec::new(),
            txn_id: Some(format!("smelter:{}", rc.params.run_id)),
            metadata: rc.commit_metadata(&[("layer", "bronze".into())]),
            read_version: None,
            observer: streamed.as_ref().map(crate::profile::Streamed::observer),
            staged: None,
        })
        .await?;
    Ok((metrics, changes, quarantined, streamed))
}

/// `started` (µs since the epoch) as a UTC timestamp literal.
fn ingested_at(started: i64) -> datafusion::logical_expr::Expr {
    cast(
        lit(ScalarValue::TimestampMicrosecond(
            Some(started),
            Some("UTC".into()),
        )),
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    )
}

/// Appends rejected rows to `bronze._quarantine_<table>` with `_run_id` and `_quarantined_at`,
/// under the run's transaction id (a retried run id appends nothing): the rows the bronze check
/// found (`found`) and those the source rejected (the manifest's `rejected_files`). Returns the
/// rows quarantined by this run (also on a retry), and warns with the count.
async fn write_quarantine(
    rc: &RunContext<'_>,
    id: &TableId,
    manifest: &Manifest,
    found: Option<datafusion::prelude::DataFrame>,
    started: i64,
) -> Result<u64> {
    let landing = rc.lake.landing_url(&id.name, &rc.params.run_id);
    let rejected: Vec<String> = manifest
        .rejected_files
        .iter()
        .map(|f| landing.join(f).map(|u| u.to_string()))
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Internal(format!("bad landing file name: {e}")))?;
    let from_source = if rejected.is_empty() {
        None
    } else {
        Some(
            rc.ctx
                .read_parquet(rejected, ParquetReadOptions::default())
                .await?,
        )
    };
    let input = match (found, from_source) {
        (Some(a), Some(b)) => a.union_by_name(b)?,
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return Ok(0),
    };
    let mut exprs: Vec<_> = input.schema().columns().into_iter().map(col).collect();
    exprs.push(lit(rc.params.run_id.as_str()).alias("_run_id"));
    exprs.push(ingested_at(started).alias("_quarantined_at"));
    let input = input.select(exprs)?;
    let qid = TableId {
        layer: Layer::Bronze,
        name: crate::quarantine::table_name(&id.name),
    };
    let url = rc.lake.table_url(&qid);
    let m = rc
        .format
        .write(WriteRequest {
            ctx: &rc.ctx,
            url: &url,
            input,
            mode: WriteMode::Append,
            partition_by: Vec::new(),
            txn_id: Some(format!("smelter:{}", rc.params.run_id)),
            metadata: rc.commit_metadata(&[("layer", "bronze".into())]),
            read_version: None,
            observer: None,
            staged: None,
        })
        .await
        .map_err(|e| e.in_table(&qid.to_string(), &crate::storage::redact(&url), None))?;
    let found = m
        .earlier_commit
        .as_ref()
        .is_none_or(|e| e.version.is_some());
    let rows = if !found {
        // A retry whose earlier commit is no longer in the recent history: count the rows.
        rc.ctx
            .read_table(
                rc.format
                    .provider(&rc.ctx, &url)
                    .await?
                    .ok_or_else(|| Error::Internal(format!("{qid} missing after its write")))?,
            )?
            .filter(col("_run_id").eq(lit(rc.params.run_id.as_str())))?
            .count()
            .await? as u64
    } else {
        m.rows_inserted
    };
    warn!(
        pipeline = %rc.plan.pipeline.name,
        layer = "bronze",
        table = %id,
        quarantine = %qid,
        run_id = %rc.params.run_id,
        rows,
        "Quarantined rows that break their declared types."
    );
    Ok(rows)
}

/// What the check of a table's landing files found.
struct Scan {
    /// Declared columns the values are checked against.
    columns: Vec<crate::schema::ColumnShape>,
    /// Arrow schema of the landing files (of the first one).
    schema: Option<SchemaRef>,
    /// Rows with a value that breaks its declared type.
    violations: u64,
    /// The first of them, with its landing file (shown) and 1-based row in it.
    first: Option<(crate::quarantine::Violation, String, u64)>,
}

/// Checks every landed value against its declared type (the manifest's columns; for a manifest
/// without them, the landing file's own Arrow types), reading only the checked columns, one
/// batch at a time. A landing file that cannot be read here is left to the load, whose failure
/// [`diagnose`] explains.
async fn scan_landing(rc: &RunContext<'_>, manifest: &Manifest, urls: &[Url]) -> Result<Scan> {
    use futures::TryStreamExt;
    use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
    use parquet::arrow::ProjectionMask;

    let declared = crate::extract::contract::ContractColumn::shapes(
        &manifest.columns,
        &format!("landing manifest of `{}`", manifest.table),
    )?;
    let mut scan = Scan {
        columns: declared,
        schema: None,
        violations: 0,
        first: None,
    };
    for url in urls {
        let path = rc.lake.path_of(url)?;
        let Ok(builder) =
            ParquetRecordBatchStreamBuilder::new(ParquetObjectReader::new(rc.lake.store(), path))
                .await
        else {
            continue;
        };
        let schema = builder.schema().clone();
        if scan.columns.is_empty() {
            scan.columns = crate::schema::ColumnShape::of_schema(&schema);
        }
        scan.schema.get_or_insert_with(|| schema.clone());
        let checked: Vec<usize> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                scan.columns.iter().any(|c| {
                    // A NOT NULL landing column (Parquet REQUIRED) cannot hold NULLs: not read.
                    c.name == *f.name()
                        && ((!c.nullable && f.is_nullable())
                            || matches!(
                                c.data_type,
                                DataType::Decimal128(..) | DataType::Decimal256(..)
                            )
                            || c.source_type
                                .as_deref()
                                .and_then(crate::quarantine::max_chars)
                                .is_some())
                })
            })
            .map(|(i, _)| i)
            .collect();
        if checked.is_empty() {
            continue;
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), checked);
        let Ok(mut stream) = builder.with_projection(mask).build() else {
            continue;
        };
        let mut offset = 0u64;
        while let Ok(Some(batch)) = stream.try_next().await {
            let found = crate::quarantine::check(&scan.columns, &batch);
            if let (None, Some(v)) = (&scan.first, found.first()) {
                scan.first = Some((
                    v.clone(),
                    crate::storage::redact(url),
                    offset + v.row as u64 + 1,
                ));
            }
            scan.violations += found.len() as u64;
            offset += batch.num_rows() as u64;
        }
    }
    Ok(scan)
}

/// The rows of the landing files that pass the check (`bad = false`), or those that break their
/// declared types as rejected rows with their landing file and 1-based row (`bad = true`), as
/// one streamed partition: the files are read again one batch at a time and checked as in
/// [`scan_landing`], so memory stays bounded.
fn landing_rows(
    rc: &RunContext<'_>,
    scan: &Scan,
    urls: &[Url],
    bad: bool,
) -> Result<Arc<dyn PartitionStream>> {
    let landing = scan
        .schema
        .clone()
        .ok_or_else(|| Error::Internal("landing files without a schema".into()))?;
    let schema = if bad {
        crate::quarantine::rejected_schema(landing.fields().iter().map(|f| f.name().as_str()))
    } else {
        landing
    };
    let files = urls
        .iter()
        .map(|u| Ok((rc.lake.path_of(u)?, crate::storage::redact(u))))
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(LandingRows {
        store: rc.lake.store(),
        files,
        columns: scan.columns.clone(),
        bad,
        schema,
    }))
}

/// See [`landing_rows`].
#[derive(Debug)]
struct LandingRows {
    store: Arc<dyn object_store::ObjectStore>,
    files: Vec<(object_store::path::Path, String)>,
    columns: Vec<crate::schema::ColumnShape>,
    bad: bool,
    schema: SchemaRef,
}

impl PartitionStream for LandingRows {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(
        &self,
        _ctx: Arc<datafusion::execution::TaskContext>,
    ) -> datafusion::execution::SendableRecordBatchStream {
        use futures::{StreamExt, TryStreamExt};
        use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};

        let (store, columns, bad) = (self.store.clone(), Arc::new(self.columns.clone()), self.bad);
        let external = |e: parquet::errors::ParquetError| {
            datafusion::error::DataFusionError::External(Box::new(e))
        };
        let stream = futures::stream::iter(self.files.clone()).flat_map(move |(path, shown)| {
            let (store, columns) = (store.clone(), columns.clone());
            futures::stream::once(async move {
                ParquetRecordBatchStreamBuilder::new(ParquetObjectReader::new(store, path))
                    .await?
                    .build()
            })
            .try_flatten()
            .map_err(external)
            .scan(0usize, move |offset, batch| {
                let start = *offset;
                let out = batch.and_then(|b| {
                    *offset += b.num_rows();
                    let rows: Vec<Rejected> = crate::quarantine::check(&columns, &b)
                        .iter()
                        .map(|v| Rejected {
                            line: Some((start + v.row + 1) as i64),
                            ..Rejected::from(v)
                        })
                        .collect();
                    let out = if bad {
                        crate::quarantine::rejected_batch(&b, &rows, &shown)
                    } else {
                        crate::quarantine::without_rows(&b, &rows)
                    };
                    out.map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
                });
                futures::future::ready(Some(out))
            })
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

/// What [`diagnose`] found wrong with one column of one landing file.
struct Finding {
    column: String,
    file: String,
    detail: String,
    kind: Kind,
}

/// Names the table of a failed load and, when the landed data is at fault, the column and the
/// landing file: each column of each landing file is decoded on its own, its NULLs checked
/// against the table's NOT NULL columns and its values cast to the table's type. This runs only
/// after a failure, streaming one column at a time, so memory stays bounded.
///
/// A column whose type differs in kind from the table's (text landed for a decimal) is schema
/// drift (exit 2); a value that cannot be decoded, a NULL in a NOT NULL column, or a value that
/// does not fit a type of the same kind (a decimal too wide for the declared precision) breaks
/// the declared type (exit 3). See `docs/errors.md`.
async fn diagnose(rc: &RunContext<'_>, id: &TableId, manifest: &Manifest, e: Error) -> Error {
    let location = crate::storage::redact(&rc.lake.table_url(id));
    let dir = crate::storage::redact(&rc.lake.landing_url(&id.name, &rc.params.run_id));
    let table = id.to_string();
    let landing = match manifest.files.as_slice() {
        [one] => format!("{dir}{one}"),
        _ => dir,
    };
    if matches!(
        e.kind(),
        Kind::DiskFull | Kind::NotWritable | Kind::Transient
    ) {
        return e.in_table(&table, &location, Some(&landing));
    }
    match find_bad_column(rc, id, manifest).await {
        Some(f) => Error::Table {
            table,
            location,
            column: Some(f.column.into()),
            file: Some(f.file.into()),
            detail: Some(f.detail.into()),
            kind: Some(f.kind),
            source: Box::new(e),
        },
        None => e.in_table(&table, &location, Some(&landing)),
    }
}

async fn find_bad_column(
    rc: &RunContext<'_>,
    id: &TableId,
    manifest: &Manifest,
) -> Option<Finding> {
    use futures::TryStreamExt;
    use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
    use parquet::arrow::ProjectionMask;

    let target = match rc.format.provider(&rc.ctx, &rc.lake.table_url(id)).await {
        Ok(Some(p)) => Some(p.schema()),
        _ => None,
    };
    for url in landing_files(rc, &id.name, manifest).ok()? {
        let path = rc.lake.path_of(&url).ok()?;
        let shown = crate::storage::redact(&url);
        let open = || async {
            ParquetRecordBatchStreamBuilder::new(ParquetObjectReader::new(
                rc.lake.store(),
                path.clone(),
            ))
            .await
        };
        let builder = match open().await {
            Ok(b) => b,
            Err(e) => {
                return Some(Finding {
                    column: "(file)".into(),
                    file: shown,
                    detail: format!("is not a readable Parquet file: {e}"),
                    kind: Kind::BadValue,
                })
            }
        };
        let fields = builder.schema().fields().clone();
        for (i, field) in fields.iter().enumerate() {
            let declared = target
                .as_ref()
                .and_then(|t| t.field_with_name(field.name()).ok().cloned());
            let finding = |detail: String, kind| Finding {
                column: field.name().clone(),
                file: shown.clone(),
                detail,
                kind,
            };
            let Ok(builder) = open().await else { continue };
            let mask = ProjectionMask::roots(builder.parquet_schema(), [i]);
            let Ok(mut stream) = builder.with_projection(mask).build() else {
                continue;
            };
            let mut nulls = 0;
            loop {
                let batch = match stream.try_next().await {
                    Ok(Some(b)) => b,
                    Ok(None) => break,
                    Err(e) => {
                        return Some(finding(
                            format!("cannot be decoded as {}: {e}", field.data_type()),
                            Kind::BadValue,
                        ))
                    }
                };
                let Some(declared) = &declared else { continue };
                let column = batch.column(0);
                nulls += column.null_count();
                if declared.data_type() != field.data_type() {
                    let options = arrow::compute::CastOptions {
                        safe: false,
                        ..Default::default()
                    };
                    if let Err(e) =
                        arrow::compute::cast_with_options(column, declared.data_type(), &options)
                    {
                        let drift = family(field.data_type()) != family(declared.data_type());
                        return Some(if drift {
                            finding(
                                format!(
                                    "is {} in the landing file but {} in the table",
                                    field.data_type(),
                                    declared.data_type()
                                ),
                                Kind::SchemaDrift,
                            )
                        } else {
                            finding(
                                format!(
                                    "holds a value that does not fit {}: {e}",
                                    declared.data_type()
                                ),
                                Kind::BadValue,
                            )
                        });
                    }
                }
            }
            if let Some(declared) = declared.filter(|d| !d.is_nullable() && nulls > 0) {
                return Some(finding(
                    format!(
                        "has {nulls} NULL value(s) but `{}` is NOT NULL in the table",
                        declared.name()
                    ),
                    Kind::BadValue,
                ));
            }
        }
    }
    None
}

/// Coarse type families: a cast across families is a changed type, within one a value issue.
fn family(t: &DataType) -> u8 {
    if t.is_numeric() {
        0
    } else if matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
        1
    } else if t.is_temporal() {
        2
    } else if matches!(
        t,
        DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::FixedSizeBinary(_)
    ) {
        3
    } else {
        4
    }
}
