//! `smelter lineage emit`: sends the lineage of a recorded run again, to every output configured
//! in `[lineage]` (DataHub file and REST, OpenLineage file and HTTP). The layers, their times and
//! the logical date come from the run log; the column lineage comes from the current SQL models.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use tracing::info;

use crate::error::{Error, Result};
use crate::layers::Runtime;
use crate::lineage::emit;
use crate::plan::{Layer, Plan, RunParams};

/// `smelter lineage ...`.
#[derive(Debug, Subcommand)]
pub enum LineageCommand {
    /// Emit the lineage of a recorded run again (for example after DataHub was down).
    Emit(EmitArgs),
}

/// Arguments of `smelter lineage emit`.
#[derive(Debug, Args)]
pub struct EmitArgs {
    /// Pipeline file.
    pub pipeline: PathBuf,
    /// The run whose lineage to emit.
    #[arg(long)]
    pub run_id: String,
    /// Only this layer (default: every layer the run log has for the run).
    #[arg(long, value_enum)]
    pub layer: Option<Layer>,
}

/// Runs the command. Any emission failure is an error here (exit 75 for a retry), since emission
/// is all this command does.
pub async fn execute(cmd: LineageCommand) -> Result<()> {
    let LineageCommand::Emit(args) = cmd;
    let plan = Plan::load(&args.pipeline)?;
    let l = &plan.pipeline.lineage;
    if l.datahub_dir.is_none()
        && l.datahub_rest.is_none()
        && l.openlineage_dir.is_none()
        && l.openlineage_url.is_none()
    {
        return Err(Error::config(
            args.pipeline.display(),
            "no lineage output is configured; set `lineage.datahub_file`, `lineage.datahub_rest`, \
             `lineage.openlineage_file` or `lineage.openlineage_url`",
        ));
    }
    let runtime = Runtime::open(&plan)?;
    let layers = runtime.state.layer_runs(&args.run_id).await?;
    let layers: Vec<_> = layers
        .into_iter()
        .filter(|l| args.layer.is_none_or(|only| only.as_str() == l.layer))
        .collect();
    if layers.is_empty() {
        return Err(Error::NothingToDo(format!(
            "the run log has no {}steps for run id `{}`",
            args.layer.map(|l| format!("{l} ")).unwrap_or_default(),
            args.run_id
        )));
    }
    let mut problems = Vec::new();
    for recorded in &layers {
        let layer = [Layer::Extract, Layer::Bronze, Layer::Silver, Layer::Gold]
            .into_iter()
            .find(|l| l.as_str() == recorded.layer)
            .ok_or_else(|| {
                Error::Internal(format!("unknown layer `{}` in the run log", recorded.layer))
            })?;
        let params = RunParams {
            logical_date: chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
                .and_then(|e| {
                    e.checked_add_signed(chrono::Duration::days(recorded.logical_date.into()))
                })
                .ok_or_else(|| Error::Internal("bad logical date in the run log".into()))?,
            run_id: args.run_id.clone(),
        };
        let rc = runtime.context(&plan, &params);
        let started_ms = recorded.started_us / 1000;
        let mut profiles = Vec::new();
        for id in emit::tables_of(&rc, layer) {
            // Only a profile taken by this very run describes what it wrote.
            if let Some(p) = crate::profile::latest(&runtime.state, &id)
                .await?
                .filter(|p| p.run_id == args.run_id)
            {
                profiles.push(std::sync::Arc::new(p));
            }
        }
        let written = emit::datasets(&rc, layer, &profiles).await?;
        let job = emit::job_context(&rc, layer, started_ms);
        let found = emit::deliver(&rc, &job, &written, true, recorded.ended_us / 1000, true).await;
        info!(layer = %layer, datasets = written.len(), problems = found.len(), "Emitted lineage.");
        problems.extend(found);
    }
    if problems.is_empty() {
        println!(
            "emitted lineage of run {} ({} layers)",
            args.run_id,
            layers.len()
        );
        Ok(())
    } else {
        Err(Error::Source {
            message: format!("lineage emission failed: {}", problems.join("; ")),
            retryable: true,
        })
    }
}
