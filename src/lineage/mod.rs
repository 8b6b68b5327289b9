//! Column-level lineage from DataFusion logical plans.
//!
//! For every output column of a model, [`from_plan`] walks the optimized logical plan down to the
//! table scans and records each input column it depends on, classed as IDENTITY (passed through),
//! TRANSFORM (a function of inputs) or AGGREGATE. Columns used by filters, join keys, group-bys,
//! window partitions and sort keys are recorded as indirect dependencies of the model.
//! [`resolve`] chains models across layers down to the source columns.

pub mod datahub;
pub mod emit;
pub mod openlineage;
pub mod sink;

use std::collections::{BTreeMap, BTreeSet};

use datafusion::common::Column;
use datafusion::logical_expr::utils::grouping_set_to_exprlist;
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan};
use serde::Serialize;

/// How an output column depends on an input column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Kind {
    /// Passed through unchanged.
    Identity,
    /// Computed from the input.
    Transform,
    /// Aggregated from the input.
    Aggregate,
}

/// A column of a table, e.g. `bronze.shipments.weight_kg` or `LogisticsDB.dbo.shipments.weight_kg`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ColumnRef {
    /// Table name as scanned (`<layer>.<table>`) or source object.
    pub table: String,
    /// Column.
    pub column: String,
}

impl std::fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.table, self.column)
    }
}

/// Inputs of one output column.
pub type Inputs = BTreeMap<ColumnRef, Kind>;

/// Lineage of one model.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelLineage {
    /// Output columns in order, with their direct inputs.
    pub columns: Vec<(String, Inputs)>,
    /// Columns that filter, join, group or order the rows.
    pub indirect: BTreeSet<ColumnRef>,
}

/// Derives the column lineage of a (preferably optimized) logical plan.
pub fn from_plan(plan: &LogicalPlan) -> ModelLineage {
    let mut indirect = BTreeSet::new();
    let per_column = walk(plan, &mut indirect);
    let columns = plan
        .schema()
        .fields()
        .iter()
        .zip(per_column)
        .map(|(f, inputs)| (f.name().clone(), inputs))
        .collect();
    ModelLineage { columns, indirect }
}

fn walk(plan: &LogicalPlan, indirect: &mut BTreeSet<ColumnRef>) -> Vec<Inputs> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let table = scan.table_name.to_string();
            for f in &scan.filters {
                indirect.extend(f.column_refs().iter().map(|c| ColumnRef {
                    table: table.clone(),
                    column: c.name.clone(),
                }));
            }
            scan.projected_schema
                .fields()
                .iter()
                .map(|f| {
                    BTreeMap::from([(
                        ColumnRef {
                            table: table.clone(),
                            column: f.name().clone(),
                        },
                        Kind::Identity,
                    )])
                })
                .collect()
        }
        LogicalPlan::Projection(p) => {
            let input = walk(&p.input, indirect);
            p.expr
                .iter()
                .map(|e| expr_inputs(e, &p.input, &input, Kind::Transform))
                .collect()
        }
        LogicalPlan::Filter(f) => {
            let input = walk(&f.input, indirect);
            add_indirect(&f.predicate, &f.input, &input, indirect);
            input
        }
        LogicalPlan::Aggregate(a) => {
            let input = walk(&a.input, indirect);
            let groups = grouping_set_to_exprlist(&a.group_expr).unwrap_or_default();
            for g in &groups {
                add_indirect(g, &a.input, &input, indirect);
            }
            let n = a.schema.fields().len();
            let mut out: Vec<Inputs> = groups
                .iter()
                .map(|g| expr_inputs(g, &a.input, &input, Kind::Transform))
                .collect();
            let aggs: Vec<Inputs> = a
                .aggr_expr
                .iter()
                .map(|e| expr_inputs(e, &a.input, &input, Kind::Aggregate))
                .collect();
            out.resize(n.saturating_sub(aggs.len()), Inputs::new());
            out.extend(aggs);
            out
        }
        LogicalPlan::Window(w) => {
            let mut input = walk(&w.input, indirect);
            for e in &w.window_expr {
                if let Expr::WindowFunction(wf) = strip_alias(e) {
                    for p in wf.params.partition_by.iter() {
                        add_indirect(p, &w.input, &input, indirect);
                    }
                    for o in wf.params.order_by.iter() {
                        add_indirect(&o.expr, &w.input, &input, indirect);
                    }
                }
            }
            // Direct inputs of a window function are its arguments; partition and order keys
            // are indirect.
            let extra: Vec<Inputs> = w
                .window_expr
                .iter()
                .map(|e| match strip_alias(e) {
                    Expr::WindowFunction(wf) => {
                        let mut out = Inputs::new();
                        for arg in &wf.params.args {
                            merge(
                                &mut out,
                                expr_inputs(arg, &w.input, &input, Kind::Aggregate),
                            );
                        }
                        out.values_mut().for_each(|k| *k = Kind::Aggregate);
                        out
                    }
                    other => expr_inputs(other, &w.input, &input, Kind::Aggregate),
                })
                .collect();
            input.extend(extra);
            input
        }
        // A node that keeps some of its input's rows as they are (the latest row per key of
        // `engine::dedup`): columns pass through, its expressions are indirect.
        LogicalPlan::Extension(e)
            if e.node.inputs().len() == 1
                && e.node.schema().fields().len() == e.node.inputs()[0].schema().fields().len() =>
        {
            let child = e.node.inputs()[0];
            let input = walk(child, indirect);
            for x in e.node.expressions() {
                add_indirect(&x, child, &input, indirect);
            }
            input
        }
        LogicalPlan::Sort(s) => {
            let input = walk(&s.input, indirect);
            for e in &s.expr {
                add_indirect(&e.expr, &s.input, &input, indirect);
            }
            input
        }
        LogicalPlan::Join(j) => {
            let left = walk(&j.left, indirect);
            let right = walk(&j.right, indirect);
            for (l, r) in &j.on {
                add_indirect(l, &j.left, &left, indirect);
                add_indirect(r, &j.right, &right, indirect);
            }
            if let Some(f) = &j.filter {
                indirect.extend(resolve_refs(f, &j.left, &left));
                indirect.extend(resolve_refs(f, &j.right, &right));
            }
            let n = j.schema.fields().len();
            let mut out = match j.join_type {
                JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => left,
                JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => right,
                _ => left.into_iter().chain(right).collect(),
            };
            out.resize(n, Inputs::new());
            out
        }
        LogicalPlan::Union(u) => {
            let n = u.schema.fields().len();
            let mut out = vec![Inputs::new(); n];
            for input in &u.inputs {
                for (i, inputs) in walk(input, indirect).into_iter().enumerate().take(n) {
                    merge(&mut out[i], inputs);
                }
            }
            out
        }
        LogicalPlan::Distinct(datafusion::logical_expr::Distinct::On(d)) => {
            let input = walk(&d.input, indirect);
            for e in &d.on_expr {
                add_indirect(e, &d.input, &input, indirect);
            }
            d.select_expr
                .iter()
                .map(|e| expr_inputs(e, &d.input, &input, Kind::Transform))
                .collect()
        }
        // Same columns as the single input: Limit, Repartition, SubqueryAlias, Distinct::All, ...
        other => {
            let inputs = other.inputs();
            let n = other.schema().fields().len();
            match inputs.as_slice() {
                [single] if single.schema().fields().len() == n => walk(single, indirect),
                _ => {
                    // Unknown shape: every output depends on every input column (approximate).
                    let mut all = Inputs::new();
                    for i in inputs {
                        for cols in walk(i, indirect) {
                            for (c, _) in cols {
                                all.insert(c, Kind::Transform);
                            }
                        }
                    }
                    vec![all; n]
                }
            }
        }
    }
}

fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        other => other,
    }
}

/// Inputs of an expression: a bare column keeps its inputs' kinds; anything else raises them to
/// at least `kind`.
fn expr_inputs(e: &Expr, input_plan: &LogicalPlan, input: &[Inputs], kind: Kind) -> Inputs {
    let passthrough = matches!(strip_alias(e), Expr::Column(_));
    let mut out = Inputs::new();
    for c in e.column_refs() {
        if let Some(cols) = lookup(c, input_plan, input) {
            for (col, k) in cols {
                let k = if passthrough { *k } else { (*k).max(kind) };
                let entry = out.entry(col.clone()).or_insert(k);
                *entry = (*entry).max(k);
            }
        }
    }
    out
}

fn lookup<'a>(c: &Column, plan: &LogicalPlan, input: &'a [Inputs]) -> Option<&'a Inputs> {
    plan.schema()
        .maybe_index_of_column(c)
        .and_then(|i| input.get(i))
}

fn resolve_refs(e: &Expr, plan: &LogicalPlan, input: &[Inputs]) -> Vec<ColumnRef> {
    e.column_refs()
        .into_iter()
        .filter_map(|c| lookup(c, plan, input))
        .flat_map(|cols| cols.keys().cloned())
        .collect()
}

fn add_indirect(
    e: &Expr,
    plan: &LogicalPlan,
    input: &[Inputs],
    indirect: &mut BTreeSet<ColumnRef>,
) {
    indirect.extend(resolve_refs(e, plan, input));
}

fn merge(into: &mut Inputs, from: Inputs) {
    for (c, k) in from {
        let entry = into.entry(c).or_insert(k);
        *entry = (*entry).max(k);
    }
}

/// Chains model lineage across layers: replaces every `<layer>.<table>` input that is itself a
/// model with that model's inputs, and bronze inputs with `source` columns (metadata columns
/// `_run_id`, `_ingested_at`, `_source` have no source column).
pub fn resolve(
    models: &BTreeMap<String, ModelLineage>,
    bronze_source: &BTreeMap<String, String>,
    inputs: &Inputs,
) -> Inputs {
    let mut out = Inputs::new();
    for (col, kind) in inputs {
        if let Some(upstream) = models.get(&col.table) {
            if let Some((_, up)) = upstream.columns.iter().find(|(n, _)| *n == col.column) {
                for (c, k) in resolve(models, bronze_source, up) {
                    let k = k.max(*kind);
                    let e = out.entry(c).or_insert(k);
                    *e = (*e).max(k);
                }
            }
        } else if let Some(source) = bronze_source.get(&col.table) {
            if !col.column.starts_with('_') {
                let c = ColumnRef {
                    table: source.clone(),
                    column: col.column.clone(),
                };
                let e = out.entry(c).or_insert(*kind);
                *e = (*e).max(*kind);
            }
        } else {
            let e = out.entry(col.clone()).or_insert(*kind);
            *e = (*e).max(*kind);
        }
    }
    out
}

/// Lineage of one output column: direct inputs and the source columns they resolve to.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnReport {
    /// Output column.
    pub column: String,
    /// Direct inputs (the tables the model reads).
    pub inputs: Vec<(ColumnRef, Kind)>,
    /// Resolved through upstream models down to source columns.
    pub sources: Vec<(ColumnRef, Kind)>,
}

/// Lineage of every model of a pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineLineage {
    /// Per model (`<layer>.<table>`): its columns and indirect dependencies.
    pub models: BTreeMap<String, (Vec<ColumnReport>, BTreeSet<ColumnRef>)>,
}

/// Builds the lineage of all planned models of `plan`.
pub fn for_pipeline(
    plan: &crate::plan::Plan,
    planned: &[(crate::plan::TableId, LogicalPlan)],
) -> PipelineLineage {
    let bronze_source: BTreeMap<String, String> = plan
        .pipeline
        .source
        .tables
        .iter()
        .filter(|t| t.query.is_none())
        .map(|t| {
            let source = match (&t.files, crate::extract::files::root_url(&plan.pipeline)) {
                // The files a files-source table reads: the glob under the source root.
                (Some(f), Ok(root)) => format!(
                    "{}/{}",
                    crate::storage::redact(&root).trim_end_matches('/'),
                    f.path
                ),
                _ => format!("{}.{}", plan.pipeline.source.database, t.object),
            };
            (format!("bronze.{}", t.name), source)
        })
        .collect();
    let lineages: BTreeMap<String, ModelLineage> = planned
        .iter()
        .map(|(id, p)| (id.to_string(), from_plan(p)))
        .collect();
    let models = lineages
        .iter()
        .map(|(name, l)| {
            let cols = l
                .columns
                .iter()
                .map(|(c, inputs)| ColumnReport {
                    column: c.clone(),
                    inputs: inputs.iter().map(|(r, k)| (r.clone(), *k)).collect(),
                    sources: resolve(&lineages, &bronze_source, inputs)
                        .into_iter()
                        .collect(),
                })
                .collect();
            (name.clone(), (cols, l.indirect.clone()))
        })
        .collect();
    PipelineLineage { models }
}
