//! Column-level lineage from DataFusion logical plans.
//!
//! For every output column of a model, [`from_plan`] walks the optimized logical plan down to the
//! table scans and records each input column it depends on, per input edge, with the
//! transformation that edge carries, in OpenLineage's column-lineage vocabulary (facet 1-2-0):
//!
//! - **direct** edges ([`Kind`]): the value is the input passed through (IDENTITY), computed from
//!   it (TRANSFORMATION) or aggregated from it (AGGREGATION);
//! - **indirect** edges ([`Indirect`]): the input decides which rows exist or which value is
//!   picked, without its value flowing into the output: FILTER, JOIN, GROUP_BY, SORT, WINDOW,
//!   CONDITIONAL.
//!
//! Indirect edges are kept per output column where the plan ties them to one column (the
//! condition of a `CASE`, the `ORDER BY` of an ordered aggregate, the partition and order of a
//! window function) and per model where it does not (filters, join keys, group keys, sort keys),
//! OpenLineage's dataset-level `dataset` lineage. A literal field or index of a struct or array
//! built in the same expression (`get_field(named_struct('s', a, 'd', b), 's')`,
//! `make_array(a, b)[2]`) resolves to the one input it selects. [`resolve`] chains the direct edges
//! of models across layers down to the source columns.

pub mod datahub;
pub mod emit;
pub mod openlineage;
pub mod sink;

use std::collections::{BTreeMap, BTreeSet};

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::utils::grouping_set_to_exprlist;
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan};
use serde::Serialize;

/// How an output column's value derives from an input column (a direct edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Kind {
    /// Passed through unchanged (OpenLineage DIRECT/IDENTITY).
    Identity,
    /// Computed from the input (OpenLineage DIRECT/TRANSFORMATION).
    Transform,
    /// Aggregated from the input (OpenLineage DIRECT/AGGREGATION).
    Aggregate,
}

impl Kind {
    /// The name `smelter plan --lineage` and DataHub's `transformOperation` use.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Identity => "IDENTITY",
            Kind::Transform => "TRANSFORM",
            Kind::Aggregate => "AGGREGATE",
        }
    }

    /// The OpenLineage subtype of a DIRECT transformation.
    pub fn openlineage_subtype(self) -> &'static str {
        match self {
            Kind::Identity => "IDENTITY",
            Kind::Transform => "TRANSFORMATION",
            Kind::Aggregate => "AGGREGATION",
        }
    }
}

/// How an input column affects an output without its value flowing into it (an indirect edge);
/// the names are OpenLineage's INDIRECT subtypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Indirect {
    /// A `WHERE`/`HAVING` predicate, a scan filter or an aggregate's `FILTER (WHERE ...)`.
    Filter,
    /// A join key or join condition, including `IN`/`EXISTS` subqueries and `EXCEPT`/`INTERSECT`
    /// (planned as semi and anti joins).
    Join,
    /// A `GROUP BY` key (also `GROUPING SETS`, `ROLLUP`, `CUBE`, `DISTINCT ON`).
    GroupBy,
    /// An `ORDER BY` of the query or of an ordered aggregate (`array_agg(x ORDER BY y)`,
    /// `first_value`, which `DISTINCT ON ... ORDER BY` becomes).
    Sort,
    /// A window function's `PARTITION BY` or `ORDER BY`, and a latest-row-per-key dedup.
    Window,
    /// The condition of a `CASE` expression.
    Conditional,
}

impl Indirect {
    /// The OpenLineage subtype (also DataHub's `transformOperation`).
    pub fn name(self) -> &'static str {
        match self {
            Indirect::Filter => "FILTER",
            Indirect::Join => "JOIN",
            Indirect::GroupBy => "GROUP_BY",
            Indirect::Sort => "SORT",
            Indirect::Window => "WINDOW",
            Indirect::Conditional => "CONDITIONAL",
        }
    }
}

/// One edge's transformation, direct or indirect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transformation {
    /// The input's value flows into the output.
    Direct(Kind),
    /// The input decides which rows or values the output has.
    Indirect(Indirect),
}

impl Transformation {
    /// OpenLineage `type`: `DIRECT` or `INDIRECT`.
    pub fn openlineage_type(self) -> &'static str {
        match self {
            Transformation::Direct(_) => "DIRECT",
            Transformation::Indirect(_) => "INDIRECT",
        }
    }

    /// OpenLineage `subtype` (IDENTITY, TRANSFORMATION, AGGREGATION, FILTER, JOIN, ...).
    pub fn openlineage_subtype(self) -> &'static str {
        match self {
            Transformation::Direct(k) => k.openlineage_subtype(),
            Transformation::Indirect(i) => i.name(),
        }
    }

    /// DataHub `transformOperation`: the direct kind (IDENTITY, TRANSFORM, AGGREGATE) or the
    /// indirect subtype (FILTER, JOIN, GROUP_BY, SORT, WINDOW, CONDITIONAL).
    pub fn datahub_operation(self) -> &'static str {
        match self {
            Transformation::Direct(k) => k.name(),
            Transformation::Indirect(i) => i.name(),
        }
    }
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

/// Direct inputs of one output column, each with its kind.
pub type Inputs = BTreeMap<ColumnRef, Kind>;

/// Indirect inputs, each with the subtypes it has.
pub type IndirectInputs = BTreeMap<ColumnRef, BTreeSet<Indirect>>;

/// Lineage of one output column.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ColumnLineage {
    /// Inputs whose values flow into the column.
    pub direct: Inputs,
    /// Inputs that decide this column's value only (CASE conditions, ordered-aggregate and
    /// window keys).
    pub indirect: IndirectInputs,
    /// When the column is a struct or array built in place (`named_struct`, `make_array`): the
    /// lineage of each field by name, or each element by 1-based index, so that a later literal
    /// access resolves to the one part it reads.
    #[serde(skip)]
    pub parts: Vec<(String, ColumnLineage)>,
}

/// Lineage of one model.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelLineage {
    /// Output columns in order, with their inputs.
    pub columns: Vec<(String, ColumnLineage)>,
    /// Inputs that filter, join, group or order the rows of every column.
    pub indirect: IndirectInputs,
}

/// Derives the column lineage of a (preferably optimized) logical plan.
pub fn from_plan(plan: &LogicalPlan) -> ModelLineage {
    let mut indirect = IndirectInputs::new();
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

fn walk(plan: &LogicalPlan, ind: &mut IndirectInputs) -> Vec<ColumnLineage> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let table = scan.table_name.to_string();
            let col = |name: &str| ColumnRef {
                table: table.clone(),
                column: name.to_string(),
            };
            for f in &scan.filters {
                for c in f.column_refs() {
                    ind.entry(col(&c.name))
                        .or_default()
                        .insert(Indirect::Filter);
                }
            }
            scan.projected_schema
                .fields()
                .iter()
                .map(|f| ColumnLineage {
                    direct: BTreeMap::from([(col(f.name()), Kind::Identity)]),
                    ..ColumnLineage::default()
                })
                .collect()
        }
        LogicalPlan::Projection(p) => {
            let input = walk(&p.input, ind);
            p.expr
                .iter()
                .map(|e| expr_lineage(e, &p.input, &input, Kind::Transform))
                .collect()
        }
        LogicalPlan::Filter(f) => {
            let input = walk(&f.input, ind);
            add_indirect(&f.predicate, &f.input, &input, Indirect::Filter, ind);
            input
        }
        LogicalPlan::Aggregate(a) => {
            let input = walk(&a.input, ind);
            let groups = grouping_set_to_exprlist(&a.group_expr).unwrap_or_default();
            for g in &groups {
                add_indirect(g, &a.input, &input, Indirect::GroupBy, ind);
            }
            let n = a.schema.fields().len();
            let mut out: Vec<ColumnLineage> = groups
                .iter()
                .map(|g| expr_lineage(g, &a.input, &input, Kind::Transform))
                .collect();
            // An aggregate that picks one row's value (`first_value`, which `DISTINCT ON`
            // becomes) passes it on; the others aggregate.
            let aggs: Vec<ColumnLineage> = a
                .aggr_expr
                .iter()
                .map(|e| {
                    let kind = match picked(strip_alias(e)) {
                        Some(_) => Kind::Transform,
                        None => Kind::Aggregate,
                    };
                    expr_lineage(e, &a.input, &input, kind)
                })
                .collect();
            // Between the keys and the aggregates: the grouping id of GROUPING SETS.
            out.resize(n.saturating_sub(aggs.len()), ColumnLineage::default());
            out.extend(aggs);
            out
        }
        LogicalPlan::Window(w) => {
            let mut input = walk(&w.input, ind);
            // Direct inputs of a window function are its arguments (aggregated); its partition
            // and order keys are indirect (WINDOW) for its column.
            let extra: Vec<ColumnLineage> = w
                .window_expr
                .iter()
                .map(|e| expr_lineage(e, &w.input, &input, Kind::Aggregate))
                .collect();
            input.extend(extra);
            input
        }
        // A node that keeps some of its input's rows as they are (the latest row per key of
        // `engine::dedup`, a rewritten `row_number() OVER (...) = 1`): columns pass through, its
        // partition and order keys are indirect.
        LogicalPlan::Extension(e)
            if e.node.inputs().len() == 1
                && e.node.schema().fields().len() == e.node.inputs()[0].schema().fields().len() =>
        {
            let child = e.node.inputs()[0];
            let input = walk(child, ind);
            for x in e.node.expressions() {
                add_indirect(&x, child, &input, Indirect::Window, ind);
            }
            input
        }
        LogicalPlan::Sort(s) => {
            let input = walk(&s.input, ind);
            for e in &s.expr {
                add_indirect(&e.expr, &s.input, &input, Indirect::Sort, ind);
            }
            input
        }
        LogicalPlan::Join(j) => {
            let left = walk(&j.left, ind);
            let right = walk(&j.right, ind);
            for (l, r) in &j.on {
                add_indirect(l, &j.left, &left, Indirect::Join, ind);
                add_indirect(r, &j.right, &right, Indirect::Join, ind);
            }
            if let Some(f) = &j.filter {
                add_indirect(f, &j.left, &left, Indirect::Join, ind);
                add_indirect(f, &j.right, &right, Indirect::Join, ind);
            }
            let n = j.schema.fields().len();
            let mut out = match j.join_type {
                JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => left,
                JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => right,
                _ => left.into_iter().chain(right).collect(),
            };
            out.resize(n, ColumnLineage::default());
            out
        }
        LogicalPlan::Union(u) => {
            let n = u.schema.fields().len();
            let mut out = vec![ColumnLineage::default(); n];
            for input in &u.inputs {
                for (i, col) in walk(input, ind).into_iter().enumerate().take(n) {
                    out[i].merge(&col, None);
                }
            }
            out
        }
        LogicalPlan::Distinct(datafusion::logical_expr::Distinct::On(d)) => {
            let input = walk(&d.input, ind);
            for e in &d.on_expr {
                add_indirect(e, &d.input, &input, Indirect::GroupBy, ind);
            }
            for e in d.sort_expr.iter().flatten() {
                add_indirect(&e.expr, &d.input, &input, Indirect::Sort, ind);
            }
            d.select_expr
                .iter()
                .map(|e| expr_lineage(e, &d.input, &input, Kind::Transform))
                .collect()
        }
        // Same columns as the single input: Limit, Repartition, SubqueryAlias, Distinct::All, ...
        other => {
            let inputs = other.inputs();
            let n = other.schema().fields().len();
            match inputs.as_slice() {
                [single] if single.schema().fields().len() == n => walk(single, ind),
                _ => {
                    // Unknown shape: every output depends on every input column (approximate).
                    let mut all = ColumnLineage::default();
                    for i in inputs {
                        for col in walk(i, ind) {
                            all.merge(&col, Some(Kind::Transform));
                        }
                    }
                    vec![all; n]
                }
            }
        }
    }
}

impl ColumnLineage {
    /// Adds `other`'s edges; direct kinds are raised to at least `floor` when given, and an input
    /// reached twice keeps its strongest kind.
    fn merge(&mut self, other: &ColumnLineage, floor: Option<Kind>) {
        for (c, k) in &other.direct {
            let k = floor.map_or(*k, |f| (*k).max(f));
            let e = self.direct.entry(c.clone()).or_insert(k);
            *e = (*e).max(k);
        }
        merge_indirect(&mut self.indirect, &other.indirect);
    }
}

fn merge_indirect(into: &mut IndirectInputs, from: &IndirectInputs) {
    for (c, subtypes) in from {
        into.entry(c.clone()).or_default().extend(subtypes);
    }
}

/// `e` without aliases, and with a literal field or index of a struct or array built in place
/// replaced by the one argument it selects.
fn selected(mut e: &Expr) -> &Expr {
    loop {
        e = match e {
            Expr::Alias(a) => &a.expr,
            Expr::ScalarFunction(f) => match (f.func.name(), f.args.as_slice()) {
                ("get_field", [base, Expr::Literal(name, _)]) => {
                    match (selected(base), name.try_as_str().flatten()) {
                        (Expr::ScalarFunction(s), Some(name))
                            if s.func.name() == "named_struct" =>
                        {
                            let pick = s.args.chunks(2).find_map(|pair| match pair {
                                [Expr::Literal(n, _), value]
                                    if n.try_as_str().flatten() == Some(name) =>
                                {
                                    Some(value)
                                }
                                _ => None,
                            });
                            match pick {
                                Some(v) => v,
                                None => return e,
                            }
                        }
                        _ => return e,
                    }
                }
                ("array_element", [base, Expr::Literal(index, _)]) => {
                    match (selected(base), literal_index(index)) {
                        (Expr::ScalarFunction(s), Some(i))
                            if s.func.name() == "make_array" && i >= 1 =>
                        {
                            match s.args.get(i as usize - 1) {
                                Some(v) => v,
                                None => return e,
                            }
                        }
                        _ => return e,
                    }
                }
                _ => return e,
            },
            _ => return e,
        };
    }
}

fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        other => other,
    }
}

/// The argument of an aggregate that returns one input row's value as it is.
fn picked(e: &Expr) -> Option<&Expr> {
    match e {
        Expr::AggregateFunction(af)
            if matches!(
                af.func.name(),
                "first_value" | "last_value" | "any_value" | "nth_value"
            ) =>
        {
            af.params.args.first()
        }
        _ => None,
    }
}

/// What `e`'s value is, past aliases, in-place selections ([`selected`]) and picking
/// aggregates ([`picked`]).
fn value_of(e: &Expr) -> &Expr {
    let e = selected(e);
    match picked(e) {
        Some(arg) => value_of(arg),
        None => e,
    }
}

/// A literal field name or element index read from a column: `get_field(c, 'name')`, `c[2]`.
fn access(e: &Expr) -> Option<(&Column, String)> {
    let Expr::ScalarFunction(f) = e else {
        return None;
    };
    match (f.func.name(), f.args.as_slice()) {
        ("get_field", [Expr::Column(c), Expr::Literal(name, _)]) => {
            Some((c, name.try_as_str().flatten()?.to_string()))
        }
        ("array_element", [Expr::Column(c), Expr::Literal(index, _)]) => {
            Some((c, literal_index(index)?.to_string()))
        }
        _ => None,
    }
}

fn literal_index(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::Int64(Some(i)) => Some(*i),
        ScalarValue::Int32(Some(i)) => Some(i64::from(*i)),
        ScalarValue::Int16(Some(i)) => Some(i64::from(*i)),
        ScalarValue::Int8(Some(i)) => Some(i64::from(*i)),
        ScalarValue::UInt64(Some(i)) => i64::try_from(*i).ok(),
        _ => None,
    }
}

/// The columns `e` reads, each with its role: `None` when its value flows into the result, or
/// the indirect subtype that says how it decides the result.
fn uses<'a>(e: &'a Expr, role: Option<Indirect>, out: &mut Vec<(&'a Column, Option<Indirect>)>) {
    let e = selected(e);
    let as_ = |r: Indirect| role.or(Some(r));
    match e {
        Expr::Column(c) => out.push((c, role)),
        Expr::Case(c) => {
            if let Some(x) = &c.expr {
                uses(x, as_(Indirect::Conditional), out);
            }
            for (when, then) in &c.when_then_expr {
                uses(when, as_(Indirect::Conditional), out);
                uses(then, role, out);
            }
            if let Some(x) = &c.else_expr {
                uses(x, role, out);
            }
        }
        Expr::AggregateFunction(af) => {
            for a in &af.params.args {
                uses(a, role, out);
            }
            if let Some(f) = &af.params.filter {
                uses(f, as_(Indirect::Filter), out);
            }
            for o in &af.params.order_by {
                uses(&o.expr, as_(Indirect::Sort), out);
            }
        }
        Expr::WindowFunction(wf) => {
            for a in &wf.params.args {
                uses(a, role, out);
            }
            for p in &wf.params.partition_by {
                uses(p, as_(Indirect::Window), out);
            }
            for o in &wf.params.order_by {
                uses(&o.expr, as_(Indirect::Window), out);
            }
            if let Some(f) = &wf.params.filter {
                uses(f, as_(Indirect::Filter), out);
            }
        }
        other => {
            // Every other expression reads its children in the same role.
            let _ = other.apply_children(|child| {
                uses(child, role, out);
                Ok(TreeNodeRecursion::Continue)
            });
        }
    }
}

/// Lineage of expression `e` over the columns `input` of `input_plan`: a bare column (after
/// [`selected`]) keeps its inputs' kinds; anything else raises them to at least `kind`.
fn expr_lineage(
    e: &Expr,
    input_plan: &LogicalPlan,
    input: &[ColumnLineage],
    kind: Kind,
) -> ColumnLineage {
    edges(e, None, input_plan, input, kind)
}

/// [`expr_lineage`] with every column `e` reads in `role` (`None`: as a value).
fn edges(
    e: &Expr,
    role: Option<Indirect>,
    input_plan: &LogicalPlan,
    input: &[ColumnLineage],
    kind: Kind,
) -> ColumnLineage {
    let value = value_of(e);
    if role.is_none() {
        // A literal part of a column that is a struct or array built upstream.
        if let Some(part) = access(value).and_then(|(c, key)| {
            let col = lookup(c, input_plan, input)?;
            col.parts.iter().find(|(k, _)| *k == key).map(|(_, p)| p)
        }) {
            return part.clone();
        }
    }
    let passthrough = matches!(value, Expr::Column(_));
    let mut found = Vec::new();
    uses(e, role, &mut found);
    let mut out = ColumnLineage::default();
    for (c, role) in found {
        let Some(col) = lookup(c, input_plan, input) else {
            continue;
        };
        match role {
            None => out.merge(col, (!passthrough).then_some(kind)),
            Some(subtype) => {
                for c in col.direct.keys() {
                    out.indirect.entry(c.clone()).or_default().insert(subtype);
                }
                merge_indirect(&mut out.indirect, &col.indirect);
            }
        }
        if passthrough && role.is_none() {
            out.parts = col.parts.clone();
        }
    }
    if role.is_none() {
        if let Expr::ScalarFunction(f) = value {
            let part = |x: &Expr| edges(x, None, input_plan, input, kind);
            match f.func.name() {
                "named_struct" => {
                    out.parts = f
                        .args
                        .chunks(2)
                        .filter_map(|pair| match pair {
                            [Expr::Literal(n, _), x] => {
                                Some((n.try_as_str().flatten()?.to_string(), part(x)))
                            }
                            _ => None,
                        })
                        .collect();
                }
                "make_array" => {
                    out.parts = f
                        .args
                        .iter()
                        .enumerate()
                        .map(|(i, x)| ((i + 1).to_string(), part(x)))
                        .collect();
                }
                _ => {}
            }
        }
    }
    out
}

fn lookup<'a>(
    c: &Column,
    plan: &LogicalPlan,
    input: &'a [ColumnLineage],
) -> Option<&'a ColumnLineage> {
    plan.schema()
        .maybe_index_of_column(c)
        .and_then(|i| input.get(i))
}

/// Records every input `e` reads as a model-level indirect input of `subtype` (inputs that are
/// themselves indirect keep their own subtypes).
fn add_indirect(
    e: &Expr,
    plan: &LogicalPlan,
    input: &[ColumnLineage],
    subtype: Indirect,
    ind: &mut IndirectInputs,
) {
    merge_indirect(
        ind,
        &edges(e, Some(subtype), plan, input, Kind::Transform).indirect,
    );
}

/// Chains model lineage across layers: replaces every `<layer>.<table>` input that is itself a
/// model with that model's direct inputs, and bronze inputs with `source` columns (metadata
/// columns `_run_id`, `_ingested_at`, `_source` have no source column). The kind of a chained
/// edge is the strongest along its path.
pub fn resolve(
    models: &BTreeMap<String, ModelLineage>,
    bronze_source: &BTreeMap<String, String>,
    inputs: &Inputs,
) -> Inputs {
    let mut out = Inputs::new();
    let mut add = |c: ColumnRef, k: Kind| {
        let e = out.entry(c).or_insert(k);
        *e = (*e).max(k);
    };
    for (col, kind) in inputs {
        if let Some(upstream) = models.get(&col.table) {
            if let Some((_, up)) = upstream.columns.iter().find(|(n, _)| *n == col.column) {
                for (c, k) in resolve(models, bronze_source, &up.direct) {
                    add(c, k.max(*kind));
                }
            }
        } else if let Some(source) = bronze_source.get(&col.table) {
            if !col.column.starts_with('_') {
                let c = ColumnRef {
                    table: source.clone(),
                    column: col.column.clone(),
                };
                add(c, *kind);
            }
        } else {
            add(col.clone(), *kind);
        }
    }
    out
}

/// [`resolve`] for indirect inputs: each resolves to the source columns its upstream column's
/// value comes from, keeping its subtypes.
pub fn resolve_indirect(
    models: &BTreeMap<String, ModelLineage>,
    bronze_source: &BTreeMap<String, String>,
    inputs: &IndirectInputs,
) -> Vec<(ColumnRef, Indirect)> {
    let mut out = IndirectInputs::new();
    for (col, subtypes) in inputs {
        let one = Inputs::from([(col.clone(), Kind::Identity)]);
        for c in resolve(models, bronze_source, &one).into_keys() {
            out.entry(c).or_default().extend(subtypes);
        }
    }
    indirect_edges(&out)
}

/// Lineage of one output column: direct and indirect inputs, and the source columns the direct
/// inputs resolve to.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnReport {
    /// Output column.
    pub column: String,
    /// Direct inputs (the tables the model reads).
    pub inputs: Vec<(ColumnRef, Kind)>,
    /// Indirect inputs of this column only (the model's own are in [`ModelReport::indirect`]).
    pub indirect: Vec<(ColumnRef, Indirect)>,
    /// Direct inputs resolved through upstream models down to source columns.
    pub sources: Vec<(ColumnRef, Kind)>,
    /// This column's indirect inputs resolved the same way (through the upstream columns'
    /// direct inputs), with their subtypes.
    pub indirect_sources: Vec<(ColumnRef, Indirect)>,
}

/// Lineage of one model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    /// Per output column, in order.
    pub columns: Vec<ColumnReport>,
    /// Indirect inputs that apply to every column (filters, joins, groups, sorts).
    pub indirect: Vec<(ColumnRef, Indirect)>,
}

/// Lineage of every model of a pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineLineage {
    /// Per model (`<layer>.<table>`).
    pub models: BTreeMap<String, ModelReport>,
}

/// Flattens indirect inputs into one `(column, subtype)` pair per edge, in order.
pub fn indirect_edges(inputs: &IndirectInputs) -> Vec<(ColumnRef, Indirect)> {
    inputs
        .iter()
        .flat_map(|(c, subtypes)| subtypes.iter().map(move |s| (c.clone(), *s)))
        .collect()
}

/// The lineage of an `scd2` model's history columns, which [`crate::layers::scd2::history`]
/// computes after the model's query (its plan holds typed placeholders):
///
/// - `valid_from`: the `sequence_by` column's value (its edges, as they are); with the check
///   strategy, the run's start time (no input column);
/// - `valid_to`: the next version's start, `LEAD(valid_from) OVER (PARTITION BY <unique_key>
///   ORDER BY valid_from)`: TRANSFORM of the `sequence_by` inputs, WINDOW on the key and
///   `sequence_by` inputs;
/// - `is_current`: whether there is a next version (`valid_to IS NULL`): the same edges;
/// - `_scd_id`: the MD5 of the key values and `valid_from`: TRANSFORM of the key and
///   `sequence_by` inputs;
/// - the deleted flag (`is_deleted`, with `hard_deletes: new_record`): TRANSFORM of the delete
///   condition's inputs (`delete_when`, by default `_op`), WINDOW as `valid_to`.
///
/// Model-wide, the key and `sequence_by` inputs pick the one row of each `(key, valid_from)`
/// (WINDOW), and the check strategy's `check_cols` decide which rows become versions (FILTER).
fn scd2_history(header: &crate::plan::Header, lineage: &mut ModelLineage) {
    let of = |name: &str| {
        lineage
            .columns
            .iter()
            .find(|(c, _)| c == name)
            .map(|(_, l)| l.clone())
            .unwrap_or_default()
    };
    let refs = |names: &[String]| -> BTreeSet<ColumnRef> {
        names
            .iter()
            .flat_map(|n| of(n).direct.into_keys())
            .collect()
    };
    let keys = refs(&header.unique_key);
    let sequence = refs(&header.sequence_by);
    let checked = refs(&header.check_cols);
    let window: IndirectInputs = keys
        .iter()
        .chain(&sequence)
        .map(|c| (c.clone(), BTreeSet::from([Indirect::Window])))
        .collect();
    let transform = |refs: &BTreeSet<ColumnRef>| -> Inputs {
        refs.iter().map(|c| (c.clone(), Kind::Transform)).collect()
    };
    let valid_from = match header.sequence_by.first() {
        Some(s) => of(s),
        None => ColumnLineage::default(),
    };
    let next = ColumnLineage {
        direct: transform(&sequence),
        indirect: window.clone(),
        parts: Vec::new(),
    };
    let id = ColumnLineage {
        direct: transform(&keys.iter().chain(&sequence).cloned().collect()),
        ..ColumnLineage::default()
    };
    // The deleted flag (`hard_deletes: new_record`): whether the row was made by a delete, that
    // is by the delete condition's columns (`delete_when`, or `_op`).
    let condition: Vec<String> = match &header.delete_when {
        Some((text, _)) => text
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| lineage.columns.iter().any(|(c, _)| c == w))
            .map(str::to_string)
            .collect(),
        None => vec![crate::extract::OP_COLUMN.to_string()],
    };
    let deleted = ColumnLineage {
        direct: transform(&refs(&condition)),
        indirect: window.clone(),
        parts: Vec::new(),
    };
    let [from, to, current, deleted_flag] = &header.scd_columns;
    let history = [
        (from.as_str(), valid_from),
        (to.as_str(), next.clone()),
        (current.as_str(), next),
        (deleted_flag.as_str(), deleted),
        (crate::layers::scd2::SCD_ID, id),
    ];
    for (name, l) in history {
        if let Some((_, column)) = lineage.columns.iter_mut().find(|(c, _)| c == name) {
            *column = l;
        }
    }
    merge_indirect(&mut lineage.indirect, &window);
    for c in checked {
        lineage
            .indirect
            .entry(c)
            .or_default()
            .insert(Indirect::Filter);
    }
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
        .map(|(id, p)| {
            let mut lineage = from_plan(p);
            if let Some(model) = plan.models.iter().find(|m| m.id == *id) {
                if model.header.materialized == crate::plan::Materialization::Scd2 {
                    scd2_history(&model.header, &mut lineage);
                }
            }
            (id.to_string(), lineage)
        })
        .collect();
    let models = lineages
        .iter()
        .map(|(name, l)| {
            let columns = l
                .columns
                .iter()
                .map(|(c, col)| ColumnReport {
                    column: c.clone(),
                    inputs: col.direct.iter().map(|(r, k)| (r.clone(), *k)).collect(),
                    indirect: indirect_edges(&col.indirect),
                    sources: resolve(&lineages, &bronze_source, &col.direct)
                        .into_iter()
                        .collect(),
                    indirect_sources: resolve_indirect(&lineages, &bronze_source, &col.indirect),
                })
                .collect();
            let report = ModelReport {
                columns,
                indirect: indirect_edges(&l.indirect),
            };
            (name.clone(), report)
        })
        .collect();
    PipelineLineage { models }
}
