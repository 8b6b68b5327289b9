//! `smelter validate`: load the config and every SQL file, plan every model against the known
//! schemas (no lake access, no data), and report all problems at once with file:line:col.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use datafusion::datasource::MemTable;

use crate::error::{Error, Result};
use crate::extract::sample::Sample;
use crate::layers::{bronze::bronze_schema, model::plan_model};
use crate::plan::{Plan, RunParams, TableId};

/// Runs the command; prints a one-line summary on success.
pub async fn execute(pipeline: &Path) -> Result<()> {
    let plan = Plan::load(pipeline)?;
    let problems = check_models(&plan).await?;
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

/// Plans every model in run order against empty tables of the known schemas.
pub async fn check_models(plan: &Plan) -> Result<Vec<String>> {
    let ctx = crate::engine::session(&plan.pipeline, None)?;
    let register = |id: &TableId, schema| -> Result<()> {
        let table = MemTable::try_new(schema, vec![vec![]])?;
        let catalog = ctx
            .catalog("datafusion")
            .and_then(|c| c.schema(id.layer.as_str()))
            .ok_or_else(|| Error::Internal("layer schema missing".into()))?;
        catalog.register_table(id.name.clone(), Arc::new(table))?;
        Ok(())
    };
    for id in plan.bronze_tables() {
        register(&id, bronze_schema(&Sample::schema(&id.name)?))?;
    }
    let params = RunParams {
        logical_date: chrono::Utc::now().date_naive(),
        run_id: "validate".into(),
    };
    let mut problems = Vec::new();
    let mut failed: BTreeSet<TableId> = BTreeSet::new();
    for model in &plan.models {
        if let Some(dep) = model.depends_on.iter().find(|d| failed.contains(*d)) {
            failed.insert(model.id.clone());
            problems.push(format!(
                "{}: not planned because `{dep}` has errors",
                crate::plan::display_path(&plan.pipeline, &model.file)
            ));
            continue;
        }
        match plan_model(&ctx, plan, model, &params).await {
            Ok(df) => {
                let schema = Arc::new(df.schema().as_arrow().clone());
                register(&model.id, schema)?;
            }
            Err(e) => {
                failed.insert(model.id.clone());
                problems.push(e.to_string());
            }
        }
    }
    Ok(problems)
}
