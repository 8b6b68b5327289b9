//! Key-range partitions for parallel reads.
//!
//! The key's MIN and MAX (inside the extraction window) are split into `n` equal-width ranges.
//! Equal width costs one index-friendly MIN/MAX query; quantile splits would need a full scan
//! (NTILE) on the source first. On a skewed key the ranges hold unequal row counts, which only
//! makes some partitions slower, never wrong: coverage is exact by construction because the
//! predicates are half-open and chained, and NULL keys go to the first partition:
//!
//! - first: `key < b1 OR key IS NULL`
//! - middle: `b(i) <= key AND key < b(i+1)`
//! - last: `key >= b(n-1)`

/// A key-range predicate with its bound values, to be bound as parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// Inclusive lower bound (`None`: unbounded, and NULL keys belong here).
    pub lo: Option<i64>,
    /// Exclusive upper bound (`None`: unbounded).
    pub hi: Option<i64>,
}

impl KeyRange {
    /// The whole key space, NULLs included.
    pub fn all() -> KeyRange {
        KeyRange { lo: None, hi: None }
    }
}

/// Splits `[min, max]` into at most `n` chained ranges covering every value and NULL.
pub fn split(min: i64, max: i64, n: usize) -> Vec<KeyRange> {
    let n = n.max(1) as i128;
    let (min, max) = (min.min(max) as i128, min.max(max) as i128);
    let width = max - min + 1;
    let n = n.min(width);
    let mut bounds: Vec<i64> = (1..n).map(|i| (min + width * i / n) as i64).collect();
    bounds.dedup();
    let mut out = Vec::with_capacity(bounds.len() + 1);
    let mut lo = None;
    for b in bounds {
        out.push(KeyRange { lo, hi: Some(b) });
        lo = Some(b);
    }
    out.push(KeyRange { lo, hi: None });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(ranges: &[KeyRange], k: Option<i64>) -> Vec<usize> {
        ranges
            .iter()
            .enumerate()
            .filter(|(_, r)| match k {
                None => r.lo.is_none(),
                Some(k) => r.lo.is_none_or(|lo| k >= lo) && r.hi.is_none_or(|hi| k < hi),
            })
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn every_key_and_null_lands_in_exactly_one_range() {
        for (min, max, n) in [
            (1, 1000, 4),
            (-5, 5, 3),
            (7, 7, 4),
            (0, 2, 8),
            (i64::MIN, i64::MAX, 5),
        ] {
            let ranges = split(min, max, n);
            assert!(ranges.len() <= n.max(1));
            assert_eq!(owner(&ranges, None), vec![0]);
            let probes = [
                min,
                max,
                min.saturating_add(1),
                max.saturating_sub(1),
                (min / 2 + max / 2),
            ];
            for k in probes.into_iter().chain(ranges.iter().filter_map(|r| r.hi)) {
                assert_eq!(owner(&ranges, Some(k)).len(), 1, "key {k} in {ranges:?}");
            }
        }
    }

    #[test]
    fn one_partition_is_everything() {
        assert_eq!(split(1, 10, 1), vec![KeyRange::all()]);
    }
}
