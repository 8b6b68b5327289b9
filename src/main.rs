//! The `smelter` binary: parses the command line, sets up logging, runs the command and maps the
//! outcome to the exit codes Airflow reads (see `error::exit` and `docs/errors.md`).

use clap::Parser;

/// jemalloc as the global allocator: query execution allocates and frees many short-lived Arrow
/// buffers from several threads. On the demo's silver layer at SF5 it takes 21.1 s and 2.6 GB
/// max RSS against glibc's 24.5 s and 4.5 GB (see `docs/performance.md`). The `system-allocator`
/// feature builds with the system's malloc instead, for heap profilers that interpose it
/// (heaptrack, valgrind's massif).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    // A panic anywhere (ours or a library's) is a bug in Smelter: exit 1, as the exit-code
    // contract says, after the default report, instead of Rust's 101.
    let report_panic = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report_panic(info);
        std::process::exit(smelter::error::exit::INTERNAL);
    }));
    let cli = smelter::cli::Cli::parse();
    // Output piped into `head` and the like: end quietly when the reader goes away, as Unix
    // tools do, instead of panicking on the first write after the pipe closed. Not for `run` and
    // the cluster processes: they write to sockets (gRPC, Arrow Flight, object stores) with
    // vectored writes, which raise SIGPIPE when the peer went away, and a peer that went away
    // must stay an error they handle (a retry, a lost executor), not kill the process.
    // SAFETY: called before any thread exists; SIG_DFL is a valid disposition.
    #[cfg(unix)]
    if !matches!(
        cli.command,
        smelter::cli::Command::Cluster(_) | smelter::cli::Command::Run(_)
    ) {
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    smelter::cli::init_logging(cli.log_format, cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(smelter::error::exit::INTERNAL);
        }
    };
    let code = match runtime.block_on(run_until_stopped(cli)) {
        Ok(()) => smelter::error::exit::OK,
        Err(e) => {
            report(&e);
            e.exit_code()
        }
    };
    std::process::exit(code);
}

/// How long a command may take to wind down after the first SIGTERM/SIGINT (record the
/// interrupted attempt in the run log) before the process ends anyway.
const GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// Runs the command until it ends or the process is asked to stop. On SIGTERM (how Airflow stops
/// a task on timeout or when marked failed) or SIGINT, `smelter run` stops starting new work,
/// abandons the step in flight before its commit, records the attempt in the run log and ends
/// with [`smelter::error::Error::Interrupted`] (exit 75, retryable); see [`smelter::interrupt`].
/// Other commands, and a run that does not wind down within [`GRACE`], end at once with the same
/// error.
async fn run_until_stopped(cli: smelter::cli::Cli) -> smelter::error::Result<()> {
    // Cluster processes stop on SIGTERM/SIGINT themselves (an executor drains its tasks first).
    if matches!(cli.command, smelter::cli::Command::Cluster(_)) {
        return smelter::cli::execute(cli).await;
    }
    if !smelter::interrupt::listen() {
        return smelter::cli::execute(cli).await;
    }
    let winds_down = matches!(cli.command, smelter::cli::Command::Run(_));
    let mut command = Box::pin(smelter::cli::execute(cli));
    let result = tokio::select! {
        result = &mut command => result,
        signal = smelter::interrupt::requested() => {
            // A run that finished anyway (the signal came after its last commit) succeeded.
            match winds_down {
                true => tokio::time::timeout(GRACE, &mut command)
                    .await
                    .unwrap_or(Err(smelter::error::Error::Interrupted(signal))),
                false => Err(smelter::error::Error::Interrupted(signal)),
            }
        }
    };
    // A command that did not wind down is abandoned here; then what abandoned steps still had
    // to do (cancel their cluster jobs), bounded.
    drop(command);
    smelter::interrupt::settle(SETTLE).await;
    result
}

/// How long the process waits at exit for the clean-ups of abandoned steps
/// ([`smelter::interrupt::defer`]).
const SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Logs the error as one line (one per problem when validation found several) with its exit code, kind,
/// hint and the model, table, column and file it names as structured fields.
fn report(e: &smelter::error::Error) {
    use smelter::error::Error;
    let code = e.exit_code();
    let kind = e.kind().as_str();
    let retryable = e.is_retryable();
    let (model, table, column, file) = (
        e.named("model"),
        e.named("table"),
        e.named("column"),
        e.named("file"),
    );
    let lines: Vec<String> = match e {
        // Each problem already names its file, line and column.
        Error::Invalid(problems) => problems.clone(),
        e => vec![match e.hint() {
            Some(hint) => format!("{}; {hint}", e.user_message()),
            None => e.user_message(),
        }],
    };
    for line in lines {
        // One line: DataFusion's nested contexts ("\ncaused by\n") and multi-line messages
        // would split the entry in Airflow's log view.
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        tracing::error!(
            exit_code = code,
            kind,
            retryable,
            model,
            table,
            column,
            file,
            "{line}"
        );
    }
}
