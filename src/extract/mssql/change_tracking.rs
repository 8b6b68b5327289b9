//! SQL Server Change Tracking (`[[source.tables]] mode = "change_tracking"`): each run reads
//! the rows changed since the version the table was last synced to, deletes included.
//!
//! Per run, one connection asks `CHANGE_TRACKING_CURRENT_VERSION()` and
//! `CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(@P1))`, then:
//!
//! - **incremental** (a stored version that is still valid): one query,
//!   `CHANGETABLE(CHANGES <table>, @P1) AS [ct] LEFT JOIN <table> AS [t]` on the key. The key
//!   columns come from `[ct]` (a deleted row has no `[t]` row), the other columns from `[t]`, with
//!   `_op` (`'D'` for `SYS_CHANGE_OPERATION = 'D'`, else `'U'`) and `_change_version`
//!   (`SYS_CHANGE_VERSION`).
//! - **full** (first sync, `--full-refresh`, or a stored version older than the minimum valid
//!   one, i.e. cleanup removed changes since, or newer than the current one, i.e. another or a
//!   restored database): the whole table, in `partitions` key ranges like a full extract, every
//!   row `_op = 'U'` with `_change_version` = the current version. The read is a snapshot, so
//!   bronze adds deletes for the keys that vanished (see `docs/incremental.md`).
//!
//! The current version is read before the rows and becomes the table's watermark (committed by
//! bronze after its own commit). No snapshot isolation is used (it needs
//! `ALLOW_SNAPSHOT_ISOLATION ON`, which a reader cannot assume): a change committed while the rows
//! are read has a higher version, so it is read again by the next run. Nothing is missed, and a
//! change may land twice with the same `_change_version`, which a model's
//! `sequence_by: _change_version` keeps once.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{Field, Schema};
use tiberius::ColumnData;

use super::connect::{connect, source_error, MssqlClient};
use super::types::{self, quote_ident, Kind, Mapping, SourceColumn};
use super::{describe_table, discover_mappings, quoted_object, shapes, spawn_partitions};
use super::{spawn_read, Where};
use crate::config::{MssqlSource, SourceTable};
use crate::error::{Error, Result};
use crate::extract::source::TableRead;
use crate::extract::{CHANGE_VERSION_COLUMN, OP_COLUMN};
use crate::state::Watermark;

/// Makes every column but the key nullable (a delete row carries only the key); a key column
/// the table does not have is an error naming it (exit 2).
pub(super) fn relax_nullability(
    what: &str,
    table: &SourceTable,
    columns: &mut [SourceColumn],
) -> Result<()> {
    for key in &table.key {
        if !columns.iter().any(|c| &c.name == key) {
            return Err(Error::Source {
                message: format!(
                    "{what}: key column `{key}` (source.tables.key) does not exist; `mode = \"change_tracking\"` joins CHANGETABLE to the table on its primary key columns"
                ),
                retryable: false,
            });
        }
    }
    for c in columns.iter_mut() {
        if !table.key.contains(&c.name) {
            c.nullable = true;
        }
    }
    Ok(())
}

/// The mappings of the two change columns the incremental query selects after the table's:
/// `_op` and `_change_version`.
fn change_mappings() -> Vec<Mapping> {
    let column = |name: &str, data_type: &str| SourceColumn {
        name: name.into(),
        data_type: data_type.into(),
        max_length: Some(1),
        precision: None,
        scale: None,
        datetime_precision: None,
        nullable: false,
    };
    vec![
        Mapping {
            column: column(OP_COLUMN, "nchar"),
            kind: Kind::Utf8,
            select: format!(
                "CASE WHEN [ct].[SYS_CHANGE_OPERATION] = N'D' THEN N'D' ELSE N'U' END AS {}",
                quote_ident(OP_COLUMN)
            ),
        },
        Mapping {
            column: column(CHANGE_VERSION_COLUMN, "bigint"),
            kind: Kind::I64,
            select: format!(
                "[ct].[SYS_CHANGE_VERSION] AS {}",
                quote_ident(CHANGE_VERSION_COLUMN)
            ),
        },
    ]
}

/// `batch` (of a full sync) with `_op = 'U'` and `_change_version = version` appended.
pub(super) fn snapshot_batch(batch: &RecordBatch, version: i64) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let change = types::arrow_schema(&change_mappings());
    let mut fields: Vec<Arc<Field>> = batch.schema().fields().iter().cloned().collect();
    fields.extend(change.fields().iter().cloned());
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(StringArray::from(vec!["U"; n])));
    columns.push(Arc::new(Int64Array::from(vec![version; n])));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// The incremental query: the net changes since `since` joined to the table's current rows.
fn changes_query(table: &SourceTable, mappings: &[Mapping], since: i64) -> (String, Where) {
    // Each mapping's expression names its column once, before any alias: qualified here.
    let qualified = |m: &Mapping, alias: &str| {
        let q = quote_ident(&m.column.name);
        if m.select == q {
            format!("[{alias}].{q} AS {q}")
        } else {
            m.select.replacen(&q, &format!("[{alias}].{q}"), 1)
        }
    };
    let mut select: Vec<String> = mappings
        .iter()
        .map(|m| {
            let from = if table.key.contains(&m.column.name) {
                "ct"
            } else {
                "t"
            };
            qualified(m, from)
        })
        .collect();
    select.extend(change_mappings().into_iter().map(|m| m.select));
    let on: Vec<String> = table
        .key
        .iter()
        .map(|k| {
            let q = quote_ident(k);
            format!("[t].{q} = [ct].{q}")
        })
        .collect();
    let object = quoted_object(&table.object);
    let mut w = Where::default();
    let p = w.param(ColumnData::I64(Some(since)));
    let sql = format!(
        "SELECT {} FROM CHANGETABLE(CHANGES {object}, {p}) AS [ct] LEFT JOIN {object} AS [t] ON {}",
        select.join(", "),
        on.join(" AND ")
    );
    (sql, w)
}

/// The database's current change-tracking version and the table's minimum valid version. A
/// database or table without change tracking (either is NULL) is an error naming the table and
/// the statement that enables it (exit 2).
async fn versions(client: &mut MssqlClient, what: &str, table: &SourceTable) -> Result<(i64, i64)> {
    let sql = "SELECT CHANGE_TRACKING_CURRENT_VERSION() AS [current_version], \
               CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(@P1)) AS [min_valid_version]";
    let object = quoted_object(&table.object);
    let row = client
        .query(sql, &[&object.as_str()])
        .await
        .map_err(|e| source_error(what, e))?
        .into_row()
        .await
        .map_err(|e| source_error(what, e))?;
    let values: Vec<Option<i64>> = row
        .map(|r| r.into_iter().map(|v| super::int_of(&v)).collect())
        .unwrap_or_default();
    match (values.first().copied().flatten(), values.get(1).copied().flatten()) {
        (Some(current), Some(min_valid)) => Ok((current, min_valid)),
        (None, _) => Err(Error::Source {
            message: format!(
                "{what}: `mode = \"change_tracking\"`, but change tracking is not enabled on the database (CHANGE_TRACKING_CURRENT_VERSION() is NULL); enable it with `ALTER DATABASE .. SET CHANGE_TRACKING = ON`, or read the table with a watermark"
            ),
            retryable: false,
        }),
        (Some(_), None) => Err(Error::Source {
            message: format!(
                "{what}: `mode = \"change_tracking\"`, but change tracking is not enabled on `{}` or the login may not see it (CHANGE_TRACKING_MIN_VALID_VERSION is NULL); run `ALTER TABLE {object} ENABLE CHANGE_TRACKING` and grant `VIEW CHANGE TRACKING` on it",
                table.object
            ),
            retryable: false,
        }),
    }
}

/// Starts the read of a change-tracked table from the `stored` version (see the module docs).
pub(super) async fn start_read(
    settings: &MssqlSource,
    table: &SourceTable,
    stored: Option<&Watermark>,
    full_refresh: bool,
    batch_size: usize,
) -> Result<TableRead> {
    let what = describe_table(settings, table);
    let mut client = connect(settings).await?;
    let mappings = discover_mappings(&mut client, &what, table).await?;
    let (current, min_valid) = versions(&mut client, &what, table).await?;
    let since = stored.map(|w| w.value);
    let full = match since {
        None => {
            tracing::info!(table = %table.name, version = current, "First change-tracking sync: reading the whole table.");
            true
        }
        Some(_) if full_refresh => {
            tracing::info!(table = %table.name, version = current, "Full refresh: re-syncing the whole change-tracked table.");
            true
        }
        Some(s) if s < min_valid => {
            tracing::warn!(table = %table.name, synced_version = s, min_valid_version = min_valid, version = current, "The last synced change-tracking version is older than the table's minimum valid version (change tracking cleanup removed changes since): re-syncing the whole table, with deletes for the keys that vanished.");
            true
        }
        Some(s) if s > current => {
            tracing::warn!(table = %table.name, synced_version = s, version = current, "The last synced change-tracking version is newer than the database's current version (a restored or another database): re-syncing the whole table, with deletes for the keys that vanished.");
            true
        }
        Some(_) => false,
    };
    let mut all = mappings.clone();
    all.extend(change_mappings());
    let schema = types::arrow_schema(&all);
    let partitions = match since.filter(|_| !full) {
        None => {
            spawn_partitions(
                settings,
                &what,
                client,
                table,
                &mappings,
                Where::default(),
                batch_size,
                Some(current),
            )
            .await?
        }
        Some(since) => {
            drop(client);
            let (sql, w) = changes_query(table, &mappings, since);
            vec![spawn_read(
                settings,
                &what,
                &table.object,
                sql,
                w,
                all,
                batch_size,
                None,
            )]
        }
    };
    Ok(TableRead {
        columns: shapes(&mappings),
        schema,
        watermark_col: None,
        partitions,
        source_files: Vec::new(),
        rejected: None,
        change_version: Some(current),
        snapshot: full,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> SourceTable {
        SourceTable {
            name: "orders".into(),
            object: "sales.orders".into(),
            query: None,
            casts: Default::default(),
            key: vec!["region".into(), "order id".into()],
            watermark: None,
            mode: crate::config::ReadMode::ChangeTracking,
            detect_deletes: false,
            lookback_seconds: 0,
            partitions: 1,
            on_schema_change: Default::default(),
            on_error: Default::default(),
            files: None,
        }
    }

    #[test]
    fn changes_query_takes_keys_from_the_change_table_and_binds_the_version() {
        let col = |name: &str, ty: &str| {
            types::map_column(
                "sales.orders",
                &types::column_of_type(name, ty, true).unwrap(),
            )
            .unwrap()
        };
        let mappings = vec![
            col("region", "nvarchar(10)"),
            col("order id", "int"),
            col("total", "money"),
            col("note]x", "nvarchar(max)"),
        ];
        let (sql, w) = changes_query(&table(), &mappings, 42);
        assert_eq!(
            sql,
            "SELECT [ct].[region] AS [region], [ct].[order id] AS [order id], \
             CAST([t].[total] AS decimal(19,4)) AS [total], [t].[note]]x] AS [note]]x], \
             CASE WHEN [ct].[SYS_CHANGE_OPERATION] = N'D' THEN N'D' ELSE N'U' END AS [_op], \
             [ct].[SYS_CHANGE_VERSION] AS [_change_version] \
             FROM CHANGETABLE(CHANGES [sales].[orders], @P1) AS [ct] \
             LEFT JOIN [sales].[orders] AS [t] ON [t].[region] = [ct].[region] AND [t].[order id] = [ct].[order id]"
        );
        assert!(matches!(w.params.as_slice(), [ColumnData::I64(Some(42))]));
    }

    #[test]
    fn non_key_columns_become_nullable_and_a_missing_key_is_named() {
        let mut cols = vec![
            types::column_of_type("region", "nvarchar(10)", false).unwrap(),
            types::column_of_type("order id", "int", false).unwrap(),
            types::column_of_type("total", "money", false).unwrap(),
        ];
        relax_nullability("t", &table(), &mut cols).unwrap();
        let nullable: Vec<bool> = cols.iter().map(|c| c.nullable).collect();
        assert_eq!(nullable, [false, false, true]);
        let err = relax_nullability("t", &table(), &mut cols[..1]).unwrap_err();
        assert!(err.to_string().contains("`order id`"), "{err}");
    }
}
