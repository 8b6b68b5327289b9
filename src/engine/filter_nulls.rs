//! A logical optimizer rule that makes an aggregate's `FILTER (WHERE p)` skip rows where `p` is
//! NULL, as the SQL standard, PostgreSQL and DuckDB do.
//!
//! DataFusion 53's grouped accumulators read only the value bits of the filter's result, not
//! its NULL bitmap (apache/datafusion#22067, fixed upstream after 53): a row whose predicate is
//! NULL counts when the bits under the NULL happen to say true. `COUNT(*) FILTER (WHERE b < 1)`
//! counted a row with `b` NULL, depending on the bytes under the NULL, so the result depended on
//! how the rows were stored. [`FilterNulls`] rewrites every filter `p` of a grouped aggregate to
//! `p IS NOT DISTINCT FROM true`, which is never NULL (DataFusion's simplifier writes "exactly
//! true" the same way); the aggregate keeps its output name. Not `p IS TRUE`: two aggregates
//! with the same filter share it as a common subexpression, whose logical field `IS TRUE` says
//! non-nullable while the physical expression says nullable, and DataFusion refused the plan
//! ("Physical input schema should be the same as the one converted from logical input schema"). Ungrouped aggregates
//! read the NULL bitmap and are left alone (the rewrite made the demo's expectation counts,
//! which are ungrouped, several times slower).

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::Result;
use datafusion::logical_expr::{lit, Aggregate, BinaryExpr, Expr, LogicalPlan, Operator};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

/// The rule; see the module documentation.
#[derive(Debug)]
pub struct FilterNulls;

impl OptimizerRule for FilterNulls {
    fn name(&self) -> &str {
        "smelter_filter_nulls"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        // Only grouped accumulators have the fault; an ungrouped aggregate (every expectation
        // count) is left as it is, and keeps its speed.
        let LogicalPlan::Aggregate(agg) = plan else {
            return Ok(Transformed::no(plan));
        };
        if agg.group_expr.is_empty() {
            return Ok(Transformed::no(LogicalPlan::Aggregate(agg)));
        }
        let mut changed = false;
        let mut aggr_expr = Vec::with_capacity(agg.aggr_expr.len());
        for e in &agg.aggr_expr {
            let name = e.schema_name().to_string();
            let rewritten = e.clone().transform_down(|e| match e {
                Expr::AggregateFunction(mut f) => match f.params.filter.take() {
                    Some(p) if !is_exactly_true(&p) => {
                        f.params.filter = Some(Box::new(Expr::BinaryExpr(BinaryExpr::new(
                            p,
                            Operator::IsNotDistinctFrom,
                            Box::new(lit(true)),
                        ))));
                        Ok(Transformed::yes(Expr::AggregateFunction(f)))
                    }
                    p => {
                        f.params.filter = p;
                        Ok(Transformed::no(Expr::AggregateFunction(f)))
                    }
                },
                other => Ok(Transformed::no(other)),
            })?;
            if rewritten.transformed {
                changed = true;
                aggr_expr.push(rewritten.data.alias_if_changed(name)?);
            } else {
                aggr_expr.push(e.clone());
            }
        }
        if !changed {
            return Ok(Transformed::no(LogicalPlan::Aggregate(agg)));
        }
        let rebuilt = Aggregate::try_new(agg.input.clone(), agg.group_expr.clone(), aggr_expr)?;
        Ok(Transformed::yes(LogicalPlan::Aggregate(rebuilt)))
    }

    fn supports_rewrite(&self) -> bool {
        true
    }
}

/// Whether `p` is already `x IS NOT DISTINCT FROM true` (or `x IS TRUE`), never NULL.
fn is_exactly_true(p: &Expr) -> bool {
    match p {
        Expr::IsTrue(_) => true,
        Expr::BinaryExpr(b) => {
            b.op == Operator::IsNotDistinctFrom
                && matches!(b.right.as_ref(), Expr::Literal(v, _) if *v == datafusion::scalar::ScalarValue::Boolean(Some(true)))
        }
        _ => false,
    }
}
