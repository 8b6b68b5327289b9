//! `smelter source sync`: discover the source tables' schemas and write them as reviewable
//! contract files (`schemas/<pipeline>/<table>.toml`), printing what changed column by column.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::error::{Error, Result};
use crate::plan::Plan;

/// `smelter source ...`.
#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Discover each source table's columns and write its schema contract file.
    Sync(SyncArgs),
}

/// `smelter source sync <pipeline> [--tables a,b] [--check]`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Pipeline file.
    pub pipeline: PathBuf,
    /// Only these source tables (comma-separated lake names).
    #[arg(long, value_delimiter = ',')]
    pub tables: Option<Vec<String>>,
    /// Compare only: write nothing, and exit 2 if a contract is missing or differs from the
    /// source (for CI).
    #[arg(long)]
    pub check: bool,
}

/// Runs the command; prints one line per table and one per change.
pub async fn execute(cmd: SourceCommand) -> Result<()> {
    let SourceCommand::Sync(args) = cmd;
    let plan = Plan::load(&args.pipeline)?;
    let results =
        crate::extract::sync_contracts(&plan.pipeline, args.tables.as_deref(), args.check).await?;
    let mut stale = Vec::new();
    for r in &results {
        let verb = match (r.status, args.check) {
            ("unchanged", _) => "unchanged",
            ("new", false) => "written",
            ("changed", false) => "updated",
            ("new", true) => "missing",
            _ => "differs from the source",
        };
        println!("{}: {verb} (bronze.{})", r.file, r.table);
        for c in &r.changes {
            println!("  {c}");
        }
        for n in &r.notes {
            println!("  {n}");
        }
        if r.status != "unchanged" {
            stale.push(r.file.clone());
        }
    }
    let unstorable: Vec<String> = results
        .iter()
        .flat_map(|r| r.unstorable.iter().cloned())
        .collect();
    if !unstorable.is_empty() {
        return Err(Error::Invalid(unstorable));
    }
    if args.check && !stale.is_empty() {
        return Err(Error::Usage(format!(
            "{} contract(s) out of date: {}; run `smelter source sync {}`",
            stale.len(),
            stale.join(", "),
            args.pipeline.display()
        )));
    }
    Ok(())
}
