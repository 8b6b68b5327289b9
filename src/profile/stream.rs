//! The profiler on the write stream: a [`StreamProfile`] observes every batch a write sends to
//! the table (see [`crate::engine::observe`]) and yields the same [`TableProfile`] as the scanning
//! profiler ([`super::compute`]) without reading the table back.
//!
//! Per batch, it feeds
//! - the pass-1 aggregates of [`super::compute::aggregates`] (row and non-NULL counts, min/max,
//!   mean, stddev, the t-digest quantiles, string lengths, HyperLogLog distinct counts), through
//!   DataFusion's own accumulators, so every one of these metrics is computed as a scan computes
//!   it;
//! - per column, an exact count of each distinct non-NULL value (interned by DataFusion's group
//!   tables, as a `GROUP BY` would), kept while the column has at most `exact_distinct_max`
//!   distinct values: such a column gets an exact distinct count, exact top-k and an exact
//!   histogram, as in the scan. Its HyperLogLog sketch and its histogram below are only started
//!   when the exact counts overflow, from the values counted so far with their counts;
//! - per numeric or temporal column whose exact counts overflowed, a [`Rebucketing`] histogram:
//!   the final equal-width buckets need the column's min and max, known only at the end, so
//!   values are counted on a finer grid that doubles its span when a value falls outside it, and
//!   re-bucketed onto `[min, max]` at the end (error bound in [`Rebucketing`]).
//!
//! Batches arrive from the write's partitions concurrently; one mutex serializes the updates.

use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Float64Type, Schema};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::{Accumulator, EmitTo, Expr};
use datafusion::physical_expr::{create_physical_expr, PhysicalExpr};
use datafusion::physical_plan::aggregates::group_values::{new_group_values, GroupValues};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use datafusion::physical_planner::create_aggregate_expr_and_maybe_filter;

use super::compute::{self, ProfileOptions};
use super::{ColumnKind, Histogram, ProfileScope, TableProfile};
use crate::engine::observe::BatchObserver;
use crate::error::{Error, Result};

/// Fine buckets per final histogram bucket of a [`Rebucketing`].
const FINE_PER_BIN: usize = 64;

/// A profile accumulated from the batches of one write; see the module documentation.
#[derive(Debug)]
pub struct StreamProfile {
    table: String,
    options: ProfileOptions,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    fields: Vec<Field>,
    /// Whether any batch was added.
    seen: bool,
    aggs: Vec<Agg>,
    /// Per column: exact value counts while they stay small (`None`: overflowed or not counted).
    values: Vec<Option<ValueCounts>>,
    /// Per column: its HyperLogLog distinct count (the pass-1 `approx_distinct`), fed only once
    /// the exact counts overflowed, starting with every value counted so far (a HyperLogLog
    /// sketch does not depend on how often or in which order it sees a value).
    distinct: Vec<Option<Agg>>,
    /// Per numeric/temporal column: its numbers and their histogram.
    numbers: Vec<Option<(Arc<dyn PhysicalExpr>, Rebucketing)>>,
}

/// One pass-1 aggregate: its result name, argument expressions and accumulator.
struct Agg {
    name: String,
    args: Vec<Arc<dyn PhysicalExpr>>,
    acc: Box<dyn Accumulator>,
}

impl Agg {
    /// The accumulator of `e` (an aggregate aliased `name`) over rows of `schema`.
    fn new(e: &Expr, name: &str, schema: &Schema, props: &ExecutionProps) -> Result<Self> {
        let df_schema = DFSchema::try_from(schema.clone())?;
        let (agg, _, _) = create_aggregate_expr_and_maybe_filter(e, &df_schema, schema, props)?;
        Ok(Agg {
            name: name.to_string(),
            args: agg.expressions(),
            acc: agg.create_accumulator()?,
        })
    }

    /// Adds the rows of `batch`. `evaluated` holds the arguments already evaluated on this
    /// batch, by their text (several aggregates share one: `CAST(x AS Float64)` feeds the mean,
    /// the stddev and the quantiles, a string's length its min, max and mean).
    fn update(
        &mut self,
        batch: &RecordBatch,
        evaluated: &mut ahash::AHashMap<String, ArrayRef>,
    ) -> Result<()> {
        let args = self
            .args
            .iter()
            .map(|e| {
                let key = e.to_string();
                if let Some(arr) = evaluated.get(&key) {
                    return Ok(arr.clone());
                }
                let arr = e.evaluate(batch)?.into_array(batch.num_rows())?;
                evaluated.insert(key, arr.clone());
                Ok(arr)
            })
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        self.acc.update_batch(&args)?;
        Ok(())
    }
}

impl std::fmt::Debug for Agg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agg").field("name", &self.name).finish()
    }
}

impl StreamProfile {
    /// A profiler for batches of `schema`, the profile of table `table` (`<layer>.<table>`).
    /// When the first batch's types differ from `schema` (a writer normalizing types, e.g.
    /// nanosecond timestamps to microseconds), the batches' schema is profiled.
    ///
    /// `options.sample_rows` is ignored: the stream is profiled whole.
    pub fn new(table: &str, schema: &Schema, options: ProfileOptions) -> Result<Self> {
        Ok(StreamProfile {
            table: table.to_string(),
            state: Mutex::new(State::new(schema, &options)?),
            options,
        })
    }
}

impl State {
    fn new(schema: &Schema, options: &ProfileOptions) -> Result<Self> {
        let fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        let props = ExecutionProps::new();
        let mut aggs = Vec::new();
        let mut distinct: Vec<Option<Agg>> = fields.iter().map(|_| None).collect();
        for e in compute::aggregates(&fields) {
            let Expr::Alias(alias) = &e else {
                return Err(Error::Internal("profile aggregate without a name".into()));
            };
            let column = alias
                .name
                .strip_prefix('c')
                .and_then(|n| n.strip_suffix("_distinct"))
                .and_then(|n| n.parse::<usize>().ok());
            match column {
                // Planned over the column alone: it is fed one-column batches.
                Some(i) => {
                    let one = Schema::new(vec![fields[i].clone()]);
                    distinct[i] = Some(Agg::new(&e, &alias.name, &one, &props)?);
                }
                None => aggs.push(Agg::new(&e, &alias.name, schema, &props)?),
            }
        }
        let cap = usize::try_from(options.exact_distinct_max).unwrap_or(usize::MAX);
        let mut values = Vec::with_capacity(fields.len());
        let mut numbers = Vec::with_capacity(fields.len());
        for f in &fields {
            let kind = compute::kind_of(f.data_type());
            values.push(if kind != ColumnKind::Other && cap > 0 {
                Some(ValueCounts::new(f.data_type(), cap)?)
            } else {
                None
            });
            numbers.push(
                if matches!(kind, ColumnKind::Numeric | ColumnKind::Temporal)
                    && options.histogram_bins > 0
                {
                    // Planned over the column alone, like the distinct count.
                    let x = compute::as_number(compute::column(f.name()), f.data_type());
                    let one = DFSchema::try_from(Schema::new(vec![f.clone()]))?;
                    Some((
                        create_physical_expr(&x, &one, &props)?,
                        Rebucketing::new(options.histogram_bins * FINE_PER_BIN),
                    ))
                } else {
                    None
                },
            );
        }
        Ok(State {
            fields,
            seen: false,
            aggs,
            values,
            distinct,
            numbers,
        })
    }
}

impl StreamProfile {
    /// Adds one batch (with the schema the profiler was made for).
    pub fn update(&self, batch: &RecordBatch) -> Result<()> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| Error::Internal("profile state poisoned".into()))?;
        // The write's own columns (a merge's delete flag) are not the table's: only the
        // profiled columns are kept, by name.
        let projected;
        let batch = if batch.num_columns() > state.fields.len() {
            let schema = batch.schema();
            let indices = state
                .fields
                .iter()
                .map(|f| schema.index_of(f.name()))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            projected = batch.project(&indices)?;
            &projected
        } else {
            batch
        };
        let types_match = batch.num_columns() == state.fields.len()
            && batch
                .schema()
                .fields()
                .iter()
                .zip(&state.fields)
                .all(|(a, b)| a.data_type() == b.data_type());
        if !types_match {
            if state.seen || batch.num_columns() != state.fields.len() {
                return Err(Error::Internal(format!(
                    "the profiled stream of `{}` changed its schema to {:?}",
                    self.table,
                    batch.schema()
                )));
            }
            *state = State::new(&batch.schema(), &self.options)?;
        }
        state.seen = true;
        let rows = batch.num_rows();
        let mut evaluated = ahash::AHashMap::new();
        for agg in &mut state.aggs {
            agg.update(batch, &mut evaluated)?;
        }
        let State {
            fields,
            values,
            distinct,
            numbers,
            ..
        } = &mut *state;
        for (i, field) in fields.iter().enumerate() {
            let column = batch.column(i);
            let one = |arr: ArrayRef| {
                RecordBatch::try_new(Arc::new(Schema::new(vec![field.clone()])), vec![arr])
            };
            let overflowed = match &mut values[i] {
                Some(counts) => !counts.add(column)?,
                None => false,
            };
            if overflowed {
                // The sketch and the histogram take over, from every value counted so far (a
                // HyperLogLog sketch does not depend on how often it sees a value; the
                // histogram takes each value with its count).
                let Some((seen, counts)) = values[i].take().map(ValueCounts::finish).transpose()?
                else {
                    continue;
                };
                if let Some(hll) = &mut distinct[i] {
                    hll.update(&one(seen.clone())?, &mut Default::default())?;
                }
                if let Some((x, hist)) = &mut numbers[i] {
                    let xs = x.evaluate(&one(seen)?)?.into_array(counts.len())?;
                    for (v, n) in xs.as_primitive::<Float64Type>().iter().zip(&counts) {
                        if let Some(v) = v {
                            hist.add_n(v, *n);
                        }
                    }
                }
            } else if values[i].is_none() {
                if let Some(hll) = &mut distinct[i] {
                    hll.update(&one(column.clone())?, &mut Default::default())?;
                }
                if let Some((x, hist)) = &mut numbers[i] {
                    let xs = x.evaluate(&one(column.clone())?)?.into_array(rows)?;
                    for v in xs.as_primitive::<Float64Type>().iter().flatten() {
                        hist.add_n(v, 1);
                    }
                }
            }
        }
        Ok(())
    }

    /// The profile of every batch seen, with scope `scope` (no run id, version or size: the
    /// caller knows those).
    pub fn finish(&self, scope: ProfileScope) -> Result<TableProfile> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| Error::Internal("profile state poisoned".into()))?;
        let State {
            aggs,
            values,
            distinct,
            ..
        } = &mut *state;
        let sketched = distinct
            .iter_mut()
            .zip(values.iter())
            .filter_map(|(d, v)| d.as_mut().filter(|_| v.is_none()));
        let scalars = aggs
            .iter_mut()
            .chain(sketched)
            .map(|a| Ok((a.name.clone(), a.acc.evaluate()?)))
            .collect::<Result<Vec<_>>>()?;
        let row = compute::One::from_scalars(scalars)?;
        let (rows, mut columns) = compute::columns_from(&state.fields, &row);
        let bins = self.options.histogram_bins;
        for (i, p) in columns.iter_mut().enumerate() {
            if let Some(counts) = state.values[i].take() {
                let numeric = matches!(p.kind, ColumnKind::Numeric | ColumnKind::Temporal);
                let (values, counts) = counts.finish()?;
                let rows_of = value_rows(&values, &counts, numeric)?;
                compute::finish_values(p, rows_of, rows, &self.options);
            } else if let (Some((_, hist)), Some(lo), Some(hi)) =
                (&state.numbers[i], p.min_value, p.max_value)
            {
                p.histogram = Some(Histogram {
                    edges: compute::edges(lo, hi, bins),
                    counts: hist.rebucket(lo, hi, bins),
                });
            }
        }
        let mut profile = compute::assemble(&self.table, state.fields.len(), rows, columns);
        profile.scope = scope;
        Ok(profile)
    }
}

impl BatchObserver for StreamProfile {
    fn observe(&self, batch: &RecordBatch) -> datafusion::error::Result<()> {
        self.update(batch)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
    }
}

/// Exact counts of a column's distinct non-NULL values, up to `cap` distinct values, interned
/// by DataFusion's hash-aggregation group tables (`GroupValues`, specialized for primitive and
/// string columns), whose group ids index `counts`.
struct ValueCounts {
    groups: Box<dyn GroupValues>,
    counts: Vec<u64>,
    /// Group ids of the last batch (a reused buffer).
    ids: Vec<usize>,
    cap: usize,
}

impl std::fmt::Debug for ValueCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueCounts")
            .field("distinct", &self.counts.len())
            .finish()
    }
}

impl ValueCounts {
    fn new(dt: &DataType, cap: usize) -> Result<Self> {
        let schema = Arc::new(Schema::new(vec![Field::new("v", dt.clone(), true)]));
        Ok(ValueCounts {
            groups: new_group_values(schema, &GroupOrdering::None)?,
            counts: Vec::new(),
            ids: Vec::new(),
            cap,
        })
    }

    /// Counts the non-NULL values of `arr`; false once there are more than `cap` distinct ones
    /// (the batch is counted all the same).
    fn add(&mut self, arr: &ArrayRef) -> Result<bool> {
        if arr.null_count() == arr.len() {
            return Ok(true);
        }
        let arr = if arr.null_count() > 0 {
            arrow::compute::filter(arr, &arrow::compute::is_not_null(arr)?)?
        } else {
            arr.clone()
        };
        self.ids.clear();
        self.groups.intern(&[arr], &mut self.ids)?;
        self.counts.resize(self.groups.len(), 0);
        for g in &self.ids {
            self.counts[*g] += 1;
        }
        Ok(self.counts.len() <= self.cap)
    }

    /// Every distinct value counted, as an array, and its count (index for index).
    fn finish(mut self) -> Result<(ArrayRef, Vec<u64>)> {
        let values = self
            .groups
            .emit(EmitTo::All)?
            .pop()
            .ok_or_else(|| Error::Internal("group values lost their column".into()))?;
        Ok((values, self.counts))
    }
}

/// Every value of `values` as (text, rows, number when `numeric`), as the scan's grouping pass
/// gives them.
fn value_rows(
    values: &ArrayRef,
    counts: &[u64],
    numeric: bool,
) -> Result<Vec<(String, u64, Option<f64>)>> {
    counts
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let text = arrow::util::display::array_value_to_string(values, i)?;
            let number = if numeric {
                compute::scalar_number(&ScalarValue::try_from_array(values, i)?)
            } else {
                None
            };
            Ok((text, *n, number))
        })
        .collect()
}

/// An equal-width histogram whose range is not known in advance: `K` fine buckets of width `w`
/// from `lo`. A value outside `[lo, lo + K·w)` doubles the span (adjacent buckets merge pairwise;
/// the old range becomes the left or right half) until it fits, so memory is fixed and no value
/// is dropped. Non-finite values are not counted (as in the scan, which cannot bucket them).
///
/// [`Rebucketing::rebucket`] assigns each fine bucket, by its midpoint, to one of the final
/// buckets over `[min, max]`. The span ends at most four times the data's range (it only doubles
/// when a value lies outside it), so a fine bucket is at most 1/16 of a final bucket wide (with
/// [`FINE_PER_BIN`] = 64): only values within 1/16 of a bucket width of a bucket edge can be
/// counted in the neighbouring bucket; the total is exact. This is the bounded re-bucketing of
/// streaming histograms (cf. Ben-Haim & Tom-Tov, "A Streaming Parallel Decision Tree
/// Algorithm", JMLR 11, 2010, §2.1, which merges bins instead of splitting the range).
#[derive(Debug)]
pub struct Rebucketing {
    lo: f64,
    /// 0 until two distinct values were seen; all counts are then in bucket 0, at `lo`.
    width: f64,
    counts: Vec<u64>,
}

impl Rebucketing {
    /// A histogram of `k` fine buckets (`k` even, at least 2).
    pub fn new(k: usize) -> Self {
        Rebucketing {
            lo: f64::NAN,
            width: 0.0,
            counts: vec![0; k.max(2) & !1],
        }
    }

    /// Counts `v`, `n` times.
    pub fn add_n(&mut self, v: f64, n: u64) {
        if !v.is_finite() {
            return;
        }
        let k = self.counts.len();
        if self.lo.is_nan() {
            self.lo = v;
        }
        if self.width == 0.0 {
            if v == self.lo {
                self.counts[0] += n;
                return;
            }
            // The second distinct value: a grid over both, each in its half.
            let (a, b) = (self.lo.min(v), self.lo.max(v));
            let at_lo = std::mem::take(&mut self.counts[0]);
            let old = self.lo;
            self.lo = a;
            self.width = (b - a) * 2.0 / k as f64;
            if !(self.width > 0.0 && self.width.is_finite()) {
                // Too close or too far apart to grid: keep the first value only.
                self.lo = old;
                self.width = 0.0;
                self.counts[0] = at_lo;
                return;
            }
            let i = self.index(old);
            self.counts[i] += at_lo;
        }
        loop {
            let x = ((v - self.lo) / self.width).floor();
            if x >= 0.0 && x < k as f64 {
                self.counts[x as usize] += n;
                return;
            }
            if !(self.width * 2.0).is_finite() {
                return;
            }
            let half = k / 2;
            let mut merged = vec![0u64; k];
            if x < 0.0 {
                // Grow to the left: the old range becomes the right half.
                for (j, c) in self.counts.iter().enumerate() {
                    merged[half + j / 2] += c;
                }
                self.lo -= self.width * k as f64;
            } else {
                for (j, c) in self.counts.iter().enumerate() {
                    merged[j / 2] += c;
                }
            }
            self.width *= 2.0;
            self.counts = merged;
        }
    }

    fn index(&self, v: f64) -> usize {
        (((v - self.lo) / self.width).floor().max(0.0) as usize).min(self.counts.len() - 1)
    }

    /// The counts re-bucketed onto `bins` equal-width buckets over `[lo, hi]` (the column's min
    /// and max), each fine bucket by its midpoint, clamped as [`compute::bucket`] clamps.
    pub fn rebucket(&self, lo: f64, hi: f64, bins: usize) -> Vec<u64> {
        let mut out = vec![0u64; bins];
        if bins == 0 {
            return out;
        }
        for (j, c) in self.counts.iter().enumerate().filter(|(_, c)| **c > 0) {
            let mid = if self.width == 0.0 {
                self.lo
            } else {
                self.lo + (j as f64 + 0.5) * self.width
            };
            out[compute::bucket(mid.clamp(lo, hi), lo, hi, bins)] += c;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(values: &[f64], bins: usize) -> Vec<u64> {
        let lo = values.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut out = vec![0; bins];
        for v in values {
            out[compute::bucket(*v, lo, hi, bins)] += 1;
        }
        out
    }

    /// Values no closer than 1/16 of a bucket width to an edge land in their exact bucket.
    #[test]
    fn rebucketing_matches_exact_buckets_away_from_edges() {
        let bins = 20;
        // Deterministic pseudo-random values, first in a narrow range then spreading both ways,
        // so the grid grows left and right many times.
        let mut seed = 7u64;
        let mut values = Vec::new();
        for i in 0..50_000u64 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (seed >> 11) as f64 / (1u64 << 53) as f64;
            let spread = 1.0 + (i as f64 / 1000.0).powi(3);
            values.push((u - 0.3) * spread);
        }
        let lo = values.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let width = (hi - lo) / bins as f64;
        let mut h = Rebucketing::new(bins * FINE_PER_BIN);
        for v in &values {
            h.add_n(*v, 1);
        }
        let got = h.rebucket(lo, hi, bins);
        let want = exact(&values, bins);
        assert_eq!(got.iter().sum::<u64>(), values.len() as u64);
        let near_edge = values
            .iter()
            .filter(|v| {
                let f = (*v - lo) / width;
                (f - f.round()).abs() * 16.0 < 1.0
            })
            .count() as u64;
        let moved: u64 = got
            .iter()
            .zip(&want)
            .map(|(a, b)| a.abs_diff(*b))
            .sum::<u64>()
            / 2;
        assert!(
            moved <= near_edge,
            "{moved} values moved, only {near_edge} near an edge: {got:?} vs {want:?}"
        );
    }

    #[test]
    fn rebucketing_handles_one_value_and_non_finite() {
        let mut h = Rebucketing::new(40);
        for _ in 0..5 {
            h.add_n(3.0, 1);
        }
        h.add_n(f64::NAN, 1);
        h.add_n(f64::INFINITY, 1);
        assert_eq!(h.rebucket(3.0, 3.0, 4), vec![5, 0, 0, 0]);
        h.add_n(-1.0, 1);
        assert_eq!(h.rebucket(-1.0, 3.0, 4), vec![1, 0, 0, 5]);
    }

    /// The stream profile equals the scanning profile on the same rows (sketch metrics are
    /// deterministic for one batch order; the histogram of a high-cardinality column is within
    /// the re-bucketing bound).
    #[tokio::test]
    async fn stream_profile_equals_scan() {
        use arrow::array::{Date32Array, Decimal128Array, Float64Array, Int64Array, StringArray};
        use std::sync::Arc;
        let n = 5000usize;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("grade", DataType::Utf8, true),
            Field::new("amount", DataType::Decimal128(12, 2), true),
            Field::new("score", DataType::Float64, true),
            Field::new("day", DataType::Date32, true),
        ]));
        let batches: Vec<RecordBatch> = (0..5)
            .map(|b| {
                let ids: Vec<i64> = (0..n as i64).map(|i| b * n as i64 + i).collect();
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int64Array::from(ids.clone())),
                        Arc::new(StringArray::from_iter(ids.iter().map(|i| {
                            (i % 7 != 0).then(|| ["a", "b", "c (x, y)"][(*i % 3) as usize])
                        }))),
                        Arc::new(
                            Decimal128Array::from_iter(
                                ids.iter()
                                    .map(|i| (i % 11 != 0).then_some((i * 37 % 100_003) as i128)),
                            )
                            .with_precision_and_scale(12, 2)
                            .unwrap(),
                        ),
                        Arc::new(Float64Array::from_iter(
                            ids.iter()
                                .map(|i| (i % 5 != 0).then_some((*i as f64).sqrt())),
                        )),
                        Arc::new(Date32Array::from_iter(
                            ids.iter().map(|i| Some(18000 + (*i % 400) as i32)),
                        )),
                    ],
                )
                .unwrap()
            })
            .collect();
        let options = ProfileOptions {
            exact_distinct_max: 1000,
            ..ProfileOptions::default()
        };
        let stream = StreamProfile::new("t", &schema, options.clone()).unwrap();
        for b in &batches {
            stream.update(b).unwrap();
        }
        let got = stream.finish(ProfileScope::Appended).unwrap();
        let ctx = datafusion::prelude::SessionContext::new();
        let df = ctx.read_batches(batches).unwrap();
        let want = compute::profile_dataframe("t", df, &options, None)
            .await
            .unwrap();
        assert_eq!(got.row_count, want.row_count);
        assert_eq!(got.scope, ProfileScope::Appended);
        for (g, w) in got.columns.iter().zip(&want.columns) {
            assert_eq!(g.null_count, w.null_count, "{}", g.name);
            assert_eq!(g.min, w.min, "{}", g.name);
            assert_eq!(g.max, w.max, "{}", g.name);
            assert_eq!(g.distinct_exact, w.distinct_exact, "{}", g.name);
            assert_eq!(g.distinct_count, w.distinct_count, "{}", g.name);
            assert_eq!(g.top_k, w.top_k, "{}", g.name);
            assert_eq!(g.min_length, w.min_length, "{}", g.name);
            assert_eq!(g.max_length, w.max_length, "{}", g.name);
            let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                (a, b) => a == b,
            };
            assert!(close(g.mean, w.mean), "{} mean", g.name);
            assert!(close(g.stddev, w.stddev), "{} stddev", g.name);
            match (&g.histogram, &w.histogram) {
                (Some(gh), Some(wh)) => {
                    assert_eq!(gh.edges, wh.edges, "{}", g.name);
                    assert_eq!(
                        gh.counts.iter().sum::<u64>(),
                        wh.counts.iter().sum::<u64>(),
                        "{}",
                        g.name
                    );
                    if g.distinct_exact {
                        assert_eq!(gh.counts, wh.counts, "{}", g.name);
                    }
                }
                (a, b) => assert_eq!(a.is_some(), b.is_some(), "{} histogram", g.name),
            }
        }
        // The high-cardinality columns were not exact, the small ones were.
        assert!(!got.column("id").unwrap().distinct_exact);
        assert!(got.column("grade").unwrap().distinct_exact);
        assert!(got.column("day").unwrap().distinct_exact);
    }
}
