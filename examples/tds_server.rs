//! The TDS 7.4 fixture server as a program, for Python clients and manual runs of
//! `smelter run pipelines/logistics.toml --layer extract` or `smelter run pipelines/tpch.toml`.
//!
//! Usage: `tds_server [--port N] [--scale F] [--days N] [--big-rows N] [--tpch-scale F]
//! [--tpch-dump DIR] [--password-env NAME] [--tls]`
//! (`--tpch-scale F`: also serve the TPC-H tables `tpch.*` at scale factor F; `--tpch-dump DIR`:
//! write the same generated TPC-H data to DIR as `<table>.parquet` and `<table>.csv` before
//! serving; `--tls`: encrypt with the test certificate of `tests/support/tds/tls/`).
//! Prints the bound port on stdout when ready, then serves until killed. Fault switches come from
//! the `TDS_FAULT_*` environment variables (see `tests/support/tds/mod.rs`).

#[path = "../tests/support/tds/mod.rs"]
mod tds;

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match tds::options_from_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tds_server: {e}");
            std::process::exit(2);
        }
    };
    let server = match tds::TdsServer::start(opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tds_server: cannot start: {e}");
            std::process::exit(1);
        }
    };
    tds::faults_from_env(&server.faults);
    println!("{}", server.port);
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
