//! The one error type of Smelter, and the one place that classifies it.
//!
//! Every failure is classified once, here, so that `main.rs` can turn it into the exit code Airflow
//! reads. The exit code follows from the *kind of fault* ([`Kind`]), not from the crate that raised
//! it: a divide-by-zero raised by Arrow inside a silver model is the model's fault (exit 2), a
//! `No space left on device` inside a Parquet or Delta error is a full disk (exit 75), and an Arrow
//! error that no model or table claims is a bug in Smelter (exit 1).
//!
//! Errors are wrapped where the model or table is known ([`Error::Model`], [`Error::Table`]), so
//! the message names the model file or the table, column and landing file. `docs/errors.md` holds
//! the table of kinds, exit codes and hints.

use std::error::Error as StdError;

use datafusion::error::DataFusionError;
use deltalake::DeltaTableError;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exit codes, as documented in DESIGN.md and `docs/errors.md`, and read by the Airflow DAG.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Internal bug.
    pub const INTERNAL: i32 = 1;
    /// Usage, config, SQL or schema error (including SQL that fails on the data): fatal, do not
    /// retry.
    pub const USAGE: i32 = 2;
    /// Data-quality failure (including a landed value that breaks its declared type): fatal.
    pub const QUALITY: i32 = 3;
    /// Transient (network, storage, disk full, source busy): retry.
    pub const TRANSIENT: i32 = 75;
    /// Nothing to do: Airflow marks the task skipped.
    pub const NOTHING_TO_DO: i32 = 99;
}

/// Every error Smelter can report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pipeline file could not be read or is invalid.
    #[error("{file}: {message}")]
    Config {
        /// The pipeline file.
        file: String,
        /// What is wrong, naming the key and the valid choices.
        message: String,
    },
    /// Several problems found while validating a pipeline, reported all at once.
    #[error("{} problem(s) found:\n  {}", .0.len(), .0.join("\n  "))]
    Invalid(Vec<String>),
    /// A SQL model failed to parse or plan.
    #[error("{location}: {message}")]
    Sql {
        /// `file:line:col` of the problem.
        location: String,
        /// The parser or planner message.
        message: String,
    },
    /// A data-quality expectation with action `fail` did not hold.
    #[error("data quality check failed for {model}: {message}")]
    Quality {
        /// The model whose expectation failed.
        model: String,
        /// Which rule and how many rows.
        message: String,
        /// What was measured, for the run log and the run summary: `{"expectations": [...]}`
        /// (every rule's result) or `{"drift": [...]}` (the findings); `Null` when nothing more.
        findings: serde_json::Value,
    },
    /// The requested layer had no input (for example no landed files for this run id).
    #[error("nothing to do: {0}")]
    NothingToDo(String),
    /// Bad command-line usage.
    #[error("{0}")]
    Usage(String),
    /// A storage failure that names the (credential-free) URL.
    #[error("storage error at {url}: {message}")]
    Storage {
        /// The URL, without secrets.
        url: String,
        /// What failed and what to check.
        message: String,
        /// Whether a retry may succeed.
        retryable: bool,
    },
    /// A failure of the Ballista cluster a query ran on (`[engine] mode = "ballista"`): the
    /// scheduler cannot be reached, or an executor was lost and the job failed.
    #[error("cluster error at {url}: {message}")]
    Cluster {
        /// The scheduler's URL.
        url: String,
        /// What failed.
        message: String,
        /// Whether a retry may succeed.
        retryable: bool,
    },
    /// A source (SQL Server, files) failure.
    #[error("source error: {message}")]
    Source {
        /// What failed.
        message: String,
        /// Whether a retry may succeed.
        retryable: bool,
    },
    /// A failure while running one SQL model (plan, expectations, write, profile): names the
    /// model and its file. The kind comes from `source`, read as "the model's SQL failed".
    #[error("{file}: model `{model}` failed: {source}")]
    Model {
        /// `<layer>.<name>` of the model.
        model: String,
        /// The model file, as shown to the user (relative to the project).
        file: String,
        /// The table the model writes (credential-free URL), for environment hints.
        location: String,
        /// What failed.
        source: Box<Error>,
    },
    /// A failure while extracting or loading one table: names the table and, when known, the
    /// column and the landing file. The kind comes from `kind` when a diagnosis found the cause,
    /// else from `source`, read as "the landed data failed".
    #[error("{}", table_message(.table, .column.as_deref(), .file.as_deref(), .detail.as_deref(), .source))]
    Table {
        /// `landing.<table>` or `bronze.<table>`.
        table: String,
        /// The table's location (credential-free URL), for environment hints.
        location: String,
        /// The column at fault, when known.
        column: Option<Box<str>>,
        /// The landing file (or landing directory) at fault, when known.
        file: Option<Box<str>>,
        /// What a diagnosis of the landed data found, e.g. "is Utf8 in the landing file but
        /// Decimal128(10, 3) in the table".
        detail: Option<Box<str>>,
        /// The kind the diagnosis decided on, which overrides the one read from `source`.
        kind: Option<Kind>,
        /// What failed.
        source: Box<Error>,
    },
    /// A value that breaks its column's declared type (a decimal wider than its precision, a
    /// string longer than its `varchar(n)`, a NULL in a NOT NULL column) under
    /// `on_error = "fail"`: exit 3. The message names `bronze.<table>`, the column, the declared
    /// type, the value and the file (and line or row); see `crate::quarantine`.
    #[error("{message}")]
    Rejected {
        /// `bronze.<table>`.
        table: String,
        /// The column.
        column: String,
        /// The source file (files source) or landing file.
        file: String,
        /// The whole message.
        message: String,
    },
    /// DataFusion planning or execution error (shown without any backtrace).
    #[error("{}", .0.strip_backtrace())]
    DataFusion(#[from] DataFusionError),
    /// Delta Lake error.
    #[error("{}", delta_message(.0))]
    Delta(#[from] DeltaTableError),
    /// Arrow error.
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    /// Parquet error.
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Object store error.
    #[error(transparent)]
    ObjectStore(#[from] object_store::Error),
    /// Local I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// JSON (de)serialization error.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The process was asked to stop (SIGTERM from Airflow or a scheduler, SIGINT from a
    /// terminal) and abandoned the step in flight. Nothing partial is visible: data files are
    /// written before the single commit of each table, so an abandoned step leaves only
    /// unreferenced files. Retry the run (exit 75).
    #[error("stopped by {0} before the run finished; the step in flight was abandoned before its commit (nothing partial is visible); retry the run")]
    Interrupted(&'static str),
    /// A bug: an invariant did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

/// delta-rs wraps every Arrow error of a write, including cast and divide-by-zero errors of the
/// query it runs, as "Failed to convert into Arrow schema", and every Parquet error as "Failed to
/// parse parquet": show the inner error alone.
fn delta_message(e: &DeltaTableError) -> String {
    use deltalake::kernel::transaction::TransactionError as T;
    match e {
        DeltaTableError::Transaction {
            source: T::CommitConflict(_) | T::MaxCommitAttempts(_),
        } => format!(
            "{}: another writer committed to the table since this write read it (a concurrent run?); nothing of this write was committed, and a retry starts from the table's new version",
            e.to_string().lines().next().unwrap_or_default()
        ),
        DeltaTableError::Arrow { source } => source.to_string(),
        // "Failed to parse parquet" is delta-rs's wrapper for writes too (a full disk).
        DeltaTableError::Parquet { source } => source.to_string(),
        e => e.to_string(),
    }
}

/// `text` without the backtraces some crates append to their messages (DataFusion's
/// `backtrace:` section, delta-kernel's numbered frames when `RUST_BACKTRACE` is set): users
/// see what failed, not Smelter's call stack.
fn strip_backtraces(text: &str) -> String {
    let text = text
        .split(DataFusionError::BACK_TRACE_SEP)
        .next()
        .unwrap_or_default();
    let mut kept = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        let frame = t
            .split_once(": ")
            .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        if t == "stack backtrace:" || (frame && t.starts_with("0: ")) {
            break;
        }
        kept.push(line);
    }
    kept.join("\n").trim_end().to_string()
}

fn table_message(
    table: &str,
    column: Option<&str>,
    file: Option<&str>,
    detail: Option<&str>,
    source: &Error,
) -> String {
    let mut out = table.to_string();
    if let Some(c) = column {
        out.push_str(&format!(": column `{c}`"));
    }
    if let Some(d) = detail {
        out.push_str(&format!(" {d}"));
    }
    if let Some(f) = file {
        out.push_str(&format!(" ({f})"));
    }
    format!("{out}: {source}")
}

/// The kind of fault behind an error; it decides the exit code and the hint (`docs/errors.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad command line, pipeline file, SQL that does not parse or plan, a schema that does not
    /// match: exit 2.
    Usage,
    /// A model's SQL failed on the data (divide by zero, a cast that fails, a decimal overflow):
    /// the SQL must handle these values. Exit 2.
    SqlOnData,
    /// A landed column's type differs from the type of the table column it loads into: exit 2.
    SchemaDrift,
    /// A landed value breaks its declared type or constraint (invalid UTF-8 in a string column,
    /// NULL in a NOT NULL column, a value out of range): exit 3.
    BadValue,
    /// A data-quality expectation with action `fail`: exit 3.
    Quality,
    /// The lake (or another local path) is not writable: permission denied or read-only file
    /// system. Exit 2: a retry cannot succeed until someone changes the permissions.
    NotWritable,
    /// No space left on the device (or quota exceeded): exit 75, a retry may succeed once space
    /// is freed.
    DiskFull,
    /// Network, storage service, concurrent commit or busy source: exit 75.
    Transient,
    /// Nothing to do (no input for this run): exit 99.
    NothingToDo,
    /// A bug in Smelter: exit 1.
    Bug,
}

impl Kind {
    /// The kind's name in logs and `docs/errors.md`, e.g. `disk_full`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Usage => "usage",
            Kind::SqlOnData => "sql_on_data",
            Kind::SchemaDrift => "schema_drift",
            Kind::BadValue => "bad_value",
            Kind::Quality => "quality",
            Kind::NotWritable => "not_writable",
            Kind::DiskFull => "disk_full",
            Kind::Transient => "transient",
            Kind::NothingToDo => "nothing_to_do",
            Kind::Bug => "bug",
        }
    }

    /// The exit code of this kind (see [`exit`]).
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::Usage | Kind::SqlOnData | Kind::SchemaDrift | Kind::NotWritable => exit::USAGE,
            Kind::BadValue | Kind::Quality => exit::QUALITY,
            Kind::DiskFull | Kind::Transient => exit::TRANSIENT,
            Kind::NothingToDo => exit::NOTHING_TO_DO,
            Kind::Bug => exit::INTERNAL,
        }
    }

    /// The kind a data-dependent failure (cast, overflow, divide by zero, decode, constraint) has
    /// in `scope`: the model's SQL in a model, the landed data in a table load, and a bug where
    /// no model or table claims it (Smelter failed on its own data or forgot to say where).
    fn on_data(scope: Scope) -> Kind {
        match scope {
            Scope::Model => Kind::SqlOnData,
            Scope::Table => Kind::BadValue,
            Scope::None => Kind::Bug,
        }
    }
}

/// Where an error was raised, as far as the wrappers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    None,
    Model,
    Table,
}

impl Error {
    /// Builds a config error for `file`.
    pub fn config(file: impl std::fmt::Display, message: impl Into<String>) -> Self {
        Error::Config {
            file: file.to_string(),
            message: message.into(),
        }
    }

    /// Wraps an error raised while running model `model` (file `file`, writing to `location`),
    /// unless it already names the model's file (SQL errors carry `file:line:col`).
    pub fn in_model(self, model: &str, file: &str, location: &str) -> Self {
        match self {
            e @ (Error::Sql { .. } | Error::Model { .. } | Error::NothingToDo(_)) => e,
            e => Error::Model {
                model: model.to_string(),
                file: file.to_string(),
                location: location.to_string(),
                source: Box::new(e),
            },
        }
    }

    /// Wraps an error raised while extracting or loading table `table` (at `location`), naming
    /// the landing file or directory `file` when known. An error already wrapped is kept.
    pub fn in_table(self, table: &str, location: &str, file: Option<&str>) -> Self {
        match self {
            e @ (Error::Table { .. } | Error::Rejected { .. } | Error::NothingToDo(_)) => e,
            e => Error::Table {
                table: table.to_string(),
                location: location.to_string(),
                column: None,
                file: file.map(Into::into),
                detail: None,
                kind: None,
                source: Box::new(e),
            },
        }
    }

    /// The kind of fault: environment faults (permission, disk full) found anywhere in the
    /// source chain win, whatever layer or crate raised them; else the structure decides.
    pub fn kind(&self) -> Kind {
        self.environment()
            .map(|(kind, _)| kind)
            .unwrap_or_else(|| self.kind_in(Scope::None))
    }

    /// The exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        self.kind().exit_code()
    }

    /// Whether retrying the same command may succeed.
    pub fn is_retryable(&self) -> bool {
        self.exit_code() == exit::TRANSIENT
    }

    /// What to do about it, naming the path for environment faults.
    pub fn hint(&self) -> Option<String> {
        if let Some((kind, path)) = self.environment() {
            let at = path.unwrap_or_else(|| "the lake".into());
            return Some(match kind {
                Kind::DiskFull => format!(
                    "no space left on the device holding {at}: free space (or raise the quota), \
                     then retry the run"
                ),
                _ => format!(
                    "permission denied or read-only file system at {at}: make it writable by the \
                     user running Smelter, or point storage.root elsewhere"
                ),
            });
        }
        let text = self.to_string();
        if OUT_OF_MEMORY.iter().any(|p| text.contains(p)) {
            // DataFusion's own advice names its settings, not Smelter's.
            return Some(
                "the query ran out of its memory pool: raise `[engine] memory_limit_mb` \
                 (operators that can spill to disk do so below it; hash join build sides and \
                 window partitions cannot), or run fewer models at once (`[engine] threads`)"
                    .to_string(),
            );
        }
        let hint = match self.kind() {
            Kind::SqlOnData => {
                "the model's SQL fails on this data: handle these values in the SQL (e.g. \
                 TRY_CAST, NULLIF(divisor, 0), a wider DECIMAL)"
            }
            Kind::SchemaDrift => {
                "the landed column's type changed: fix the source or evolve the table's schema"
            }
            Kind::BadValue => {
                "a landed value breaks its declared type: fix the source data, then rerun \
                 extract and bronze with a new run id (or set `on_error = \"quarantine\"` to \
                 load the good rows and keep the bad ones in `bronze._quarantine_<table>`)"
            }
            // Storage faults, retryable or not (rejected credentials, a missing bucket), carry the
            // storage module's own hint of what to check.
            _ => {
                return object_store_source(self)
                    .map(|e| crate::storage::classify(e).hint().to_string())
            }
        };
        Some(hint.to_string())
    }

    /// The message for users: the error and its causes, without backtraces.
    pub fn user_message(&self) -> String {
        strip_backtraces(&self.to_string())
    }

    /// What the error knows about where it happened: `(field, value)` pairs for the log line
    /// (`model`, `file`, `table`, `column`).
    pub fn context(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match self {
            Error::Model { model, file, .. } => {
                out.push(("model", model.clone()));
                out.push(("file", file.clone()));
            }
            Error::Table {
                table,
                column,
                file,
                ..
            } => {
                out.push(("table", table.clone()));
                if let Some(c) = column {
                    out.push(("column", c.to_string()));
                }
                if let Some(f) = file {
                    out.push(("file", f.to_string()));
                }
            }
            Error::Rejected {
                table,
                column,
                file,
                ..
            } => {
                out.push(("table", table.clone()));
                out.push(("column", column.clone()));
                out.push(("file", file.clone()));
            }
            Error::Sql { location, .. } => out.push(("file", location.clone())),
            Error::Quality { model, .. } => out.push(("model", model.clone())),
            _ => {}
        }
        out
    }

    /// What a quality failure measured ([`Error::Quality`]'s `findings`), through the model or
    /// table that wraps it.
    pub fn findings(&self) -> Option<&serde_json::Value> {
        match self {
            Error::Quality { findings, .. } => Some(findings),
            Error::Model { source, .. } | Error::Table { source, .. } => source.findings(),
            _ => None,
        }
    }

    /// The value of one [`Error::context`] field (`model`, `table`, `column`, `file`), if the
    /// error names it.
    pub fn named(&self, key: &str) -> Option<String> {
        self.context()
            .into_iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    fn kind_in(&self, scope: Scope) -> Kind {
        match self {
            Error::Config { .. } | Error::Invalid(_) | Error::Sql { .. } | Error::Usage(_) => {
                Kind::Usage
            }
            Error::Quality { .. } => Kind::Quality,
            Error::Rejected { .. } => Kind::BadValue,
            Error::NothingToDo(_) => Kind::NothingToDo,
            Error::Storage { retryable, .. }
            | Error::Source { retryable, .. }
            | Error::Cluster { retryable, .. } => {
                if *retryable {
                    Kind::Transient
                } else {
                    Kind::Usage
                }
            }
            Error::Model { source, .. } => source.kind_in(Scope::Model),
            Error::Table {
                kind: Some(kind), ..
            } => *kind,
            Error::Table { source, .. } => source.kind_in(Scope::Table),
            Error::DataFusion(e) => datafusion_kind(e, scope),
            Error::Delta(e) => delta_kind(e, scope),
            Error::Arrow(e) => arrow_kind(e, scope),
            Error::Parquet(e) => parquet_kind(e, scope),
            Error::ObjectStore(e) => object_store_kind(e),
            Error::Io(_) | Error::Interrupted(_) => Kind::Transient,
            Error::Json(_) | Error::Internal(_) => Kind::Bug,
        }
    }

    /// A permission or disk-full fault anywhere in the chain, with the path it names (the
    /// deepest path in the messages, else the location of the model or table being written).
    fn environment(&self) -> Option<(Kind, Option<String>)> {
        let (kind, path) = match self {
            Error::Model {
                source, location, ..
            }
            | Error::Table {
                source, location, ..
            } => {
                let (kind, path) = source.environment()?;
                return Some((kind, path.or_else(|| Some(location.clone()))));
            }
            Error::Storage { url, message, .. } => {
                let kind = environment_in_text(message)?;
                (kind, path_in(message).or_else(|| Some(url.clone())))
            }
            Error::Source { message, .. } => (environment_in_text(message)?, path_in(message)),
            other => {
                let root: &(dyn StdError + 'static) = match other {
                    Error::DataFusion(e) => e,
                    Error::Delta(e) => e,
                    Error::Arrow(e) => e,
                    Error::Parquet(e) => e,
                    Error::ObjectStore(e) => e,
                    Error::Io(e) => e,
                    _ => return None,
                };
                environment_in_chain(root)?
            }
        };
        Some((kind, path))
    }
}

/// Walks `root` and its `source()` chain (including errors boxed inside `External` variants and
/// `io::Error`s), looking for EACCES/EPERM/EROFS (not writable) or ENOSPC/EDQUOT (disk full),
/// as an `io::Error` or, where a crate kept only the text, as `(os error N)` in the message.
fn environment_in_chain(root: &(dyn StdError + 'static)) -> Option<(Kind, Option<String>)> {
    let (mut kind, mut path) = (None, None);
    let mut node: Option<&(dyn StdError + 'static)> = Some(root);
    while let Some(e) = node {
        let text = e.to_string();
        let io = e.downcast_ref::<std::io::Error>();
        if let Some(k) = io.and_then(io_kind).or_else(|| environment_in_text(&text)) {
            kind = Some(k);
            // The deepest path wins: outer messages often name only a table, or nothing.
            if let Some(p) = path_in(&text) {
                path = Some(p);
            }
        }
        // `io::Error::source` skips a custom inner error; `get_ref` does not.
        node = match io {
            Some(io) => io.get_ref().map(|r| r as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    kind.map(|k| (k, path))
}

/// Environment kind of an `io::Error`, by OS error code.
fn io_kind(e: &std::io::Error) -> Option<Kind> {
    match e.raw_os_error() {
        Some(code) => os_kind(code),
        None => match e.kind() {
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                Some(Kind::NotWritable)
            }
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                Some(Kind::DiskFull)
            }
            _ => None,
        },
    }
}

/// EPERM 1, EACCES 13, EROFS 30: not writable; ENOSPC 28, EDQUOT 122: disk full (Linux codes).
fn os_kind(code: i32) -> Option<Kind> {
    match code {
        1 | 13 | 30 => Some(Kind::NotWritable),
        28 | 122 => Some(Kind::DiskFull),
        _ => None,
    }
}

/// Environment kind from a message where a crate kept only the text of an `io::Error`.
fn environment_in_text(text: &str) -> Option<Kind> {
    if text.contains("No space left on device") || text.contains("Disk quota exceeded") {
        return Some(Kind::DiskFull);
    }
    let mut rest = text;
    while let Some(i) = rest.find("(os error ") {
        rest = &rest[i + "(os error ".len()..];
        let code: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Some(kind) = code.parse().ok().and_then(os_kind) {
            return Some(kind);
        }
    }
    None
}

/// The first absolute local path in a message (`… file /lake/silver/t/part-1.parquet: …`).
fn path_in(text: &str) -> Option<String> {
    let start = text
        .match_indices('/')
        .map(|(i, _)| i)
        .find(|&i| i == 0 || matches!(text.as_bytes()[i - 1], b' ' | b'\'' | b'"' | b'`' | b'('))?;
    let path: String = text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && !matches!(c, '\'' | '"' | '`' | ')' | ','))
        .collect();
    let path = path.trim_end_matches([':', '.', ';']);
    (path.len() > 1).then(|| path.to_string())
}

fn object_store_kind(e: &object_store::Error) -> Kind {
    match e {
        object_store::Error::InvalidPath { .. } => Kind::Usage,
        e if crate::storage::classify(e).retryable() => Kind::Transient,
        _ => Kind::Usage,
    }
}

/// The storage error inside `e`, if any.
fn object_store_source(e: &Error) -> Option<&object_store::Error> {
    fn in_datafusion(e: &DataFusionError) -> Option<&object_store::Error> {
        match e {
            DataFusionError::ObjectStore(e) => Some(e),
            DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
                in_datafusion(inner)
            }
            DataFusionError::Shared(inner) => in_datafusion(inner),
            DataFusionError::External(inner) => inner
                .downcast_ref::<object_store::Error>()
                .or_else(|| inner.downcast_ref::<DeltaTableError>().and_then(in_delta)),
            _ => None,
        }
    }
    fn in_delta(e: &DeltaTableError) -> Option<&object_store::Error> {
        match e {
            DeltaTableError::ObjectStore { source } => Some(source),
            _ => None,
        }
    }
    match e {
        Error::ObjectStore(e) => Some(e),
        Error::Delta(e) => in_delta(e),
        Error::DataFusion(e) => in_datafusion(e),
        Error::Model { source, .. } | Error::Table { source, .. } => object_store_source(source),
        _ => None,
    }
}

/// How DataFusion's memory pool errors read once only their text is left (delta-rs keeps the
/// text of some query errors): `ResourcesExhausted`'s display and the external sort's message.
const OUT_OF_MEMORY: [&str; 2] = ["Resources exhausted", "Not enough memory to continue"];

fn datafusion_kind(e: &DataFusionError, scope: Scope) -> Kind {
    match e {
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_) => Kind::Usage,
        // Raised by operators and functions on the values: the user's SQL met data it does
        // not handle (in a model) or the landed data is bad (in a table load).
        DataFusionError::Execution(_) => Kind::on_data(scope),
        DataFusionError::ResourcesExhausted(_) => Kind::Usage,
        DataFusionError::ArrowError(e, _) => arrow_kind(e, scope),
        DataFusionError::ParquetError(e) => parquet_kind(e, scope),
        DataFusionError::ObjectStore(e) => object_store_kind(e),
        DataFusionError::IoError(_) => Kind::Transient,
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            datafusion_kind(inner, scope)
        }
        DataFusionError::Shared(inner) => datafusion_kind(inner, scope),
        DataFusionError::Collection(errs) => errs
            .first()
            .map_or(Kind::Bug, |e| datafusion_kind(e, scope)),
        DataFusionError::External(inner) => external_kind(inner.as_ref(), scope),
        _ => Kind::Bug,
    }
}

/// Kind of an error boxed as `dyn Error` by DataFusion, Arrow or Parquet.
fn external_kind(inner: &(dyn StdError + 'static), scope: Scope) -> Kind {
    if let Some(e) = inner.downcast_ref::<Error>() {
        e.kind_in(scope)
    } else if let Some(e) = inner.downcast_ref::<DataFusionError>() {
        datafusion_kind(e, scope)
    } else if let Some(e) = inner.downcast_ref::<DeltaTableError>() {
        delta_kind(e, scope)
    } else if let Some(e) = inner.downcast_ref::<object_store::Error>() {
        object_store_kind(e)
    } else if let Some(e) = inner.downcast_ref::<arrow::error::ArrowError>() {
        arrow_kind(e, scope)
    } else if let Some(e) = inner.downcast_ref::<parquet::errors::ParquetError>() {
        parquet_kind(e, scope)
    } else if inner.downcast_ref::<std::io::Error>().is_some() {
        Kind::Transient
    } else {
        foreign_kind(inner)
    }
}

/// Kind of an error from a crate whose types are not nameable here (delta-kernel inside
/// delta-rs): its chain is read for known types, then its messages for the kernel's schema
/// errors ("Invalid data type for Delta Lake: Duration"), which mean the model produced a type
/// the table format cannot store.
fn foreign_kind(e: &(dyn StdError + 'static)) -> Kind {
    let mut node = Some(e);
    while let Some(e) = node {
        if let Some(e) = e.downcast_ref::<object_store::Error>() {
            return object_store_kind(e);
        }
        if e.downcast_ref::<std::io::Error>().is_some() {
            return Kind::Transient;
        }
        let text = e.to_string();
        if [
            "Schema error",
            "Unsupported:",
            "Invalid decimal",
            "Expected column type",
        ]
        .iter()
        .any(|p| text.starts_with(p))
        {
            return Kind::Usage;
        }
        node = e.source();
    }
    Kind::Bug
}

fn arrow_kind(e: &arrow::error::ArrowError, scope: Scope) -> Kind {
    use arrow::error::ArrowError as A;
    match e {
        A::CastError(_)
        | A::DivideByZero
        | A::ArithmeticOverflow(_)
        | A::ComputeError(_)
        | A::InvalidArgumentError(_)
        | A::ParseError(_)
        | A::ParquetError(_) => Kind::on_data(scope),
        A::SchemaError(_) | A::NotYetImplemented(_) => Kind::Usage,
        A::IoError(..) => Kind::Transient,
        A::ExternalError(inner) => external_kind(inner.as_ref(), scope),
        _ => Kind::Bug,
    }
}

/// Parquet errors: decoding a landed file that does not hold what its schema says is bad data;
/// anywhere else (reading the lake's own files) it is not the user's SQL, so a bug.
fn parquet_kind(e: &parquet::errors::ParquetError, scope: Scope) -> Kind {
    use parquet::errors::ParquetError as P;
    match e {
        P::External(inner) => external_kind(inner.as_ref(), scope),
        _ if scope == Scope::Table => Kind::BadValue,
        _ => Kind::Bug,
    }
}

impl Error {
    /// True when a Delta commit lost a race with another writer (the version it tried was
    /// taken, or a concurrent commit conflicts with it): nothing of it was committed, and the
    /// same blind append can be tried again on the table's new version.
    pub fn is_commit_conflict(&self) -> bool {
        use deltalake::kernel::transaction::TransactionError as T;
        matches!(
            self,
            Error::Delta(
                DeltaTableError::VersionAlreadyExists(_)
                    | DeltaTableError::Transaction {
                        source: T::VersionAlreadyExists(_)
                            | T::CommitConflict(_)
                            | T::MaxCommitAttempts(_)
                    }
            )
        )
    }
}

fn delta_kind(e: &DeltaTableError, scope: Scope) -> Kind {
    use deltalake::kernel::transaction::TransactionError as T;
    match e {
        DeltaTableError::ObjectStore { source } => object_store_kind(source),
        DeltaTableError::Parquet { source } => parquet_kind(source, scope),
        DeltaTableError::Arrow { source } => arrow_kind(source, scope),
        // Rows that break a NOT NULL column or a CHECK constraint of the table.
        DeltaTableError::InvalidData { .. } => Kind::on_data(scope),
        DeltaTableError::Io { .. } | DeltaTableError::VersionAlreadyExists(_) => Kind::Transient,
        // Another writer committed first (concurrent runs): a retry starts from the new version.
        DeltaTableError::Transaction { source } => match source {
            T::ObjectStore { source } => object_store_kind(source),
            T::VersionAlreadyExists(_) | T::CommitConflict(_) | T::MaxCommitAttempts(_) => {
                Kind::Transient
            }
            _ => Kind::Bug,
        },
        DeltaTableError::InvalidTableLocation(_)
        | DeltaTableError::NotATable(_)
        | DeltaTableError::SchemaMismatch { .. } => Kind::Usage,
        DeltaTableError::GenericError { source } => external_kind(source.as_ref(), scope),
        DeltaTableError::KernelError(e) => foreign_kind(e),
        // delta-rs keeps only the text of some DataFusion errors of the query it runs: the
        // memory pool exhausted (as `ResourcesExhausted`, above), or data the SQL fails on.
        DeltaTableError::Generic(text) if OUT_OF_MEMORY.iter().any(|p| text.contains(p)) => {
            Kind::Usage
        }
        DeltaTableError::Generic(text)
            if [
                "Arrow error:",
                "Cast error:",
                "Divide by zero",
                "Arithmetic overflow",
                crate::table::partition_values::UNSTORABLE_PARTITION_VALUE,
            ]
            .iter()
            .any(|p| text.contains(p)) =>
        {
            Kind::on_data(scope)
        }
        _ => Kind::Bug,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::error::ArrowError;

    fn model(e: Error) -> Error {
        e.in_model("silver.t", "sql/p/silver/t.sql", "file:///lake/silver/t/")
    }

    #[test]
    fn memory_exhausted_inside_a_delta_write_is_a_usage_error() {
        let e = model(Error::Delta(DeltaTableError::Generic(
            "Resources exhausted: Failed to allocate additional 4.3 MB for HashJoinInput[0]".into(),
        )));
        assert_eq!(e.exit_code(), exit::USAGE, "{e:?}");
    }

    #[test]
    fn an_empty_partition_value_is_the_models_data() {
        let text = format!(
            "Execution error: partition column `r` holds an empty string, {} (...)",
            crate::table::partition_values::UNSTORABLE_PARTITION_VALUE
        );
        let e = model(Error::Delta(DeltaTableError::Generic(text)));
        assert_eq!(e.kind(), Kind::SqlOnData, "{e:?}");
    }

    #[test]
    fn data_errors_take_their_kind_from_the_model_or_table() {
        let div = || {
            Error::DataFusion(DataFusionError::ArrowError(
                Box::new(ArrowError::DivideByZero),
                None,
            ))
        };
        assert_eq!(div().exit_code(), exit::INTERNAL, "unclaimed: a bug");
        let e = model(div());
        assert_eq!(e.exit_code(), exit::USAGE);
        assert!(
            e.to_string()
                .starts_with("sql/p/silver/t.sql: model `silver.t` failed: "),
            "{e}"
        );
        let e = div().in_table(
            "bronze.t",
            "file:///lake/bronze/t/",
            Some("part-0000.parquet"),
        );
        assert_eq!(e.exit_code(), exit::QUALITY);
        assert!(e.to_string().contains("part-0000.parquet"), "{e}");
    }

    #[test]
    fn disk_full_and_permission_are_found_anywhere_in_the_chain() {
        // As delta-rs reports a failed write: the io::Error survives only as text.
        let parquet = DeltaTableError::Parquet {
            source: parquet::errors::ParquetError::General(
                "failed to write /lake/silver/t/part-1.parquet: No space left on device (os error 28)".into(),
            ),
        };
        let e = model(Error::Delta(parquet));
        assert_eq!(e.kind(), Kind::DiskFull);
        assert_eq!(e.exit_code(), exit::TRANSIENT);
        let hint = e.hint().unwrap();
        assert!(
            hint.contains("/lake/silver/t/part-1.parquet") && hint.contains("free space"),
            "{hint}"
        );

        let io = std::io::Error::from_raw_os_error(13);
        let store = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(io),
        };
        let e = Error::DataFusion(DataFusionError::External(Box::new(store)));
        assert_eq!(e.kind(), Kind::NotWritable);
        assert_eq!(e.exit_code(), exit::USAGE);
        let e = model(e);
        assert!(
            e.hint().unwrap().contains("file:///lake/silver/t/"),
            "{:?}",
            e.hint()
        );
    }

    #[test]
    fn a_concurrent_commit_names_the_model_and_is_retried() {
        let lost = DeltaTableError::Transaction {
            source: deltalake::kernel::transaction::TransactionError::VersionAlreadyExists(4),
        };
        let e = model(Error::Delta(lost));
        assert_eq!(e.exit_code(), exit::TRANSIENT);
        assert!(e.to_string().contains("silver.t"), "{e}");
    }

    #[test]
    fn backtraces_are_cut_from_user_messages() {
        let text = "model failed: Schema error: Invalid data type: Duration(µs)\n   0: buoyant_kernel::error::Error::with_backtrace\n   1: main";
        assert_eq!(
            strip_backtraces(text),
            "model failed: Schema error: Invalid data type: Duration(µs)"
        );
        let df = "Arrow error: Divide by zero error\n\nbacktrace: 0: x";
        assert_eq!(strip_backtraces(df), "Arrow error: Divide by zero error");
        assert_eq!(strip_backtraces("a\n  b: 2"), "a\n  b: 2");
    }

    #[test]
    fn paths_are_read_from_messages() {
        assert_eq!(
            path_in("Unable to open file /a/b c.parquet#1: Permission denied (os error 13)")
                .as_deref(),
            Some("/a/b")
        );
        assert_eq!(path_in("at '/x/y': no").as_deref(), Some("/x/y"));
        assert_eq!(path_in("no path here, a/b"), None);
        assert_eq!(
            environment_in_text("Operation not permitted (os error 1)"),
            Some(Kind::NotWritable)
        );
        assert_eq!(environment_in_text("(os error 17)"), None);
    }
}
