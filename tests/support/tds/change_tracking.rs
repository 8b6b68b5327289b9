//! SQL Server Change Tracking on the fixture table `dbo.Tracked` (`id int` primary key,
//! `name nvarchar(40) NOT NULL`, `amount decimal(10,2) NULL`).
//!
//! [`Tracked`] holds the table's rows, the log of committed changes (version, key, `I`/`U`/`D`),
//! the database's current version and the table's minimum valid version. A test changes rows and
//! runs cleanup while the server runs ([`super::TdsServer::tracked_upsert`] and friends); the
//! server then answers exactly the statements Smelter sends (see [`Tracked::rewrite`]):
//!
//! - `CHANGE_TRACKING_CURRENT_VERSION()` and `CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(@P1))`
//!   (NULL for any object but `dbo.Tracked`, as for a table without change tracking);
//! - `CHANGETABLE(CHANGES [dbo].[Tracked], @P1)`: the net change per key since that version, as
//!   SQL Server reports it (the latest `SYS_CHANGE_VERSION`; `D` when the last change deleted the
//!   row, `I` when the row did not exist at that version, else `U`). Reading from a version older
//!   than the minimum valid one is an error here (SQL Server answers with incomplete changes; a
//!   correct client checks first), so a test catches a client that does not check.
//!
//! Any other change-tracking statement fails loudly. This is test support, not a SQL engine.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, Decimal128Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::scalar::ScalarValue;

use super::types::field;

/// Name of the tracked table in schema `dbo`.
pub const TABLE: &str = "Tracked";

/// Version of the database when the fixture starts (change tracking enabled on the table then,
/// so no change is logged yet and this is also the minimum valid version).
pub const START_VERSION: i64 = 10;

/// The tracked table's rows and change log.
#[derive(Debug)]
pub struct Tracked {
    rows: BTreeMap<i32, (String, Option<i128>)>,
    log: Vec<(i64, i32, char)>,
    current: i64,
    min_valid: i64,
}

impl Default for Tracked {
    /// Rows 1..=5 (`item <id>`, amount `<id>.25`, NULL for 5).
    fn default() -> Self {
        let rows = (1..=5)
            .map(|i| {
                let amount = (i != 5).then_some(i as i128 * 100 + 25);
                (i, (format!("item {i}"), amount))
            })
            .collect();
        Tracked {
            rows,
            log: Vec::new(),
            current: START_VERSION,
            min_valid: START_VERSION,
        }
    }
}

/// Schema of `dbo.Tracked`, with the declared SQL types.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("id", "int", false),
        field("name", "nvarchar(40)", false),
        field("amount", "decimal(10,2)", true),
    ]))
}

impl Tracked {
    /// The table's current rows.
    pub fn batch(&self) -> datafusion::error::Result<RecordBatch> {
        let ids: Vec<i32> = self.rows.keys().copied().collect();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(ids)),
            Arc::new(StringArray::from_iter_values(
                self.rows.values().map(|r| r.0.as_str()),
            )),
            Arc::new(
                Decimal128Array::from(self.rows.values().map(|r| r.1).collect::<Vec<_>>())
                    .with_precision_and_scale(10, 2)?,
            ),
        ];
        Ok(RecordBatch::try_new(schema(), cols)?)
    }

    /// The database's current version.
    pub fn version(&self) -> i64 {
        self.current
    }

    /// Inserts or updates row `id` in one transaction (`amount` in hundredths); returns the
    /// transaction's version.
    pub fn upsert(&mut self, id: i32, name: &str, amount: Option<i128>) -> i64 {
        let op = if self.rows.contains_key(&id) {
            'U'
        } else {
            'I'
        };
        self.rows.insert(id, (name.to_string(), amount));
        self.commit(id, op)
    }

    /// Deletes row `id` (which must exist) in one transaction; returns its version.
    pub fn delete(&mut self, id: i32) -> i64 {
        assert!(
            self.rows.remove(&id).is_some(),
            "dbo.Tracked has no row {id}"
        );
        self.commit(id, 'D')
    }

    /// Change tracking cleanup up to the current version: the changes logged so far are
    /// removed and the minimum valid version becomes the current version. Returns it.
    pub fn cleanup(&mut self) -> i64 {
        self.min_valid = self.current;
        let min = self.min_valid;
        self.log.retain(|(v, _, _)| *v > min);
        min
    }

    fn commit(&mut self, id: i32, op: char) -> i64 {
        self.current += 1;
        self.log.push((self.current, id, op));
        self.current
    }

    /// `CHANGETABLE(CHANGES dbo.Tracked, since)`.
    fn changes(&self, since: i64) -> Result<RecordBatch, String> {
        if since < self.min_valid {
            return Err(format!(
                "fixture: CHANGETABLE(CHANGES dbo.Tracked, {since}) reads from a version older than the minimum valid version {}; check CHANGE_TRACKING_MIN_VALID_VERSION first",
                self.min_valid
            ));
        }
        // key → (first op, last op, last version, version of the first op)
        let mut net: BTreeMap<i32, (char, char, i64, i64)> = BTreeMap::new();
        for &(v, id, op) in self.log.iter().filter(|(v, _, _)| *v > since) {
            net.entry(id)
                .and_modify(|e| {
                    e.1 = op;
                    e.2 = v;
                })
                .or_insert((op, op, v, v));
        }
        let op = |(first, last, _, _): &(char, char, i64, i64)| match (first, last) {
            (_, 'D') => "D",
            ('I', _) => "I",
            _ => "U",
        };
        let schema = Arc::new(Schema::new(vec![
            field("SYS_CHANGE_VERSION", "bigint", false),
            field("SYS_CHANGE_CREATION_VERSION", "bigint", true),
            field("SYS_CHANGE_OPERATION", "nchar(1)", false),
            field("SYS_CHANGE_COLUMNS", "varbinary(4100)", true),
            field("SYS_CHANGE_CONTEXT", "varbinary(128)", true),
            field("id", "int", false),
        ]));
        let n = net.len();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(net.values().map(|e| e.2))),
            Arc::new(Int64Array::from_iter(
                net.values().map(|e| (op(e) == "I").then_some(e.3)),
            )),
            Arc::new(StringArray::from_iter_values(net.values().map(op))),
            Arc::new(BinaryArray::from(vec![None::<&[u8]>; n])),
            Arc::new(BinaryArray::from(vec![None::<&[u8]>; n])),
            Arc::new(Int32Array::from_iter_values(net.keys().copied())),
        ];
        RecordBatch::try_new(schema, cols).map_err(|e| e.to_string())
    }

    /// Answers the change-tracking parts of a statement already rewritten to DataFusion SQL
    /// (`super::rewrite`): the version functions become literals, and `CHANGETABLE(CHANGES
    /// "dbo"."Tracked", $1)` the name `changes_table` under which the caller registers the
    /// returned batch. Each takes the statement's only parameter, `$1`, so the statement is
    /// then run without parameters. `Ok(None)`: the statement has no change tracking. Anything
    /// else naming change tracking is an error.
    pub fn rewrite(
        &self,
        sql: &str,
        params: &[ScalarValue],
        changes_table: &str,
    ) -> Result<Option<(String, Option<RecordBatch>)>, String> {
        let upper = sql.to_ascii_uppercase();
        if !upper.contains("CHANGE_TRACKING") && !upper.contains("CHANGETABLE") {
            return Ok(None);
        }
        let unsupported = || format!("fixture: unsupported change tracking statement: {sql}");
        let param = || match params {
            [one] => Ok(one.clone()),
            _ => Err(format!(
                "fixture: change tracking statements take exactly one parameter, got {}: {sql}",
                params.len()
            )),
        };
        let mut out = sql.to_string();
        let mut changes = None;
        let current = "CHANGE_TRACKING_CURRENT_VERSION()";
        if let Some(i) = out.find(current) {
            out.replace_range(
                i..i + current.len(),
                &format!("CAST({} AS BIGINT)", self.current),
            );
        }
        let min_valid = "CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID($1))";
        if let Some(i) = out.find(min_valid) {
            let object = match param()? {
                ScalarValue::Utf8(Some(s)) => s.replace(['[', ']'], ""),
                other => return Err(format!("fixture: OBJECT_ID of {other:?}: {sql}")),
            };
            let value = if object == format!("dbo.{TABLE}") {
                self.min_valid.to_string()
            } else {
                "NULL".to_string()
            };
            out.replace_range(i..i + min_valid.len(), &format!("CAST({value} AS BIGINT)"));
        }
        let table = format!("CHANGETABLE(CHANGES \"dbo\".\"{TABLE}\", $1)");
        if let Some(i) = out.find(&table) {
            let since = match param()? {
                ScalarValue::Int64(Some(v)) => v,
                other => return Err(format!("fixture: CHANGETABLE version {other:?}: {sql}")),
            };
            changes = Some(self.changes(since)?);
            out.replace_range(i..i + table.len(), changes_table);
        }
        let left = out.to_ascii_uppercase();
        if left.contains("CHANGE_TRACKING") || left.contains("CHANGETABLE") || out.contains('$') {
            return Err(unsupported());
        }
        Ok(Some((out, changes)))
    }
}
