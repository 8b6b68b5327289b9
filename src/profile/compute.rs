//! The profiler: two scans of a table through DataFusion aggregates.
//!
//! 1. **Aggregate pass** (one `SELECT agg, agg, ... FROM t`): row count; per column the non-NULL
//!    count, `approx_distinct` (HyperLogLog with 2^14 registers: standard error about 0.8 %),
//!    min and max; for numeric columns mean, sample stddev and p05, p25, p50, p75 and p95 from one
//!    t-digest per column ([`super::sketch`]); for strings min, max and mean character length.
//! 2. **Grouping pass** (one `GROUP BY GROUPING SETS ((k1), (k2), ...)`, a single scan): the value
//!    itself for every column whose approximate distinct count is at most `exact_distinct_max`,
//!    which gives those columns an exact distinct count, exact top-k frequencies and (numeric and
//!    temporal ones) an exact histogram from the value counts; and an equal-width histogram bucket
//!    (edges from pass 1's min and max) for every other numeric and temporal column. Columns above
//!    the threshold keep the HyperLogLog count and get no top-k.
//!
//! The second pass needs pass 1's min and max (histogram edges) and cardinalities (which columns
//! are cheap to group), so two scans is the least this design can do with DataFusion's built-in
//! aggregates. In `sample` mode the sample is drawn once and cached in memory, so both passes see
//! the same rows.

use std::collections::BTreeMap;

use arrow::array::{Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field};
use datafusion::common::ScalarValue;
use datafusion::functions::expr_fn::{character_length, floor, random};
use datafusion::functions_aggregate::expr_fn::{approx_distinct, avg, count, max, min, stddev};
use datafusion::logical_expr::{cast, lit, when, Expr, GroupingSet};
use datafusion::prelude::DataFrame;

use super::{ColumnKind, ColumnProfile, Histogram, Quantile, TableProfile, ValueFrequency};
use crate::error::{Error, Result};

/// The quantiles every numeric column gets.
pub const QUANTILES: [f64; 5] = [0.05, 0.25, 0.5, 0.75, 0.95];

/// What to compute.
#[derive(Debug, Clone)]
pub struct ProfileOptions {
    /// Most frequent values per low-cardinality column (0: none).
    pub top_k: usize,
    /// Histogram buckets (0: none).
    pub histogram_bins: usize,
    /// Largest approximate cardinality that gets an exact distinct count and top-k.
    pub exact_distinct_max: u64,
    /// Sample down to about this many rows when the table is larger (`None`: every row).
    pub sample_rows: Option<u64>,
}

impl Default for ProfileOptions {
    fn default() -> Self {
        let s = crate::config::ProfileSettings::default();
        ProfileOptions {
            top_k: s.top_k,
            histogram_bins: s.histogram_bins,
            exact_distinct_max: s.exact_distinct_max,
            sample_rows: None,
        }
    }
}

/// The profiling kind of an Arrow type.
pub fn kind_of(dt: &DataType) -> ColumnKind {
    use DataType::*;
    match dt {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Float16 | Float32
        | Float64 | Decimal32(..) | Decimal64(..) | Decimal128(..) | Decimal256(..) => {
            ColumnKind::Numeric
        }
        Date32 | Date64 | Timestamp(..) | Time32(_) | Time64(_) => ColumnKind::Temporal,
        Utf8 | LargeUtf8 | Utf8View => ColumnKind::String,
        Boolean => ColumnKind::Boolean,
        _ => ColumnKind::Other,
    }
}

/// A numeric (f64) view of a numeric or temporal column: epoch units for temporal types.
pub(crate) fn as_number(e: Expr, dt: &DataType) -> Expr {
    match dt {
        DataType::Date32 | DataType::Time32(_) => cast(cast(e, DataType::Int32), DataType::Float64),
        DataType::Date64 | DataType::Timestamp(..) | DataType::Time64(_) => {
            cast(cast(e, DataType::Int64), DataType::Float64)
        }
        _ => cast(e, DataType::Float64),
    }
}

/// The argument `approx_distinct` accepts for a type, if any.
fn distinct_arg(e: Expr, dt: &DataType) -> Option<Expr> {
    use DataType::*;
    match dt {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Date32 | Date64
        | Timestamp(..) | Time32(_) | Time64(_) | Utf8 | LargeUtf8 | Utf8View | Binary
        | LargeBinary => Some(e),
        Boolean => Some(cast(e, Int8)),
        dt if super::sketch::has_distinct_key(dt) => Some(super::sketch::distinct_key(e)),
        Decimal256(..) => Some(cast(e, Utf8)),
        _ => None,
    }
}

/// A column reference that survives any name (no identifier parsing).
pub(crate) fn column(name: &str) -> Expr {
    Expr::Column(datafusion::common::Column::from_name(name))
}

/// Profiles `df` (every row, or a sample when `options.sample_rows` is below the row count).
///
/// `known_rows` is the row count from table metadata, if the caller has it; it decides sampling
/// without a counting scan.
pub async fn profile_dataframe(
    table: &str,
    df: DataFrame,
    options: &ProfileOptions,
    known_rows: Option<u64>,
) -> Result<TableProfile> {
    let fields: Vec<Field> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut sampled_from = None;
    let df = match options.sample_rows {
        Some(limit) => {
            let rows = match known_rows {
                Some(r) => r,
                None => df.clone().count().await? as u64,
            };
            if rows > limit {
                sampled_from = Some(rows);
                let fraction = limit as f64 / rows as f64;
                df.filter(random().lt(lit(fraction)))?.cache().await?
            } else {
                df
            }
        }
        None => df,
    };

    // Pass 1: one aggregate over every column.
    let aggs = aggregates(&fields);
    let batches = df.clone().aggregate(vec![], aggs)?.collect().await?;
    let row = One::from_batches(&batches);
    let (rows, mut columns) = columns_from(&fields, &row);

    // Pass 2: one GROUPING SETS scan. A low-cardinality column is grouped by its own value (exact
    // distinct count, top-k, and for numeric/temporal columns the histogram from the value counts);
    // any other numeric/temporal column is grouped by its histogram bucket. Each result row
    // belongs to the one set whose key is not NULL; NULL groups are skipped (pass 1 counted them).
    let bins = options.histogram_bins;
    let mut keys: Vec<(usize, bool, Expr)> = Vec::new(); // (column, is_histogram, key expr)
    for (i, (f, p)) in fields.iter().zip(&columns).enumerate() {
        let small = p
            .distinct_count
            .is_some_and(|d| d <= options.exact_distinct_max);
        if small && p.kind != ColumnKind::Other {
            keys.push((i, false, column(f.name())));
        } else if bins > 0 {
            if let (Some(lo), Some(hi)) = (p.min_value, p.max_value) {
                let x = as_number(column(f.name()), f.data_type());
                // The same bucketing as `bucket` below.
                let key = if hi > lo {
                    let width = (hi - lo) / bins as f64;
                    when(x.clone().lt_eq(lit(lo)), lit(0i64))
                        .when(x.clone().gt_eq(lit(hi)), lit(bins as i64 - 1))
                        .otherwise(cast(
                            floor((x.clone() - lit(lo)) / lit(width)),
                            DataType::Int64,
                        ))?
                } else {
                    when(x.is_not_null(), lit(0i64)).end()?
                };
                keys.push((i, true, key));
            }
        }
    }
    let mut scans = 1;
    if rows > 0 && !keys.is_empty() {
        scans = 2;
        let names: Vec<String> = (0..keys.len()).map(|n| format!("k{n}")).collect();
        let projected = df.select(
            keys.iter()
                .zip(&names)
                .map(|((_, _, e), n)| e.clone().alias(n))
                .collect::<Vec<_>>(),
        )?;
        let sets = names.iter().map(|n| vec![column(n)]).collect();
        let batches = projected
            .aggregate(
                vec![Expr::GroupingSet(GroupingSet::GroupingSets(sets))],
                vec![count(lit(1)).alias("n")],
            )?
            .collect()
            .await?;
        let mut hist: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        // Per value column: (value as text, count, value as a number).
        let mut values: BTreeMap<usize, Vec<(String, u64, Option<f64>)>> = BTreeMap::new();
        for b in &batches {
            let n = b
                .column_by_name("n")
                .and_then(|c| arrow::compute::cast(c, &DataType::Int64).ok())
                .ok_or_else(|| Error::Internal("grouping pass lost its count".into()))?;
            let n = n
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| Error::Internal("count is not int64".into()))?;
            for (k, name) in names.iter().enumerate() {
                let (i, is_hist, _) = &keys[k];
                let Some(arr) = b.column_by_name(name) else {
                    continue;
                };
                if *is_hist {
                    let arr = arrow::compute::cast(arr, &DataType::Int64)?;
                    let arr = arr
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .ok_or_else(|| Error::Internal("bucket is not int64".into()))?;
                    let counts = hist.entry(*i).or_insert_with(|| vec![0; bins]);
                    for r in (0..b.num_rows()).filter(|r| arr.is_valid(*r)) {
                        let bucket = (arr.value(r).max(0) as usize).min(bins - 1);
                        counts[bucket] += n.value(r) as u64;
                    }
                } else {
                    let numeric =
                        matches!(columns[*i].kind, ColumnKind::Numeric | ColumnKind::Temporal);
                    let list = values.entry(*i).or_default();
                    for r in (0..b.num_rows()).filter(|r| arr.is_valid(*r)) {
                        let text = arrow::util::display::array_value_to_string(arr, r)?;
                        let number = if numeric {
                            scalar_number(&ScalarValue::try_from_array(arr, r)?)
                        } else {
                            None
                        };
                        list.push((text, n.value(r) as u64, number));
                    }
                }
            }
        }
        for (i, counts) in hist {
            let p = &mut columns[i];
            if let (Some(lo), Some(hi)) = (p.min_value, p.max_value) {
                p.histogram = Some(Histogram {
                    edges: edges(lo, hi, bins),
                    counts,
                });
            }
        }
        for (i, _, _) in keys.iter().filter(|(_, h, _)| !h) {
            let list = values.remove(i).unwrap_or_default();
            finish_values(&mut columns[*i], list, rows, options);
        }
    }
    let mut profile = assemble(table, fields.len(), rows, columns);
    profile.row_count = sampled_from.unwrap_or(rows);
    profile.sampled_rows = sampled_from.map(|_| rows);
    profile.scans = scans;
    Ok(profile)
}

/// The pass-1 aggregates of every column (see the module documentation), each aliased `rows` or
/// `c<i>_<metric>`; [`columns_from`] reads their results.
pub(crate) fn aggregates(fields: &[Field]) -> Vec<Expr> {
    let mut aggs = vec![count(lit(1)).alias("rows")];
    for (i, f) in fields.iter().enumerate() {
        let c = column(f.name());
        let dt = f.data_type();
        let kind = kind_of(dt);
        aggs.push(count(c.clone()).alias(format!("c{i}_nonnull")));
        if let Some(arg) = distinct_arg(c.clone(), dt) {
            aggs.push(approx_distinct(arg).alias(format!("c{i}_distinct")));
        }
        if kind != ColumnKind::Other {
            aggs.push(min(c.clone()).alias(format!("c{i}_min")));
            aggs.push(max(c.clone()).alias(format!("c{i}_max")));
        }
        match kind {
            ColumnKind::Numeric => {
                let x = as_number(c.clone(), dt);
                aggs.push(avg(x.clone()).alias(format!("c{i}_mean")));
                aggs.push(stddev(x.clone()).alias(format!("c{i}_stddev")));
                aggs.push(super::sketch::quantiles(x).alias(format!("c{i}_q")));
            }
            ColumnKind::String => {
                let len = cast(character_length(c.clone()), DataType::Int64);
                aggs.push(min(len.clone()).alias(format!("c{i}_minlen")));
                aggs.push(max(len.clone()).alias(format!("c{i}_maxlen")));
                aggs.push(avg(cast(len, DataType::Float64)).alias(format!("c{i}_meanlen")));
            }
            _ => {}
        }
    }
    aggs
}

/// The row count and the column profiles from the results of [`aggregates`].
pub(crate) fn columns_from(fields: &[Field], row: &One) -> (u64, Vec<ColumnProfile>) {
    let rows = row.u64("rows").unwrap_or(0);

    let mut columns = Vec::with_capacity(fields.len());
    for (i, f) in fields.iter().enumerate() {
        let dt = f.data_type();
        let kind = kind_of(dt);
        let nonnull = row.u64(&format!("c{i}_nonnull")).unwrap_or(0);
        let min_s = row.scalar(&format!("c{i}_min"));
        let max_s = row.scalar(&format!("c{i}_max"));
        let numeric = matches!(kind, ColumnKind::Numeric | ColumnKind::Temporal);
        let quantiles: Vec<Quantile> = QUANTILES
            .iter()
            .zip(row.floats(&format!("c{i}_q")))
            .filter(|(_, v)| v.is_finite())
            .map(|(q, value)| Quantile {
                quantile: *q,
                value,
            })
            .collect();
        // An estimate is never more than the values it counts.
        let distinct = row
            .u64(&format!("c{i}_distinct"))
            .map(|d| d.min(nonnull.min(rows)));
        columns.push(ColumnProfile {
            name: f.name().clone(),
            data_type: dt.to_string(),
            kind,
            null_count: rows - nonnull.min(rows),
            null_proportion: ratio(rows - nonnull.min(rows), rows),
            distinct_count: distinct,
            distinct_proportion: distinct.map(|d| ratio(d, rows)),
            distinct_exact: false,
            min: row.text(&format!("c{i}_min")),
            max: row.text(&format!("c{i}_max")),
            min_value: min_s.as_ref().filter(|_| numeric).and_then(scalar_number),
            max_value: max_s.as_ref().filter(|_| numeric).and_then(scalar_number),
            mean: row.f64(&format!("c{i}_mean")),
            stddev: row.f64(&format!("c{i}_stddev")),
            median: quantiles
                .iter()
                .find(|q| q.quantile == 0.5)
                .map(|q| q.value),
            quantiles,
            min_length: row.u64(&format!("c{i}_minlen")),
            max_length: row.u64(&format!("c{i}_maxlen")),
            mean_length: row.f64(&format!("c{i}_meanlen")),
            top_k: Vec::new(),
            histogram: None,
        });
    }

    (rows, columns)
}

/// Completes a column whose every distinct non-NULL value was counted (`list`: value as text,
/// rows, value as a number): exact distinct count, top-k and, with numbers, the histogram.
pub(crate) fn finish_values(
    p: &mut ColumnProfile,
    list: Vec<(String, u64, Option<f64>)>,
    rows: u64,
    options: &ProfileOptions,
) {
    let bins = options.histogram_bins;
    if let (Some(lo), Some(hi), true) = (p.min_value, p.max_value, bins > 0) {
        let mut counts = vec![0u64; bins];
        for (_, count, number) in &list {
            if let Some(v) = number {
                counts[bucket(*v, lo, hi, bins)] += count;
            }
        }
        p.histogram = Some(Histogram {
            edges: edges(lo, hi, bins),
            counts,
        });
    }
    p.distinct_count = Some(list.len() as u64);
    p.distinct_proportion = Some(ratio(list.len() as u64, rows));
    p.distinct_exact = true;
    let mut top: Vec<ValueFrequency> = list
        .into_iter()
        .map(|(value, count, _)| ValueFrequency { value, count })
        .collect();
    top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
    top.truncate(options.top_k);
    p.top_k = top;
}

/// A profile of `rows` rows with these columns; an empty table's distinct counts are an exact 0.
pub(crate) fn assemble(
    table: &str,
    column_count: usize,
    rows: u64,
    mut columns: Vec<ColumnProfile>,
) -> TableProfile {
    if rows == 0 {
        for p in &mut columns {
            p.distinct_count = Some(0);
            p.distinct_proportion = Some(0.0);
            p.distinct_exact = true;
        }
    }
    TableProfile {
        table: table.to_string(),
        run_id: String::new(),
        profiled_at_ms: chrono::Utc::now().timestamp_millis(),
        row_count: rows,
        column_count: column_count as u64,
        size_bytes: None,
        files: None,
        version: None,
        sampled_rows: None,
        scans: 0,
        scope: super::ProfileScope::Table,
        columns,
        drift: Vec::new(),
    }
}

/// Equal-width bucket edges over `[lo, hi]`.
pub(crate) fn edges(lo: f64, hi: f64, bins: usize) -> Vec<f64> {
    let width = (hi - lo) / bins as f64;
    (0..=bins).map(|b| lo + width * b as f64).collect()
}

/// The bucket of `v`: the last bucket is closed, values outside `[lo, hi]` are clamped (the same
/// rule as the SQL bucket expression of the grouping pass).
pub(crate) fn bucket(v: f64, lo: f64, hi: f64, bins: usize) -> usize {
    if v <= lo || hi <= lo {
        0
    } else if v >= hi {
        bins - 1
    } else {
        (((v - lo) / ((hi - lo) / bins as f64)).floor() as usize).min(bins - 1)
    }
}

pub(crate) fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// A numeric or temporal scalar as f64 (epoch units for temporal values).
pub fn scalar_number(v: &ScalarValue) -> Option<f64> {
    use ScalarValue::*;
    match v {
        Date32(Some(d)) => Some(*d as f64),
        Date64(Some(d)) => Some(*d as f64),
        TimestampSecond(Some(t), _)
        | TimestampMillisecond(Some(t), _)
        | TimestampMicrosecond(Some(t), _)
        | TimestampNanosecond(Some(t), _) => Some(*t as f64),
        Time32Second(Some(t)) | Time32Millisecond(Some(t)) => Some(*t as f64),
        Time64Microsecond(Some(t)) | Time64Nanosecond(Some(t)) => Some(*t as f64),
        other if other.is_null() => None,
        other => match other.cast_to(&DataType::Float64) {
            Ok(Float64(Some(x))) if x.is_finite() => Some(x),
            _ => None,
        },
    }
}

/// The single row of an aggregate without GROUP BY: each result by name, as a one-row array.
pub(crate) struct One {
    values: std::collections::HashMap<String, arrow::array::ArrayRef>,
}

impl One {
    /// The first non-empty row of an aggregate's result batches.
    fn from_batches(batches: &[RecordBatch]) -> Self {
        let values = batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .map(|b| {
                b.schema()
                    .fields()
                    .iter()
                    .zip(b.columns())
                    .map(|(f, c)| (f.name().clone(), c.slice(0, 1)))
                    .collect()
            })
            .unwrap_or_default();
        One { values }
    }

    /// Results given as scalars (an accumulator's `evaluate`), by name.
    pub(crate) fn from_scalars(scalars: Vec<(String, ScalarValue)>) -> Result<Self> {
        let values = scalars
            .into_iter()
            .map(|(name, v)| Ok((name, v.to_array()?)))
            .collect::<Result<_>>()?;
        Ok(One { values })
    }

    fn get(&self, name: &str) -> Option<&arrow::array::ArrayRef> {
        self.values.get(name)
    }

    fn scalar(&self, name: &str) -> Option<ScalarValue> {
        let arr = self.get(name)?;
        ScalarValue::try_from_array(arr, 0)
            .ok()
            .filter(|v| !v.is_null())
    }

    /// The values of a `List<Float64>` result (empty when NULL).
    fn floats(&self, name: &str) -> Vec<f64> {
        let Some(arr) = self.get(name) else {
            return Vec::new();
        };
        let Some(list) = arr.as_any().downcast_ref::<arrow::array::ListArray>() else {
            return Vec::new();
        };
        if list.is_null(0) {
            return Vec::new();
        }
        let values = list.value(0);
        values
            .as_any()
            .downcast_ref::<arrow::array::Float64Array>()
            .map(|a| a.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
            .unwrap_or_default()
    }

    /// The value as Arrow displays it (decimals with their scale, ISO timestamps).
    fn text(&self, name: &str) -> Option<String> {
        let arr = self.get(name)?;
        if arr.is_null(0) {
            return None;
        }
        arrow::util::display::array_value_to_string(arr, 0).ok()
    }

    fn f64(&self, name: &str) -> Option<f64> {
        match self.scalar(name)?.cast_to(&DataType::Float64).ok()? {
            ScalarValue::Float64(Some(x)) if x.is_finite() => Some(x),
            _ => None,
        }
    }

    fn u64(&self, name: &str) -> Option<u64> {
        match self.scalar(name)?.cast_to(&DataType::UInt64).ok()? {
            ScalarValue::UInt64(Some(x)) => Some(x),
            _ => None,
        }
    }
}
