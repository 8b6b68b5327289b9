//! `smelter run`: run one layer, or all layers in order, and print a summary.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use clap::Args;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use tracing::info;

use super::LogFormat;
use crate::error::{Error, Result};
use crate::layers::{run_layer, RunContext, Runtime};
use crate::plan::{Layer, Plan, RunParams};
use crate::state::RunRecord;

/// Which layers to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LayerArg {
    /// Extract from the source to landing.
    Extract,
    /// Landing to bronze.
    Bronze,
    /// Silver models.
    Silver,
    /// Gold models.
    Gold,
    /// All layers in order.
    All,
}

/// Arguments of `smelter run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Pipeline file.
    pub pipeline: PathBuf,
    /// Layer to run.
    #[arg(long, value_enum, default_value_t = LayerArg::All)]
    pub layer: LayerArg,
    /// Only these silver/gold models (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    /// Logical date of the run (YYYY-MM-DD); default today (UTC).
    #[arg(long)]
    pub logical_date: Option<NaiveDate>,
    /// Run id; all layers of one run share it. Default `manual__<logical date>`.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Rebuild merge and append models from scratch.
    #[arg(long)]
    pub full_refresh: bool,
}

/// Runs the command.
pub async fn execute(args: RunArgs, log_format: LogFormat) -> Result<()> {
    let clock = Instant::now();
    let plan = Plan::load(&args.pipeline)?;
    let logical_date = args
        .logical_date
        .unwrap_or_else(|| chrono::Utc::now().date_naive());
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| format!("manual__{logical_date}"));
    if run_id.is_empty() {
        return Err(Error::Usage("--run-id must not be empty".into()));
    }
    let params = RunParams {
        logical_date,
        run_id,
    };
    if let Some(names) = &args.models {
        let known: Vec<String> = plan.models.iter().map(|m| m.id.to_string()).collect();
        let unknown: Vec<&String> = names
            .iter()
            .filter(|n| {
                !plan
                    .models
                    .iter()
                    .any(|m| **n == m.id.name || **n == m.id.to_string())
            })
            .collect();
        if let Some(first) = unknown.first() {
            return Err(Error::Usage(format!(
                "--models: unknown model(s) {}; models of {}: {}{}",
                unknown
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                args.pipeline.display(),
                known.join(", "),
                crate::plan::suggest(first, known.iter().map(String::as_str))
            )));
        }
    }
    let runtime = Runtime::open(&plan)?;
    let rc = RunContext {
        models: args.models.clone(),
        full_refresh: args.full_refresh,
        ..runtime.context(&plan, &params)
    };
    let lake = &runtime.lake;
    let layers: Vec<Layer> = match args.layer {
        LayerArg::Extract => vec![Layer::Extract],
        LayerArg::Bronze => vec![Layer::Bronze],
        LayerArg::Silver => vec![Layer::Silver],
        LayerArg::Gold => vec![Layer::Gold],
        LayerArg::All => vec![Layer::Extract, Layer::Bronze, Layer::Silver, Layer::Gold],
    };
    info!(pipeline = %plan.pipeline.name, run_id = %params.run_id, logical_date = %params.logical_date, root = %crate::storage::redact(lake.root()), "Starting run.");
    let progress = (log_format == LogFormat::Text && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let mut all = Vec::new();
    for layer in layers {
        if let Some(bar) = &progress {
            bar.set_message(format!("{layer}…"));
        }
        let records = match run_layer(&rc, layer).await {
            Ok(r) => r,
            // With --layer all, a layer with nothing selected is not an error.
            Err(Error::NothingToDo(_)) if args.layer == LayerArg::All && layer != Layer::Bronze => {
                continue
            }
            Err(e) => {
                if let Some(bar) = &progress {
                    bar.finish_and_clear();
                }
                return Err(e);
            }
        };
        all.extend(records);
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    print_summary(&plan, &params, &all, clock.elapsed());
    Ok(())
}

fn print_summary(plan: &Plan, params: &RunParams, records: &[RunRecord], elapsed: Duration) {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec![
        "layer", "target", "status", "rows", "updated", "seconds",
    ]);
    for r in records {
        table.add_row(vec![
            r.layer.clone(),
            r.target.clone(),
            r.status.clone(),
            r.rows.to_string(),
            r.rows_updated.to_string(),
            format!("{:.2}", r.duration_ms as f64 / 1000.0),
        ]);
    }
    println!("{table}");
    for r in records {
        let quarantined = serde_json::from_str::<serde_json::Value>(&r.details)
            .ok()
            .and_then(|d| d.get("quarantined").and_then(serde_json::Value::as_u64))
            .unwrap_or(0);
        if quarantined > 0 && r.layer == "bronze" {
            let name = r.target.strip_prefix("bronze.").unwrap_or(&r.target);
            println!(
                "{quarantined} row(s) quarantined from {} into bronze.{}: they break their declared types",
                r.target,
                crate::quarantine::table_name(name)
            );
        }
    }
    let models = records
        .iter()
        .filter(|r| r.layer == "silver" || r.layer == "gold")
        .count();
    println!(
        "pipeline {} run {} ({}): {} steps, {} models, {} rows written in {:.1}s",
        plan.pipeline.name,
        params.run_id,
        params.logical_date,
        records.len(),
        models,
        // Rows this attempt wrote: an `already_committed` step's rows were written before.
        records
            .iter()
            .filter(|r| r.status == "success")
            .map(|r| r.rows)
            .sum::<u64>(),
        elapsed.as_secs_f64()
    );
}
