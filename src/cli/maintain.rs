//! `smelter maintain` (compaction, version expiry, removal of unreferenced files) and
//! `smelter show` (a table's rows, optionally as of an older version) on either table format.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use crate::error::{Error, Result};
use crate::layers::Runtime;
use crate::plan::{Layer, Plan};
use crate::table::{AsOf, MaintainOptions, MaintainReport};

/// Output format of `maintain` and `show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table for people.
    Table,
    /// JSON.
    Json,
}

/// Arguments of `smelter maintain`.
#[derive(Debug, Args)]
pub struct MaintainArgs {
    /// Pipeline file.
    pub pipeline: PathBuf,
    /// Only tables of this layer (bronze, silver or gold).
    #[arg(long, value_enum)]
    pub layer: Option<Layer>,
    /// Only this table (`name` or `<layer>.<name>`).
    #[arg(long)]
    pub table: Option<String>,
    /// Keep versions (snapshots) and unreferenced files younger than this many hours; older
    /// versions are expired and files only they reference are deleted. 0 keeps only the
    /// current version (readers of older versions then fail).
    #[arg(long, default_value_t = 168)]
    pub retention_hours: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

/// Arguments of `smelter show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Pipeline file.
    pub pipeline: PathBuf,
    /// The table (`name` or `<layer>.<name>`).
    pub table: String,
    /// Read this version (an integer, as `smelter profile` and the run log report it) or the
    /// version current at this time (RFC 3339, or a date for midnight UTC).
    #[arg(long)]
    pub as_of: Option<AsOf>,
    /// At most this many rows.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Output format: a table, or JSON lines (one object per row).
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

/// Runs `smelter maintain`: every selected table that exists, one after another; prints one
/// line (or JSON object) per table. Exit 99 when no selected table exists yet.
pub async fn maintain(args: MaintainArgs) -> Result<()> {
    let plan = Plan::load(&args.pipeline)?;
    let selected = super::select_tables(&plan, args.layer, args.table.as_deref())?;
    let runtime = Runtime::open(&plan)?;
    let options = MaintainOptions {
        retention: std::time::Duration::from_secs(args.retention_hours.saturating_mul(3600)),
        target_file_size: plan.pipeline.format.target_file_size,
    };
    // Each table with its own format's name (a model may override the pipeline's).
    let mut done: Vec<(String, &'static str, MaintainReport)> = Vec::new();
    for id in &selected {
        let url = runtime.lake.table_url(id);
        match runtime.format.maintain(&runtime.ctx, &url, &options).await {
            Ok(Some(report)) => {
                tracing::info!(table = %id, files_before = report.files_before, files_after = report.files_after, versions_expired = report.versions_expired, files_deleted = report.files_deleted, "Maintained table.");
                done.push((
                    id.to_string(),
                    runtime.format.for_table(&url).name(),
                    report,
                ));
            }
            Ok(None) => {}
            Err(e) => return Err(e.in_table(&id.to_string(), &crate::storage::redact(&url), None)),
        }
    }
    if done.is_empty() {
        return Err(Error::NothingToDo(
            "no selected table has been written yet; run the pipeline first".into(),
        ));
    }
    match args.format {
        OutputFormat::Json => {
            let rows: Vec<serde_json::Value> = done
                .iter()
                .map(|(t, format, r)| {
                    let mut v = serde_json::to_value(r).unwrap_or_default();
                    v["table"] = serde_json::Value::String(t.clone());
                    v["format"] = serde_json::Value::String((*format).into());
                    v
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        OutputFormat::Table => {
            let mut t = Table::new();
            t.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
                "table",
                "format",
                "files before",
                "files after",
                "versions expired",
                "files deleted",
                "version",
            ]);
            for (name, format, r) in &done {
                t.add_row(vec![
                    name.clone(),
                    (*format).to_string(),
                    r.files_before.to_string(),
                    r.files_after.to_string(),
                    r.versions_expired.to_string(),
                    r.files_deleted.to_string(),
                    r.version.to_string(),
                ]);
            }
            println!("{t}");
        }
    }
    Ok(())
}

/// Runs `smelter show`: the first `limit` rows of the table (as of `--as-of`). Exit 2 for an
/// unknown table, one not written yet, or a version that cannot be read.
pub async fn show(args: ShowArgs) -> Result<()> {
    let plan = Plan::load(&args.pipeline)?;
    let id = super::select_tables(&plan, None, Some(&args.table))?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Usage(format!("unknown table `{}`", args.table)))?;
    let runtime = Runtime::open(&plan)?;
    let url = runtime.lake.table_url(&id);
    let provider = match &args.as_of {
        Some(as_of) => {
            runtime
                .format
                .provider_as_of(&runtime.ctx, &url, as_of)
                .await?
        }
        None => runtime.format.provider(&runtime.ctx, &url).await?,
    }
    .ok_or_else(|| {
        Error::Usage(format!(
            "table `{id}` has not been written yet; run the {} layer first",
            id.layer
        ))
    })?;
    let batches = runtime
        .ctx
        .read_table(provider)?
        .limit(0, Some(args.limit))?
        .collect()
        .await
        .map_err(|e| match (&args.as_of, Error::from(e)) {
            // An old version whose data files maintenance removed (VACUUM).
            (Some(as_of), e) if e.kind() == crate::error::Kind::Bug => Error::Usage(format!(
                "cannot read {as_of} of `{id}`: {e}; its data files were probably removed by `smelter maintain` (VACUUM): read a version within the retention"
            )),
            (_, e) => e,
        })?;
    match args.format {
        OutputFormat::Table => {
            println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
        }
        OutputFormat::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(std::io::stdout());
            for b in &batches {
                w.write(b)?;
            }
            w.finish()?;
        }
    }
    Ok(())
}
