//! What a new user sees for mistakes in a model, on a schema of this test's own (a files source
//! of hospital stays): header errors at the header line that causes them, a column listed twice
//! in a header key, and a column whose name differs only by case.

use crate::support::{files_pipeline, Project};

/// A project with one landed file whose `FullName` column has upper-case letters, its schema
/// contract synced, then `models` (`layer/name.sql`, text) written.
fn project(models: &[(&str, &str)]) -> Project {
    let p = Project::custom(&files_pipeline("stays", "patient_id"), &[]);
    let dir = p.dir.path().join("incoming/stays");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("a.csv"),
        "patient_id,FullName,ward,admitted_at\n1,Ada,north,2026-11-01T08:00:00\n",
    )
    .unwrap();
    p.expect(&["source", "sync", "{p}"], 0);
    for (rel, text) in models {
        let path = p.dir.path().join("sql/t").join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    p
}

const COLUMNS: &str = "SELECT patient_id, ward, admitted_at FROM bronze.stays\n";

#[test]
fn header_errors_point_at_the_header_line_that_causes_them() {
    let p = project(&[
        // Line 2: merge without a key.
        (
            "silver/no_key.sql",
            &format!("-- description: stays\n-- materialized: merge\n{COLUMNS}"),
        ),
        // Line 3: sequence_by on a table model.
        (
            "silver/seq_on_table.sql",
            &format!("-- description: stays\n-- unique_key: patient_id\n-- sequence_by: admitted_at\n{COLUMNS}"),
        ),
        // Line 4: both scd2 strategies.
        (
            "silver/both.sql",
            &format!("-- materialized: scd2\n-- unique_key: patient_id\n-- sequence_by: admitted_at\n-- check_cols: ward\n{COLUMNS}"),
        ),
    ]);
    let err = p.expect(&["validate", "{p}"], 2);
    for want in [
        "sql/t/silver/no_key.sql:2: materialized `merge` needs a `-- unique_key:",
        "sql/t/silver/seq_on_table.sql:3: `sequence_by` needs `-- materialized: merge`",
        "sql/t/silver/both.sql:4: materialized `scd2` takes `sequence_by` or `check_cols`, not both",
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }

    // Problems found when the models are planned.
    let silver = p.dir.path().join("sql/t/silver");
    std::fs::remove_dir_all(&silver).unwrap();
    std::fs::create_dir_all(&silver).unwrap();
    // Line 3: a key column the SELECT does not have.
    std::fs::write(
        silver.join("missing.sql"),
        format!("-- materialized: merge\n-- description: stays\n-- unique_key: stay_id\n{COLUMNS}"),
    )
    .unwrap();
    // Line 4: history column names that clash with the model's.
    std::fs::write(
        silver.join("clash.sql"),
        format!("-- materialized: scd2\n-- unique_key: patient_id\n-- sequence_by: admitted_at\n-- scd_columns: ward, valid_to, is_current\n{COLUMNS}"),
    )
    .unwrap();
    let err = p.expect(&["validate", "{p}"], 2);
    for want in [
        "sql/t/silver/missing.sql:3: `unique_key` column `stay_id` is not in the model's output",
        "sql/t/silver/clash.sql:4: the model's output already has a column `ward`",
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }
}

#[test]
fn a_column_named_twice_in_a_header_key_is_refused() {
    let p = project(&[
        (
            "silver/keyed.sql",
            &format!("-- materialized: merge\n-- unique_key: patient_id, Patient_ID\n{COLUMNS}"),
        ),
        (
            "silver/sequenced.sql",
            &format!("-- materialized: merge\n-- unique_key: patient_id\n-- sequence_by: admitted_at, admitted_at\n{COLUMNS}"),
        ),
        (
            "silver/checked.sql",
            &format!("-- materialized: scd2\n-- unique_key: patient_id\n-- check_cols: ward, \"ward\"\n{COLUMNS}"),
        ),
    ]);
    let err = p.expect(&["validate", "{p}"], 2);
    for want in [
        "sql/t/silver/keyed.sql:2: `unique_key` names column `patient_id` twice",
        "sql/t/silver/sequenced.sql:3: `sequence_by` names column `admitted_at` twice",
        "sql/t/silver/checked.sql:3: `check_cols` names column `ward` twice",
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }
    // `run` refuses it the same way, before anything is written.
    let err = p.run_layer("all", "r1", 2);
    assert!(
        err.contains("`unique_key` names column `patient_id` twice"),
        "{err}"
    );
    assert!(!p.lake().join("silver").exists(), "{err}");
}

#[test]
fn a_column_that_differs_only_by_case_gets_a_quoting_hint() {
    let p = project(&[(
        "silver/names.sql",
        "-- materialized: table\nSELECT patient_id,\n       FullName AS full_name\nFROM bronze.stays\n",
    )]);
    let err = p.expect(&["validate", "{p}"], 2);
    assert!(err.contains("sql/t/silver/names.sql:3:8"), "{err}");
    assert!(
        err.contains("the column is `FullName`: names written without double quotes fold to lower case, so write \"FullName\""),
        "{err}"
    );
    assert!(!err.contains("enable_ident_normalization"), "{err}");
    let err = p.run_layer("all", "r1", 2);
    assert!(err.contains("write \"FullName\""), "{err}");

    // Quoted, it runs; a missing column with no case-insensitive match gets no such hint.
    std::fs::write(
        p.dir.path().join("sql/t/silver/names.sql"),
        "-- materialized: table\nSELECT patient_id, \"FullName\" AS full_name, wardd FROM bronze.stays\n",
    )
    .unwrap();
    let err = p.expect(&["validate", "{p}"], 2);
    assert!(err.contains("wardd"), "{err}");
    assert!(!err.contains("double quotes"), "{err}");
    std::fs::write(
        p.dir.path().join("sql/t/silver/names.sql"),
        "-- materialized: table\nSELECT patient_id, \"FullName\" AS full_name FROM bronze.stays\n",
    )
    .unwrap();
    p.run_layer("silver", "r1", 0);

    // A header key written without quotes for an upper-case column gets the same hint.
    std::fs::write(
        p.dir.path().join("sql/t/silver/names.sql"),
        "-- materialized: merge\n-- unique_key: FullName\nSELECT \"FullName\", ward FROM bronze.stays\n",
    )
    .unwrap();
    let err = p.expect(&["validate", "{p}"], 2);
    assert!(
        err.contains(
            "sql/t/silver/names.sql:2: `unique_key` column `fullname` is not in the model's output"
        ),
        "{err}"
    );
    assert!(err.contains("write \"FullName\""), "{err}");
}

/// A model whose header cannot be applied to its output (a `delete_when` naming a column the
/// output lacks) stops its layer before any model writes: the layer's other models are not
/// written either, and the run exits 2 naming the file and line.
#[test]
fn a_model_that_cannot_be_planned_stops_its_layer_before_anything_is_written() {
    let p = project(&[
        ("silver/fine.sql", &format!("-- description: stays\n{COLUMNS}")),
        (
            "silver/gone.sql",
            &format!(
                "-- materialized: merge\n-- unique_key: patient_id\n-- delete_when: discharged = 1\n{COLUMNS}"
            ),
        ),
    ]);
    p.run_layer("extract", "r1", 0);
    p.run_layer("bronze", "r1", 0);
    let out = p.run_layer("silver", "r1", 2);
    assert!(
        out.contains("sql/t/silver/gone.sql:3") && out.contains("delete_when: discharged = 1"),
        "{out}"
    );
    assert!(!p.lake().join("silver/fine").exists(), "{out}");
    assert!(!p.lake().join("silver/gone").exists(), "{out}");
}
