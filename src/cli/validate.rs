//! `smelter validate`: load the config and every SQL file, plan every model against the known
//! schemas (no lake access, no data), and report all problems at once with file:line:col.

use std::path::Path;

use crate::error::{Error, Result};
use crate::layers::model::plan_all;
use crate::plan::Plan;

/// Runs the command; prints a one-line summary on success.
pub async fn execute(pipeline: &Path) -> Result<()> {
    let plan = Plan::load(pipeline)?;
    crate::storage::check(&plan.pipeline)?;
    let (_, problems) = plan_all(&plan).await?;
    if !problems.is_empty() {
        return Err(Error::Invalid(problems));
    }
    println!(
        "{}: ok ({} source tables, {} models)",
        pipeline.display(),
        plan.pipeline.source.tables.len(),
        plan.models.len()
    );
    Ok(())
}
