//! Drift: a new profile against the previous profile of the same table.
//!
//! Measures (thresholds from `[profile.drift]`, each with action `warn` or `fail`):
//! - `row_count_change_pct`: `|new − old| / max(old, 1) × 100`;
//! - `null_rate_change_pp`: the change of a column's NULL proportion in percentage points;
//! - `distinct_change_pct`: `|new − old| / max(old, 1) × 100` of a column's distinct count;
//! - `mean_shift_stddevs`: `|new mean − old mean| / old stddev` (a constant column that moves
//!   counts as an infinite shift, reported as 1e9);
//! - `psi`: the population stability index `Σ (pᵢ − qᵢ) ln(pᵢ / qᵢ)` between the two histograms,
//!   both re-binned onto one common grid over the union of their ranges (mass spread uniformly
//!   within each bucket; empty buckets smoothed with 1e-4).
//!
//! Columns are matched by name; new or dropped columns are not drift.

use serde::{Deserialize, Serialize};

use super::{Histogram, TableProfile};
use crate::config::{DriftAction, DriftMetric, DriftRule};

/// Reported instead of infinity (JSON has no infinity).
const HUGE: f64 = 1e9;

/// One breached drift threshold.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DriftFinding {
    /// The measure.
    pub metric: DriftMetric,
    /// The column, for column measures.
    pub column: Option<String>,
    /// The measured value.
    pub value: f64,
    /// The threshold it exceeded.
    pub max: f64,
    /// What the breach does.
    pub action: DriftAction,
}

impl std::fmt::Display for DriftFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let metric = serde_json::to_value(self.metric)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        match &self.column {
            Some(c) => write!(
                f,
                "{metric} of column `{c}` is {:.4} (max {})",
                self.value, self.max
            ),
            None => write!(f, "{metric} is {:.4} (max {})", self.value, self.max),
        }
    }
}

/// The breaches of `rules` between `old` and `new`.
pub fn compare(old: &TableProfile, new: &TableProfile, rules: &[DriftRule]) -> Vec<DriftFinding> {
    let mut out = Vec::new();
    let mut check = |rule: &DriftRule, column: Option<&str>, value: Option<f64>| {
        if let Some(v) = value {
            if v > rule.max {
                out.push(DriftFinding {
                    metric: rule.metric,
                    column: column.map(str::to_string),
                    value: v.min(HUGE),
                    max: rule.max,
                    action: rule.action,
                });
            }
        }
    };
    for rule in rules {
        if rule.metric == DriftMetric::RowCountChangePct {
            check(rule, None, Some(pct_change(old.row_count, new.row_count)));
            continue;
        }
        for n in &new.columns {
            let Some(o) = old.column(&n.name) else {
                continue;
            };
            let value = match rule.metric {
                DriftMetric::RowCountChangePct => None,
                DriftMetric::NullRateChangePp => {
                    Some((n.null_proportion - o.null_proportion).abs() * 100.0)
                }
                DriftMetric::DistinctChangePct => match (o.distinct_count, n.distinct_count) {
                    (Some(a), Some(b)) => Some(pct_change(a, b)),
                    _ => None,
                },
                DriftMetric::MeanShiftStddevs => match (o.mean, n.mean, o.stddev) {
                    (Some(a), Some(b), Some(sd)) if sd > 0.0 => Some((b - a).abs() / sd),
                    (Some(a), Some(b), _) if a != b => Some(HUGE),
                    (Some(_), Some(_), _) => Some(0.0),
                    _ => None,
                },
                DriftMetric::Psi => match (&o.histogram, &n.histogram) {
                    (Some(a), Some(b)) => psi(a, b),
                    _ => None,
                },
            };
            check(rule, Some(&n.name), value);
        }
    }
    out
}

fn pct_change(old: u64, new: u64) -> f64 {
    (new as f64 - old as f64).abs() / (old.max(1) as f64) * 100.0
}

/// Population stability index of two histograms (`None` when either is empty).
pub fn psi(old: &Histogram, new: &Histogram) -> Option<f64> {
    let lo = old.edges.first()?.min(*new.edges.first()?);
    let hi = old.edges.last()?.max(*new.edges.last()?);
    let bins = old.counts.len().max(new.counts.len()).max(1);
    let p = rebin(old, lo, hi, bins)?;
    let q = rebin(new, lo, hi, bins)?;
    Some(p.iter().zip(&q).map(|(p, q)| (q - p) * (q / p).ln()).sum())
}

/// Proportions of `h` on `bins` equal buckets over `[lo, hi]`, smoothed so none is zero.
fn rebin(h: &Histogram, lo: f64, hi: f64, bins: usize) -> Option<Vec<f64>> {
    let total: u64 = h.counts.iter().sum();
    if total == 0 {
        return None;
    }
    let width = (hi - lo) / bins as f64;
    let index = |x: f64| -> usize {
        if width > 0.0 {
            (((x - lo) / width).floor().max(0.0) as usize).min(bins - 1)
        } else {
            0
        }
    };
    let mut out = vec![0.0; bins];
    for (i, &count) in h.counts.iter().enumerate() {
        let (a, b) = (h.edges[i], h.edges[i + 1]);
        let c = count as f64;
        if b <= a || width <= 0.0 {
            out[index(a)] += c;
            continue;
        }
        for (g, slot) in out.iter_mut().enumerate() {
            let (ga, gb) = (lo + width * g as f64, lo + width * (g + 1) as f64);
            let overlap = (b.min(gb) - a.max(ga)).max(0.0);
            *slot += c * overlap / (b - a);
        }
    }
    let sum: f64 = out.iter().sum();
    Some(out.into_iter().map(|x| (x / sum).max(1e-4)).collect())
}
