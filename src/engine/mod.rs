//! Builds the DataFusion `SessionContext` every layer runs in: memory pool with spilling, target
//! partitions, the lake's object store, and one schema per table layer (`bronze`, `silver`, `gold`).

use std::sync::Arc;

use datafusion::catalog::MemorySchemaProvider;
use datafusion::datasource::file_format::options::ArrowReadOptions;
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};

pub mod ballista;
pub mod codec;
pub mod dedup;
pub mod filter_nulls;
pub mod float_min_max;
pub mod float_stats;
pub mod observe;

use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::plan::Layer;
use crate::storage::Lake;

/// Creates the session for a pipeline run.
pub fn session(pipeline: &Pipeline, lake: Option<&Lake>) -> Result<SessionContext> {
    let mut config = SessionConfig::new()
        .with_target_partitions(pipeline.engine.target_partitions)
        .with_information_schema(true);
    config.options_mut().sql_parser.collect_spans = true;
    // Strings are read as Utf8, not Utf8View. A hash aggregation that spills sorts its state
    // into slices (`take`) that share the view arrays' data buffers, and the spill's IPC writer
    // writes every buffer for every slice (see `compact_views`): the demo's `SELECT DISTINCT`
    // over 3.3M events, spilling under a shared memory pool, wrote 7 GB instead of about 0.3 GB
    // and took 28 s instead of 11 s. Utf8 slices are written compactly; measured on the demo's
    // silver layer at SF5, reading Utf8 costs no time (20.4-20.8 s either way).
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(limit) = pipeline.engine.memory_limit {
        // Tracked: a query that runs out of memory names the five largest consumers.
        runtime = runtime.with_memory_pool(Arc::new(TrackConsumersPool::new(
            FairSpillPool::new(limit),
            std::num::NonZeroUsize::new(5).expect("five is not zero"),
        )));
    }
    // delta-rs operations (write, merge) plan custom nodes that need its extension planner;
    // the latest-row-per-key deduplication has its own (see `dedup`).
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(runtime.build_arc()?)
        .with_query_planner(Arc::new(dedup::Planner))
        .with_optimizer_rule(Arc::new(dedup::LatestPerKeyRule))
        .with_optimizer_rule(Arc::new(filter_nulls::FilterNulls))
        .with_physical_optimizer_rule(Arc::new(float_stats::FloatStats))
        .with_aggregate_functions(aggregate_functions())
        .build();
    let ctx = SessionContext::new_with_state(state);
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| Error::Internal("default catalog missing".into()))?;
    for layer in Layer::TABLE_LAYERS {
        catalog.register_schema(layer.as_str(), Arc::new(MemorySchemaProvider::new()))?;
    }
    if let Some(lake) = lake {
        lake.register(&ctx);
    }
    Ok(ctx)
}

/// The session state a query runs in on a Ballista cluster, built alike by the driver (before
/// Ballista turns it into a client), the scheduler (which plans the job's stages) and the
/// executors' functions: DataFusion's defaults with `config` and `runtime`, plus the engine's
/// rules and functions that fix DataFusion faults ([`filter_nulls::FilterNulls`],
/// [`float_stats::FloatStats`], [`float_min_max::udafs`]).
/// It also knows the profile's functions ([`crate::profile::sketch::functions`]) and plans
/// the nodes [`codec`] ships ([`crate::table::delta_files::WriteFiles`], [`dedup`]'s
/// operator); `config` carries Ballista's codecs ([`cluster_config`]).
/// `scheduler`: the state plans jobs, so it also rewrites the latest row per key into
/// [`dedup`]'s operator; the driver's client leaves that to the scheduler (the logical node
/// would have to be sent), so its plans keep the window.
pub fn cluster_state(
    config: SessionConfig,
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    scheduler: bool,
) -> datafusion::execution::SessionState {
    use datafusion::execution::FunctionRegistry;
    let mut builder = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_query_planner(Arc::new(ClusterPlanner));
    if scheduler {
        builder = builder.with_optimizer_rule(Arc::new(dedup::LatestPerKeyRule));
    }
    let mut state = builder
        .with_optimizer_rule(Arc::new(filter_nulls::FilterNulls))
        .with_physical_optimizer_rule(Arc::new(float_stats::FloatStats))
        .with_aggregate_functions(aggregate_functions())
        .build();
    let (quantiles, distinct_key) = crate::profile::sketch::functions();
    // Registering a new name replaces nothing; an error here would be a bug in the names.
    let _ = state.register_udaf(quantiles);
    let _ = state.register_udf(distinct_key);
    state
}

/// `config` with Smelter's codecs for Ballista ([`codec`]): every cluster process and the
/// driver's client must encode and decode Smelter's plan nodes alike.
pub fn cluster_config(config: SessionConfig) -> SessionConfig {
    use ::ballista::prelude::SessionConfigExt;
    config
        .with_ballista_logical_extension_codec(Arc::new(codec::LogicalCodec::default()))
        .with_ballista_physical_extension_codec(Arc::new(codec::PhysicalCodec::default()))
}

/// The physical planner of [`cluster_state`]: DataFusion's, plus the nodes Smelter ships to
/// executors.
#[derive(Debug)]
struct ClusterPlanner;

#[async_trait::async_trait]
impl datafusion::execution::context::QueryPlanner for ClusterPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &datafusion::logical_expr::LogicalPlan,
        session_state: &datafusion::execution::SessionState,
    ) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        use datafusion::physical_planner::PhysicalPlanner;
        datafusion::physical_planner::DefaultPhysicalPlanner::with_extension_planners(vec![
            Arc::new(crate::table::delta_files::WriteFilesPlanner),
            Arc::new(dedup::LatestPerKeyPlanner),
        ])
        .create_physical_plan(logical_plan, session_state)
        .await
    }
}

/// DataFusion's aggregate functions, with `min` and `max` replaced by [`float_min_max::udafs`].
fn aggregate_functions() -> Vec<Arc<datafusion::logical_expr::AggregateUDF>> {
    let fixed = float_min_max::udafs().map(Arc::new);
    datafusion::functions_aggregate::all_default_aggregate_functions()
        .into_iter()
        .map(|f| {
            fixed
                .iter()
                .find(|g| g.name() == f.name())
                .cloned()
                .unwrap_or(f)
        })
        .collect()
}

/// A query result materialized once in local temporary files (see [`stage`]), readable as a
/// DataFrame for as long as this value lives; the files are deleted when it is dropped.
pub struct Staged {
    /// The staged rows: a scan of the files, with the query's columns (unqualified) and types.
    pub df: DataFrame,
    _dir: tempfile::TempDir,
}

/// Executes `df` once and stores its result as Arrow IPC files (one per output partition,
/// written concurrently, uncompressed) in a new directory under the system temporary directory
/// (`TMPDIR`), then returns a scan of them. A model whose rows must be checked before they are
/// committed (expectations, merge keys) is staged, so its query runs once: the checks, the
/// quarantine split and the write all read the staged files instead of recomputing the query.
/// Memory stays bounded (batches stream to disk); the cost is one local write and read of the
/// output.
///
/// Errors: whatever executing `df` raises, and I/O errors writing the files.
pub async fn stage(ctx: &SessionContext, df: DataFrame) -> Result<Staged> {
    let task = Arc::new(df.task_ctx());
    let schema = Arc::new(df.schema().as_arrow().clone());
    let plan = df.create_physical_plan().await?;
    stage_plan(ctx, schema, plan, task).await
}

/// [`stage`] for a physical plan already made (`schema` is the result's, with the logical
/// plan's column names), executed in `task`.
///
/// Errors: as [`stage`].
pub async fn stage_plan(
    ctx: &SessionContext,
    schema: arrow::datatypes::SchemaRef,
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    task: Arc<datafusion::execution::TaskContext>,
) -> Result<Staged> {
    use futures::StreamExt;
    let dir = tempfile::Builder::new()
        .prefix("smelter-stage-")
        .tempdir()?;
    // LZ4 frames: a third to a half of the bytes of uncompressed IPC for typical silver rows, at
    // a cost far below the kernel's copy of the bytes it saves (see docs/performance.md).
    let options = arrow::ipc::writer::IpcWriteOptions::default()
        .try_with_compression(Some(arrow::ipc::CompressionType::LZ4_FRAME))?;
    let streams = datafusion::physical_plan::execute_stream_partitioned(plan, task)?;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut stream) in streams.into_iter().enumerate() {
        let path = dir.path().join(format!("part-{i:05}.arrow"));
        let (schema, options) = (schema.clone(), options.clone());
        tasks.spawn(async move {
            let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
            let mut writer =
                arrow::ipc::writer::FileWriter::try_new_with_options(file, &schema, options)?;
            while let Some(batch) = stream.next().await {
                writer.write(&compact_views(batch?)?)?;
            }
            writer.finish()?;
            Ok::<(), Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| Error::Internal(format!("staging task failed: {e}")))??;
    }
    let path = dir
        .path()
        .to_str()
        .ok_or_else(|| Error::Internal("temporary directory path is not UTF-8".into()))?
        .to_string();
    let df = ctx
        .read_arrow(path, ArrowReadOptions::default().schema(&schema))
        .await?;
    Ok(Staged { df, _dir: dir })
}

/// `batch` with every `Utf8View`/`BinaryView` column that holds more data buffer bytes than its
/// views reference copied into compact buffers ([`GenericByteViewArray::gc`]); other columns
/// are shared, not copied.
///
/// Why: a view array sliced from a larger one (an aggregation emits its result as one batch and
/// slices it) keeps every data buffer of the original, and the IPC writer serializes them all
/// for each slice (arrow-ipc's `write_array_data` leaves compaction to the caller, see
/// apache/arrow-rs#5513): staging a 3.3M-row result without this wrote 12 GB instead of about
/// 0.3 GB. A column is compacted when its buffers exceed twice the bytes its views reference.
///
/// [`GenericByteViewArray::gc`]: arrow::array::GenericByteViewArray::gc
fn compact_views(
    batch: arrow::record_batch::RecordBatch,
) -> Result<arrow::record_batch::RecordBatch> {
    use arrow::array::{Array, ArrayRef, AsArray, GenericByteViewArray};
    use arrow::datatypes::{BinaryViewType, ByteViewType, DataType, StringViewType};
    fn compacted<T: ByteViewType + ?Sized>(a: &GenericByteViewArray<T>) -> Option<ArrayRef> {
        let held: usize = a.data_buffers().iter().map(|b| b.len()).sum();
        // Views of up to 12 bytes are inline; longer ones reference the data buffers.
        let referenced: usize = a
            .views()
            .iter()
            .map(|v| *v as u32 as usize)
            .filter(|&len| len > 12)
            .sum();
        (held > 2 * referenced + 4096).then(|| Arc::new(a.gc()) as ArrayRef)
    }
    let mut changed = false;
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| {
            let new = match c.data_type() {
                DataType::Utf8View => compacted::<StringViewType>(c.as_string_view()),
                DataType::BinaryView => compacted::<BinaryViewType>(c.as_binary_view()),
                _ => None,
            };
            changed |= new.is_some();
            new.unwrap_or_else(|| c.clone())
        })
        .collect();
    if !changed {
        return Ok(batch);
    }
    Ok(arrow::record_batch::RecordBatch::try_new_with_options(
        batch.schema(),
        columns,
        &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

/// The value of column `name` in the first row of an aggregate's result, as a count: 0 when
/// the result is empty, the column is missing or the value is NULL (a SUM over no rows).
pub fn first_count(batches: &[arrow::record_batch::RecordBatch], name: &str) -> u64 {
    use arrow::array::Array;
    batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .and_then(|b| b.column_by_name(name))
        .and_then(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Int64).ok())
        .and_then(|c| {
            c.as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .filter(|a| !a.is_null(0))
                .map(|a| a.value(0).max(0) as u64)
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, StringViewArray};
    use arrow::record_batch::RecordBatch;

    /// Bytes the IPC file writer produces for `batch`.
    fn ipc_bytes(batch: &RecordBatch) -> usize {
        let mut out = Vec::new();
        let mut w = arrow::ipc::writer::FileWriter::try_new(&mut out, &batch.schema()).unwrap();
        w.write(batch).unwrap();
        w.finish().unwrap();
        drop(w);
        out.len()
    }

    #[test]
    fn sliced_view_columns_are_compacted_before_staging() {
        let values: Vec<String> = (0..10_000)
            .map(|i| format!("a value long enough not to be inlined #{i:06}"))
            .collect();
        let array = StringViewArray::from_iter_values(values.iter());
        let batch = RecordBatch::try_from_iter([("s", Arc::new(array) as _)]).unwrap();
        let slice = batch.slice(100, 10);
        let compact = compact_views(slice.clone()).unwrap();
        // Same values, a fraction of the bytes.
        assert_eq!(compact.num_rows(), 10);
        let (a, b) = (
            slice.column(0).as_string_view(),
            compact.column(0).as_string_view(),
        );
        assert!((0..10).all(|i| a.value(i) == b.value(i)));
        assert!(ipc_bytes(&slice) > 400_000, "{}", ipc_bytes(&slice));
        assert!(ipc_bytes(&compact) < 4_000, "{}", ipc_bytes(&compact));
        // A batch that references its whole buffers is returned as it is.
        let whole = compact_views(batch.clone()).unwrap();
        assert_eq!(
            whole.column(0).to_data().buffers()[1].as_ptr(),
            batch.column(0).to_data().buffers()[1].as_ptr()
        );
    }
}
