//! The `smelter` binary: parses the command line, sets up logging, runs the command and maps the
//! outcome to the exit codes Airflow reads (see `error::exit` and `docs/errors.md`).

use clap::Parser;

fn main() {
    let cli = smelter::cli::Cli::parse();
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
    let code = match runtime.block_on(smelter::cli::execute(cli)) {
        Ok(()) => smelter::error::exit::OK,
        Err(e) => {
            report(&e);
            e.exit_code()
        }
    };
    std::process::exit(code);
}

/// Logs the error as one line (one per problem when validation found several) with its exit code, kind,
/// hint and the model, table, column and file it names as structured fields.
fn report(e: &smelter::error::Error) {
    use smelter::error::Error;
    let code = e.exit_code();
    let kind = e.kind().as_str();
    let retryable = e.is_retryable();
    let context = e.context();
    let field = |name: &str| {
        context
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    };
    let (model, table, column, file) = (
        field("model"),
        field("table"),
        field("column"),
        field("file"),
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
