//! `smelter profile`: profile the current version of lake tables on demand, with drift against the
//! latest stored profile of each table, as a table, JSON or a self-contained HTML page.
//!
//! On-demand profiles are shown, not stored: the history in `_smelter/profiles` holds the profiles
//! taken after writes, so drift always compares written versions.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use crate::error::{Error, Result};
use crate::layers::Runtime;
use crate::plan::{Layer, Plan, RunParams};
use crate::profile::{self, TableProfile};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileFormat {
    /// Tables for people.
    Table,
    /// JSON: an array of table profiles.
    Json,
    /// One self-contained HTML page.
    Html,
}

/// Arguments of `smelter profile`.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// Pipeline file.
    pub pipeline: PathBuf,
    /// Only tables of this layer (bronze, silver or gold).
    #[arg(long, value_enum)]
    pub layer: Option<Layer>,
    /// Only this table (`name` or `<layer>.<name>`).
    #[arg(long)]
    pub table: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ProfileFormat::Table)]
    pub format: ProfileFormat,
    /// Write the output to this file instead of stdout.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// Runs the command.
pub async fn execute(args: ProfileArgs) -> Result<()> {
    let plan = Plan::load(&args.pipeline)?;
    let selected = super::select_tables(&plan, args.layer, args.table.as_deref())?;
    let runtime = Runtime::open(&plan)?;
    let lake = &runtime.lake;
    let params = RunParams {
        logical_date: chrono::Utc::now().date_naive(),
        run_id: "adhoc".into(),
    };
    let rc = runtime.context(&plan, &params);
    let mut profiles = Vec::new();
    for id in &selected {
        if rc.format.stats(&lake.table_url(id)).await?.is_none() {
            if args.table.is_some() {
                return Err(Error::Usage(format!(
                    "table `{id}` has not been written yet; run the {} layer first",
                    id.layer
                )));
            }
            continue;
        }
        let mut p = profile::profile_table(&rc, id, "adhoc").await?;
        if let Some(prev) = profile::latest(rc.state, id).await? {
            p.drift = profile::drift::compare(&prev, &p, &plan.pipeline.profile.drift);
        }
        profiles.push(p);
    }
    if profiles.is_empty() {
        return Err(Error::NothingToDo(
            "no selected table has been written yet; run the pipeline first".into(),
        ));
    }
    let out = match args.format {
        ProfileFormat::Table => tables(&profiles),
        ProfileFormat::Json => serde_json::to_string_pretty(&profiles)?,
        ProfileFormat::Html => profile::html::render(
            &format!("{} · on demand", plan.pipeline.name),
            profiles.iter(),
        ),
    };
    match &args.output {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(path, out)?;
            eprintln!("wrote {}", path.display());
        }
        None => println!("{out}"),
    }
    Ok(())
}

fn tables(profiles: &[TableProfile]) -> String {
    let mut out = String::new();
    for p in profiles {
        out.push_str(&format!(
            "{}: {} rows, {} columns, {} bytes in {} files (version {}){}\n",
            p.table,
            p.row_count,
            p.column_count,
            p.size_bytes.unwrap_or(0),
            p.files.unwrap_or(0),
            p.version.unwrap_or(-1),
            match p.sampled_rows {
                Some(s) => format!(", profiled on a sample of {s} rows"),
                None => String::new(),
            }
        ));
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        t.set_header(vec![
            "column", "type", "nulls", "distinct", "min", "max", "mean", "stddev", "p50", "top",
        ]);
        for c in &p.columns {
            let f = |x: Option<f64>| x.map(|v| format!("{v:.4}")).unwrap_or_default();
            t.add_row(vec![
                c.name.clone(),
                c.data_type.clone(),
                format!("{} ({:.2}%)", c.null_count, c.null_proportion * 100.0),
                match c.distinct_count {
                    Some(d) if c.distinct_exact => d.to_string(),
                    Some(d) => format!("~{d}"),
                    None => String::new(),
                },
                c.min.clone().unwrap_or_default(),
                c.max.clone().unwrap_or_default(),
                f(c.mean),
                f(c.stddev),
                f(c.median),
                c.top_k
                    .first()
                    .map(|v| format!("{} ({})", v.value, v.count))
                    .unwrap_or_default(),
            ]);
        }
        out.push_str(&t.to_string());
        out.push('\n');
        for d in &p.drift {
            let action = match d.action {
                crate::config::DriftAction::Warn => "warn",
                crate::config::DriftAction::Fail => "fail",
            };
            out.push_str(&format!("drift ({action}): {d}\n"));
        }
        out.push('\n');
    }
    out
}
