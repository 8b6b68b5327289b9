//! A tee on a plan's output: [`observe`] wraps a DataFrame so that every batch it produces is
//! shown to a [`BatchObserver`] on its way to the consumer (the table writer), which lets the
//! profiler accumulate from the rows being written instead of reading the table back.
//!
//! The [`Observe`] logical node passes its input through unchanged (same schema, partitioning
//! and order); [`ObserveExec`] calls the observer on each batch of each partition, in the
//! partition's task. An observer error fails the stream, and with it the write, before commit.

use std::any::Any;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use datafusion::common::{DFSchemaRef, Result as DfResult};
use datafusion::execution::context::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use datafusion::physical_planner::{ExtensionPlanner, PhysicalPlanner};
use datafusion::prelude::DataFrame;
use futures::StreamExt;

/// Sees every batch of an observed plan.
pub trait BatchObserver: Send + Sync + fmt::Debug {
    /// Called once per batch, from the task of the batch's partition (possibly concurrently);
    /// an error fails the plan's execution.
    fn observe(&self, batch: &RecordBatch) -> DfResult<()>;
}

/// `df`, with every batch it produces shown to `observer`.
pub fn observe(df: DataFrame, observer: Arc<dyn BatchObserver>) -> DataFrame {
    let (state, plan) = df.into_parts();
    let node = Observe {
        input: plan,
        observer: ObserverRef(observer),
    };
    DataFrame::new(
        state,
        LogicalPlan::Extension(Extension {
            node: Arc::new(node),
        }),
    )
}

/// An observer, compared and hashed by identity (logical nodes must be `Eq` and `Hash`).
#[derive(Debug, Clone)]
struct ObserverRef(Arc<dyn BatchObserver>);

impl PartialEq for ObserverRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ObserverRef {}

impl Hash for ObserverRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.0) as *const () as usize).hash(state);
    }
}

impl PartialOrd for ObserverRef {
    fn partial_cmp(&self, _other: &Self) -> Option<std::cmp::Ordering> {
        None
    }
}

/// Logical node: its input, observed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct Observe {
    input: LogicalPlan,
    observer: ObserverRef,
}

impl UserDefinedLogicalNodeCore for Observe {
    fn name(&self) -> &str {
        "Observe"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Observe")
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> DfResult<Self> {
        let input = inputs.into_iter().next().ok_or_else(|| {
            datafusion::error::DataFusionError::Internal("Observe needs one input".into())
        })?;
        Ok(Observe {
            input,
            observer: self.observer.clone(),
        })
    }
}

/// Plans [`Observe`] as [`ObserveExec`].
pub(crate) struct ObservePlanner;

#[async_trait]
impl ExtensionPlanner for ObservePlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session_state: &SessionState,
    ) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<Observe>() else {
            return Ok(None);
        };
        let Some(input) = physical_inputs.first() else {
            return Ok(None);
        };
        Ok(Some(Arc::new(ObserveExec::new(
            input.clone(),
            node.observer.0.clone(),
        ))))
    }
}

/// Physical operator of [`Observe`]: passes each partition's batches through, showing each to the
/// observer.
#[derive(Debug)]
pub struct ObserveExec {
    input: Arc<dyn ExecutionPlan>,
    observer: Arc<dyn BatchObserver>,
    properties: Arc<PlanProperties>,
}

impl ObserveExec {
    fn new(input: Arc<dyn ExecutionPlan>, observer: Arc<dyn BatchObserver>) -> Self {
        let properties = Arc::new(PlanProperties::new(
            input.equivalence_properties().clone(),
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        ));
        ObserveExec {
            input,
            observer,
            properties,
        }
    }
}

impl DisplayAs for ObserveExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ObserveExec")
    }
}

impl ExecutionPlan for ObserveExec {
    fn name(&self) -> &str {
        "ObserveExec"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
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
            datafusion::error::DataFusionError::Internal("ObserveExec needs one input".into())
        })?;
        Ok(Arc::new(ObserveExec::new(input, self.observer.clone())))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let observer = self.observer.clone();
        let out = input.map(move |batch| {
            let batch = batch?;
            observer.observe(&batch)?;
            Ok(batch)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema(), out)))
    }
}
