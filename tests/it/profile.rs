//! Profiling, drift, the HTML report and the accepted_values / range / relationships expectations.
//!
//! Profile values are checked against answers computed here from the raw values (sorting for
//! quantiles, hash sets for distinct counts), or with exact SQL over the lake tables.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::{Date32Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::SessionContext;
use smelter::config::{DriftAction, DriftMetric, DriftRule};
use smelter::profile::{drift, profile_dataframe, ProfileOptions, ProfileScope, TableProfile};

use crate::support::{code, stderr, Project, ONE_TABLE};

const N: usize = 200_000;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Rows of a generated table: `x` is uniform on [0, 1000) shifted by `shift`, NULL every 20th row.
struct Data {
    id: Vec<i64>,
    x: Vec<Option<f64>>,
    cat: Vec<Option<String>>,
    day: Vec<i32>,
}

fn data(seed: u64, shift: f64) -> Data {
    let cats = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"];
    let mut d = Data {
        id: Vec::with_capacity(N),
        x: Vec::with_capacity(N),
        cat: Vec::with_capacity(N),
        day: Vec::with_capacity(N),
    };
    for i in 0..N as u64 {
        let h = splitmix(seed ^ i);
        d.id.push(i as i64 * 3 + 7);
        d.x.push((i % 20 != 0).then(|| (h % 1_000_000) as f64 / 1000.0 + shift));
        // Skewed categories: alpha most frequent; NULL for 1 row in 50.
        let c = (splitmix(h) % 28) as usize;
        let c = [
            0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 5, 5, 6,
        ][c];
        d.cat.push((i % 50 != 7).then(|| cats[c].to_string()));
        d.day.push(20_000 + (h % 365) as i32);
    }
    d
}

fn batch(d: &Data) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("x", DataType::Float64, true),
        Field::new("cat", DataType::Utf8, true),
        Field::new("day", DataType::Date32, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(d.id.clone())),
            Arc::new(Float64Array::from(d.x.clone())),
            Arc::new(StringArray::from(d.cat.clone())),
            Arc::new(Date32Array::from(d.day.clone())),
        ],
    )
    .unwrap()
}

async fn profile_of(d: &Data, options: &ProfileOptions) -> TableProfile {
    let ctx = SessionContext::new();
    let df = ctx.read_batch(batch(d)).unwrap();
    profile_dataframe("t", df, options, None).await.unwrap()
}

fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - pos.floor())
}

#[tokio::test(flavor = "multi_thread")]
async fn profile_values_match_exact_answers() {
    let d = data(1, 0.0);
    let p = profile_of(&d, &ProfileOptions::default()).await;
    assert_eq!(p.row_count, N as u64);
    assert_eq!(p.column_count, 4);
    assert_eq!(p.sampled_rows, None);
    assert_eq!(p.scans, 2);

    // x: nulls, min, max, mean, stddev, quantiles.
    let mut xs: Vec<f64> = d.x.iter().flatten().copied().collect();
    xs.sort_by(f64::total_cmp);
    let x = p.column("x").unwrap();
    assert_eq!(x.null_count, (N - xs.len()) as u64);
    assert!((x.null_proportion - 0.05).abs() < 1e-12);
    assert_eq!(x.min_value, Some(xs[0]));
    assert_eq!(x.max_value, Some(*xs.last().unwrap()));
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let var = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (xs.len() - 1) as f64;
    assert!(
        (x.mean.unwrap() - mean).abs() < 1e-6,
        "{:?} vs {mean}",
        x.mean
    );
    assert!((x.stddev.unwrap() - var.sqrt()).abs() < 1e-6);
    assert_eq!(x.quantiles.len(), 5);
    for q in &x.quantiles {
        let exact = exact_quantile(&xs, q.quantile);
        // t-digest: within 1 % of the range.
        assert!(
            (q.value - exact).abs() < 10.0,
            "p{} = {} vs exact {exact}",
            q.quantile,
            q.value
        );
    }
    assert_eq!(x.median, Some(x.quantiles[2].value));
    // Histogram: equal-width buckets whose counts match a direct count.
    let h = x.histogram.as_ref().unwrap();
    assert_eq!(h.counts.len(), 20);
    assert_eq!(h.edges.len(), 21);
    assert_eq!(h.counts.iter().sum::<u64>(), xs.len() as u64);
    let width = (xs[xs.len() - 1] - xs[0]) / 20.0;
    let mut direct = vec![0u64; 20];
    for v in &xs {
        direct[(((v - xs[0]) / width).floor() as usize).min(19)] += 1;
    }
    let off: u64 = direct
        .iter()
        .zip(&h.counts)
        .map(|(a, b)| a.abs_diff(*b))
        .sum();
    assert!(off <= 2, "bucket counts {:?} vs {direct:?}", h.counts);
    // x has far more distinct values than the threshold: approximate, within 2 %.
    let distinct_x = xs.iter().map(|v| v.to_bits()).collect::<HashSet<_>>().len() as f64;
    assert!(!x.distinct_exact);
    let got = x.distinct_count.unwrap() as f64;
    assert!(
        (got - distinct_x).abs() / distinct_x < 0.02,
        "{got} vs {distinct_x}"
    );

    // id: unique, approximate distinct within 2 %.
    let id = p.column("id").unwrap();
    assert_eq!(id.null_count, 0);
    let got = id.distinct_count.unwrap() as f64;
    assert!((got - N as f64).abs() / (N as f64) < 0.02, "{got}");
    assert_eq!(id.min.as_deref(), Some("7"));
    assert_eq!(
        id.max.as_deref(),
        Some(((N as i64 - 1) * 3 + 7).to_string().as_str())
    );

    // cat: exact distinct, exact top-k, string lengths.
    let cat = p.column("cat").unwrap();
    let mut freq: BTreeMap<&str, u64> = BTreeMap::new();
    for c in d.cat.iter().flatten() {
        *freq.entry(c.as_str()).or_default() += 1;
    }
    assert!(cat.distinct_exact);
    assert_eq!(cat.distinct_count, Some(freq.len() as u64));
    assert_eq!(
        cat.null_count,
        d.cat.iter().filter(|c| c.is_none()).count() as u64
    );
    let mut expected: Vec<(&str, u64)> = freq.iter().map(|(k, v)| (*k, *v)).collect();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let top: Vec<(&str, u64)> = cat
        .top_k
        .iter()
        .map(|v| (v.value.as_str(), v.count))
        .collect();
    assert_eq!(top, expected);
    assert_eq!(cat.min.as_deref(), Some("alpha"));
    assert_eq!(cat.max.as_deref(), Some("zeta"));
    assert_eq!(cat.min_length, Some(3));
    assert_eq!(cat.max_length, Some(7));
    let lens: Vec<usize> = d.cat.iter().flatten().map(|c| c.len()).collect();
    let mean_len = lens.iter().sum::<usize>() as f64 / lens.len() as f64;
    assert!((cat.mean_length.unwrap() - mean_len).abs() < 1e-9);

    // day: temporal min/max as dates, a histogram over epoch days, exact distinct.
    let day = p.column("day").unwrap();
    let (lo, hi) = (*d.day.iter().min().unwrap(), *d.day.iter().max().unwrap());
    assert_eq!(day.min_value, Some(lo as f64));
    assert_eq!(day.max_value, Some(hi as f64));
    assert_eq!(day.min.as_deref(), Some("2024-10-04"));
    assert_eq!(
        day.distinct_count,
        Some(d.day.iter().collect::<HashSet<_>>().len() as u64)
    );
    assert_eq!(
        day.histogram.as_ref().unwrap().counts.iter().sum::<u64>(),
        N as u64
    );
    assert!(day.mean.is_none() && day.quantiles.is_empty());

    // The profile serializes with the fields a DataHub datasetProfile needs.
    let json = serde_json::to_value(&p).unwrap();
    for key in [
        "null_count",
        "null_proportion",
        "distinct_count",
        "distinct_proportion",
        "min",
        "max",
        "mean",
        "stddev",
        "median",
        "quantiles",
        "top_k",
        "histogram",
    ] {
        assert!(json["columns"][1].get(key).is_some(), "missing {key}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sample_mode_profiles_a_sample_and_keeps_the_row_count() {
    let d = data(2, 0.0);
    let options = ProfileOptions {
        sample_rows: Some(50_000),
        ..Default::default()
    };
    let p = profile_of(&d, &options).await;
    assert_eq!(p.row_count, N as u64);
    let s = p.sampled_rows.expect("sampled");
    assert!((40_000..60_000).contains(&s), "{s}");
    let x = p.column("x").unwrap();
    assert!((x.null_proportion - 0.05).abs() < 0.01);
    // Both passes saw the same sample: the histogram holds exactly its non-NULL values.
    assert_eq!(
        x.histogram.as_ref().unwrap().counts.iter().sum::<u64>(),
        s - x.null_count
    );
    // A table below the threshold is profiled whole.
    let whole = profile_of(
        &d,
        &ProfileOptions {
            sample_rows: Some(N as u64),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(whole.sampled_rows, None);
}

fn rule(metric: DriftMetric, max: f64, action: DriftAction) -> DriftRule {
    DriftRule {
        metric,
        max,
        action,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_drift_rule_fires_and_stays_quiet() {
    let base = profile_of(&data(3, 0.0), &ProfileOptions::default()).await;
    let same = profile_of(&data(4, 0.0), &ProfileOptions::default()).await;
    let shifted = profile_of(&data(5, 300.0), &ProfileOptions::default()).await;
    let fires = |old: &TableProfile, new: &TableProfile, r: DriftRule, column: Option<&str>| {
        drift::compare(old, new, &[r])
            .iter()
            .any(|f| f.metric == r.metric && f.column.as_deref() == column && f.action == r.action)
    };

    // Row count: +60 % fires at 50 %, +10 % does not.
    let r = rule(DriftMetric::RowCountChangePct, 50.0, DriftAction::Fail);
    let mut grown = base.clone();
    grown.row_count = base.row_count * 16 / 10;
    assert!(fires(&base, &grown, r, None));
    grown.row_count = base.row_count * 11 / 10;
    assert!(!fires(&base, &grown, r, None));
    assert!(drift::compare(&base, &grown, &[r]).is_empty());

    // Null rate: +20 pp fires at 10 pp, +1 pp does not.
    let r = rule(DriftMetric::NullRateChangePp, 10.0, DriftAction::Warn);
    let mut nulls = base.clone();
    nulls.columns[1].null_proportion += 0.20;
    assert!(fires(&base, &nulls, r, Some("x")));
    nulls.columns[1].null_proportion = base.columns[1].null_proportion + 0.01;
    assert!(!fires(&base, &nulls, r, Some("x")));

    // Distinct: doubling fires at 50 %, +10 % does not.
    let r = rule(DriftMetric::DistinctChangePct, 50.0, DriftAction::Warn);
    let mut more = base.clone();
    more.columns[2].distinct_count = base.columns[2].distinct_count.map(|d| d * 2);
    assert!(fires(&base, &more, r, Some("cat")));
    more.columns[2].distinct_count = base.columns[2].distinct_count.map(|d| d * 11 / 10);
    assert!(!fires(&base, &more, r, Some("cat")));

    // Mean shift: +300 on a uniform [0, 1000) (sd ≈ 289) is about 1 sd.
    let r = rule(DriftMetric::MeanShiftStddevs, 0.5, DriftAction::Fail);
    assert!(fires(&base, &shifted, r, Some("x")));
    assert!(!fires(&base, &same, r, Some("x")));
    let r3 = rule(DriftMetric::MeanShiftStddevs, 3.0, DriftAction::Fail);
    assert!(!fires(&base, &shifted, r3, Some("x")));

    // PSI on histograms: a shifted distribution fires, a resample of the same does not.
    let r = rule(DriftMetric::Psi, 0.25, DriftAction::Warn);
    assert!(fires(&base, &shifted, r, Some("x")));
    assert!(!fires(&base, &same, r, Some("x")));
    let psi_same = drift::psi(
        base.columns[1].histogram.as_ref().unwrap(),
        same.columns[1].histogram.as_ref().unwrap(),
    )
    .unwrap();
    assert!(psi_same < 0.01, "{psi_same}");
}

const PROFILED: &str = r#"
[vars]
every = 2
"#;

fn drift_project(action: &str) -> Project {
    let toml = format!(
        "{ONE_TABLE}{PROFILED}[profile.drift]\nrow_count_change_pct = {{ max = 20.0, action = \"{action}\" }}\n"
    );
    Project::custom(
        &toml,
        &[(
            "silver/picked.sql",
            "-- materialized: table\nSELECT shipment_id, weight_kg, status FROM bronze.shipments WHERE shipment_id % {{ var.every }} = 0",
        )],
    )
}

fn set_every(p: &Project, every: u32) {
    let path = p.pipeline();
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .lines()
        .map(|l| {
            if l.starts_with("every = ") {
                format!("every = {every}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&path, text).unwrap();
}

async fn latest_profile(p: &Project, table: &str) -> (TableProfile, i64) {
    let batches = p
        .query(
            &[("pr", "_smelter/profiles")],
            &format!(
                "SELECT profile, drift_breaches FROM pr WHERE table_name = '{table}' ORDER BY profiled_at DESC LIMIT 1"
            ),
        )
        .await;
    let b = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .expect("a profile");
    let text = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
    let text = text
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .value(0);
    let breaches = arrow::compute::cast(b.column(1), &DataType::Int64).unwrap();
    let breaches = breaches
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0);
    (serde_json::from_str(text).unwrap(), breaches)
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_store_profiles_that_match_the_lake_and_write_reports() {
    let p = drift_project("warn");
    p.ok(&[
        "run",
        "{p}",
        "--logical-date",
        "2025-12-31",
        "--run-id",
        "a",
    ]);
    let b = &[("b", "bronze/shipments")];
    let s = &[("s", "silver/picked")];
    // Bronze and silver tables were profiled after their writes.
    let (bronze, _) = latest_profile(&p, "bronze.shipments").await;
    assert_eq!(bronze.run_id, "a");
    assert_eq!(
        bronze.row_count as i64,
        p.scalar(b, "SELECT COUNT(*) FROM b").await
    );
    let (silver, breaches) = latest_profile(&p, "silver.picked").await;
    assert_eq!(breaches, 0, "first profile has nothing to drift from");
    assert_eq!(
        silver.row_count as i64,
        p.scalar(s, "SELECT COUNT(*) FROM s").await
    );
    assert_eq!(silver.column_count, 3);
    assert_eq!(silver.version, Some(0));
    let on_disk: u64 = walk_parquet_sizes(&p.lake().join("silver/picked"));
    assert_eq!(silver.size_bytes, Some(on_disk));
    let w = silver.column("weight_kg").unwrap();
    assert_eq!(
        w.null_count as i64,
        p.scalar(s, "SELECT COUNT(*) FROM s WHERE weight_kg IS NULL")
            .await
    );
    assert_eq!(
        w.min_value.unwrap().round() as i64,
        p.scalar(s, "SELECT CAST(ROUND(MIN(weight_kg)) AS BIGINT) FROM s")
            .await
    );
    assert_eq!(
        w.max_value.unwrap().round() as i64,
        p.scalar(s, "SELECT CAST(ROUND(MAX(weight_kg)) AS BIGINT) FROM s")
            .await
    );
    let status = silver.column("status").unwrap();
    assert!(status.distinct_exact);
    assert_eq!(
        status.distinct_count.unwrap() as i64,
        p.scalar(s, "SELECT COUNT(DISTINCT status) FROM s").await
    );
    // One self-contained HTML report per layer run, in the lake.
    let report = std::fs::read_to_string(p.lake().join("_smelter/reports/a/silver.html")).unwrap();
    assert!(report.starts_with("<!DOCTYPE html>"));
    assert!(report.contains("silver.picked") && report.contains("<svg"));
    assert!(
        !report.contains("http://") && !report.contains("https://") && !report.contains("<script")
    );
    assert!(p.lake().join("_smelter/reports/a/bronze.html").exists());

    // On demand: JSON, table and HTML.
    let out = p.ok(&[
        "profile",
        "{p}",
        "--table",
        "silver.picked",
        "--format",
        "json",
    ]);
    let shown: Vec<TableProfile> = serde_json::from_str(&out).unwrap();
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].row_count, silver.row_count);
    assert_eq!(shown[0].run_id, "adhoc");
    // The run profiled the table from its write stream (no scan); the on-demand profile scans
    // it: both describe the same rows.
    assert_eq!((silver.scans, silver.scope), (0, ProfileScope::Table));
    assert!(shown[0].scans >= 1);
    for (streamed, scanned) in silver.columns.iter().zip(&shown[0].columns) {
        assert_eq!(streamed.null_count, scanned.null_count, "{}", streamed.name);
        assert_eq!(streamed.min, scanned.min, "{}", streamed.name);
        assert_eq!(streamed.max, scanned.max, "{}", streamed.name);
        assert_eq!(
            streamed.distinct_count, scanned.distinct_count,
            "{}",
            streamed.name
        );
        assert_eq!(streamed.top_k, scanned.top_k, "{}", streamed.name);
        assert_eq!(
            streamed
                .histogram
                .as_ref()
                .map(|h| h.counts.iter().sum::<u64>()),
            scanned
                .histogram
                .as_ref()
                .map(|h| h.counts.iter().sum::<u64>()),
            "{}",
            streamed.name
        );
    }
    // Bronze appends: the profile describes the rows each append added.
    assert_eq!(bronze.scope, ProfileScope::Appended);
    p.ok(&[
        "run",
        "{p}",
        "--layer",
        "extract",
        "--logical-date",
        "2026-01-01",
        "--run-id",
        "b",
    ]);
    p.ok(&["run", "{p}", "--layer", "bronze", "--run-id", "b"]);
    let (appended, _) = latest_profile(&p, "bronze.shipments").await;
    assert_eq!(appended.run_id, "b");
    assert_eq!(
        appended.row_count as i64,
        p.scalar(b, "SELECT COUNT(*) FROM b WHERE _run_id = 'b'")
            .await
    );
    assert!((appended.row_count as i64) < p.scalar(b, "SELECT COUNT(*) FROM b").await);
    let out = p.ok(&["profile", "{p}", "--layer", "silver"]);
    assert!(
        out.contains("silver.picked") && out.contains("weight_kg"),
        "{out}"
    );
    assert!(!out.contains("bronze.shipments"), "{out}");
    let html = p.dir.path().join("out/profile.html");
    p.ok(&[
        "profile",
        "{p}",
        "--format",
        "html",
        "--output",
        html.to_str().unwrap(),
    ]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("bronze.shipments") && page.contains("silver.picked"));
    // Unknown tables are usage errors that suggest the right name.
    let out = p.smelter(&["profile", "{p}", "--table", "silver.pick"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("did you mean `silver.picked`"),
        "{}",
        stderr(&out)
    );
}

fn walk_parquet_sizes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            if e.file_name() != "_delta_log" {
                total += walk_parquet_sizes(&e.path());
            }
        } else if e.path().extension().is_some_and(|x| x == "parquet") {
            total += e.metadata().unwrap().len();
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_warn_records_and_drift_fail_exits_3_after_the_write() {
    for action in ["warn", "fail"] {
        let p = drift_project(action);
        p.ok(&[
            "run",
            "{p}",
            "--logical-date",
            "2025-12-31",
            "--run-id",
            "a",
        ]);
        // Same data again: no drift.
        p.ok(&["run", "{p}", "--layer", "silver", "--run-id", "a"]);
        let (_, breaches) = latest_profile(&p, "silver.picked").await;
        assert_eq!(breaches, 0, "{action}");
        // Every shipment instead of every second one: the row count doubles.
        set_every(&p, 1);
        let out = p.smelter(&["run", "{p}", "--layer", "silver", "--run-id", "a"]);
        let (profile, breaches) = latest_profile(&p, "silver.picked").await;
        assert!(breaches >= 1, "{action}: {:?}", profile.drift);
        let rc = profile
            .drift
            .iter()
            .find(|d| d.metric == DriftMetric::RowCountChangePct)
            .expect("row-count drift");
        assert!(rc.value > 90.0 && rc.column.is_none());
        let rows = p
            .scalar(&[("s", "silver/picked")], "SELECT COUNT(*) FROM s")
            .await;
        let all = p
            .scalar(&[("b", "bronze/shipments")], "SELECT COUNT(*) FROM b")
            .await;
        // The write happened either way.
        assert_eq!(rows, all, "{action}");
        if action == "fail" {
            assert_eq!(code(&out), 3, "{}", stderr(&out));
            assert!(
                stderr(&out).contains("row_count_change_pct"),
                "{}",
                stderr(&out)
            );
            assert!(stderr(&out).contains("stays written"), "{}", stderr(&out));
        } else {
            assert_eq!(code(&out), 0, "{}", stderr(&out));
            assert!(stderr(&out).contains("Drift against the previous profile"));
            let runs = p
                .query(
                    &[("r", "_smelter/runs")],
                    "SELECT details FROM r WHERE target = 'silver.picked'",
                )
                .await;
            let details = arrow::util::pretty::pretty_format_batches(&runs)
                .unwrap()
                .to_string();
            assert!(details.contains("row_count_change_pct"), "{details}");
        }
    }
}

#[test]
fn profile_config_is_validated() {
    let toml = format!("{ONE_TABLE}[profile]\nmode = \"sometimes\"\n[profile.drift]\npsi = {{ max = 0.2, action = \"explode\" }}\n");
    let p = Project::custom(&toml, &[]);
    let out = p.smelter(&["validate", "{p}"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("key `profile.mode`") && err.contains("full, sample, off"),
        "{err}"
    );
    assert!(
        err.contains("key `profile.drift.psi.action`") && err.contains("warn, fail"),
        "{err}"
    );
    let toml = format!("{ONE_TABLE}[profile]\ntopk = 3\n");
    let p = Project::custom(&toml, &[]);
    let out = p.smelter(&["validate", "{p}"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("unknown field `topk`"),
        "{}",
        stderr(&out)
    );
    // Profiling off: no profile table.
    let toml = format!("{ONE_TABLE}[profile]\nmode = \"off\"\n");
    let p = Project::custom(&toml, &[]);
    p.ok(&[
        "run",
        "{p}",
        "--layer",
        "extract",
        "--run-id",
        "a",
        "--logical-date",
        "2025-12-31",
    ]);
    p.ok(&[
        "run",
        "{p}",
        "--layer",
        "bronze",
        "--run-id",
        "a",
        "--logical-date",
        "2025-12-31",
    ]);
    assert!(!p.lake().join("_smelter/profiles").exists());
    assert!(!p.lake().join("_smelter/reports").exists());
}

/// The even customer ids of bronze shipments: the reference table of the relationship rules.
const EVEN: (&str, &str) = (
    "silver/even.sql",
    "-- materialized: table\nSELECT DISTINCT customer_id FROM bronze.shipments WHERE customer_id % 2 = 0",
);
const STATUSES: &str = "('NEW', 'SHIPPED', 'DELIVERED', 'CANCELLED')";

#[tokio::test(flavor = "multi_thread")]
async fn accepted_values_range_and_relationships_with_every_action() {
    let model = |name: &str, rules: &str| {
        (
            format!("silver/{name}.sql"),
            format!(
                "-- materialized: table\n-- expect: {rules}\nSELECT shipment_id, customer_id, status, weight_kg FROM bronze.shipments WHERE _run_id = {{{{ run_id }}}}"
            ),
        )
    };
    let a = model(
        "a",
        &format!("status accepted_values {STATUSES} quarantine; weight_kg range 0 * drop; customer_id relationships silver.even.customer_id warn"),
    );
    let b = model(
        "b",
        &format!("status accepted_values {STATUSES} warn; weight_kg range 0 * quarantine; customer_id relationships silver.even.customer_id drop"),
    );
    let c = model(
        "c",
        &format!("status accepted_values {STATUSES} drop; weight_kg range 0 2500 warn; customer_id relationships silver.even.customer_id quarantine"),
    );
    let gold = |name: &str, rule: &str| {
        (
            format!("gold/{name}.sql"),
            format!("-- materialized: table\n-- expect: {rule} fail\nSELECT shipment_id, customer_id, status, weight_kg FROM silver.a"),
        )
    };
    let g1 = gold("f_values", "status accepted_values ('X', 'Y')");
    let g2 = gold("f_range", "shipment_id range * 10");
    let g3 = gold("f_rel", "customer_id relationships silver.even.customer_id");
    let files: Vec<(&str, &str)> = [&a, &b, &c, &g1, &g2, &g3]
        .iter()
        .map(|(f, t)| (f.as_str(), t.as_str()))
        .chain([EVEN])
        .collect();
    let p = Project::custom(ONE_TABLE, &files);
    for layer in ["extract", "bronze", "silver"] {
        p.ok(&[
            "run",
            "{p}",
            "--layer",
            layer,
            "--logical-date",
            "2025-12-31",
            "--run-id",
            "q",
        ]);
    }
    let bt = &[("b", "bronze/shipments")];
    let count = |w: &str| format!("SELECT COUNT(*) FROM b WHERE {w}");
    let bad_values = format!("status NOT IN {STATUSES}");
    let bad_range = "(weight_kg IS NOT NULL AND weight_kg < 0)";
    let orphan = "customer_id % 2 = 1";
    let total = p.scalar(bt, "SELECT COUNT(*) FROM b").await;
    let n_values = p.scalar(bt, &count(&bad_values)).await;
    let n_range = p.scalar(bt, &count(bad_range)).await;
    let n_orphan = p.scalar(bt, &count(orphan)).await;
    assert!(
        n_values > 0 && n_range > 0 && n_orphan > 0,
        "the generator makes dirt"
    );
    assert!(n_values < total && n_range < total && n_orphan < total);

    let rows = |t: &str| format!("SELECT COUNT(*) FROM {t}");
    // a: values quarantined, range dropped, orphans warned (kept).
    let good_a = p
        .scalar(
            bt,
            &count(&format!("NOT ({bad_values}) AND NOT ({bad_range})")),
        )
        .await;
    assert_eq!(p.scalar(&[("a", "silver/a")], &rows("a")).await, good_a);
    let qa = &[("q", "silver/_quarantine_a")];
    assert_eq!(p.scalar(qa, &rows("q")).await, n_values);
    assert_eq!(
        p.scalar(
            qa,
            "SELECT COUNT(*) FROM q WHERE _failed_rules LIKE 'status accepted_values%'"
        )
        .await,
        n_values
    );
    let orphans_kept = p
        .scalar(
            &[("a", "silver/a")],
            "SELECT COUNT(*) FROM a WHERE customer_id % 2 = 1",
        )
        .await;
    assert!(orphans_kept > 0);
    // b: values warned, range quarantined, orphans dropped.
    let good_b = p
        .scalar(bt, &count(&format!("NOT ({bad_range}) AND NOT ({orphan})")))
        .await;
    assert_eq!(p.scalar(&[("b", "silver/b")], &rows("b")).await, good_b);
    assert_eq!(
        p.scalar(&[("q", "silver/_quarantine_b")], &rows("q")).await,
        n_range
    );
    // c: values dropped, orphans quarantined, range warned.
    let good_c = p
        .scalar(
            bt,
            &count(&format!("NOT ({bad_values}) AND NOT ({orphan})")),
        )
        .await;
    assert_eq!(p.scalar(&[("c", "silver/c")], &rows("c")).await, good_c);
    assert_eq!(
        p.scalar(&[("q", "silver/_quarantine_c")], &rows("q")).await,
        n_orphan
    );
    // Counts per rule are in the run log.
    let runs = p
        .query(
            &[("r", "_smelter/runs")],
            "SELECT details FROM r WHERE target = 'silver.a'",
        )
        .await;
    let details = arrow::util::pretty::pretty_format_batches(&runs)
        .unwrap()
        .to_string();
    for n in [n_values, n_range, n_orphan] {
        assert!(
            details.contains(&format!("\"failed\":{n}")),
            "{n}: {details}"
        );
    }
    // fail: exit 3 and nothing written, for each check type.
    for name in ["f_values", "f_range", "f_rel"] {
        let out = p.smelter(&[
            "run", "{p}", "--layer", "gold", "--models", name, "--run-id", "q",
        ]);
        assert_eq!(code(&out), 3, "{name}: {}", stderr(&out));
        assert!(!p
            .lake()
            .join(format!("gold/{name}/_delta_log/00000000000000000000.json"))
            .exists());
    }
}

#[test]
fn bad_expectation_syntax_is_reported_with_file_and_line() {
    let p = Project::custom(
        ONE_TABLE,
        &[(
            "silver/m.sql",
            "-- materialized: table\n-- expect: weight_kg range 5 1 warn; status accepted_values (NEW) warn\n-- expect: customer_id relationships silver.custmers.id warn\nSELECT * FROM bronze.shipments",
        ), (
            "silver/customers.sql",
            "SELECT DISTINCT customer_id AS id FROM bronze.shipments",
        )],
    );
    let out = p.smelter(&["validate", "{p}"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("sql/t/silver/m.sql:2: cannot read `weight_kg range 5 1`"),
        "{err}"
    );
    assert!(err.contains("accepted_values ('A', 'B', 3)"), "{err}");
    assert!(
        err.contains("unknown table `silver.custmers`; did you mean `silver.customers`?"),
        "{err}"
    );
}

/// A merge into a table that has no version yet writes exactly its input, so it is profiled from
/// the write stream like an overwrite; a later merge into the table is profiled by a scan of the
/// new version. Both profiles describe the whole table.
#[tokio::test(flavor = "multi_thread")]
async fn merge_profiles_stream_the_first_write_and_scan_later_ones() {
    let p = Project::custom(
        &format!("{ONE_TABLE}{PROFILED}"),
        &[(
            "silver/latest.sql",
            "-- materialized: merge\n-- unique_key: shipment_id\n-- sequence_by: modified_at\nSELECT shipment_id, weight_kg, status, modified_at FROM bronze.shipments WHERE _run_id = {{ run_id }}",
        )],
    );
    let s = &[("s", "silver/latest")];
    p.ok(&[
        "run",
        "{p}",
        "--logical-date",
        "2025-12-31",
        "--run-id",
        "a",
    ]);
    let (first, _) = latest_profile(&p, "silver.latest").await;
    assert_eq!((first.scans, first.scope), (0, ProfileScope::Table));
    assert_eq!(
        first.row_count as i64,
        p.scalar(s, "SELECT COUNT(*) FROM s").await
    );
    let out = p.ok(&[
        "profile",
        "{p}",
        "--table",
        "silver.latest",
        "--format",
        "json",
    ]);
    let scanned: Vec<TableProfile> = serde_json::from_str(&out).unwrap();
    for (streamed, scanned) in first.columns.iter().zip(&scanned[0].columns) {
        assert_eq!(streamed.null_count, scanned.null_count, "{}", streamed.name);
        assert_eq!(
            (&streamed.min, &streamed.max),
            (&scanned.min, &scanned.max),
            "{}",
            streamed.name
        );
        assert_eq!(
            streamed.distinct_count, scanned.distinct_count,
            "{}",
            streamed.name
        );
    }
    p.ok(&[
        "run",
        "{p}",
        "--logical-date",
        "2026-01-01",
        "--run-id",
        "b",
    ]);
    let (second, _) = latest_profile(&p, "silver.latest").await;
    assert_eq!(second.run_id, "b");
    assert!(
        second.scans >= 1,
        "a merge into an existing table is scanned"
    );
    assert_eq!(
        second.row_count as i64,
        p.scalar(s, "SELECT COUNT(*) FROM s").await
    );
    assert!(second.row_count > first.row_count);
}

/// An append that added nothing (an empty catch-up window) stores no profile, so drift between
/// appended batches neither fires on it (exit 3) nor measures the next batch against 0 rows;
/// an scd2 model's profile holds its table's columns, not the merge's delete flag.
#[tokio::test]
async fn empty_appends_store_no_profile_and_scd2_profiles_only_table_columns() {
    let toml = crate::support::files_pipeline("t", "id").replace(
        "[profile]\nmode = \"off\"\n",
        "[profile]\nmode = \"full\"\nreport = false\n[profile.drift]\n\
         row_count_change_pct = { max = 99.0, action = \"fail\" }\n",
    );
    let p = Project::custom(
        &toml,
        &[
            (
                "silver/log.sql",
                "-- materialized: append\nSELECT id, v FROM {{ unprocessed('bronze.t') }} AS t\n",
            ),
            (
                "silver/hist.sql",
                "-- materialized: scd2\n-- unique_key: id\n-- sequence_by: v\n\
                 SELECT id, v FROM {{ unprocessed('bronze.t') }} AS t\n",
            ),
        ],
    );
    let dir = p.dir.path().join("incoming/t");
    std::fs::create_dir_all(&dir).unwrap();
    // Batches of 6 and 4 rows: 33 % apart, the history grows 67 %; an empty batch is 100 %.
    std::fs::write(dir.join("a.csv"), "id,v\n1,1\n2,1\n3,1\n4,1\n5,1\n6,1\n").unwrap();
    p.ok(&["run", "{p}", "--run-id", "r1"]);
    // Nothing new in bronze: the windows are empty.
    p.ok(&["run", "{p}", "--layer", "silver", "--run-id", "r2"]);
    std::fs::write(dir.join("b.csv"), "id,v\n7,1\n8,1\n9,1\n10,1\n").unwrap();
    p.ok(&["run", "{p}", "--run-id", "r3"]);
    let profiles = [("p", "_smelter/profiles")];
    assert_eq!(
        p.scalar(
            &profiles,
            "SELECT COUNT(*) FROM p WHERE table_name = 'silver.log' AND row_count = 0"
        )
        .await,
        0
    );
    assert_eq!(
        p.scalar(
            &profiles,
            "SELECT COUNT(*) FROM p WHERE table_name = 'silver.log' AND row_count IN (6, 4)"
        )
        .await,
        2
    );
    assert!(
        p.scalar(
            &profiles,
            "SELECT COUNT(*) FROM p WHERE table_name = 'silver.hist'"
        )
        .await
            > 0
    );
    assert_eq!(
        p.scalar(
            &profiles,
            "SELECT COUNT(*) FROM p WHERE table_name = 'silver.hist' \
             AND (profile LIKE '%__smelter%' OR column_count <> 6)"
        )
        .await,
        0
    );
}
