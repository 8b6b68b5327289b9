//! `smelter airflow pools`: the Airflow pools of the tenants named in pipelines' `[airflow]`
//! sections, as the JSON file `airflow pools import` reads.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use crate::error::{Error, Result};

/// Airflow subcommands.
#[derive(Debug, Subcommand)]
pub enum AirflowCommand {
    /// Print one pool per tenant (`smelter_tenant_<tenant>`, slots = `concurrency_per_tenant`)
    /// as an `airflow pools import` file; importing it again changes nothing.
    Pools {
        /// Pipeline files.
        #[arg(required = true)]
        pipelines: Vec<PathBuf>,
    },
}

/// Runs the command.
pub fn execute(cmd: AirflowCommand) -> Result<()> {
    match cmd {
        AirflowCommand::Pools { pipelines } => {
            println!("{}", serde_json::to_string_pretty(&pools(&pipelines)?)?);
            Ok(())
        }
    }
}

/// The pools file for `pipelines`: `{"smelter_tenant_<t>": {"slots", "description",
/// "include_deferred"}}`. Pipelines without a tenant add nothing; two pipelines of one tenant
/// with different `concurrency_per_tenant` are a configuration error naming both files.
pub fn pools(pipelines: &[PathBuf]) -> Result<serde_json::Value> {
    // pool -> (slots, files, pipeline names)
    let mut found: BTreeMap<String, (u32, Vec<String>, Vec<String>)> = BTreeMap::new();
    let mut problems = Vec::new();
    for path in pipelines {
        let p = crate::config::load(path)?;
        let (Some(tenant), Some(pool)) = (&p.airflow.tenant, &p.airflow.pool) else {
            continue;
        };
        let slots = p.airflow.concurrency_per_tenant;
        let file = path.display().to_string();
        match found.get_mut(pool) {
            Some((s, files, _)) if *s != slots => problems.push(format!(
                "{file}: key `airflow.concurrency_per_tenant`: {slots} for tenant `{tenant}`, but {} sets {s}; give every pipeline of a tenant the same value",
                files.join(", ")
            )),
            Some((_, files, names)) => {
                files.push(file);
                names.push(p.name.clone());
            }
            None => {
                found.insert(pool.clone(), (slots, vec![file], vec![p.name.clone()]));
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::Invalid(problems));
    }
    Ok(serde_json::Value::Object(
        found
            .into_iter()
            .map(|(pool, (slots, _, mut names))| {
                names.sort();
                names.dedup();
                let tenant = pool.trim_start_matches("smelter_tenant_").to_string();
                (
                    pool,
                    json!({
                        "slots": slots,
                        "description": format!("Smelter tenant {tenant}: pipelines {}", names.join(", ")),
                        "include_deferred": false,
                    }),
                )
            })
            .collect(),
    ))
}
