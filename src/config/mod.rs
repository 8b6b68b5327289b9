//! Pipeline configuration: parse a pipeline file, then validate it into a [`Pipeline`].
//!
//! Loading is two-phase (see STYLE.md): [`raw`] holds the serde structs as written; [`load`] checks
//! every value, collects *all* problems and reports them together, naming the file and the key.
//! Nothing here opens a connection.

pub mod connection;
pub mod raw;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use crate::error::{Error, Result};

/// The kinds of source Smelter reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The built-in deterministic LogisticsDB generator.
    Sample,
    /// Microsoft SQL Server or Azure SQL, read with tiberius.
    Mssql,
    /// CSV, Parquet and JSON-lines files in a directory or bucket (docs/files.md).
    Files,
}

/// How a source table is read (`[[source.tables]] mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadMode {
    /// The whole table every run.
    Full,
    /// The rows past the last committed watermark (`watermark` column).
    Watermark,
    /// SQL Server Change Tracking: the rows changed since the last synced version, deletes
    /// included; the version is stored as the table's watermark.
    ChangeTracking,
}

impl ReadMode {
    /// The valid values of `mode`, as shown in errors.
    pub const CHOICES: &'static str = "`full`, `watermark`, `change_tracking`";

    /// Parses a `mode` value.
    pub fn parse(s: &str) -> Option<ReadMode> {
        match s {
            "full" => Some(ReadMode::Full),
            "watermark" => Some(ReadMode::Watermark),
            "change_tracking" => Some(ReadMode::ChangeTracking),
            _ => None,
        }
    }
}

impl std::fmt::Display for ReadMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReadMode::Full => "full",
            ReadMode::Watermark => "watermark",
            ReadMode::ChangeTracking => "change_tracking",
        })
    }
}

/// Format of a files-source table's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Comma-separated values (RFC 4180 quoting).
    Csv,
    /// Apache Parquet.
    Parquet,
    /// JSON lines: one JSON object per line.
    Json,
}

/// Compression of a files-source table's files (Parquet compresses its own pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileCompression {
    /// From each file's extension: `.gz` gzip, `.zst` zstd, else none.
    Auto,
    /// Not compressed.
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// Zstandard (RFC 8878).
    Zstd,
}

/// Settings of one files-source table (`[[source.tables]]` with `type = "files"`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FilesTable {
    /// Glob of the files relative to the source root.
    pub path: String,
    /// File format.
    pub format: FileFormat,
    /// Compression.
    pub compression: FileCompression,
    /// CSV field delimiter byte.
    pub delimiter: u8,
    /// CSV: first line holds the column names.
    pub header: bool,
    /// CSV quote byte.
    pub quote: u8,
    /// Text read as NULL besides the empty field.
    pub null_value: Option<String>,
}

/// Validated files-source settings (`[source]` with `type = "files"`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FilesSource {
    /// Base of the table paths as written; `None` is the lake root.
    pub root: Option<String>,
    /// Object-store options of `root`.
    pub options: BTreeMap<String, String>,
}

/// Where the SQL Server password comes from. The password itself is read only when connecting,
/// and never stored in the plan or logged.
#[derive(Debug, Clone, serde::Serialize)]
pub enum PasswordSource {
    /// An environment variable name.
    Env(String),
    /// A file (a mounted secret); trailing newlines are ignored.
    File(PathBuf),
    /// The password of an Airflow connection (`source.connection`), read from
    /// `AIRFLOW_CONN_<ID>` when connecting.
    Connection(String),
}

/// Validated SQL Server connection settings (`[source]` with `type = "mssql"`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct MssqlSource {
    /// Host name or address.
    pub host: String,
    /// TCP port; `None` with an instance asks the SQL Browser, otherwise 1433.
    pub port: Option<u16>,
    /// Named instance.
    pub instance: Option<String>,
    /// SQL login.
    pub user: String,
    /// Where the password comes from.
    pub password: PasswordSource,
    /// TLS on (default) or plaintext.
    pub encrypt: bool,
    /// Accept any server certificate.
    pub trust_server_certificate: bool,
    /// Connect and login timeout.
    pub connect_timeout: std::time::Duration,
    /// Per-response query timeout.
    pub query_timeout: std::time::Duration,
    /// Application name.
    pub application_name: String,
    /// TDS packet size asked for at login.
    pub packet_size: u32,
    /// CA certificate file trusted for the server certificate.
    pub ca_certificate: Option<PathBuf>,
    /// SQL Browser UDP port.
    pub browser_port: u16,
}

/// A validated source table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceTable {
    /// Lake table name.
    pub name: String,
    /// Source object (`schema.table`); for a `query` table, `query.<name>`.
    pub object: String,
    /// A SELECT extracted instead of `object` (SQL Server).
    pub query: Option<String>,
    /// Explicit casts of unsupported columns: column → SQL Server type (SQL Server).
    pub casts: std::collections::BTreeMap<String, String>,
    /// Key columns.
    pub key: Vec<String>,
    /// Watermark column, if incremental.
    pub watermark: Option<String>,
    /// How the table is read (`mode`; from `watermark` when not set).
    pub mode: ReadMode,
    /// Whether keys missing from a full extract land in bronze as deletes (`detect_deletes`).
    pub detect_deletes: bool,
    /// Lookback overlap in seconds.
    pub lookback_seconds: i64,
    /// Parallel read partitions.
    pub partitions: usize,
    /// What a changed source schema does (the table's setting, else the pipeline's).
    pub on_schema_change: crate::schema::OnSchemaChange,
    /// What a row that breaks its declared type does (the table's setting, else the pipeline's).
    pub on_error: crate::quarantine::OnError,
    /// Files-source settings (`type = "files"` only).
    pub files: Option<FilesTable>,
}

impl SourceTable {
    /// Whether the table's bronze rows carry an operation (`_op`, `'U'` upsert or `'D'`
    /// delete): tables with `detect_deletes` or read by change tracking.
    pub fn tracks_deletes(&self) -> bool {
        self.detect_deletes || self.mode == ReadMode::ChangeTracking
    }

    /// The source objects the table reads, as `schema.table`: its `object`, or the tables its
    /// `query` names (schema `dbo` when left out; CTE names and a query the parser does not
    /// understand give none).
    pub fn upstream_objects(&self) -> Vec<String> {
        use datafusion::sql::sqlparser::{dialect::MsSqlDialect, parser::Parser};
        let Some(query) = &self.query else {
            return vec![self.object.clone()];
        };
        let Ok(statements) = Parser::parse_sql(&MsSqlDialect {}, query) else {
            return Vec::new();
        };
        // SQL Server compares names case-insensitively.
        let refs =
            crate::plan::relations::table_refs(&statements, |i| i.value.to_ascii_lowercase());
        let mut out = std::collections::BTreeSet::new();
        for table in refs {
            let parts: Vec<&str> = table.name.iter().map(|i| i.value.as_str()).collect();
            match parts.as_slice() {
                [t] => {
                    out.insert(format!("dbo.{t}"));
                }
                [.., s, t] => {
                    out.insert(format!("{s}.{t}"));
                }
                [] => {}
            }
        }
        out.into_iter().collect()
    }
}

/// A validated source.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Source {
    /// Source kind.
    pub kind: SourceKind,
    /// Logical database name.
    pub database: String,
    /// Sample scale factor.
    pub scale_factor: f64,
    /// Sample seed.
    pub seed: u64,
    /// First day of daily changes.
    pub start_date: NaiveDate,
    /// Rows per batch.
    pub batch_size: usize,
    /// Tables to extract.
    pub tables: Vec<SourceTable>,
    /// SQL Server settings (`type = "mssql"` only).
    pub mssql: Option<MssqlSource>,
    /// Files-source settings (`type = "files"` only).
    pub files: Option<FilesSource>,
}

/// Validated storage settings.
#[derive(Debug, Clone)]
pub struct Storage {
    /// Lake root as written (or from `SMELTER_STORAGE_ROOT`), resolved later by [`crate::storage`].
    pub root: String,
    /// Object-store options.
    pub options: BTreeMap<String, String>,
    /// Airflow connection id whose settings and credentials the lake uses
    /// ([`connection::Connection::storage_options`]), read when the lake is opened.
    pub connection: Option<String>,
}

/// Parquet compression codec for written tables.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, serde::Serialize, serde::Deserialize,
)]
pub enum Compression {
    /// zstd (default).
    Zstd,
    /// snappy.
    Snappy,
    /// lz4.
    Lz4,
    /// none.
    Uncompressed,
}

/// Validated format settings.
#[derive(Debug, Clone)]
pub struct Format {
    /// Table format of the lake's tables (run state under `_smelter/` is always Delta).
    pub table: TableKind,
    /// The Iceberg catalog, used when `table` is [`TableKind::Iceberg`].
    pub iceberg: IcebergCatalog,
    /// Parquet compression.
    pub compression: Compression,
    /// Target file size in bytes.
    pub target_file_size: u64,
}

/// Table format (`[format] table`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableKind {
    /// Delta Lake (default).
    Delta,
    /// Apache Iceberg, through a catalog ([`IcebergCatalog`]).
    Iceberg,
}

impl TableKind {
    /// The valid spellings, for error messages.
    pub const CHOICES: &'static str = "`delta`, `iceberg`";

    /// The name, as `[format] table` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Delta => "delta",
            Self::Iceberg => "iceberg",
        }
    }

    /// The kind named `text` (`delta`, `iceberg`), or `None`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "delta" => Some(Self::Delta),
            "iceberg" => Some(Self::Iceberg),
            _ => None,
        }
    }
}

/// Validated `[format.iceberg]`: where the Iceberg catalog lives. SQL catalogs (the
/// JDBC-catalog tables `iceberg_tables` and `iceberg_namespace_properties`, which pyiceberg's
/// `SqlCatalog` and Java's `JdbcCatalog` share) and REST catalogs (the Iceberg REST catalog
/// API, <https://iceberg.apache.org/rest-catalog-spec/>: Polaris, Lakekeeper, Nessie, Unity,
/// Gravitino and others) are supported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcebergCatalog {
    /// Catalog name: the `catalog_name` column of a SQL catalog, and the catalog part of every
    /// Iceberg table's lineage name (default `smelter`).
    pub name: String,
    /// SQL or REST, with what each needs.
    pub kind: CatalogKind,
    /// Environment variable holding the catalog database URI (SQL) or the server's base URI
    /// (REST), read when the catalog opens (a database URI may hold a password and is never
    /// logged).
    pub uri_env: Option<String>,
}

/// The kind of Iceberg catalog (`format.iceberg.catalog`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogKind {
    /// A SQL catalog (SQLite or Postgres).
    Sql {
        /// SQLite file of the embedded catalog (absolute); `None`: `<lake>/_iceberg/catalog.db`
        /// on a local lake (a remote lake needs `path` or `uri_env`).
        path: Option<std::path::PathBuf>,
    },
    /// A REST catalog server. The server assigns each table's location (Smelter sends none);
    /// the lake's object store must reach it.
    Rest {
        /// The server's base URI (`uri`), unless `uri_env` names a variable holding it.
        uri: Option<String>,
        /// The warehouse sent to `GET /v1/config` (`warehouse`), which answers the URL prefix.
        warehouse: Option<String>,
        /// The URL prefix when `/v1/config` gives none (`prefix`; the server's `overrides` win,
        /// as in pyiceberg).
        prefix: Option<String>,
        /// How Smelter authenticates.
        auth: RestAuth,
    },
}

/// How Smelter authenticates to a REST catalog. Secrets are read from the named environment
/// variables when the catalog opens, and never logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestAuth {
    /// No authentication.
    None,
    /// `Authorization: Bearer <token>` with the token in the variable (`token_env`).
    Bearer {
        /// The variable holding the token.
        token_env: String,
    },
    /// OAuth2 client credentials (RFC 6749 section 4.4) from the variable (`credential_env`,
    /// `client_id:client_secret`, as pyiceberg's `credential`), exchanged for a bearer token at
    /// `server_uri` with `scope`.
    OAuth2 {
        /// The variable holding `client_id:client_secret`.
        credential_env: String,
        /// The token endpoint; `None`: `<uri>/v1/oauth/tokens` (the REST spec's endpoint).
        server_uri: Option<String>,
        /// The requested scope (default `catalog`, as pyiceberg's).
        scope: String,
    },
}

/// Validated engine settings.
#[derive(Debug, Clone)]
pub struct Engine {
    /// Memory cap in bytes, if any.
    pub memory_limit: Option<usize>,
    /// Target partitions.
    pub target_partitions: usize,
    /// Independent models of one layer run at once (`engine.threads`, like dbt's `threads`).
    pub threads: usize,
    /// Where silver and gold queries execute (`engine.mode`).
    pub mode: EngineMode,
    /// How long one model's job may run on a cluster before the run gives up with exit 75
    /// (`engine.job_timeout_seconds`, default 3600 s): a job no executor can take (none
    /// registered, the only one lost) would otherwise wait forever.
    pub job_timeout: std::time::Duration,
}

/// Where silver and gold queries execute (`[engine] mode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineMode {
    /// In this process (the default).
    Local,
    /// On an Apache DataFusion Ballista cluster (`smelter cluster scheduler|executor`, see
    /// `docs/distributed.md`): each model's query is planned here and executed by the cluster's
    /// executors; checks, merges and commits stay in this process.
    Ballista {
        /// The scheduler's URL, `df://host:port` (`engine.scheduler`, or the environment
        /// variable `SMELTER_SCHEDULER`, which wins so an Airflow deployment can point one
        /// pipeline file at its cluster).
        scheduler: String,
    },
}

/// The `host:port` of a scheduler URL `df://host:port` (the form Ballista's clients take), or
/// what is wrong with it.
pub fn scheduler_address(url: &str) -> std::result::Result<(String, u16), String> {
    let bad = || {
        format!("`{url}` is not a scheduler URL: write it as `df://host:port`, e.g. `df://127.0.0.1:50050`")
    };
    let parsed = url::Url::parse(url).map_err(|_| bad())?;
    match (parsed.scheme(), parsed.host_str(), parsed.port()) {
        ("df", Some(host), Some(port)) if parsed.path().is_empty() || parsed.path() == "/" => {
            Ok((host.to_string(), port))
        }
        _ => Err(bad()),
    }
}

/// A validated schedule entry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Schedule {
    /// Name.
    pub name: String,
    /// Cron expression.
    pub cron: Option<String>,
    /// Interval in seconds.
    pub interval_seconds: Option<u64>,
    /// Enabled.
    pub enabled: bool,
    /// Timezone.
    pub timezone: String,
    /// Max active runs.
    pub max_active_runs: u32,
    /// Tags.
    pub tags: Vec<String>,
}

/// Validated `[airflow]` policy, as `smelter plan --format json` gives it to the DAG factory.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AirflowPolicy {
    /// Retries per task; `None`: the deployment's setting.
    pub max_retries: Option<u32>,
    /// First retry delay in seconds; `None`: the deployment's setting.
    pub initial_delay_seconds: Option<u64>,
    /// Growth factor of the retry delay; `None`: the deployment's setting (2.0).
    pub backoff_multiplier: Option<f64>,
    /// Exit codes that are retried; every other failing code fails the task at once.
    pub retryable_exit_codes: Vec<i32>,
    /// Tenant id, if any.
    pub tenant: Option<String>,
    /// Slots of the tenant's pool.
    pub concurrency_per_tenant: u32,
    /// The tenant's Airflow pool, `smelter_tenant_<tenant>`.
    pub pool: Option<String>,
}

/// The Airflow pool of a tenant.
pub fn tenant_pool(tenant: &str) -> String {
    format!("smelter_tenant_{tenant}")
}

/// Validates `[airflow]`; problems are reported as `(key, message)`.
fn airflow_policy(raw: &raw::AirflowFile, problem: &mut dyn FnMut(&str, String)) -> AirflowPolicy {
    if raw.max_retries.is_some_and(|n| n > 100) {
        problem(
            "airflow.max_retries",
            format!(
                "{} is too many; use 0 to 100",
                raw.max_retries.unwrap_or_default()
            ),
        );
    }
    if let Some(d) = raw.initial_delay_seconds.filter(|d| *d > 86_400) {
        problem(
            "airflow.initial_delay_seconds",
            format!("{d} is more than a day; use 0 to 86400"),
        );
    }
    if let Some(m) = raw
        .backoff_multiplier
        .filter(|m| !(m.is_finite() && (1.0..=10.0).contains(m)))
    {
        problem(
            "airflow.backoff_multiplier",
            format!("{m} must be a number from 1.0 (a constant delay) to 10.0"),
        );
    }
    let mut codes: Vec<i32> = Vec::new();
    for c in raw.retryable_exit_codes.clone().unwrap_or(vec![1, 75]) {
        match c {
            0 | 99 => problem(
                "airflow.retryable_exit_codes",
                format!("{c} is not a failure (0 is success, 99 nothing to do); list failing codes such as 1 and 75"),
            ),
            1..=255 => {
                if !codes.contains(&(c as i32)) {
                    codes.push(c as i32);
                }
            }
            _ => problem(
                "airflow.retryable_exit_codes",
                format!("{c} is not an exit code; use 1 to 255"),
            ),
        }
    }
    codes.sort_unstable();
    let tenant = raw.tenant.clone();
    if let Some(t) = &tenant {
        if t.is_empty()
            || t.len() > 200
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            problem(
                "airflow.tenant",
                format!("`{t}` must be 1 to 200 letters, digits, `_` or `-` (it names the pool `smelter_tenant_<tenant>`)"),
            );
        }
    }
    match (raw.concurrency_per_tenant, &tenant) {
        (Some(0), _) => problem(
            "airflow.concurrency_per_tenant",
            "must be at least 1".into(),
        ),
        (Some(_), None) => problem(
            "airflow.concurrency_per_tenant",
            "needs `airflow.tenant`: it sets the slots of the tenant's pool".into(),
        ),
        _ => {}
    }
    AirflowPolicy {
        max_retries: raw.max_retries,
        initial_delay_seconds: raw.initial_delay_seconds,
        backoff_multiplier: raw.backoff_multiplier,
        retryable_exit_codes: codes,
        pool: tenant.as_deref().map(tenant_pool),
        tenant,
        concurrency_per_tenant: raw.concurrency_per_tenant.unwrap_or(1),
    }
}

/// A validated pipeline file.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Pipeline name.
    pub name: String,
    /// The pipeline file as given.
    pub file: PathBuf,
    /// Project root: the parent of the directory holding the pipeline file.
    pub project_dir: PathBuf,
    /// Directory of SQL models.
    pub models_dir: PathBuf,
    /// Directory of the source schema contracts (`<table>.toml` each).
    pub schemas_dir: PathBuf,
    /// Default `on_schema_change` policy of bronze tables and incremental models.
    pub on_schema_change: crate::schema::OnSchemaChange,
    /// Default `on_error` policy of source tables.
    pub on_error: crate::quarantine::OnError,
    /// Source.
    pub source: Source,
    /// Storage.
    pub storage: Storage,
    /// Format.
    pub format: Format,
    /// Engine.
    pub engine: Engine,
    /// Template variables, as SQL literal values.
    pub vars: BTreeMap<String, datafusion::scalar::ScalarValue>,
    /// Schedules.
    pub schedules: Vec<Schedule>,
    /// Lineage settings.
    pub lineage: Lineage,
    /// Profiling settings.
    pub profile: ProfileSettings,
    /// Airflow retry and tenant policy (`[airflow]`).
    pub airflow: AirflowPolicy,
}

/// How tables are profiled after each write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileMode {
    /// Every row.
    Full,
    /// A random sample of about `sample_rows` rows when the table is larger.
    Sample,
    /// No profiling.
    Off,
}

/// What a drift breach does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftAction {
    /// Log and record.
    Warn,
    /// Exit 3 (the table stays written).
    Fail,
}

/// The measures drift is checked on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftMetric {
    /// Row-count change, percent.
    RowCountChangePct,
    /// Null-proportion change, percentage points.
    NullRateChangePp,
    /// Distinct-count change, percent.
    DistinctChangePct,
    /// Mean shift in previous standard deviations.
    MeanShiftStddevs,
    /// Population stability index of the histograms.
    Psi,
}

/// One drift threshold.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct DriftRule {
    /// The measure.
    pub metric: DriftMetric,
    /// Largest value that is not drift.
    pub max: f64,
    /// What a breach does.
    pub action: DriftAction,
}

/// Validated `[profile]` settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProfileSettings {
    /// Mode.
    pub mode: ProfileMode,
    /// Sample threshold and size (rows).
    pub sample_rows: u64,
    /// Top-k values per column.
    pub top_k: usize,
    /// Histogram buckets.
    pub histogram_bins: usize,
    /// Largest approximate cardinality that gets exact distinct counts and top-k.
    pub exact_distinct_max: u64,
    /// Whether each layer run writes an HTML report.
    pub report: bool,
    /// Drift rules (empty when drift is off).
    pub drift: Vec<DriftRule>,
}

impl Default for ProfileSettings {
    fn default() -> Self {
        let mut problems = Vec::new();
        profile_settings(&raw::ProfileFile::default(), &mut |_, m| problems.push(m))
    }
}

/// Validates `[profile]`; problems are reported as `(key, message)`.
fn profile_settings(
    raw: &raw::ProfileFile,
    problem: &mut dyn FnMut(&str, String),
) -> ProfileSettings {
    let mode = match raw.mode.as_deref() {
        None | Some("full") => ProfileMode::Full,
        Some("sample") => ProfileMode::Sample,
        Some("off") => ProfileMode::Off,
        Some(other) => {
            problem(
                "profile.mode",
                format!("unknown mode `{other}`; valid choices: full, sample, off"),
            );
            ProfileMode::Full
        }
    };
    let sample_rows = raw.sample_rows.unwrap_or(1_000_000);
    if sample_rows == 0 {
        problem("profile.sample_rows", "must be at least 1".into());
    }
    let histogram_bins = raw.histogram_bins.unwrap_or(20);
    if histogram_bins > 1000 {
        problem(
            "profile.histogram_bins",
            format!("{histogram_bins} is too many; use at most 1000"),
        );
    }
    let top_k = raw.top_k.unwrap_or(10);
    if top_k > 1000 {
        problem(
            "profile.top_k",
            format!("{top_k} is too many; use at most 1000"),
        );
    }
    let d = &raw.drift;
    let mut drift = Vec::new();
    if d.enabled.unwrap_or(true) {
        let rules = [
            (
                "row_count_change_pct",
                DriftMetric::RowCountChangePct,
                &d.row_count_change_pct,
                50.0,
            ),
            (
                "null_rate_change_pp",
                DriftMetric::NullRateChangePp,
                &d.null_rate_change_pp,
                10.0,
            ),
            (
                "distinct_change_pct",
                DriftMetric::DistinctChangePct,
                &d.distinct_change_pct,
                50.0,
            ),
            (
                "mean_shift_stddevs",
                DriftMetric::MeanShiftStddevs,
                &d.mean_shift_stddevs,
                3.0,
            ),
            ("psi", DriftMetric::Psi, &d.psi, 0.25),
        ];
        for (key, metric, rule, default) in rules {
            let key = format!("profile.drift.{key}");
            let (max, action) = match rule {
                None => (default, DriftAction::Warn),
                Some(r) => {
                    let action = match r.action.as_deref() {
                        None | Some("warn") => DriftAction::Warn,
                        Some("fail") => DriftAction::Fail,
                        Some(other) => {
                            problem(
                                &format!("{key}.action"),
                                format!("unknown action `{other}`; valid choices: warn, fail"),
                            );
                            DriftAction::Warn
                        }
                    };
                    if !(r.max.is_finite() && r.max >= 0.0) {
                        problem(
                            &format!("{key}.max"),
                            format!("{} must be a number >= 0", r.max),
                        );
                    }
                    (r.max, action)
                }
            };
            drift.push(DriftRule {
                metric,
                max,
                action,
            });
        }
    }
    ProfileSettings {
        mode,
        sample_rows,
        top_k,
        histogram_bins,
        exact_distinct_max: raw.exact_distinct_max.unwrap_or(100_000),
        report: raw.report.unwrap_or(true),
        drift,
    }
}

/// Validated lineage settings.
#[derive(Debug, Clone)]
pub struct Lineage {
    /// DataHub environment.
    pub env: String,
    /// Directory for MCP files, if any.
    pub datahub_dir: Option<PathBuf>,
    /// DataHub GMS base URL, if any.
    pub datahub_rest: Option<url::Url>,
    /// MCPs per REST request.
    pub datahub_batch_size: usize,
    /// Directory for OpenLineage JSON-lines files, if any.
    pub openlineage_dir: Option<PathBuf>,
    /// OpenLineage HTTP endpoint, if any.
    pub openlineage_url: Option<url::Url>,
    /// OpenLineage job namespace.
    pub namespace: String,
    /// Attempts per HTTP request.
    pub retries: u32,
}

/// The LogisticsDB tables the built-in sample source generates.
pub const SAMPLE_TABLES: &[&str] = &[
    "customers",
    "carriers",
    "warehouses",
    "shipments",
    "shipment_events",
    "invoices",
];

/// Reads and validates the pipeline file at `path`, reporting every problem at once.
pub fn load(path: &Path) -> Result<Pipeline> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config(&file, format!("cannot read pipeline file: {e}")))?;
    let raw: raw::PipelineFile =
        toml::from_str(&text).map_err(|e| Error::config(&file, toml_problem(&text, &e)))?;
    validate(path, raw)
}

/// A TOML error as `line L, column C: <message>`, without the quoted source line the parser
/// would show: that line may hold a secret a user put where a variable name belongs
/// (`token = "…"` instead of `token_env`).
fn toml_problem(text: &str, e: &toml::de::Error) -> String {
    let at = e
        .span()
        .and_then(|s| text.get(..s.start))
        .map(|before| {
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: ")
        })
        .unwrap_or_default();
    format!("{at}{}", e.message().trim())
}

fn validate(path: &Path, raw: raw::PipelineFile) -> Result<Pipeline> {
    let file = path.display().to_string();
    let mut problems = Vec::new();
    let mut problem = |key: &str, msg: String| problems.push(format!("{file}: key `{key}`: {msg}"));

    if raw.name.is_empty()
        || !raw
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        problem(
            "name",
            format!(
                "`{}` must be non-empty and use only letters, digits, `_` or `-`",
                raw.name
            ),
        );
    }
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let pipeline_dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
    let project_dir = pipeline_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or(pipeline_dir);
    let models_dir = project_dir.join(
        raw.models_dir
            .clone()
            .unwrap_or_else(|| format!("sql/{}", raw.name)),
    );
    // The default directory may be absent (a pipeline that only extracts and lands bronze), but
    // a configured one that holds no models would make every model silently disappear.
    if let Some(dir) = &raw.models_dir {
        let layers = ["silver", "gold"];
        if !models_dir.is_dir() {
            problem(
                "models_dir",
                format!(
                    "`{dir}` is not a directory (resolved to {}, relative to the project root)",
                    models_dir.display()
                ),
            );
        } else if !layers.iter().any(|l| models_dir.join(l).is_dir()) {
            problem(
                "models_dir",
                format!(
                    "`{dir}` has no `silver/` or `gold/` directory of models (resolved to {})",
                    models_dir.display()
                ),
            );
        }
    }

    let schemas_dir = project_dir.join(
        raw.schemas_dir
            .clone()
            .unwrap_or_else(|| format!("schemas/{}", raw.name)),
    );
    let mut policy = |key: &str, value: Option<&String>, default| match value {
        None => default,
        Some(v) => crate::schema::OnSchemaChange::parse(v).unwrap_or_else(|| {
            problem(
                key,
                format!(
                    "unknown policy `{v}`; valid choices: {}",
                    crate::schema::OnSchemaChange::CHOICES
                ),
            );
            default
        }),
    };
    let on_schema_change = policy(
        "on_schema_change",
        raw.on_schema_change.as_ref(),
        crate::schema::OnSchemaChange::default(),
    );
    let table_policies: Vec<_> = raw
        .source
        .tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            policy(
                &format!("source.tables[{i}].on_schema_change"),
                t.on_schema_change.as_ref(),
                on_schema_change,
            )
        })
        .collect();

    let mut error_policy = |key: &str, value: Option<&String>, default| match value {
        None => default,
        Some(v) => crate::quarantine::OnError::parse(v).unwrap_or_else(|| {
            problem(
                key,
                format!(
                    "unknown policy `{v}`; valid choices: {}",
                    crate::quarantine::OnError::CHOICES
                ),
            );
            default
        }),
    };
    let on_error = error_policy(
        "on_error",
        raw.on_error.as_ref(),
        crate::quarantine::OnError::default(),
    );
    let table_on_error: Vec<_> = raw
        .source
        .tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            error_policy(
                &format!("source.tables[{i}].on_error"),
                t.on_error.as_ref(),
                on_error,
            )
        })
        .collect();

    // Source.
    let kind = match raw.source.kind.as_str() {
        "sample" => SourceKind::Sample,
        "mssql" => SourceKind::Mssql,
        "files" => SourceKind::Files,
        other => {
            problem(
                "source.type",
                format!("unknown source type `{other}`; valid choices: `sample`, `mssql`, `files`"),
            );
            SourceKind::Sample
        }
    };
    let scale_factor = raw.source.scale_factor.unwrap_or(1.0);
    if !(scale_factor > 0.0 && scale_factor <= 1000.0) {
        problem(
            "source.scale_factor",
            format!("{scale_factor} must be in (0, 1000]"),
        );
    }
    let start_date = match &raw.source.start_date {
        None => NaiveDate::from_ymd_opt(2026, 1, 1).expect("valid date"),
        Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_else(|_| {
            problem(
                "source.start_date",
                format!("`{s}` is not a date in YYYY-MM-DD form"),
            );
            NaiveDate::from_ymd_opt(2026, 1, 1).expect("valid date")
        }),
    };
    let batch_size = raw.source.batch_size.unwrap_or(65_536);
    if batch_size == 0 {
        problem("source.batch_size", "must be at least 1".into());
    }
    if raw.source.tables.is_empty() {
        problem(
            "source.tables",
            "at least one `[[source.tables]]` entry is required".into(),
        );
    }
    let mut tables = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, t) in raw.source.tables.iter().enumerate() {
        let key = format!("source.tables[{i}]");
        if !seen.insert(t.name.clone()) {
            problem(
                &format!("{key}.name"),
                format!("duplicate table `{}`", t.name),
            );
        }
        if kind == SourceKind::Sample && !SAMPLE_TABLES.contains(&t.name.as_str()) {
            problem(
                &format!("{key}.name"),
                format!(
                    "the sample source has no table `{}`; valid choices: {}{}",
                    t.name,
                    SAMPLE_TABLES.join(", "),
                    crate::plan::suggest(&t.name, SAMPLE_TABLES.iter().copied())
                ),
            );
        }
        if t.partitions == Some(0) {
            problem(&format!("{key}.partitions"), "must be at least 1".into());
        }
        if kind != SourceKind::Mssql {
            for (field, set) in [("query", t.query.is_some()), ("casts", !t.casts.is_empty())] {
                if set {
                    problem(
                        &format!("{key}.{field}"),
                        "only applies to `type = \"mssql\"`".into(),
                    );
                }
            }
        }
        if let Some(q) = &t.query {
            if t.object.is_some() {
                problem(
                    &format!("{key}.query"),
                    "give either `object` or `query`, not both".into(),
                );
            }
            if q.trim().is_empty()
                || !q.trim_start().get(..6).is_some_and(|s| {
                    s.eq_ignore_ascii_case("select") || s.eq_ignore_ascii_case("with ")
                })
            {
                problem(&format!("{key}.query"), "must be a SELECT statement".into());
            }
        }
        for (col, ty) in &t.casts {
            if let Err(e) = crate::extract::mssql::types::column_of_type(col, ty, true) {
                problem(&format!("{key}.casts.{col}"), e);
            }
        }
        if kind == SourceKind::Mssql {
            if let Some(o) = &t.object {
                if o.split('.').count() != 2 || o.split('.').any(|p| p.trim().is_empty()) {
                    problem(
                        &format!("{key}.object"),
                        format!("`{o}` must be `schema.table`, for example `dbo.{}`", t.name),
                    );
                }
            }
            if t.partitions.unwrap_or(1) > 1 && t.key.len() != 1 {
                problem(
                    &format!("{key}.partitions"),
                    format!(
                        "{} partitions need exactly one integer `key` column to split by (found {})",
                        t.partitions.unwrap_or(1),
                        t.key.len()
                    ),
                );
            }
        }
        let files = files_table(kind, t, &key, &mut problem);
        let mode = read_mode(kind, t, &key, &schemas_dir, &mut problem);
        if t.lookback_seconds.is_some_and(|s| s < 0) {
            problem(
                &format!("{key}.lookback_seconds"),
                "must not be negative".into(),
            );
        }
        tables.push(SourceTable {
            name: t.name.clone(),
            object: match (&t.object, &t.query) {
                (Some(o), _) => o.clone(),
                (None, Some(_)) => format!("query.{}", t.name),
                (None, None) => format!("dbo.{}", t.name),
            },
            query: t
                .query
                .as_ref()
                .map(|q| q.trim().trim_end_matches(';').trim_end().to_string()),
            casts: t.casts.clone(),
            key: t.key.clone(),
            watermark: t.watermark.clone(),
            mode,
            detect_deletes: t.detect_deletes.unwrap_or(false),
            lookback_seconds: t.lookback_seconds.unwrap_or(0),
            partitions: t.partitions.unwrap_or(1),
            on_schema_change: table_policies[i],
            on_error: table_on_error[i],
            files,
        });
    }

    // Lineage endpoints.
    let mut endpoint = |key: &str, env: &str, raw_value: Option<&String>| {
        let value = std::env::var(env)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| raw_value.cloned())?;
        match url::Url::parse(&value) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            _ => {
                problem(
                    key,
                    format!("`{value}` is not an http(s) URL (env `{env}` overrides the key)"),
                );
                None
            }
        }
    };
    let datahub_rest = endpoint(
        "lineage.datahub_rest",
        "DATAHUB_GMS_URL",
        raw.lineage.datahub_rest.as_ref(),
    );
    let openlineage_url = endpoint(
        "lineage.openlineage_url",
        "OPENLINEAGE_URL",
        raw.lineage.openlineage_url.as_ref(),
    );
    let datahub_batch_size = raw.lineage.datahub_batch_size.unwrap_or(200);
    if !(1..=200).contains(&datahub_batch_size) {
        problem(
            "lineage.datahub_batch_size",
            format!("{datahub_batch_size} is out of range; use 1 to 200"),
        );
    }
    let source_conn = match (kind, raw.source.connection.as_deref()) {
        (SourceKind::Mssql, Some(id)) if !id.is_empty() => match connection::from_env(id) {
            Ok(c) if c.conn_type == "mssql" => Some(c),
            Ok(c) => {
                problem(
                    "source.connection",
                    format!(
                        "connection `{id}` has conn type `{}`; `type = \"mssql\"` needs `mssql`",
                        c.conn_type
                    ),
                );
                None
            }
            Err(m) => {
                problem("source.connection", m);
                None
            }
        },
        _ => None,
    };
    let mssql = match kind {
        SourceKind::Mssql => Some(mssql_source(
            &raw.source,
            source_conn.as_ref(),
            &project_dir,
            &mut problem,
        )),
        SourceKind::Sample | SourceKind::Files => {
            let s = &raw.source;
            for (set, name) in [
                (s.connection.is_some(), "connection"),
                (s.host.is_some(), "host"),
                (s.port.is_some(), "port"),
                (s.instance.is_some(), "instance"),
                (s.user.is_some(), "user"),
                (s.password_env.is_some(), "password_env"),
                (s.password_file.is_some(), "password_file"),
                (s.encrypt.is_some(), "encrypt"),
                (
                    s.trust_server_certificate.is_some(),
                    "trust_server_certificate",
                ),
                (
                    s.connect_timeout_seconds.is_some(),
                    "connect_timeout_seconds",
                ),
                (s.query_timeout_seconds.is_some(), "query_timeout_seconds"),
                (s.application_name.is_some(), "application_name"),
                (s.packet_size.is_some(), "packet_size"),
                (s.ca_certificate.is_some(), "ca_certificate"),
                (s.browser_port.is_some(), "browser_port"),
            ] {
                if set {
                    problem(
                        &format!("source.{name}"),
                        "only applies to `type = \"mssql\"`".into(),
                    );
                }
            }
            None
        }
    };

    let files = match kind {
        SourceKind::Files => Some(FilesSource {
            root: raw.source.root.clone().filter(|r| !r.trim().is_empty()),
            options: raw.source.options.clone().unwrap_or_else(|| {
                if raw.source.root.is_some() {
                    BTreeMap::new()
                } else {
                    raw.storage.options.clone()
                }
            }),
        }),
        _ => {
            for (set, name) in [
                (raw.source.root.is_some(), "root"),
                (raw.source.options.is_some(), "options"),
            ] {
                if set {
                    problem(
                        &format!("source.{name}"),
                        "only applies to `type = \"files\"`".into(),
                    );
                }
            }
            None
        }
    };
    if kind == SourceKind::Files {
        for (set, name) in [
            (raw.source.scale_factor.is_some(), "scale_factor"),
            (raw.source.seed.is_some(), "seed"),
            (raw.source.start_date.is_some(), "start_date"),
        ] {
            if set {
                problem(
                    &format!("source.{name}"),
                    "only applies to `type = \"sample\"`".into(),
                );
            }
        }
    }

    // Storage.
    let root = std::env::var("SMELTER_STORAGE_ROOT")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| raw.storage.root.clone());
    if root.is_empty() {
        problem("storage.root", "must not be empty".into());
    }

    // Format.
    let table_kind = match raw.format.table.as_deref().map(TableKind::parse) {
        None => TableKind::Delta,
        Some(Some(kind)) => kind,
        Some(None) => {
            problem(
                "format.table",
                format!(
                    "unknown table format `{}`; valid choices: {}",
                    raw.format.table.as_deref().unwrap_or_default(),
                    TableKind::CHOICES
                ),
            );
            TableKind::Delta
        }
    };
    let ice = &raw.format.iceberg;
    let given = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
    if ice.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        problem(
            "format.iceberg.name",
            "must not be empty (it is the catalog_name of every table; default `smelter`)".into(),
        );
    }
    let rest_only = [
        ("uri", &ice.uri),
        ("warehouse", &ice.warehouse),
        ("prefix", &ice.prefix),
        ("token_env", &ice.token_env),
        ("credential_env", &ice.credential_env),
        ("oauth2_server_uri", &ice.oauth2_server_uri),
        ("scope", &ice.scope),
    ];
    let catalog_kind = match ice.catalog.as_deref() {
        None | Some("sql") => {
            for (key, value) in rest_only {
                if value.is_some() {
                    problem(
                        &format!("format.iceberg.{key}"),
                        "is a REST catalog setting; set `catalog = \"rest\"` or remove it (a SQL \
                         catalog's database URI comes from `uri_env`, since it may hold a password)"
                            .into(),
                    );
                }
            }
            if ice.path.is_some() && ice.uri_env.is_some() {
                problem(
                    "format.iceberg",
                    "set `path` (a SQLite file) or `uri_env` (a database URI), not both".into(),
                );
            }
            CatalogKind::Sql {
                path: ice
                    .path
                    .as_deref()
                    .filter(|p| !p.trim().is_empty())
                    .map(|p| project_dir.join(p)),
            }
        }
        Some("rest") => {
            if ice.path.is_some() {
                problem(
                    "format.iceberg.path",
                    "is a SQL catalog setting; a REST catalog needs `uri` (or `uri_env`)".into(),
                );
            }
            let uri = given(&ice.uri);
            match (&uri, given(&ice.uri_env)) {
                (None, None) => problem(
                    "format.iceberg.uri",
                    "a REST catalog needs the server's base URI: `uri = \"https://host/api/catalog\"` \
                     (without `/v1`) or `uri_env` naming a variable that holds it"
                        .into(),
                ),
                (Some(_), Some(_)) => problem(
                    "format.iceberg",
                    "set `uri` or `uri_env`, not both".into(),
                ),
                (Some(u), None) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                    problem(
                        "format.iceberg.uri",
                        format!("`{u}` is not an http:// or https:// URI"),
                    )
                }
                _ => {}
            }
            let auth = match (given(&ice.token_env), given(&ice.credential_env)) {
                (Some(_), Some(_)) => {
                    problem(
                        "format.iceberg",
                        "set `token_env` (a bearer token) or `credential_env` (OAuth2 client \
                         credentials), not both"
                            .into(),
                    );
                    RestAuth::None
                }
                (Some(token_env), None) => RestAuth::Bearer { token_env },
                (None, Some(credential_env)) => RestAuth::OAuth2 {
                    credential_env,
                    server_uri: given(&ice.oauth2_server_uri),
                    scope: given(&ice.scope).unwrap_or_else(|| "catalog".into()),
                },
                (None, None) => RestAuth::None,
            };
            if !matches!(auth, RestAuth::OAuth2 { .. })
                && (ice.oauth2_server_uri.is_some() || ice.scope.is_some())
            {
                problem(
                    "format.iceberg.credential_env",
                    "`oauth2_server_uri` and `scope` need OAuth2 client credentials in \
                     `credential_env`"
                        .into(),
                );
            }
            CatalogKind::Rest {
                uri: uri.map(|u| u.trim_end_matches('/').to_string()),
                warehouse: given(&ice.warehouse),
                prefix: given(&ice.prefix),
                auth,
            }
        }
        Some(other) => {
            problem(
                "format.iceberg.catalog",
                format!("unknown catalog `{other}`; valid choices: `sql`, `rest`"),
            );
            CatalogKind::Sql { path: None }
        }
    };
    let iceberg = IcebergCatalog {
        name: given(&ice.name).unwrap_or_else(|| "smelter".into()),
        kind: catalog_kind,
        uri_env: given(&ice.uri_env),
    };
    let compression = match raw.format.compression.as_deref() {
        None | Some("zstd") => Compression::Zstd,
        Some("snappy") => Compression::Snappy,
        Some("lz4") => Compression::Lz4,
        Some("uncompressed") => Compression::Uncompressed,
        Some(other) => {
            problem(
                "format.compression",
                format!("unknown codec `{other}`; valid choices: zstd, snappy, lz4, uncompressed"),
            );
            Compression::Zstd
        }
    };

    // Engine.
    // The environment wins over the file, so one pipeline file runs locally on a laptop and on
    // the cluster under Airflow (SMELTER_ENGINE_MODE, SMELTER_SCHEDULER).
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let (mode_key, mode_value) = match env("SMELTER_ENGINE_MODE") {
        Some(v) => ("SMELTER_ENGINE_MODE (environment)", Some(v)),
        None => ("engine.mode", raw.engine.mode.clone()),
    };
    let (scheduler_key, scheduler) = match env("SMELTER_SCHEDULER") {
        Some(v) => ("SMELTER_SCHEDULER (environment)", Some(v)),
        None => ("engine.scheduler", raw.engine.scheduler.clone()),
    };
    let mode = match mode_value.as_deref() {
        None | Some("local") => EngineMode::Local,
        Some("ballista") => match scheduler {
            Some(url) => {
                if let Err(e) = scheduler_address(&url) {
                    problem(scheduler_key, e);
                }
                EngineMode::Ballista { scheduler: url }
            }
            None => {
                problem(
                    "engine.scheduler",
                    "mode `ballista` needs the scheduler's URL: set `scheduler = \"df://host:50050\"` or the environment variable SMELTER_SCHEDULER".into(),
                );
                EngineMode::Local
            }
        },
        Some(other) => {
            problem(
                mode_key,
                format!("unknown engine mode `{other}`; valid choices: `local`, `ballista`"),
            );
            EngineMode::Local
        }
    };
    if raw.engine.job_timeout_seconds == Some(0) {
        problem("engine.job_timeout_seconds", "must be at least 1".into());
    }
    if raw.engine.threads == Some(0) {
        problem("engine.threads", "must be at least 1".into());
    }
    if raw.engine.target_partitions == Some(0) {
        problem("engine.target_partitions", "must be at least 1".into());
    }

    // Vars.
    let mut vars = BTreeMap::new();
    for (k, v) in &raw.vars {
        use datafusion::scalar::ScalarValue as S;
        let value = match v {
            toml::Value::String(s) => S::Utf8(Some(s.clone())),
            toml::Value::Integer(i) => S::Int64(Some(*i)),
            toml::Value::Float(f) => S::Float64(Some(*f)),
            toml::Value::Boolean(b) => S::Boolean(Some(*b)),
            other => {
                problem(
                    &format!("vars.{k}"),
                    format!("unsupported value {other}; use a string, integer, float or boolean"),
                );
                continue;
            }
        };
        vars.insert(k.clone(), value);
    }

    // Schedules.
    let mut schedules = Vec::new();
    for (i, s) in raw.schedule.iter().enumerate() {
        let key = format!("schedule[{i}]");
        match (&s.cron, s.interval_seconds) {
            (Some(_), Some(_)) | (None, None) => problem(
                &key,
                "give exactly one of `cron` and `interval_seconds`".into(),
            ),
            (Some(c), None) if c.split_whitespace().count() != 5 => problem(
                &format!("{key}.cron"),
                format!("`{c}` is not a five-field cron expression"),
            ),
            (None, Some(0)) => problem(
                &format!("{key}.interval_seconds"),
                "must be positive".into(),
            ),
            _ => {}
        }
        schedules.push(Schedule {
            name: s.name.clone().unwrap_or_else(|| format!("schedule_{i}")),
            cron: s.cron.clone(),
            interval_seconds: s.interval_seconds,
            enabled: s.enabled.unwrap_or(true),
            timezone: s.timezone.clone().unwrap_or_else(|| "UTC".into()),
            max_active_runs: s.max_active_runs.unwrap_or(1),
            tags: s.tags.clone(),
        });
    }

    let profile = profile_settings(&raw.profile, &mut |k, m| problem(k, m));
    let airflow = airflow_policy(&raw.airflow, &mut |k, m| problem(k, m));

    if !problems.is_empty() {
        return Err(Error::Invalid(problems));
    }
    Ok(Pipeline {
        name: raw.name,
        file: path.to_path_buf(),
        project_dir: project_dir.clone(),
        models_dir,
        schemas_dir,
        on_schema_change,
        on_error,
        source: Source {
            kind,
            database: raw
                .source
                .database
                .or_else(|| source_conn.and_then(|c| c.schema))
                .unwrap_or_else(|| "LogisticsDB".into()),
            scale_factor,
            seed: raw.source.seed.unwrap_or(42),
            start_date,
            batch_size,
            tables,
            mssql,
            files,
        },
        storage: Storage {
            root,
            options: raw.storage.options,
            connection: raw.storage.connection.filter(|c| !c.is_empty()),
        },
        format: Format {
            table: table_kind,
            iceberg,
            compression,
            target_file_size: raw.format.target_file_size_mb.unwrap_or(128) * 1024 * 1024,
        },
        engine: Engine {
            memory_limit: raw.engine.memory_limit_mb.map(|m| m * 1024 * 1024),
            target_partitions: raw
                .engine
                .target_partitions
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
            threads: raw.engine.threads.unwrap_or(2),
            mode,
            job_timeout: std::time::Duration::from_secs(
                raw.engine.job_timeout_seconds.unwrap_or(3600),
            ),
        },
        vars,
        schedules,
        lineage: Lineage {
            env: raw.lineage.env.clone().unwrap_or_else(|| "PROD".into()),
            datahub_dir: raw
                .lineage
                .datahub_file
                .as_ref()
                .map(|d| project_dir.join(d)),
            datahub_rest,
            datahub_batch_size,
            openlineage_dir: raw
                .lineage
                .openlineage_file
                .as_ref()
                .map(|d| project_dir.join(d)),
            openlineage_url,
            namespace: raw
                .lineage
                .namespace
                .clone()
                .unwrap_or_else(|| "smelter".into()),
            retries: raw.lineage.retries.unwrap_or(5).max(1),
        },
        profile,
        airflow,
    })
}

fn env_or(var: &str, value: &Option<String>) -> Option<String> {
    std::env::var(var)
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| value.clone())
}

/// `encrypt`, overridden by env `SMELTER_MSSQL_ENCRYPT` (`true`/`false`); default true.
fn encrypt(value: Option<bool>, problem: &mut impl FnMut(&str, String)) -> bool {
    match std::env::var("SMELTER_MSSQL_ENCRYPT")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => {
                problem(
                    "source.encrypt",
                    format!("SMELTER_MSSQL_ENCRYPT `{v}` must be `true` or `false`"),
                );
                true
            }
        },
        None => value.unwrap_or(true),
    }
}

/// Validates `mode` and `detect_deletes` of one `[[source.tables]]` entry (`key` is
/// `source.tables[i]`) and returns the read mode: `mode` when set, else `watermark` with a
/// watermark column and `full` without. Delete tracking needs the table's key columns, from the
/// pipeline (`key`) or, when it sets none, from the table's contract in `schemas_dir`.
fn read_mode(
    kind: SourceKind,
    t: &raw::SourceTableFile,
    key: &str,
    schemas_dir: &Path,
    problem: &mut impl FnMut(&str, String),
) -> ReadMode {
    let inferred = if t.watermark.is_some() {
        ReadMode::Watermark
    } else {
        ReadMode::Full
    };
    let mode = match t.mode.as_deref() {
        None => inferred,
        Some(m) => match ReadMode::parse(m) {
            Some(mode) => mode,
            None => {
                problem(
                    &format!("{key}.mode"),
                    format!(
                        "unknown mode `{m}`; valid choices: {}{}",
                        ReadMode::CHOICES,
                        crate::plan::suggest(m, ["full", "watermark", "change_tracking"])
                    ),
                );
                return inferred;
            }
        },
    };
    let keyed =
        !t.key.is_empty() || !crate::extract::contract::stored_key(schemas_dir, &t.name).is_empty();
    let detect = t.detect_deletes == Some(true);
    match mode {
        ReadMode::Full if t.watermark.is_some() => problem(
            &format!("{key}.mode"),
            format!(
                "`full` reads the whole table, but `watermark = \"{}\"` is set; remove one of them",
                t.watermark.as_deref().unwrap_or_default()
            ),
        ),
        ReadMode::Watermark if t.watermark.is_none() => problem(
            &format!("{key}.mode"),
            "`watermark` needs the `watermark` column to read past".into(),
        ),
        ReadMode::ChangeTracking => {
            if kind != SourceKind::Mssql {
                problem(
                    &format!("{key}.mode"),
                    "`change_tracking` reads SQL Server Change Tracking and only applies to `type = \"mssql\"`".into(),
                );
            }
            for (set, name) in [
                (t.watermark.is_some(), "watermark"),
                (t.lookback_seconds.is_some(), "lookback_seconds"),
                (t.query.is_some(), "query"),
                (detect, "detect_deletes"),
            ] {
                if set {
                    problem(
                        &format!("{key}.{name}"),
                        format!(
                            "does not apply with `mode = \"change_tracking\"` ({})",
                            match name {
                                "query" => "CHANGETABLE reads a table: give its `object`",
                                "detect_deletes" => "change tracking reports deletes itself",
                                _ => "the synced change-tracking version is the table's watermark",
                            }
                        ),
                    );
                }
            }
            // The key is read by the source itself (the join), so it must be in the pipeline.
            if t.key.is_empty() {
                problem(
                    &format!("{key}.key"),
                    "`mode = \"change_tracking\"` needs the table's primary key columns (`key = [..]`), which join CHANGETABLE to the table".into(),
                );
            }
        }
        _ => {}
    }
    if detect && mode != ReadMode::ChangeTracking {
        if let Some(w) = &t.watermark {
            problem(
                &format!("{key}.detect_deletes"),
                format!(
                    "needs a full extract, but `watermark = \"{w}\"` reads only changed rows, so a missing key does not mean a deleted one; remove the watermark, or use `mode = \"change_tracking\"` on SQL Server"
                ),
            );
        } else if !keyed {
            problem(
                &format!("{key}.detect_deletes"),
                "needs the table's key columns to tell which rows were deleted: set `key = [..]` (or `key` in the table's schema contract)".into(),
            );
        }
    }
    mode
}

/// Validates the SQL Server settings of `[source]`; env `SMELTER_MSSQL_HOST`, `SMELTER_MSSQL_PORT`,
/// `SMELTER_MSSQL_USER` and `SMELTER_MSSQL_ENCRYPT` override the file.
/// Validates the files-source keys of one `[[source.tables]]` entry (`key` is
/// `source.tables[i]`); other source types refuse them.
fn files_table(
    kind: SourceKind,
    t: &raw::SourceTableFile,
    key: &str,
    problem: &mut impl FnMut(&str, String),
) -> Option<FilesTable> {
    if kind != SourceKind::Files {
        for (set, name) in [
            (t.path.is_some(), "path"),
            (t.format.is_some(), "format"),
            (t.compression.is_some(), "compression"),
            (t.delimiter.is_some(), "delimiter"),
            (t.header.is_some(), "header"),
            (t.quote.is_some(), "quote"),
            (t.null_value.is_some(), "null_value"),
        ] {
            if set {
                problem(
                    &format!("{key}.{name}"),
                    "only applies to `type = \"files\"`".into(),
                );
            }
        }
        return None;
    }
    for (set, name) in [
        (t.object.is_some(), "object"),
        (t.watermark.is_some(), "watermark"),
        (t.lookback_seconds.is_some(), "lookback_seconds"),
    ] {
        if set {
            problem(
                &format!("{key}.{name}"),
                "does not apply to `type = \"files\"` (files are landed once each, see docs/files.md)"
                    .into(),
            );
        }
    }
    let path = match &t.path {
        Some(p) if !p.trim().is_empty() => {
            if let Err(e) = glob::Pattern::new(p) {
                problem(
                    &format!("{key}.path"),
                    format!("`{p}` is not a valid glob: {e}"),
                );
            }
            p.trim().trim_start_matches('/').to_string()
        }
        _ => {
            problem(
                &format!("{key}.path"),
                "required for `type = \"files\"`: a glob such as `orders/*.csv`".into(),
            );
            String::new()
        }
    };
    let stem = path
        .trim_end_matches(".gz")
        .trim_end_matches(".zst")
        .rsplit('.')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let format = match t.format.as_deref() {
        Some("csv") => FileFormat::Csv,
        Some("parquet") => FileFormat::Parquet,
        Some("json") => FileFormat::Json,
        None => match stem.as_str() {
            "csv" | "tsv" | "txt" => FileFormat::Csv,
            "parquet" | "pq" => FileFormat::Parquet,
            "json" | "jsonl" | "ndjson" => FileFormat::Json,
            _ => {
                if !path.is_empty() {
                    problem(
                        &format!("{key}.format"),
                        format!("cannot tell the format from `{path}`; set it: valid choices: `csv`, `parquet`, `json`"),
                    );
                }
                FileFormat::Csv
            }
        },
        Some(other) => {
            problem(
                &format!("{key}.format"),
                format!("unknown format `{other}`; valid choices: `csv`, `parquet`, `json`"),
            );
            FileFormat::Csv
        }
    };
    let compression = match t.compression.as_deref() {
        None | Some("auto") => FileCompression::Auto,
        Some("none") => FileCompression::None,
        Some("gzip") => FileCompression::Gzip,
        Some("zstd") => FileCompression::Zstd,
        Some(other) => {
            problem(
                &format!("{key}.compression"),
                format!(
                    "unknown compression `{other}`; valid choices: `auto`, `none`, `gzip`, `zstd`"
                ),
            );
            FileCompression::Auto
        }
    };
    if format == FileFormat::Parquet
        && matches!(compression, FileCompression::Gzip | FileCompression::Zstd)
    {
        problem(
            &format!("{key}.compression"),
            "Parquet files compress their own pages; use `auto` or `none`".into(),
        );
    }
    let mut byte = |name: &str, value: &Option<String>, default: u8| match value {
        None => default,
        Some(v) if v.len() == 1 && v.is_ascii() => v.as_bytes()[0],
        Some(v) if v == "\\t" => b'\t',
        Some(v) => {
            problem(
                &format!("{key}.{name}"),
                format!("`{v}` must be one ASCII character"),
            );
            default
        }
    };
    let delimiter = byte("delimiter", &t.delimiter, b',');
    let quote = byte("quote", &t.quote, b'"');
    if format != FileFormat::Csv {
        for (set, name) in [
            (t.delimiter.is_some(), "delimiter"),
            (t.header.is_some(), "header"),
            (t.quote.is_some(), "quote"),
        ] {
            if set {
                problem(
                    &format!("{key}.{name}"),
                    "only applies to `format = \"csv\"`".into(),
                );
            }
        }
    }
    Some(FilesTable {
        path,
        format,
        compression,
        delimiter,
        header: t.header.unwrap_or(true),
        quote,
        null_value: t.null_value.clone(),
    })
}

fn mssql_source(
    s: &raw::SourceFile,
    conn: Option<&connection::Connection>,
    project_dir: &Path,
    problem: &mut impl FnMut(&str, String),
) -> MssqlSource {
    let hint = match &s.connection {
        Some(id) => format!(" (or set SMELTER_MSSQL_{{}}, or give it in connection `{id}`)"),
        None => " (or set SMELTER_MSSQL_{})".into(),
    };
    let host = env_or("SMELTER_MSSQL_HOST", &s.host)
        .or_else(|| conn.and_then(|c| c.host.clone()))
        .unwrap_or_default();
    if host.is_empty() {
        problem(
            "source.host",
            format!(
                "required for `type = \"mssql\"`{}",
                hint.replace("{}", "HOST")
            ),
        );
    }
    let port = match std::env::var("SMELTER_MSSQL_PORT")
        .ok()
        .filter(|p| !p.is_empty())
    {
        Some(p) => match p.parse::<u16>() {
            Ok(p) => Some(p),
            Err(_) => {
                problem(
                    "source.port",
                    format!("SMELTER_MSSQL_PORT `{p}` is not a port number"),
                );
                None
            }
        },
        None => s.port.or_else(|| conn.and_then(|c| c.port)),
    };
    let user = env_or("SMELTER_MSSQL_USER", &s.user)
        .or_else(|| conn.and_then(|c| c.login.clone()))
        .unwrap_or_default();
    if user.is_empty() {
        problem(
            "source.user",
            format!(
                "required for `type = \"mssql\"` (a SQL login){}",
                hint.replace("{}", "USER")
            ),
        );
    }
    let password = match (&s.password_env, &s.password_file, conn) {
        (Some(v), None, _) if !v.is_empty() => PasswordSource::Env(v.clone()),
        (None, Some(f), _) if !f.is_empty() => PasswordSource::File(project_dir.join(f)),
        (None, None, Some(_)) => {
            PasswordSource::Connection(s.connection.clone().unwrap_or_default())
        }
        _ => {
            problem(
                "source.password_env",
                "give exactly one of `password_env` (an environment variable name), `password_file` (a secret file) and `connection` (an Airflow connection); passwords never go in the pipeline file".into(),
            );
            PasswordSource::Env(String::new())
        }
    };
    let conn_bool = |key: &str, problem: &mut dyn FnMut(&str, String)| -> Option<bool> {
        conn.and_then(|c| match c.extra_bool(key) {
            Ok(v) => v,
            Err(m) => {
                problem("source.connection", m);
                None
            }
        })
    };
    let encrypt_default = s.encrypt.or_else(|| conn_bool("encrypt", problem));
    let trust = s
        .trust_server_certificate
        .or_else(|| conn_bool("trust_server_certificate", problem));
    if s.packet_size.is_some_and(|p| !(512..=32_767).contains(&p)) {
        problem(
            "source.packet_size",
            "must be between 512 and 32767 bytes".into(),
        );
    }
    if let Some(ca) = s.ca_certificate.as_ref().filter(|c| !c.is_empty()) {
        if !project_dir.join(ca).is_file() {
            problem(
                "source.ca_certificate",
                format!("`{ca}` is not a file (relative to the project root)"),
            );
        }
    }
    for (v, name) in [
        (s.connect_timeout_seconds, "connect_timeout_seconds"),
        (s.query_timeout_seconds, "query_timeout_seconds"),
    ] {
        if v == Some(0) {
            problem(&format!("source.{name}"), "must be at least 1".into());
        }
    }
    MssqlSource {
        host,
        port,
        instance: s.instance.clone().filter(|i| !i.is_empty()),
        user,
        password,
        encrypt: encrypt(encrypt_default, problem),
        trust_server_certificate: trust.unwrap_or(false),
        connect_timeout: std::time::Duration::from_secs(s.connect_timeout_seconds.unwrap_or(30)),
        query_timeout: std::time::Duration::from_secs(s.query_timeout_seconds.unwrap_or(300)),
        application_name: s
            .application_name
            .clone()
            .unwrap_or_else(|| "smelter".into()),
        packet_size: s.packet_size.unwrap_or(32_767),
        ca_certificate: s
            .ca_certificate
            .as_ref()
            .filter(|c| !c.is_empty())
            .map(|c| project_dir.join(c)),
        browser_port: s.browser_port.unwrap_or(1434),
    }
}

#[cfg(test)]
mod tests {
    use super::SourceTable;

    fn table(query: Option<&str>) -> SourceTable {
        SourceTable {
            name: "t".into(),
            object: "sales.orders".into(),
            query: query.map(String::from),
            casts: Default::default(),
            key: Vec::new(),
            watermark: None,
            mode: super::ReadMode::Full,
            detect_deletes: false,
            lookback_seconds: 0,
            partitions: 1,
            on_schema_change: Default::default(),
            on_error: Default::default(),
            files: None,
        }
    }

    #[test]
    fn upstream_objects_of_object_and_query_tables() {
        assert_eq!(table(None).upstream_objects(), vec!["sales.orders"]);
        let q =
            "WITH recent AS (SELECT * FROM [dbo].[shipments] WHERE modified_at > '2026-01-01') \
                 SELECT r.shipment_id, c.name FROM recent AS r \
                 JOIN customers AS c ON c.customer_id = r.customer_id \
                 WHERE EXISTS (SELECT 1 FROM ops.holds h WHERE h.id = r.shipment_id)";
        assert_eq!(
            table(Some(q)).upstream_objects(),
            vec!["dbo.customers", "dbo.shipments", "ops.holds"]
        );
        // A CTE declared inside a derived table hides only that table's name.
        let nested =
            "SELECT * FROM (WITH x AS (SELECT * FROM ops.y) SELECT * FROM x) AS t JOIN X ON 1 = 1";
        assert_eq!(
            table(Some(nested)).upstream_objects(),
            vec!["dbo.X", "ops.y"]
        );
        assert!(table(Some("SELECT FROM WHERE ("))
            .upstream_objects()
            .is_empty());
    }

    /// Loads a sample pipeline with `airflow` appended (an `[airflow]` section or nothing).
    fn load_airflow(airflow: &str) -> crate::error::Result<super::Pipeline> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipelines/t.toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            format!(
                "name = \"t\"\n[source]\ntype = \"sample\"\n[[source.tables]]\nname = \"customers\"\n[storage]\nroot = \"lake\"\n{airflow}"
            ),
        )
        .unwrap();
        super::load(&path)
    }

    #[test]
    fn airflow_policy_defaults_and_values() {
        let p = load_airflow("").unwrap().airflow;
        assert_eq!(p.max_retries, None);
        assert_eq!(p.retryable_exit_codes, vec![1, 75]);
        assert_eq!(
            (p.tenant, p.pool, p.concurrency_per_tenant),
            (None, None, 1)
        );

        let p = load_airflow(
            "[airflow]\nmax_retries = 5\ninitial_delay_seconds = 30\nbackoff_multiplier = 1.5\nretryable_exit_codes = [75, 1, 75]\ntenant = \"acme-eu\"\nconcurrency_per_tenant = 2\n",
        )
        .unwrap()
        .airflow;
        assert_eq!(p.max_retries, Some(5));
        assert_eq!(p.initial_delay_seconds, Some(30));
        assert_eq!(p.backoff_multiplier, Some(1.5));
        assert_eq!(p.retryable_exit_codes, vec![1, 75]);
        assert_eq!(p.tenant.as_deref(), Some("acme-eu"));
        assert_eq!(p.pool.as_deref(), Some("smelter_tenant_acme-eu"));
        assert_eq!(p.concurrency_per_tenant, 2);
    }

    #[test]
    fn bad_airflow_values_are_all_reported_with_their_keys() {
        let e = load_airflow(
            "[airflow]\nmax_retries = 500\ninitial_delay_seconds = 100000\nbackoff_multiplier = 0.5\nretryable_exit_codes = [0, 99, 300]\ntenant = \"acme eu\"\nconcurrency_per_tenant = 0\n",
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::USAGE);
        let text = e.to_string();
        for key in [
            "airflow.max_retries",
            "airflow.initial_delay_seconds",
            "airflow.backoff_multiplier",
            "airflow.tenant",
            "airflow.concurrency_per_tenant",
        ] {
            assert!(
                text.contains(&format!("key `{key}`")),
                "{key} missing: {text}"
            );
        }
        for code in [
            "0 is not a failure",
            "99 is not a failure",
            "300 is not an exit code",
        ] {
            assert!(text.contains(code), "{code}: {text}");
        }
        let e = load_airflow("[airflow]\nconcurrency_per_tenant = 3\n").unwrap_err();
        assert!(e.to_string().contains("needs `airflow.tenant`"), "{e}");
        let e = load_airflow("[airflow]\nretries = 3\n").unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::USAGE);
        assert!(
            e.to_string().contains("unknown field `retries`")
                && e.to_string().contains("max_retries"),
            "{e}"
        );
    }
}

#[cfg(test)]
mod scheduler_tests {
    use super::scheduler_address;

    #[test]
    fn scheduler_urls_are_df_host_port() {
        assert_eq!(
            scheduler_address("df://127.0.0.1:50050"),
            Ok(("127.0.0.1".to_string(), 50050))
        );
        assert_eq!(
            scheduler_address("df://sched.internal:6000/"),
            Ok(("sched.internal".to_string(), 6000))
        );
        for bad in [
            "127.0.0.1:50050",
            "http://127.0.0.1:50050",
            "df://127.0.0.1",
            "df://127.0.0.1:50050/x",
        ] {
            let e = scheduler_address(bad).unwrap_err();
            assert!(
                e.contains(bad) && e.contains("df://host:port"),
                "{bad}: {e}"
            );
        }
    }
}
