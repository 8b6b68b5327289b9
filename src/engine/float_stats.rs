//! A physical optimizer rule that keeps NaN values from being replaced by a file's statistics.
//!
//! Parquet leaves NaN out of a column chunk's min and max (parquet-format, "Statistics";
//! `ColumnOrder` for floats), and so do the Delta and Iceberg file statistics built from them.
//! DataFusion's Parquet opener (53.x, `constant_columns_from_stats`) reads a column whose file
//! statistics say `min == max` with no NULLs as that literal, without decoding it: a file
//! holding `[1.5, NaN]` is read as `[1.5, 1.5]`, silently.
//!
//! [`FloatStats`] removes the min and max of every floating-point column from the per-file
//! statistics of every Parquet scan (`DataSourceExec` over a `FileScanConfig`: listing tables,
//! Delta and Iceberg scans alike), so such columns are always decoded. The cost: row-group and
//! file pruning no longer use float bounds (which NaN makes unsound anyway).

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;

/// The rule; see the module documentation.
#[derive(Debug)]
pub struct FloatStats;

impl PhysicalOptimizerRule for FloatStats {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(exec) = node.as_any().downcast_ref::<DataSourceExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(config) = exec.data_source().as_any().downcast_ref::<FileScanConfig>() else {
                return Ok(Transformed::no(node));
            };
            let floats: Vec<usize> = config
                .file_schema()
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| {
                    matches!(
                        f.data_type(),
                        DataType::Float16 | DataType::Float32 | DataType::Float64
                    )
                })
                .map(|(i, _)| i)
                .collect();
            let has_stats = config
                .file_groups
                .iter()
                .flat_map(|g| g.iter())
                .any(|f| f.statistics.is_some());
            if floats.is_empty() || !has_stats {
                return Ok(Transformed::no(node));
            }
            let mut config = config.clone();
            config.file_groups = std::mem::take(&mut config.file_groups)
                .into_iter()
                .map(|group| {
                    FileGroup::new(
                        group
                            .into_inner()
                            .into_iter()
                            .map(|mut file| {
                                if let Some(stats) = &file.statistics {
                                    let mut stats = stats.as_ref().clone();
                                    for i in &floats {
                                        if let Some(c) = stats.column_statistics.get_mut(*i) {
                                            c.min_value = Precision::Absent;
                                            c.max_value = Precision::Absent;
                                        }
                                    }
                                    file.statistics = Some(Arc::new(stats));
                                }
                                file
                            })
                            .collect(),
                    )
                })
                .collect();
            Ok(Transformed::yes(Arc::new(
                exec.clone().with_data_source(Arc::new(config)),
            )))
        })
        .data()
    }

    fn name(&self) -> &str {
        "smelter_float_stats"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
