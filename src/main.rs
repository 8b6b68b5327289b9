//! The `smelter` binary: parses the command line, sets up logging, runs the command and maps the
//! outcome to the exit codes Airflow reads (see `error::exit`).

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
            let code = e.exit_code();
            match e.hint() {
                Some(hint) => tracing::error!(
                    exit_code = code,
                    retryable = e.is_retryable(),
                    "{e}; {hint}"
                ),
                None => tracing::error!(exit_code = code, retryable = e.is_retryable(), "{e}"),
            }
            code
        }
    };
    std::process::exit(code);
}
