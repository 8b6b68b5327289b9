//! Data-quality expectations from a model's `-- expect:` header.
//!
//! Rule syntax, `;`-separated, each ending in an action (`warn`, `drop`, `quarantine`, `fail`):
//! - `<col> not_null <action>`
//! - `<col>[, <col>...] unique <action>`
//! - `row_count between <min> and <max> <action>` or `row_count >= <min> <action>` (warn or fail)
//! - any other text is a row-level SQL predicate that must hold, e.g. `weight_kg >= 0 drop`,
//!   `status in ('NEW','SHIPPED') quarantine`, `amount between 0 and 1e6 warn` (accepted values
//!   and ranges are predicates). A NULL result counts as passing, as in SQL CHECK constraints.
//!
//! All rules are evaluated in one pass; `fail` stops the model before anything is written (exit 3),
//! `drop` removes failing rows, `quarantine` writes them to `<layer>._quarantine_<model>` with the
//! failed rule names and the run id, and `warn` only logs and records.

use arrow::array::Array;
use datafusion::functions::string::expr_fn::concat_ws;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{cast, col, lit, when, Expr};
use datafusion::prelude::DataFrame;
use serde::Serialize;
use tracing::warn;

use crate::error::{Error, Result};
use crate::plan::header::RawRule;

/// What happens to rows that fail a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Log and record.
    Warn,
    /// Remove failing rows.
    Drop,
    /// Move failing rows to the quarantine table.
    Quarantine,
    /// Stop the model (exit 3).
    Fail,
}

/// What a rule checks.
#[derive(Debug, Clone, Serialize)]
pub enum Check {
    /// A row-level SQL predicate that must hold.
    Predicate(String),
    /// Columns whose combination must be unique.
    Unique(Vec<String>),
    /// Bounds on the number of rows.
    RowCount {
        /// Minimum rows.
        min: Option<u64>,
        /// Maximum rows.
        max: Option<u64>,
    },
}

/// One parsed rule.
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    /// The rule as written, without its action.
    pub name: String,
    /// The check.
    pub check: Check,
    /// The action.
    pub action: Action,
}

/// The result of one rule.
#[derive(Debug, Clone, Serialize)]
pub struct RuleResult {
    /// Rule name.
    pub rule: String,
    /// Action.
    pub action: Action,
    /// Failing rows (1 for a violated row-count rule).
    pub failed: u64,
}

/// Good rows, quarantined rows and per-rule results.
pub struct Outcome {
    /// Rows to write.
    pub good: DataFrame,
    /// Rows to quarantine (with `_failed_rules`), if any quarantine rule exists.
    pub quarantine: Option<DataFrame>,
    /// Results per rule.
    pub results: Vec<RuleResult>,
}

/// Parses header rules; problems are pushed as `file:line: message`.
pub fn parse(file: &str, raw: &[RawRule], problems: &mut Vec<String>) -> Vec<Rule> {
    let mut rules = Vec::new();
    for r in raw {
        let text = r.text.trim();
        let Some((body, action)) = text.rsplit_once(char::is_whitespace) else {
            problems.push(format!(
                "{file}:{}: expectation `{text}` needs a check and an action (warn, drop, quarantine, fail)",
                r.line
            ));
            continue;
        };
        let action = match action {
            "warn" => Action::Warn,
            "drop" => Action::Drop,
            "quarantine" => Action::Quarantine,
            "fail" => Action::Fail,
            other => {
                problems.push(format!(
                    "{file}:{}: unknown expectation action `{other}` in `{text}`; valid choices: warn, drop, quarantine, fail",
                    r.line
                ));
                continue;
            }
        };
        let body = body.trim();
        let lower = body.to_lowercase();
        let check = if let Some(c) = lower.strip_suffix(" not_null") {
            Check::Predicate(format!("{} IS NOT NULL", c.trim()))
        } else if let Some(c) = lower.strip_suffix(" unique") {
            Check::Unique(c.split(',').map(|s| s.trim().to_string()).collect())
        } else if let Some(rest) = lower.strip_prefix("row_count") {
            match parse_bounds(rest.trim()) {
                Some((min, max)) if matches!(action, Action::Warn | Action::Fail) => {
                    Check::RowCount { min, max }
                }
                Some(_) => {
                    problems.push(format!(
                        "{file}:{}: `row_count` rules take the action warn or fail",
                        r.line
                    ));
                    continue;
                }
                None => {
                    problems.push(format!(
                        "{file}:{}: cannot read `{body}`; write `row_count between <min> and <max>` or `row_count >= <min>`",
                        r.line
                    ));
                    continue;
                }
            }
        } else {
            Check::Predicate(body.to_string())
        };
        rules.push(Rule {
            name: body.to_string(),
            check,
            action,
        });
    }
    rules
}

fn parse_bounds(s: &str) -> Option<(Option<u64>, Option<u64>)> {
    let num = |t: &str| t.trim().replace('_', "").parse::<u64>().ok();
    if let Some(rest) = s.strip_prefix("between") {
        let (a, b) = rest.split_once(" and ")?;
        Some((Some(num(a)?), Some(num(b)?)))
    } else if let Some(v) = s.strip_prefix(">=") {
        Some((Some(num(v)?), None))
    } else if let Some(v) = s.strip_prefix("<=") {
        Some((None, Some(num(v)?)))
    } else {
        None
    }
}

/// Evaluates `rules` over `df` in one aggregate pass and applies their actions.
pub async fn apply(model: &str, df: DataFrame, rules: &[Rule], run_id: &str) -> Result<Outcome> {
    let original: Vec<Expr> = df.schema().columns().into_iter().map(col).collect();
    let mut flagged = df;
    let mut flags: Vec<(usize, String)> = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let flag = format!("__smelter_rule_{i}");
        let expr = match &rule.check {
            Check::Predicate(sql) => {
                let pred = flagged.parse_sql_expr(sql).map_err(|e| Error::Sql {
                    location: model.to_string(),
                    message: format!("expectation `{}`: {e}", rule.name),
                })?;
                Expr::Not(Box::new(datafusion::functions::core::expr_fn::coalesce(
                    vec![pred, lit(true)],
                )))
            }
            Check::Unique(cols) => {
                let partition = cols.join(", ");
                flagged
                    .parse_sql_expr(&format!("COUNT(*) OVER (PARTITION BY {partition})"))
                    .map_err(|e| Error::Sql {
                        location: model.to_string(),
                        message: format!("expectation `{}`: {e}", rule.name),
                    })?
                    .gt(lit(1i64))
            }
            Check::RowCount { .. } => continue,
        };
        flagged = flagged.with_column(&flag, expr)?;
        flags.push((i, flag));
    }

    let mut aggs = vec![count(lit(1)).alias("__rows")];
    for (_, flag) in &flags {
        aggs.push(sum(cast(col(flag), arrow::datatypes::DataType::Int64)).alias(flag.as_str()));
    }
    let counts = flagged.clone().aggregate(vec![], aggs)?.collect().await?;
    let value = |name: &str| -> u64 {
        counts
            .iter()
            .find(|b| b.num_rows() > 0)
            .and_then(|b| b.column_by_name(name).cloned())
            .and_then(|c| {
                arrow::compute::cast(&c, &arrow::datatypes::DataType::Int64)
                    .ok()
                    .and_then(|c| {
                        c.as_any()
                            .downcast_ref::<arrow::array::Int64Array>()
                            .filter(|a| !a.is_null(0))
                            .map(|a| a.value(0) as u64)
                    })
            })
            .unwrap_or(0)
    };
    let rows = value("__rows");
    let mut results = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let failed = match &rule.check {
            Check::RowCount { min, max } => {
                u64::from(min.is_some_and(|m| rows < m) || max.is_some_and(|m| rows > m))
            }
            _ => flags
                .iter()
                .find(|(j, _)| *j == i)
                .map(|(_, f)| value(f))
                .unwrap_or(0),
        };
        if failed > 0 {
            warn!(model, rule = %rule.name, action = ?rule.action, failed, "Expectation failed.");
        }
        results.push(RuleResult {
            rule: rule.name.clone(),
            action: rule.action,
            failed,
        });
    }
    let fatal: Vec<String> = results
        .iter()
        .filter(|r| r.action == Action::Fail && r.failed > 0)
        .map(|r| format!("`{}` failed for {} row(s)", r.rule, r.failed))
        .collect();
    if !fatal.is_empty() {
        return Err(Error::Quality {
            model: model.to_string(),
            message: format!("{}; nothing was written", fatal.join(", ")),
        });
    }

    let any = |actions: &[Action]| -> Option<Expr> {
        flags
            .iter()
            .filter(|(i, _)| actions.contains(&rules[*i].action))
            .map(|(_, f)| col(f.as_str()))
            .reduce(|a, b| a.or(b))
    };
    let good = match any(&[Action::Drop, Action::Quarantine]) {
        Some(bad) => flagged.clone().filter(Expr::Not(Box::new(bad)))?,
        None => flagged.clone(),
    }
    .select(original.clone())?;
    let quarantine = match any(&[Action::Quarantine]) {
        Some(bad) => {
            let names: Vec<Expr> = flags
                .iter()
                .filter(|(i, _)| rules[*i].action == Action::Quarantine)
                .map(|(i, f)| when(col(f.as_str()), lit(rules[*i].name.clone())).end())
                .collect::<datafusion::error::Result<_>>()?;
            let mut cols = original;
            cols.push(concat_ws(lit(","), names).alias("_failed_rules"));
            cols.push(lit(run_id.to_string()).alias("_run_id"));
            Some(flagged.filter(bad)?.select(cols)?)
        }
        None => None,
    };
    Ok(Outcome {
        good,
        quarantine,
        results,
    })
}
