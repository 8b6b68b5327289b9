//! `materialized: scd2`: a slowly changing dimension of type 2, the table dbt snapshots and
//! Lakeflow's `AUTO CDC … STORED AS SCD TYPE 2` keep: every version of each `unique_key`, with
//! its validity interval.
//!
//! Columns added to the model's own: `valid_from` and `valid_to` (the interval, `valid_to` NULL
//! while current; names set by `-- scd_columns:`), `is_current`, and `_scd_id` (the version's
//! surrogate key: the MD5 of the key values and `valid_from`, each as `<length>:<text>`, joined by
//! `|`, so that different keys never share an id).
//!
//! Strategies (dbt's names):
//! - **timestamp** (`-- sequence_by: <column>`): each row of the batch is a version that starts
//!   at its `sequence_by` value. A version that arrives late is inserted at its place in the
//!   history, and the intervals around it are recomputed; a version already in the table (same
//!   key and start) is kept as it is, so re-running a batch changes nothing.
//! - **check** (`-- check_cols: a, b`): a row starts a new version, valid from the run's start
//!   time, when one of the check columns differs (NULL-safe) from the key's current version.
//!
//! How: the history of every key in the batch (the table's versions of those keys plus the new
//! ones) is recomputed with `LEAD(valid_from) OVER (PARTITION BY key ORDER BY valid_from)`, and
//! merged into the table on `_scd_id` (one commit). Intervals of a key therefore never overlap
//! and leave no gaps, and exactly its latest version is current.
//!
//! Deletes (`-- hard_deletes:`, dbt's names; delete rows as [`super::deletes`] marks them):
//! `ignore` drops them; `invalidate` ends the key's version current at the delete (its `valid_to`
//! is the delete's `sequence_by` value, or the run's start time with `check_cols`) and leaves no
//! current row; `new_record` also adds a version starting at the delete, a copy of the ended one
//! with `is_deleted` true, current until the key comes back. A delete is an event in the key's
//! history like a version: ordered by its start (after a version of the same start), it counts
//! only right after a version (a second delete in a row changes nothing), and a version newer
//! than it re-opens the key. Every delete event is also kept in `_smelter/scd2_deletes/<layer>/
//! <model>` (key and start), so a late version older or newer than a delete is placed correctly
//! whatever the mode; it is committed before the table, idempotently.

use datafusion::prelude::{DataFrame, SessionContext};

use crate::error::{Error, Result};
use crate::plan::ident::quoted;
use crate::plan::{HardDeletes, Model};

/// The surrogate key column.
pub const SCD_ID: &str = "_scd_id";

/// `df` (the model's rows) with the history columns appended, typed as the table stores them
/// (their values are placeholders: [`history`] computes them). Used to compare the output
/// schema with the table's before anything runs.
/// `shown` is the model file as messages name it; a column the history would add that the output
/// already has is an error (exit 2).
pub fn shape(df: DataFrame, model: &Model, shown: &str) -> Result<DataFrame> {
    let [from, to, current, deleted] = &model.header.scd_columns;
    use datafusion::logical_expr::{cast, col, lit, Expr, ExprSchemable};
    let new_record = model.header.hard_deletes == HardDeletes::NewRecord;
    let mut added = vec![from.as_str(), to.as_str(), current.as_str()];
    if new_record {
        added.push(deleted.as_str());
    }
    added.push(SCD_ID);
    let mut problems = Vec::new();
    for (i, name) in added.iter().enumerate() {
        if added[..i].contains(name) {
            problems.push(format!("`scd_columns` names `{name}` twice"));
        } else if df.schema().field_with_unqualified_name(name).is_ok() {
            problems.push(format!(
                "the model's output already has a column `{name}`, which the scd2 history adds; rename it in the SQL or choose other names with `-- scd_columns:`"
            ));
        }
    }
    if !problems.is_empty() {
        return Err(Error::Sql {
            location: format!("{shown}:{}", model.header.line("scd_columns")),
            message: problems.join("; "),
        });
    }
    let start: Expr = match start_expr(model) {
        Start::Column(c) => col(datafusion::common::Column::new_unqualified(c)),
        Start::RunTime => lit(datafusion::scalar::ScalarValue::TimestampMicrosecond(
            Some(0),
            Some("UTC".into()),
        )),
    };
    let start_type = start.get_type(df.schema())?;
    let df = df
        .with_column(from, start.clone())?
        .with_column(
            to,
            cast(lit(datafusion::scalar::ScalarValue::Null), start_type),
        )?
        .with_column(current, lit(true))?;
    let df = if new_record {
        df.with_column(deleted, lit(false))?
    } else {
        df
    };
    Ok(df.with_column(SCD_ID, lit(datafusion::scalar::ScalarValue::Utf8(None)))?)
}

enum Start<'a> {
    Column(&'a str),
    RunTime,
}

fn start_expr(model: &Model) -> Start<'_> {
    match model.header.sequence_by.first() {
        Some(c) => Start::Column(c),
        None => Start::RunTime,
    }
}

/// What [`history`] recomputes from.
pub struct Batch {
    /// The model's upserts, shaped by [`shape`].
    pub upserts: DataFrame,
    /// The batch's delete rows, shaped likewise (ignored with `hard_deletes: ignore`).
    pub deletes: Option<DataFrame>,
    /// The table's current content; `None` when the table does not exist or is rebuilt.
    pub table: Option<DataFrame>,
    /// The delete events recorded by earlier runs (key columns and `valid_from`, see
    /// [`DELETES`]); `None` when there are none or the table is rebuilt.
    pub prior_deletes: Option<DataFrame>,
    /// The check strategy's `valid_from` (microseconds since the epoch, UTC).
    pub run_start_us: i64,
}

/// What [`history`] returns.
pub struct History {
    /// The rows to merge on [`SCD_ID`], marked by [`super::deletes::FLAG`]: the recomputed
    /// versions of the batch's keys (false) and the table's versions they no longer hold (true,
    /// to remove).
    pub rows: DataFrame,
    /// The batch's delete events to record in [`DELETES`] (key columns and `valid_from`), when
    /// the model tracks deletes.
    pub deletes: Option<DataFrame>,
}

/// The sidecar table of an scd2 model's delete events, under `_smelter/<DELETES>/<layer>/<model>`.
pub const DELETES: &str = "scd2_deletes";

/// The recomputed history of every key of the batch (see the module documentation), given the
/// table's content and the delete events recorded before.
///
/// Errors: a NULL key or a NULL `sequence_by` value in the batch (upserts or deletes) is a
/// data-quality error naming the model and the column (exit 3), as are several rows of one key
/// with the check strategy; planning errors otherwise.
pub async fn history(ctx: &SessionContext, model: &Model, batch: Batch) -> Result<History> {
    let names = &model.header.scd_columns;
    let [from, to, current, deleted] = names.clone().map(|c| quoted(&c));
    let tracks = model.header.hard_deletes != HardDeletes::Ignore;
    let new_record = model.header.hard_deletes == HardDeletes::NewRecord;
    let keys: Vec<String> = model.header.unique_key.iter().map(|k| quoted(k)).collect();
    let scd = [
        names[0].as_str(),
        names[1].as_str(),
        names[2].as_str(),
        names[3].as_str(),
        SCD_ID,
    ];
    let columns: Vec<String> = batch
        .upserts
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| !scd[..3].contains(&n.as_str()) && n != SCD_ID)
        .filter(|n| !(new_record && n == &names[3]))
        .collect();
    let cols = columns.iter().map(|c| quoted(c)).collect::<Vec<_>>();
    let list = |prefix: &str| {
        cols.iter()
            .map(|c| format!("{prefix}{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let key_list = |prefix: &str| {
        keys.iter()
            .map(|c| format!("{prefix}{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let key_match = |a: &str, b: &str| {
        keys.iter()
            .map(|k| format!("{a}.{k} = {b}.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let tag = format!("{}_{}", model.id.layer, model.id.name);
    let registered = Registered {
        ctx,
        names: ["new", "del", "old", "prior"].map(|n| format!("__scd_{n}_{tag}")),
    };
    let start_at = |df: DataFrame| -> Result<DataFrame> {
        Ok(match start_expr(model) {
            Start::RunTime => df.with_column(
                &names[0],
                datafusion::logical_expr::lit(
                    datafusion::scalar::ScalarValue::TimestampMicrosecond(
                        Some(batch.run_start_us),
                        Some("UTC".into()),
                    ),
                ),
            )?,
            Start::Column(_) => df,
        })
    };
    let upserts = start_at(batch.upserts)?;
    let batch_schema = upserts.schema().as_arrow().clone();
    ctx.register_table(registered.names[0].as_str(), upserts.into_view())?;
    let has_deletes = match (tracks, batch.deletes) {
        (true, Some(d)) => {
            ctx.register_table(registered.names[1].as_str(), start_at(d)?.into_view())?;
            true
        }
        _ => false,
    };
    let registered_old = match batch.table {
        Some(mut t) => {
            // Columns the model added since the table was written are NULL in its versions.
            for field in batch_schema.fields() {
                if t.schema()
                    .field_with_unqualified_name(field.name())
                    .is_err()
                {
                    t = t.with_column(
                        field.name(),
                        datafusion::logical_expr::cast(
                            datafusion::logical_expr::lit(datafusion::scalar::ScalarValue::Null),
                            field.data_type().clone(),
                        ),
                    )?;
                }
            }
            ctx.register_table(registered.names[2].as_str(), t.into_view())?;
            true
        }
        None => false,
    };
    let has_prior = match (tracks, batch.prior_deletes) {
        (true, Some(p)) => {
            ctx.register_table(registered.names[3].as_str(), p.into_view())?;
            true
        }
        _ => false,
    };
    let [new, del, old, prior] = registered.names.clone().map(|n| quoted(&n));
    // NULL keys and versions, in the upserts and in the deletes.
    let checked: Vec<&String> = model
        .header
        .unique_key
        .iter()
        .chain(model.header.sequence_by.first())
        .collect();
    check_nulls(ctx, model, &new, &checked).await?;
    if has_deletes {
        check_nulls(ctx, model, &del, &checked).await?;
    }
    // The check strategy has no order among a key's rows: one row per key, as dbt requires.
    if model.header.sequence_by.is_empty() {
        let all_keys = if has_deletes {
            format!(
                "SELECT {k} FROM {new} UNION ALL SELECT {k} FROM {del}",
                k = key_list("")
            )
        } else {
            format!("SELECT {} FROM {new}", key_list(""))
        };
        let dups = ctx
            .sql(&format!(
                "SELECT COUNT(*) AS n FROM (SELECT 1 FROM ({all_keys}) a GROUP BY {} HAVING COUNT(*) > 1)",
                keys.join(", ")
            ))
            .await?
            .collect()
            .await?;
        let n = crate::engine::first_count(&dups, "n");
        if n > 0 {
            return Err(Error::Quality {
                model: model.id.to_string(),
                message: format!(
                    "{n} key value(s) of ({}) occur more than once in the batch; the check strategy cannot tell which is newer: deduplicate in SQL, or use `-- sequence_by:` (timestamp strategy)",
                    model.header.unique_key.join(", ")
                ),
                findings: serde_json::Value::Null,
            });
        }
    }
    // The batch's versions (their start is already in the `valid_from` column, see `shape`);
    // with the check strategy, only those whose check columns differ from the live version.
    let changed = match (start_expr(model), registered_old) {
        (Start::RunTime, true) => {
            let same = model
                .header
                .check_cols
                .iter()
                .map(|c| format!("(o.{q} IS NOT DISTINCT FROM n.{q})", q = quoted(c)))
                .chain(std::iter::once(format!("o.{current}")))
                .chain(new_record.then(|| format!("o.{deleted} IS NOT TRUE")))
                .collect::<Vec<_>>()
                .join(" AND ");
            format!(
                " WHERE NOT EXISTS (SELECT 1 FROM {old} o WHERE {} AND {same})",
                key_match("o", "n")
            )
        }
        _ => String::new(),
    };
    let mut ctes = vec![format!(
        "incoming AS (SELECT {}, n.{from} FROM {new} n{changed})",
        list("n.")
    )];
    let mut touched = vec![format!("SELECT {} FROM incoming", key_list(""))];
    if has_deletes {
        ctes.push(format!(
            "dels AS (SELECT {}, d.{from} FROM {del} d)",
            key_list("d.")
        ));
        touched.push(format!("SELECT {} FROM dels", key_list("")));
    }
    ctes.push(format!("touched AS ({})", touched.join(" UNION ")));
    // A delete event has the key and the start; its other columns are NULL until rendered.
    let delete_cols = columns
        .iter()
        .map(|c| {
            if model.header.unique_key.contains(c) {
                quoted(c)
            } else {
                format!("NULL AS {}", quoted(c))
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut events = vec![format!(
        "SELECT {}, {from}, FALSE AS __del, 1 AS __src FROM incoming",
        list("")
    )];
    if registered_old {
        let live = if new_record {
            format!("o.{deleted} IS NOT TRUE AND ")
        } else {
            String::new()
        };
        ctes.push(format!(
            "existing AS (SELECT {}, o.{from} FROM {old} o WHERE {live}EXISTS (SELECT 1 FROM touched i WHERE {}))",
            list("o."),
            key_match("o", "i")
        ));
        events.insert(
            0,
            format!(
                "SELECT {}, {from}, FALSE AS __del, 0 AS __src FROM existing",
                list("")
            ),
        );
    }
    if has_prior {
        ctes.push(format!(
            "prior_dels AS (SELECT {}, p.{from} FROM {prior} p WHERE EXISTS (SELECT 1 FROM touched i WHERE {}))",
            key_list("p."),
            key_match("p", "i")
        ));
        events.push(format!(
            "SELECT {delete_cols}, {from}, TRUE, 0 FROM prior_dels"
        ));
    }
    if has_deletes {
        events.push(format!("SELECT {delete_cols}, {from}, TRUE, 1 FROM dels"));
    }
    ctes.push(format!("events AS ({})", events.join(" UNION ALL ")));
    // One event per key, start and kind: the table's, else the greatest row (stable).
    let order = std::iter::once("__src".to_string())
        .chain(
            columns
                .iter()
                .filter(|c| !model.header.unique_key.contains(c))
                .map(|c| format!("{} DESC NULLS LAST", quoted(c))),
        )
        .collect::<Vec<_>>()
        .join(", ");
    let part = keys.join(", ");
    let w = format!("PARTITION BY {part} ORDER BY {from}, __del");
    ctes.push(format!(
        "dedup AS (SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {part}, {from}, __del ORDER BY {order}) AS __scd_rn FROM events) e WHERE __scd_rn = 1)"
    ));
    // A delete counts only right after a version.
    ctes.push(format!(
        "effective AS (SELECT * FROM (SELECT *, LAG(__del) OVER ({w}) AS __prev FROM dedup) f WHERE NOT __del OR __prev IS FALSE)"
    ));
    // A `new_record` delete row copies the version it ends.
    let rendered_cols = columns
        .iter()
        .map(|c| {
            let q = quoted(c);
            if new_record && !model.header.unique_key.contains(c) {
                format!("CASE WHEN __del THEN LAG({q}) OVER ({w}) ELSE {q} END AS {q}")
            } else {
                q
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    ctes.push(format!(
        "rendered AS (SELECT {rendered_cols}, {from}, LEAD({from}) OVER ({w}) AS {to}, __del FROM effective)"
    ));
    // Each part as `<length>:<text>`, so no two different keys give the same text.
    let id_parts = keys
        .iter()
        .chain(std::iter::once(&from))
        .map(|c| {
            format!("CAST(character_length(CAST({c} AS VARCHAR)) AS VARCHAR), ':', CAST({c} AS VARCHAR)")
        })
        .collect::<Vec<_>>()
        .join(", '|', ");
    let flag = quoted(super::deletes::FLAG);
    let scd_id = quoted(SCD_ID);
    let deleted_col = if new_record {
        format!("__del AS {deleted}, ")
    } else {
        String::new()
    };
    let only_live = if new_record { "" } else { " WHERE NOT __del" };
    ctes.push(format!(
        "scd_rows AS (SELECT {c}, {from}, {to}, {to} IS NULL AS {current}, {deleted_col}\
         md5(concat({id_parts}, CASE WHEN __del THEN '|7:deleted' ELSE '' END)) AS {scd_id}, \
         FALSE AS {flag} FROM rendered{only_live})",
        c = list(""),
    ));
    // A version the table holds exactly as recomputed is left out: merging it would rewrite it
    // unchanged and count it as updated.
    let unchanged = if registered_old {
        let same = columns
            .iter()
            .map(|c| quoted(c))
            .chain([from.clone(), to.clone(), current.clone()])
            .chain(new_record.then(|| deleted.clone()))
            .map(|c| format!("(o.{c} IS NOT DISTINCT FROM r.{c})"))
            .collect::<Vec<_>>()
            .join(" AND ");
        format!(
            " WHERE NOT EXISTS (SELECT 1 FROM {old} o WHERE o.{id} = r.{id} AND {same})",
            id = quoted(SCD_ID)
        )
    } else {
        String::new()
    };
    let mut sql = format!(
        "WITH {} SELECT * FROM scd_rows r{unchanged}",
        ctes.join(", ")
    );
    if new_record && registered_old {
        // A delete row whose event no longer counts (a delete came before it) is removed.
        sql.push_str(&format!(
            " UNION ALL SELECT {}, o.{from}, o.{to}, o.{current}, o.{deleted}, o.{scd_id}, TRUE AS {flag} \
             FROM {old} o WHERE o.{deleted} IS TRUE AND EXISTS (SELECT 1 FROM touched i WHERE {}) \
             AND NOT EXISTS (SELECT 1 FROM scd_rows f WHERE f.{scd_id} = o.{scd_id})",
            list("o."),
            key_match("o", "i")
        ));
    }
    let rows = ctx.sql(&sql).await?;
    let deletes = if has_deletes {
        Some(
            ctx.sql(&format!(
                "SELECT DISTINCT {}, d.{from} FROM {del} d",
                key_list("d.")
            ))
            .await?,
        )
    } else {
        None
    };
    Ok(History { rows, deletes })
}

/// Tables registered for one [`history`] call, deregistered when it returns.
struct Registered<'a> {
    ctx: &'a SessionContext,
    names: [String; 4],
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = self.ctx.deregister_table(name.as_str());
        }
    }
}

/// Errors when one of `columns` is NULL in a row of the registered table `table` (quoted).
async fn check_nulls(
    ctx: &SessionContext,
    model: &Model,
    table: &str,
    columns: &[&String],
) -> Result<()> {
    let sums = columns
        .iter()
        .map(|c| format!("SUM(CASE WHEN {} IS NULL THEN 1 ELSE 0 END)", quoted(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let counts = ctx
        .sql(&format!("SELECT {sums} FROM {table}"))
        .await?
        .collect()
        .await?;
    for (i, column) in columns.iter().enumerate() {
        let n = counts
            .iter()
            .find(|b| b.num_rows() > 0)
            .and_then(|b| {
                arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Int64).ok()
            })
            .and_then(|a| {
                a.as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .filter(|a| !arrow::array::Array::is_null(*a, 0))
                    .map(|a| a.value(0))
            })
            .unwrap_or(0);
        if n > 0 {
            return Err(Error::Quality {
                model: model.id.to_string(),
                message: format!(
                    "{n} row(s) have a NULL `{column}`; an scd2 model needs a key and a version start for every row; filter them or fix the source"
                ),
                findings: serde_json::Value::Null,
            });
        }
    }
    Ok(())
}
