//! Bronze: append each table's landed files to `bronze.<table>` with metadata columns
//! (`_run_id`, `_ingested_at`, `_source`), then commit the new watermark.
//!
//! Idempotent: the append carries a Delta application transaction `smelter:<run_id>`, so a retried
//! run id finds it committed and appends nothing. The watermark is committed after the data, and
//! again on a retry, so a crash between the two never skips rows.

use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::logical_expr::{cast, col, lit};
use datafusion::prelude::ParquetReadOptions;
use datafusion::scalar::ScalarValue;
use tracing::info;

use super::RunContext;
use url::Url;

use crate::error::{Error, Kind, Result};
use crate::extract::{read_manifest, Manifest};
use crate::plan::{Layer, TableId};
use crate::state::{now_us, RunRecord};
use crate::table::{WriteMetrics, WriteMode, WriteRequest};

/// Schema of a bronze table: the source columns plus the metadata columns.
pub fn bronze_schema(source: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = source.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("_run_id", DataType::Utf8, false));
    fields.push(Field::new(
        "_ingested_at",
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
    let before = records.len();
    let mut missing = Vec::new();
    for id in rc.plan.bronze_tables() {
        let clock = Instant::now();
        let started = now_us();
        let Some(manifest) = read_manifest(rc.lake, &id.name, &rc.params.run_id).await? else {
            missing.push(id.name.clone());
            continue;
        };
        let mut schema_changes = Vec::new();
        let metrics = if manifest.rows == 0 {
            WriteMetrics {
                skipped: true,
                ..Default::default()
            }
        } else {
            match append(rc, &id, &manifest, started).await {
                Ok((m, changes)) => {
                    schema_changes = changes;
                    m
                }
                Err(e) => return Err(diagnose(rc, &id, &manifest, e).await),
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
            crate::profile::after_write(rc, &id).await?
        };
        let mut record = rc.record(
            Layer::Bronze,
            id.to_string(),
            started,
            clock.elapsed().as_millis() as u64,
            &metrics,
            serde_json::json!({
                "landed_rows": manifest.rows,
                "schema_changes": schema_changes,
                "version": metrics.version,
                "drift": profile.as_ref().map(|p| &p.drift),
            }),
        );
        record.profile = profile;
        records.push(record);
    }
    if records.len() == before {
        return Err(Error::NothingToDo(format!(
            "no landed files for run id `{}` (tables: {}); run the extract layer with this run id first",
            rc.params.run_id,
            missing.join(", ")
        )));
    }
    Ok(())
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
/// written and the schema changes applied.
async fn append(
    rc: &RunContext<'_>,
    id: &TableId,
    manifest: &Manifest,
    started: i64,
) -> Result<(WriteMetrics, Vec<crate::schema::ColumnChange>)> {
    let files: Vec<String> = landing_files(rc, &id.name, manifest)?
        .iter()
        .map(Url::to_string)
        .collect();
    let df = rc
        .ctx
        .read_parquet(files, ParquetReadOptions::default())
        .await?;
    let mut exprs: Vec<_> = df.schema().columns().into_iter().map(col).collect();
    exprs.push(lit(rc.params.run_id.as_str()).alias("_run_id"));
    exprs.push(
        cast(
            lit(ScalarValue::TimestampMicrosecond(
                Some(started),
                Some("UTC".into()),
            )),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        )
        .alias("_ingested_at"),
    );
    exprs.push(lit(manifest.source.as_str()).alias("_source"));
    let input = df.select(exprs)?;
    let policy = rc
        .plan
        .pipeline
        .source
        .tables
        .iter()
        .find(|t| t.name == id.name)
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
        })
        .await?;
    Ok((metrics, changes))
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
