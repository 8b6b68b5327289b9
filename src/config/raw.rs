//! Serde model of a pipeline file (`pipelines/<name>.toml`), exactly as written.
//!
//! Every struct denies unknown keys, so a typo is an error that names the key and lists the valid
//! ones. The doc comments on the fields are the reference documentation of the file format.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A whole pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// Pipeline name; SQL models live in `sql/<name>/` unless `models_dir` says otherwise.
    pub name: String,
    /// Free-text description.
    #[serde(default)]
    pub description: Option<String>,
    /// Directory of the SQL models, relative to the project root (the parent of `pipelines/`).
    /// When set, it must exist and hold a `silver/` or `gold/` directory.
    #[serde(default)]
    pub models_dir: Option<String>,
    /// Directory of the source schema contracts written by `smelter source sync`, relative to the
    /// project root (default `schemas/<name>`).
    #[serde(default)]
    pub schemas_dir: Option<String>,
    /// What a changed schema does, for every bronze table and incremental model unless a
    /// `[[source.tables]]` entry or a model header says otherwise: `fail`, `append_new_columns`
    /// (default) or `sync_all_columns` (see docs/schemas.md).
    #[serde(default)]
    pub on_schema_change: Option<String>,
    /// What a row that breaks its declared type does, for every source table unless a
    /// `[[source.tables]]` entry says otherwise: `fail` (default: the run stops, exit 3; exit 2
    /// for a files-source row that does not parse) or `quarantine` (the row goes to
    /// `bronze._quarantine_<table>`, the good rows load). See docs/errors.md.
    #[serde(default)]
    pub on_error: Option<String>,
    /// Where the data comes from.
    pub source: SourceFile,
    /// Where the lake lives.
    pub storage: StorageFile,
    /// Table format settings.
    #[serde(default)]
    pub format: FormatFile,
    /// Query engine settings.
    #[serde(default)]
    pub engine: EngineFile,
    /// Lineage emission (DataHub).
    #[serde(default)]
    pub lineage: LineageFile,
    /// Table profiling after each write, drift checks and the HTML report.
    #[serde(default)]
    pub profile: ProfileFile,
    /// Values for `{{ var.<name> }}` in SQL models.
    #[serde(default)]
    pub vars: BTreeMap<String, toml::Value>,
    /// Schedules, read by the Airflow DAG factory.
    #[serde(default)]
    pub schedule: Vec<ScheduleFile>,
    /// Retry policy and tenant serialization of the pipeline's Airflow tasks, read by the DAG
    /// factory through `smelter plan --format json`.
    #[serde(default)]
    pub airflow: AirflowFile,
}

/// `[airflow]`: how the Airflow DAG factory retries and serializes this pipeline's tasks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AirflowFile {
    /// Retries per task after the first try (0 to 100; default: the deployment's
    /// `SMELTER_RETRIES`, else 3).
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Delay before the first retry, in seconds (0 to 86400; default: the deployment's
    /// `SMELTER_RETRY_DELAY_SECONDS`, else 300).
    #[serde(default)]
    pub initial_delay_seconds: Option<u64>,
    /// Each retry waits this many times longer than the one before (1.0 to 10.0; default 2.0).
    #[serde(default)]
    pub backoff_multiplier: Option<f64>,
    /// Exit codes of `smelter` that Airflow retries (default `[1, 75]`); any other failing code
    /// fails the task at once. 0 and 99 (success, nothing to do) are not failures.
    #[serde(default)]
    pub retryable_exit_codes: Option<Vec<i64>>,
    /// Tenant id: tags the DAGs `tenant:<id>` and runs their tasks in the Airflow pool
    /// `smelter_tenant_<id>` (letters, digits, `_`, `-`).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Slots of the tenant's pool: how many tasks of the tenant's pipelines run at once
    /// (default 1: one at a time, so two pipelines of a tenant never race on its lake).
    #[serde(default)]
    pub concurrency_per_tenant: Option<u32>,
}

/// `[source]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceFile {
    /// Source type: `sample` (built-in LogisticsDB generator), `mssql` or `files` (CSV, Parquet
    /// and JSON-lines files, see docs/files.md).
    #[serde(rename = "type")]
    pub kind: String,
    /// SQL Server: an Airflow connection id (conn type `mssql`) read from `AIRFLOW_CONN_<ID>`
    /// (URI or JSON form): host, port, schema (database), login, password and the extras
    /// `encrypt` and `trust_server_certificate` fill the keys this table leaves unset.
    pub connection: Option<String>,
    /// Logical database name, used in `_source` and lineage (default `LogisticsDB`).
    #[serde(default)]
    pub database: Option<String>,
    /// Sample source: scale factor (1.0 is about one million shipments).
    #[serde(default)]
    pub scale_factor: Option<f64>,
    /// Sample source: random seed; the same seed gives the same data.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Sample source: the first day of daily changes (`YYYY-MM-DD`); history lies before it.
    #[serde(default)]
    pub start_date: Option<String>,
    /// Rows per Arrow batch read from the source.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// SQL Server: host name or address. Env `SMELTER_MSSQL_HOST` overrides it.
    #[serde(default)]
    pub host: Option<String>,
    /// SQL Server: TCP port (default 1433, or found through the SQL Browser when `instance` is
    /// set). Env `SMELTER_MSSQL_PORT` overrides it.
    #[serde(default)]
    pub port: Option<u16>,
    /// SQL Server: named instance (`host\instance`); its port is asked from the SQL Browser
    /// (UDP 1434) unless `port` is given.
    #[serde(default)]
    pub instance: Option<String>,
    /// SQL Server: SQL login name. Env `SMELTER_MSSQL_USER` overrides it.
    #[serde(default)]
    pub user: Option<String>,
    /// SQL Server: name of the environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// SQL Server: file holding the password (a mounted secret), relative to the project root.
    #[serde(default)]
    pub password_file: Option<String>,
    /// SQL Server: encrypt the connection with TLS (default true). `false` sends everything,
    /// the login included, in plaintext: only for local test servers.
    #[serde(default)]
    pub encrypt: Option<bool>,
    /// SQL Server: accept any server certificate (self-signed dev servers). Default false.
    #[serde(default)]
    pub trust_server_certificate: Option<bool>,
    /// SQL Server: seconds to wait for the TCP connection and login (default 30).
    #[serde(default)]
    pub connect_timeout_seconds: Option<u64>,
    /// SQL Server: seconds to wait for each response of a query before failing it as a
    /// transient error (default 300).
    #[serde(default)]
    pub query_timeout_seconds: Option<u64>,
    /// SQL Server: application name shown in `sys.dm_exec_sessions` (default `smelter`).
    #[serde(default)]
    pub application_name: Option<String>,
    /// SQL Server: TDS packet size asked for at login, 512 to 32767 bytes (default 32767; the
    /// server may grant less). Larger packets cost less per row on big reads.
    #[serde(default)]
    pub packet_size: Option<u32>,
    /// SQL Server: PEM or DER file of the CA that signed the server certificate (relative to the
    /// project root), for servers whose certificate the system trust store does not know.
    #[serde(default)]
    pub ca_certificate: Option<String>,
    /// SQL Server: UDP port of the SQL Browser asked for a named instance's port (default 1434).
    #[serde(default)]
    pub browser_port: Option<u16>,
    /// Files source: base of the table paths, written like `storage.root` (a local path relative
    /// to the project root, `file://`, `s3://bucket/prefix`, `az://container/prefix`); default:
    /// the lake root.
    #[serde(default)]
    pub root: Option<String>,
    /// Files source: non-secret object-store options for `root`, like `[storage.options]`
    /// (default: `[storage.options]` when `root` is not set). Credentials come from the
    /// environment.
    #[serde(default)]
    pub options: Option<BTreeMap<String, String>>,
    /// Tables to extract.
    #[serde(default)]
    pub tables: Vec<SourceTableFile>,
}

/// `[[source.tables]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceTableFile {
    /// Table name in the lake (bronze table `bronze.<name>`).
    pub name: String,
    /// Source object, `schema.table` (default `dbo.<name>`).
    #[serde(default)]
    pub object: Option<String>,
    /// SQL Server: a SELECT to extract instead of `object`. It is wrapped as a derived table
    /// (`SELECT .. FROM (<query>) AS [q] WHERE ..`), so watermark and partition filters apply to
    /// its output columns; no ORDER BY (unless with TOP) and no trailing `;`.
    #[serde(default)]
    pub query: Option<String>,
    /// SQL Server: explicit casts, `{ column = "sql type" }`, for columns whose type Smelter does
    /// not map (sql_variant, geography, ...). The server converts the value; the target must be a
    /// type Smelter maps, for example `nvarchar(max)`.
    #[serde(default)]
    pub casts: std::collections::BTreeMap<String, String>,
    /// Key column(s).
    #[serde(default)]
    pub key: Vec<String>,
    /// Monotonic column for incremental extraction; absent means full extraction every run.
    #[serde(default)]
    pub watermark: Option<String>,
    /// How the table is read: `full` (the whole table every run; the default without
    /// `watermark`), `watermark` (rows past the last committed watermark; the default with one)
    /// or `change_tracking` (SQL Server Change Tracking: the rows changed since the last synced
    /// version, deletes included, with `_op` and `_change_version`; see docs/mssql.md).
    #[serde(default)]
    pub mode: Option<String>,
    /// Full extracts only: a key of the bronze table's current state that is missing from
    /// this run's full snapshot lands in bronze as a delete row (`_op = 'D'`). Needs the key
    /// columns (`key`, or the contract's); refused with `watermark`. See docs/incremental.md.
    #[serde(default)]
    pub detect_deletes: Option<bool>,
    /// Overlap re-read below the last watermark, in seconds (dedup happens downstream).
    #[serde(default)]
    pub lookback_seconds: Option<i64>,
    /// Parallel partitions for the read. SQL Server: more than one needs a single integer `key`;
    /// each partition reads one key range over its own connection.
    #[serde(default)]
    pub partitions: Option<usize>,
    /// What a changed source schema does for this table (overrides the pipeline's
    /// `on_schema_change`): `fail`, `append_new_columns` or `sync_all_columns`.
    #[serde(default)]
    pub on_schema_change: Option<String>,
    /// Files source: glob of the table's files relative to `source.root`, e.g. `orders/*.csv`
    /// or `**/*.parquet` (`*` stays within one directory, `**` crosses directories).
    #[serde(default)]
    pub path: Option<String>,
    /// Files source: `csv`, `parquet` or `json` (JSON lines: one object per line); default from
    /// the extension of `path` (`.csv`, `.parquet`, `.json`/`.jsonl`/`.ndjson`, before any
    /// `.gz`/`.zst`).
    #[serde(default)]
    pub format: Option<String>,
    /// Files source: `auto` (default: `.gz` is gzip, `.zst` is zstd, else none), `none`, `gzip`
    /// or `zstd`. Parquet files compress their pages themselves and take `auto` or `none`.
    #[serde(default)]
    pub compression: Option<String>,
    /// Files source, CSV: field delimiter, one ASCII character (default `,`).
    #[serde(default)]
    pub delimiter: Option<String>,
    /// Files source, CSV: whether the first line holds the column names (default true; without
    /// it the columns are `column_1`, `column_2`, ...).
    #[serde(default)]
    pub header: Option<bool>,
    /// Files source, CSV: quote character, one ASCII character (default `"`).
    #[serde(default)]
    pub quote: Option<String>,
    /// Files source, CSV and JSON: text read as NULL besides the empty field (e.g. `NULL`, `\\N`).
    #[serde(default)]
    pub null_value: Option<String>,
    /// What a row that breaks its declared type (or, in the files source, does not parse) does
    /// for this table (overrides the pipeline's `on_error`): `fail` or `quarantine`.
    #[serde(default)]
    pub on_error: Option<String>,
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageFile {
    /// Lake root: a local path, `file://`, `s3://bucket/prefix`, `az://container/prefix` or
    /// `abfss://container@account.dfs.core.windows.net/prefix`. Env `SMELTER_STORAGE_ROOT` overrides it.
    pub root: String,
    /// Object-store options (endpoint, region, allow_http, ...). Never put secrets here.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// An Airflow connection id (`wasb`/`adls` or `aws`) read from `AIRFLOW_CONN_<ID>` when the
    /// lake is opened: account, keys, SAS token, endpoint and region; `options` override its
    /// non-secret settings.
    pub connection: Option<String>,
}

/// `[format]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatFile {
    /// Table format: `delta` (default) or `iceberg`.
    #[serde(default)]
    pub table: Option<String>,
    /// `[format.iceberg]`: the Iceberg catalog.
    #[serde(default)]
    pub iceberg: IcebergFile,
    /// Parquet compression: `zstd` (default), `snappy`, `lz4`, `uncompressed`.
    #[serde(default)]
    pub compression: Option<String>,
    /// Target data file size in MiB.
    #[serde(default)]
    pub target_file_size_mb: Option<u64>,
}

/// `[format.iceberg]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcebergFile {
    /// Catalog kind: `sql` (default) or `rest`.
    #[serde(default)]
    pub catalog: Option<String>,
    /// Catalog name (the `catalog_name` column of a SQL catalog; the lineage name of any
    /// catalog); default `smelter`.
    #[serde(default)]
    pub name: Option<String>,
    /// SQLite file of the embedded catalog, relative to the project root.
    #[serde(default)]
    pub path: Option<String>,
    /// REST catalog: the server's base URI (`https://host/api/catalog`, without `/v1`).
    #[serde(default)]
    pub uri: Option<String>,
    /// Environment variable holding a catalog database URI (`postgres://…` or `sqlite://…`),
    /// or the REST catalog's base URI.
    #[serde(default)]
    pub uri_env: Option<String>,
    /// REST catalog: the warehouse to ask the server's `/v1/config` for.
    #[serde(default)]
    pub warehouse: Option<String>,
    /// REST catalog: the URL prefix (`/v1/<prefix>/namespaces`) when the server's `/v1/config`
    /// gives none.
    #[serde(default)]
    pub prefix: Option<String>,
    /// REST catalog: environment variable holding a bearer token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// REST catalog: environment variable holding OAuth2 client credentials,
    /// `client_id:client_secret`.
    #[serde(default)]
    pub credential_env: Option<String>,
    /// REST catalog: the OAuth2 token endpoint (default `<uri>/v1/oauth/tokens`).
    #[serde(default)]
    pub oauth2_server_uri: Option<String>,
    /// REST catalog: the OAuth2 scope (default `catalog`).
    #[serde(default)]
    pub scope: Option<String>,
}

/// `[engine]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineFile {
    /// `local` (default) or `ballista` (`SMELTER_ENGINE_MODE` overrides).
    #[serde(default)]
    pub mode: Option<String>,
    /// The Ballista scheduler, `df://host:port` (mode `ballista`; `SMELTER_SCHEDULER` overrides).
    #[serde(default)]
    pub scheduler: Option<String>,
    /// Seconds one model's job may run on the cluster before the run exits 75 (default 3600).
    #[serde(default)]
    pub job_timeout_seconds: Option<u64>,
    /// Memory cap for query execution in MiB; operators spill to disk above it.
    #[serde(default)]
    pub memory_limit_mb: Option<usize>,
    /// Target partitions (default: number of cores).
    #[serde(default)]
    pub target_partitions: Option<usize>,
    /// Models of one layer run at once, when independent (dbt's `threads`; default 2).
    #[serde(default)]
    pub threads: Option<usize>,
}

/// `[[schedule]]`, in the Dativo schedule format.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleFile {
    /// Schedule name (part of the generated DAG id).
    #[serde(default)]
    pub name: Option<String>,
    /// Cron expression; exactly one of `cron` and `interval_seconds`.
    #[serde(default)]
    pub cron: Option<String>,
    /// Fixed interval in seconds; exactly one of `cron` and `interval_seconds`.
    #[serde(default)]
    pub interval_seconds: Option<u64>,
    /// Whether the schedule produces a DAG (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// IANA timezone of the schedule (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Maximum concurrent DAG runs (default 1).
    #[serde(default)]
    pub max_active_runs: Option<u32>,
    /// Extra DAG tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `[lineage]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineageFile {
    /// DataHub environment (fabric) of the URNs (default `PROD`).
    #[serde(default)]
    pub env: Option<String>,
    /// Directory (relative to the project root) where each layer run writes its DataHub MCPs as
    /// `<dir>/<run_id>/<layer>.json`, the format `datahub ingest` and `datahub check metadata-file` read.
    #[serde(default)]
    pub datahub_file: Option<String>,
    /// DataHub GMS base URL (e.g. `http://datahub-gms:8080`) to POST the MCPs to; env
    /// `DATAHUB_GMS_URL` overrides it and `DATAHUB_GMS_TOKEN` holds the bearer token.
    #[serde(default)]
    pub datahub_rest: Option<String>,
    /// MCPs per REST request (1 to 200, default 200); requests also stay under 15 MiB.
    #[serde(default)]
    pub datahub_batch_size: Option<usize>,
    /// Directory (relative to the project root) where each layer run appends its OpenLineage
    /// RunEvents as JSON lines: `<dir>/<run_id>/<layer>.jsonl`.
    #[serde(default)]
    pub openlineage_file: Option<String>,
    /// OpenLineage HTTP endpoint the RunEvents are POSTed to (the full URL, e.g.
    /// `http://marquez:5000/api/v1/lineage` or DataHub's `.../openapi/openlineage/api/v1/lineage`);
    /// env `OPENLINEAGE_URL` overrides it and `OPENLINEAGE_API_KEY` holds the bearer token.
    #[serde(default)]
    pub openlineage_url: Option<String>,
    /// OpenLineage job namespace (default `smelter`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Attempts per HTTP request on 429, 5xx or connection errors, with exponential backoff
    /// (default 5).
    #[serde(default)]
    pub retries: Option<u32>,
}

/// `[profile]`: profiles of every table Smelter writes (bronze, silver, gold), stored in
/// `_smelter/profiles`, compared with the previous profile of the same table (drift), and an HTML
/// report per layer run at `_smelter/reports/<run_id>/<layer>.html` in the lake.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    /// `full` (default: every row), `sample` (tables above `sample_rows` rows are profiled on a
    /// random sample of about `sample_rows` rows), or `off`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Sample mode: row count above which a table is sampled, and the sample's target size
    /// (default 1,000,000).
    #[serde(default)]
    pub sample_rows: Option<u64>,
    /// Most frequent values kept per column (default 10; 0 turns top-k off).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Equal-width histogram buckets for numeric and temporal columns (default 20; 0 turns
    /// histograms off).
    #[serde(default)]
    pub histogram_bins: Option<usize>,
    /// Columns whose approximate (HyperLogLog) distinct count is at most this get an exact distinct
    /// count and top-k frequencies from the second pass (default 100,000); above it the distinct
    /// count stays approximate (standard error about 0.8 %) and top-k is left out.
    #[serde(default)]
    pub exact_distinct_max: Option<u64>,
    /// Write the HTML report of each layer run to the lake (default true).
    #[serde(default)]
    pub report: Option<bool>,
    /// Drift thresholds against the previous profile of the same table.
    #[serde(default)]
    pub drift: DriftFile,
}

/// `[profile.drift]`: each rule is `{ max = <number>, action = "warn" | "fail" }`; a rule left
/// out uses its default threshold with action `warn`. `enabled = false` turns drift checks off.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftFile {
    /// Turn drift checks on or off (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Row-count change in percent of the previous count (default 50).
    #[serde(default)]
    pub row_count_change_pct: Option<DriftRuleFile>,
    /// Change of a column's null proportion, in percentage points (default 10).
    #[serde(default)]
    pub null_rate_change_pp: Option<DriftRuleFile>,
    /// Change of a column's distinct count in percent of the previous count (default 50).
    #[serde(default)]
    pub distinct_change_pct: Option<DriftRuleFile>,
    /// Shift of a numeric column's mean, in previous standard deviations (default 3).
    #[serde(default)]
    pub mean_shift_stddevs: Option<DriftRuleFile>,
    /// Population stability index between the previous and the new histogram (default 0.25).
    #[serde(default)]
    pub psi: Option<DriftRuleFile>,
}

/// One drift threshold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftRuleFile {
    /// The largest value that does not count as drift.
    pub max: f64,
    /// `warn` (default: log and record) or `fail` (exit 3 after the table was written).
    #[serde(default)]
    pub action: Option<String>,
}
