//! Command-line interface: one file per subcommand.

pub mod airflow;
pub mod cluster;
pub mod lineage;
pub mod maintain;
pub mod plan;
pub mod profile;
pub mod run;
pub mod source;
pub mod validate;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::error::Result;

/// Smelter: medallion ETL on DataFusion and Delta Lake.
#[derive(Debug, Parser)]
#[command(name = "smelter", version, about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one layer or all layers of a pipeline.
    Run(run::RunArgs),
    /// Parse the config and every SQL model, plan every model, and report all errors at once.
    Validate {
        /// Pipeline file.
        pipeline: PathBuf,
    },
    /// Show the models per layer, their dependencies and their run order.
    Plan(plan::PlanArgs),
    /// Lineage commands.
    #[command(subcommand)]
    Lineage(lineage::LineageCommand),
    /// Profile the current version of lake tables (with drift against the last stored profile).
    Profile(profile::ProfileArgs),
    /// Compact small files, expire old versions and remove unreferenced files of lake tables
    /// (Delta: OPTIMIZE + VACUUM; Iceberg: rewrite + expire snapshots + orphan files).
    Maintain(maintain::MaintainArgs),
    /// Print the rows of a lake table, optionally as of an older version or time.
    Show(maintain::ShowArgs),
    /// Source commands: `sync` writes the source schema contracts.
    #[command(subcommand)]
    Source(source::SourceCommand),
    /// Airflow helpers: `pools` prints the tenants' pools for `airflow pools import`.
    #[command(subcommand)]
    Airflow(airflow::AirflowCommand),
    /// Run a process of the Ballista cluster that `[engine] mode = "ballista"` executes silver
    /// and gold queries on: `scheduler` or `executor`.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

/// The lake tables of `plan` (bronze tables and models) in `layer` (all layers when `None`), or
/// the one named `table` (`name` or `<layer>.<name>`). Errors (exit 2): `--layer extract`, which
/// has no tables, and an unknown table, with the closest name and the list of tables.
pub(crate) fn select_tables(
    plan: &crate::plan::Plan,
    layer: Option<crate::plan::Layer>,
    table: Option<&str>,
) -> Result<Vec<crate::plan::TableId>> {
    use crate::plan::{suggest, Layer, TableId};
    if layer == Some(Layer::Extract) {
        return Err(crate::error::Error::Usage(
            "--layer extract has no tables; choose bronze, silver or gold".into(),
        ));
    }
    let all: Vec<TableId> = plan
        .bronze_tables()
        .into_iter()
        .chain(plan.models.iter().map(|m| m.id.clone()))
        .collect();
    let mut selected: Vec<TableId> = all
        .iter()
        .filter(|id| layer.is_none_or(|l| id.layer == l))
        .cloned()
        .collect();
    if let Some(t) = table {
        let names: Vec<String> = all.iter().map(ToString::to_string).collect();
        selected.retain(|id| id.to_string() == t || id.name == t);
        if selected.is_empty() {
            return Err(crate::error::Error::Usage(format!(
                "unknown table `{t}`{}; tables: {}",
                suggest(t, names.iter().map(String::as_str)),
                names.join(", ")
            )));
        }
    }
    Ok(selected)
}

/// Runs a parsed command.
pub async fn execute(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run::execute(args, cli.log_format).await,
        Command::Validate { pipeline } => validate::execute(&pipeline).await,
        Command::Plan(args) => plan::execute(args).await,
        Command::Lineage(cmd) => lineage::execute(cmd).await,
        Command::Profile(args) => profile::execute(args).await,
        Command::Maintain(args) => maintain::maintain(args).await,
        Command::Show(args) => maintain::show(args).await,
        Command::Source(cmd) => source::execute(cmd).await,
        Command::Airflow(cmd) => airflow::execute(cmd),
        Command::Cluster(cmd) => cluster::execute(cmd).await,
    }
}

/// Sets up tracing on stderr in the chosen format; `RUST_LOG` overrides the level.
pub fn init_logging(format: LogFormat, verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let level = match verbose {
        // delta-rs warns whenever a commit finds a newer version and checks it for conflicts,
        // which concurrent models' state commits do routinely (a real conflict is an error).
        // The Delta kernel logs every error it returns (`instrument(err)`) before delta-rs
        // hands it to Smelter, which reports it once, with the table and what to do.
        // The cluster processes (`smelter cluster`) say which executors registered and what ran.
        0 => "smelter=info,ballista_scheduler=info,ballista_executor=info,deltalake_core::kernel::transaction=error,buoyant_kernel=off,warn",
        1 => "smelter=debug,info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(level))
        // delta-rs prints the object store with its key material at debug level: never show it.
        .add_directive(
            "deltalake_core::table::builder=info"
                .parse()
                .expect("a valid directive"),
        )
        // The Iceberg catalog's connection pool and commits are traced with their settings
        // (the catalog URI may hold a password): never below info.
        .add_directive(
            "iceberg_sql_catalog=info"
                .parse()
                .expect("a valid directive"),
        )
        .add_directive("iceberg_rust=info".parse().expect("a valid directive"))
        .add_directive("sqlx=warn".parse().expect("a valid directive"))
        // The pool logs each failed connection hook at ERROR and opens another connection; on
        // a fresh catalog database its connections race to create the catalog's tables and
        // all but one fail once. A failure that lasts is Smelter's own error (see
        // `table::iceberg::check_postgres`).
        .add_directive(
            "sqlx_core::pool::inner=off"
                .parse()
                .expect("a valid directive"),
        );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(use_color())
        .with_writer(|| ScrubbedStderr(Vec::new()));
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_target(false).init(),
    }
}

/// Colour only on a terminal, and never when `NO_COLOR` is set to a non-empty value
/// (<https://no-color.org>): Airflow captures stderr to files, where escape codes are noise.
fn use_color() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A log line buffered, then written to stderr with every secret scrubbed (see
/// [`crate::storage::scrub`]), so no credential reaches the logs whatever a dependency prints.
struct ScrubbedStderr(Vec<u8>);

impl std::io::Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ScrubbedStderr {
    fn drop(&mut self) {
        use std::io::Write;
        let text = crate::storage::scrub(&String::from_utf8_lossy(&self.0));
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}
