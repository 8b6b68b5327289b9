//! The TDS 7.4 fixture server as a program, for Python clients and manual runs of
//! `smelter run pipelines/logistics.toml --layer extract` or `smelter run pipelines/tpch.toml`.
//!
//! Usage: `tds_server [--port N] [--scale F] [--days N] [--big-rows N] [--tpch-scale F]
//! [--tpch-dump DIR] [--password-env NAME] [--tls] [--commands]`
//! (`--tpch-scale F`: also serve the TPC-H tables `tpch.*` at scale factor F; `--tpch-dump DIR`:
//! write the same generated TPC-H data to DIR as `<table>.parquet` and `<table>.csv` before
//! serving; `--tls`: encrypt with the test certificate of `tests/support/tds/tls/`).
//! Prints the bound port on stdout when ready, then serves until killed. Fault switches come from
//! the `TDS_FAULT_*` environment variables (see `tests/support/tds/mod.rs`).
//!
//! With `--commands`, lines on stdin change the change-tracked table `dbo.Tracked` while it
//! serves, each printing the new version: `upsert <id> <name> <amount in hundredths | null>`,
//! `delete <id>`, `cleanup` (the minimum valid version becomes the current one) and `version`.

#[path = "../tests/support/tds/mod.rs"]
mod tds;

use std::io::Write;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let commands = args.iter().any(|a| a == "--commands");
    args.retain(|a| a != "--commands");
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
    let lines = commands.then(|| std::io::stdin().lines());
    for line in lines.into_iter().flatten() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let done = match words.as_slice() {
            ["upsert", id, name, amount] => match (id.parse(), amount.parse::<i128>()) {
                (Ok(id), Ok(a)) => Ok(server.tracked_upsert(id, name, Some(a))),
                (Ok(id), Err(_)) if *amount == "null" => Ok(server.tracked_upsert(id, name, None)),
                _ => Err("upsert <id> <name> <amount in hundredths | null>"),
            },
            ["delete", id] => id
                .parse()
                .map(|id| server.tracked_delete(id))
                .map_err(|_| "delete <id>"),
            ["cleanup"] => Ok(server.tracked_cleanup()),
            ["version"] => Ok(server.tracked_version()),
            [] => continue,
            _ => Err("commands: upsert, delete, cleanup, version"),
        };
        match done {
            Ok(version) => println!("{version}"),
            Err(usage) => eprintln!("tds_server: {usage}"),
        }
        let _ = std::io::stdout().flush();
    }
    // Without --commands, or once stdin closes: serve until killed.
    loop {
        std::thread::park();
    }
}
