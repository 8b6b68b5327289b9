//! `MIN` and `MAX` whose grouped accumulators order floats totally, as the ungrouped ones do.
//!
//! DataFusion 53's grouped `MIN`/`MAX` on `Float32`/`Float64` compare with `partial_cmp` and
//! start every group at the type's largest or smallest *finite* value: a group holding only
//! `+inf` had `MIN` = `f64::MAX` (a number the data never held), one holding only `-inf` had
//! `MAX` = `-f64::MAX`, and a NaN won or lost depending on row order (`MAX([NaN, 1.0])` = 1.0,
//! `MAX([1.0, NaN])` = NaN). The ungrouped accumulators use IEEE 754 total order, where NaN is
//! above `+inf`. Reported and fixed upstream after 53 (apache/datafusion#24432, #24435), the
//! same way as here: `total_cmp`, and a starting value below (for `MAX`) or above (for `MIN`)
//! every float in that order.
//!
//! [`udafs`] gives `min` and `max` that delegate everything to DataFusion's, except the grouped
//! accumulator of `Float32` and `Float64` inputs. Registered in a session under the same names,
//! they replace the built-in functions for SQL; plans and column names are unchanged.

use std::any::Any;
use std::sync::Arc;

use arrow::datatypes::{DataType, Float32Type, Float64Type};
use datafusion::common::{Result, ScalarValue};
use datafusion::functions_aggregate::min_max::{max_udaf, min_udaf};
use datafusion::logical_expr::function::{AccumulatorArgs, AggregateFunctionSimplification};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, GroupsAccumulator, ReversedUDAF,
    SetMonotonicity, Signature, StatisticsArgs,
};
use datafusion_functions_aggregate_common::aggregate::groups_accumulator::prim_op::PrimitiveGroupsAccumulator;

/// `min` and `max` with total-order float grouped accumulators, to register in a session.
pub fn udafs() -> [AggregateUDF; 2] {
    [
        AggregateUDF::new_from_impl(TotalOrder {
            inner: min_udaf(),
            max: false,
        }),
        AggregateUDF::new_from_impl(TotalOrder {
            inner: max_udaf(),
            max: true,
        }),
    ]
}

/// DataFusion's `min` (`max: false`) or `max` (`max: true`) with the float grouped accumulator
/// replaced; see the module documentation.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TotalOrder {
    inner: Arc<AggregateUDF>,
    max: bool,
}

/// The grouped accumulator of `data_type` for `MAX` (`max`) or `MIN` in total order; `None`
/// for types other than `Float32` and `Float64`.
fn float_accumulator(data_type: &DataType, max: bool) -> Option<Box<dyn GroupsAccumulator>> {
    // The starting values are the ends of the total order: the NaN with every payload bit set,
    // negative for `MAX` (below `-inf`) and positive for `MIN` (above `+inf` and `NaN`).
    Some(match (data_type, max) {
        (DataType::Float64, true) => Box::new(
            PrimitiveGroupsAccumulator::<Float64Type, _>::new(data_type, |cur, new| {
                if new.total_cmp(cur).is_gt() {
                    *cur = new
                }
            })
            .with_starting_value(f64::from_bits(u64::MAX)),
        ),
        (DataType::Float64, false) => Box::new(
            PrimitiveGroupsAccumulator::<Float64Type, _>::new(data_type, |cur, new| {
                if new.total_cmp(cur).is_lt() {
                    *cur = new
                }
            })
            .with_starting_value(f64::from_bits(u64::MAX >> 1)),
        ),
        (DataType::Float32, true) => Box::new(
            PrimitiveGroupsAccumulator::<Float32Type, _>::new(data_type, |cur, new| {
                if new.total_cmp(cur).is_gt() {
                    *cur = new
                }
            })
            .with_starting_value(f32::from_bits(u32::MAX)),
        ),
        (DataType::Float32, false) => Box::new(
            PrimitiveGroupsAccumulator::<Float32Type, _>::new(data_type, |cur, new| {
                if new.total_cmp(cur).is_lt() {
                    *cur = new
                }
            })
            .with_starting_value(f32::from_bits(u32::MAX >> 1)),
        ),
        _ => return None,
    })
}

impl AggregateUDFImpl for TotalOrder {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn accumulator(&self, acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner.accumulator(acc_args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        match float_accumulator(args.return_field.data_type(), self.max) {
            Some(acc) => Ok(acc),
            None => self.inner.create_groups_accumulator(args),
        }
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner.create_sliding_accumulator(args)
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner.inner().order_sensitivity()
    }

    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        self.inner.simplify()
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        self.inner.reverse_udf()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn is_descending(&self) -> Option<bool> {
        self.inner.is_descending()
    }

    fn value_from_stats(&self, statistics_args: &StatisticsArgs) -> Option<ScalarValue> {
        self.inner.value_from_stats(statistics_args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner.inner().set_monotonicity(data_type)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    /// Grouped `MIN`/`MAX` of groups holding only infinities, or NaN beside a number in either
    /// order, give the values the ungrouped aggregates give (total order, NaN above `+inf`).
    #[tokio::test]
    async fn grouped_float_min_max_follow_total_order() {
        let ctx = SessionContext::new();
        for udaf in super::udafs() {
            ctx.register_udaf(udaf);
        }
        let values = "(1, 'inf'::double), (1, 'inf'::double), (2, '-inf'::double), \
                      (3, 'NaN'::double), (3, 1.0), (4, 1.0), (4, 'NaN'::double), (5, NULL), \
                      (6, -0.0), (6, 0.0)";
        ctx.sql(&format!(
            "CREATE TABLE t AS SELECT g, v, CAST(v AS REAL) AS f FROM (VALUES {values}) AS x(g, v)"
        ))
        .await
        .unwrap();
        let text = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
                arrow::util::pretty::pretty_format_batches(&batches)
                    .unwrap()
                    .to_string()
            }
        };
        let grouped = text(
            "SELECT g, CAST(MIN(v) AS VARCHAR) AS lo, CAST(MAX(v) AS VARCHAR) AS hi, \
             CAST(MIN(f) AS VARCHAR) AS lo32, CAST(MAX(f) AS VARCHAR) AS hi32 \
             FROM t GROUP BY g ORDER BY g",
        )
        .await;
        let want = [
            "| 1 | inf  | inf  | inf  | inf  |",
            "| 2 | -inf | -inf | -inf | -inf |",
            "| 3 | 1.0  | NaN  | 1.0  | NaN  |",
            "| 4 | 1.0  | NaN  | 1.0  | NaN  |",
            "| 5 |      |      |      |      |",
            "| 6 | -0.0 | 0.0  | -0.0 | 0.0  |",
        ];
        for row in want {
            assert!(grouped.contains(row), "{row} missing in\n{grouped}");
        }
        // The ungrouped aggregates, per group through a filter, agree.
        let ungrouped = text(
            "SELECT CAST(MIN(v) AS VARCHAR) AS lo, CAST(MAX(v) AS VARCHAR) AS hi FROM t WHERE g = 4",
        )
        .await;
        assert!(ungrouped.contains("| 1.0 | NaN |"), "{ungrouped}");
    }
}
