//! Builds the DataFusion `SessionContext` every layer runs in: memory pool with spilling, target
//! partitions, the lake's object store, and one schema per table layer (`bronze`, `silver`, `gold`).

use std::sync::Arc;

use datafusion::catalog::MemorySchemaProvider;
use datafusion::datasource::file_format::options::ArrowReadOptions;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};

pub mod dedup;
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
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(limit) = pipeline.engine.memory_limit {
        runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(limit)));
    }
    // delta-rs operations (write, merge) plan custom nodes that need its extension planner;
    // the latest-row-per-key deduplication has its own (see `dedup`).
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(runtime.build_arc()?)
        .with_query_planner(Arc::new(dedup::Planner))
        .with_optimizer_rule(Arc::new(dedup::LatestPerKeyRule))
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
    use futures::StreamExt;
    let dir = tempfile::Builder::new()
        .prefix("smelter-stage-")
        .tempdir()?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let streams = df.execute_stream_partitioned().await?;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut stream) in streams.into_iter().enumerate() {
        let path = dir.path().join(format!("part-{i:05}.arrow"));
        let schema = schema.clone();
        tasks.spawn(async move {
            let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
            let mut writer = arrow::ipc::writer::FileWriter::try_new(file, &schema)?;
            while let Some(batch) = stream.next().await {
                writer.write(&batch?)?;
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
