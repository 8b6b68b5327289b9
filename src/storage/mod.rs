//! The lake: one root URL, resolved once, from which every table, landing file and state table
//! gets its URL.
//!
//! Layout under the root: `<layer>/<table>` for bronze, silver and gold tables,
//! `landing/<table>/run=<run_id>/` for extracted Parquet, and `_smelter/<name>` for state.
//! Local roots may be relative: they are resolved against the project root.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::prelude::SessionContext;
use object_store::path::Path as StorePath;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::{ObjectStore, RetryConfig};
use url::Url;

use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::plan::TableId;

pub mod emulator;

/// A resolved lake root with its object store.
#[derive(Debug, Clone)]
pub struct Lake {
    root: Url,
    options: HashMap<String, String>,
    store: Arc<dyn ObjectStore>,
}

/// The kind of store a root URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Local disk.
    Local,
    /// S3 or an S3-compatible store.
    S3,
    /// Azure Blob Storage or ADLS Gen2.
    Azure,
}

/// Retry and timeout settings Smelter reads from `[storage.options]` (not object-store keys).
const RETRY_KEYS: [&str; 4] = [
    "max_retries",
    "retry_timeout",
    "init_backoff",
    "max_backoff",
];

impl Lake {
    /// Resolves the pipeline's storage root and builds its object store.
    ///
    /// Credentials come from the environment (`AWS_*`, `AZURE_*`) the way each SDK reads them;
    /// `[storage.options]` holds only non-secret settings.
    pub fn open(pipeline: &Pipeline) -> Result<Lake> {
        register_delta_handlers();
        let (root, backend, options) = check(pipeline)?;
        let root = match backend {
            Backend::Local => local_root(pipeline, &root)?,
            _ => root,
        };
        Lake::with_store(root, backend, options, "the lake root")
    }

    /// Opens a read-only store for another root written like `storage.root` (a local path
    /// relative to the project root, `file://`, `s3://`, `az://`, `abfss://`) with `options`
    /// like `[storage.options]`; credentials come from the environment as for the lake. Used by
    /// the files source for its base `root`. A local root that does not exist is a config error
    /// (exit 2): unlike the lake, it is not created.
    pub fn open_root(
        pipeline: &Pipeline,
        root: &str,
        options: &std::collections::BTreeMap<String, String>,
    ) -> Result<Lake> {
        let mut other = pipeline.clone();
        other.storage.root = root.to_string();
        other.storage.options = options.clone();
        // The lake's connection serves a source root on the same kind of store only.
        if !root.contains("://") || root.starts_with("file://") {
            other.storage.connection = None;
        }
        let (root, backend, options) = check(&other)?;
        if backend == Backend::Local {
            let path = root
                .to_file_path()
                .map_err(|_| Error::Internal(format!("bad local root {root}")))?;
            if !path.is_dir() {
                return Err(Error::config(
                    pipeline.file.display(),
                    format!(
                        "key `source.root`: directory {} does not exist",
                        path.display()
                    ),
                ));
            }
        }
        Lake::with_store(root, backend, options, "the source root")
    }

    /// Builds the object store of a checked `root`; a failure names the URL (never a secret)
    /// and `what` was being opened (exit 2).
    fn with_store(
        root: Url,
        backend: Backend,
        options: HashMap<String, String>,
        what: &str,
    ) -> Result<Lake> {
        let store = build_store(&root, backend, &options).map_err(|e| Error::Storage {
            url: redact(&root),
            message: format!("cannot open {what}: {}", scrub(&e.to_string())),
            retryable: false,
        })?;
        Ok(Lake {
            root,
            options,
            store,
        })
    }

    /// A lake that lives in memory (`memory:///`) and persists nothing. Planning uses it to get
    /// the pipeline's table format (for its type checks) without touching real storage.
    pub fn in_memory() -> Lake {
        Lake {
            root: Url::parse("memory:///").expect("a constant, valid URL"),
            options: HashMap::new(),
            store: Arc::new(object_store::memory::InMemory::new()),
        }
    }

    /// The root URL.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// Storage options (object-store keys plus retry settings), for delta-rs.
    pub fn options(&self) -> &HashMap<String, String> {
        &self.options
    }

    /// The object store of the root.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// URL of a lake table.
    pub fn table_url(&self, id: &TableId) -> Url {
        self.join(&format!("{}/{}/", id.layer, id.name))
    }

    /// URL of the landing directory of one table and run.
    pub fn landing_url(&self, table: &str, run_id: &str) -> Url {
        self.join(&format!("landing/{table}/run={}/", run_dir_name(run_id)))
    }

    /// URL of a state table under `_smelter/`.
    pub fn state_url(&self, name: &str) -> Url {
        self.join(&format!("_smelter/{name}/"))
    }

    /// URL of a file (not a table) under `_smelter/`, e.g. `reports/<run>/<layer>.html`.
    pub fn state_file_url(&self, rel: &str) -> Url {
        self.join(&format!("_smelter/{rel}"))
    }

    /// Object-store path of `url` (which must be under the root).
    pub fn path_of(&self, url: &Url) -> Result<StorePath> {
        let (_, path) = object_store::ObjectStoreScheme::parse(url)
            .map_err(|e| Error::Internal(format!("bad lake URL {}: {e}", redact(url))))?;
        Ok(path)
    }

    /// Registers the lake's object store with a DataFusion session.
    pub fn register(&self, ctx: &SessionContext) {
        let base = self.root[..url::Position::BeforePath].to_string();
        if let Ok(base) = Url::parse(&base) {
            ctx.runtime_env()
                .register_object_store(&base, self.store.clone());
        }
    }

    fn join(&self, rel: &str) -> Url {
        self.root
            .join(rel)
            .expect("relative lake paths are valid URLs")
    }
}

fn ensure_dir_url(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

/// Characters of a run id kept as they are in its directory name (everything else is escaped):
/// letters, digits, `-`, `_`, `.`, `:` and `+`, so `manual__2026-11-01` and Airflow's
/// `scheduled__2026-11-01T00:00:00+00:00` stay as they are.
const RUN_ID_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b':')
    .remove(b'+');

/// The directory name of a run id (under `landing/<table>/run=`, `_smelter/reports/` and the
/// lineage output directories): percent-encoding (UTF-8 bytes, upper-case hex) of every byte
/// outside [`RUN_ID_ESCAPED`]'s kept set, written with `@` instead of `%` (`x/y` → `x@2Fy`,
/// `@` → `@40`), and a run id of only dots escaped whole. `@` because a `%` in a path is
/// decoded or encoded again by URL and object-store layers (a local object store writes `%` as
/// `%25` but does not read it back). The mapping is injective (`@` itself is escaped), so `x/y`
/// and `x_y` never share a directory.
pub fn run_dir_name(run_id: &str) -> String {
    let encoded = if !run_id.is_empty() && run_id.bytes().all(|b| b == b'.') {
        run_id.replace('.', "%2E")
    } else {
        percent_encoding::utf8_percent_encode(run_id, RUN_ID_ESCAPED).to_string()
    };
    encoded.replace('%', "@")
}

/// A URL without credentials or query string, safe to log.
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.set_query(None);
    u.to_string()
}

/// Checks the storage root and options without touching storage: the root URL (a local root
/// is left relative to the project), its backend, and the normalized options.
pub fn check(pipeline: &Pipeline) -> Result<(Url, Backend, HashMap<String, String>)> {
    let raw = pipeline.storage.root.trim();
    let root = match Url::parse(raw) {
        Ok(url) if url.scheme().len() > 1 && url.scheme() != "file" => url,
        _ => {
            let path = raw.strip_prefix("file://").unwrap_or(raw);
            let path = pipeline.project_dir.join(path);
            Url::from_directory_path(std::path::absolute(&path)?).map_err(|_| {
                Error::config(
                    pipeline.file.display(),
                    format!("key `storage.root`: `{raw}` is not a valid path"),
                )
            })?
        }
    };
    let root = ensure_dir_url(root);
    let backend = match object_store::ObjectStoreScheme::parse(&root) {
        Ok((object_store::ObjectStoreScheme::Local, _)) => Backend::Local,
        Ok((object_store::ObjectStoreScheme::AmazonS3, _)) => Backend::S3,
        Ok((object_store::ObjectStoreScheme::MicrosoftAzure, _)) => Backend::Azure,
        _ => {
            return Err(Error::config(
                pipeline.file.display(),
                format!(
                    "key `storage.root`: `{}` is not a supported lake root; use a local path, \
                     file://, s3://bucket/prefix, az://container/prefix or \
                     abfss://container@account.dfs.core.windows.net/prefix",
                    redact(&root)
                ),
            ))
        }
    };
    let options = normalize_options(pipeline, backend)?;
    Ok((root, backend, options))
}

/// Creates a local lake directory and returns its canonical URL.
fn local_root(pipeline: &Pipeline, root: &Url) -> Result<Url> {
    let path = root
        .to_file_path()
        .map_err(|_| Error::Internal(format!("bad local root {root}")))?;
    std::fs::create_dir_all(&path).map_err(|e| Error::Storage {
        url: path.display().to_string(),
        message: format!("cannot create the local lake directory: {e}"),
        retryable: false,
    })?;
    let path = std::fs::canonicalize(&path)?;
    Url::from_directory_path(&path)
        .map(ensure_dir_url)
        .map_err(|_| {
            Error::config(
                pipeline.file.display(),
                format!(
                    "key `storage.root`: `{}` is not a valid path",
                    path.display()
                ),
            )
        })
}

/// Registers delta-rs's S3 and Azure log stores once per process.
fn register_delta_handlers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        deltalake::aws::register_handlers(None);
        deltalake::azure::register_handlers(None);
    });
}

/// Checks `[storage.options]` for the root's backend and turns Smelter's short names into the
/// object-store keys. Secrets are refused: they come from the environment only.
fn normalize_options(pipeline: &Pipeline, backend: Backend) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    let mut problems = Vec::new();
    for (key, value) in &pipeline.storage.options {
        let k = key.to_ascii_lowercase();
        let bad = |what: &str| format!("key `storage.options.{key}`: {what}");
        if RETRY_KEYS.contains(&k.as_str()) {
            out.insert(k, value.clone());
            continue;
        }
        match backend {
            Backend::Local => problems.push(bad("a local lake takes no storage options")),
            Backend::S3 => {
                let (k, value) = match k.as_str() {
                    "path_style" => (
                        "aws_virtual_hosted_style_request".to_string(),
                        (!is_truthy(value)).to_string(),
                    ),
                    _ => (k, value.clone()),
                };
                match k.parse::<AmazonS3ConfigKey>() {
                    Ok(
                        AmazonS3ConfigKey::AccessKeyId
                        | AmazonS3ConfigKey::SecretAccessKey
                        | AmazonS3ConfigKey::Token,
                    ) => problems.push(bad(
                        "credentials never go in the pipeline file; set AWS_ACCESS_KEY_ID, \
                         AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN in the environment",
                    )),
                    Ok(parsed) => {
                        out.insert(parsed.as_ref().to_string(), value);
                    }
                    Err(_) => problems.push(bad(
                        "unknown S3 option; valid: endpoint, region, allow_http, path_style, \
                         timeout, connect_timeout, max_retries, retry_timeout, or any aws_* key",
                    )),
                }
            }
            Backend::Azure => match k.parse::<AzureConfigKey>() {
                Ok(
                    AzureConfigKey::AccessKey
                    | AzureConfigKey::SasKey
                    | AzureConfigKey::ClientSecret
                    | AzureConfigKey::Token,
                ) => problems.push(bad(
                    "credentials never go in the pipeline file; set AZURE_STORAGE_ACCOUNT_KEY, \
                     AZURE_STORAGE_SAS_TOKEN or AZURE_CLIENT_SECRET in the environment",
                )),
                Ok(parsed) => {
                    out.insert(parsed.as_ref().to_string(), value.clone());
                }
                Err(_) => problems.push(bad(
                    "unknown Azure option; valid: use_emulator, endpoint, account_name, \
                     allow_http, timeout, connect_timeout, max_retries, retry_timeout, or any \
                     azure_* key",
                )),
            },
        }
    }
    if let Some(id) = &pipeline.storage.connection {
        match connection_options(id, backend) {
            // The pipeline's own options win over the connection's non-secret settings.
            Ok(conn) => {
                for (k, v) in conn {
                    out.entry(k).or_insert(v);
                }
            }
            Err(m) => problems.push(format!("key `storage.connection`: {m}")),
        }
    }
    if let Err(e) = retry_config(&out) {
        problems.push(format!("key `storage.options`: {e}"));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(Error::config(pipeline.file.display(), problems.join("; ")))
    }
}

/// The object-store options of Airflow connection `id` for a lake on `backend`.
fn connection_options(
    id: &str,
    backend: Backend,
) -> std::result::Result<std::collections::BTreeMap<String, String>, String> {
    let conn = crate::config::connection::from_env(id)?;
    let options = conn
        .storage_options()
        .map_err(|m| format!("connection `{id}`: {m}"))?;
    let prefix = match backend {
        Backend::S3 => "aws_",
        Backend::Azure => "azure_",
        Backend::Local => return Err("a local lake takes no connection".into()),
    };
    if options.keys().any(|k| !k.starts_with(prefix)) {
        return Err(format!(
            "connection `{id}` (conn type `{}`) does not fit the lake root's store",
            conn.conn_type
        ));
    }
    Ok(options)
}

fn is_truthy(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on" | "y"
    )
}

/// The client retry policy: object_store's backoff, bounded by `max_retries` (default 10) and
/// `retry_timeout` (default 180s), with `init_backoff`/`max_backoff` overrides.
fn retry_config(options: &HashMap<String, String>) -> std::result::Result<RetryConfig, String> {
    let mut retry = RetryConfig::default();
    let duration = |k: &str| -> std::result::Result<Option<Duration>, String> {
        options
            .get(k)
            .map(|v| {
                humantime::parse_duration(v)
                    .map_err(|_| format!("`{k}` = `{v}` is not a duration such as `30s`"))
            })
            .transpose()
    };
    if let Some(v) = options.get("max_retries") {
        retry.max_retries = v
            .parse()
            .map_err(|_| format!("`max_retries` = `{v}` is not a whole number"))?;
    }
    if let Some(d) = duration("retry_timeout")? {
        retry.retry_timeout = d;
    }
    if let Some(d) = duration("init_backoff")? {
        retry.backoff.init_backoff = d;
    }
    if let Some(d) = duration("max_backoff")? {
        retry.backoff.max_backoff = d;
    }
    Ok(retry)
}

/// The S3 builder of a lake at `root` with its normalized `options` (see [`Lake::options`]):
/// credentials from the environment, the options, and the retry policy. Not built, so a table
/// format that needs a builder per bucket (Iceberg) configures the same client.
pub fn s3_builder(root: &Url, options: &HashMap<String, String>) -> AmazonS3Builder {
    let retry = retry_config(options).unwrap_or_default();
    options
        .iter()
        .filter(|(k, _)| !RETRY_KEYS.contains(&k.as_str()))
        .fold(
            AmazonS3Builder::from_env().with_url(root.as_str()),
            |b, (k, v)| match k.parse() {
                Ok(key) => b.with_config(key, v),
                Err(_) => b,
            },
        )
        .with_retry(retry)
}

/// An object store for the bucket, container or file system `url` names, configured from the
/// environment only (`AWS_*`, `AZURE_*`, as each SDK reads them), the way the processes of a
/// cluster (`smelter cluster`), which read no pipeline file, reach the lake. `None` for a scheme
/// that is not a lake's (see [`check`]).
///
/// Errors: the builder's, e.g. an S3 URL without a bucket.
pub fn store_from_env(
    url: &Url,
) -> Option<std::result::Result<Arc<dyn ObjectStore>, object_store::Error>> {
    let backend = match object_store::ObjectStoreScheme::parse(url) {
        Ok((object_store::ObjectStoreScheme::Local, _)) => Backend::Local,
        Ok((object_store::ObjectStoreScheme::AmazonS3, _)) => Backend::S3,
        Ok((object_store::ObjectStoreScheme::MicrosoftAzure, _)) => Backend::Azure,
        _ => return None,
    };
    Some(build_store(url, backend, &HashMap::new()))
}

/// Builds the one object store of the lake: the credentials from the environment, the options
/// from the pipeline, and the retry policy.
fn build_store(
    root: &Url,
    backend: Backend,
    options: &HashMap<String, String>,
) -> std::result::Result<Arc<dyn ObjectStore>, object_store::Error> {
    let retry = retry_config(options).unwrap_or_default();
    let settings = options
        .iter()
        .filter(|(k, _)| !RETRY_KEYS.contains(&k.as_str()));
    Ok(match backend {
        Backend::Local => Arc::new(object_store::local::LocalFileSystem::new()),
        Backend::S3 => Arc::new(s3_builder(root, options).build()?),
        Backend::Azure => {
            let builder = settings.fold(
                MicrosoftAzureBuilder::from_env().with_url(root.as_str()),
                |b, (k, v)| match k.parse() {
                    Ok(key) => b.with_config(key, v),
                    Err(_) => b,
                },
            );
            let store: Arc<dyn ObjectStore> = Arc::new(builder.with_retry(retry).build()?);
            // Azurite named by its account URL (an Airflow `wasb` connection): see `emulator`.
            if options
                .get(AzureConfigKey::Endpoint.as_ref())
                .is_some_and(|e| emulator::is_path_style(e))
            {
                Arc::new(emulator::ClientOffset(store))
            } else {
                store
            }
        }
    })
}

/// Environment variables whose values are secrets and must never reach output.
const SECRET_VARS: [&str; 9] = [
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_CLIENT_SECRET",
    "AZURE_STORAGE_TOKEN",
    "DATAHUB_GMS_TOKEN",
];

/// Replaces every secret value from the environment (and any `sig=` SAS signature) in `text`
/// with `***`. Every log line, error message and run-log entry goes through it.
pub fn scrub(text: &str) -> String {
    static SECRETS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let secrets = SECRETS.get_or_init(|| {
        let mut v: Vec<String> = std::env::vars()
            .filter(|(k, _)| {
                SECRET_VARS.contains(&k.as_str())
                    || k.ends_with("_PASSWORD")
                    || k.ends_with("_SECRET")
                    || k.ends_with("_TOKEN")
            })
            .map(|(_, v)| v)
            .chain(crate::config::connection::secrets())
            .filter(|v| v.len() >= 6)
            .collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.len()));
        v
    });
    let mut out = text.to_string();
    for s in secrets {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "***");
        }
    }
    let mut from = 0;
    while let Some(i) = out[from..].find("sig=").map(|i| from + i + 4) {
        let end = out[i..]
            .find(['&', ' ', ')', '"'])
            .map_or(out.len(), |e| i + e);
        out.replace_range(i..end, "***");
        from = i + 3;
    }
    out
}

/// What kind of storage failure an object-store error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Credentials rejected: fatal.
    Auth,
    /// Access denied: fatal.
    Denied,
    /// Bucket, container or object missing: fatal.
    Missing,
    /// Anything else (5xx, timeouts, throttling, dropped connections) that outlasted the
    /// client's retries: retryable.
    Transient,
}

impl Fault {
    /// Whether a later retry of the run may succeed.
    pub fn retryable(self) -> bool {
        self == Fault::Transient
    }

    /// What the user should check.
    pub fn hint(self) -> &'static str {
        match self {
            Fault::Auth => {
                "the credentials were rejected; check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or \
                 AZURE_STORAGE_ACCOUNT_NAME/AZURE_STORAGE_ACCOUNT_KEY/AZURE_STORAGE_SAS_TOKEN"
            }
            Fault::Denied => {
                "access was denied; check that the credentials may read and write this bucket or \
                 container"
            }
            Fault::Missing => {
                "not found; check that the bucket or container exists and that the endpoint and \
                 storage root are right"
            }
            Fault::Transient => {
                "the storage service kept failing after retries; check the endpoint and network, \
                 then retry the run"
            }
        }
    }
}

/// Classifies an object-store error. Service errors arrive as `Generic` with the HTTP status
/// and the service's error code in the message, so those are read from the text.
pub fn classify(e: &object_store::Error) -> Fault {
    use object_store::Error as E;
    match e {
        E::Unauthenticated { .. } => Fault::Auth,
        E::PermissionDenied { .. } => Fault::Denied,
        E::NotFound { .. } => Fault::Missing,
        _ => {
            let text = e.to_string();
            let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
            if has(&[
                "401 Unauthorized",
                "failed to authenticate",
                "SignatureDoesNotMatch",
                "InvalidAccessKeyId",
                "AuthenticationFailed",
                "ExpiredToken",
                "InvalidToken",
            ]) {
                Fault::Auth
            } else if has(&["403 Forbidden", "AccessDenied", "AuthorizationFailure"]) {
                Fault::Denied
            } else if has(&["NoSuchBucket", "ContainerNotFound", "ContainerBeingDeleted"]) {
                Fault::Missing
            } else {
                Fault::Transient
            }
        }
    }
}

/// A storage failure at `url`, classified by [`classify`], with what to check.
///
/// A local permission or disk-full fault keeps only the store's message: its kind and hint come
/// from [`Error::kind`], not from the network hint of a transient fault.
pub fn store_error(url: &Url, e: object_store::Error) -> Error {
    use crate::error::Kind;
    let fault = classify(&e);
    let message = scrub(&e.to_string());
    let (message, retryable) = match Error::ObjectStore(e).kind() {
        Kind::DiskFull => (message, true),
        Kind::NotWritable => (message, false),
        _ => (format!("{message}; {}", fault.hint()), fault.retryable()),
    };
    Error::Storage {
        url: redact(url),
        message,
        retryable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_dir_names_are_readable_and_distinct() {
        assert_eq!(run_dir_name("manual__2026-11-01"), "manual__2026-11-01");
        let airflow = "scheduled__2026-11-01T00:00:00+00:00";
        assert_eq!(run_dir_name(airflow), airflow);
        let ids = [
            "x/y", "x_y", "x@2Fy", "x%2Fy", "x y", "x+y", "..", "@2E@2E", "é", "?",
        ];
        assert_eq!(run_dir_name("x/y"), "x@2Fy");
        let names: std::collections::BTreeSet<String> =
            ids.iter().map(|i| run_dir_name(i)).collect();
        assert_eq!(names.len(), ids.len(), "{names:?}");
        let lake = Lake::in_memory();
        for id in ids {
            let path = lake.path_of(&lake.landing_url("t", id)).unwrap();
            assert_eq!(
                path.as_ref().rsplit('/').next(),
                Some(format!("run={}", run_dir_name(id)).as_str()),
                "{id}"
            );
        }
    }

    #[test]
    fn scrub_hides_sas_signatures() {
        let text = "GET http://h/c/b?sv=2021&sig=abc%2Bdef&se=1 failed; again sig=zzz";
        let out = scrub(text);
        assert!(!out.contains("abc%2Bdef") && !out.contains("zzz"), "{out}");
        assert!(out.contains("sig=***&se=1"), "{out}");
    }

    #[test]
    fn classify_reads_service_error_codes() {
        let generic = |msg: &str| object_store::Error::Generic {
            store: "S3",
            source: msg.to_string().into(),
        };
        assert_eq!(
            classify(&generic("403 Forbidden: SignatureDoesNotMatch")),
            Fault::Auth
        );
        assert_eq!(
            classify(&generic("404 Not Found: NoSuchBucket")),
            Fault::Missing
        );
        assert_eq!(
            classify(&generic("403 Forbidden: AccessDenied")),
            Fault::Denied
        );
        assert_eq!(
            classify(&generic("503 Service Unavailable")),
            Fault::Transient
        );
        assert!(classify(&generic("connection reset")).retryable());
    }
}
