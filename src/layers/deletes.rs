//! Deletes in incremental models: which rows of a `merge` or `scd2` model's output are deletes,
//! and the tombstones that keep a deleted key deleted when an older version arrives late.
//!
//! A model applies deletes when its header has `-- delete_when: <condition>` (SQL over its output
//! columns) or, by default, when its output has a column `_op` (the operation bronze records for
//! change data: `U` upsert, `D` delete), with the condition `_op = 'D'`. The condition is
//! evaluated once per row into a boolean column ([`FLAG`], NULL counting as false) that travels
//! with the rows to the table format's merge, which removes the matched row instead of updating
//! it. `_op` itself is never written to the table (alias it to keep it).
//!
//! Data flow in the model runner: [`mark`] (after planning) → [`split`] (upserts go through the
//! schema checks and expectations, deletes do not) → [`merge_input`] (a `merge` model) or
//! [`crate::layers::scd2::history`] (an `scd2` model) → the write.
//!
//! **Tombstones** (`merge` with `sequence_by`): a Delta table `_smelter/tombstones/<layer>/<model>`
//! holds, for each deleted key, the version of its newest delete (key and `sequence_by`
//! columns). An incoming upsert whose version is not newer than its key's tombstone
//! is dropped (a late, older version never resurrects a deleted key; at equal versions the delete
//! wins); a newer one is applied and clears the tombstone; a delete raises it. The tombstones are
//! committed first, the table second, both with the run's transaction id: after a crash between
//! the two, the next attempt (or the next run, whose catch-up window reads the same rows again)
//! computes the same table, because the tombstone update is idempotent and never decides
//! differently for the rows of the batch that caused it.

use datafusion::common::Column;
use datafusion::logical_expr::{cast, col, lit, Expr, ExprSchemable};
use datafusion::prelude::DataFrame;

use super::RunContext;
use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::plan::{Materialization, Model};
use crate::table::{WriteMode, WriteRequest};

/// The boolean column marking delete rows between [`mark`] and the write (never written).
pub const FLAG: &str = "__smelter_delete";

/// The operation column of change data in bronze (`U` upsert, `D` delete).
pub const OP: &str = "_op";

use super::bronze::INGESTED_AT;

/// The version column of change tracking's rows.
const CHANGE_VERSION: &str = crate::extract::CHANGE_VERSION_COLUMN;

/// The model's delete condition over its output `df`: the `delete_when` header, or `_op = 'D'`
/// when the output has an `_op` column; `None` when the model applies no deletes (also for
/// materializations other than `merge` and `scd2`, which the header refuses).
///
/// Errors (exit 2, at the model file and the header line): a condition that does not parse,
/// names a column the output lacks, or is not boolean.
pub fn predicate(df: &DataFrame, model: &Model, shown: &str) -> Result<Option<Expr>> {
    if !matches!(
        model.header.materialized,
        Materialization::Merge | Materialization::Scd2
    ) {
        return Ok(None);
    }
    let (text, line) = match &model.header.delete_when {
        Some((text, line)) => (text.as_str(), *line),
        None if df.schema().field_with_unqualified_name(OP).is_ok() => ("_op = 'D'", 1),
        None => return Ok(None),
    };
    let error = |message: String| Error::Sql {
        location: format!("{shown}:{line}"),
        message: format!(
            "`delete_when: {text}` {message}; columns: {}",
            df.schema()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let expr = df
        .parse_sql_expr(text)
        .map_err(|e| error(unplannable("cannot be read", &e)))?;
    match expr.get_type(df.schema()) {
        Ok(arrow::datatypes::DataType::Boolean | arrow::datatypes::DataType::Null) => {
            Ok(Some(expr))
        }
        Ok(other) => Err(error(format!(
            "is not a condition (its type is {}): write a comparison that is true for delete rows",
            crate::schema::sql_type_name(&other)
        ))),
        Err(e) => Err(error(unplannable("cannot be planned", &e))),
    }
}

/// Why a delete condition cannot be used: a column the output lacks by its plain name (not the
/// planner's qualified one, with its list of qualified names), else the planner's message.
fn unplannable(what: &str, e: &datafusion::error::DataFusionError) -> String {
    use datafusion::common::SchemaError;
    use datafusion::error::DataFusionError as D;
    match e.find_root() {
        D::SchemaError(e, _) => match e.as_ref() {
            SchemaError::FieldNotFound { field, .. } => {
                format!(
                    "names column `{}`, which the model's output does not have",
                    field.name
                )
            }
            _ => format!("{what}: {}", e),
        },
        e => format!("{what}: {}", e.strip_backtrace()),
    }
}

/// Checks that a versioned model (`sequence_by`) that applies deletes and reads a bronze table
/// that tracks them orders its versions the way those deletes need (whatever its delete
/// condition: `_op` may reach it under another name):
/// - `detect_deletes` (full snapshots): a delete row is a copy of the key's last version, so a
///   key that a later snapshot brings back unchanged (after a partial or empty snapshot) has
///   the delete's version; only bronze's ingestion time tells them apart, so `sequence_by` must
///   include `_ingested_at` (for a merge, typically last: `modified_at, _ingested_at`).
/// - `change_tracking`: a delete row has only its key and `_change_version` (its other columns
///   are NULL, and a NULL version is the oldest), so `_change_version` must be the first
///   `sequence_by` column.
///
/// Errors (exit 2, at the `sequence_by` line): the ordering and how to fix it.
fn check_order(pipeline: &Pipeline, model: &Model, shown: &str) -> Result<()> {
    let sequence_by = &model.header.sequence_by;
    if sequence_by.is_empty() {
        return Ok(());
    }
    let tracked = |kind: fn(&crate::config::SourceTable) -> bool| {
        model
            .depends_on
            .iter()
            .filter(|d| d.layer == crate::plan::Layer::Bronze)
            .find(|d| {
                pipeline
                    .source
                    .tables
                    .iter()
                    .any(|t| t.name == d.name && kind(t))
            })
    };
    let has = |c: &str| sequence_by.iter().any(|s| s == c);
    let scd2 = model.header.materialized == Materialization::Scd2;
    let mut problems = Vec::new();
    if let Some(t) = tracked(|t| t.mode == crate::config::ReadMode::ChangeTracking) {
        if sequence_by[0] != CHANGE_VERSION {
            problems.push(format!(
                "`{t}` is read by change tracking, whose delete rows carry only the key and `{CHANGE_VERSION}` (a NULL version is the oldest, so they would never apply): order by `{CHANGE_VERSION}` first (`-- sequence_by: {CHANGE_VERSION}`)"
            ));
        }
    }
    if let Some(t) = tracked(|t| t.detect_deletes) {
        if !has(INGESTED_AT) {
            let fix = if scd2 {
                "use the check strategy over each key's newest bronze row (`-- check_cols: …`; its versions and deletes are dated by the run, see docs/incremental.md), or `-- sequence_by: _ingested_at`".to_string()
            } else {
                format!(
                    "order by bronze's ingestion time too: `-- sequence_by: {}, {INGESTED_AT}` (and select `{INGESTED_AT}`)",
                    sequence_by.join(", ")
                )
            };
            problems.push(format!(
                "`{t}` detects deletes from full snapshots: a delete row copies its key's last version, so a key that a later snapshot brings back unchanged ties with its own delete, and only bronze's `{INGESTED_AT}` orders them; {fix}"
            ));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::Sql {
        location: format!("{shown}:{}", model.header.line("sequence_by")),
        message: format!(
            "model `{}` applies the deletes bronze records, but its `sequence_by` cannot order them: {}",
            model.id,
            problems.join("; ")
        ),
    })
}

/// `df` with the [`FLAG`] column (the delete condition, NULL as false) and without `_op`, when
/// the model applies deletes; `df` unchanged otherwise. Errors: see [`predicate`] and
/// [`check_order`].
pub fn mark(pipeline: &Pipeline, df: DataFrame, model: &Model, shown: &str) -> Result<DataFrame> {
    let Some(condition) = predicate(&df, model, shown)? else {
        return Ok(df);
    };
    check_order(pipeline, model, shown)?;
    let df = df.with_column(
        FLAG,
        datafusion::functions::expr_fn::coalesce(vec![condition, lit(false)]),
    )?;
    if df.schema().field_with_unqualified_name(OP).is_ok() {
        return Ok(df.drop_columns(&[OP])?);
    }
    Ok(df)
}

/// `df` without the [`FLAG`] column: the shape the table has (used for planning and lineage).
pub fn unmarked(df: DataFrame) -> Result<DataFrame> {
    if df.schema().field_with_unqualified_name(FLAG).is_ok() {
        return Ok(df.drop_columns(&[FLAG])?);
    }
    Ok(df)
}

/// The delete rows of a marked batch, staged: read them while this lives.
pub struct Deletes {
    /// The delete rows, with the model's columns (no [`FLAG`]).
    pub df: DataFrame,
    _stage: crate::engine::Staged,
}

/// Splits a [`mark`]ed batch into its upserts and its deletes (executing it once, into a stage
/// both read); an unmarked batch is returned as it is, with no deletes.
pub async fn split(
    ctx: &datafusion::prelude::SessionContext,
    df: DataFrame,
) -> Result<(DataFrame, Option<Deletes>)> {
    if df.schema().field_with_unqualified_name(FLAG).is_err() {
        return Ok((df, None));
    }
    let stage = crate::engine::stage(ctx, df).await?;
    let flag = || col(Column::new_unqualified(FLAG));
    let upserts = stage
        .df
        .clone()
        .filter(flag().is_not_true())?
        .drop_columns(&[FLAG])?;
    let deletes = stage
        .df
        .clone()
        .filter(flag().is_true())?
        .drop_columns(&[FLAG])?;
    Ok((
        upserts,
        Some(Deletes {
            df: deletes,
            _stage: stage,
        }),
    ))
}

/// `upserts` and `deletes` in one input marked by [`FLAG`], with the upserts' columns (a column
/// the deletes lack, or one the upserts' schema evolution retyped, is cast or NULL).
pub fn marked_union(upserts: DataFrame, deletes: DataFrame) -> Result<DataFrame> {
    let target = upserts.schema().clone();
    let exprs: Vec<Expr> = target
        .fields()
        .iter()
        .map(|f| {
            let name = f.name();
            let value = if deletes.schema().field_with_unqualified_name(name).is_ok() {
                col(Column::new_unqualified(name))
            } else {
                lit(datafusion::scalar::ScalarValue::Null)
            };
            cast(value, f.data_type().clone()).alias(name)
        })
        .collect();
    let unqualified: Vec<Expr> = target
        .fields()
        .iter()
        .map(|f| col(Column::new_unqualified(f.name())))
        .collect();
    let upserts = upserts.select(unqualified)?.with_column(FLAG, lit(false))?;
    let deletes = deletes.select(exprs)?.with_column(FLAG, lit(true))?;
    Ok(upserts.union(deletes)?)
}

/// URL of a model's sidecar table `name` (`tombstones`, `scd2_deletes`) under `_smelter/`.
pub fn sidecar_url(rc: &RunContext<'_>, model: &Model, name: &str) -> url::Url {
    rc.lake
        .state_url(&format!("{name}/{}/{}", model.id.layer, model.id.name))
}

/// The input of a `merge` model's write that applies deletes, after the tombstones are
/// committed: `upserts` (checked rows) and `deletes` marked by [`FLAG`], for
/// [`WriteMode::Merge`] with `delete`; on a full refresh (`overwrite`), the upserts alone.
///
/// With `sequence_by`, upserts not newer than their key's tombstone are left out, and the
/// tombstones are updated (a full refresh rebuilds them from the batch's deletes) in a commit
/// carrying `txn_id`, skipped when that id is already committed there. The returned stage (if
/// any) must live until the write is done.
pub async fn merge_input(
    rc: &RunContext<'_>,
    model: &Model,
    upserts: DataFrame,
    deletes: DataFrame,
    overwrite: bool,
    txn_id: Option<String>,
) -> Result<(DataFrame, Option<crate::engine::Staged>)> {
    let keys = &model.header.unique_key;
    let sequence_by = &model.header.sequence_by;
    if sequence_by.is_empty() {
        return Ok((
            if overwrite {
                upserts
            } else {
                marked_union(upserts, deletes)?
            },
            None,
        ));
    }
    let url = sidecar_url(rc, model, "tombstones");
    let version_cols: Vec<Expr> = keys
        .iter()
        .chain(sequence_by)
        .map(|c| col(Column::new_unqualified(c)))
        .collect();
    let write = |input: DataFrame, mode: WriteMode| {
        let txn_id = txn_id.clone();
        let url = url.clone();
        async move {
            rc.format
                .write(WriteRequest {
                    ctx: &rc.ctx,
                    url: &url,
                    input,
                    mode,
                    partition_by: Vec::new(),
                    txn_id,
                    metadata: rc.commit_metadata(&[
                        ("model", model.id.to_string()),
                        ("operation", "tombstones".into()),
                    ]),
                    read_version: None,
                    observer: None,
                    staged: None,
                })
                .await
        }
    };
    if overwrite {
        write(deletes.select(version_cols)?, WriteMode::Overwrite).await?;
        return Ok((upserts, None));
    }
    let tombstones = rc.format.provider(&rc.ctx, &url).await?;
    let Some(tombstones) = tombstones else {
        if deletes.clone().count().await? > 0 {
            write(
                deletes.clone().select(version_cols)?,
                WriteMode::Merge {
                    keys: keys.clone(),
                    sequence_by: sequence_by.clone(),
                    delete: None,
                },
            )
            .await?;
        }
        return Ok((marked_union(upserts, deletes)?, None));
    };
    // Each upsert with whether its key has a tombstone, less those the tombstone outranks.
    let tag = format!("{}_{}", model.id.layer, model.id.name);
    let (u_name, t_name) = (format!("__tomb_u_{tag}"), format!("__tomb_t_{tag}"));
    rc.ctx
        .register_table(u_name.as_str(), upserts.into_view())?;
    rc.ctx
        .register_table(t_name.as_str(), rc.ctx.read_table(tombstones)?.into_view())?;
    let q = |c: &str| crate::plan::ident::quoted(c);
    let on = keys
        .iter()
        .map(|k| format!("u.{k} = t.{k}", k = q(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let newer = crate::table::newer_version(sequence_by, "u", "t")
        .ok_or_else(|| Error::Internal("sequence_by is empty".into()))?;
    let present = format!("t.{}", q(&keys[0]));
    let sql = format!(
        "SELECT u.*, {present} IS NOT NULL AS __tomb_cleared FROM {} u LEFT JOIN {} t ON {on} \
         WHERE {present} IS NULL OR ({newer})",
        q(&u_name),
        q(&t_name),
    );
    let kept = rc.ctx.sql(&sql).await;
    let kept = match kept {
        Ok(df) => crate::engine::stage(&rc.ctx, df).await,
        Err(e) => Err(e.into()),
    };
    let _ = rc.ctx.deregister_table(u_name.as_str());
    let _ = rc.ctx.deregister_table(t_name.as_str());
    let kept = kept?;
    let cleared = kept
        .df
        .clone()
        .filter(col("__tomb_cleared"))?
        .select(version_cols.clone())?
        .with_column(FLAG, lit(true))?;
    let raised = deletes
        .clone()
        .select(version_cols)?
        .with_column(FLAG, lit(false))?;
    let update = raised.union(cleared)?;
    if update.clone().count().await? > 0 {
        write(
            update,
            WriteMode::Merge {
                keys: keys.clone(),
                sequence_by: sequence_by.clone(),
                delete: Some(FLAG.into()),
            },
        )
        .await?;
    }
    let upserts = kept.df.clone().drop_columns(&["__tomb_cleared"])?;
    Ok((marked_union(upserts, deletes)?, Some(kept)))
}
