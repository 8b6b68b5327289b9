//! Builds the DataFusion `SessionContext` every layer runs in: memory pool with spilling, target
//! partitions, the lake's object store, and one schema per table layer (`bronze`, `silver`, `gold`).

use std::sync::Arc;

use datafusion::catalog::MemorySchemaProvider;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use deltalake::delta_datafusion::planner::DeltaPlanner;

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
    // delta-rs operations (write, merge) plan custom nodes that need its query planner.
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(runtime.build_arc()?)
        .with_query_planner(DeltaPlanner::new())
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
