//! SQL model header: the leading `-- key: value` comment lines of a model file.
//!
//! The header keeps model files valid SQL for any editor or linter. Keys are lower-case words;
//! an unknown key, a bad value or a missing `unique_key` for `merge` is an error naming file:line.
//! Column names in `unique_key` and `partition_by` follow SQL identifier rules, as in the model
//! SQL: unquoted names fold to lower case, `"Quoted"` names keep their case.

use serde::Serialize;

/// How a model's result is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Materialization {
    /// Overwrite the whole table.
    Table,
    /// Append the result.
    Append,
    /// Upsert by `unique_key`.
    Merge,
    /// Slowly changing dimension type 2: keep every version of each `unique_key` with its
    /// validity interval (see [`crate::layers::scd2`]).
    Scd2,
}

impl Materialization {
    /// The name used in headers and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Materialization::Table => "table",
            Materialization::Append => "append",
            Materialization::Merge => "merge",
            Materialization::Scd2 => "scd2",
        }
    }
}

/// What an `scd2` model does with a delete row (`-- hard_deletes:`, dbt snapshots' names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HardDeletes {
    /// Delete rows are dropped: a deleted key keeps its current version.
    #[default]
    Ignore,
    /// A delete closes the key's version current at the delete's time; no row is current.
    Invalidate,
    /// Like `invalidate`, plus a version starting at the delete with `is_deleted` true, current.
    NewRecord,
}

impl HardDeletes {
    /// The valid values, as error messages list them.
    pub const CHOICES: &'static str = "ignore, invalidate, new_record";

    /// The name used in headers.
    pub fn as_str(self) -> &'static str {
        match self {
            HardDeletes::Ignore => "ignore",
            HardDeletes::Invalidate => "invalidate",
            HardDeletes::NewRecord => "new_record",
        }
    }
}

/// One `expect:` rule as written, with the line it came from.
#[derive(Debug, Clone, Serialize)]
pub struct RawRule {
    /// The rule text, e.g. `shipment_id not_null fail`.
    pub text: String,
    /// 1-based line in the model file.
    pub line: usize,
}

/// A parsed model header.
#[derive(Debug, Clone, Serialize)]
pub struct Header {
    /// Materialization (default `table`).
    pub materialized: Materialization,
    /// Key columns for `merge`.
    pub unique_key: Vec<String>,
    /// Partitioning: columns, bare or under an Iceberg transform
    /// (`-- partition_by: region, day(ship_date), bucket(16, customer_id)`).
    pub partition_by: Vec<crate::table::PartitionField>,
    /// Description, shown by `plan` and in lineage.
    pub description: Option<String>,
    /// Data-quality rules, parsed by [`crate::quality`].
    pub expect: Vec<RawRule>,
    /// What a changed output schema does for an incremental model (overrides the pipeline's
    /// `on_schema_change`).
    pub on_schema_change: Option<crate::schema::OnSchemaChange>,
    /// The model's table format, overriding the pipeline's `[format] table`
    /// (`-- table_format: iceberg`); `None`: the pipeline's.
    #[serde(serialize_with = "serialize_kind")]
    pub table_format: Option<crate::config::TableKind>,
    /// Version columns of a `merge` (`-- sequence_by: modified_at` or a tuple `a, b`, compared
    /// lexicographically, NULL lowest): a matched row is replaced only by a strictly newer
    /// version, and within one batch only the newest version per key is kept (ties: the
    /// greatest row by the other columns in output order). Empty: every match is replaced and
    /// the batch's keys must be unique. Same semantics as Lakeflow's `AUTO CDC … SEQUENCE BY`.
    pub sequence_by: Vec<String>,
    /// `scd2` with the check strategy: a new version starts when one of these columns differs
    /// from the current version (dbt snapshots' `check_cols`).
    pub check_cols: Vec<String>,
    /// `scd2` column names for the start and end of validity, the current flag and the deleted
    /// flag (default `valid_from, valid_to, is_current, is_deleted`; the header may give the first
    /// three only). The deleted flag is a column only with `hard_deletes: new_record`.
    pub scd_columns: [String; 4],
    /// The delete predicate (`-- delete_when: _op = 'D'`), SQL over the model's output columns,
    /// with its 1-based header line. `None`: `_op = 'D'` when the output has a column `_op`, no
    /// deletes otherwise (see [`crate::layers::deletes`]).
    pub delete_when: Option<(String, usize)>,
    /// What an `scd2` model does with a delete row.
    pub hard_deletes: HardDeletes,
    /// The 1-based line of each key written in the header (`materialized`, `unique_key`, ...),
    /// for messages about a key's value; see [`Header::line`].
    #[serde(skip)]
    pub lines: std::collections::BTreeMap<String, usize>,
}

impl Header {
    /// The line of header key `key` in the model file; for a key not written (its default
    /// applies), the line of `materialized`, and 1 when neither is written.
    pub fn line(&self, key: &str) -> usize {
        self.lines
            .get(key)
            .or_else(|| self.lines.get("materialized"))
            .copied()
            .unwrap_or(1)
    }
}

const KEYS: &[&str] = &[
    "materialized",
    "unique_key",
    "partition_by",
    "description",
    "expect",
    "on_schema_change",
    "sequence_by",
    "check_cols",
    "scd_columns",
    "delete_when",
    "hard_deletes",
    "table_format",
];

/// Parses the header of `sql`; problems are pushed as `file:line: message`.
pub fn parse(file: &str, sql: &str, problems: &mut Vec<String>) -> Header {
    let mut header = Header {
        materialized: Materialization::Table,
        unique_key: Vec::new(),
        partition_by: Vec::new(),
        description: None,
        expect: Vec::new(),
        on_schema_change: None,
        table_format: None,
        sequence_by: Vec::new(),
        check_cols: Vec::new(),
        scd_columns: [
            "valid_from".into(),
            "valid_to".into(),
            "is_current".into(),
            "is_deleted".into(),
        ],
        delete_when: None,
        hard_deletes: HardDeletes::Ignore,
        lines: std::collections::BTreeMap::new(),
    };
    let mut hard_deletes_line = None;
    for (idx, line) in sql.lines().enumerate() {
        let lineno = idx + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let Some(comment) = trimmed.strip_prefix("--") else {
            break;
        };
        let Some((key, value)) = comment.split_once(':') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        let value = value.trim();
        if KEYS.contains(&key) {
            match header.lines.get(key) {
                // `expect` is the one key that repeats: one rule per line.
                Some(first) if key != "expect" => problems.push(format!(
                    "{file}:{lineno}: `{key}` is given twice (first at line {first}); keep one"
                )),
                _ => {
                    header.lines.entry(key.to_string()).or_insert(lineno);
                }
            }
        }
        match key {
            "materialized" => {
                header.materialized = match value {
                    "table" => Materialization::Table,
                    "append" => Materialization::Append,
                    "merge" => Materialization::Merge,
                    "scd2" => Materialization::Scd2,
                    other => {
                        problems.push(format!(
                            "{file}:{lineno}: unknown materialization `{other}`; valid choices: table, append, merge, scd2"
                        ));
                        Materialization::Table
                    }
                }
            }
            "partition_by" => {
                let fields = match super::ident::calls(value) {
                    Some(calls) => calls
                        .into_iter()
                        .filter_map(|c| match crate::table::PartitionField::from_call(c) {
                            Ok(f) => Some(f),
                            Err(e) => {
                                problems.push(format!("{file}:{lineno}: {e}"));
                                None
                            }
                        })
                        .collect(),
                    None => {
                        problems.push(format!(
                            "{file}:{lineno}: cannot read `{key}: {value}`; write columns separated by commas, each bare or in a transform: `region_id, day(ship_date), truncate(1000, customer_id)` (unquoted names fold to lower case, \"Quoted\" names keep their case)"
                        ));
                        Vec::new()
                    }
                };
                let mut seen = std::collections::BTreeSet::new();
                for f in &fields {
                    if !seen.insert(f.to_string()) {
                        problems.push(format!(
                            "{file}:{lineno}: `partition_by` names {f} twice; list each once"
                        ));
                    }
                }
                header.partition_by = fields;
            }
            "unique_key" | "sequence_by" | "check_cols" | "scd_columns" => {
                let columns = match super::ident::list(value) {
                    Some(columns) => columns,
                    None => {
                        problems.push(format!(
                            "{file}:{lineno}: cannot read `{key}: {value}`; write column names separated by commas (unquoted names fold to lower case, \"Quoted\" names keep their case)"
                        ));
                        Vec::new()
                    }
                };
                // A column named twice is a typo (dbt and SQLMesh would key on it twice).
                let mut seen = std::collections::BTreeSet::new();
                for c in &columns {
                    if !seen.insert(c) {
                        problems.push(format!(
                            "{file}:{lineno}: `{key}` names column `{c}` twice; list each column once"
                        ));
                    }
                }
                match key {
                    "unique_key" => header.unique_key = columns,
                    "sequence_by" => header.sequence_by = columns,
                    "check_cols" => header.check_cols = columns,
                    "scd_columns" if columns.len() == 3 || columns.len() == 4 => {
                        for (slot, name) in header.scd_columns.iter_mut().zip(columns) {
                            *slot = name;
                        }
                    }
                    // `scd_columns` with another count of names.
                    _ => problems.push(format!(
                        "{file}:{lineno}: `scd_columns` takes three or four names: valid from, valid to, is current[, is deleted]"
                    )),
                }
            }
            "description" => header.description = Some(value.to_string()),
            "delete_when" if value.is_empty() => problems.push(format!(
                "{file}:{lineno}: `delete_when` needs a condition over the model's columns, e.g. `-- delete_when: _op = 'D'`"
            )),
            "delete_when" => header.delete_when = Some((value.to_string(), lineno)),
            "hard_deletes" => {
                hard_deletes_line = Some(lineno);
                header.hard_deletes = match value {
                    "ignore" => HardDeletes::Ignore,
                    "invalidate" => HardDeletes::Invalidate,
                    "new_record" => HardDeletes::NewRecord,
                    other => {
                        problems.push(format!(
                            "{file}:{lineno}: unknown hard_deletes `{other}`; valid choices: {}",
                            HardDeletes::CHOICES
                        ));
                        HardDeletes::Ignore
                    }
                }
            }
            "table_format" => match crate::config::TableKind::parse(value) {
                Some(kind) => header.table_format = Some(kind),
                None => problems.push(format!(
                    "{file}:{lineno}: unknown table_format `{value}`; valid choices: {}",
                    crate::config::TableKind::CHOICES
                )),
            },
            "on_schema_change" => match crate::schema::OnSchemaChange::parse(value) {
                Some(p) => header.on_schema_change = Some(p),
                None => problems.push(format!(
                    "{file}:{lineno}: unknown on_schema_change `{value}`; valid choices: {}",
                    crate::schema::OnSchemaChange::CHOICES
                )),
            },
            "expect" => header.expect.extend(
                value
                    .split(';')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(|r| RawRule {
                        text: r.to_string(),
                        line: lineno,
                    }),
            ),
            other => problems.push(format!(
                "{file}:{lineno}: unknown header key `{other}`; valid keys: {}{}",
                KEYS.join(", "),
                super::suggest(other, KEYS.iter().copied())
            )),
        }
    }
    let m = header.materialized;
    let at = |key: &str| format!("{file}:{}", header.line(key));
    if matches!(m, Materialization::Merge | Materialization::Scd2) && header.unique_key.is_empty() {
        problems.push(format!(
            "{}: materialized `{}` needs a `-- unique_key: <column>[, ...]` header line",
            at("materialized"),
            m.as_str()
        ));
    }
    if !header.sequence_by.is_empty()
        && !matches!(m, Materialization::Merge | Materialization::Scd2)
    {
        problems.push(format!(
            "{}: `sequence_by` needs `-- materialized: merge` or `scd2` (it orders the versions of a key)",
            at("sequence_by")
        ));
    }
    // A key's versions are ordered by `sequence_by`: a key column there orders nothing (one
    // version per key value), and the scd2 NULL checks would count that column twice.
    if let Some(c) = header
        .sequence_by
        .iter()
        .find(|c| header.unique_key.contains(c))
    {
        problems.push(format!(
            "{}: `sequence_by` column `{c}` is also in `unique_key`; `sequence_by` orders the versions of one key, so name another column (e.g. a modification time)",
            at("sequence_by")
        ));
    }
    if let (Some((_, line)), false) = (
        &header.delete_when,
        matches!(m, Materialization::Merge | Materialization::Scd2),
    ) {
        problems.push(format!(
            "{file}:{line}: `delete_when` needs `-- materialized: merge` or `scd2` (it removes or closes a key's row)"
        ));
    }
    if let (Some(line), false) = (hard_deletes_line, m == Materialization::Scd2) {
        problems.push(format!(
            "{file}:{line}: `hard_deletes` needs `-- materialized: scd2`"
        ));
    }
    if m == Materialization::Scd2 {
        match (header.sequence_by.len(), header.check_cols.is_empty()) {
            (1, true) | (0, false) => {}
            (0, true) => problems.push(format!(
                "{}: materialized `scd2` needs `-- sequence_by: <column>` (timestamp strategy) or `-- check_cols: <column>[, ...]` (check strategy)",
                at("materialized")
            )),
            (_, true) => problems.push(format!(
                "{}: materialized `scd2` takes one `sequence_by` column: it becomes the start of each version's validity",
                at("sequence_by")
            )),
            (_, false) => problems.push(format!(
                "{}: materialized `scd2` takes `sequence_by` or `check_cols`, not both",
                at("check_cols")
            )),
        }
    } else if !header.check_cols.is_empty() {
        problems.push(format!(
            "{}: `check_cols` needs `-- materialized: scd2`",
            at("check_cols")
        ));
    }
    header
}

fn serialize_kind<S: serde::Serializer>(
    kind: &Option<crate::config::TableKind>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match kind {
        Some(k) => s.serialize_some(k.name()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_and_reports_unknown_ones_with_line() {
        let sql = "-- materialized: merge\n-- unique_key: a, B, \"CarrierID\"\n-- materialised: x\nSELECT 1";
        let mut problems = Vec::new();
        let h = parse("m.sql", sql, &mut problems);
        assert_eq!(h.materialized, Materialization::Merge);
        assert_eq!(h.unique_key, vec!["a", "b", "CarrierID"]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("m.sql:3: unknown header key `materialised`"));
        assert!(problems[0].contains("did you mean `materialized`"));
    }

    #[test]
    fn merge_without_key_is_an_error() {
        let mut problems = Vec::new();
        parse("m.sql", "-- materialized: merge\nSELECT 1", &mut problems);
        assert!(problems[0].contains("unique_key"), "{problems:?}");
    }

    #[test]
    fn repeated_columns_and_cross_key_errors_name_their_line() {
        let mut problems = Vec::new();
        let h = parse(
            "m.sql",
            "-- description: d\n-- materialized: scd2\n-- unique_key: a, \"a\"\n-- sequence_by: t\n-- check_cols: x, X\nSELECT 1",
            &mut problems,
        );
        assert_eq!(h.line("unique_key"), 3);
        assert_eq!(h.line("scd_columns"), 2, "unwritten: the materialized line");
        assert_eq!(
            problems,
            vec![
                "m.sql:3: `unique_key` names column `a` twice; list each column once",
                "m.sql:5: `check_cols` names column `x` twice; list each column once",
                "m.sql:5: materialized `scd2` takes `sequence_by` or `check_cols`, not both",
            ]
        );
    }

    #[test]
    fn a_sequence_by_column_of_the_key_is_refused() {
        for m in ["merge", "scd2"] {
            let mut problems = Vec::new();
            parse(
                "m.sql",
                &format!(
                    "-- materialized: {m}\n-- unique_key: id, b\n-- sequence_by: ID\nSELECT 1"
                ),
                &mut problems,
            );
            assert_eq!(
                problems,
                ["m.sql:3: `sequence_by` column `id` is also in `unique_key`; `sequence_by` orders the versions of one key, so name another column (e.g. a modification time)"],
                "{m}"
            );
        }
    }

    #[test]
    fn a_key_given_twice_is_refused() {
        let mut problems = Vec::new();
        parse(
            "m.sql",
            "-- materialized: merge\n-- unique_key: id\n-- expect: id not_null\n-- expect: name not_null\n-- unique_key: name\nSELECT 1",
            &mut problems,
        );
        assert_eq!(
            problems,
            ["m.sql:5: `unique_key` is given twice (first at line 2); keep one"]
        );
    }

    #[test]
    fn sequence_by_is_a_column_list_for_merges_only() {
        let mut problems = Vec::new();
        let h = parse(
            "m.sql",
            "-- materialized: merge\n-- unique_key: id\n-- sequence_by: Modified_At, \"Seq\"\nSELECT 1",
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(h.sequence_by, vec!["modified_at", "Seq"]);
        parse("t.sql", "-- sequence_by: ts\nSELECT 1", &mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("t.sql:1: `sequence_by` needs `-- materialized: merge`"));
    }

    #[test]
    fn delete_keys_are_checked_with_their_line() {
        let mut problems = Vec::new();
        let h = parse(
            "h.sql",
            "-- materialized: scd2\n-- unique_key: id\n-- sequence_by: ts\n-- hard_deletes: new_record\n-- delete_when: gone = 1\n-- scd_columns: a, b, c, d\nSELECT 1",
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(h.hard_deletes, HardDeletes::NewRecord);
        assert_eq!(h.delete_when, Some(("gone = 1".to_string(), 5)));
        assert_eq!(h.scd_columns, ["a", "b", "c", "d"]);
        parse(
            "s.sql",
            "-- materialized: scd2\n-- unique_key: id\n-- sequence_by: ts\n-- hard_deletes: soft\nSELECT 1",
            &mut problems,
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("s.sql:4: unknown hard_deletes `soft`; valid choices: ignore, invalidate, new_record"),
            "{problems:?}"
        );
        problems.clear();
        parse(
            "t.sql",
            "-- materialized: table\n-- delete_when: _op = 'D'\nSELECT 1",
            &mut problems,
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("t.sql:2: `delete_when` needs"),
            "{problems:?}"
        );
    }
}
