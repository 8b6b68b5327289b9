//! `smelter cluster scheduler|executor`: an Apache DataFusion Ballista scheduler and executor
//! embedded in the smelter binary, so one binary is deployed for runs and for the cluster they
//! run on (`[engine] mode = "ballista"`, see [`crate::engine::ballista`] and
//! `docs/distributed.md`).
//!
//! Both processes plan or execute with the engine's session rules
//! ([`crate::engine::cluster_state`]) and reach the lake through [`LakeStores`]: local files,
//! and S3 or Azure with credentials and endpoints from their own environment (`AWS_*`,
//! `AZURE_*`), as the stock Ballista executors cannot (they know local, S3 and HTTP only).

use std::net::SocketAddr;
use std::sync::Arc;

use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionConfig;
use object_store::ObjectStore;
use url::Url;

use crate::error::{Error, Result};

/// Settings of `smelter cluster scheduler`.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Address to listen on (gRPC for clients and executors).
    pub bind: SocketAddr,
    /// Seconds without a heartbeat after which an executor counts as lost and its tasks are
    /// scheduled again elsewhere.
    pub executor_timeout_seconds: u64,
}

/// Settings of `smelter cluster executor`.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler's `host:port`.
    pub scheduler: (String, u16),
    /// Address of the executor's Arrow Flight service (shuffle data); its gRPC service listens
    /// on the next port.
    pub bind: SocketAddr,
    /// Tasks run at once (default: the cores).
    pub slots: usize,
    /// Directory for shuffle files and spills (default: a new temporary directory).
    pub work_dir: Option<String>,
    /// Memory for the executor's tasks in bytes, split evenly between its slots (default: no
    /// limit).
    pub memory_limit: Option<u64>,
    /// Seconds between heartbeats to the scheduler.
    pub heartbeat_seconds: u64,
}

/// Runs a Ballista scheduler until the process is stopped.
///
/// Errors: the address cannot be bound, or the server fails ([`Error::Cluster`], not
/// retryable).
pub async fn scheduler(opts: SchedulerOptions) -> Result<()> {
    let stores = Arc::new(LakeStores::default());
    let mut config = SchedulerConfig::default()
        .with_hostname(opts.bind.ip().to_string())
        .with_port(opts.bind.port())
        .with_override_config_producer(Arc::new(cluster_config))
        .with_override_session_builder(Arc::new(move |config: SessionConfig| {
            let runtime = RuntimeEnvBuilder::new()
                .with_object_store_registry(stores.clone())
                .build_arc()?;
            Ok(crate::engine::cluster_state(config, runtime, true))
        }));
    config.bind_host = opts.bind.ip().to_string();
    config.override_logical_codec = Some(Arc::new(crate::engine::codec::LogicalCodec::default()));
    config.override_physical_codec = Some(Arc::new(crate::engine::codec::PhysicalCodec::default()));
    config.executor_timeout_seconds = opts.executor_timeout_seconds;
    config.expire_dead_executor_interval_seconds = opts.executor_timeout_seconds.clamp(1, 15);
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| failed(&opts.bind.to_string(), e))?;
    tracing::info!(bind = %opts.bind, "Ballista scheduler listening.");
    start_server(cluster, opts.bind, Arc::new(config))
        .await
        .map_err(|e| failed(&opts.bind.to_string(), e))
}

/// Runs a Ballista executor registered with the scheduler until the process is stopped.
///
/// Errors: the scheduler cannot be reached, or the addresses cannot be bound
/// ([`Error::Cluster`]: retryable when the scheduler is unreachable).
pub async fn executor(opts: ExecutorOptions) -> Result<()> {
    // A work directory that cannot hold files would fail every task the scheduler sends, and
    // the scheduler would keep handing them back: refuse to start instead (exit 2).
    if let Some(dir) = &opts.work_dir {
        usable_dir(std::path::Path::new(dir)).map_err(|e| {
            Error::Usage(format!("--work-dir {dir}: cannot hold shuffle files: {e}"))
        })?;
    }
    let stores = Arc::new(LakeStores::default());
    let work_dir = opts.work_dir.clone();
    let config = ExecutorProcessConfig {
        bind_host: opts.bind.ip().to_string(),
        external_host: Some(opts.bind.ip().to_string()),
        port: opts.bind.port(),
        grpc_port: opts.bind.port().checked_add(1).ok_or_else(|| {
            Error::Usage(format!(
                "--bind {}: the executor also needs the next port for its gRPC service",
                opts.bind
            ))
        })?,
        scheduler_host: opts.scheduler.0.clone(),
        scheduler_port: opts.scheduler.1,
        scheduler_connect_timeout_seconds: 30,
        concurrent_tasks: opts.slots,
        work_dir: opts.work_dir.clone(),
        memory_pool_size: opts.memory_limit,
        executor_heartbeat_interval_seconds: opts.heartbeat_seconds,
        print_thread_info: false,
        override_config_producer: Some(Arc::new(cluster_config)),
        override_logical_codec: Some(Arc::new(crate::engine::codec::LogicalCodec::default())),
        override_physical_codec: Some(Arc::new(crate::engine::codec::PhysicalCodec::default())),
        override_runtime_producer: Some(Arc::new(move |_: &SessionConfig| {
            let mut runtime = RuntimeEnvBuilder::new().with_object_store_registry(stores.clone());
            if let Some(dir) = &work_dir {
                runtime = runtime.with_temp_file_path(dir.clone());
            }
            runtime.build_arc()
        })),
        ..Default::default()
    };
    let scheduler = format!("{}:{}", opts.scheduler.0, opts.scheduler.1);
    tracing::info!(bind = %opts.bind, scheduler = %scheduler, slots = opts.slots, "Ballista executor starting.");
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| Error::Cluster {
            url: format!("df://{scheduler}"),
            message: format!("executor at {} stopped: {e}", opts.bind),
            retryable: true,
        })
}

/// Creates `dir` if needed and checks a file can be written in it.
fn usable_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    tempfile::tempfile_in(dir).map(drop)
}

/// The session configuration jobs start from on the cluster: Ballista's, with the engine's
/// choices the client does not send (a job's own settings are applied on top of it).
fn cluster_config() -> SessionConfig {
    use ballista::prelude::SessionConfigExt;
    let mut config = crate::engine::cluster_config(SessionConfig::new_with_ballista());
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    config
}

fn failed(bind: &str, e: impl std::fmt::Display) -> Error {
    Error::Cluster {
        url: format!("df://{bind}"),
        message: format!("scheduler stopped: {e}"),
        retryable: false,
    }
}

/// The object stores of a cluster process: DataFusion's registry, which serves local files and
/// every store registered in it, plus a store per bucket or container built on first use from the
/// URL and the process's environment ([`crate::storage::store_from_env`]), then kept there.
#[derive(Debug, Default)]
pub struct LakeStores {
    registry: DefaultObjectStoreRegistry,
}

impl ObjectStoreRegistry for LakeStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.registry.register_store(url, store)
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.registry.get_store(url) {
            return Ok(store);
        }
        let store = match crate::storage::store_from_env(url) {
            Some(Ok(store)) => store,
            Some(Err(e)) => {
                return Err(datafusion::error::DataFusionError::ObjectStore(Box::new(e)))
            }
            None => {
                return Err(datafusion::error::DataFusionError::Configuration(format!(
                "no object store for {}: the cluster reads local, s3:// and az:// / abfss:// lakes",
                crate::storage::redact(url)
            )))
            }
        };
        self.registry.register_store(url, store.clone());
        Ok(store)
    }
}
