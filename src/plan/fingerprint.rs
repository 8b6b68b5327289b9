//! Model fingerprints and change detection (`smelter plan --changed`).
//!
//! Every run-log record of a model or bronze table carries the target's [`Fingerprint`]: stable
//! hashes of what defines it, as SQLMesh's snapshot fingerprints do (its own data plus the hashes
//! of its parents). A model's fingerprint holds
//! - `sql`: the SHA-256 of its query after templating and normalisation (parsed and printed back,
//!   so comments, whitespace, line breaks and keyword case do not count);
//! - `header`: the SHA-256 of its parsed `-- key: value` header in canonical form (key order,
//!   spacing and line positions do not count; a changed `expect:` rule or description does);
//! - `upstream`: for each table it reads, that table's `hash` at planning time: a bronze table's
//!   hash is that of its source schema contract (`schemas/<pipeline>/<table>.toml`, parsed, so
//!   comments and key order do not count; `absent` when the file is missing), a model's its
//!   combined hash;
//! - `hash`: the SHA-256 of the three above, so it changes when anything upstream changes.
//!
//! Hashes are the first 16 hex digits of the SHA-256. [`changes`] compares the current
//! fingerprints with those recorded by each model's last successful build and gives the reasons.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::plan::{Layer, Model, Plan, TableId};

/// What defines one table Smelter writes, as hashes (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Hash of everything below.
    pub hash: String,
    /// Hash of the normalised SQL (models only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// Hash of the canonical header (models only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Hash of the source schema contract (bronze tables only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<String>,
    /// `<layer>.<table>` → that table's `hash`, for every table the model reads.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub upstream: BTreeMap<String, String>,
}

impl Fingerprint {
    /// The JSON stored in the run log's `fingerprint` column.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a stored fingerprint; `None` when it is not one (treated as unknown).
    pub fn from_json(text: &str) -> Option<Fingerprint> {
        serde_json::from_str(text).ok()
    }
}

/// The first 16 hex digits of the SHA-256 of `parts`, each followed by a NUL separator.
fn digest<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The fingerprints of every bronze table and model of `plan`, keyed by `<layer>.<table>`.
pub fn of_plan(plan: &Plan) -> BTreeMap<String, Fingerprint> {
    let mut out: BTreeMap<String, Fingerprint> = BTreeMap::new();
    for id in plan.bronze_tables() {
        let contract = contract_hash(plan, &id.name);
        out.insert(
            id.to_string(),
            Fingerprint {
                hash: digest(["contract", contract.as_str()]),
                sql: None,
                header: None,
                contract: Some(contract),
                upstream: BTreeMap::new(),
            },
        );
    }
    // Models are in run order, so every model's upstream models are already in `out`.
    for m in &plan.models {
        let fp = of_model(plan, m, &out);
        out.insert(m.id.to_string(), fp);
    }
    out
}

fn of_model(plan: &Plan, m: &Model, known: &BTreeMap<String, Fingerprint>) -> Fingerprint {
    let shown = crate::plan::display_path(&plan.pipeline, &m.file);
    let sql = digest([normalized_sql(&shown, &m.sql).as_str()]);
    let header = digest([canonical_header(&m.header).as_str()]);
    let upstream: BTreeMap<String, String> = m
        .depends_on
        .iter()
        .map(|d| {
            let name = d.to_string();
            let hash = known
                .get(&name)
                .map(|f| f.hash.clone())
                .unwrap_or_else(|| "unknown".into());
            (name, hash)
        })
        .collect();
    let mut parts = vec!["sql", sql.as_str(), "header", header.as_str()];
    for (k, v) in &upstream {
        parts.push(k.as_str());
        parts.push(v.as_str());
    }
    Fingerprint {
        hash: digest(parts),
        sql: Some(sql),
        header: Some(header),
        contract: None,
        upstream,
    }
}

/// The query printed back from its syntax tree; if it does not parse (planning reports that
/// itself), its text without comment lines and with whitespace collapsed.
fn normalized_sql(shown: &str, sql: &str) -> String {
    match crate::plan::graph::parse_query(shown, sql) {
        Ok(stmt) => stmt.to_string(),
        Err(_) => sql
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .flat_map(str::split_whitespace)
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// The parsed header as JSON, without line numbers (of `expect:` rules, `delete_when` and the
/// keys), so that moving a header line is no change.
fn canonical_header(header: &crate::plan::Header) -> String {
    let mut v = serde_json::to_value(header).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("lines");
        if let Some((text, _)) = &header.delete_when {
            o.insert("delete_when".into(), serde_json::Value::from(text.as_str()));
        }
    }
    if let Some(rules) = v.get_mut("expect").and_then(|e| e.as_array_mut()) {
        for r in rules {
            if let Some(o) = r.as_object_mut() {
                o.remove("line");
            }
        }
    }
    v.to_string()
}

/// The hash of a table's contract file: of its parsed TOML (so comments, blank lines and key
/// order do not count), of its raw text when it does not parse, `absent` when there is none.
fn contract_hash(plan: &Plan, table: &str) -> String {
    let path = crate::extract::contract::path(&plan.pipeline, table);
    match std::fs::read_to_string(&path) {
        Err(_) => "absent".into(),
        Ok(text) => match toml::from_str::<toml::Value>(&text) {
            Ok(v) => digest([serde_json::to_string(&v).unwrap_or_default().as_str()]),
            Err(_) => digest([text.as_str()]),
        },
    }
}

/// What the run log knows about a model's last successful build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Baseline {
    /// The model was never built successfully (in the runs considered).
    None,
    /// It was, by `run_id`, but the record has no fingerprint (written by an older Smelter).
    Unknown {
        /// The run that built it.
        run_id: String,
    },
    /// It was, by `run_id`, with this fingerprint.
    Known {
        /// The run that built it.
        run_id: String,
        /// The fingerprint recorded then.
        fingerprint: Fingerprint,
    },
}

/// A model whose definition differs from its last successful build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `<layer>.<table>`.
    pub model: String,
    /// Why: `no earlier run`, `fingerprint unknown` (recorded by an older Smelter), `sql`,
    /// `header`, `upstream:<layer>.<table>` (a table it reads changed: a model, or a bronze
    /// table's contract).
    pub reasons: Vec<String>,
    /// The run that last built it successfully, if any.
    pub last_run: Option<String>,
}

/// The models of `plan` (in run order) whose current fingerprint differs from their baseline.
pub fn changes(
    plan: &Plan,
    current: &BTreeMap<String, Fingerprint>,
    baseline: impl Fn(&TableId) -> Baseline,
) -> Vec<Change> {
    let mut out = Vec::new();
    for m in plan
        .models
        .iter()
        .filter(|m| matches!(m.id.layer, Layer::Silver | Layer::Gold))
    {
        let Some(now) = current.get(&m.id.to_string()) else {
            continue;
        };
        let (reasons, last_run) = match baseline(&m.id) {
            Baseline::None => (vec!["no earlier run".to_string()], None),
            Baseline::Unknown { run_id } => (vec!["fingerprint unknown".to_string()], Some(run_id)),
            Baseline::Known {
                run_id,
                fingerprint: then,
            } => {
                let mut reasons = Vec::new();
                if now.sql != then.sql {
                    reasons.push("sql".to_string());
                }
                if now.header != then.header {
                    reasons.push("header".to_string());
                }
                for (table, hash) in &now.upstream {
                    if then.upstream.get(table) != Some(hash) {
                        reasons.push(format!("upstream:{table}"));
                    }
                }
                if reasons.is_empty() && now.hash != then.hash {
                    // Same parts, other combination: a table it no longer reads.
                    reasons.push("sql".to_string());
                }
                (reasons, Some(run_id))
            }
        };
        if !reasons.is_empty() {
            out.push(Change {
                model: m.id.to_string(),
                reasons,
                last_run,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_normalisation_ignores_layout_comments_and_keyword_case() {
        let a = normalized_sql(
            "a.sql",
            "-- materialized: table\nSELECT a, b\nFROM bronze.t -- why\nWHERE a > 1",
        );
        let b = normalized_sql("b.sql", "select a,   b from bronze.t\n\n where a>1");
        assert_eq!(a, b);
        let c = normalized_sql("c.sql", "SELECT a, b FROM bronze.t WHERE a > 2");
        assert_ne!(a, c);
    }

    #[test]
    fn header_canonical_form_ignores_line_positions() {
        let parse = |sql: &str| {
            let mut problems = Vec::new();
            let h = crate::plan::header::parse("m.sql", sql, &mut problems);
            assert!(problems.is_empty(), "{problems:?}");
            canonical_header(&h)
        };
        let a = parse("-- materialized: merge\n-- unique_key: id\n-- delete_when: gone = 1\n-- expect: id not_null\nSELECT 1");
        let b = parse("-- expect: id not_null\n-- delete_when: gone = 1\n-- unique_key: id\n-- materialized: merge\nSELECT 1");
        assert_eq!(a, b);
        let c = parse("-- materialized: merge\n-- unique_key: id\n-- delete_when: gone = 2\n-- expect: id not_null\nSELECT 1");
        assert_ne!(a, c);
    }

    #[test]
    fn fingerprints_round_trip_and_tolerate_missing_parts() {
        let f = Fingerprint {
            hash: "h".into(),
            sql: Some("s".into()),
            header: None,
            contract: None,
            upstream: [("bronze.t".to_string(), "c".to_string())].into(),
        };
        assert_eq!(Fingerprint::from_json(&f.to_json()), Some(f));
        assert_eq!(
            Fingerprint::from_json(r#"{"hash":"x"}"#).map(|f| f.hash),
            Some("x".to_string())
        );
        assert_eq!(Fingerprint::from_json("not json"), None);
        assert_eq!(digest(["a", "b"]).len(), 16);
        assert_ne!(digest(["ab", ""]), digest(["a", "b"]));
    }
}
