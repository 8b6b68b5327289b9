//! `smelter validate`: load the config and every SQL file, plan every model against the known
//! schemas (bronze tables from the lake when they exist, else from the source schema contracts;
//! no data is read, no source is contacted), and report all problems at once with file:line:col.

use std::path::Path;

use crate::error::{Error, Result};
use crate::layers::model::plan_all;
use crate::plan::Plan;

/// Runs the command; prints a one-line summary on success.
pub async fn execute(pipeline: &Path) -> Result<()> {
    let plan = Plan::load(pipeline)?;
    crate::storage::check(&plan.pipeline)?;
    let lake = crate::storage::Lake::open(&plan.pipeline)?;
    let format = crate::table::for_plan(&plan, &lake);
    format.check()?;
    let (_, problems) = plan_all(&plan, Some((&lake, format.as_ref())), false).await?;
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
