//! `smelter plan`: models per layer, their dependencies and run order, as a table, JSON or a
//! Mermaid graph.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde_json::json;

use crate::error::Result;
use crate::lineage::{ColumnRef, Indirect, Kind, PipelineLineage};
use crate::plan::{display_path, Layer, Plan};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// A table for people.
    Table,
    /// JSON for tools (the Airflow DAG factory).
    Json,
    /// A Mermaid flowchart.
    Mermaid,
}

/// Arguments of `smelter plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Pipeline file.
    pub pipeline: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Table)]
    pub format: PlanFormat,
    /// Show column-level lineage (from the DataFusion plans) instead of the model graph.
    #[arg(long, conflicts_with = "changed")]
    pub lineage: bool,
    /// List the models whose SQL, header, upstream tables or source contracts changed since
    /// their last successful build (read from the run log in the lake); exit 99 when none did.
    #[arg(long)]
    pub changed: bool,
    /// With `--changed`: compare with the definitions as of this run (each model's last
    /// successful build up to the end of that run) instead of the latest builds.
    #[arg(long, value_name = "RUN_ID", requires = "changed")]
    pub since_run: Option<String>,
    /// With `--changed`: compare with each model's last successful build (the default).
    #[arg(long, requires = "changed", conflicts_with = "since_run")]
    pub since_last_success: bool,
}

/// Runs the command.
pub async fn execute(args: PlanArgs) -> Result<()> {
    let plan = Plan::load(&args.pipeline)?;
    if args.changed {
        return changed(&plan, &args).await;
    }
    if args.lineage {
        let lake = crate::storage::Lake::open(&plan.pipeline)?;
        let format = crate::table::for_plan(&plan, &lake);
        let (planned, problems) =
            crate::layers::model::plan_all(&plan, Some((&lake, format.as_ref())), false).await?;
        if !problems.is_empty() {
            return Err(crate::error::Error::Invalid(problems));
        }
        let lineage = crate::lineage::for_pipeline(&plan, &planned);
        let out = match args.format {
            PlanFormat::Table => lineage_table(&lineage),
            PlanFormat::Json => serde_json::to_string_pretty(&lineage_json(&lineage))?,
            PlanFormat::Mermaid => lineage_mermaid(&lineage),
        };
        println!("{out}");
        return Ok(());
    }
    let out = match args.format {
        PlanFormat::Table => table(&plan),
        PlanFormat::Json => serde_json::to_string_pretty(&to_json(&plan))?,
        PlanFormat::Mermaid => mermaid(&plan),
    };
    println!("{out}");
    Ok(())
}

/// `plan --changed`: the models whose fingerprint differs from their last successful build (up
/// to `--since-run`), with the reasons; exit 99 (after printing) when none changed.
async fn changed(plan: &Plan, args: &PlanArgs) -> Result<()> {
    use crate::plan::fingerprint::{self, Baseline, Fingerprint};
    if args.format == PlanFormat::Mermaid {
        return Err(crate::error::Error::Usage(
            "--changed prints `--format table` or `--format json`, not mermaid".into(),
        ));
    }
    let lake = crate::storage::Lake::open(&plan.pipeline)?;
    let format = crate::table::for_plan(plan, &lake);
    let ctx = crate::engine::session(&plan.pipeline, Some(&lake))?;
    let state = crate::state::State::new(&lake, format, ctx);
    let builds = state.last_builds(args.since_run.as_deref()).await?;
    let current = fingerprint::of_plan(plan);
    let changes = fingerprint::changes(plan, &current, |id| match builds.get(&id.to_string()) {
        None => Baseline::None,
        Some(b) => match b.fingerprint.as_deref().and_then(Fingerprint::from_json) {
            None => Baseline::Unknown {
                run_id: b.run_id.clone(),
            },
            Some(fingerprint) => Baseline::Known {
                run_id: b.run_id.clone(),
                fingerprint,
            },
        },
    });
    // The run compared with: the one named, else the latest run that built one of the models.
    let since_run = args.since_run.clone().or_else(|| {
        plan.models
            .iter()
            .filter_map(|m| builds.get(&m.id.to_string()))
            .max_by_key(|b| b.started_at)
            .map(|b| b.run_id.clone())
    });
    let out = match args.format {
        PlanFormat::Json => serde_json::to_string_pretty(&json!({
            "pipeline": plan.pipeline.name,
            "since_run": since_run,
            "changed": changes,
        }))?,
        _ => {
            let mut t = Table::new();
            t.load_preset(UTF8_FULL_CONDENSED);
            t.set_header(vec!["model", "reasons", "last built by run"]);
            for c in &changes {
                t.add_row(vec![
                    c.model.clone(),
                    c.reasons.join(", "),
                    c.last_run.clone().unwrap_or_default(),
                ]);
            }
            format!(
                "pipeline {}: {} model(s) changed since {}\n{t}",
                plan.pipeline.name,
                changes.len(),
                since_run
                    .as_deref()
                    .map(|r| format!("run `{r}`"))
                    .unwrap_or_else(|| "the start (no earlier run)".into())
            )
        }
    };
    println!("{out}");
    if changes.is_empty() {
        return Err(crate::error::Error::NothingToDo(format!(
            "no model of {} changed since {}",
            plan.pipeline.name,
            since_run.as_deref().unwrap_or("the last run")
        )));
    }
    Ok(())
}

/// The plan as JSON: pipeline, source tables, models in run order, schedules.
pub fn to_json(plan: &Plan) -> serde_json::Value {
    let p = &plan.pipeline;
    let models: Vec<_> = plan
        .models
        .iter()
        .enumerate()
        .map(|(i, m)| {
            json!({
                "order": i + 1,
                "name": m.id.to_string(),
                "layer": m.id.layer,
                "table": m.id.name,
                "file": display_path(p, &m.file),
                "materialized": m.header.materialized,
                "unique_key": m.header.unique_key,
                "partition_by": m.header.partition_by,
                "table_format": plan.table_kind(&m.id).name(),
                "depends_on": m.depends_on.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "pipeline": p.name,
        "file": p.file.display().to_string(),
        "storage_root": p.storage.root,
        "format": p.format.table.name(),
        "source": {
            "type": p.source.kind,
            // A files source reads no database (the name is the sample's default).
            "database": (p.source.kind != crate::config::SourceKind::Files).then_some(&p.source.database),
            "tables": p.source.tables,
        },
        "layers": {
            "extract": p.source.tables.iter().map(|t| format!("landing.{}", t.name)).collect::<Vec<_>>(),
            "bronze": plan.bronze_tables().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "silver": plan.layer_models(Layer::Silver).map(|m| m.id.to_string()).collect::<Vec<_>>(),
            "gold": plan.layer_models(Layer::Gold).map(|m| m.id.to_string()).collect::<Vec<_>>(),
        },
        "models": models,
        "schedules": p.schedules,
        "airflow": p.airflow,
    })
}

fn table(plan: &Plan) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "#",
        "layer",
        "model",
        "materialized",
        "depends on",
        "file",
    ]);
    for (i, id) in plan.bronze_tables().iter().enumerate() {
        t.add_row(vec![
            format!("b{}", i + 1),
            "bronze".into(),
            id.to_string(),
            "append".into(),
            format!("landing.{}", id.name),
            String::new(),
        ]);
    }
    for (i, m) in plan.models.iter().enumerate() {
        t.add_row(vec![
            (i + 1).to_string(),
            m.id.layer.to_string(),
            m.id.to_string(),
            m.header.materialized.as_str().to_string(),
            m.depends_on
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            display_path(&plan.pipeline, &m.file),
        ]);
    }
    format!("pipeline {}\n{t}", plan.pipeline.name)
}

fn mermaid(plan: &Plan) -> String {
    let node = |s: &str| s.replace('.', "_");
    let mut out = String::from("flowchart LR\n");
    for layer in Layer::TABLE_LAYERS {
        out.push_str(&format!("  subgraph {layer}\n"));
        let ids: Vec<String> = if layer == Layer::Bronze {
            plan.bronze_tables()
                .iter()
                .map(ToString::to_string)
                .collect()
        } else {
            plan.layer_models(layer).map(|m| m.id.to_string()).collect()
        };
        for id in ids {
            out.push_str(&format!("    {}[\"{id}\"]\n", node(&id)));
        }
        out.push_str("  end\n");
    }
    for m in &plan.models {
        for d in &m.depends_on {
            out.push_str(&format!(
                "  {} --> {}\n",
                node(&d.to_string()),
                node(&m.id.to_string())
            ));
        }
    }
    out
}

fn refs(list: &[(ColumnRef, Kind)]) -> String {
    list.iter()
        .map(|(c, k)| format!("{c} ({})", k.name()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn indirect_refs(list: &[(ColumnRef, Indirect)]) -> String {
    list.iter()
        .map(|(c, s)| format!("{c} ({})", s.name()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn lineage_table(l: &PipelineLineage) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "model column",
        "inputs",
        "indirect inputs",
        "source columns",
    ]);
    for (model, m) in &l.models {
        for c in &m.columns {
            t.add_row(vec![
                format!("{model}.{}", c.column),
                refs(&c.inputs),
                indirect_refs(&c.indirect),
                [refs(&c.sources), indirect_refs(&c.indirect_sources)]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join("\n"),
            ]);
        }
        if !m.indirect.is_empty() {
            t.add_row(vec![
                format!("{model} (every column)"),
                String::new(),
                indirect_refs(&m.indirect),
                String::new(),
            ]);
        }
    }
    t.to_string()
}

/// Lineage as JSON: per model, per column, the direct inputs and the source columns with their
/// kinds (`IDENTITY`, `TRANSFORM`, `AGGREGATE`) and the column's indirect inputs (and the source
/// columns they resolve to) with their subtypes (`FILTER`, `JOIN`, `GROUP_BY`, `SORT`, `WINDOW`, `CONDITIONAL`); per model, the
/// indirect inputs that apply to every column.
pub fn lineage_json(l: &PipelineLineage) -> serde_json::Value {
    let list = |v: &[(ColumnRef, Kind)]| -> Vec<serde_json::Value> {
        v.iter()
            .map(|(c, k)| json!({"table": c.table, "column": c.column, "kind": k.name()}))
            .collect()
    };
    let indirect = |v: &[(ColumnRef, Indirect)]| -> Vec<serde_json::Value> {
        v.iter()
            .map(|(c, s)| json!({"table": c.table, "column": c.column, "subtype": s.name()}))
            .collect()
    };
    let models: serde_json::Map<String, serde_json::Value> = l
        .models
        .iter()
        .map(|(name, m)| {
            (
                name.clone(),
                json!({
                    "columns": m.columns.iter().map(|c| json!({
                        "name": c.column,
                        "inputs": list(&c.inputs),
                        "indirect": indirect(&c.indirect),
                        "sources": list(&c.sources),
                        "indirect_sources": indirect(&c.indirect_sources),
                    })).collect::<Vec<_>>(),
                    "indirect": indirect(&m.indirect),
                }),
            )
        })
        .collect();
    json!({ "models": models })
}

fn lineage_mermaid(l: &PipelineLineage) -> String {
    // Mermaid node ids take letters, digits and `_` only; column names may hold anything.
    let node = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect()
    };
    let mut out = String::from("flowchart LR\n");
    for (model, m) in &l.models {
        for c in &m.columns {
            let target = format!("{model}.{}", c.column);
            for (input, k) in &c.inputs {
                out.push_str(&format!(
                    "  {}[\"{input}\"] -->|{}| {}[\"{target}\"]\n",
                    node(&input.to_string()),
                    k.name(),
                    node(&target)
                ));
            }
        }
    }
    out
}
