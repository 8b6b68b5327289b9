//! The run summary that `smelter run --summary-json PATH` writes: one JSON document per
//! invocation, built from the run-log records the run produced ([`RunRecord`] and its `details`),
//! the error it ended with, and the report and lineage files it wrote. Airflow's operator pushes
//! it to XCom; it is written whether the run succeeded or failed, and scrubbed of secrets.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::RunRecord;
use crate::error::{exit, Error};

/// Version of the summary's shape; bumped when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// The summary of one `smelter run` invocation.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Pipeline name (the file's stem when the file could not be loaded).
    pub pipeline: String,
    /// Run id.
    pub run_id: String,
    /// This invocation's attempt id, once the lake was opened.
    pub attempt: Option<String>,
    /// Logical date (`YYYY-MM-DD`).
    pub logical_date: String,
    /// The layers asked for, in order.
    pub layers: Vec<String>,
    /// The process's exit code (0, 2, 3, 75, 99, 1).
    pub exit_code: i32,
    /// `success`, `skipped` (exit 99: nothing to do) or `failed`.
    pub status: &'static str,
    /// The error the run ended with, if any.
    pub error: Option<ErrorSummary>,
    /// Rows this attempt inserted (steps with status `success`).
    pub rows_inserted: u64,
    /// Rows this attempt updated (steps with status `success`).
    pub rows_updated: u64,
    /// Rows this attempt deleted (steps with status `success`).
    pub rows_deleted: u64,
    /// Wall time of the invocation.
    pub duration_ms: u64,
    /// One entry per step (table or model), in the order they finished.
    pub steps: Vec<Step>,
    /// HTML profile reports written, per layer.
    pub reports: Vec<Report>,
    /// Lineage files written, per layer.
    pub lineage: Vec<LineageFiles>,
}

/// What an error was: the fields the run log, the log line and the summary share.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorSummary {
    /// Error kind (`usage`, `quality`, `transient`, ...; see `docs/errors.md`).
    pub kind: &'static str,
    /// Exit code of the kind.
    pub exit_code: i32,
    /// The message (every problem, one per line, for a validation error).
    pub message: String,
    /// Whether a retry may succeed.
    pub retryable: bool,
    /// What to check, when known.
    pub hint: Option<String>,
    /// What the error names: `model`, `file`, `table`, `column`.
    pub context: BTreeMap<&'static str, String>,
}

impl ErrorSummary {
    /// The summary of `e`.
    pub fn of(e: &Error) -> Self {
        ErrorSummary {
            kind: e.kind().as_str(),
            exit_code: e.exit_code(),
            message: match e {
                Error::Invalid(problems) => problems.join("\n"),
                e => e.user_message(),
            },
            retryable: e.is_retryable(),
            hint: e.hint(),
            context: e.context().into_iter().collect(),
        }
    }
}

/// One step: what one layer did to one table or model.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Layer.
    pub layer: String,
    /// `<layer>.<table>` (`landing.<table>` for extract).
    pub target: String,
    /// `success`, `already_committed`, `skipped` or `failed` (see [`RunRecord::status`]).
    pub status: String,
    /// Exit code of a failed step.
    pub exit_code: Option<i32>,
    /// Rows inserted.
    pub rows_inserted: u64,
    /// Rows updated.
    pub rows_updated: u64,
    /// Rows deleted.
    pub rows_deleted: u64,
    /// Duration.
    pub duration_ms: u64,
    /// Table version written, when the format reports one.
    pub version: Option<i64>,
    /// Materialization of a model.
    pub materialized: Option<String>,
    /// Rows quarantined.
    pub quarantined: u64,
    /// Expectation results, one per rule.
    pub quality: Vec<Quality>,
    /// Drift thresholds breached (metric, column, value, max, action).
    pub drift: Vec<Value>,
    /// Note or error message.
    pub message: Option<String>,
    /// Error kind of a failed step.
    pub error_kind: Option<String>,
}

/// The result of one expectation rule.
#[derive(Debug, Clone, Serialize)]
pub struct Quality {
    /// The rule as written (`weight_kg >= 0`).
    pub name: String,
    /// `warn`, `drop`, `quarantine` or `fail`.
    pub action: String,
    /// Rows that broke it (1 for a violated row-count rule).
    pub failed: u64,
}

/// A profile report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Layer.
    pub layer: String,
    /// Its URL in the lake (credentials and query removed).
    pub url: String,
}

/// The lineage files of one layer.
#[derive(Debug, Clone, Serialize)]
pub struct LineageFiles {
    /// Layer.
    pub layer: String,
    /// DataHub MCP file, if written.
    pub datahub: Option<String>,
    /// OpenLineage events file, if written.
    pub openlineage: Option<String>,
}

impl Step {
    /// The step a run-log record describes (its counts, and what its `details` hold).
    pub fn of(r: &RunRecord) -> Self {
        let details: Value = serde_json::from_str(&r.details).unwrap_or(Value::Null);
        let text = |v: &Value| v.as_str().map(str::to_string);
        let quality = details
            .get("expectations")
            .and_then(Value::as_array)
            .map(|rules| {
                rules
                    .iter()
                    .map(|q| Quality {
                        name: q.get("rule").and_then(text).unwrap_or_default(),
                        action: q.get("action").and_then(text).unwrap_or_default(),
                        failed: q.get("failed").and_then(Value::as_u64).unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Step {
            layer: r.layer.clone(),
            target: r.target.clone(),
            status: r.status.clone(),
            exit_code: r.exit_code,
            rows_inserted: r.rows,
            rows_updated: r.rows_updated,
            rows_deleted: r.rows_deleted,
            duration_ms: r.duration_ms,
            version: details.get("version").and_then(Value::as_i64),
            materialized: details.get("materialized").and_then(text),
            quarantined: details
                .get("quarantined")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            quality,
            drift: details
                .get("drift")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            message: r.message.clone(),
            error_kind: (r.status == "failed")
                .then(|| details.get("kind").and_then(text))
                .flatten(),
        }
    }
}

impl Summary {
    /// The status word of an exit code.
    pub fn status_of(exit_code: i32) -> &'static str {
        match exit_code {
            exit::OK => "success",
            exit::NOTHING_TO_DO => "skipped",
            _ => "failed",
        }
    }

    /// Sets the outcome: `error` (and its exit code), or success.
    pub fn finish(&mut self, error: Option<&Error>) {
        self.error = error.map(ErrorSummary::of);
        self.exit_code = self.error.as_ref().map_or(exit::OK, |e| e.exit_code);
        self.status = Self::status_of(self.exit_code);
    }

    /// Adds the steps of `records` and their row totals.
    pub fn add_records(&mut self, records: &[RunRecord]) {
        for r in records {
            if r.status == "success" {
                self.rows_inserted += r.rows;
                self.rows_updated += r.rows_updated;
                self.rows_deleted += r.rows_deleted;
            }
            self.steps.push(Step::of(r));
        }
    }

    /// Writes the summary as pretty JSON to `path` (its directory is created), every secret
    /// scrubbed ([`crate::storage::scrub`]). The write goes through a temporary file and a
    /// rename, so a reader never sees half a document.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let text = crate::storage::scrub(&text);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text + "\n")?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: &str, details: Value) -> RunRecord {
        RunRecord {
            run_id: "r".into(),
            attempt: "a".into(),
            pipeline: "p".into(),
            layer: "silver".into(),
            target: "silver.s".into(),
            status: status.into(),
            exit_code: (status == "failed").then_some(3),
            rows: 10,
            rows_updated: 2,
            rows_deleted: 0,
            logical_date: 0,
            started_at: 0,
            duration_ms: 5,
            message: None,
            details: details.to_string(),
            fingerprint: None,
            profile: None,
        }
    }

    #[test]
    fn steps_read_versions_rules_and_drift_from_the_details() {
        let r = record(
            "success",
            serde_json::json!({
                "materialized": "merge", "version": 4, "quarantined": 1,
                "expectations": [{"rule": "id not_null", "action": "fail", "failed": 0},
                                 {"rule": "w >= 0", "action": "quarantine", "failed": 1}],
                "drift": [{"metric": "row_count_change", "column": null, "value": 0.9, "max": 0.5, "action": "warn"}],
            }),
        );
        let s = Step::of(&r);
        assert_eq!(s.version, Some(4));
        assert_eq!(s.materialized.as_deref(), Some("merge"));
        assert_eq!(s.quarantined, 1);
        assert_eq!(s.quality.len(), 2);
        assert_eq!(s.quality[1].name, "w >= 0");
        assert_eq!(s.quality[1].action, "quarantine");
        assert_eq!(s.quality[1].failed, 1);
        assert_eq!(s.drift.len(), 1);
        assert_eq!(s.error_kind, None);
        let f = Step::of(&record("failed", serde_json::json!({"kind": "quality"})));
        assert_eq!(f.error_kind.as_deref(), Some("quality"));
        assert_eq!(f.exit_code, Some(3));
        assert!(f.quality.is_empty() && f.version.is_none());
    }
}
