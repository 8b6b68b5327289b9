//! The latest row per key without sorting: `… ROW_NUMBER() OVER (PARTITION BY k ORDER BY o) AS rn
//! … WHERE rn = 1`, the deduplication every silver model does, planned as a hash table that keeps
//! the best row per key instead of a full sort of the input.
//!
//! [`LatestPerKeyRule`] (a logical optimizer rule, run after DataFusion's own) replaces
//! `Filter(rn = 1)` directly over a `Window` holding only that `row_number()` with a
//! [`LatestPerKey`] node and a projection that sets `rn` to 1 (conditions on other columns AND-ed
//! to `rn = 1` stay in a filter above); any other shape keeps the window.
//! [`LatestPerKeyExec`] executes it per hash partition of the keys: it converts the partition keys
//! and the order keys to the Arrow row format (whose byte order is the sort order, with the
//! window's ASC/DESC and NULLS FIRST/LAST; see `arrow_row`), keeps for each key the row whose order
//! bytes are smallest (the first seen among ties, as `ROW_NUMBER` keeps an arbitrary one), and
//! gathers the winners at the end. Cost: one hash probe per row instead of an O(n log n) sort;
//! memory: the input batches that still hold a winner (compacted as it goes), reserved in the
//! session's memory pool. DataFusion's own `WindowTopN` (apache/datafusion#21479) is not in the
//! pinned release.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use async_trait::async_trait;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchemaRef, Result as DfResult, ScalarValue};
use datafusion::execution::context::{QueryPlanner, SessionState};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    BinaryExpr, Expr, Extension, Filter, LogicalPlan, Operator, Projection, SortExpr,
    UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use futures::{StreamExt, TryStreamExt};

/// The query planner of Smelter's sessions: DataFusion's, with delta-rs' extension nodes (write,
/// merge), [`LatestPerKey`] and [`super::observe::Observe`].
#[derive(Debug)]
pub struct Planner;

#[async_trait]
impl QueryPlanner for Planner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &SessionState,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![
            deltalake::delta_datafusion::planner::DeltaExtensionPlanner::new(),
            Arc::new(LatestPerKeyPlanner),
            Arc::new(super::observe::ObservePlanner),
        ])
        .create_physical_plan(logical_plan, session_state)
        .await
    }
}

/// Logical node: the first row per `partition_by` value in `order_by` order, with the input's
/// schema.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct LatestPerKey {
    input: LogicalPlan,
    partition_by: Vec<Expr>,
    order_by: Vec<SortExpr>,
}

impl UserDefinedLogicalNodeCore for LatestPerKey {
    fn name(&self) -> &str {
        "LatestPerKey"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        self.partition_by
            .iter()
            .cloned()
            .chain(self.order_by.iter().map(|s| s.expr.clone()))
            .collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "LatestPerKey: partition_by=[{}], order_by=[{}]",
            self.partition_by
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            self.order_by
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> DfResult<Self> {
        let n = self.partition_by.len();
        let input = inputs.into_iter().next().ok_or_else(|| {
            datafusion::error::DataFusionError::Internal("LatestPerKey needs one input".into())
        })?;
        Ok(LatestPerKey {
            input,
            partition_by: exprs[..n].to_vec(),
            order_by: self
                .order_by
                .iter()
                .zip(&exprs[n..])
                .map(|(s, e)| SortExpr::new(e.clone(), s.asc, s.nulls_first))
                .collect(),
        })
    }
}

/// Rewrites `Filter(rn = 1)` over `Window(row_number() OVER (PARTITION BY … ORDER BY …))` into
/// [`LatestPerKey`]; see the module documentation.
#[derive(Debug, Default)]
pub struct LatestPerKeyRule;

impl OptimizerRule for LatestPerKeyRule {
    fn name(&self) -> &str {
        "latest_per_key"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> DfResult<Transformed<LogicalPlan>> {
        match latest_per_key(&plan)? {
            Some(rewritten) => Ok(Transformed::yes(rewritten)),
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// The rewrite of `plan` when it has the exact shape; `None` otherwise.
fn latest_per_key(plan: &LogicalPlan) -> DfResult<Option<LogicalPlan>> {
    let LogicalPlan::Filter(filter) = plan else {
        return Ok(None);
    };
    let LogicalPlan::Window(window) = filter.input.as_ref() else {
        return Ok(None);
    };
    let [expr] = window.window_expr.as_slice() else {
        return Ok(None);
    };
    let Expr::WindowFunction(function) = unalias(expr) else {
        return Ok(None);
    };
    let WindowFunction { fun, params } = function.as_ref();
    if fun.name() != "row_number"
        || !params.args.is_empty()
        || params.partition_by.is_empty()
        || params.order_by.is_empty()
        || params.filter.is_some()
        || params.distinct
    {
        return Ok(None);
    }
    let fields = window.schema.fields();
    let (qualifier, rn) = window.schema.qualified_field(fields.len() - 1);
    // `rn = 1`, possibly AND-ed with conditions on the other columns (DataFusion merges a
    // filter above the deduplication into this one): those stay in a filter above.
    let conjuncts = split_conjunction(&filter.predicate);
    let Some(at) = conjuncts.iter().position(|c| is_equal_one(c, rn.name())) else {
        return Ok(None);
    };
    let rest: Vec<Expr> = conjuncts
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != at)
        .map(|(_, c)| (*c).clone())
        .collect();
    if rest
        .iter()
        .any(|c| c.column_refs().iter().any(|col| col.name == *rn.name()))
    {
        return Ok(None);
    }
    let node = LatestPerKey {
        input: window.input.as_ref().clone(),
        partition_by: params.partition_by.clone(),
        order_by: params.order_by.clone(),
    };
    let one = ScalarValue::UInt64(Some(1)).cast_to(rn.data_type())?;
    let mut exprs: Vec<Expr> = window
        .input
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    exprs.push(Expr::Literal(one, None).alias_qualified(qualifier.cloned(), rn.name()));
    let input = Arc::new(LogicalPlan::Extension(Extension {
        node: Arc::new(node),
    }));
    let latest = LogicalPlan::Projection(Projection::try_new_with_schema(
        exprs,
        input,
        window.schema.clone(),
    )?);
    Ok(Some(match conjunction(rest) {
        Some(predicate) => LogicalPlan::Filter(Filter::try_new(predicate, Arc::new(latest))?),
        None => latest,
    }))
}

fn unalias(expr: &Expr) -> &Expr {
    match expr {
        Expr::Alias(a) => unalias(&a.expr),
        e => e,
    }
}

/// Whether `predicate` is `<column> = 1` or `1 = <column>` for the column named `name`.
fn is_equal_one(predicate: &Expr, name: &str) -> bool {
    let Expr::BinaryExpr(BinaryExpr {
        left,
        op: Operator::Eq,
        right,
    }) = predicate
    else {
        return false;
    };
    let one = |e: &Expr| match unalias(e) {
        Expr::Literal(v, _) => v
            .cast_to(&arrow::datatypes::DataType::Int64)
            .is_ok_and(|v| v == ScalarValue::Int64(Some(1))),
        _ => false,
    };
    let column = |e: &Expr| matches!(unalias(e), Expr::Column(c) if c.name == name);
    (column(left) && one(right)) || (one(left) && column(right))
}

struct LatestPerKeyPlanner;

#[async_trait]
impl ExtensionPlanner for LatestPerKeyPlanner {
    async fn plan_extension(
        &self,
        planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session_state: &SessionState,
    ) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<LatestPerKey>() else {
            return Ok(None);
        };
        let (Some(logical), Some(input)) = (logical_inputs.first(), physical_inputs.first()) else {
            return Ok(None);
        };
        let schema = logical.schema();
        let keys = node
            .partition_by
            .iter()
            .map(|e| planner.create_physical_expr(e, schema, session_state))
            .collect::<DfResult<Vec<_>>>()?;
        let order = node
            .order_by
            .iter()
            .map(|s| {
                Ok(PhysicalSortExpr {
                    expr: planner.create_physical_expr(&s.expr, schema, session_state)?,
                    options: arrow::compute::SortOptions {
                        descending: !s.asc,
                        nulls_first: s.nulls_first,
                    },
                })
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok(Some(Arc::new(LatestPerKeyExec::new(
            input.clone(),
            keys,
            order,
        ))))
    }
}

/// Physical operator of [`LatestPerKey`]: requires its input hash-partitioned by the keys and
/// emits, per partition, one row per key (in no particular order) once its input is consumed.
#[derive(Debug)]
pub struct LatestPerKeyExec {
    input: Arc<dyn ExecutionPlan>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    order: Vec<PhysicalSortExpr>,
    properties: Arc<PlanProperties>,
}

impl LatestPerKeyExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        order: Vec<PhysicalSortExpr>,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(input.schema()),
            input.output_partitioning().clone(),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        LatestPerKeyExec {
            input,
            keys,
            order,
            properties,
        }
    }
}

impl DisplayAs for LatestPerKeyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "LatestPerKeyExec: keys=[{}], order=[{}]",
            self.keys
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            self.order
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

impl ExecutionPlan for LatestPerKeyExec {
    fn name(&self) -> &str {
        "LatestPerKeyExec"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::HashPartitioned(self.keys.clone())]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = children.into_iter().next().ok_or_else(|| {
            datafusion::error::DataFusionError::Internal("LatestPerKeyExec needs one input".into())
        })?;
        Ok(Arc::new(LatestPerKeyExec::new(
            input,
            self.keys.clone(),
            self.order.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context.clone())?;
        let reservation = MemoryConsumer::new(format!("LatestPerKeyExec[{partition}]"))
            .register(context.memory_pool());
        let batch_size = context.session_config().batch_size();
        let state = Latest {
            schema: self.schema(),
            keys: self.keys.clone(),
            order: self.order.clone(),
            reservation,
            batch_size,
        };
        let out = futures::stream::once(state.run(input))
            .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema(), out)))
    }
}

/// Compact the retained batches when they hold this many batches and at least twice as many
/// rows as there are keys.
const COMPACT_AFTER_BATCHES: usize = 32;

/// One partition's execution.
struct Latest {
    schema: SchemaRef,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    order: Vec<PhysicalSortExpr>,
    reservation: MemoryReservation,
    batch_size: usize,
}

/// The best row of one key: its order bytes, and where the row is (batch, row).
type Best = (Box<[u8]>, u32, u32);

impl Latest {
    async fn run(self, mut input: SendableRecordBatchStream) -> DfResult<Vec<RecordBatch>> {
        let key_rows = RowConverter::new(
            self.keys
                .iter()
                .map(|k| Ok(SortField::new(k.data_type(&self.schema)?)))
                .collect::<DfResult<Vec<_>>>()?,
        )?;
        let order_rows = RowConverter::new(
            self.order
                .iter()
                .map(|o| {
                    Ok(SortField::new_with_options(
                        o.expr.data_type(&self.schema)?,
                        o.options,
                    ))
                })
                .collect::<DfResult<Vec<_>>>()?,
        )?;
        let mut best: ahash::AHashMap<Box<[u8]>, Best> = ahash::AHashMap::new();
        let mut batches: Vec<RecordBatch> = Vec::new();
        let mut retained_rows = 0usize;
        while let Some(batch) = input.next().await {
            let batch = batch?;
            let n = batch.num_rows();
            if n == 0 {
                continue;
            }
            let eval = |exprs: &mut dyn Iterator<Item = &Arc<dyn PhysicalExpr>>| {
                exprs
                    .map(|e| e.evaluate(&batch)?.into_array(n))
                    .collect::<DfResult<Vec<_>>>()
            };
            let keys = key_rows.convert_columns(&eval(&mut self.keys.iter())?)?;
            let orders =
                order_rows.convert_columns(&eval(&mut self.order.iter().map(|o| &o.expr))?)?;
            let b = batches.len() as u32;
            for i in 0..n {
                let order = orders.row(i);
                match best.get_mut(keys.row(i).as_ref()) {
                    // Strictly better only: the first row seen among ties stays.
                    Some(current) if order.as_ref() < current.0.as_ref() => {
                        *current = (order.as_ref().into(), b, i as u32);
                    }
                    Some(_) => {}
                    None => {
                        best.insert(
                            keys.row(i).as_ref().into(),
                            (order.as_ref().into(), b, i as u32),
                        );
                    }
                }
            }
            self.reservation.try_grow(batch.get_array_memory_size())?;
            retained_rows += n;
            batches.push(batch);
            if batches.len() >= COMPACT_AFTER_BATCHES && retained_rows >= 2 * best.len() {
                let compacted = gather(&self.schema, &batches, best.values_mut(), usize::MAX)?;
                batches = compacted;
                retained_rows = best.len();
                self.reservation
                    .try_resize(batches.iter().map(|b| b.get_array_memory_size()).sum())?;
            }
        }
        let out = gather(&self.schema, &batches, best.values_mut(), self.batch_size)?;
        self.reservation.free();
        Ok(out)
    }
}

/// Gathers the rows that `winners` point to into batches of at most `batch_size` rows, and
/// points each winner at its new place (batch, row) in them.
fn gather<'a>(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    winners: impl Iterator<Item = &'a mut Best>,
    batch_size: usize,
) -> DfResult<Vec<RecordBatch>> {
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    let mut out = Vec::new();
    let mut indices: Vec<(usize, usize)> = Vec::new();
    let batch_size = batch_size.max(1);
    for w in winners {
        indices.push((w.1 as usize, w.2 as usize));
        w.1 = out.len() as u32;
        w.2 = (indices.len() - 1) as u32;
        if indices.len() == batch_size {
            out.push(arrow::compute::interleave_record_batch(&refs, &indices)?);
            indices.clear();
        }
    }
    if !indices.is_empty() {
        out.push(arrow::compute::interleave_record_batch(&refs, &indices)?);
    }
    if out.is_empty() {
        out.push(RecordBatch::new_empty(schema.clone()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    use super::*;

    fn session(rule: bool) -> SessionContext {
        let mut builder = SessionStateBuilder::new()
            .with_default_features()
            .with_config(
                datafusion::prelude::SessionConfig::new()
                    .with_target_partitions(3)
                    .with_batch_size(64),
            )
            .with_query_planner(Arc::new(Planner));
        if rule {
            builder = builder.with_optimizer_rule(Arc::new(LatestPerKeyRule));
        }
        SessionContext::new_with_state(builder.build())
    }

    /// Registers `batches` as table `t`: many small batches in one partition, so the operator
    /// sees dozens of batches per partition and compacts.
    fn register(ctx: &SessionContext, batches: &[RecordBatch]) {
        let table =
            datafusion::datasource::MemTable::try_new(batches[0].schema(), vec![batches.to_vec()])
                .unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
    }

    /// Random rows: keys and order values from small ranges (many ties), with NULLs in both.
    fn data(seed: u64, rows: usize) -> Vec<RecordBatch> {
        let mut x = seed;
        let mut next = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("k2", DataType::Utf8, true),
            Field::new("o", DataType::Int64, true),
            Field::new("payload", DataType::Utf8, true),
        ]));
        let mut out = Vec::new();
        for chunk in 0..(rows / 100) {
            let (mut k, mut k2, mut o, mut p) = (vec![], vec![], vec![], vec![]);
            for i in 0..100 {
                k.push((next(10) != 0).then(|| next(60) as i64));
                k2.push((next(10) != 0).then(|| format!("s{}", next(3))));
                o.push((next(8) != 0).then(|| next(12) as i64));
                p.push(Some(format!("row {chunk}-{i}")));
            }
            out.push(
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int64Array::from(k)),
                        Arc::new(StringArray::from(k2)),
                        Arc::new(Int64Array::from(o)),
                        Arc::new(StringArray::from(p)),
                    ],
                )
                .unwrap(),
            );
        }
        out
    }

    /// The query's rows as `|`-joined strings, sorted, and its physical plan.
    async fn run(ctx: &SessionContext, sql: &str) -> (Vec<String>, String) {
        let df = ctx.sql(sql).await.unwrap();
        let physical = df.create_physical_plan().await.unwrap();
        let explain = datafusion::physical_plan::displayable(physical.as_ref())
            .indent(true)
            .to_string();
        let batches = datafusion::physical_plan::collect(physical, ctx.task_ctx())
            .await
            .unwrap();
        let mut rows = Vec::new();
        for b in &batches {
            let cols: Vec<_> = (0..b.num_columns())
                .map(|c| arrow::compute::cast(b.column(c), &DataType::Utf8).unwrap())
                .collect();
            for r in 0..b.num_rows() {
                rows.push(
                    cols.iter()
                        .map(|c| {
                            let s = c.as_any().downcast_ref::<StringArray>().unwrap();
                            if s.is_null(r) {
                                "∅".to_string()
                            } else {
                                s.value(r).to_string()
                            }
                        })
                        .collect::<Vec<_>>()
                        .join("|"),
                );
            }
        }
        rows.sort();
        (rows, explain)
    }

    #[tokio::test]
    async fn same_rows_as_the_window_on_random_data_with_ties_and_nulls() {
        // (window, the columns the winner determines: keys and order values)
        let cases = [
            ("PARTITION BY k ORDER BY o DESC", "k, o"),
            ("PARTITION BY k, k2 ORDER BY o ASC NULLS LAST", "k, k2, o"),
            (
                "PARTITION BY k2 ORDER BY o DESC NULLS LAST, payload DESC",
                "k2, o, payload, k",
            ),
        ];
        // A condition on other columns AND-ed to `rn = 1` applies to the winners.
        let filters = ["", " AND o <> 3", " AND (k2 IS NULL OR k2 <> 's1')"];
        for (seed, ((window, columns), and)) in cases.iter().zip(filters).enumerate() {
            let batches = data(seed as u64 * 7 + 3, 5_000);
            let mut results = Vec::new();
            for rule in [false, true] {
                let ctx = session(rule);
                register(&ctx, &batches);
                // Ties on the order key make the picked payload arbitrary in both plans: compare
                // the keys and the winning order value (the next test compares whole rows).
                let sql = format!(
                    "SELECT {columns}, rn FROM (SELECT *, ROW_NUMBER() OVER ({window}) AS rn FROM t) WHERE rn = 1{and}"
                );
                results.push(run(&ctx, &sql).await);
            }
            let (without, plan_without) = &results[0];
            let (with, plan_with) = &results[1];
            assert!(!plan_without.contains("LatestPerKeyExec"), "{plan_without}");
            assert!(plan_with.contains("LatestPerKeyExec"), "{plan_with}");
            assert!(!with.is_empty());
            assert_eq!(with, without, "{window}");
        }
    }

    #[tokio::test]
    async fn the_winning_row_is_whole_when_the_order_is_unique() {
        // The order key `payload` is unique: the whole winning row is determined.
        let batches = data(11, 3_000);
        let mut results = Vec::new();
        for rule in [false, true] {
            let ctx = session(rule);
            register(&ctx, &batches);
            let sql = "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY payload DESC) AS rn FROM t) WHERE rn = 1";
            results.push(run(&ctx, sql).await.0);
        }
        assert_eq!(results[0].len(), 61, "60 keys and NULL");
        assert_eq!(results[0], results[1]);
    }

    #[tokio::test]
    async fn other_shapes_keep_the_window() {
        let batches = data(5, 1_000);
        let ctx = session(true);
        register(&ctx, &batches);
        for sql in [
            "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY o) AS rn FROM t) WHERE rn = 2",
            "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY o) AS rn FROM t) WHERE rn <= 1",
            "SELECT * FROM (SELECT *, RANK() OVER (PARTITION BY k ORDER BY o) AS rn FROM t) WHERE rn = 1",
            "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (ORDER BY o) AS rn FROM t) WHERE rn = 1",
            "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY o) AS rn FROM t) WHERE rn = 1 OR o = 2",
        ] {
            let (_, plan) = run(&ctx, sql).await;
            assert!(!plan.contains("LatestPerKeyExec"), "{sql}: {plan}");
        }
    }
}
