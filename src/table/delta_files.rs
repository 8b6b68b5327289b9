//! Delta data files written where a plan executes, committed later by reference.
//!
//! On a Ballista cluster (`[engine] mode = "ballista"`) a model's result is not sent to the
//! driver: each executor task writes the rows of its partition as Parquet data files into a
//! staging directory of the table ([`WriteFiles`] → [`WriteFilesExec`], with delta-rs's own
//! writer, so the files, their names and their statistics are those delta-rs writes), and
//! returns one row per file: its Delta `add` action as JSON (Delta protocol, "Add File and
//! Remove File"). The driver reads the staged files for its checks and commits those actions
//! ([`super::TableFormat::write`] with [`super::StagedFiles`]): a job that fails or is
//! killed commits nothing, and a task Ballista ran twice adds only the files of the attempt
//! whose actions reached the driver.

use std::any::Any;
use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;

use arrow::array::StringArray;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    Expr, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use datafusion::physical_planner::{ExtensionPlanner, PhysicalPlanner};
use deltalake::operations::write::writer::{DeltaWriter, WriterConfig};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::config::Compression;

/// The one column of [`WriteFiles`]' output: a Delta `add` action as JSON.
pub const ADD_COLUMN: &str = "add";

/// Where and how [`WriteFilesExec`] writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Serialize, Deserialize)]
pub struct FilesSpec {
    /// The table's URL, a directory (`file:///…/`, `s3://bucket/…/`, `az://…/`).
    pub table: String,
    /// The staging directory under the table the files go to: one path segment, e.g.
    /// `staged-<uuid>`. Its name does not start with `_` or `.`, so once committed the files
    /// are data files like any other (Delta's vacuum skips hidden directories).
    pub dir: String,
    /// Parquet compression.
    pub compression: Compression,
    /// Bytes after which a task starts a new file (`[format] target_file_size`).
    pub target_file_size: u64,
}

/// Logical node: writes `input`'s rows as Delta data files per [`FilesSpec`], one output row
/// (column [`ADD_COLUMN`]) per file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WriteFiles {
    input: LogicalPlan,
    spec: FilesSpec,
    schema: DFSchemaRef,
}

/// By input, then settings (the output schema is the same for every node).
impl PartialOrd for WriteFiles {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        match self.input.partial_cmp(&other.input) {
            Some(std::cmp::Ordering::Equal) => self.spec.partial_cmp(&other.spec),
            order => order,
        }
    }
}

impl WriteFiles {
    /// The node writing `input`'s rows per `spec`.
    ///
    /// Errors: none in practice (the output schema is fixed).
    pub fn new(input: LogicalPlan, spec: FilesSpec) -> DfResult<Self> {
        let schema = Arc::new(DFSchema::try_from(output_schema().as_ref().clone())?);
        Ok(WriteFiles {
            input,
            spec,
            schema,
        })
    }

    /// The write's settings.
    pub fn spec(&self) -> &FilesSpec {
        &self.spec
    }
}

fn output_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        ADD_COLUMN,
        DataType::Utf8,
        false,
    )]))
}

impl UserDefinedLogicalNodeCore for WriteFiles {
    fn name(&self) -> &str {
        "WriteDeltaFiles"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "WriteDeltaFiles: dir={}", self.spec.dir)
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> DfResult<Self> {
        let input = inputs
            .into_iter()
            .next()
            .ok_or_else(|| DataFusionError::Internal("WriteDeltaFiles needs one input".into()))?;
        Ok(WriteFiles {
            input,
            ..self.clone()
        })
    }
}

/// Plans [`WriteFiles`] as [`WriteFilesExec`].
#[derive(Debug)]
pub struct WriteFilesPlanner;

#[async_trait]
impl ExtensionPlanner for WriteFilesPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session_state: &SessionState,
    ) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<WriteFiles>() else {
            return Ok(None);
        };
        let Some(input) = physical_inputs.first() else {
            return Ok(None);
        };
        Ok(Some(Arc::new(WriteFilesExec::new(
            input.clone(),
            node.spec.clone(),
        ))))
    }
}

/// Physical node of [`WriteFiles`]: each partition writes its input partition's rows with
/// delta-rs's [`DeltaWriter`] (files of about [`FilesSpec::target_file_size`], with Delta
/// statistics of the first 32 columns, delta-rs's default) and emits one batch holding the
/// `add` action of each file it wrote, its path relative to the table.
#[derive(Debug)]
pub struct WriteFilesExec {
    input: Arc<dyn ExecutionPlan>,
    spec: FilesSpec,
    properties: Arc<PlanProperties>,
}

impl WriteFilesExec {
    /// Writes `input`'s partitions per `spec`.
    pub fn new(input: Arc<dyn ExecutionPlan>, spec: FilesSpec) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(output_schema()),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        WriteFilesExec {
            input,
            spec,
            properties,
        }
    }

    /// The write's settings.
    pub fn spec(&self) -> &FilesSpec {
        &self.spec
    }
}

impl DisplayAs for WriteFilesExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "WriteDeltaFilesExec: dir={}", self.spec.dir)
    }
}

impl ExecutionPlan for WriteFilesExec {
    fn name(&self) -> &str {
        "WriteDeltaFilesExec"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = children.into_iter().next().ok_or_else(|| {
            DataFusionError::Internal("WriteDeltaFilesExec needs one input".into())
        })?;
        Ok(Arc::new(WriteFilesExec::new(input, self.spec.clone())))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let mut input = self.input.execute(partition, context.clone())?;
        let spec = self.spec.clone();
        let file_schema = self.input.schema();
        let out = output_schema();
        let schema = out.clone();
        let write = async move {
            let url = url::Url::parse(&spec.table)
                .map_err(|e| DataFusionError::Configuration(format!("table URL: {e}")))?;
            let store = context.runtime_env().object_store(
                crate::engine::ballista::store_url(&url)
                    .map_err(|e| DataFusionError::Configuration(e.to_string()))?,
            )?;
            let (_, root) = object_store::ObjectStoreScheme::parse(&url)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let dir = root.join(spec.dir.as_str());
            let store: Arc<dyn object_store::ObjectStore> =
                Arc::new(object_store::prefix::PrefixStore::new(store, dir));
            let config = WriterConfig::new(
                file_schema,
                Vec::new(),
                Some(super::delta::writer_properties(spec.compression)),
                NonZeroU64::new(spec.target_file_size),
                None,
                Default::default(),
                None,
            );
            let mut writer = DeltaWriter::new(store, config);
            while let Some(batch) = input.next().await {
                writer.write(&batch?).await.map_err(delta_error)?;
            }
            let adds = writer.close().await.map_err(delta_error)?;
            let actions = adds
                .into_iter()
                .map(|mut add| {
                    add.path = format!("{}/{}", spec.dir, add.path);
                    serde_json::to_string(&add)
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            Ok(RecordBatch::try_new(
                out,
                vec![Arc::new(StringArray::from(actions))],
            )?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::once(write),
        )))
    }
}

/// delta-rs's error as DataFusion's: its I/O faults keep their object-store kind.
fn delta_error(e: deltalake::DeltaTableError) -> DataFusionError {
    match e {
        deltalake::DeltaTableError::ObjectStore { source } => {
            DataFusionError::ObjectStore(Box::new(source))
        }
        e => DataFusionError::External(Box::new(e)),
    }
}

/// The Delta `add` actions of the output of a [`WriteFiles`] job (one JSON text per row of
/// [`ADD_COLUMN`]).
///
/// Errors: a row that is not an `add` action (a bug: [`crate::error::Error::Internal`]).
pub fn actions(batches: &[RecordBatch]) -> crate::error::Result<Vec<deltalake::kernel::Add>> {
    use arrow::array::AsArray;
    let mut adds = Vec::new();
    for batch in batches {
        let Some(column) = batch.column_by_name(ADD_COLUMN) else {
            continue;
        };
        for text in column.as_string::<i32>().iter().flatten() {
            adds.push(serde_json::from_str(text).map_err(|e| {
                crate::error::Error::Internal(format!("a staged file's add action: {e}"))
            })?);
        }
    }
    Ok(adds)
}
