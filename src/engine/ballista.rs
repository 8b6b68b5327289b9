//! The driver side of `[engine] mode = "ballista"`: a model's query is planned in this process
//! and executed on an Apache DataFusion Ballista cluster (`smelter cluster`, see
//! `docs/distributed.md`); its result comes back here, where the checks, merges and the commit
//! run as in local mode.
//!
//! Executors cannot run the table formats' own scans (delta-rs has no physical codec for its
//! scan, delta-io/delta-rs#4171), so in this mode every lake table a model reads is registered
//! as a plain Parquet [`ListingTable`] of its current version's files
//! ([`crate::table::TableFormat::snapshot_files`]), which Ballista ships as it is.
//!
//! Failures: a scheduler that cannot be reached, and a job that failed because the cluster lost
//! an executor or a shuffle fetch, are [`Error::Cluster`] (exit 75, retryable); an error the
//! query itself raised on the data keeps its kind (exit 2 in a model).

use std::sync::Arc;
use std::time::Duration;

use ballista::extension::SessionContextExt;
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::prelude::{DataFrame, SessionContext};

use crate::error::{Error, Result};
use crate::table::SnapshotFiles;

/// How long connecting to the scheduler may take before the run gives up (exit 75).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a Ballista scheduler: a client session whose queries run on the cluster.
pub struct Cluster {
    url: String,
    remote: SessionContext,
    job_timeout: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("url", &self.url).finish()
    }
}

impl Cluster {
    /// Connects to the scheduler at `url` (`df://host:port`), with the settings of `local` (the
    /// run's session: target partitions, memory settings, Parquet options travel with each
    /// job).
    ///
    /// Errors: [`Error::Cluster`], retryable, when no TCP connection to the scheduler opens
    /// within 10 s (it names the URL); a malformed URL is a config error caught earlier.
    pub async fn connect(
        url: &str,
        local: &SessionContext,
        job_timeout: Duration,
    ) -> Result<Cluster> {
        let (host, port) = crate::config::scheduler_address(url).map_err(|m| Error::Cluster {
            url: url.to_string(),
            message: m,
            retryable: false,
        })?;
        let unreachable = |why: String| {
            Error::Cluster {
            url: url.to_string(),
            message: format!(
                "cannot reach the Ballista scheduler: {why}; start it (`smelter cluster scheduler`) or point `engine.scheduler` / SMELTER_SCHEDULER at it"
            ),
            retryable: true,
        }
        };
        match tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"))),
        }
        let state = super::cluster_state(
            super::cluster_config(local.state().config().clone()),
            local.runtime_env(),
            false,
        );
        let remote = SessionContext::remote_with_state(url, state)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        {
            // Ballista plans sort-merge joins by default, which shuffle and sort both sides;
            // hash joins are several times faster on the demo's silver joins. Promoting a small
            // side to a broadcast stays off: Ballista does not check that the join type allows
            // it, and a left join whose build side is the preserved one would emit its
            // unmatched rows once per task (apache/datafusion-ballista#1055).
            let state = remote.state_ref();
            let mut state = state.write();
            let options = state.config_mut().options_mut();
            options.optimizer.prefer_hash_join = true;
            options
                .set("ballista.optimizer.broadcast_join_threshold_bytes", "0")
                .map_err(|e| Error::Internal(format!("Ballista option: {e}")))?;
            // The client polls the job's status (every 50 ms) instead of waiting for the
            // scheduler to push it: the scheduler's first answer then carries the job id, which
            // a run needs to cancel a job that never started (no executor free); pushed, the id
            // comes with the first status change.
            options
                .set("ballista.client.pull", "true")
                .map_err(|e| Error::Internal(format!("Ballista option: {e}")))?;
        }
        Ok(Cluster {
            url: url.to_string(),
            remote,
            job_timeout,
        })
    }

    /// The scheduler's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Executes `df` (planned in the run's local session, reading tables registered with
    /// [`listing_table`]) on the cluster and stages its result in local files (see
    /// [`super::stage`]): the returned scan is what the rest of the model's step reads.
    ///
    /// Errors: [`Error::Cluster`] (retryable) when the job failed for the cluster's sake (a
    /// lost executor, a failed shuffle fetch, a broken connection) or did not finish within the
    /// job timeout; [`Error::Internal`] for DataFusion's internal errors; otherwise the query's
    /// own error. A job this call gives up on (the timeout, a failure staging its result) or that
    /// is abandoned (the run was stopped: the future is dropped) is cancelled on the cluster.
    pub async fn execute(&self, local: &SessionContext, df: DataFrame) -> Result<super::Staged> {
        self.submit(df, |physical, task, schema| {
            super::stage_plan(local, schema, physical, task)
        })
        .await
    }

    /// Executes `df` on the cluster with its result written by the executors as Delta data
    /// files into a new staging directory of the table at `table` (see
    /// [`crate::table::delta_files`]), and returns them with a scan of their rows, to be
    /// committed by reference or read by the rest of the model's step. The files are deleted
    /// again when the returned value is dropped uncommitted, and when the job fails.
    ///
    /// Errors: as [`Cluster::execute`]; a staged file's action that cannot be read (internal).
    pub async fn write_delta_files(
        &self,
        local: &SessionContext,
        df: DataFrame,
        table: &url::Url,
        format: &crate::config::Format,
    ) -> Result<crate::table::StagedFiles> {
        use crate::table::delta_files::{FilesSpec, WriteFiles};
        use datafusion::logical_expr::{Extension, LogicalPlan};
        let dir = format!("staged-{}", uuid::Uuid::new_v4().simple());
        let spec = FilesSpec {
            table: table.to_string(),
            dir: dir.clone(),
            compression: format.compression,
            target_file_size: format.target_file_size,
        };
        let schema = Arc::new(df.schema().as_arrow().clone());
        let store = local.runtime_env().object_store(store_url(table)?)?;
        let (_, root) = object_store::ObjectStoreScheme::parse(table)
            .map_err(|e| Error::Internal(format!("table URL: {e}")))?;
        // Armed before the job starts: a failed job's partial files are deleted.
        let local_dir = (table.scheme() == "file")
            .then(|| table.to_file_path().ok().map(|p| p.join(&dir)))
            .flatten();
        let mut staged = crate::table::StagedFiles::new(
            store,
            root.join(dir.as_str()),
            local_dir,
            local.read_empty()?,
        );
        let write = LogicalPlan::Extension(Extension {
            node: Arc::new(WriteFiles::new(df.logical_plan().clone(), spec)?),
        });
        let batches = self
            .submit(
                DataFrame::new(df.into_parts().0, write),
                |physical, task, _| async move {
                    Ok(datafusion::physical_plan::collect(physical, task).await?)
                },
            )
            .await?;
        staged.adds = crate::table::delta_files::actions(&batches)?;
        let files = staged
            .adds
            .iter()
            .map(|a| {
                table
                    .join(&a.path)
                    .map_err(|e| Error::Internal(format!("staged file path {}: {e}", a.path)))
            })
            .collect::<Result<Vec<_>>>()?;
        staged.files = SnapshotFiles {
            schema,
            files,
            version: -1,
        };
        staged.df = local.read_table(scan(&staged.files)?)?;
        tracing::info!(
            scheduler = %self.url,
            files = staged.adds.len(),
            rows = staged.rows(),
            dir = %dir,
            "The executors wrote the model's rows into the table's staging directory."
        );
        Ok(staged)
    }

    /// Submits `df` (planned in the run's local session, reading tables registered with
    /// [`listing_table`]) to the cluster as one job and returns what `consume` makes of the
    /// job's plan (a `DistributedQueryExec`): the job is cancelled unless `consume` finishes
    /// (within the job timeout, without error).
    async fn submit<T, F>(
        &self,
        df: DataFrame,
        consume: impl FnOnce(
            Arc<dyn datafusion::physical_plan::ExecutionPlan>,
            Arc<datafusion::execution::TaskContext>,
            arrow::datatypes::SchemaRef,
        ) -> F,
    ) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let clock = std::time::Instant::now();
        let plan = df.logical_plan().clone();
        let remote = DataFrame::new(self.remote.state(), plan);
        let task = Arc::new(remote.task_ctx());
        let schema = Arc::new(remote.schema().as_arrow().clone());
        let physical = remote
            .create_physical_plan()
            .await
            .map_err(|e| self.classify(e.into()))?;
        // Cancels the job on the cluster unless it ended: when this future is abandoned (a stop
        // request) or gives up (the job timeout, a failure while consuming its result).
        let mut job = Job {
            url: self.url.clone(),
            plan: physical.clone(),
            ended: false,
        };
        let done =
            match tokio::time::timeout(self.job_timeout, consume(physical, task, schema)).await {
                Ok(Ok(done)) => {
                    job.ended = true;
                    done
                }
                Ok(Err(e)) => {
                    job.cancel().await;
                    return Err(self.classify(e));
                }
                Err(_) => {
                    job.cancel().await;
                    return Err(self.timed_out());
                }
            };
        tracing::info!(
            scheduler = %self.url,
            duration_ms = clock.elapsed().as_millis() as u64,
            "Executed the model's query on the cluster."
        );
        Ok(done)
    }

    /// A scan of `table` (a [`listing_table`]) in the cluster's session: every query built on
    /// it runs on the cluster (as one job per `collect`, without the job timeout of
    /// [`Cluster::execute`]; pass its errors through [`Cluster::classify`]).
    ///
    /// Errors: none in practice (registering the scan).
    pub fn read(&self, table: Arc<dyn TableProvider>) -> Result<DataFrame> {
        Ok(self.remote.read_table(table)?)
    }

    /// Awaits `work` (queries built on [`Cluster::read`]) for at most the job timeout, with
    /// its errors classified ([`Cluster::classify`]).
    ///
    /// Errors: `work`'s; [`Error::Cluster`] (retryable) after the job timeout. The job then
    /// running is not cancelled (its id is not known here); the scheduler ends it with the
    /// session.
    pub async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.job_timeout, work).await {
            Ok(done) => done.map_err(|e| self.classify(e)),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// The error of a job that did not finish within the job timeout.
    fn timed_out(&self) -> Error {
        Error::Cluster {
            url: self.url.clone(),
            message: format!(
                "the job did not finish within {} s (`engine.job_timeout_seconds`): no executor registered or free, or one was lost and its tasks were not run again (see the scheduler's log)",
                self.job_timeout.as_secs()
            ),
            retryable: true,
        }
    }

    /// `e` as [`Error::Cluster`] when its message says the cluster failed rather than the
    /// query. Ballista reports a failed job as text, so the text is what can be read.
    pub fn classify(&self, e: Error) -> Error {
        let Error::DataFusion(df) = &e else {
            return e;
        };
        let text = df.to_string();
        let lower = text.to_ascii_lowercase();
        const CLUSTER_FAULTS: [&str; 14] = [
            "executor lost",
            "executorlost",
            "fetchfailed",
            "fetch failed",
            "failed to connect",
            "transport error",
            "connection refused",
            "connection reset",
            "broken pipe",
            "h2 protocol error",
            "error reading a body",
            "grpc",
            "status: unavailable",
            "status: cancelled",
        ];
        if CLUSTER_FAULTS.iter().any(|f| lower.contains(f)) || is_external_cluster(df) {
            Error::Cluster {
                url: self.url.clone(),
                message: format!(
                    "the job failed on the cluster: {}",
                    text.lines().next().unwrap_or_default()
                ),
                retryable: true,
            }
        } else if lower.contains("internal error") {
            // DataFusion's internal errors are bugs, as in local mode (exit 1), not the SQL's.
            Error::Internal(format!("on the cluster: {text}"))
        } else {
            e
        }
    }
}

/// A job submitted to the cluster: Ballista's client submits it when the plan's
/// `DistributedQueryExec` is first polled and keeps its id there. Dropped before it ended, it
/// asks the scheduler to cancel the job (see [`crate::interrupt::defer`]), so a stopped run does
/// not leave its job running on the executors.
struct Job {
    url: String,
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    ended: bool,
}

impl Job {
    /// The scheduler's job id, once it accepted the job.
    fn id(&self) -> Option<String> {
        use ballista_core::execution_plans::DistributedQueryExec;
        use datafusion_proto::protobuf::LogicalPlanNode;
        let mut nodes = vec![self.plan.clone()];
        while let Some(node) = nodes.pop() {
            if let Some(exec) = node
                .as_any()
                .downcast_ref::<DistributedQueryExec<LogicalPlanNode>>()
            {
                return exec.job_id();
            }
            nodes.extend(node.children().into_iter().cloned());
        }
        None
    }

    /// Cancels the job now (it ended for this caller either way).
    async fn cancel(&mut self) {
        self.ended = true;
        if let Some(id) = self.id() {
            cancel_job(self.url.clone(), id).await;
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if !self.ended {
            if let Some(id) = self.id() {
                crate::interrupt::defer(cancel_job(self.url.clone(), id));
            }
        }
    }
}

/// Asks the scheduler at `url` (`df://host:port`) to cancel job `id` (its running tasks are
/// stopped, its pending ones dropped), within 5 s; a failure is logged as a warning, since the
/// caller has already given up on the job.
async fn cancel_job(url: String, id: String) {
    use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
    use ballista_core::serde::protobuf::CancelJobParams;
    let endpoint = match crate::config::scheduler_address(&url) {
        Ok((host, port)) => format!("http://{host}:{port}"),
        Err(_) => return,
    };
    let cancel = async {
        let mut client = SchedulerGrpcClient::connect(endpoint).await?;
        client
            .cancel_job(CancelJobParams { job_id: id.clone() })
            .await?;
        Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    };
    match tokio::time::timeout(Duration::from_secs(5), cancel).await {
        Ok(Ok(())) => tracing::info!(scheduler = %url, job_id = %id, "Cancelled the cluster job."),
        Ok(Err(e)) => {
            tracing::warn!(scheduler = %url, job_id = %id, error = %e, "Could not cancel the cluster job.")
        }
        Err(_) => {
            tracing::warn!(scheduler = %url, job_id = %id, "Could not cancel the cluster job: no answer within 5 s.")
        }
    }
}

/// The object-store URL (scheme and authority) of `url`, the key of its store in a session.
///
/// Errors: a URL without a host where one is needed (internal: lake URLs are checked).
pub fn store_url(url: &url::Url) -> Result<datafusion::execution::object_store::ObjectStoreUrl> {
    Ok(datafusion::execution::object_store::ObjectStoreUrl::parse(
        &url[..url::Position::BeforePath],
    )?)
}

/// Whether `e` wraps one of Ballista's own errors other than a failed query (an I/O or gRPC
/// fault between client, scheduler and executors).
fn is_external_cluster(e: &DataFusionError) -> bool {
    use ballista_core::error::BallistaError as B;
    match e {
        DataFusionError::External(inner) => matches!(
            inner.downcast_ref::<B>(),
            Some(
                B::GrpcError(_)
                    | B::TonicError(_)
                    | B::GrpcConnectionError(_)
                    | B::TokioError(_)
                    | B::IoError(_)
                    | B::FetchFailed(..)
                    | B::Cancelled
            )
        ),
        DataFusionError::Context(_, inner) => is_external_cluster(inner),
        DataFusionError::Shared(inner) => is_external_cluster(inner),
        _ => false,
    }
}

/// [`listing_table`], or an empty table when there are no files.
///
/// Errors: as [`listing_table`].
pub fn scan(files: &SnapshotFiles) -> Result<Arc<dyn TableProvider>> {
    if files.files.is_empty() {
        return Ok(Arc::new(datafusion::datasource::MemTable::try_new(
            files.schema.clone(),
            vec![vec![]],
        )?));
    }
    listing_table(files)
}

/// A plain Parquet table over `files` (one path per data file, so only the version's files are
/// read, never the removed ones beside them), with the table's schema: Ballista serializes it
/// as a listing scan the scheduler splits into tasks.
///
/// Errors: a file URL DataFusion cannot take as a table path (internal).
pub fn listing_table(files: &SnapshotFiles) -> Result<Arc<dyn TableProvider>> {
    let paths = files
        .files
        .iter()
        .map(|u| ListingTableUrl::parse(u.as_str()))
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension("");
    let config = ListingTableConfig::new_with_multi_paths(paths)
        .with_listing_options(options)
        .with_schema(files.schema.clone());
    Ok(Arc::new(ListingTable::try_new(config)?))
}
