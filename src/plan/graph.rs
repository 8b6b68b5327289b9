//! Dependencies between models, found by parsing their SQL, and the topological run order.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use datafusion::error::DataFusionError;
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{visit_relations, ObjectName, ObjectNamePart, Statement};
use datafusion::sql::sqlparser::dialect::GenericDialect;

use super::{display_path, suggest, Layer, Model, TableId};
use crate::config::Pipeline;

/// Finds each model's dependencies and returns the models in run order.
///
/// Problems (syntax errors, unknown tables, layer violations, cycles) are pushed with file:line:col.
pub fn order(
    pipeline: &Pipeline,
    mut models: Vec<Model>,
    problems: &mut Vec<String>,
) -> Vec<Model> {
    let mut known: BTreeSet<TableId> = super::bronze_tables(pipeline).into_iter().collect();
    known.extend(models.iter().map(|m| m.id.clone()));

    for model in &mut models {
        let shown = display_path(pipeline, &model.file);
        let mut deps = dependencies(&shown, model, &known, problems);
        for table in referenced_by_rules(&shown, model, &known, problems) {
            if !deps.contains(&table) {
                deps.push(table);
            }
        }
        deps.sort();
        model.depends_on = deps;
    }
    sort(pipeline, models, problems)
}

/// Whether a model of `reader`'s layer may read `table`: silver reads bronze and silver, gold
/// reads silver and gold.
fn may_read(reader: Layer, table: Layer) -> bool {
    match reader {
        Layer::Silver => matches!(table, Layer::Bronze | Layer::Silver),
        _ => matches!(table, Layer::Silver | Layer::Gold),
    }
}

/// Tables referenced by `relationships` expectations: they must exist in the plan and be
/// readable from the model's layer, and they become dependencies (built and registered first).
fn referenced_by_rules(
    shown: &str,
    model: &Model,
    known: &BTreeSet<TableId>,
    problems: &mut Vec<String>,
) -> Vec<TableId> {
    let mut out = Vec::new();
    for rule in &model.rules {
        let crate::quality::Check::Relationship { table, .. } = &rule.check else {
            continue;
        };
        if *table == model.id {
            problems.push(format!(
                "{shown}: expectation `{}` refers to the model itself; reference another table",
                rule.name
            ));
        } else if !known.contains(table) {
            let names: Vec<String> = known.iter().map(ToString::to_string).collect();
            problems.push(format!(
                "{shown}: expectation `{}`: unknown table `{table}`{}",
                rule.name,
                suggest(&table.to_string(), names.iter().map(String::as_str))
            ));
        } else if !may_read(model.id.layer, table.layer) {
            problems.push(format!(
                "{shown}: expectation `{}`: {} models cannot read `{table}`; silver reads bronze and silver, gold reads silver and gold",
                rule.name, model.id.layer
            ));
        } else {
            out.push(table.clone());
        }
    }
    out
}

/// Parses `sql` as exactly one query; errors carry `file:line:col`.
pub fn parse_query(shown: &str, sql: &str) -> Result<Statement, String> {
    let mut statements =
        DFParser::parse_sql_with_dialect(sql, &GenericDialect {}).map_err(|e| {
            located(
                shown,
                &syntax_message(&e).unwrap_or_else(|| e.strip_backtrace()),
            )
        })?;
    if statements.len() != 1 {
        return Err(format!(
            "{shown}: a model must be exactly one SELECT statement, found {}",
            statements.len()
        ));
    }
    match statements.pop_front() {
        Some(DFStatement::Statement(stmt)) if matches!(*stmt, Statement::Query(_)) => Ok(*stmt),
        _ => Err(format!("{shown}: a model must be a SELECT query")),
    }
}

/// The parser's own message of a SQL syntax error, e.g. `Expected: an expression, found: FROM at
/// Line: 3, Column: 8`, without DataFusion's `SQL error: ParserError("…")` debug wrapper (whose
/// escaped quotes and parentheses would otherwise be cut or shown raw); `None` for other errors.
pub fn syntax_message(e: &DataFusionError) -> Option<String> {
    use datafusion::sql::sqlparser::parser::ParserError;
    match e.find_root() {
        DataFusionError::SQL(p, _) => Some(match p.as_ref() {
            ParserError::ParserError(s) | ParserError::TokenizerError(s) => s.clone(),
            ParserError::RecursionLimitExceeded => "recursion limit exceeded".into(),
        }),
        _ => None,
    }
}

/// Turns a parser message ending in `at Line: L, Column: C` into `file:L:C: message`.
pub fn located(shown: &str, message: &str) -> String {
    let message = message.trim_start_matches("SQL error: ").trim();
    if let Some(pos) = message.rfind(" at Line: ") {
        let tail = &message[pos + " at Line: ".len()..];
        if let Some((line, col)) = tail.split_once(", Column: ") {
            let col: String = col.chars().take_while(|c| c.is_ascii_digit()).collect();
            return format!("{shown}:{line}:{col}: {}", &message[..pos]);
        }
    }
    format!("{shown}: {message}")
}

fn dependencies(
    shown: &str,
    model: &Model,
    known: &BTreeSet<TableId>,
    problems: &mut Vec<String>,
) -> Vec<TableId> {
    let stmt = match parse_query(shown, &model.sql) {
        Ok(s) => s,
        Err(e) => {
            problems.push(e);
            return Vec::new();
        }
    };
    let ctes: BTreeSet<String> = match &stmt {
        Statement::Query(q) => q
            .with
            .iter()
            .flat_map(|w| w.cte_tables.iter())
            .map(|c| c.alias.name.value.to_lowercase())
            .collect(),
        _ => BTreeSet::new(),
    };
    let mut relations: Vec<ObjectName> = Vec::new();
    let _ = visit_relations(&stmt, |name: &ObjectName| {
        relations.push(name.clone());
        ControlFlow::<()>::Continue(())
    });
    let known_names: Vec<String> = known.iter().map(ToString::to_string).collect();
    let mut deps = BTreeSet::new();
    for name in relations {
        let idents: Vec<_> = name
            .0
            .iter()
            .filter_map(|p| match p {
                ObjectNamePart::Identifier(i) => Some(i.clone()),
                _ => None,
            })
            .collect();
        let Some(first) = idents.first() else {
            continue;
        };
        let at = format!(
            "{shown}:{}:{}",
            first.span.start.line, first.span.start.column
        );
        let parts: Vec<String> = idents.iter().map(|i| i.value.to_lowercase()).collect();
        match parts.as_slice() {
            [single] if ctes.contains(single) => {}
            [layer, table] => {
                let id = Layer::table_layer(layer).map(|layer| TableId {
                    layer,
                    name: table.clone(),
                });
                match id {
                    Some(id) if known.contains(&id) => {
                        if !may_read(model.id.layer, id.layer) {
                            problems.push(format!(
                                "{at}: {} models cannot read `{id}`; silver reads bronze and silver, gold reads silver and gold",
                                model.id.layer
                            ));
                        }
                        deps.insert(id);
                    }
                    _ => problems.push(format!(
                        "{at}: unknown table `{layer}.{table}`{}",
                        suggest(
                            &format!("{layer}.{table}"),
                            known_names.iter().map(String::as_str)
                        )
                    )),
                }
            }
            _ => problems.push(format!(
                "{at}: unknown table `{}`; refer to lake tables as `<layer>.<table>` (bronze, silver or gold){}",
                parts.join("."),
                suggest(&parts.join("."), known_names.iter().map(String::as_str))
            )),
        }
    }
    deps.into_iter().collect()
}

/// Kahn's algorithm over silver and gold models; the ready model with the smallest id goes first.
fn sort(pipeline: &Pipeline, models: Vec<Model>, problems: &mut Vec<String>) -> Vec<Model> {
    let mut by_id: BTreeMap<TableId, Model> =
        models.into_iter().map(|m| (m.id.clone(), m)).collect();
    let mut indegree: BTreeMap<TableId, usize> = BTreeMap::new();
    for (id, m) in &by_id {
        let n = m
            .depends_on
            .iter()
            .filter(|d| by_id.contains_key(*d))
            .count();
        indegree.insert(id.clone(), n);
    }
    let mut ordered = Vec::new();
    while let Some(next) = indegree
        .iter()
        .find(|(_, n)| **n == 0)
        .map(|(id, _)| id.clone())
    {
        indegree.remove(&next);
        for (id, n) in indegree.iter_mut() {
            if by_id[id].depends_on.contains(&next) {
                *n -= 1;
            }
        }
        ordered.push(next);
    }
    if !indegree.is_empty() {
        let remaining: BTreeSet<TableId> = indegree.keys().cloned().collect();
        let cycle = find_cycle(
            &by_id,
            &remaining,
            indegree.keys().next().expect("non-empty"),
        );
        let files: Vec<String> = cycle
            .iter()
            .take(cycle.len().saturating_sub(1))
            .map(|id| display_path(pipeline, &by_id[id].file))
            .collect();
        problems.push(format!(
            "dependency cycle: {} (in {})",
            cycle
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" -> "),
            files.join(", ")
        ));
    }
    ordered
        .into_iter()
        .filter_map(|id| by_id.remove(&id))
        .collect()
}

fn find_cycle(
    models: &BTreeMap<TableId, Model>,
    remaining: &BTreeSet<TableId>,
    start: &TableId,
) -> Vec<TableId> {
    let mut path = vec![start.clone()];
    let mut current = start.clone();
    loop {
        let next = models[&current]
            .depends_on
            .iter()
            .find(|d| remaining.contains(*d))
            .cloned();
        let Some(next) = next else { return path };
        if let Some(pos) = path.iter().position(|p| *p == next) {
            let mut cycle = path.split_off(pos);
            cycle.push(next);
            return cycle;
        }
        path.push(next.clone());
        current = next;
    }
}
