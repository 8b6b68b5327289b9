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
//! memory: the input batches that still hold a winner (compacted as it goes) and the hash table,
//! reserved in the session's memory pool. When the reservation cannot grow, the operator spills
//! as a hash join does (grace hash partitioning): the winners so far and the rest of the input
//! are split by key hash into 16 files of the runtime's disk manager, and each file is then
//! deduplicated on its own (splitting again, up to 4 levels, if it does not fit either); each
//! key's rows stay in input order, so the result is the same as without spilling. DataFusion's own `WindowTopN` (apache/datafusion#21479) is not in the
//! pinned release.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::row::{RowConverter, SortField};
use async_trait::async_trait;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchemaRef, DataFusionError, Result as DfResult, ScalarValue};
use datafusion::execution::context::{QueryPlanner, SessionState};
use datafusion::execution::disk_manager::RefCountedTempFile;
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
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet, SpillMetrics};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::SpillManager;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use futures::StreamExt;

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

/// Plans [`LatestPerKey`] as [`LatestPerKeyExec`].
pub(crate) struct LatestPerKeyPlanner;

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
    /// Spill counts per partition (`spill_count`, `spilled_bytes`, `spilled_rows`).
    metrics: ExecutionPlanMetricsSet,
}

impl LatestPerKeyExec {
    /// The key expressions and the order that picks each key's row.
    pub(crate) fn parts(&self) -> (&[Arc<dyn PhysicalExpr>], &[PhysicalSortExpr]) {
        (&self.keys, &self.order)
    }

    /// The first row per `keys` value of `input` in `order` order.
    pub(crate) fn new(
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
            metrics: ExecutionPlanMetricsSet::new(),
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

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    /// At most the input's rows (one per key), so the input's statistics, made inexact. A join
    /// above needs them to build its hash table on the smaller side: without them DataFusion
    /// keeps the deduplicated rows as the build side, which cannot spill (the demo's
    /// `relationships` check of `silver.shipments` at SF10 held 1 GB in it).
    fn partition_statistics(
        &self,
        partition: Option<usize>,
    ) -> DfResult<datafusion::common::Statistics> {
        Ok(self.input.partition_statistics(partition)?.to_inexact())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context.clone())?;
        let reservation = MemoryConsumer::new(format!("LatestPerKeyExec[{partition}]"))
            .with_can_spill(true)
            .register(context.memory_pool());
        let schema = self.schema();
        let sort_field = |e: &Arc<dyn PhysicalExpr>, options| {
            Ok(SortField::new_with_options(e.data_type(&schema)?, options))
        };
        let key_rows = RowConverter::new(
            self.keys
                .iter()
                .map(|k| sort_field(k, Default::default()))
                .collect::<DfResult<Vec<_>>>()?,
        )?;
        let order_rows = RowConverter::new(
            self.order
                .iter()
                .map(|o| sort_field(&o.expr, o.options))
                .collect::<DfResult<Vec<_>>>()?,
        )?;
        let spill = SpillManager::new(
            context.runtime_env(),
            SpillMetrics::new(&self.metrics, partition),
            schema.clone(),
        )
        .with_compression_type(context.session_config().spill_compression());
        let latest = Latest {
            keys: self.keys.clone(),
            order: self.order.clone(),
            key_rows,
            order_rows,
            reservation,
            batch_size: context.session_config().batch_size(),
            spill,
        };
        // Work: the input first, then the spilled buckets (last in, first out), each with its
        // depth; the winners of a finished pass are emitted a batch at a time.
        let work = Work {
            latest,
            first: Some(input),
            pending: Vec::new(),
            emit: None,
        };
        let out = futures::stream::try_unfold(work, |mut work| async move {
            loop {
                if let Some(emit) = work.emit.as_mut() {
                    if let Some(batch) = emit.next(work.latest.batch_size)? {
                        return Ok(Some((batch, work)));
                    }
                    work.emit = None;
                }
                let (input, depth) = match work.first.take() {
                    Some(input) => (input, 0),
                    None => match work.pending.pop() {
                        Some((file, depth)) => {
                            (work.latest.spill.read_spill_as_stream(file, None)?, depth)
                        }
                        None => return Ok::<_, DataFusionError>(None),
                    },
                };
                match work.latest.pass(input, depth).await? {
                    Pass::Done(emit) => work.emit = Some(emit),
                    Pass::Spilled(buckets) => work
                        .pending
                        .extend(buckets.into_iter().map(|f| (f, depth + 1))),
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema(), out)))
    }
}

/// Compact the retained batches when they hold this many batches and at least twice as many
/// rows as there are keys.
const COMPACT_AFTER_BATCHES: usize = 32;

/// Buckets a pass splits its keys into when its memory reservation cannot grow.
const SPILL_FANOUT: usize = 16;

/// Times a spilled bucket may itself spill (16^4 = 65,536 buckets in all) before the operator
/// gives up with DataFusion's resources-exhausted error.
const MAX_SPILL_DEPTH: usize = 4;

/// Rows per batch when the retained batches are compacted (bounded so that a string column's
/// 32-bit offsets cannot overflow on wide values).
const COMPACT_BATCH_ROWS: usize = 1 << 20;

/// One partition's execution.
struct Latest {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    order: Vec<PhysicalSortExpr>,
    key_rows: RowConverter,
    order_rows: RowConverter,
    /// The retained batches and the hash table ([`Winners::bytes`]).
    reservation: MemoryReservation,
    batch_size: usize,
    spill: SpillManager,
}

/// What is left to do in one partition.
struct Work {
    latest: Latest,
    /// The partition's input, until its pass starts.
    first: Option<SendableRecordBatchStream>,
    /// Spilled buckets and their depth.
    pending: Vec<(RefCountedTempFile, usize)>,
    /// The winners of the last pass, still to be emitted.
    emit: Option<Emit>,
}

/// The winners of a pass: the batches holding them and where each is (batch, row), emitted in
/// batches of the session's batch size. The retained batches stay reserved until all are out.
struct Emit {
    batches: Vec<RecordBatch>,
    at: Vec<(u32, u32)>,
    next: usize,
}

impl Emit {
    /// The next batch of winners, or `None` when all were emitted.
    fn next(&mut self, batch_size: usize) -> DfResult<Option<RecordBatch>> {
        if self.next >= self.at.len() {
            return Ok(None);
        }
        let end = (self.next + batch_size.max(1)).min(self.at.len());
        let batch = interleave(&self.batches, &self.at[self.next..end])?;
        self.next = end;
        Ok(Some(batch))
    }
}

/// What one pass over an input gives.
enum Pass {
    /// Every key's winner.
    Done(Emit),
    /// The reservation could not grow: the winners so far, then the rest of the input, split
    /// by key hash into files, each holding all the rows of its keys in input order (the
    /// winners first, so the first row seen among ties still wins).
    Spilled(Vec<RefCountedTempFile>),
}

/// The best row of each key seen so far, in flat arrays: a key costs its key and order bytes
/// (Arrow row format) plus about 50 bytes, where a hash map of boxed slices cost about 170.
#[derive(Default)]
struct Winners {
    /// Entry numbers, by key hash.
    table: hashbrown::HashTable<u32>,
    hashes: Vec<u64>,
    /// Entry `i`'s key is `keys[key_ends[i - 1]..key_ends[i]]` (from 0 for the first).
    keys: Vec<u8>,
    key_ends: Vec<usize>,
    /// Entry `i`'s order bytes are `orders[order_at[i]..][..order_len[i]]`; a better order
    /// overwrites the old one when it fits, else goes at the end.
    orders: Vec<u8>,
    order_at: Vec<usize>,
    order_len: Vec<u32>,
    /// Where entry `i`'s row is: (batch, row).
    at: Vec<(u32, u32)>,
}

impl Winners {
    fn len(&self) -> usize {
        self.at.len()
    }

    /// Bytes allocated, for the memory reservation.
    fn bytes(&self) -> usize {
        self.table.allocation_size()
            + self.hashes.capacity() * 8
            + self.keys.capacity()
            + self.key_ends.capacity() * 8
            + self.orders.capacity()
            + self.order_at.capacity() * 8
            + self.order_len.capacity() * 4
            + self.at.capacity() * 8
    }

    /// Offers row `at` with `key` and `order` (hashed `hash`): it becomes its key's winner when
    /// the key is new or `order` is strictly smaller than the winner's (so the first row seen
    /// among ties stays).
    fn offer(&mut self, hash: u64, key: &[u8], order: &[u8], at: (u32, u32)) {
        let (hashes, keys, key_ends) = (&self.hashes, &self.keys, &self.key_ends);
        let key_of = |i: usize| &keys[if i == 0 { 0 } else { key_ends[i - 1] }..key_ends[i]];
        let found = self
            .table
            .find(hash, |&i| {
                hashes[i as usize] == hash && key_of(i as usize) == key
            })
            .copied();
        match found {
            Some(i) => {
                let i = i as usize;
                let (start, len) = (self.order_at[i], self.order_len[i] as usize);
                if order < &self.orders[start..start + len] {
                    if order.len() <= len {
                        self.orders[start..start + order.len()].copy_from_slice(order);
                    } else {
                        self.order_at[i] = self.orders.len();
                        self.orders.extend_from_slice(order);
                    }
                    self.order_len[i] = order.len() as u32;
                    self.at[i] = at;
                }
            }
            None => {
                let i = self.at.len() as u32;
                self.hashes.push(hash);
                self.keys.extend_from_slice(key);
                self.key_ends.push(self.keys.len());
                self.order_at.push(self.orders.len());
                self.orders.extend_from_slice(order);
                self.order_len.push(order.len() as u32);
                self.at.push(at);
                let hashes = &self.hashes;
                self.table.insert_unique(hash, i, |&j| hashes[j as usize]);
            }
        }
    }
}

impl Latest {
    /// Keeps the best row per key of `input`, or spills (see [`Pass`]). `depth`: how many
    /// spills led to this input (it picks the hash seed, so a bucket splits differently).
    async fn pass(&mut self, mut input: SendableRecordBatchStream, depth: usize) -> DfResult<Pass> {
        // The output of the previous pass has been handed on.
        self.reservation.free();
        let hasher = ahash::RandomState::new();
        let mut best = Winners::default();
        let mut batches: Vec<RecordBatch> = Vec::new();
        let (mut retained_rows, mut batch_bytes) = (0usize, 0usize);
        let mut spill = false;
        while let Some(batch) = input.next().await {
            let batch = batch?;
            let n = batch.num_rows();
            if n == 0 {
                continue;
            }
            let keys = self
                .key_rows
                .convert_columns(&evaluate(self.keys.iter(), &batch)?)?;
            let orders = self
                .order_rows
                .convert_columns(&evaluate(self.order.iter().map(|o| &o.expr), &batch)?)?;
            let b = batches.len() as u32;
            for i in 0..n {
                let key = keys.row(i);
                let hash = hasher.hash_one(key.as_ref());
                best.offer(hash, key.as_ref(), orders.row(i).as_ref(), (b, i as u32));
            }
            batch_bytes += batch.get_array_memory_size();
            retained_rows += n;
            batches.push(batch);
            let mut refused = self
                .reservation
                .try_resize(batch_bytes + best.bytes())
                .err();
            // Compacting is cheaper than spilling: try it first when it frees anything.
            if (refused.is_some() && retained_rows > best.len())
                || (batches.len() >= COMPACT_AFTER_BATCHES && retained_rows >= 2 * best.len())
            {
                batches = gather(&batches, &mut best.at, COMPACT_BATCH_ROWS)?;
                retained_rows = best.len();
                batch_bytes = batches.iter().map(|b| b.get_array_memory_size()).sum();
                refused = self
                    .reservation
                    .try_resize(batch_bytes + best.bytes())
                    .err();
            }
            if let Some(refused) = refused {
                if depth >= MAX_SPILL_DEPTH {
                    return Err(DataFusionError::ResourcesExhausted(format!(
                        "LatestPerKeyExec: the latest row of each key does not fit in the memory \
                         pool even with the keys split {} ways on disk ({} bytes of rows and \
                         hash table in this part): raise the memory limit; {refused}",
                        SPILL_FANOUT.pow(MAX_SPILL_DEPTH as u32),
                        batch_bytes + best.bytes()
                    )));
                }
                spill = true;
                break;
            }
        }
        if spill {
            let mut files = (0..SPILL_FANOUT)
                .map(|_| self.spill.create_in_progress_file("LatestPerKeyExec"))
                .collect::<DfResult<Vec<_>>>()?;
            // The winners first (they were seen before the rows still to come), a batch at a
            // time, so spilling does not copy them all at once.
            let at = std::mem::take(&mut best.at);
            drop(best);
            for chunk in at.chunks(self.batch_size.max(1)) {
                for (bucket, rows) in self.split(&interleave(&batches, chunk)?, depth)? {
                    files[bucket].append_batch(&rows)?;
                }
            }
            drop((at, batches));
            self.reservation.free();
            while let Some(batch) = input.next().await {
                for (bucket, rows) in self.split(&batch?, depth)? {
                    files[bucket].append_batch(&rows)?;
                }
            }
            let mut spilled = Vec::with_capacity(files.len());
            for mut file in files {
                spilled.extend(file.finish()?);
            }
            return Ok(Pass::Spilled(spilled));
        }
        let at = std::mem::take(&mut best.at);
        drop(best);
        // Held until the next pass: the retained batches until the winners are out.
        self.reservation.resize(batch_bytes);
        Ok(Pass::Done(Emit {
            batches,
            at,
            next: 0,
        }))
    }

    /// The rows of `batch` split by their key's hash into [`SPILL_FANOUT`] buckets: (bucket,
    /// its rows in input order) for each bucket with rows.
    fn split(&self, batch: &RecordBatch, depth: usize) -> DfResult<Vec<(usize, RecordBatch)>> {
        let keys = self
            .key_rows
            .convert_columns(&evaluate(self.keys.iter(), batch)?)?;
        // Seeds independent of the repartitioning hash and of the other depths.
        let hasher = ahash::RandomState::with_seeds(
            0x9e37_79b9_7f4a_7c15,
            depth as u64,
            0xbf58_476d_1ce4_e5b9,
            0x94d0_49bb_1331_11eb,
        );
        let mut rows: Vec<Vec<u32>> = vec![Vec::new(); SPILL_FANOUT];
        for (i, key) in keys.iter().enumerate() {
            let bucket = (hasher.hash_one(key.as_ref()) % SPILL_FANOUT as u64) as usize;
            rows[bucket].push(i as u32);
        }
        rows.into_iter()
            .enumerate()
            .filter(|(_, rows)| !rows.is_empty())
            .map(|(bucket, rows)| {
                let indices = arrow::array::UInt32Array::from(rows);
                Ok((bucket, arrow::compute::take_record_batch(batch, &indices)?))
            })
            .collect()
    }
}

/// The values of `exprs` on `batch`, as arrays.
fn evaluate<'a>(
    exprs: impl Iterator<Item = &'a Arc<dyn PhysicalExpr>>,
    batch: &RecordBatch,
) -> DfResult<Vec<arrow::array::ArrayRef>> {
    exprs
        .map(|e| e.evaluate(batch)?.into_array(batch.num_rows()))
        .collect()
}

/// The rows at `at` (batch, row) of `batches`, in that order, as one batch.
fn interleave(batches: &[RecordBatch], at: &[(u32, u32)]) -> DfResult<RecordBatch> {
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    let indices: Vec<(usize, usize)> = at.iter().map(|&(b, r)| (b as usize, r as usize)).collect();
    Ok(arrow::compute::interleave_record_batch(&refs, &indices)?)
}

/// Gathers the rows that `at` points to into batches of at most `batch_size` rows, and points
/// each entry of `at` at its new place (batch, row) in them.
fn gather(
    batches: &[RecordBatch],
    at: &mut [(u32, u32)],
    batch_size: usize,
) -> DfResult<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for (b, chunk) in at.chunks_mut(batch_size.max(1)).enumerate() {
        out.push(interleave(batches, chunk)?);
        for (r, place) in chunk.iter_mut().enumerate() {
            *place = (b as u32, r as u32);
        }
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
        session_with(rule, None)
    }

    /// A session with the rule or not, and a memory pool of `limit` bytes (`None`: unbounded).
    fn session_with(rule: bool, limit: Option<usize>) -> SessionContext {
        let mut runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new();
        if let Some(limit) = limit {
            runtime = runtime.with_memory_pool(Arc::new(
                datafusion::execution::memory_pool::FairSpillPool::new(limit),
            ));
        }
        let mut builder = SessionStateBuilder::new()
            .with_runtime_env(runtime.build_arc().unwrap())
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

    /// Under a memory pool far smaller than its input, the operator spills (to buckets, and
    /// buckets of buckets) and still gives exactly the window's rows.
    #[tokio::test]
    async fn spilling_gives_the_same_rows_as_the_window() {
        let batches = data(23, 20_000);
        let sql = "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k, k2, o ORDER BY payload DESC) AS rn FROM t) WHERE rn = 1";
        let ctx = session(false);
        register(&ctx, &batches);
        let (window, _) = run(&ctx, sql).await;
        for limit in [256 * 1024, 48 * 1024, 12 * 1024] {
            let ctx = session_with(true, Some(limit));
            register(&ctx, &batches);
            let df = ctx.sql(sql).await.unwrap();
            let physical = df.create_physical_plan().await.unwrap();
            let out = datafusion::physical_plan::collect(physical.clone(), ctx.task_ctx())
                .await
                .unwrap();
            let mut exec = physical.clone();
            while exec.name() != "LatestPerKeyExec" {
                exec = exec.children()[0].clone();
            }
            let spilled = exec.metrics().and_then(|m| m.spill_count()).unwrap_or(0);
            assert!(spilled > 0, "limit {limit}: no spill");
            if limit == 12 * 1024 {
                // More files than one level of 3 partitions makes: buckets were split again.
                assert!(spilled > 3 * SPILL_FANOUT, "{spilled} files");
            }
            let ctx2 = session(false);
            ctx2.register_batch(
                "w",
                arrow::compute::concat_batches(&out[0].schema(), &out).unwrap(),
            )
            .unwrap();
            let (rows, _) = run(&ctx2, "SELECT * FROM w").await;
            assert_eq!(rows.len(), window.len(), "limit {limit}");
            assert_eq!(rows, window, "limit {limit}");
        }
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
