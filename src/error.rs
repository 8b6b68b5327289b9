//! The one error type of Smelter.
//!
//! Every failure is classified once, here, so that `main.rs` can turn it into the exit code Airflow
//! reads: user errors (config, SQL, usage) are fatal and not retried, data-quality failures are fatal,
//! storage and network faults are transient and retried, and anything else is an internal bug.

use datafusion::error::DataFusionError;
use deltalake::DeltaTableError;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exit codes, as documented in DESIGN.md and read by the Airflow DAG.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Internal bug.
    pub const INTERNAL: i32 = 1;
    /// Usage, config or SQL error: fatal, do not retry.
    pub const USAGE: i32 = 2;
    /// Data-quality failure: fatal.
    pub const QUALITY: i32 = 3;
    /// Transient (network, storage, source busy): retry.
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
    /// A source (SQL Server, files) failure.
    #[error("source error: {message}")]
    Source {
        /// What failed.
        message: String,
        /// Whether a retry may succeed.
        retryable: bool,
    },
    /// DataFusion planning or execution error.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// Delta Lake error.
    #[error(transparent)]
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
    /// A bug: an invariant did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Builds a config error for `file`.
    pub fn config(file: impl std::fmt::Display, message: impl Into<String>) -> Self {
        Error::Config {
            file: file.to_string(),
            message: message.into(),
        }
    }

    /// The exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } | Error::Invalid(_) | Error::Sql { .. } | Error::Usage(_) => {
                exit::USAGE
            }
            Error::Quality { .. } => exit::QUALITY,
            Error::NothingToDo(_) => exit::NOTHING_TO_DO,
            Error::Storage { retryable, .. } | Error::Source { retryable, .. } => {
                if *retryable {
                    exit::TRANSIENT
                } else {
                    exit::USAGE
                }
            }
            Error::DataFusion(e) => datafusion_exit_code(e),
            Error::Delta(e) => delta_exit_code(e),
            Error::ObjectStore(e) => object_store_exit_code(e),
            Error::Io(_) => exit::TRANSIENT,
            Error::Arrow(_) | Error::Parquet(_) | Error::Json(_) | Error::Internal(_) => {
                exit::INTERNAL
            }
        }
    }

    /// What to check, for storage failures that carry no hint of their own.
    pub fn hint(&self) -> Option<&'static str> {
        object_store_source(self).map(|e| crate::storage::classify(e).hint())
    }

    /// Whether retrying the same command may succeed.
    pub fn is_retryable(&self) -> bool {
        self.exit_code() == exit::TRANSIENT
    }
}

fn object_store_exit_code(e: &object_store::Error) -> i32 {
    match e {
        object_store::Error::InvalidPath { .. } => exit::USAGE,
        e if crate::storage::classify(e).retryable() => exit::TRANSIENT,
        _ => exit::USAGE,
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
        _ => None,
    }
}

fn datafusion_exit_code(e: &DataFusionError) -> i32 {
    match e {
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => exit::USAGE,
        DataFusionError::ObjectStore(e) => object_store_exit_code(e),
        DataFusionError::IoError(_) => exit::TRANSIENT,
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            datafusion_exit_code(inner)
        }
        DataFusionError::Shared(inner) => datafusion_exit_code(inner),
        DataFusionError::External(inner) => {
            if let Some(e) = inner.downcast_ref::<Error>() {
                e.exit_code()
            } else if let Some(e) = inner.downcast_ref::<DeltaTableError>() {
                delta_exit_code(e)
            } else if let Some(e) = inner.downcast_ref::<object_store::Error>() {
                object_store_exit_code(e)
            } else {
                exit::INTERNAL
            }
        }
        _ => exit::INTERNAL,
    }
}

fn delta_exit_code(e: &DeltaTableError) -> i32 {
    match e {
        DeltaTableError::ObjectStore { source } => object_store_exit_code(source),
        DeltaTableError::Io { .. } | DeltaTableError::VersionAlreadyExists(_) => exit::TRANSIENT,
        DeltaTableError::Transaction { .. } => exit::TRANSIENT,
        DeltaTableError::InvalidTableLocation(_)
        | DeltaTableError::NotATable(_)
        | DeltaTableError::SchemaMismatch { .. } => exit::USAGE,
        DeltaTableError::Generic(_) => exit::INTERNAL,
        _ => exit::INTERNAL,
    }
}
