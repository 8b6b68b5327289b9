//! Source schema contracts: one reviewable TOML file per source table,
//! `schemas/<pipeline>/<table>.toml`, written by `smelter source sync` and committed with the
//! project. Planning (`validate`, `plan`, lineage) reads a bronze table's source columns from it
//! when the bronze table does not exist yet, so planning works offline; extraction compares the
//! live source with it and applies the table's `on_schema_change` policy.
//!
//! Format (see docs/schemas.md):
//! ```toml
//! table = "orders"
//! source = "mssql:TPCH.tpch.orders"
//! key = ["o_orderkey"]
//! watermark = "o_orderdate"          # absent for full extraction
//!
//! [[columns]]
//! name = "o_totalprice"
//! source_type = "decimal(15,2)"      # as the source declares it (absent when it has none)
//! arrow_type = "Decimal128(15, 2)"   # Arrow's `DataType` display form, parsed back exactly
//! nullable = false
//! ```

use std::path::PathBuf;

use arrow::datatypes::DataType;
use serde::{Deserialize, Serialize};

use crate::config::{Pipeline, SourceTable};
use crate::error::{Error, Result};
use crate::schema::ColumnShape;

/// A table's contract, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    /// Lake table name (bronze table `bronze.<table>`).
    pub table: String,
    /// `<kind>:<database>.<object>` of the source.
    pub source: String,
    /// Key columns, as configured when the contract was written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    /// Watermark column, as configured when the contract was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
    /// Columns in source order.
    pub columns: Vec<ContractColumn>,
}

/// One column of a contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractColumn {
    /// Column name, exactly as the source spells it.
    pub name: String,
    /// Type as the source declares it (SQL Server `decimal(15,2)`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_type: Option<String>,
    /// Arrow type in Arrow's display form (`Int64`, `Decimal128(15, 2)`, `Timestamp(µs)`).
    pub arrow_type: String,
    /// Whether the column may hold NULL.
    pub nullable: bool,
}

impl Contract {
    /// A contract for `table` with the discovered `columns`.
    pub fn new(source: String, table: &SourceTable, columns: &[ColumnShape]) -> Contract {
        Contract {
            table: table.name.clone(),
            source,
            key: table.key.clone(),
            watermark: table.watermark.clone(),
            columns: ContractColumn::of(columns),
        }
    }

    /// The contract's columns with their Arrow types parsed; an unparsable type names the file
    /// and the column (exit 2).
    pub fn columns(&self, file: &str) -> Result<Vec<ColumnShape>> {
        ContractColumn::shapes(&self.columns, file)
    }

    /// The file's text: a comment header, then the TOML.
    pub fn render(&self) -> Result<String> {
        let body = toml::to_string(self)
            .map_err(|e| Error::Internal(format!("contract of `{}`: {e}", self.table)))?;
        Ok(format!(
            "# Source schema contract of `bronze.{}`, written by `smelter source sync`.\n\
             # Review changes like code: planning reads it, and extraction compares the source with it.\n\n{body}",
            self.table
        ))
    }
}

impl ContractColumn {
    /// The stored form of `columns`.
    pub fn of(columns: &[ColumnShape]) -> Vec<ContractColumn> {
        columns
            .iter()
            .map(|c| ContractColumn {
                name: c.name.clone(),
                source_type: c.source_type.clone(),
                arrow_type: c.data_type.to_string(),
                nullable: c.nullable,
            })
            .collect()
    }

    /// `columns` with their Arrow types parsed; an unparsable type names `file` and the column
    /// (exit 2).
    pub fn shapes(columns: &[ContractColumn], file: &str) -> Result<Vec<ColumnShape>> {
        columns
            .iter()
            .map(|c| {
                let data_type: DataType = c.arrow_type.parse().map_err(|e| {
                    Error::config(
                        file,
                        format!(
                            "column `{}`: `arrow_type = \"{}\"` is not an Arrow type ({e}); re-run `smelter source sync`",
                            c.name, c.arrow_type
                        ),
                    )
                })?;
                Ok(ColumnShape {
                    name: c.name.clone(),
                    data_type,
                    nullable: c.nullable,
                    source_type: c.source_type.clone(),
                })
            })
            .collect()
    }
}

/// A column's type as `source sync` shows it: the declared source type and the Arrow type
/// (`decimal(18,2) = Decimal128(18, 2)`), or the Arrow type alone, then `NOT NULL` when the
/// column is not nullable.
pub fn shown(c: &ColumnShape) -> String {
    let t = crate::schema::type_name(&c.data_type);
    let t = match &c.source_type {
        Some(d) => format!("{d} = {t}"),
        None => t,
    };
    if c.nullable {
        t
    } else {
        format!("{t} NOT NULL")
    }
}

/// Whether every value of type `have` converts exactly into the type `want`: the same stored
/// type, a lossless widening ([`crate::schema::is_widening`]), or any scalar type into text
/// (`Utf8`, the value's display form: how a contract lands a type the table format cannot
/// store, such as a time of day).
pub fn converts_losslessly(have: &DataType, want: &DataType) -> bool {
    let (have, want) = (
        crate::schema::storage_type(have),
        crate::schema::storage_type(want),
    );
    have == want
        || crate::schema::is_widening(&have, &want)
        || (want == DataType::Utf8 && !have.is_nested() && !matches!(have, DataType::Binary))
}

/// What `source sync` makes of an existing contract and the columns the source has now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The columns to write: the source's, in source order, with hand-set columns kept.
    pub columns: Vec<ColumnShape>,
    /// Key columns: the pipeline's when it sets any, else the contract's (hand-set).
    pub key: Vec<String>,
    /// Watermark: the pipeline's when it sets one, else the contract's (hand-set).
    pub watermark: Option<String>,
    /// One line per hand-set column or setting kept, and per hand-set column replaced, saying
    /// why.
    pub notes: Vec<String>,
}

/// Merges the contract `old` (with its parsed columns `old_columns`) with the columns the source
/// discovers now (`found`). A contract is reviewed code, so only what changed in the source
/// changes in it:
///
/// - a column the source added is added, one it removed is removed;
/// - a column whose contract shape equals the discovered one stays as it is;
/// - a column whose contract shape differs (edited by hand, or the source changed) is kept
///   when the source says every value converts into it ([`Source::keeps`]: for files, a
///   lossless conversion, or for CSV/JSON the inferred rows reading as the declared type), else
///   replaced by the discovered one. A hand-set NOT NULL is kept for a source whose discovery
///   cannot know nullability ([`Source::discovers_nullability`]);
/// - key and watermark come from the pipeline when it sets them, else stay as hand-set.
///
/// [`Source::keeps`]: super::source::Source::keeps
/// [`Source::discovers_nullability`]: super::source::Source::discovers_nullability
pub async fn merge(
    source: &dyn super::source::Source,
    table: &SourceTable,
    old: &Contract,
    old_columns: &[ColumnShape],
    found: Vec<ColumnShape>,
) -> Result<Merged> {
    use super::source::Verdict;
    let knows_nulls = source.discovers_nullability();
    let mut notes = Vec::new();
    let mut columns = Vec::with_capacity(found.len());
    for f in found {
        let Some(o) = old_columns.iter().find(|o| o.name == f.name) else {
            columns.push(f);
            continue;
        };
        let same_type = crate::schema::storage_type(&o.data_type)
            == crate::schema::storage_type(&f.data_type)
            && match (&o.source_type, &f.source_type) {
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                (Some(_), None) => false,
                _ => true,
            };
        // Discovery that cannot tell NOT NULL keeps the contract's nullability.
        let nullable = if knows_nulls { f.nullable } else { o.nullable };
        if !knows_nulls && !o.nullable {
            notes.push(format!(
                "kept `{}` NOT NULL (hand-set; inferring from files cannot tell)",
                o.name
            ));
        }
        if same_type {
            columns.push(ColumnShape { nullable, ..f });
            continue;
        }
        match source.keeps(table, &f, o).await? {
            Verdict::Keep(why) => {
                notes.push(format!(
                    "kept `{}`: {} (hand-set; the source has {}: {why})",
                    o.name,
                    shown(&ColumnShape {
                        nullable: true,
                        ..o.clone()
                    }),
                    shown(&f)
                ));
                columns.push(ColumnShape {
                    nullable,
                    ..o.clone()
                });
            }
            Verdict::Replace(why) => {
                notes.push(format!(
                    "replaced `{}`: {} → {} ({why})",
                    o.name,
                    shown(o),
                    shown(&f)
                ));
                columns.push(ColumnShape { nullable, ..f });
            }
        }
    }
    let key = if table.key.is_empty() && !old.key.is_empty() {
        notes.push(format!(
            "kept key {:?} (hand-set; the pipeline sets none)",
            old.key
        ));
        old.key.clone()
    } else {
        table.key.clone()
    };
    let watermark = match (&table.watermark, &old.watermark) {
        (None, Some(w)) => {
            notes.push(format!(
                "kept watermark `{w}` (hand-set; the pipeline sets none)"
            ));
            Some(w.clone())
        }
        (w, _) => w.clone(),
    };
    Ok(Merged {
        columns,
        key,
        watermark,
        notes,
    })
}

/// Path of a table's contract file.
pub fn path(pipeline: &Pipeline, table: &str) -> PathBuf {
    pipeline.schemas_dir.join(format!("{table}.toml"))
}

/// The key columns a table's contract in `schemas_dir` records (hand-set or from the pipeline
/// when `source sync` wrote it); empty when there is no contract, it has no key, or it does not
/// parse (reading it elsewhere reports that).
pub fn stored_key(schemas_dir: &std::path::Path, table: &str) -> Vec<String> {
    std::fs::read_to_string(schemas_dir.join(format!("{table}.toml")))
        .ok()
        .and_then(|text| toml::from_str::<Contract>(&text).ok())
        .map(|c| c.key)
        .unwrap_or_default()
}

/// A table's key columns: the pipeline's `key`, else its contract's ([`stored_key`]).
pub fn key(pipeline: &Pipeline, table: &SourceTable) -> Vec<String> {
    if table.key.is_empty() {
        stored_key(&pipeline.schemas_dir, &table.name)
    } else {
        table.key.clone()
    }
}

/// Reads a table's contract, if its file exists. A file that does not parse names the file and
/// what is wrong (exit 2).
pub fn read(pipeline: &Pipeline, table: &str) -> Result<Option<(Contract, Vec<ColumnShape>)>> {
    let file = path(pipeline, table);
    let shown = crate::plan::display_path(pipeline, &file);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::config(&shown, format!("cannot read contract: {e}"))),
    };
    let contract: Contract = toml::from_str(&text)
        .map_err(|e| Error::config(&shown, e.to_string().trim().to_string()))?;
    if contract.table != table {
        return Err(Error::config(
            &shown,
            format!(
                "key `table`: the contract is for `{}`, but the file is for `{table}`",
                contract.table
            ),
        ));
    }
    let columns = contract.columns(&shown)?;
    Ok(Some((contract, columns)))
}

/// One problem per column whose Arrow type's display form does not parse back to the same type
/// (so the contract could not record it exactly), naming the contract file (`shown`) and
/// `<table>.<column>`; empty when every type round-trips.
pub fn unrepresentable_problems(shown: &str, table: &str, columns: &[ColumnShape]) -> Vec<String> {
    columns
        .iter()
        .filter(|c| c.data_type.to_string().parse::<DataType>().ok().as_ref() != Some(&c.data_type))
        .map(|c| {
            format!(
                "{shown}: column `{table}.{}` has type {}, which a contract cannot record exactly; exclude the column from the source files or land it through a model that converts it",
                c.name, c.data_type
            )
        })
        .collect()
}

/// One problem per contract column the lake's table format cannot store (a Parquet `Time64`
/// column in Delta Lake), each naming the contract file (`shown`), `<table>.<column>`, the type,
/// why, and how to fix it; empty when every column is storable. Checked by `source sync` and
/// `validate`, so the problem is found before a run reaches bronze (exit 2).
pub fn unstorable_problems(
    pipeline: &Pipeline,
    table: &str,
    columns: &[ColumnShape],
) -> Vec<String> {
    let format = crate::table::for_pipeline(pipeline, &crate::storage::Lake::in_memory());
    let shown = crate::plan::display_path(pipeline, &path(pipeline, table));
    format
        .unstorable_columns(&crate::schema::arrow_schema(columns))
        .into_iter()
        .map(|c| {
            format!(
                "{shown}: column `{table}.{}` has type {}, which the {} table format cannot store: {}; set its `arrow_type` to \"Utf8\" to land the values as text, or change the source",
                c.column,
                crate::schema::type_name(&c.data_type),
                format.name(),
                c.reason,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrow_types_round_trip() {
        use arrow::datatypes::{Field, Fields, TimeUnit};
        use std::sync::Arc;
        for t in [
            DataType::Int64,
            DataType::Decimal128(15, 2),
            DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into())),
            DataType::Date32,
            DataType::Utf8,
            DataType::Binary,
            DataType::Time64(TimeUnit::Nanosecond),
            DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
            DataType::List(Arc::new(Field::new_list_field(DataType::Int64, false))),
            DataType::Struct(Fields::from(vec![
                Field::new("x", DataType::Int64, false),
                Field::new("y", DataType::Utf8, true),
            ])),
            DataType::Map(
                Arc::new(Field::new(
                    "key_value",
                    DataType::Struct(Fields::from(vec![
                        Field::new("key", DataType::Utf8, false),
                        Field::new("value", DataType::Int64, true),
                    ])),
                    false,
                )),
                false,
            ),
        ] {
            let c = ContractColumn {
                name: "c".into(),
                source_type: None,
                arrow_type: t.to_string(),
                nullable: true,
            };
            let contract = Contract {
                table: "t".into(),
                source: "s".into(),
                key: vec![],
                watermark: None,
                columns: vec![c],
            };
            let text = contract.render().unwrap();
            let back: Contract = toml::from_str(&text).unwrap();
            assert_eq!(back.columns("t.toml").unwrap()[0].data_type, t, "{text}");
        }
    }
}
