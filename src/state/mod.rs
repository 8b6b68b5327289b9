//! Run state stored in the lake as Delta tables: the run log (`_smelter/runs`), the watermarks
//! (`_smelter/watermarks`), the source files landed by the files source (`_smelter/files`) and
//! the catch-up windows of models (`_smelter/windows`). All are append-only; the latest watermark
//! per table wins.

pub mod summary;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, Date32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::logical_expr::{col, lit, SortExpr};
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::Lake;
use crate::table::{TableFormat, WriteMode, WriteRequest};

/// A watermark value: microseconds for timestamps, or an integer (bigint, rowversion).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// `timestamp_us`, `int` or `change_version`.
    pub kind: String,
    /// The value.
    pub value: i64,
}

impl Watermark {
    /// A timestamp watermark in microseconds since the epoch.
    pub fn timestamp(us: i64) -> Self {
        Watermark {
            kind: "timestamp_us".into(),
            value: us,
        }
    }

    /// An integer watermark.
    pub fn integer(v: i64) -> Self {
        Watermark {
            kind: "int".into(),
            value: v,
        }
    }

    /// Kind of a SQL Server change-tracking version ([`Watermark::change_version`]).
    pub const CHANGE_VERSION: &'static str = "change_version";

    /// The SQL Server change-tracking version a table is synced up to
    /// (`mode = "change_tracking"`).
    pub fn change_version(v: i64) -> Self {
        Watermark {
            kind: Self::CHANGE_VERSION.into(),
            value: v,
        }
    }
}

/// A source file landed by the files source: its path relative to the source root, with the
/// size and version seen when it was listed. Listed in the landing manifest, and recorded in
/// `_smelter/files` by bronze after its commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandedFile {
    /// Path relative to the source root (`orders/2026-01-02.csv`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, µs since the epoch (UTC).
    pub last_modified_us: i64,
    /// Entity tag of the object, when the store gives one.
    pub e_tag: Option<String>,
}

/// One line of the run log: what one step did to one target.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// Run id.
    pub run_id: String,
    /// The attempt (one `smelter` invocation) that wrote the record: a UUID.
    pub attempt: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Layer.
    pub layer: String,
    /// Target (`<layer>.<table>` or landing table).
    pub target: String,
    /// `success` (this attempt committed), `already_committed` (an earlier attempt of the run id
    /// had; the counts are from that commit), `skipped` (nothing to write) or `failed`.
    pub status: String,
    /// Exit code of a `failed` record (2 config/SQL/schema, 3 data quality, 75 transient or
    /// interrupted, 1 bug); `None` otherwise.
    pub exit_code: Option<i32>,
    /// Rows inserted.
    pub rows: u64,
    /// Rows updated.
    pub rows_updated: u64,
    /// Rows deleted (a merge applying deletes; 0 otherwise).
    pub rows_deleted: u64,
    /// Logical date, days since epoch.
    pub logical_date: i32,
    /// Start, microseconds since epoch.
    pub started_at: i64,
    /// Duration.
    pub duration_ms: u64,
    /// Error or note.
    pub message: Option<String>,
    /// Step details as JSON (write metrics, expectation results, drift findings).
    pub details: String,
    /// The target's [`crate::plan::fingerprint::Fingerprint`] as JSON, for bronze tables and
    /// models; `None` for landing tables and layer-level failures.
    pub fingerprint: Option<String>,
    /// The profile of the table this step wrote, when profiling is on (not stored in the run
    /// log: the profile history `_smelter/profiles` holds it).
    #[serde(skip)]
    pub profile: Option<Arc<crate::profile::TableProfile>>,
}

/// Access to the state tables.
#[derive(Clone)]
pub struct State {
    lake: Lake,
    format: Arc<dyn TableFormat>,
    ctx: SessionContext,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("lake", &self.lake).finish()
    }
}

impl State {
    /// State of a lake.
    pub fn new(lake: &Lake, format: Arc<dyn TableFormat>, ctx: SessionContext) -> Self {
        State {
            lake: lake.clone(),
            format,
            ctx,
        }
    }

    /// The last committed watermark of a source table.
    pub async fn watermark(&self, table: &str) -> Result<Option<Watermark>> {
        let url = self.lake.state_url("watermarks");
        let Some(provider) = self.format.provider(&self.ctx, &url).await? else {
            return Ok(None);
        };
        let batches = self
            .ctx
            .read_table(provider)?
            .filter(col("table_name").eq(lit(table)))?
            .sort(vec![SortExpr::new(col("committed_at"), false, false)])?
            .limit(0, Some(1))?
            .select_columns(&["kind", "value"])?
            .collect()
            .await?;
        let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Ok(None);
        };
        let kind = arrow::compute::cast(batch.column(0), &DataType::Utf8)?;
        let kind = kind
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| Error::Internal("watermark kind is not a string".into()))?
            .value(0)
            .to_string();
        let value = arrow::compute::cast(batch.column(1), &DataType::Int64)?;
        let value = value
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| Error::Internal("watermark value is not int64".into()))?
            .value(0);
        Ok(Some(Watermark { kind, value }))
    }

    /// Commits a new watermark for a source table (after bronze committed its data).
    pub async fn commit_watermark(&self, table: &str, wm: &Watermark, run_id: &str) -> Result<()> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("table_name", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("value", DataType::Int64, false),
            Field::new("run_id", DataType::Utf8, false),
            Field::new("committed_at", ts_type(), false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![table])),
                Arc::new(StringArray::from(vec![wm.kind.as_str()])),
                Arc::new(Int64Array::from(vec![wm.value])),
                Arc::new(StringArray::from(vec![run_id])),
                Arc::new(TimestampMicrosecondArray::from(vec![now_us()]).with_timezone("UTC")),
            ],
        )?;
        self.append("watermarks", batch).await
    }

    /// The source files recorded as landed for a table, as `(run_id, path)` pairs.
    pub async fn landed_files(&self, table: &str) -> Result<Vec<(String, String)>> {
        let Some(df) = self.read("files").await? else {
            return Ok(Vec::new());
        };
        let batches = df
            .filter(col("table_name").eq(lit(table)))?
            .select(vec![
                datafusion::logical_expr::cast(col("run_id"), DataType::Utf8),
                datafusion::logical_expr::cast(col("path"), DataType::Utf8),
            ])?
            .collect()
            .await?;
        let mut out = Vec::new();
        for b in &batches {
            let (Some(run), Some(path)) = (
                b.column(0).as_any().downcast_ref::<StringArray>(),
                b.column(1).as_any().downcast_ref::<StringArray>(),
            ) else {
                return Err(Error::Internal(
                    "unexpected _smelter/files column types".into(),
                ));
            };
            for i in 0..b.num_rows() {
                out.push((run.value(i).to_string(), path.value(i).to_string()));
            }
        }
        Ok(out)
    }

    /// Records the source files a run landed for a table (after bronze committed them). A run
    /// already recorded is left as is, so a retried bronze adds no duplicates.
    pub async fn commit_files(
        &self,
        table: &str,
        run_id: &str,
        files: &[LandedFile],
    ) -> Result<()> {
        if files.is_empty()
            || self
                .landed_files(table)
                .await?
                .iter()
                .any(|(r, _)| r == run_id)
        {
            return Ok(());
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("table_name", DataType::Utf8, false),
            Field::new("run_id", DataType::Utf8, false),
            Field::new("path", DataType::Utf8, false),
            Field::new("size", DataType::Int64, false),
            Field::new("last_modified", ts_type(), false),
            Field::new("e_tag", DataType::Utf8, true),
            Field::new("committed_at", ts_type(), false),
        ]));
        let n = files.len();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![table; n])),
                Arc::new(StringArray::from(vec![run_id; n])),
                Arc::new(StringArray::from_iter_values(
                    files.iter().map(|f| f.path.as_str()),
                )),
                Arc::new(Int64Array::from_iter_values(
                    files.iter().map(|f| f.size as i64),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        files.iter().map(|f| f.last_modified_us),
                    )
                    .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from_iter(
                    files.iter().map(|f| f.e_tag.as_deref()),
                )),
                Arc::new(TimestampMicrosecondArray::from(vec![now_us(); n]).with_timezone("UTC")),
            ],
        )?;
        self.append("files", batch).await
    }

    /// Every recorded catch-up window entry of `model` (`<layer>.<name>`), in no particular order.
    pub async fn windows(&self, model: &str) -> Result<Vec<WindowEntry>> {
        let Some(df) = self.read("windows").await? else {
            return Ok(Vec::new());
        };
        let text = |c: &str| datafusion::logical_expr::cast(col(c), DataType::Utf8);
        let batches = df
            .filter(col("model").eq(lit(model)))?
            .select(vec![
                text("run_id"),
                text("bronze_table"),
                text("bronze_run_id"),
                text("status"),
            ])?
            .collect()
            .await?;
        let mut out = Vec::new();
        for b in &batches {
            let column = |i: usize| text_column(b, i, "windows");
            let (run, table, bronze, status) = (column(0)?, column(1)?, column(2)?, column(3)?);
            for i in 0..b.num_rows() {
                let get = |a: &StringArray| a.is_valid(i).then(|| a.value(i).to_string());
                out.push(WindowEntry {
                    run_id: run.value(i).to_string(),
                    bronze: get(table).zip(get(bronze)),
                    committed: status.value(i) == "committed",
                });
            }
        }
        Ok(out)
    }

    /// Records a model run's catch-up window: `bronze` holds its `(bronze table, bronze run id)`
    /// pairs (`pending`, before the write), or nothing with `committed` (after the write
    /// committed).
    pub async fn record_window(
        &self,
        model: &str,
        run_id: &str,
        bronze: &[(String, String)],
        committed: bool,
    ) -> Result<()> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("model", DataType::Utf8, false),
            Field::new("run_id", DataType::Utf8, false),
            Field::new("bronze_table", DataType::Utf8, true),
            Field::new("bronze_run_id", DataType::Utf8, true),
            Field::new("status", DataType::Utf8, false),
            Field::new("recorded_at", ts_type(), false),
        ]));
        // An empty pending window is still recorded (one row without a bronze run), so a retry
        // of the run id reads the same, empty, window.
        let pairs: Vec<(Option<&str>, Option<&str>)> = if bronze.is_empty() {
            vec![(None, None)]
        } else {
            bronze
                .iter()
                .map(|(t, r)| (Some(t.as_str()), Some(r.as_str())))
                .collect()
        };
        let n = pairs.len();
        let status = if committed { "committed" } else { "pending" };
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![model; n])),
                Arc::new(StringArray::from(vec![run_id; n])),
                Arc::new(StringArray::from_iter(pairs.iter().map(|p| p.0))),
                Arc::new(StringArray::from_iter(pairs.iter().map(|p| p.1))),
                Arc::new(StringArray::from(vec![status; n])),
                Arc::new(TimestampMicrosecondArray::from(vec![now_us(); n]).with_timezone("UTC")),
            ],
        )?;
        self.append("windows", batch).await
    }

    /// Appends records to the run log.
    pub async fn record(&self, records: &[RunRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let batch = RecordBatch::try_new(
            runs_schema(),
            vec![
                strings(records, |r| Some(&r.run_id)),
                strings(records, |r| Some(&r.pipeline)),
                strings(records, |r| Some(&r.layer)),
                strings(records, |r| Some(&r.target)),
                strings(records, |r| Some(&r.status)),
                Arc::new(Int64Array::from_iter_values(
                    records.iter().map(|r| r.rows as i64),
                )),
                Arc::new(Int64Array::from_iter_values(
                    records.iter().map(|r| r.rows_updated as i64),
                )),
                Arc::new(Date32Array::from_iter_values(
                    records.iter().map(|r| r.logical_date),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        records.iter().map(|r| r.started_at),
                    )
                    .with_timezone("UTC"),
                ),
                Arc::new(Int64Array::from_iter_values(
                    records.iter().map(|r| r.duration_ms as i64),
                )),
                strings(records, |r| r.message.as_ref()),
                strings(records, |r| Some(&r.details)),
                strings(records, |r| Some(&r.attempt)),
                Arc::new(arrow::array::Int32Array::from_iter(
                    records.iter().map(|r| r.exit_code),
                )),
                strings(records, |r| r.fingerprint.as_ref()),
                Arc::new(Int64Array::from_iter(
                    records.iter().map(|r| Some(r.rows_deleted as i64)),
                )),
            ],
        )?;
        self.append("runs", batch).await
    }

    /// The current version of the state table `_smelter/<name>`, if it exists.
    pub async fn read(&self, name: &str) -> Result<Option<datafusion::prelude::DataFrame>> {
        let url = self.lake.state_url(name);
        match self.format.provider(&self.ctx, &url).await? {
            Some(p) => Ok(Some(self.ctx.read_table(p)?)),
            None => Ok(None),
        }
    }

    /// Appends one batch to the state table `_smelter/<name>` (created on first use).
    ///
    /// Models of one layer run concurrently, in one process or in several (Airflow's per-model
    /// tasks), and append to the same state tables; two first appends both try to create the
    /// table. A commit that loses such a race ([`Error::is_commit_conflict`]) committed nothing,
    /// so the append is retried on the table's new version, up to [`STATE_COMMIT_ATTEMPTS`]
    /// times with a growing pause, before the conflict is reported (exit 75).
    pub async fn append(&self, name: &str, batch: RecordBatch) -> Result<()> {
        let url = self.lake.state_url(name);
        let mut attempt = 1;
        loop {
            let input = self.ctx.read_batch(batch.clone())?;
            let written = self
                .format
                .write(WriteRequest {
                    ctx: &self.ctx,
                    url: &url,
                    input,
                    mode: WriteMode::Append,
                    partition_by: Vec::new(),
                    txn_id: None,
                    metadata: Vec::new(),
                    read_version: None,
                    observer: None,
                    staged: None,
                })
                .await;
            match written {
                Err(e) if e.is_commit_conflict() && attempt < STATE_COMMIT_ATTEMPTS => {
                    tracing::debug!(table = name, attempt, "State commit lost a race; retrying.");
                    tokio::time::sleep(std::time::Duration::from_millis(25 * attempt as u64)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
                Ok(_) => return Ok(()),
            }
        }
    }
}

/// How many times [`State::append`] tries a commit that loses a race with another writer.
pub const STATE_COMMIT_ATTEMPTS: u32 = 8;

/// One row of `_smelter/windows`: part of the catch-up window of one model run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowEntry {
    /// The model's run id.
    pub run_id: String,
    /// A `(bronze table, bronze run id)` pair of the window; `None` for an empty window's row
    /// and for the commit marker.
    pub bronze: Option<(String, String)>,
    /// True for the marker written after the model's write committed.
    pub committed: bool,
}

/// One layer of a recorded run, summarised from the run log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRun {
    /// Layer name.
    pub layer: String,
    /// Logical date, days since the epoch.
    pub logical_date: i32,
    /// First step start, µs since the epoch.
    pub started_us: i64,
    /// Last step end, µs since the epoch.
    pub ended_us: i64,
}

impl State {
    /// The layers recorded in the run log for `run_id` with at least one step that did not fail,
    /// in the order they ran (from the first such step's start to the last one's end).
    pub async fn layer_runs(&self, run_id: &str) -> Result<Vec<LayerRun>> {
        let url = self.lake.state_url("runs");
        let Some(provider) = self.format.provider(&self.ctx, &url).await? else {
            return Ok(Vec::new());
        };
        let batches = self
            .ctx
            .read_table(provider)?
            .filter(
                col("run_id")
                    .eq(lit(run_id))
                    .and(col("status").not_eq(lit("failed"))),
            )?
            .select(vec![
                datafusion::logical_expr::cast(col("layer"), DataType::Utf8),
                datafusion::logical_expr::cast(col("logical_date"), DataType::Int32),
                datafusion::logical_expr::cast(col("started_at"), DataType::Int64),
                col("duration_ms"),
            ])?
            .collect()
            .await?;
        let mut layers: Vec<LayerRun> = Vec::new();
        for b in &batches {
            let layer = b.column(0).as_any().downcast_ref::<StringArray>();
            let date = b
                .column(1)
                .as_any()
                .downcast_ref::<arrow::array::Int32Array>();
            let start = b.column(2).as_any().downcast_ref::<Int64Array>();
            let dur = b.column(3).as_any().downcast_ref::<Int64Array>();
            let (Some(layer), Some(date), Some(start), Some(dur)) = (layer, date, start, dur)
            else {
                return Err(Error::Internal("unexpected run-log column types".into()));
            };
            for i in 0..b.num_rows() {
                let (name, s) = (layer.value(i), start.value(i));
                let end = s + dur.value(i) * 1000;
                match layers.iter_mut().find(|l| l.layer == name) {
                    Some(l) => {
                        l.started_us = l.started_us.min(s);
                        l.ended_us = l.ended_us.max(end);
                    }
                    None => layers.push(LayerRun {
                        layer: name.to_string(),
                        logical_date: date.value(i),
                        started_us: s,
                        ended_us: end,
                    }),
                }
            }
        }
        layers.sort_by_key(|l| l.started_us);
        Ok(layers)
    }
}

/// One successful build (`success` or `already_committed`) of a target, from the run log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// The run id.
    pub run_id: String,
    /// When the step started, µs since the epoch.
    pub started_at: i64,
    /// The recorded fingerprint JSON; `None` in records written before fingerprints existed.
    pub fingerprint: Option<String>,
}

impl State {
    /// The last successful build of every target in the run log, keyed by target. With
    /// `until`, only builds that started no later than the last record of run `until`; a run id
    /// the log does not hold is a usage error (exit 2) listing the latest runs.
    pub async fn last_builds(&self, until: Option<&str>) -> Result<BTreeMap<String, Build>> {
        let rows = match self.read("runs").await? {
            None => Vec::new(),
            Some(df) => {
                let text = |c: &str| datafusion::logical_expr::cast(col(c), DataType::Utf8);
                // Run logs written before fingerprints existed have no such column.
                let fingerprint = if df
                    .schema()
                    .field_with_unqualified_name("fingerprint")
                    .is_ok()
                {
                    text("fingerprint")
                } else {
                    lit(datafusion::scalar::ScalarValue::Utf8(None))
                };
                let batches = df
                    .select(vec![
                        text("run_id"),
                        text("target"),
                        text("status"),
                        datafusion::logical_expr::cast(col("started_at"), DataType::Int64),
                        fingerprint,
                    ])?
                    .collect()
                    .await?;
                let mut rows = Vec::new();
                for b in &batches {
                    let s = |i: usize| text_column(b, i, "runs");
                    let (run, target, status, fp) = (s(0)?, s(1)?, s(2)?, s(4)?);
                    let started = b
                        .column(3)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .ok_or_else(|| Error::Internal("unexpected started_at type".into()))?;
                    for i in 0..b.num_rows() {
                        rows.push((
                            run.value(i).to_string(),
                            target.value(i).to_string(),
                            status.value(i).to_string(),
                            started.value(i),
                            fp.is_valid(i).then(|| fp.value(i).to_string()),
                        ));
                    }
                }
                rows
            }
        };
        let bound = match until {
            None => i64::MAX,
            Some(run_id) => match rows.iter().filter(|r| r.0 == run_id).map(|r| r.3).max() {
                Some(t) => t,
                None => {
                    let mut latest: Vec<(i64, &str)> = Vec::new();
                    for r in &rows {
                        match latest.iter_mut().find(|l| l.1 == r.0) {
                            Some(l) => l.0 = l.0.max(r.3),
                            None => latest.push((r.3, r.0.as_str())),
                        }
                    }
                    latest.sort_by(|a, b| b.cmp(a));
                    return Err(Error::Usage(format!(
                        "--since-run: the run log ({}) has no run `{run_id}`; latest runs: {}",
                        crate::storage::redact(&self.lake.state_url("runs")),
                        if latest.is_empty() {
                            "none".to_string()
                        } else {
                            latest
                                .iter()
                                .take(5)
                                .map(|(_, r)| format!("`{r}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    )));
                }
            },
        };
        let mut out: BTreeMap<String, Build> = BTreeMap::new();
        for (run_id, target, status, started_at, fingerprint) in rows {
            if !matches!(status.as_str(), "success" | "already_committed") || started_at > bound {
                continue;
            }
            if out.get(&target).is_none_or(|b| b.started_at <= started_at) {
                out.insert(
                    target,
                    Build {
                        run_id,
                        started_at,
                        fingerprint,
                    },
                );
            }
        }
        Ok(out)
    }
}

fn runs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("layer", DataType::Utf8, false),
        Field::new("target", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("rows_updated", DataType::Int64, false),
        Field::new("logical_date", DataType::Date32, false),
        Field::new("started_at", ts_type(), false),
        Field::new("duration_ms", DataType::Int64, false),
        Field::new("message", DataType::Utf8, true),
        Field::new("details", DataType::Utf8, false),
        // Added later: nullable, so run logs written before them stay readable.
        Field::new("attempt", DataType::Utf8, true),
        Field::new("exit_code", DataType::Int32, true),
        Field::new("fingerprint", DataType::Utf8, true),
        Field::new("rows_deleted", DataType::Int64, true),
    ]))
}

/// Column `i` of a batch read from the state table `_smelter/<table>`, cast to text.
fn text_column<'a>(b: &'a RecordBatch, i: usize, table: &str) -> Result<&'a StringArray> {
    b.column(i)
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| Error::Internal(format!("unexpected _smelter/{table} column type")))
}

fn strings(records: &[RunRecord], f: impl Fn(&RunRecord) -> Option<&String>) -> Arc<dyn Array> {
    Arc::new(StringArray::from_iter(
        records.iter().map(|r| f(r).map(String::as_str)),
    ))
}

/// The timestamp type of state tables (microseconds, UTC).
pub fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Current time in microseconds since the epoch.
pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Field, Schema};

    /// Appends racing to create and extend one state table (as concurrent models' window and
    /// run-log records do) all land, each exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_first_appends_all_land_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            format!(
                "name = \"p\"\n[source]\ntype = \"sample\"\n[[source.tables]]\nname = \"shipments\"\n[storage]\nroot = \"{}\"\n",
                dir.path().join("lake").display()
            ),
        )
        .unwrap();
        let pipeline = crate::config::load(&path).unwrap();
        let lake = Lake::open(&pipeline).unwrap();
        let ctx = crate::engine::session(&pipeline, Some(&lake)).unwrap();
        let format = crate::table::for_pipeline(&pipeline, &lake);
        let schema = Arc::new(Schema::new(vec![Field::new("who", DataType::Utf8, false)]));
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let state = State::new(&lake, format.clone(), ctx.clone());
                let batch = RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(StringArray::from(vec![format!("w{i}")]))],
                )
                .unwrap();
                tokio::spawn(async move { state.append("race", batch).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let state = State::new(&lake, format, ctx);
        let rows = state
            .read("race")
            .await
            .unwrap()
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut who: Vec<String> = rows
            .iter()
            .flat_map(|b| {
                let c = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
                let a = c.as_any().downcast_ref::<StringArray>().unwrap();
                a.iter().map(|v| v.unwrap().to_string()).collect::<Vec<_>>()
            })
            .collect();
        who.sort();
        assert_eq!(who, (0..6).map(|i| format!("w{i}")).collect::<Vec<_>>());
    }
}
