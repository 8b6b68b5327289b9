//! Reading one file into Arrow batches of the table's schema, and inferring a file's columns.
//!
//! CSV and JSON lines are read as text columns first (arrow-csv, arrow-json), then each column
//! is converted to its target type with Arrow's cast kernel; a non-empty value that does not
//! convert is a malformed cell, reported with the file, the line and the column. Parquet is
//! read with its own types and cast by column name.

use std::io::{BufReader, Cursor, Read};
use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, RecordBatch, StringArray};
use arrow::compute::CastOptions;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
use tokio::sync::mpsc::Sender;

use super::listing::Listed;
use super::INFER_ROWS;
use crate::config::{FileCompression, FileFormat, FilesTable};
use crate::error::{Error, Result};
use crate::schema::ColumnShape;
use crate::storage::Lake;

/// Reads files of one table into batches of `schema`.
#[derive(Clone)]
pub struct Reader {
    /// Store of the source root.
    pub store: Arc<dyn ObjectStore>,
    /// The table's file settings.
    pub spec: FilesTable,
    /// Target schema (the contract's, or inferred).
    pub schema: SchemaRef,
    /// Rows per batch.
    pub batch_size: usize,
}

/// A data error in a file (exit 2): names the file, and the line and column when known.
fn bad(file: &Listed, message: impl std::fmt::Display) -> Error {
    Error::Source {
        message: format!("file `{}`: {message}", file.rel),
        retryable: false,
    }
}

impl Reader {
    /// Reads one file and sends its batches to `tx`, converted to the target schema. Returns
    /// when the file is read or the receiver is gone.
    pub async fn read(&self, file: &Listed, tx: &Sender<Result<RecordBatch>>) -> Result<()> {
        if self.spec.format == FileFormat::Parquet {
            let mut stream = parquet_builder(&self.store, file)
                .await?
                .with_batch_size(self.batch_size)
                .build()
                .map_err(|e| bad(file, format!("not a readable Parquet file: {e}")))?;
            while let Some(batch) = stream
                .try_next()
                .await
                .map_err(|e| bad(file, format!("not a readable Parquet file: {e}")))?
            {
                let out = conform_typed(&batch, &self.schema, file)?;
                if tx.send(Ok(out)).await.is_err() {
                    return Ok(());
                }
            }
            return Ok(());
        }
        let bytes = fetch(&self.store, file).await?;
        let this = self.clone();
        let file = file.clone();
        let tx = tx.clone();
        tokio::task::spawn_blocking(move || this.read_text(&file, bytes, &tx))
            .await
            .map_err(|e| Error::Internal(format!("file reader task failed: {e}")))?
    }

    /// Decodes a CSV or JSON-lines file (already fetched) on a blocking thread.
    fn read_text(
        &self,
        file: &Listed,
        bytes: bytes::Bytes,
        tx: &Sender<Result<RecordBatch>>,
    ) -> Result<()> {
        let spec = &self.spec;
        // Every column is read as text: CSV by position (the header's names), JSON by key
        // (the target's names; other keys are ignored).
        let names: Vec<String> = match spec.format {
            FileFormat::Csv => infer_text(file, bytes.clone(), spec, Some(1))?
                .into_iter()
                .map(|c| c.name)
                .collect(),
            _ => self
                .schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect(),
        };
        let text = Arc::new(Schema::new(
            names
                .iter()
                .map(|n| Field::new(n, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let input = decompress(file, bytes, spec)?;
        let batches: Box<dyn Iterator<Item = std::result::Result<RecordBatch, ArrowError>>> =
            match spec.format {
                FileFormat::Csv => Box::new(
                    arrow::csv::ReaderBuilder::new(text)
                        .with_header(spec.header)
                        .with_delimiter(spec.delimiter)
                        .with_quote(spec.quote)
                        .with_batch_size(self.batch_size)
                        .build(input)
                        .map_err(|e| bad(file, e))?,
                ),
                _ => Box::new(
                    arrow::json::ReaderBuilder::new(text)
                        .with_coerce_primitive(true)
                        .with_batch_size(self.batch_size)
                        .build(BufReader::new(input))
                        .map_err(|e| bad(file, e))?,
                ),
            };
        // 1-based line of the first data row.
        let mut line = 1 + u64::from(spec.format == FileFormat::Csv && spec.header);
        for batch in batches {
            let batch = batch.map_err(|e| match e {
                // Reading the (decompressed) bytes failed, not parsing a row.
                ArrowError::IoError(_, io) => bad(file, io),
                e => bad(file, format!("malformed row: {e}")),
            })?;
            let out = conform_text(&batch, &self.schema, spec, file, line)?;
            line += batch.num_rows() as u64;
            if tx.blocking_send(Ok(out)).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

async fn parquet_builder(
    store: &Arc<dyn ObjectStore>,
    file: &Listed,
) -> Result<ParquetRecordBatchStreamBuilder<ParquetObjectReader>> {
    let reader =
        ParquetObjectReader::new(store.clone(), file.location.clone()).with_file_size(file.size);
    ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| bad(file, format!("not a readable Parquet file: {e}")))
}

async fn fetch(store: &Arc<dyn ObjectStore>, file: &Listed) -> Result<bytes::Bytes> {
    let get = store.get(&file.location).await?;
    Ok(get.bytes().await?)
}

/// The decompressed bytes of a text file, as a reader.
fn decompress(
    file: &Listed,
    bytes: bytes::Bytes,
    spec: &FilesTable,
) -> Result<Box<dyn Read + Send>> {
    let codec = match spec.compression {
        FileCompression::Auto if file.rel.ends_with(".gz") => FileCompression::Gzip,
        FileCompression::Auto if file.rel.ends_with(".zst") => FileCompression::Zstd,
        FileCompression::Auto => FileCompression::None,
        other => other,
    };
    let raw = Cursor::new(bytes);
    Ok(match codec {
        FileCompression::Gzip => Box::new(Labeled {
            inner: flate2::read::MultiGzDecoder::new(raw),
            what: "not valid gzip",
        }),
        FileCompression::Zstd => Box::new(Labeled {
            inner: zstd::stream::read::Decoder::new(raw)
                .map_err(|e| bad(file, format!("not valid zstd: {e}")))?,
            what: "not valid zstd",
        }),
        _ => Box::new(raw),
    })
}

/// A decompressing reader whose errors say what the file is not (`not valid gzip: ...`).
struct Labeled<R> {
    inner: R,
    what: &'static str,
}

impl<R: Read> Read for Labeled<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner
            .read(buf)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", self.what)))
    }
}

/// Infers the columns of a CSV or JSON-lines file from its first `rows` rows.
fn infer_text(
    file: &Listed,
    bytes: bytes::Bytes,
    spec: &FilesTable,
    rows: Option<usize>,
) -> Result<Vec<ColumnShape>> {
    let input = decompress(file, bytes, spec)?;
    let (schema, _) = match spec.format {
        FileFormat::Csv => {
            let mut format = arrow::csv::reader::Format::default()
                .with_header(spec.header)
                .with_delimiter(spec.delimiter)
                .with_quote(spec.quote);
            // The empty field and `null_value` are NULL, as when the values are read.
            if let Some(nv) = &spec.null_value {
                let null = regex::Regex::new(&format!("^(|{})$", regex::escape(nv)))
                    .map_err(|e| Error::Internal(format!("null_value pattern: {e}")))?;
                format = format.with_null_regex(null);
            }
            format.infer_schema(input, rows)
        }
        _ => arrow::json::reader::infer_json_schema(BufReader::new(input), rows),
    }
    .map_err(|e| {
        bad(
            file,
            match e {
                ArrowError::IoError(_, io) => io.to_string(),
                e => format!("cannot read the file to infer its columns: {e}"),
            },
        )
    })?;
    Ok(shapes(&schema, true))
}

/// Infers a file's columns: Parquet from its footer, CSV and JSON from the first rows.
pub async fn infer(root: &Lake, file: &Listed, spec: &FilesTable) -> Result<Vec<ColumnShape>> {
    let store = root.store();
    if spec.format == FileFormat::Parquet {
        let builder = parquet_builder(&store, file).await?;
        return Ok(shapes(builder.schema(), false));
    }
    let bytes = fetch(&store, file).await?;
    let (file, spec) = (file.clone(), spec.clone());
    tokio::task::spawn_blocking(move || infer_text(&file, bytes, &spec, Some(INFER_ROWS)))
        .await
        .map_err(|e| Error::Internal(format!("inference task failed: {e}")))?
}

/// Column shapes of an inferred or footer schema, with types a Delta table stores: timestamps
/// in microseconds (Delta's unit), an all-empty column and nested JSON values as text. Nested
/// Parquet types (lists, structs, maps) are kept, with their members normalized the same way.
fn shapes(schema: &Schema, nested_as_text: bool) -> Vec<ColumnShape> {
    schema
        .fields()
        .iter()
        .map(|f| ColumnShape {
            name: f.name().clone(),
            data_type: storable(f.data_type(), nested_as_text),
            nullable: true,
            source_type: None,
        })
        .collect()
}

fn storable(t: &DataType, nested_as_text: bool) -> DataType {
    let member = |f: &Arc<Field>| {
        Arc::new(Field::new(
            f.name(),
            storable(f.data_type(), false),
            f.is_nullable(),
        ))
    };
    match t {
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        DataType::Date64 => DataType::Timestamp(TimeUnit::Microsecond, None),
        DataType::Null | DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        t if nested_as_text && t.is_nested() => DataType::Utf8,
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) => {
            DataType::List(member(f))
        }
        DataType::Struct(fs) => DataType::Struct(fs.iter().map(member).collect()),
        DataType::Map(f, sorted) => DataType::Map(member(f), *sorted),
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        other => other.clone(),
    }
}

/// Converts a batch of text columns to the target schema. Columns are matched by name; a
/// target column the file lacks is NULL. `first_line` is the 1-based line of the batch's first
/// row.
fn conform_text(
    batch: &RecordBatch,
    target: &SchemaRef,
    spec: &FilesTable,
    file: &Listed,
    first_line: u64,
) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for field in target.fields() {
        let Ok(idx) = batch.schema().index_of(field.name()) else {
            columns.push(missing(field, file, batch.num_rows())?);
            continue;
        };
        let text = batch
            .column(idx)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| Error::Internal("text column is not Utf8".into()))?;
        // The empty field and `null_value` are NULL.
        let nv = spec.null_value.as_deref();
        let text: StringArray = text
            .iter()
            .map(|v| v.filter(|s| !s.is_empty() && Some(*s) != nv))
            .collect();
        let out = arrow::compute::cast_with_options(
            &text,
            field.data_type(),
            &CastOptions {
                safe: true,
                ..Default::default()
            },
        )
        .map_err(|e| bad(file, format!("column `{}`: {e}", field.name())))?;
        if out.null_count() != text.null_count() || (!field.is_nullable() && out.null_count() > 0) {
            for i in 0..text.len() {
                let line = first_line + i as u64;
                if text.is_valid(i) && out.is_null(i) {
                    return Err(bad(
                        file,
                        format!(
                            "line {line}, column `{}`: value `{}` is not a valid {}",
                            field.name(),
                            text.value(i),
                            field.data_type()
                        ),
                    ));
                }
                if !field.is_nullable() && out.is_null(i) {
                    return Err(bad(
                        file,
                        format!(
                            "line {line}, column `{}`: empty value in a NOT NULL column",
                            field.name()
                        ),
                    ));
                }
            }
        }
        columns.push(out);
    }
    RecordBatch::try_new(target.clone(), columns).map_err(|e| bad(file, e))
}

/// Casts a Parquet batch to the target schema by column name; a value that does not convert
/// names the file and column.
fn conform_typed(batch: &RecordBatch, target: &SchemaRef, file: &Listed) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for field in target.fields() {
        let Ok(idx) = batch.schema().index_of(field.name()) else {
            columns.push(missing(field, file, batch.num_rows())?);
            continue;
        };
        let col = batch.column(idx);
        let out = if col.data_type() == field.data_type() {
            col.clone()
        } else {
            arrow::compute::cast_with_options(
                col,
                field.data_type(),
                &CastOptions {
                    safe: false,
                    ..Default::default()
                },
            )
            .map_err(|e| {
                bad(
                    file,
                    format!(
                        "column `{}`: cannot convert {} to {}: {e}",
                        field.name(),
                        col.data_type(),
                        field.data_type()
                    ),
                )
            })?
        };
        columns.push(out);
    }
    RecordBatch::try_new(target.clone(), columns).map_err(|e| bad(file, e))
}

/// A column the file does not have: NULL when the column is nullable, else an error.
fn missing(field: &Field, file: &Listed, rows: usize) -> Result<ArrayRef> {
    if field.is_nullable() {
        Ok(new_null_array(field.data_type(), rows))
    } else {
        Err(bad(
            file,
            format!(
                "has no column `{}` (NOT NULL in the contract)",
                field.name()
            ),
        ))
    }
}
