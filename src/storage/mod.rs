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
use object_store::ObjectStore;
use url::Url;

use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::plan::TableId;

/// A resolved lake root with its object store.
#[derive(Debug, Clone)]
pub struct Lake {
    root: Url,
    options: HashMap<String, String>,
    store: Arc<dyn ObjectStore>,
}

impl Lake {
    /// Resolves the pipeline's storage root and builds its object store.
    pub fn open(pipeline: &Pipeline) -> Result<Lake> {
        let raw = pipeline.storage.root.trim();
        let root = match Url::parse(raw) {
            Ok(url) if url.scheme().len() > 1 && url.scheme() != "file" => url,
            _ => {
                let path = raw.strip_prefix("file://").unwrap_or(raw);
                let path = pipeline.project_dir.join(path);
                std::fs::create_dir_all(&path).map_err(|e| Error::Storage {
                    url: path.display().to_string(),
                    message: format!("cannot create the local lake directory: {e}"),
                    retryable: false,
                })?;
                let path = std::fs::canonicalize(&path)?;
                Url::from_directory_path(&path).map_err(|_| {
                    Error::config(
                        pipeline.file.display(),
                        format!("key `storage.root`: `{raw}` is not a valid path"),
                    )
                })?
            }
        };
        let root = ensure_dir_url(root);
        let options: HashMap<String, String> = pipeline
            .storage
            .options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (store, _) =
            object_store::parse_url_opts(&root, options.clone()).map_err(|e| Error::Storage {
                url: redact(&root),
                message: format!("cannot open the lake root: {e}"),
                retryable: false,
            })?;
        Ok(Lake {
            root,
            options,
            store: Arc::from(store),
        })
    }

    /// The root URL.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// Object-store options, for delta-rs.
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
        self.join(&format!("landing/{table}/run={}/", sanitize(run_id)))
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

/// Run ids become path segments: keep them readable but safe.
pub fn sanitize(run_id: &str) -> String {
    run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A URL without credentials or query string, safe to log.
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.set_query(None);
    u.to_string()
}
