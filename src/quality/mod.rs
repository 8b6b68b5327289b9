//! Data-quality expectations from a model's `-- expect:` header.
//!
//! Rule syntax, `;`-separated, each ending in an action (`warn`, `drop`, `quarantine`, `fail`):
//! - `<col> not_null <action>`
//! - `<col>[, <col>...] unique <action>`
//! - `<col> accepted_values ('A', 'B', 3) <action>`: the value is one of the listed literals
//!   (quoted strings or numbers)
//! - `<col> range <min> <max> <action>`: `min <= value <= max`; `*` leaves a side open, e.g.
//!   `weight_kg range 0 * drop`
//! - `<col> relationships <layer>.<table>.<column> <action>`: a foreign key; every non-NULL value
//!   must occur in the referenced lake table's column (checked with an anti-join). The referenced
//!   table becomes a dependency of the model, so it is built (and registered) first.
//! - `row_count between <min> and <max> <action>` or `row_count >= <min> <action>` (warn or fail)
//! - any other text is a row-level SQL predicate that must hold, e.g. `weight_kg >= 0 drop`,
//!   `status in ('NEW','SHIPPED') quarantine`.
//!
//! NULL passes every row-level check except `not_null`, as in SQL CHECK constraints. Unquoted
//! column names are case-insensitive (lower-cased, as in SQL); `"Quoted"` names keep their case.
//!
//! All row-level rules are evaluated in one aggregate pass; `fail` stops the model before anything
//! is written (exit 3), `drop` removes failing rows, `quarantine` writes them to
//! `<layer>._quarantine_<model>` with the failed rule names and the run id, and `warn` only logs and
//! records.

use arrow::array::Array;
use datafusion::common::JoinType;
use datafusion::functions::string::expr_fn::concat_ws;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{cast, col, lit, when, Expr};
use datafusion::prelude::{DataFrame, SessionContext};
use serde::Serialize;
use tracing::warn;

use crate::error::{Error, Result};
use crate::plan::header::RawRule;
use crate::plan::{Layer, TableId};

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
    /// The column's value is one of these SQL literals.
    AcceptedValues {
        /// Column.
        column: String,
        /// SQL literals (quoted strings or numbers).
        values: Vec<String>,
    },
    /// The column's value lies in `[min, max]` (a missing bound is open).
    Range {
        /// Column.
        column: String,
        /// Lower bound, a number.
        min: Option<String>,
        /// Upper bound, a number.
        max: Option<String>,
    },
    /// Foreign key: every non-NULL value occurs in `table.to_column`.
    Relationship {
        /// Column.
        column: String,
        /// Referenced lake table.
        table: TableId,
        /// Referenced column.
        to_column: String,
    },
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
        } else if let Some((column, rest)) = split_keyword(body, "accepted_values") {
            match parse_values(&rest) {
                Some(values) => Check::AcceptedValues { column, values },
                None => {
                    problems.push(format!(
                        "{file}:{}: cannot read `{body}`; write `<column> accepted_values ('A', 'B', 3)` with quoted strings or numbers",
                        r.line
                    ));
                    continue;
                }
            }
        } else if let Some((column, rest)) = split_keyword(body, "range") {
            match parse_range(&rest) {
                Some((min, max)) => Check::Range { column, min, max },
                None => {
                    problems.push(format!(
                        "{file}:{}: cannot read `{body}`; write `<column> range <min> <max>` with numbers, `*` for an open side, min <= max",
                        r.line
                    ));
                    continue;
                }
            }
        } else if let Some((column, rest)) = split_keyword(body, "relationships") {
            let parts: Vec<&str> = rest.trim().split('.').collect();
            match parts.as_slice() {
                [layer, table, to] if Layer::table_layer(&layer.to_lowercase()).is_some() => {
                    Check::Relationship {
                        column,
                        table: TableId {
                            layer: Layer::table_layer(&layer.to_lowercase())
                                .expect("checked above"),
                            name: table.to_lowercase(),
                        },
                        to_column: ident(to),
                    }
                }
                _ => {
                    problems.push(format!(
                        "{file}:{}: cannot read `{body}`; write `<column> relationships <layer>.<table>.<column>`, e.g. `customer_id relationships silver.customers.customer_id` (layers: bronze, silver, gold)",
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

/// Splits `<column> <keyword> <rest>` (keyword case-insensitive) when the left side is one
/// column name; returns the normalized column name and the rest.
fn split_keyword(body: &str, keyword: &str) -> Option<(String, String)> {
    let lower = body.to_ascii_lowercase();
    let pos = lower.find(&format!(" {keyword} "))?;
    let column = body[..pos].trim();
    let simple = column
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
        || (column.len() > 2 && column.starts_with('"') && column.ends_with('"'));
    if column.is_empty() || !simple {
        return None;
    }
    Some((
        ident(column),
        body[pos + keyword.len() + 2..].trim().to_string(),
    ))
}

/// An identifier as written: `"Quoted"` keeps its case, anything else is lower-cased.
fn ident(s: &str) -> String {
    let s = s.trim();
    match s.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(quoted) => quoted.to_string(),
        None => s.to_lowercase(),
    }
}

/// A quoted SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `('A', 'B', 3)` → the literals, each a quoted string or a number.
fn parse_values(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    let mut values = Vec::new();
    let mut current = String::new();
    let mut in_quote = false;
    for ch in inner.chars() {
        match ch {
            '\'' => {
                in_quote = !in_quote;
                current.push(ch);
            }
            ',' if !in_quote => values.push(std::mem::take(&mut current)),
            _ => current.push(ch),
        }
    }
    values.push(current);
    let values: Vec<String> = values.iter().map(|v| v.trim().to_string()).collect();
    let valid = |v: &String| {
        (v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'')) || v.parse::<f64>().is_ok()
    };
    (!in_quote && values.iter().all(valid)).then_some(values)
}

/// `<min> <max>`, each a number or `*`.
fn parse_range(s: &str) -> Option<(Option<String>, Option<String>)> {
    let bound = |t: &str| -> Option<Option<String>> {
        if t == "*" {
            Some(None)
        } else {
            t.parse::<f64>().ok().filter(|x| x.is_finite())?;
            Some(Some(t.to_string()))
        }
    };
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [a, b] = parts.as_slice() else {
        return None;
    };
    let (min, max) = (bound(a)?, bound(b)?);
    if let (Some(lo), Some(hi)) = (&min, &max) {
        if lo.parse::<f64>().ok()? > hi.parse::<f64>().ok()? {
            return None;
        }
    }
    Some((min, max))
}

impl Check {
    /// The row-level SQL predicate a check stands for, if it is one.
    fn predicate_sql(&self) -> Option<String> {
        match self {
            Check::Predicate(sql) => Some(sql.clone()),
            Check::AcceptedValues { column, values } => {
                Some(format!("{} IN ({})", quoted(column), values.join(", ")))
            }
            Check::Range { column, min, max } => {
                let c = quoted(column);
                let parts: Vec<String> = min
                    .iter()
                    .map(|m| format!("{c} >= {m}"))
                    .chain(max.iter().map(|m| format!("{c} <= {m}")))
                    .collect();
                Some(if parts.is_empty() {
                    "TRUE".into()
                } else {
                    parts.join(" AND ")
                })
            }
            Check::Unique(_) | Check::Relationship { .. } | Check::RowCount { .. } => None,
        }
    }
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
///
/// Tables referenced by `relationships` rules must be registered in `ctx` as `<layer>.<table>`.
pub async fn apply(
    ctx: &SessionContext,
    model: &str,
    df: DataFrame,
    rules: &[Rule],
    run_id: &str,
) -> Result<Outcome> {
    let original: Vec<Expr> = df.schema().columns().into_iter().map(col).collect();
    let mut flagged = df;
    let mut flags: Vec<(usize, String)> = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let flag = format!("__smelter_rule_{i}");
        let sql_error = |e: datafusion::error::DataFusionError| Error::Sql {
            location: model.to_string(),
            message: format!("expectation `{}`: {e}", rule.name),
        };
        let expr = match &rule.check {
            Check::Relationship {
                column,
                table,
                to_column,
            } => {
                // Anti-join: a left join on the distinct referenced keys; no match means orphan.
                let key = format!("__smelter_ref_{i}");
                let keys = ctx
                    .table(table.to_string())
                    .await
                    .map_err(|e| Error::Usage(format!(
                        "expectation `{}` of {model}: referenced table `{table}` is not available: {e}",
                        rule.name
                    )))?
                    .select(vec![col(quoted(to_column)).alias(&key)])
                    .map_err(sql_error)?
                    .distinct()?;
                flagged = flagged
                    .join_on(
                        keys,
                        JoinType::Left,
                        vec![col(quoted(column)).eq(col(&key))],
                    )
                    .map_err(sql_error)?;
                flagged = flagged.with_column(
                    &flag,
                    col(quoted(column)).is_not_null().and(col(&key).is_null()),
                )?;
                flagged = flagged.drop_columns(&[key.as_str()])?;
                flags.push((i, flag));
                continue;
            }
            Check::Unique(cols) => {
                let partition = cols.join(", ");
                flagged
                    .parse_sql_expr(&format!("COUNT(*) OVER (PARTITION BY {partition})"))
                    .map_err(sql_error)?
                    .gt(lit(1i64))
            }
            Check::RowCount { .. } => continue,
            check => {
                let sql = check.predicate_sql().ok_or_else(|| {
                    Error::Internal(format!("rule `{}` has no predicate", rule.name))
                })?;
                let pred = flagged.parse_sql_expr(&sql).map_err(sql_error)?;
                Expr::Not(Box::new(datafusion::functions::core::expr_fn::coalesce(
                    vec![pred, lit(true)],
                )))
            }
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
