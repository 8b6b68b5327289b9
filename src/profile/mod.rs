//! Table profiling: what is in every table Smelter writes, how it changed since the last run, and
//! an HTML report people can read.
//!
//! Data flow: an overwrite or append is profiled while it is written: [`stream_profiler`] gives
//! the write an observer ([`stream`]) that accumulates every metric from the batches the table
//! receives, so nothing is read back. A merge (whose new version mixes old and new rows) and
//! `smelter profile` scan the table: [`compute`] profiles it in two scans (one aggregate pass for
//! every per-column metric, one `GROUPING SETS` pass for histograms, exact distinct counts and
//! top-k). [`after_write`] finishes either, [`drift`] compares the result
//! with the previous profile of the same table and scope read from [`history`] (`_smelter/profiles`), and the
//! profile (with its drift findings) is appended to the history. [`html`] renders the profiles of a
//! layer run as one self-contained HTML file, written to `_smelter/reports/<run_id>/<layer>.html`.
//!
//! Drift is evaluated after the write (the profile is of the written table), so a `fail` breach
//! exits with code 3 but the data already written stays written.
//!
//! The serialized [`TableProfile`] carries every field a DataHub `datasetProfile` aspect needs; the
//! latest stored profile of a table is returned by [`latest`], and the profile of each table a
//! layer run wrote rides on its [`crate::state::RunRecord::profile`].

pub mod compute;
pub mod drift;
pub mod history;
pub mod html;
pub mod sketch;
pub mod stream;

use std::sync::Arc;

use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

pub use compute::{profile_dataframe, ProfileOptions};
pub use drift::DriftFinding;

use crate::config::{DriftAction, ProfileMode};
use crate::error::{Error, Result};
use crate::layers::RunContext;
use crate::plan::{Layer, TableId};
use crate::state::State;

/// The profile of one table at one point in time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableProfile {
    /// `<layer>.<table>`.
    pub table: String,
    /// Run id that wrote the profiled version (or `adhoc` for `smelter profile`).
    pub run_id: String,
    /// When the profile was taken, milliseconds since the epoch.
    pub profiled_at_ms: i64,
    /// Rows in the table.
    pub row_count: u64,
    /// Columns in the table.
    pub column_count: u64,
    /// Total size of the table's data files in bytes (from the Delta log), if known.
    pub size_bytes: Option<u64>,
    /// Number of data files, if known.
    pub files: Option<u64>,
    /// Table version profiled, if known.
    pub version: Option<i64>,
    /// Rows actually profiled when the table was sampled (`None`: every row).
    pub sampled_rows: Option<u64>,
    /// Scans of the table the profile took (0: profiled from the write stream, no scan).
    pub scans: u32,
    /// What the profile describes: the whole table, or the rows one append added.
    #[serde(default)]
    pub scope: ProfileScope,
    /// Per-column profiles, in schema order.
    pub columns: Vec<ColumnProfile>,
    /// Drift findings against the previous profile of the same table (breaches only).
    #[serde(default)]
    pub drift: Vec<DriftFinding>,
}

impl TableProfile {
    /// The column profile named `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnProfile> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Whether any drift finding has action `fail`.
    pub fn drift_failed(&self) -> bool {
        self.drift.iter().any(|d| d.action == DriftAction::Fail)
    }
}

/// What a [`TableProfile`] describes.
///
/// A `table` write (overwrite) and a merge are profiled as the whole new table version. An append
/// (bronze, `materialized: append`) is profiled from its write stream: the profile then describes
/// the rows that append added, and drift compares them with the rows the previous append added.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProfileScope {
    /// Every row of the table version.
    #[default]
    Table,
    /// The rows one append added.
    Appended,
}

/// How a column is profiled.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    /// Integers, floats, decimals: mean, stddev, quantiles, histogram.
    Numeric,
    /// Dates, timestamps, times: histogram over their epoch value.
    Temporal,
    /// Strings: lengths.
    String,
    /// Booleans.
    Boolean,
    /// Anything else: counts only.
    Other,
}

/// One quantile.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Quantile {
    /// The quantile, e.g. 0.25.
    pub quantile: f64,
    /// Its (approximate, t-digest) value.
    pub value: f64,
}

/// A value and how often it occurs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ValueFrequency {
    /// The value, as text.
    pub value: String,
    /// Rows holding it.
    pub count: u64,
}

/// An equal-width histogram: `counts[i]` rows fall in `[edges[i], edges[i+1])` (the last bucket is
/// closed). Temporal columns use their epoch value (days for dates, the column's unit otherwise).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Histogram {
    /// Bucket edges, one more than the counts.
    pub edges: Vec<f64>,
    /// Rows per bucket.
    pub counts: Vec<u64>,
}

/// The profile of one column.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ColumnProfile {
    /// Column name.
    pub name: String,
    /// Arrow data type.
    pub data_type: String,
    /// Profiling kind.
    pub kind: ColumnKind,
    /// NULL values.
    pub null_count: u64,
    /// NULL values over rows.
    pub null_proportion: f64,
    /// Distinct non-NULL values (exact or HyperLogLog, see `distinct_exact`).
    pub distinct_count: Option<u64>,
    /// Distinct values over rows.
    pub distinct_proportion: Option<f64>,
    /// Whether `distinct_count` is exact.
    pub distinct_exact: bool,
    /// Smallest value, as text.
    pub min: Option<String>,
    /// Largest value, as text.
    pub max: Option<String>,
    /// Smallest value as a number (numeric and temporal columns).
    pub min_value: Option<f64>,
    /// Largest value as a number (numeric and temporal columns).
    pub max_value: Option<f64>,
    /// Mean (numeric).
    pub mean: Option<f64>,
    /// Sample standard deviation (numeric).
    pub stddev: Option<f64>,
    /// Median, the 0.5 quantile (numeric).
    pub median: Option<f64>,
    /// Quantiles p05, p25, p50, p75, p95 (numeric).
    pub quantiles: Vec<Quantile>,
    /// Shortest string, in characters.
    pub min_length: Option<u64>,
    /// Longest string, in characters.
    pub max_length: Option<u64>,
    /// Mean string length, in characters.
    pub mean_length: Option<f64>,
    /// Most frequent values, most frequent first (low-cardinality columns only).
    pub top_k: Vec<ValueFrequency>,
    /// Histogram (numeric and temporal).
    pub histogram: Option<Histogram>,
}

/// The profiler of a write of `id` whose input has `schema`, when the table may be profiled from
/// the write stream: profiling is on and the write is an overwrite or a merge (the profile is
/// then the table's; the format uses it for a merge only when the table had no version yet) or
/// an append (the rows it adds, [`ProfileScope::Appended`]). `None` when profiling is off. Pass
/// it as the write's observer and to [`after_write`], which scans the table when the write did
/// not use it ([`crate::table::WriteMetrics::observed`]).
pub fn stream_profiler(
    rc: &RunContext<'_>,
    id: &TableId,
    schema: &arrow::datatypes::Schema,
    mode: &crate::table::WriteMode,
) -> Result<Option<Streamed>> {
    use crate::table::WriteMode;
    if rc.plan.pipeline.profile.mode == ProfileMode::Off {
        return Ok(None);
    }
    let scope = match mode {
        WriteMode::Overwrite | WriteMode::Merge { .. } => ProfileScope::Table,
        WriteMode::Append => ProfileScope::Appended,
    };
    // A merge's input carries the delete flag of the rows it removes; it is no table column.
    let columns: Vec<arrow::datatypes::FieldRef> = schema
        .fields()
        .iter()
        .filter(|f| f.name() != crate::layers::deletes::FLAG)
        .cloned()
        .collect();
    let schema = arrow::datatypes::Schema::new(columns);
    let profiler = stream::StreamProfile::new(&id.to_string(), &schema, options(rc))?;
    Ok(Some(Streamed {
        profiler: Arc::new(profiler),
        scope,
    }))
}

/// A write's stream profiler and what its profile describes (see [`stream_profiler`]).
#[derive(Debug, Clone)]
pub struct Streamed {
    /// The profiler, to be the write's observer.
    pub profiler: Arc<stream::StreamProfile>,
    /// What the profile describes.
    pub scope: ProfileScope,
}

impl Streamed {
    /// The profiler as a write observer.
    pub fn observer(&self) -> Arc<dyn crate::engine::observe::BatchObserver> {
        self.profiler.clone()
    }
}

/// Profiles `id` after a write that reported `written` (from `streamed`, the write's stream
/// profiler, when the write used it; from `staged`, when the write committed a cluster's staged
/// files, which are then the rows it wrote, with `streamed`'s scope; else by scanning the
/// table's current version), checks drift against the previous profile of the same scope,
/// stores the profile and returns it; `None` when profiling is off.
///
/// A drift breach with action `fail` is an [`Error::Quality`] (exit 3), raised after the profile
/// was stored: the data already written stays written.
pub async fn after_write(
    rc: &RunContext<'_>,
    id: &TableId,
    written: &crate::table::WriteMetrics,
    streamed: Option<Streamed>,
    staged: Option<&crate::table::StagedFiles>,
) -> Result<Option<Arc<TableProfile>>> {
    let settings = &rc.plan.pipeline.profile;
    if settings.mode == ProfileMode::Off {
        return Ok(None);
    }
    let scope = streamed.as_ref().map(|s| s.scope);
    // A write committed as a cluster's staged files: those files are the rows it wrote (an
    // overwrite's table, an append's new rows).
    let committed = staged.filter(|s| s.is_committed() && !written.observed);
    let mut profile = match (streamed.filter(|_| written.observed), committed) {
        (None, Some(files)) => {
            let mut p = profile_files(rc, id, &files.files, files.rows()).await?;
            p.scope = scope.unwrap_or(ProfileScope::Table);
            p.run_id = rc.params.run_id.clone();
            if let Some(stats) = rc.format.stats(&rc.lake.table_url(id)).await? {
                p.size_bytes = Some(stats.size_bytes);
                p.files = Some(stats.files);
                p.version = Some(stats.version);
            }
            p
        }
        (Some(s), _) => {
            let mut p = s.profiler.finish(s.scope)?;
            p.run_id = rc.params.run_id.clone();
            let stats = match &written.stats {
                Some(s) => Some(s.clone()),
                None => rc.format.stats(&rc.lake.table_url(id)).await?,
            };
            if let Some(stats) = stats {
                p.size_bytes = Some(stats.size_bytes);
                p.files = Some(stats.files);
                p.version = Some(stats.version);
            }
            p
        }
        (None, None) => profile_table(rc, id, &rc.params.run_id).await?,
    };
    // An append that added nothing (an empty catch-up window) has no batch to describe, and
    // must not become the baseline the next batch's drift is measured against.
    if profile.scope == ProfileScope::Appended && profile.row_count == 0 {
        info!(table = %id, "Nothing appended: no profile stored.");
        return Ok(None);
    }
    let previous = history::latest(rc.state, id).await?;
    if let Some(prev) = previous.filter(|p| p.scope == profile.scope) {
        profile.drift = drift::compare(&prev, &profile, &settings.drift);
    }
    for d in &profile.drift {
        warn!(table = %id, metric = ?d.metric, column = d.column.as_deref().unwrap_or(""), value = d.value, max = d.max, action = ?d.action, "Drift against the previous profile.");
    }
    history::append(rc.state, id, &profile).await?;
    info!(
        table = %id,
        rows = profile.row_count,
        columns = profile.column_count,
        scope = ?profile.scope,
        scans = profile.scans,
        sampled = profile.sampled_rows.is_some(),
        drift = profile.drift.len(),
        "Profiled table."
    );
    if profile.drift_failed() {
        let what: Vec<String> = profile
            .drift
            .iter()
            .filter(|d| d.action == DriftAction::Fail)
            .map(ToString::to_string)
            .collect();
        return Err(Error::Quality {
            model: id.to_string(),
            message: format!(
                "drift against the previous profile: {}; the table was written (version {}) and stays written",
                what.join("; "),
                profile.version.unwrap_or(-1)
            ),
            findings: serde_json::json!({ "drift": profile.drift }),
        });
    }
    Ok(Some(Arc::new(profile)))
}

/// The profiler options of the pipeline's settings (`mode = "sample"` samples scans only).
fn options(rc: &RunContext<'_>) -> ProfileOptions {
    let settings = &rc.plan.pipeline.profile;
    ProfileOptions {
        top_k: settings.top_k,
        histogram_bins: settings.histogram_bins,
        exact_distinct_max: settings.exact_distinct_max,
        sample_rows: (settings.mode == ProfileMode::Sample).then_some(settings.sample_rows),
    }
}

/// Profiles the current version of a lake table with the pipeline's settings (`mode = "off"`
/// profiles every row: asking for a profile means wanting one).
pub async fn profile_table(
    rc: &RunContext<'_>,
    id: &TableId,
    run_id: &str,
) -> Result<TableProfile> {
    let url = rc.lake.table_url(id);
    let provider = rc.format.provider(&rc.ctx, &url).await?.ok_or_else(|| {
        Error::Usage(format!(
            "table `{id}` does not exist yet at {}; run the {} layer first",
            crate::storage::redact(&url),
            id.layer
        ))
    })?;
    let stats = rc.format.stats(&url).await?;
    let options = options(rc);
    let known_rows = stats.as_ref().and_then(|s| s.rows);
    // On a cluster, the profile's aggregate passes run there too, over a plain scan of the
    // version's files; a sampled profile (which caches its sample in this process) and a table
    // a plain scan cannot read are profiled here.
    let files = match rc.cluster().await? {
        Some(_) if options.sample_rows.is_none() => {
            rc.format.snapshot_files(&rc.ctx, &url).await.ok().flatten()
        }
        _ => None,
    };
    let mut profile = match files {
        Some(files) => profile_files(rc, id, &files, known_rows).await?,
        None => {
            let df = rc.ctx.read_table(provider)?;
            profile_dataframe(&id.to_string(), df, &options, known_rows).await?
        }
    };
    profile.run_id = run_id.to_string();
    if let Some(s) = stats {
        profile.size_bytes = Some(s.size_bytes);
        profile.files = Some(s.files);
        profile.version = Some(s.version);
    }
    Ok(profile)
}

/// Profiles the rows of the Parquet `files` (all of them: no sampling) with the pipeline's
/// settings: on the cluster in `[engine] mode = "ballista"` (bounded by the job timeout; a
/// cluster fault is logged and the files are profiled here instead, as the data they describe
/// is written already), else in this process. Run id, sizes and version are left for the
/// caller to set.
///
/// Errors: reading the files; the profile's queries.
pub async fn profile_files(
    rc: &RunContext<'_>,
    id: &TableId,
    files: &crate::table::SnapshotFiles,
    known_rows: Option<u64>,
) -> Result<TableProfile> {
    let options = ProfileOptions {
        sample_rows: None,
        ..options(rc)
    };
    let table = crate::engine::ballista::scan(files)?;
    if let Some(cluster) = rc.cluster().await? {
        let df = cluster.read(table.clone())?;
        match cluster
            .bounded(profile_dataframe(&id.to_string(), df, &options, known_rows))
            .await
        {
            Ok(profile) => return Ok(profile),
            Err(e @ Error::Cluster { .. }) => {
                warn!(table = %id, error = %e, "Could not profile the table on the cluster; profiling it here.");
            }
            Err(e) => return Err(e),
        }
    }
    let df = rc.ctx.read_table(table)?;
    profile_dataframe(&id.to_string(), df, &options, known_rows).await
}

/// The latest stored profile of a table, with its drift findings; `None` if it was never profiled.
///
/// This is the entry point for lineage emitters (for example a DataHub `datasetProfile`).
pub async fn latest(state: &State, id: &TableId) -> Result<Option<TableProfile>> {
    history::latest(state, id).await
}

/// Where a layer run's report lives under `_smelter/`: `reports/<run_id>/<layer>.html`.
pub fn report_path(run_id: &str, layer: Layer) -> String {
    format!(
        "reports/{}/{layer}.html",
        crate::storage::run_dir_name(run_id)
    )
}

/// Writes the HTML report of one layer run to `_smelter/reports/<run_id>/<layer>.html` in the lake
/// and returns its URL; a failure is logged (and gives `None`) and never fails the run.
pub async fn write_report(
    rc: &RunContext<'_>,
    layer: Layer,
    profiles: &[Arc<TableProfile>],
) -> Option<url::Url> {
    if profiles.is_empty() || !rc.plan.pipeline.profile.report {
        return None;
    }
    let title = format!(
        "{} · {layer} · run {}",
        rc.plan.pipeline.name, rc.params.run_id
    );
    let page = html::render(&title, profiles.iter().map(Arc::as_ref));
    let url = rc
        .lake
        .state_file_url(&report_path(&rc.params.run_id, layer));
    let written = async {
        let path = rc.lake.path_of(&url)?;
        rc.lake.store().put(&path, page.into_bytes().into()).await?;
        Ok::<_, Error>(())
    }
    .await;
    match written {
        Ok(()) => {
            info!(layer = %layer, report = %crate::storage::redact(&url), "Wrote profile report.");
            Some(url)
        }
        Err(e) => {
            warn!(layer = %layer, error = %e, "Could not write the profile report; the data write stands.");
            None
        }
    }
}
