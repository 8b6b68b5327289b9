//! `smelter cluster scheduler|executor`: the processes of a Ballista cluster that
//! `[engine] mode = "ballista"` runs silver and gold queries on (see [`crate::cluster`]).

use std::net::SocketAddr;

use clap::{Args, Subcommand};

use crate::error::{Error, Result};

/// Cluster processes.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Run a Ballista scheduler: it plans each job's stages and hands their tasks to executors.
    Scheduler(SchedulerArgs),
    /// Run a Ballista executor: it registers with the scheduler and runs tasks.
    Executor(ExecutorArgs),
}

/// `smelter cluster scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Address to listen on; clients connect to `df://<this address>`.
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub bind: SocketAddr,
    /// Seconds without a heartbeat after which an executor is lost and its tasks run again
    /// elsewhere.
    #[arg(long, default_value_t = 60)]
    pub executor_timeout_seconds: u64,
}

/// `smelter cluster executor`.
#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The scheduler, `host:port` (or `df://host:port`).
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub scheduler: String,
    /// Address of the executor's data (Arrow Flight) service; its gRPC service takes the next
    /// port. Use the address other machines reach it at.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub bind: SocketAddr,
    /// Tasks run at once (default: the machine's cores).
    #[arg(long)]
    pub slots: Option<usize>,
    /// Directory for shuffle files and spills (default: a new temporary directory).
    #[arg(long)]
    pub work_dir: Option<String>,
    /// Memory for tasks in MiB, split evenly between the slots; operators spill above it.
    #[arg(long)]
    pub memory_limit_mb: Option<u64>,
    /// Seconds between heartbeats to the scheduler.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_seconds: u64,
}

/// Runs a cluster command until the process is stopped.
pub async fn execute(cmd: ClusterCommand) -> Result<()> {
    match cmd {
        ClusterCommand::Scheduler(a) => {
            crate::cluster::scheduler(crate::cluster::SchedulerOptions {
                bind: a.bind,
                executor_timeout_seconds: a.executor_timeout_seconds.max(1),
            })
            .await
        }
        ClusterCommand::Executor(a) => {
            let url = if a.scheduler.contains("://") {
                a.scheduler.clone()
            } else {
                format!("df://{}", a.scheduler)
            };
            let scheduler = crate::config::scheduler_address(&url).map_err(Error::Usage)?;
            let slots = match a.slots {
                Some(0) => return Err(Error::Usage("--slots must be at least 1".into())),
                Some(n) => n,
                None => std::thread::available_parallelism().map_or(2, |n| n.get()),
            };
            crate::cluster::executor(crate::cluster::ExecutorOptions {
                scheduler,
                bind: a.bind,
                slots,
                work_dir: a.work_dir,
                memory_limit: a.memory_limit_mb.map(|m| m * 1024 * 1024),
                heartbeat_seconds: a.heartbeat_seconds.max(1),
            })
            .await
        }
    }
}
