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
//! A key that no longer arrives keeps its current version (dbt's `hard_deletes = "ignore"`).

use datafusion::prelude::{DataFrame, SessionContext};

use crate::error::{Error, Result};
use crate::plan::ident::quoted;
use crate::plan::Model;

/// The surrogate key column.
pub const SCD_ID: &str = "_scd_id";

/// `df` (the model's rows) with the history columns appended, typed as the table stores them
/// (their values are placeholders: [`history`] computes them). Used to compare the output
/// schema with the table's before anything runs.
/// `shown` is the model file as messages name it; a column the history would add that the output
/// already has is an error (exit 2).
pub fn shape(df: DataFrame, model: &Model, shown: &str) -> Result<DataFrame> {
    let [from, to, current] = &model.header.scd_columns;
    use datafusion::logical_expr::{cast, col, lit, Expr, ExprSchemable};
    let added = [from.as_str(), to.as_str(), current.as_str(), SCD_ID];
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
    Ok(df
        .with_column(from, start.clone())?
        .with_column(
            to,
            cast(lit(datafusion::scalar::ScalarValue::Null), start_type),
        )?
        .with_column(current, lit(true))?
        .with_column(SCD_ID, lit(datafusion::scalar::ScalarValue::Utf8(None)))?)
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

/// The rows to merge on [`SCD_ID`]: the recomputed history of every key of `batch` (the model's
/// rows, shaped by [`shape`]), given the table's current content `table` (`None` when the table
/// does not exist or is rebuilt). `run_start_us` is the check strategy's `valid_from`
/// (microseconds since the epoch, UTC).
///
/// Errors: a NULL key or a NULL `sequence_by` value in the batch is a data-quality error naming
/// the model and the column (exit 3); planning errors otherwise.
pub async fn history(
    ctx: &SessionContext,
    model: &Model,
    batch: DataFrame,
    table: Option<DataFrame>,
    run_start_us: i64,
) -> Result<DataFrame> {
    let [from, to, current] = model.header.scd_columns.clone().map(|c| quoted(&c));
    let keys: Vec<String> = model.header.unique_key.iter().map(|k| quoted(k)).collect();
    let scd = [
        model.header.scd_columns[0].as_str(),
        model.header.scd_columns[1].as_str(),
        model.header.scd_columns[2].as_str(),
        SCD_ID,
    ];
    let columns: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| !scd.contains(&n.as_str()))
        .collect();
    let cols = columns.iter().map(|c| quoted(c)).collect::<Vec<_>>();
    let list = |prefix: &str| {
        cols.iter()
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
    let new_name = format!("__scd_new_{tag}");
    let old_name = format!("__scd_old_{tag}");
    let batch = match start_expr(model) {
        Start::RunTime => batch.with_column(
            &model.header.scd_columns[0],
            datafusion::logical_expr::lit(datafusion::scalar::ScalarValue::TimestampMicrosecond(
                Some(run_start_us),
                Some("UTC".into()),
            )),
        )?,
        Start::Column(_) => batch,
    };
    let batch_schema = batch.schema().as_arrow().clone();
    ctx.register_table(new_name.as_str(), batch.into_view())?;
    let registered_old = match table {
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
            ctx.register_table(old_name.as_str(), t.into_view())?;
            true
        }
        None => false,
    };
    let nulls = keys
        .iter()
        .map(|k| format!("SUM(CASE WHEN {k} IS NULL THEN 1 ELSE 0 END)"))
        .chain(
            model
                .header
                .sequence_by
                .first()
                .map(|s| format!("SUM(CASE WHEN {} IS NULL THEN 1 ELSE 0 END)", quoted(s))),
        )
        .collect::<Vec<_>>()
        .join(", ");
    let counts = ctx
        .sql(&format!("SELECT {nulls} FROM {}", quoted(&new_name)))
        .await?
        .collect()
        .await?;
    let named: Vec<&String> = model
        .header
        .unique_key
        .iter()
        .chain(model.header.sequence_by.first())
        .collect();
    for (i, column) in named.iter().enumerate() {
        let n = counts
            .iter()
            .find(|b| b.num_rows() > 0)
            .map(|b| {
                arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Int64)
                    .ok()
                    .and_then(|a| {
                        a.as_any()
                            .downcast_ref::<arrow::array::Int64Array>()
                            .map(|a| a.value(0))
                    })
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        if n > 0 {
            deregister(ctx, &new_name, &old_name);
            return Err(Error::Quality {
                model: model.id.to_string(),
                message: format!(
                    "{n} row(s) have a NULL `{column}`; an scd2 model needs a key and a version start for every row; filter them or fix the source"
                ),
                findings: serde_json::Value::Null,
            });
        }
    }
    let new = quoted(&new_name);
    let old = quoted(&old_name);
    // The check strategy has no order among a key's rows: one row per key, as dbt requires.
    if model.header.sequence_by.is_empty() {
        let dups = ctx
            .sql(&format!(
                "SELECT COUNT(*) AS n FROM (SELECT 1 FROM {new} GROUP BY {} HAVING COUNT(*) > 1)",
                keys.join(", ")
            ))
            .await?
            .collect()
            .await?;
        let n = crate::engine::first_count(&dups, "n");
        if n > 0 {
            deregister(ctx, &new_name, &old_name);
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
    // The batch's versions (their start is already in the `valid_from` column, see `shape`).
    let changed = match (start_expr(model), registered_old) {
        (Start::RunTime, true) => {
            let same = model
                .header
                .check_cols
                .iter()
                .map(|c| format!("(o.{q} IS NOT DISTINCT FROM n.{q})", q = quoted(c)))
                .chain(std::iter::once(format!("o.{current}")))
                .collect::<Vec<_>>()
                .join(" AND ");
            format!(
                " WHERE NOT EXISTS (SELECT 1 FROM {old} o WHERE {} AND {same})",
                key_match("o", "n")
            )
        }
        _ => String::new(),
    };
    let incoming = format!("SELECT {}, n.{from} FROM {new} n{changed}", list("n."));
    // Every version of the batch's keys: the table's, then the new ones not already there.
    let versions = if registered_old {
        format!(
            "WITH incoming AS ({incoming}), \
             existing AS (SELECT {cols_o}, o.{from} FROM {old} o WHERE EXISTS (SELECT 1 FROM incoming i WHERE {km_oi})) \
             SELECT * FROM existing UNION ALL \
             SELECT * FROM incoming i WHERE NOT EXISTS (SELECT 1 FROM existing e WHERE {km_ei} AND e.{from} = i.{from})",
            cols_o = list("o."),
            km_oi = key_match("o", "i"),
            km_ei = key_match("e", "i"),
        )
    } else {
        incoming
    };
    // Equal starts of one key within the batch: the greatest row is the version (stable).
    let others = columns
        .iter()
        .filter(|c| !model.header.unique_key.contains(c))
        .map(|c| format!("{} DESC NULLS LAST", quoted(c)))
        .collect::<Vec<_>>();
    let order = if others.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY {}", others.join(", "))
    };
    let part = keys.join(", ");
    // Each part as `<length>:<text>`, so no two different keys give the same text.
    let id_parts = keys
        .iter()
        .chain(std::iter::once(&from))
        .map(|c| {
            format!("CAST(character_length(CAST({c} AS VARCHAR)) AS VARCHAR), ':', CAST({c} AS VARCHAR)")
        })
        .collect::<Vec<_>>()
        .join(", '|', ");
    let sql = format!(
        "SELECT {c}, {from}, \
         LEAD({from}) OVER (PARTITION BY {part} ORDER BY {from}) AS {to}, \
         LEAD({from}) OVER (PARTITION BY {part} ORDER BY {from}) IS NULL AS {current}, \
         md5(concat({id_parts})) AS {scd_id} \
         FROM (SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {part}, {from}{order}) AS __scd_rn \
         FROM ({versions}) v) d WHERE __scd_rn = 1) h",
        c = list(""),
        scd_id = quoted(SCD_ID),
    );
    let df = ctx.sql(&sql).await;
    deregister(ctx, &new_name, &old_name);
    Ok(df?)
}

fn deregister(ctx: &SessionContext, new: &str, old: &str) {
    let _ = ctx.deregister_table(new);
    let _ = ctx.deregister_table(old);
}
