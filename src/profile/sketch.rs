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

/// The profile's own functions, `smelter_quantiles` and `smelter_distinct_key`, for a session
/// that must know them by name (the processes of a Ballista cluster decode plans that call
/// them).
pub fn functions() -> (Arc<AggregateUDF>, Arc<datafusion::logical_expr::ScalarUDF>) {
    (
        Arc::new(AggregateUDF::from(Quantiles::new())),
        Arc::new(datafusion::logical_expr::ScalarUDF::from(DistinctKey::new())),
    )
}

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

/// `smelter_distinct_key(x)`: an Int64 that stands for each value of a float or decimal column in
/// a distinct-count sketch, so `approx_distinct` (which hashes integers, strings and binaries) need
/// not format every value as text. Floats give their IEEE 754 bits (as `f64`: `0.0` and `-0.0`
/// are two values, as their texts are); decimals give their unscaled integer, exact up to 18
/// digits (any value that fits in an `i64`), and wider ones the XOR of its two 64-bit halves (a fold like a hash: two values may
/// share a key, which only matters to a sketch as a hash collision does). NULL stays NULL.
pub fn distinct_key(x: Expr) -> Expr {
    datafusion::logical_expr::ScalarUDF::from(DistinctKey::new()).call(vec![x])
}

/// Whether [`distinct_key`] takes a column of type `dt`.
pub fn has_distinct_key(dt: &DataType) -> bool {
    use DataType::*;
    matches!(
        dt,
        Float16 | Float32 | Float64 | Decimal32(..) | Decimal64(..) | Decimal128(..)
    )
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct DistinctKey {
    signature: Signature,
}

impl DistinctKey {
    fn new() -> Self {
        DistinctKey {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for DistinctKey {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        "smelter_distinct_key"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args.first() {
            Some(dt) if has_distinct_key(dt) => Ok(DataType::Int64),
            other => datafusion::common::plan_err!(
                "smelter_distinct_key takes a float or decimal, not {other:?}"
            ),
        }
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> Result<datafusion::logical_expr::ColumnarValue> {
        use arrow::array::{AsArray, Int64Array};
        use arrow::datatypes::{
            Decimal128Type, Decimal32Type, Decimal64Type, Float16Type, Float32Type, Float64Type,
        };
        let [arg] = args.args.as_slice() else {
            return datafusion::common::exec_err!("smelter_distinct_key takes one argument");
        };
        let arr = arg.to_array(args.number_rows)?;
        let keys: Int64Array = match arr.data_type() {
            DataType::Float16 => arr
                .as_primitive::<Float16Type>()
                .unary(|v| f64::from(v.to_f32()).to_bits() as i64),
            DataType::Float32 => arr
                .as_primitive::<Float32Type>()
                .unary(|v| f64::from(v).to_bits() as i64),
            DataType::Float64 => arr
                .as_primitive::<Float64Type>()
                .unary(|v| v.to_bits() as i64),
            DataType::Decimal32(..) => arr.as_primitive::<Decimal32Type>().unary(i64::from),
            DataType::Decimal64(..) => arr.as_primitive::<Decimal64Type>().unary(|v| v),
            DataType::Decimal128(..) => arr
                .as_primitive::<Decimal128Type>()
                .unary(|v| i64::try_from(v).unwrap_or((v as i64) ^ ((v >> 64) as i64))),
            other => {
                return datafusion::common::exec_err!(
                    "smelter_distinct_key takes a float or decimal, not {other}"
                )
            }
        };
        Ok(datafusion::logical_expr::ColumnarValue::Array(Arc::new(
            keys,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Decimal128Array, Int64Array};
    use datafusion::prelude::{col, SessionContext};

    async fn keys(arr: ArrayRef) -> Vec<Option<i64>> {
        let ctx = SessionContext::new();
        let batch = arrow::record_batch::RecordBatch::try_from_iter([("x", arr)]).unwrap();
        let out = ctx
            .read_batch(batch)
            .unwrap()
            .select(vec![distinct_key(col("x"))])
            .unwrap()
            .collect()
            .await
            .unwrap();
        let keys = out[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        keys.iter().collect()
    }

    /// Distinct values give distinct keys: signs, a wide decimal, the two zeros; NULL stays NULL.
    #[tokio::test]
    async fn distinct_keys_keep_values_apart() {
        let wide = 10i128.pow(20);
        let dec = Decimal128Array::from(vec![
            Some(-1),
            Some(0),
            Some(1),
            Some(wide),
            Some(-wide),
            None,
        ])
        .with_precision_and_scale(38, 2)
        .unwrap();
        let got = keys(Arc::new(dec)).await;
        assert_eq!(got[5], None);
        let mut seen: Vec<i64> = got.iter().flatten().copied().collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 5, "{got:?}");
        assert_eq!(&got[..3], &[Some(-1), Some(0), Some(1)]);
        let floats = Float64Array::from(vec![Some(0.0), Some(-0.0), Some(1.5), Some(1.5)]);
        let got = keys(Arc::new(floats)).await;
        assert_ne!(got[0], got[1]);
        assert_eq!(got[2], got[3]);
    }
}
