//! Reading one file into Arrow batches of the table's schema, and inferring a file's columns.
//!
//! CSV and JSON lines are read as text columns first (CSV records with the `csv` crate, which
//! gives each record's line and accepts records of any width; JSON with arrow-json), then each
//! column is converted to its target type with Arrow's cast kernel; a non-empty value that does
//! not convert, a record with the wrong number of fields, or a value that breaks its declared
//! type is a malformed row, reported with the file, the line and the column, or rejected to the
//! quarantine under `on_error = "quarantine"` (see `crate::quarantine`). Parquet is read with its
//! own types and cast by column name.

use std::io::{BufRead, BufReader, Cursor, Read, Seek, SeekFrom};
use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, RecordBatch, StringArray, StringBuilder};
use arrow::compute::CastOptions;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use futures::{StreamExt, TryStreamExt};
use object_store::{GetResultPayload, ObjectStore, ObjectStoreExt};
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
use tokio::sync::mpsc::{Sender, UnboundedSender};

use super::listing::Listed;
use super::INFER_ROWS;
use crate::config::{FileCompression, FileFormat, FilesTable};
use crate::error::{Error, Result};
use crate::quarantine::{OnError, Rejected};
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
    /// Lake table name (for messages: `bronze.<table>`).
    pub table: String,
    /// The target columns with their declared source types (the contract's), checked row by
    /// row (see [`crate::quarantine::check`]).
    pub columns: Vec<ColumnShape>,
    /// What a malformed row does.
    pub on_error: OnError,
    /// Where rejected rows go under `on_error = "quarantine"`.
    pub rejected: Option<UnboundedSender<RecordBatch>>,
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
            // Rows of the file read so far: a row is named by its 1-based row in the file.
            let mut seen = 0usize;
            while let Some(batch) = stream
                .try_next()
                .await
                .map_err(|e| bad(file, format!("not a readable Parquet file: {e}")))?
            {
                let typed = conform_typed(&batch, &self.schema, file)?;
                let mut rejected =
                    self.violations(&typed, file, "row", |row| (seen + row + 1) as i64)?;
                seen += batch.num_rows();
                let out = self.keep_good(&typed, &typed, &mut rejected, file)?;
                if tx.send(Ok(out)).await.is_err() {
                    return Ok(());
                }
            }
            return Ok(());
        }
        // Every column is read as text: CSV by position (the header's names, from a first
        // short read of the file), JSON by key (the target's names; other keys are ignored).
        let names: Vec<String> = match self.spec.format {
            FileFormat::Csv => infer_streamed(&self.store, file, &self.spec, 1)
                .await?
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
        let input = open(&self.store, file).await?;
        let this = self.clone();
        let file = file.clone();
        let tx = tx.clone();
        tokio::task::spawn_blocking(move || this.read_text(&file, input, &names, &tx))
            .await
            .map_err(|e| Error::Internal(format!("file reader task failed: {e}")))?
    }

    /// Decodes a CSV or JSON-lines file, streamed from the store (see [`open`]), on a blocking
    /// thread, as text columns `names`.
    fn read_text(
        &self,
        file: &Listed,
        input: Streamed,
        names: &[String],
        tx: &Sender<Result<RecordBatch>>,
    ) -> Result<()> {
        let text = Arc::new(Schema::new(
            names
                .iter()
                .map(|n| Field::new(n, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let input = decompress(file, input, &self.spec)?;
        if self.spec.format == FileFormat::Csv {
            return self.read_csv(file, input, &text, tx);
        }
        self.read_json(file, input, &text, tx)
    }

    /// Reads a JSON-lines file as batches of text columns `text`, one object per line, with each
    /// row's 1-based line (blank lines are skipped). A line that is not valid UTF-8 or not a JSON
    /// object cannot be read: with `on_error = "fail"` it stops the run naming the file and line
    /// (exit 2), with `quarantine` it is rejected with its text (lossily decoded).
    fn read_json(
        &self,
        file: &Listed,
        input: Box<dyn Read + Send>,
        text: &SchemaRef,
        tx: &Sender<Result<RecordBatch>>,
    ) -> Result<()> {
        let mut decoder = arrow::json::ReaderBuilder::new(text.clone())
            .with_coerce_primitive(true)
            .with_batch_size(self.batch_size)
            .build_decoder()
            .map_err(|e| bad(file, e))?;
        let mut input = BufReader::new(input);
        let (mut buf, mut line, mut lines, mut wrong) = (Vec::new(), 0u64, Vec::new(), Vec::new());
        // Converts and sends the rows decoded so far; false when the receiver is gone.
        let flush = |decoder: &mut arrow::json::reader::Decoder,
                     lines: &mut Vec<u64>,
                     wrong: &mut Vec<Unreadable>|
         -> Result<bool> {
            if !wrong.is_empty() {
                self.reject_unreadable(file, text, wrong)?;
                wrong.clear();
            }
            let Some(batch) = decoder.flush().map_err(|e| bad(file, e))? else {
                return Ok(true);
            };
            let out = self.conform_text(&batch, file, lines)?;
            lines.clear();
            Ok(tx.blocking_send(Ok(out)).is_ok())
        };
        loop {
            buf.clear();
            // Reading the (decompressed) bytes failed, not parsing a row.
            if input
                .read_until(b'\n', &mut buf)
                .map_err(|e| read_failed(file, e))?
                == 0
            {
                flush(&mut decoder, &mut lines, &mut wrong)?;
                return Ok(());
            }
            line += 1;
            let body = buf.trim_ascii();
            if body.is_empty() {
                continue;
            }
            if let Some(problem) = json_line_problem(body) {
                let raw = String::from_utf8_lossy(body);
                if self.on_error == OnError::Fail {
                    // Rows before it are checked first, so an earlier bad line is reported first.
                    flush(&mut decoder, &mut lines, &mut wrong)?;
                    return Err(bad(
                        file,
                        format!(
                            "line {line}: {problem}: `{}`",
                            crate::quarantine::shown(&raw)
                        ),
                    ));
                }
                wrong.push(Unreadable {
                    line,
                    column: None,
                    problem: format!("{problem}: `{}`", crate::quarantine::shown(&raw)),
                    fields: Vec::new(),
                });
                continue;
            }
            // The decoder stops at a full batch only after a whole object (flushed below).
            for mut rest in [body, b"\n".as_slice()] {
                while !rest.is_empty() {
                    let n = decoder
                        .decode(rest)
                        .map_err(|e| bad(file, format!("line {line}: malformed row: {e}")))?;
                    if n == 0 {
                        break;
                    }
                    rest = &rest[n..];
                }
            }
            lines.push(line);
            if lines.len() >= self.batch_size && !flush(&mut decoder, &mut lines, &mut wrong)? {
                return Ok(());
            }
        }
    }

    /// Reads a CSV file as batches of text columns `text` (the header's names), with the line
    /// each record starts on (a quoted field may span lines). A record whose number of fields
    /// differs from the header's is malformed: with `on_error = "fail"` it stops the run
    /// (exit 2), with `quarantine` it is rejected with its line.
    fn read_csv(
        &self,
        file: &Listed,
        input: Box<dyn Read + Send>,
        text: &SchemaRef,
        tx: &Sender<Result<RecordBatch>>,
    ) -> Result<()> {
        let spec = &self.spec;
        let width = text.fields().len();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(spec.header)
            .delimiter(spec.delimiter)
            .quote(spec.quote)
            .flexible(true)
            .from_reader(input);
        let mut raw = csv::ByteRecord::new();
        let mut done = false;
        while !done {
            let mut columns: Vec<StringBuilder> =
                (0..width).map(|_| StringBuilder::new()).collect();
            let mut lines = Vec::new();
            let mut wrong: Vec<Unreadable> = Vec::new();
            while lines.len() < self.batch_size {
                match reader.read_byte_record(&mut raw) {
                    Ok(true) => {}
                    Ok(false) => {
                        done = true;
                        break;
                    }
                    Err(e) => return Err(csv_failed(file, e, "malformed row")),
                }
                let line = raw.position().map_or(0, |p| p.line());
                let record = match csv::StringRecord::from_byte_record(raw.clone()) {
                    Ok(r) if r.len() == width => r,
                    Ok(r) => Unreadable {
                        line,
                        column: None,
                        problem: format!("{} fields where the header has {width}", r.len()),
                        fields: r.iter().map(str::to_string).collect(),
                    }
                    .handle(
                        self,
                        file,
                        text,
                        &mut columns,
                        &lines,
                        &mut wrong,
                    )?,
                    Err(e) => {
                        let at = e.utf8_error().field();
                        Unreadable {
                            line,
                            column: text.fields().get(at).map(|f| f.name().clone()),
                            problem: format!(
                                "field {} is not valid UTF-8 ({})",
                                at + 1,
                                e.utf8_error()
                            ),
                            fields: raw
                                .iter()
                                .map(|f| String::from_utf8_lossy(f).into_owned())
                                .collect(),
                        }
                        .handle(
                            self,
                            file,
                            text,
                            &mut columns,
                            &lines,
                            &mut wrong,
                        )?
                    }
                };
                if record.is_empty() && width > 0 {
                    continue;
                }
                for (b, v) in columns.iter_mut().zip(record.iter()) {
                    b.append_value(v);
                }
                lines.push(line);
            }
            if !wrong.is_empty() {
                self.reject_unreadable(file, text, &wrong)?;
            }
            if lines.is_empty() {
                continue;
            }
            let columns: Vec<ArrayRef> = columns
                .into_iter()
                .map(|mut b| Arc::new(b.finish()) as ArrayRef)
                .collect();
            let batch = RecordBatch::try_new(text.clone(), columns).map_err(|e| bad(file, e))?;
            let out = self.conform_text(&batch, file, &lines)?;
            if tx.blocking_send(Ok(out)).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Sends records that cannot be read (wrong number of fields, invalid UTF-8, a malformed
    /// JSON line) to the rejected rows: the fields at the header's positions under the target's
    /// column names (as text, invalid UTF-8 replaced by U+FFFD), and the problem with the whole
    /// record in the reason.
    fn reject_unreadable(
        &self,
        file: &Listed,
        text: &SchemaRef,
        rows: &[Unreadable],
    ) -> Result<()> {
        if self.rejected.is_none() {
            return Ok(());
        }
        let names: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let columns: Vec<ArrayRef> = names
            .iter()
            .map(|n| {
                let at = text.index_of(n).ok();
                Arc::new(StringArray::from_iter(
                    rows.iter()
                        .map(|r| at.and_then(|i| r.fields.get(i)).map(String::as_str)),
                )) as ArrayRef
            })
            .collect();
        let schema = crate::quarantine::rejected_schema(names.iter().copied())
            .project(&(0..names.len()).collect::<Vec<_>>())?;
        let batch = RecordBatch::try_new(Arc::new(schema), columns)?;
        let delimiter = char::from(self.spec.delimiter).to_string();
        let rejected: Vec<Rejected> = rows
            .iter()
            .enumerate()
            .map(|(row, r)| Rejected {
                row,
                column: r.column.clone(),
                reason: if r.fields.is_empty() {
                    r.problem.clone()
                } else {
                    format!("{}: `{}`", r.problem, r.fields.join(&delimiter))
                },
                line: Some(r.line as i64),
            })
            .collect();
        self.send_rejected(crate::quarantine::rejected_batch(
            &batch, &rejected, &file.rel,
        )?)
    }
}

/// A record that cannot be read at all: the wrong number of fields, invalid UTF-8, or a JSON
/// line that does not parse.
struct Unreadable {
    /// 1-based line.
    line: u64,
    /// The column, when known (the field with invalid UTF-8).
    column: Option<String>,
    /// What is wrong.
    problem: String,
    /// The fields as text (lossily decoded), or the whole line for JSON.
    fields: Vec<String>,
}

impl Unreadable {
    /// With `on_error = "fail"`, the error naming the file, line and column (exit 2), after the
    /// rows read before it in the batch (`columns`, `lines`) are checked, so an earlier bad line
    /// is reported first; with `quarantine`, the record joins `wrong` and an empty record is
    /// returned (skipped by the caller).
    fn handle(
        self,
        reader: &Reader,
        file: &Listed,
        text: &SchemaRef,
        columns: &mut [StringBuilder],
        lines: &[u64],
        wrong: &mut Vec<Unreadable>,
    ) -> Result<csv::StringRecord> {
        if reader.on_error == OnError::Fail {
            let columns: Vec<ArrayRef> = columns
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef)
                .collect();
            let batch = RecordBatch::try_new(text.clone(), columns).map_err(|e| bad(file, e))?;
            reader.conform_text(&batch, file, lines)?;
            let at = match &self.column {
                Some(c) => format!("line {}, column `{c}`", self.line),
                None => format!("line {}", self.line),
            };
            return Err(bad(file, format!("{at}: {}", self.problem)));
        }
        wrong.push(self);
        Ok(csv::StringRecord::new())
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

/// Chunks of a file read ahead of its decoder: enough to keep the store busy while the decoder
/// works, few enough that memory does not grow with the file (object_store yields chunks of a
/// network frame or so from S3 and Azure).
const READ_AHEAD: usize = 64;

/// Streams a file from the store: a task on the runtime reads the object's byte stream and
/// hands its chunks through a bounded channel to a [`Streamed`] reader, which a blocking decoder
/// reads. At most [`READ_AHEAD`] chunks wait at any time, so memory does not depend on the
/// file's size; dropping the reader stops the task. A local file (object_store hands over its
/// open file) is read directly by the decoder's thread.
async fn open(store: &Arc<dyn ObjectStore>, file: &Listed) -> Result<Streamed> {
    let got = store.get(&file.location).await?;
    let range = got.range.clone();
    let mut stream = match got.payload {
        GetResultPayload::File(mut local, _) => {
            local.seek(SeekFrom::Start(range.start))?;
            return Ok(Streamed::Local(local.take(range.end - range.start)));
        }
        GetResultPayload::Stream(stream) => stream,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
    tokio::spawn(async move {
        while let Some(chunk) = stream.next().await {
            let failed = chunk.is_err();
            if chunk.as_ref().is_ok_and(|c| c.is_empty()) {
                continue;
            }
            if tx.send(chunk.map_err(Error::from)).await.is_err() || failed {
                return;
            }
        }
        // The end, marked: a channel closed without it means the task stopped early.
        let _ = tx.send(Ok(bytes::Bytes::new())).await;
    });
    Ok(Streamed::Remote {
        rx,
        chunk: bytes::Bytes::new(),
        ended: false,
    })
}

/// The bytes of a file as they arrive from the store (see [`open`]), for a decoder on a
/// blocking thread. A storage error is passed on inside an `io::Error` (see [`read_failed`]).
enum Streamed {
    /// A local file, read directly.
    Local(std::io::Take<std::fs::File>),
    /// Chunks from the store's byte stream.
    Remote {
        /// The chunks; an empty chunk marks the end.
        rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes>>,
        /// What is left of the current chunk.
        chunk: bytes::Bytes,
        /// Whether the end was seen.
        ended: bool,
    },
}

impl Read for Streamed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use bytes::Buf;
        let (rx, chunk, ended) = match self {
            Streamed::Local(local) => return local.read(buf),
            Streamed::Remote { rx, chunk, ended } => (rx, chunk, ended),
        };
        while chunk.is_empty() && !*ended {
            match rx.blocking_recv() {
                Some(Ok(next)) if next.is_empty() => *ended = true,
                Some(Ok(next)) => *chunk = next,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => {
                    return Err(std::io::Error::other(Error::Source {
                        message: "the read stopped before the end of the file".into(),
                        retryable: true,
                    }))
                }
            }
        }
        let n = buf.len().min(chunk.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        chunk.advance(n);
        Ok(n)
    }
}

/// The error of a failed read of a streamed text file, naming the file: a storage error
/// (network, service) keeps its retryability, so a dropped connection is transient (exit 75);
/// anything else (a file that does not decompress) is a data error (exit 2).
fn read_failed(file: &Listed, e: std::io::Error) -> Error {
    if !e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        return bad(file, e);
    }
    match e.into_inner().map(|inner| inner.downcast::<Error>()) {
        Some(Ok(inner)) => Error::Source {
            message: format!("file `{}`: {inner}", file.rel),
            retryable: inner.is_retryable(),
        },
        _ => Error::Internal("a storage error was lost".into()),
    }
}

/// The error of the CSV reader: reading the (decompressed) bytes failed (see [`read_failed`]),
/// or else `what` (`malformed row`) with the parser's message.
fn csv_failed(file: &Listed, e: csv::Error, what: &str) -> Error {
    if !e.is_io_error() {
        return bad(file, format!("{what}: {e}"));
    }
    match e.into_kind() {
        csv::ErrorKind::Io(io) => read_failed(file, io),
        kind => bad(file, format!("{what}: {kind:?}")),
    }
}

/// The decompressed bytes of a text file, as a reader.
fn decompress(
    file: &Listed,
    raw: impl Read + Send + 'static,
    spec: &FilesTable,
) -> Result<Box<dyn Read + Send>> {
    let codec = match spec.compression {
        FileCompression::Auto if file.rel.ends_with(".gz") => FileCompression::Gzip,
        FileCompression::Auto if file.rel.ends_with(".zst") => FileCompression::Zstd,
        FileCompression::Auto => FileCompression::None,
        other => other,
    };
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

/// What makes one line of a JSON-lines file (trimmed, not blank) unreadable: invalid UTF-8, or
/// not one JSON object; `None` when it is one.
fn json_line_problem(body: &[u8]) -> Option<String> {
    match std::str::from_utf8(body) {
        Err(e) => Some(format!("not valid UTF-8 ({e})")),
        Ok(_) if body.first() != Some(&b'{') => Some("not a JSON object".to_string()),
        Ok(_) => serde_json::from_slice::<serde::de::IgnoredAny>(body)
            .err()
            .map(|e| format!("not valid JSON ({e})")),
    }
}

/// The first `rows` readable lines of a JSON-lines file (see [`json_line_problem`]): inference
/// skips unreadable lines, which the read then reports, or rejects, with their line.
fn readable_json(
    file: &Listed,
    input: Box<dyn Read + Send>,
    rows: Option<usize>,
) -> Result<Vec<u8>> {
    let (mut out, mut kept) = (Vec::new(), 0);
    for line in BufReader::new(input).split(b'\n') {
        let line = line.map_err(|e| read_failed(file, e))?;
        let body = line.trim_ascii();
        if body.is_empty() || json_line_problem(body).is_some() {
            continue;
        }
        out.extend_from_slice(body);
        out.push(b'\n');
        kept += 1;
        if Some(kept) == rows {
            break;
        }
    }
    Ok(out)
}

/// A decompressing reader whose errors say what the file is not (`not valid gzip: ...`).
struct Labeled<R> {
    inner: R,
    what: &'static str,
}

impl<R: Read> Read for Labeled<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            // A storage error under the decompressor is passed on as it is.
            if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
                return e;
            }
            std::io::Error::new(e.kind(), format!("{}: {e}", self.what))
        })
    }
}

/// Infers the columns of a CSV or JSON-lines file from its first `rows` rows.
fn infer_text(
    file: &Listed,
    input: Streamed,
    spec: &FilesTable,
    rows: Option<usize>,
) -> Result<Vec<ColumnShape>> {
    let input = decompress(file, input, spec)?;
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
            format.infer_schema(Cursor::new(well_formed(file, input, spec, rows)?), rows)
        }
        _ => arrow::json::reader::infer_json_schema(
            Cursor::new(readable_json(file, input, rows)?),
            rows,
        ),
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

/// The header and the first `rows` records of a CSV file that have the header's number of fields
/// (the first record's without a header), written back as CSV: inference skips malformed records,
/// which the read then reports, or rejects, with their line.
fn well_formed(
    file: &Listed,
    input: Box<dyn Read + Send>,
    spec: &FilesTable,
    rows: Option<usize>,
) -> Result<Vec<u8>> {
    let failed = |e: csv::Error| csv_failed(file, e, "cannot read the file to infer its columns");
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(spec.header)
        .delimiter(spec.delimiter)
        .quote(spec.quote)
        .flexible(true)
        .from_reader(input);
    let mut out = csv::WriterBuilder::new()
        .delimiter(spec.delimiter)
        .quote(spec.quote)
        .flexible(true)
        .from_writer(Vec::new());
    let mut width = None;
    if spec.header {
        let header = reader.headers().map_err(failed)?.clone();
        header_problem(&header).map_or(Ok(()), |p| Err(bad(file, p)))?;
        width = Some(header.len());
        out.write_record(&header).map_err(failed)?;
    }
    let mut kept = 0;
    for record in reader.byte_records() {
        // A record that is not UTF-8 is skipped like one of the wrong width.
        let Ok(record) = csv::StringRecord::from_byte_record(record.map_err(failed)?) else {
            continue;
        };
        if *width.get_or_insert(record.len()) != record.len() {
            continue;
        }
        out.write_record(&record).map_err(failed)?;
        kept += 1;
        if Some(kept) == rows {
            break;
        }
    }
    out.into_inner().map_err(|e| {
        bad(
            file,
            format!("cannot read the file to infer its columns: {e}"),
        )
    })
}

/// Why a CSV file's header (its first record) cannot name the file's columns: there is none (an
/// empty file, which is no snapshot, unlike a header-only file), or it names a column twice
/// (the second column would be lost).
fn header_problem(header: &csv::StringRecord) -> Option<String> {
    if header.iter().all(str::is_empty) {
        return Some(
            "the file has no header line (it is empty); a CSV file with no rows still needs its header line, or leave the file out".into(),
        );
    }
    header.iter().enumerate().find_map(|(i, name)| {
        let first = header.iter().position(|n| n == name)?;
        (first < i).then(|| {
            format!(
                "the header names column `{name}` twice (columns {} and {}); rename one of them",
                first + 1,
                i + 1
            )
        })
    })
}

/// Infers a file's columns: Parquet from its footer, CSV and JSON from the first rows.
pub async fn infer(root: &Lake, file: &Listed, spec: &FilesTable) -> Result<Vec<ColumnShape>> {
    let store = root.store();
    if spec.format == FileFormat::Parquet {
        let builder = parquet_builder(&store, file).await?;
        return Ok(shapes(builder.schema(), false));
    }
    infer_streamed(&store, file, spec, INFER_ROWS).await
}

/// Infers the columns of a CSV or JSON-lines file from its first `rows` rows, reading only as
/// much of the file as they take.
async fn infer_streamed(
    store: &Arc<dyn ObjectStore>,
    file: &Listed,
    spec: &FilesTable,
    rows: usize,
) -> Result<Vec<ColumnShape>> {
    let input = open(store, file).await?;
    let (file, spec) = (file.clone(), spec.clone());
    tokio::task::spawn_blocking(move || infer_text(&file, input, &spec, Some(rows)))
        .await
        .map_err(|e| Error::Internal(format!("inference task failed: {e}")))?
}

/// Whether the first [`INFER_ROWS`] rows of a CSV or JSON-lines file read as `column` (its type,
/// declared source type and nullability), the way a run would read them: `None` if they do,
/// else the first problem, naming the file and line.
pub async fn fits(
    root: &Lake,
    file: &Listed,
    spec: &FilesTable,
    table: &str,
    column: &ColumnShape,
) -> Option<String> {
    let reader = Reader {
        store: root.store(),
        spec: spec.clone(),
        schema: Arc::new(crate::schema::arrow_schema(std::slice::from_ref(column))),
        batch_size: INFER_ROWS,
        table: table.to_string(),
        columns: vec![column.clone()],
        on_error: OnError::Fail,
        rejected: None,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let task = {
        let file = file.clone();
        tokio::spawn(async move { reader.read(&file, &tx).await })
    };
    // Only the first batch counts; dropping the receiver stops the read.
    let first = rx.recv().await;
    drop(rx);
    let ended = task.await;
    match (first, ended) {
        (Some(Ok(_)), _) => None,
        (Some(Err(e)), _) | (None, Ok(Err(e))) => Some(e.to_string()),
        (None, Ok(Ok(()))) => None,
        (None, Err(e)) => Some(format!("the check failed: {e}")),
    }
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

impl Reader {
    /// Converts a batch of text columns to the target schema. Columns are matched by name; a
    /// target column the file lacks is NULL. `lines` holds the 1-based line of each row. A row with a value that does not convert, an empty value in a NOT NULL column
    /// (exit 2 with `on_error = "fail"`) or a value that breaks its declared type (exit 3) is
    /// rejected: with `on_error = "quarantine"` it is sent, as text with its line, to the
    /// rejected rows and left out of the result.
    fn conform_text(
        &self,
        batch: &RecordBatch,
        file: &Listed,
        lines: &[u64],
    ) -> Result<RecordBatch> {
        let (target, spec) = (&self.schema, &self.spec);
        let rows = batch.num_rows();
        let line_of = |row: usize| lines[row];
        let quarantine = self.on_error == OnError::Quarantine;
        let mut rejected: Vec<Rejected> = Vec::new();
        let mut reject = |row: usize, column: &str, reason: String| {
            if !rejected.iter().any(|r| r.row == row) {
                rejected.push(Rejected {
                    row,
                    column: Some(column.to_string()),
                    reason,
                    line: Some(line_of(row) as i64),
                });
            }
        };
        // The original text of every target column, and its typed values.
        let mut texts: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
        for field in target.fields() {
            let Ok(idx) = batch.schema().index_of(field.name()) else {
                columns.push(missing(field, file, rows)?);
                texts.push(new_null_array(&DataType::Utf8, rows));
                continue;
            };
            let raw = batch
                .column(idx)
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| Error::Internal("text column is not Utf8".into()))?;
            texts.push(batch.column(idx).clone());
            // The empty field and `null_value` are NULL.
            let nv = spec.null_value.as_deref();
            let text: StringArray = raw
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
            if out.null_count() != text.null_count()
                || (!field.is_nullable() && out.null_count() > 0)
            {
                for i in 0..text.len() {
                    let line = line_of(i);
                    let problem = if text.is_valid(i) && out.is_null(i) {
                        format!(
                            "value `{}` is not a valid {}",
                            crate::quarantine::shown(text.value(i)),
                            field.data_type()
                        )
                    } else if !field.is_nullable() && out.is_null(i) {
                        "empty value in a NOT NULL column".to_string()
                    } else {
                        continue;
                    };
                    if !quarantine {
                        return Err(bad(
                            file,
                            format!("line {line}, column `{}`: {problem}", field.name()),
                        ));
                    }
                    reject(i, field.name(), problem);
                }
            }
            columns.push(out);
        }
        // Values that convert but break their declared type (decimal precision, varchar(n)).
        let typed = relaxed(target, columns, file)?;
        for v in self.violations(&typed, file, "line", |row| line_of(row) as i64)? {
            reject(v.row, v.column.as_deref().unwrap_or_default(), v.reason);
        }
        if rejected.is_empty() {
            return self.keep_good(&typed, &typed, &mut rejected, file);
        }
        let text = RecordBatch::try_new(
            crate::quarantine::rejected_schema(target.fields().iter().map(|f| f.name().as_str()))
                .project(&(0..target.fields().len()).collect::<Vec<_>>())
                .map(Arc::new)?,
            texts,
        )
        .map_err(|e| bad(file, e))?;
        self.keep_good(&typed, &text, &mut rejected, file)
    }

    /// The rows of `typed` whose values break their declared types (a string longer than its
    /// `varchar(n)`, a decimal wider than its precision, a NULL in a NOT NULL column; see
    /// [`crate::quarantine::check`]), each with its 1-based `what` (`line` or `row`) in the
    /// file from `position`. With `on_error = "fail"` the first stops the run (exit 3) naming
    /// the file and its line or row.
    fn violations(
        &self,
        typed: &RecordBatch,
        file: &Listed,
        what: &str,
        position: impl Fn(usize) -> i64,
    ) -> Result<Vec<Rejected>> {
        let mut out = Vec::new();
        for v in crate::quarantine::check(&self.columns, typed) {
            if self.on_error == OnError::Fail {
                return Err(crate::quarantine::fail(
                    &self.table,
                    &v,
                    &file.rel,
                    Some((what, position(v.row))),
                ));
            }
            out.push(Rejected {
                line: Some(position(v.row)),
                ..Rejected::from(&v)
            });
        }
        Ok(out)
    }

    /// The rows of `typed` not in `rejected`, in the target schema; the rejected rows go, with
    /// their values as in `shown` (the file's text for CSV and JSON, `typed` for Parquet), to
    /// the rejected rows.
    fn keep_good(
        &self,
        typed: &RecordBatch,
        shown: &RecordBatch,
        rejected: &mut [Rejected],
        file: &Listed,
    ) -> Result<RecordBatch> {
        if !rejected.is_empty() {
            rejected.sort_by_key(|r| r.row);
            self.send_rejected(crate::quarantine::rejected_batch(
                shown, rejected, &file.rel,
            )?)?;
        }
        let good = crate::quarantine::without_rows(typed, rejected)?;
        RecordBatch::try_new(self.schema.clone(), good.columns().to_vec()).map_err(|e| bad(file, e))
    }

    /// Sends rejected rows to the quarantine writer (under `on_error = "quarantine"`).
    fn send_rejected(&self, batch: RecordBatch) -> Result<()> {
        match &self.rejected {
            Some(tx) => tx
                .send(batch)
                .map_err(|_| Error::Internal("the rejected-rows writer is gone".into())),
            None => Ok(()),
        }
    }
}

/// `columns` as a batch of `target`'s columns, all nullable: NULLs in NOT NULL columns are
/// found by [`crate::quarantine::check`] before the batch takes the target schema.
fn relaxed(target: &SchemaRef, columns: Vec<ArrayRef>, file: &Listed) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(
        target
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    RecordBatch::try_new(schema, columns).map_err(|e| bad(file, e))
}

/// Casts a Parquet batch to the target schema's types by column name (all columns nullable, see
/// [`relaxed`]); a value that does not convert names the file and column.
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
    relaxed(target, columns, file)
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
