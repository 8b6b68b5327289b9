//! Listing a table's files under the source root and choosing which of them a run lands.

use std::collections::BTreeSet;

use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::ObjectStore;

use crate::config::FilesTable;
use crate::error::Result;
use crate::state::LandedFile;
use crate::storage::Lake;

/// One listed file.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Path relative to the source root; what `_smelter/files` records.
    pub rel: String,
    /// Object-store location.
    pub location: StorePath,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, µs since the epoch.
    pub last_modified_us: i64,
    /// Entity tag, when the store gives one.
    pub e_tag: Option<String>,
}

impl From<&Listed> for LandedFile {
    fn from(l: &Listed) -> Self {
        LandedFile {
            path: l.rel.clone(),
            size: l.size,
            last_modified_us: l.last_modified_us,
            e_tag: l.e_tag.clone(),
        }
    }
}

/// Directories Smelter itself writes under a lake root; a glob over the lake root never picks
/// files from them.
const LAKE_DIRS: [&str; 5] = ["landing/", "_smelter/", "bronze/", "silver/", "gold/"];

/// The files under `root` matching the table's glob, sorted by path. `*`, `?` and `[..]` stay
/// within one directory; `**` crosses directories. Listing starts at the glob's literal prefix,
/// so `orders/2026/*.csv` lists only `orders/2026/`. Storage failures are classified by the
/// storage module (exit 2 for a missing bucket, 75 for network faults).
pub async fn list(root: &Lake, spec: &FilesTable, is_lake: bool) -> Result<Vec<Listed>> {
    let pattern = glob::Pattern::new(&spec.path).map_err(|e| {
        crate::error::Error::Internal(format!("glob `{}` passed validation: {e}", spec.path))
    })?;
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    };
    let base = root.path_of(root.root())?;
    let literal: Vec<&str> = spec
        .path
        .split('/')
        .take_while(|s| !s.contains(['*', '?', '[', '{']))
        .collect();
    // The last literal segment may be a file name, not a directory: list its parent.
    let dirs = if literal.len() == spec.path.split('/').count() {
        &literal[..literal.len().saturating_sub(1)]
    } else {
        &literal[..]
    };
    let prefix = dirs
        .iter()
        .filter(|s| !s.is_empty())
        .fold(base.clone(), |p, s| p.clone().join(*s));
    let base_str = base.as_ref().to_string();
    let store = root.store();
    let metas: Vec<object_store::ObjectMeta> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| crate::storage::store_error(root.root(), e))?;
    let mut out: Vec<Listed> = metas
        .into_iter()
        .filter_map(|m| {
            let full = m.location.as_ref();
            let rel = if base_str.is_empty() {
                full.to_string()
            } else {
                full.strip_prefix(&base_str)?
                    .trim_start_matches('/')
                    .to_string()
            };
            if is_lake && LAKE_DIRS.iter().any(|d| rel.starts_with(d)) {
                return None;
            }
            pattern.matches_with(&rel, options).then(|| Listed {
                rel,
                location: m.location.clone(),
                size: m.size,
                last_modified_us: m.last_modified.timestamp_micros(),
                e_tag: m.e_tag.clone(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// The files run `run_id` lands: those state records for this run id (a retry lands the same
/// files), else every listed file no run has landed. `landed` holds `(run_id, path)` pairs.
/// A file recorded for the run but since deleted is not listed, so it is left out.
pub fn select(listed: &[Listed], landed: &[(String, String)], run_id: &str) -> Vec<Listed> {
    let mine: BTreeSet<&str> = landed
        .iter()
        .filter(|(r, _)| r == run_id)
        .map(|(_, p)| p.as_str())
        .collect();
    if !mine.is_empty() {
        return listed
            .iter()
            .filter(|l| mine.contains(l.rel.as_str()))
            .cloned()
            .collect();
    }
    let all: BTreeSet<&str> = landed.iter().map(|(_, p)| p.as_str()).collect();
    listed
        .iter()
        .filter(|l| !all.contains(l.rel.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(names: &[&str]) -> Vec<Listed> {
        names
            .iter()
            .map(|n| Listed {
                rel: n.to_string(),
                location: StorePath::from(*n),
                size: 1,
                last_modified_us: 0,
                e_tag: None,
            })
            .collect()
    }

    fn rels(v: &[Listed]) -> Vec<&str> {
        v.iter().map(|l| l.rel.as_str()).collect()
    }

    #[test]
    fn new_run_lands_only_unrecorded_files() {
        let l = listed(&["a.csv", "b.csv", "c.csv"]);
        let landed = vec![("r1".into(), "a.csv".into()), ("r1".into(), "b.csv".into())];
        assert_eq!(rels(&select(&l, &landed, "r2")), vec!["c.csv"]);
    }

    #[test]
    fn retried_run_lands_exactly_its_recorded_files() {
        let l = listed(&["a.csv", "b.csv", "c.csv", "d.csv"]);
        let landed = vec![("r1".into(), "a.csv".into()), ("r2".into(), "c.csv".into())];
        assert_eq!(rels(&select(&l, &landed, "r2")), vec!["c.csv"]);
    }
}
