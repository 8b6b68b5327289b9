//! `smelter_quantiles(x)`: every profile quantile of a column from one t-digest.
//!
//! DataFusion's `approx_percentile_cont` builds one t-digest per call, so five quantiles of one
//! column would build five identical digests (each sorting every batch). This aggregate builds the
//! same digest (DataFusion's `TDigest`, 100 centroids, the same state layout) once and returns all
//! of [`super::compute::QUANTILES`] as a `List<Float64>`.

use std::any::Any;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Expr, Signature, Volatility,
};
use datafusion_functions_aggregate_common::tdigest::TDigest;

use super::compute::QUANTILES;

/// Centroids per digest, as in DataFusion's `approx_percentile_cont`.
const MAX_SIZE: usize = 100;

/// `smelter_quantiles(<f64 expr>)`: the profile quantiles of the non-NULL values.
pub fn quantiles(x: Expr) -> Expr {
    AggregateUDF::from(Quantiles::new()).call(vec![x])
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Quantiles {
    signature: Signature,
}

impl Quantiles {
    fn new() -> Self {
        Quantiles {
            signature: Signature::exact(vec![DataType::Float64], Volatility::Immutable),
        }
    }
}

fn list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true)))
}

impl AggregateUDFImpl for Quantiles {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        "smelter_quantiles"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(list_type())
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let f =
            |n: &str, t: DataType| Arc::new(Field::new(format_state_name(args.name, n), t, false));
        Ok(vec![
            f("max_size", DataType::UInt64),
            f("sum", DataType::Float64),
            f("count", DataType::Float64),
            f("max", DataType::Float64),
            f("min", DataType::Float64),
            Arc::new(Field::new_list(
                format_state_name(args.name, "centroids"),
                Field::new_list_field(DataType::Float64, true),
                false,
            )),
        ])
    }

    fn accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(QuantilesAccumulator {
            digest: TDigest::new(MAX_SIZE),
        }))
    }
}

#[derive(Debug)]
struct QuantilesAccumulator {
    digest: TDigest,
}

impl Accumulator for QuantilesAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(arr) = values.first() else {
            return Ok(());
        };
        let arr = arr
            .as_any()
            .downcast_ref::<Float64Array>()
            .ok_or_else(|| datafusion::error::DataFusionError::Internal("expected f64".into()))?;
        let mut sorted: Vec<f64> = if arr.null_count() == 0 {
            arr.values().to_vec()
        } else {
            arr.iter().flatten().collect()
        };
        sorted.retain(|v| !v.is_nan());
        if sorted.is_empty() {
            return Ok(());
        }
        sorted.sort_unstable_by(f64::total_cmp);
        self.digest = self.digest.merge_sorted_f64(&sorted);
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.digest.count() == 0.0 {
            return ScalarValue::try_from(&list_type());
        }
        let values: Vec<ScalarValue> = QUANTILES
            .iter()
            .map(|q| ScalarValue::Float64(Some(self.digest.estimate_quantile(*q))))
            .collect();
        Ok(ScalarValue::List(ScalarValue::new_list_nullable(
            &values,
            &DataType::Float64,
        )))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.digest.size() - std::mem::size_of_val(&self.digest)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(self.digest.to_scalar_state())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(first) = states.first() else {
            return Ok(());
        };
        let mut digests = vec![self.digest.clone()];
        for row in 0..first.len() {
            let state = states
                .iter()
                .map(|a| ScalarValue::try_from_array(a, row))
                .collect::<Result<Vec<_>>>()?;
            digests.push(TDigest::from_scalar_state(&state));
        }
        self.digest = TDigest::merge_digests(&digests);
        Ok(())
    }
}
