//! Integration tests: one binary, each module drives the real `smelter` binary on a temp project
//! (a copy of the demo SQL with a small scale factor) and reads the lake back with DataFusion.

mod changes;
mod cli_errors;
mod cluster;
mod contracts;
mod deletes;
mod emit;
mod expectations;
mod failures;
mod failures_runtime;
mod files;
mod fresh_user;
mod http;
mod iceberg;
mod incremental;
mod lineage;
mod lineage_golden;
mod model_messages;
mod mssql;
mod profile;
mod quarantine;
mod races;
mod runlog;
mod runs;
mod scd2;
mod storage;
mod summary;
mod support;
mod tpch;

#[path = "../support/tds/mod.rs"]
mod tds;
