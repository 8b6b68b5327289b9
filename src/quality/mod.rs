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
//! NULL passes every check except `not_null`, as in SQL CHECK and UNIQUE constraints: a row whose
//! `unique` key has a NULL part is never a duplicate. Column names follow SQL identifier rules in
//! every rule kind, as in the model SQL: unquoted names fold to lower case, `"Quoted"` names keep
//! their case ([`crate::plan::ident`]). A rule naming a column the model does not output is an
//! error naming the rule's file:line and the column, with a suggested spelling when one is close.
//!
//! All row-level rules are evaluated in one aggregate pass; `fail` stops the model before anything
//! is written (exit 3), `drop` removes failing rows, `quarantine` writes them to
//! `<layer>._quarantine_<model>` with the failed rule names and the run id, and `warn` only logs and
//! records.

use datafusion::common::{DFSchema, JoinType};
use datafusion::functions::string::expr_fn::concat_ws;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{cast, col, lit, when, Expr};
use datafusion::prelude::{DataFrame, SessionContext};
use serde::Serialize;
use tracing::warn;

use crate::error::{Error, Result};
use crate::plan::header::RawRule;
use crate::plan::ident::{self, quoted};
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
    /// The column is never NULL.
    NotNull {
        /// Column.
        column: String,
    },
    /// Columns whose combination must be unique among the rows where none of them is NULL
    /// (SQL UNIQUE semantics: NULL is never equal to anything).
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
    /// Where it is written, `file:line`.
    pub location: String,
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
        let last_word = body.rsplit_once(char::is_whitespace);
        let check = if let Some((c, _)) =
            last_word.filter(|(_, kw)| kw.eq_ignore_ascii_case("not_null"))
        {
            match ident::one(c) {
                Some(column) => Check::NotNull { column },
                // An expression rather than a column: still a valid SQL predicate.
                None => Check::Predicate(format!("({}) IS NOT NULL", c.trim())),
            }
        } else if let Some((c, _)) = last_word.filter(|(_, kw)| kw.eq_ignore_ascii_case("unique")) {
            match ident::list(c) {
                Some(columns) => Check::Unique(columns),
                None => {
                    problems.push(format!(
                        "{file}:{}: cannot read `{body}`; write `<column>[, <column>...] unique` with column names (unquoted names fold to lower case, \"Quoted\" names keep their case)",
                        r.line
                    ));
                    continue;
                }
            }
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
            let parts = ident::path(rest.trim()).unwrap_or_default();
            match parts.as_slice() {
                [layer, table, to] if Layer::table_layer(layer).is_some() => Check::Relationship {
                    column,
                    table: TableId {
                        layer: Layer::table_layer(layer).expect("checked above"),
                        name: table.clone(),
                    },
                    to_column: to.clone(),
                },
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
            location: format!("{file}:{}", r.line),
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
    let column = ident::one(&body[..pos])?;
    Some((column, body[pos + keyword.len() + 2..].trim().to_string()))
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
            Check::NotNull { column } => Some(format!("{} IS NOT NULL", quoted(column))),
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

impl Rule {
    /// The columns of the model output the rule names (none for SQL predicates and row counts,
    /// which DataFusion resolves itself).
    pub fn columns(&self) -> Vec<&str> {
        match &self.check {
            Check::NotNull { column }
            | Check::AcceptedValues { column, .. }
            | Check::Range { column, .. }
            | Check::Relationship { column, .. } => vec![column.as_str()],
            Check::Unique(columns) => columns.iter().map(String::as_str).collect(),
            Check::Predicate(_) | Check::RowCount { .. } => Vec::new(),
        }
    }
}

/// Every column a rule names that is not in the model output `schema` (or, for
/// `relationships`, in the referenced table registered in `ctx`): one `file:line` message
/// each, naming the column and suggesting the likely spelling when one is close; and every
/// `relationships` rule whose two columns hold different kinds of values (text against
/// numbers, say), which would compare after an implicit cast.
pub async fn column_problems(
    ctx: &SessionContext,
    model: &str,
    rules: &[Rule],
    schema: &DFSchema,
) -> Vec<String> {
    let names =
        |s: &DFSchema| -> Vec<String> { s.fields().iter().map(|f| f.name().to_string()).collect() };
    let output = names(schema);
    let mut problems = Vec::new();
    let mut mismatched = Vec::new();
    let mut check = |rule: &Rule, column: &str, table: &str, columns: &[String]| {
        if !columns.iter().any(|c| c == column) {
            problems.push(format!(
                "{}: expectation `{}`: no column `{column}` in {table}{}",
                rule.location,
                rule.name,
                ident::suggest_column(column, columns.iter().map(String::as_str))
            ));
        }
    };
    for rule in rules {
        for column in rule.columns() {
            check(rule, column, &format!("the output of {model}"), &output);
        }
        if let Check::Relationship {
            column,
            table,
            to_column,
        } = &rule.check
        {
            // A table that is not available is reported by `apply` with its own message.
            if let Ok(df) = ctx.table(table.to_string()).await {
                check(rule, to_column, &format!("`{table}`"), &names(df.schema()));
                let types = (
                    schema.field_with_unqualified_name(column),
                    df.schema().field_with_unqualified_name(to_column),
                );
                if let (Ok(from), Ok(to)) = types {
                    if type_family(from.data_type()) != type_family(to.data_type()) {
                        mismatched.push(format!(
                            "{}: expectation `{}`: `{column}` is {} but `{table}.{to_column}` is \
                             {}: the keys would be compared after an implicit cast; CAST one \
                             side in the model so both have the same kind of type",
                            rule.location,
                            rule.name,
                            from.data_type(),
                            to.data_type()
                        ));
                    }
                }
            }
        }
    }
    problems.extend(mismatched);
    problems
}

/// The kind of values a key column holds, for comparing the two sides of a `relationships`
/// rule: numbers (integers, decimals, floats), text, dates and times, booleans, or another
/// type (compared only with the same type).
fn type_family(t: &arrow::datatypes::DataType) -> String {
    use arrow::datatypes::DataType as T;
    match t {
        t if t.is_numeric() => "number".into(),
        T::Utf8 | T::LargeUtf8 | T::Utf8View => "text".into(),
        T::Date32 | T::Date64 | T::Timestamp(..) => "time".into(),
        T::Dictionary(_, value) => type_family(value),
        other => format!("{other}"),
    }
}

/// A model's output with one boolean column per row-level rule (`__smelter_rule_<i>`, true when
/// the row fails it), from [`flag`]; [`decide`] counts and splits it.
pub struct Flagged {
    /// The output plus the flag columns. The caller may replace it by a materialized copy with
    /// the same columns (see `engine::stage`), so the rules' joins and windows run once.
    pub df: DataFrame,
    /// The output's own columns, in order.
    columns: Vec<String>,
    /// Rule index and flag column of each row-level rule.
    flags: Vec<(usize, String)>,
}

/// Evaluates `rules` over `df`: [`flag`], then [`decide`].
///
/// Tables referenced by `relationships` rules must be registered in `ctx` as `<layer>.<table>`.
/// A rule naming a column that does not exist is an error (exit 2) before any data is read.
pub async fn apply(
    ctx: &SessionContext,
    model: &str,
    df: DataFrame,
    rules: &[Rule],
    run_id: &str,
) -> Result<Outcome> {
    let flagged = flag(ctx, model, df, rules).await?;
    decide(model, flagged, rules, run_id).await
}

/// Adds one flag column per row-level rule to `df` (nothing is executed). A rule naming a column
/// that does not exist is an error (exit 2).
pub async fn flag(
    ctx: &SessionContext,
    model: &str,
    df: DataFrame,
    rules: &[Rule],
) -> Result<Flagged> {
    let mut problems = column_problems(ctx, model, rules, df.schema()).await;
    match problems.len() {
        0 => {}
        1 => {
            let p = problems.pop().expect("one problem");
            let (location, message) = p.split_once(": ").unwrap_or((model, p.as_str()));
            return Err(Error::Sql {
                location: location.to_string(),
                message: message.to_string(),
            });
        }
        _ => return Err(Error::Invalid(problems)),
    }
    let columns: Vec<String> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut flagged = df;
    let mut flags: Vec<(usize, String)> = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let flag = format!("__smelter_rule_{i}");
        let sql_error = |e: datafusion::error::DataFusionError| Error::Sql {
            location: rule.location.clone(),
            message: format!(
                "expectation `{}` of {model}: {}",
                rule.name,
                e.strip_backtrace()
            ),
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
                // SQL UNIQUE: a row whose key has a NULL part equals no other row.
                let partition: Vec<String> = cols.iter().map(|c| quoted(c)).collect();
                let duplicated = flagged
                    .parse_sql_expr(&format!(
                        "COUNT(*) OVER (PARTITION BY {})",
                        partition.join(", ")
                    ))
                    .map_err(sql_error)?
                    .gt(lit(1i64));
                cols.iter()
                    .map(|c| col(quoted(c)).is_not_null())
                    .fold(duplicated, Expr::and)
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
    Ok(Flagged {
        df: flagged,
        columns,
        flags,
    })
}

/// Counts the failing rows of every rule in one aggregate pass over `flagged.df`, fails on a
/// `fail` rule that any row breaks (exit 3, nothing written), and splits the rows: good rows
/// (without those breaking a `drop` or `quarantine` rule) and quarantined rows (with
/// `_failed_rules` and `_run_id`).
pub async fn decide(
    model: &str,
    flagged: Flagged,
    rules: &[Rule],
    run_id: &str,
) -> Result<Outcome> {
    let Flagged {
        df: flagged,
        columns,
        flags,
    } = flagged;
    let original: Vec<Expr> = columns
        .iter()
        .map(|c| Expr::Column(datafusion::common::Column::new_unqualified(c)))
        .collect();
    let mut aggs = vec![count(lit(1)).alias("__rows")];
    for (_, flag) in &flags {
        aggs.push(sum(cast(col(flag), arrow::datatypes::DataType::Int64)).alias(flag.as_str()));
    }
    let counts = flagged.clone().aggregate(vec![], aggs)?.collect().await?;
    let value = |name: &str| crate::engine::first_count(&counts, name);
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
            findings: serde_json::json!({ "expectations": results }),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_one(text: &str) -> Check {
        let mut problems = Vec::new();
        let raw = [RawRule {
            text: text.into(),
            line: 3,
        }];
        let mut rules = parse("m.sql", &raw, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(rules[0].location, "m.sql:3");
        rules.remove(0).check
    }

    #[test]
    fn every_rule_kind_follows_identifier_rules() {
        let column_of = |c: Check| match c {
            Check::NotNull { column }
            | Check::AcceptedValues { column, .. }
            | Check::Range { column, .. } => column,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            column_of(parse_one("\"CarrierID\" not_null fail")),
            "CarrierID"
        );
        assert_eq!(column_of(parse_one("CarrierID NOT_NULL fail")), "carrierid");
        assert_eq!(
            column_of(parse_one("\"Mode\" accepted_values ('A') warn")),
            "Mode"
        );
        assert_eq!(column_of(parse_one("Weight range 0 * drop")), "weight");
        let Check::Unique(cols) = parse_one("\"CarrierID\", Region unique fail") else {
            panic!("not unique");
        };
        assert_eq!(cols, vec!["CarrierID", "region"]);
        let Check::Relationship {
            column,
            table,
            to_column,
        } = parse_one("\"CarrierID\" relationships Silver.Carriers.\"RefID\" fail")
        else {
            panic!("not a relationship");
        };
        assert_eq!(
            (column.as_str(), table.to_string(), to_column.as_str()),
            ("CarrierID", "silver.carriers".to_string(), "RefID")
        );
        // An expression keeps working as a predicate.
        assert!(matches!(
            parse_one("COALESCE(a, b) not_null warn"),
            Check::Predicate(p) if p == "(COALESCE(a, b)) IS NOT NULL"
        ));
    }

    #[test]
    fn unique_needs_column_names() {
        let mut problems = Vec::new();
        let raw = [RawRule {
            text: "a + 1 unique fail".into(),
            line: 2,
        }];
        assert!(parse("m.sql", &raw, &mut problems).is_empty());
        assert!(problems[0].starts_with("m.sql:2: cannot read `a + 1 unique`"));
    }
}
