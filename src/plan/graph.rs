//! Dependencies between models, found by parsing their SQL, and the topological run order.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::error::DataFusionError;
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::planner::IdentNormalizer;
use datafusion::sql::sqlparser::ast::{Ident, Statement};
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
    match parse_query(shown, &model.sql) {
        Ok(stmt) => resolve(shown, &stmt, model.id.layer, known, problems),
        Err(e) => {
            problems.push(e);
            Vec::new()
        }
    }
}

/// Resolves the tables `stmt` reads against the plan's tables: returns the dependencies and
/// pushes `file:line:col` problems for unknown tables and reads the `reader` layer may not do.
fn resolve(
    shown: &str,
    stmt: &Statement,
    reader: Layer,
    known: &BTreeSet<TableId>,
    problems: &mut Vec<String>,
) -> Vec<TableId> {
    let known_names: Vec<String> = known.iter().map(ToString::to_string).collect();
    let mut deps = BTreeSet::new();
    // DataFusion's identifier rule: unquoted parts are lowercased, quoted ones kept.
    let normalize = |i: &Ident| IdentNormalizer::default().normalize(i.clone());
    for table in super::relations::table_refs(stmt, normalize) {
        // A table function (`generate_series(1, 3)`) is resolved by DataFusion, not the lake.
        if table.is_function {
            continue;
        }
        let Some(first) = table.name.first() else {
            continue;
        };
        let at = format!(
            "{shown}:{}:{}",
            first.span.start.line, first.span.start.column
        );
        match table.parts.as_slice() {
            [layer, name] => {
                let id = Layer::table_layer(layer).map(|layer| TableId {
                    layer,
                    name: name.clone(),
                });
                match id {
                    Some(id) if known.contains(&id) => {
                        if !may_read(reader, id.layer) {
                            problems.push(format!(
                                "{at}: {reader} models cannot read `{id}`; silver reads bronze and silver, gold reads silver and gold",
                            ));
                        }
                        deps.insert(id);
                    }
                    _ => problems.push(format!(
                        "{at}: unknown table `{layer}.{name}`{}",
                        suggest(
                            &format!("{layer}.{name}"),
                            known_names.iter().map(String::as_str)
                        )
                    )),
                }
            }
            parts => {
                let name = parts.join(".");
                problems.push(format!(
                    "{at}: unknown table `{name}`; refer to lake tables as `<layer>.<table>` (bronze, silver or gold){}",
                    suggest(
                        &name,
                        known_names
                            .iter()
                            .chain(table.ctes_in_scope.iter())
                            .map(String::as_str)
                    )
                ));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Dependencies and problems of `sql` read by a silver model, with bronze `orders` and
    /// `shipments` and silver `orders` in the plan.
    fn deps(sql: &str) -> (Vec<String>, Vec<String>) {
        deps_as(Layer::Silver, sql)
    }

    fn deps_as(reader: Layer, sql: &str) -> (Vec<String>, Vec<String>) {
        let known: BTreeSet<TableId> = [
            (Layer::Bronze, "orders"),
            (Layer::Bronze, "shipments"),
            (Layer::Silver, "orders"),
        ]
        .into_iter()
        .map(|(layer, name)| TableId {
            layer,
            name: name.into(),
        })
        .collect();
        let stmt = parse_query("m.sql", sql).expect("parses");
        let mut problems = Vec::new();
        let deps = resolve("m.sql", &stmt, reader, &known, &mut problems);
        (deps.iter().map(ToString::to_string).collect(), problems)
    }

    fn ok(sql: &str) -> Vec<String> {
        let (deps, problems) = deps(sql);
        assert!(problems.is_empty(), "{sql}\n{problems:?}");
        deps
    }

    #[test]
    fn cte_inside_a_derived_table() {
        assert_eq!(
            ok("SELECT * FROM (WITH x AS (SELECT * FROM bronze.orders) SELECT * FROM x) t"),
            ["bronze.orders"]
        );
    }

    #[test]
    fn outer_cte_seen_in_where_exists_in_and_scalar_subqueries() {
        let sql = "WITH recent AS (SELECT * FROM bronze.orders)
            SELECT s.*, (SELECT COUNT(*) FROM recent) AS n
            FROM bronze.shipments s
            WHERE EXISTS (SELECT 1 FROM recent r WHERE r.id = s.id)
              AND s.id IN (SELECT id FROM recent)";
        assert_eq!(ok(sql), ["bronze.orders", "bronze.shipments"]);
    }

    #[test]
    fn cte_seen_on_both_sides_of_a_set_operation() {
        let sql = "WITH a AS (SELECT id FROM silver.orders)
            SELECT id FROM a UNION ALL SELECT id FROM a EXCEPT SELECT id FROM bronze.shipments";
        assert_eq!(ok(sql), ["bronze.shipments", "silver.orders"]);
    }

    #[test]
    fn cte_body_reads_an_earlier_cte() {
        let sql = "WITH a AS (SELECT * FROM bronze.orders), b AS (SELECT * FROM a)
            SELECT * FROM b JOIN a USING (id)";
        assert_eq!(ok(sql), ["bronze.orders"]);
    }

    #[test]
    fn recursive_cte_reads_itself() {
        let sql = "WITH RECURSIVE r AS (
                SELECT id, 1 AS depth FROM bronze.orders
                UNION ALL SELECT id, depth + 1 FROM r WHERE depth < 3)
            SELECT * FROM r";
        assert_eq!(ok(sql), ["bronze.orders"]);
    }

    #[test]
    fn cte_shadowing_a_table_name_is_not_a_table() {
        let sql = "WITH orders AS (SELECT * FROM bronze.orders) SELECT * FROM orders o JOIN ORDERS p USING (id)";
        assert_eq!(ok(sql), ["bronze.orders"]);
    }

    #[test]
    fn table_functions_are_not_tables() {
        assert!(ok("SELECT * FROM generate_series(1, 3)").is_empty());
    }

    #[test]
    fn cte_of_a_subquery_is_not_visible_outside_it() {
        let (_, problems) =
            deps("SELECT * FROM (WITH x AS (SELECT 1 AS a) SELECT * FROM x) t\nJOIN x ON true");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "m.sql:2:6: unknown table `x`; refer to lake tables as `<layer>.<table>`"
            ),
            "{problems:?}"
        );
    }

    #[test]
    fn non_recursive_cte_does_not_see_later_ctes() {
        let (_, problems) =
            deps("WITH a AS (SELECT * FROM b), b AS (SELECT * FROM bronze.orders) SELECT * FROM a");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("m.sql:1:26: unknown table `b`"),
            "{problems:?}"
        );
    }

    #[test]
    fn unknown_table_inside_a_cte_keeps_location_and_suggestion() {
        let (deps, problems) = deps(
            "WITH x AS (SELECT * FROM bronze.order)\nSELECT * FROM x WHERE id IN (SELECT id FROM silver.ordrs)",
        );
        assert!(deps.is_empty(), "{deps:?}");
        assert_eq!(
            problems,
            [
                "m.sql:1:26: unknown table `bronze.order`; did you mean `bronze.orders`?",
                "m.sql:2:45: unknown table `silver.ordrs`; did you mean `silver.orders`?",
            ]
        );
    }

    #[test]
    fn misspelt_cte_name_suggests_the_cte() {
        let (_, problems) =
            deps("WITH recent_orders AS (SELECT * FROM bronze.orders) SELECT * FROM recent_ordrs");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].ends_with("did you mean `recent_orders`?"),
            "{problems:?}"
        );
    }

    #[test]
    fn layer_rules_apply_inside_nested_queries() {
        let (deps, problems) = deps_as(
            Layer::Gold,
            "SELECT * FROM silver.orders WHERE id IN (WITH b AS (SELECT id FROM bronze.orders) SELECT id FROM b)",
        );
        assert_eq!(deps, ["bronze.orders", "silver.orders"]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("gold models cannot read `bronze.orders`"),
            "{problems:?}"
        );
    }
}
