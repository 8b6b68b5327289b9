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
use crate::layers::{run_layer, RunContext, RunOutput, Runtime};
use crate::plan::{Layer, Plan, RunParams};
use crate::state::summary::{LineageFiles, Report, Summary};
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
    /// Rebuild merge and append models from scratch, and re-sync change-tracked source tables
    /// (`mode = "change_tracking"`) in full.
    #[arg(long)]
    pub full_refresh: bool,
    /// Also write one JSON document describing this invocation to PATH, whether it succeeds or
    /// fails: the exit code and error, and per step its rows, duration, status, table version,
    /// quality results and drift breaches, with the report and lineage files written (shape:
    /// `astro/README.md`, "Run summary"). Secrets are scrubbed from it.
    #[arg(long, value_name = "PATH")]
    pub summary_json: Option<PathBuf>,
}

/// What a run has done so far, for its summary.
#[derive(Debug, Default)]
struct Progress {
    /// The pipeline, once its file loaded.
    pipeline: Option<crate::config::Pipeline>,
    /// The attempt id, once the lake was opened.
    attempt: Option<String>,
    /// Records and reports of the layers run.
    output: RunOutput,
}

impl Progress {
    fn summary(
        &self,
        args: &RunArgs,
        params: &RunParams,
        error: Option<&Error>,
        elapsed: Duration,
    ) -> Summary {
        let pipeline = self.pipeline.as_ref();
        let mut layers_run: Vec<&str> = Vec::new();
        for r in &self.output.records {
            if !layers_run.contains(&r.layer.as_str()) {
                layers_run.push(&r.layer);
            }
        }
        let shown = |p: std::path::PathBuf| p.exists().then(|| p.display().to_string());
        let lineage = pipeline
            .map(|p| {
                layers_run
                    .iter()
                    .map(|layer| {
                        let files = crate::lineage::emit::files(&p.lineage, &params.run_id, layer);
                        LineageFiles {
                            layer: layer.to_string(),
                            datahub: files.datahub.and_then(shown),
                            openlineage: files.openlineage.and_then(shown),
                        }
                    })
                    .filter(|f| f.datahub.is_some() || f.openlineage.is_some())
                    .collect()
            })
            .unwrap_or_default();
        let mut summary = Summary {
            schema_version: crate::state::summary::SCHEMA_VERSION,
            pipeline: pipeline.map(|p| p.name.clone()).unwrap_or_else(|| {
                args.pipeline
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            }),
            run_id: params.run_id.clone(),
            attempt: self.attempt.clone(),
            logical_date: params.logical_date.to_string(),
            layers: layers(args.layer).iter().map(|l| l.to_string()).collect(),
            exit_code: 0,
            status: "success",
            error: None,
            rows_inserted: 0,
            rows_updated: 0,
            rows_deleted: 0,
            duration_ms: elapsed.as_millis() as u64,
            steps: Vec::new(),
            reports: self
                .output
                .reports
                .iter()
                .map(|(layer, url)| Report {
                    layer: layer.to_string(),
                    url: crate::storage::redact(url),
                })
                .collect(),
            lineage,
        };
        summary.add_records(&self.output.records);
        summary.finish(error);
        summary
    }
}

/// The layers `arg` names, in run order.
fn layers(arg: LayerArg) -> Vec<Layer> {
    match arg {
        LayerArg::Extract => vec![Layer::Extract],
        LayerArg::Bronze => vec![Layer::Bronze],
        LayerArg::Silver => vec![Layer::Silver],
        LayerArg::Gold => vec![Layer::Gold],
        LayerArg::All => vec![Layer::Extract, Layer::Bronze, Layer::Silver, Layer::Gold],
    }
}

/// Runs the command; with `--summary-json`, writes the summary whatever the outcome.
pub async fn execute(args: RunArgs, log_format: LogFormat) -> Result<()> {
    let clock = Instant::now();
    let logical_date = args
        .logical_date
        .unwrap_or_else(|| chrono::Utc::now().date_naive());
    let params = RunParams {
        logical_date,
        run_id: args
            .run_id
            .clone()
            .unwrap_or_else(|| format!("manual__{logical_date}")),
    };
    let mut progress = Progress::default();
    let result = run(&args, &params, log_format, &mut progress).await;
    let Some(path) = &args.summary_json else {
        return result;
    };
    let summary = progress.summary(&args, &params, result.as_ref().err(), clock.elapsed());
    match (summary.write(path), result) {
        (_, Err(e)) => Err(e),
        (Err(io), Ok(())) => Err(Error::Storage {
            url: path.display().to_string(),
            message: format!("cannot write the run summary (--summary-json): {io}"),
            retryable: false,
        }),
        (Ok(()), Ok(())) => Ok(()),
    }
}

async fn run(
    args: &RunArgs,
    params: &RunParams,
    log_format: LogFormat,
    progress: &mut Progress,
) -> Result<()> {
    let clock = Instant::now();
    if params.run_id.is_empty() {
        return Err(Error::Usage("--run-id must not be empty".into()));
    }
    let plan = Plan::load(&args.pipeline)?;
    progress.pipeline = Some(plan.pipeline.clone());
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
    progress.attempt = Some(runtime.attempt.clone());
    let rc = RunContext {
        models: args.models.clone(),
        full_refresh: args.full_refresh,
        ..runtime.context(&plan, params)
    };
    let lake = &runtime.lake;
    info!(pipeline = %plan.pipeline.name, run_id = %params.run_id, logical_date = %params.logical_date, root = %crate::storage::redact(lake.root()), "Starting run.");
    let bar = (log_format == LogFormat::Text && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    // Why this run's extract landed nothing: then bronze has nothing because of it.
    let mut nothing_landed: Option<String> = None;
    for layer in layers(args.layer) {
        if let Some(bar) = &bar {
            bar.set_message(format!("{layer}…"));
        }
        match run_layer(&rc, layer, &mut progress.output).await {
            Ok(()) => {}
            Err(Error::NothingToDo(why)) if layer == Layer::Extract => {
                nothing_landed = Some(why.clone());
                if args.layer == LayerArg::All {
                    continue;
                }
                return Err(Error::NothingToDo(why));
            }
            Err(Error::NothingToDo(_))
                if layer == Layer::Bronze && nothing_landed.is_some() && !args.full_refresh =>
            {
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
                return Err(Error::NothingToDo(format!(
                    "the extract layer ran and landed nothing new ({}), so bronze has nothing to append",
                    nothing_landed.unwrap_or_default()
                )));
            }
            // With --layer all, a layer with nothing selected is not an error; nothing new in
            // bronze ends the run (99), unless silver and gold are rebuilt from all of bronze.
            Err(Error::NothingToDo(_))
                if args.layer == LayerArg::All && (layer != Layer::Bronze || args.full_refresh) =>
            {
                continue
            }
            Err(e) => {
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
                return Err(e);
            }
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    print_summary(&plan, params, &progress.output.records, clock.elapsed());
    Ok(())
}

fn print_summary(plan: &Plan, params: &RunParams, records: &[RunRecord], elapsed: Duration) {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec![
        "layer", "target", "status", "rows", "updated", "deleted", "seconds",
    ]);
    for r in records {
        table.add_row(vec![
            r.layer.clone(),
            r.target.clone(),
            r.status.clone(),
            r.rows.to_string(),
            r.rows_updated.to_string(),
            r.rows_deleted.to_string(),
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
