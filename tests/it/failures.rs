//! Bad input, one row per kind of failure: how to build it, the command, the exit code Airflow
//! will act on and the words the message must contain.
//!
//! Every row starts from its own copy of the demo (scale 0.01) after one good run of 2026-11-01,
//! so the rows never disturb each other or the good lake. No row may exit 1: that code is kept
//! for bugs in Smelter. To add a kind, add a row to [`cases`].

use std::path::Path;

use crate::support::{code, copy_dir, stderr, Project};

/// One reproduction.
struct Case {
    /// What the row reproduces.
    name: &'static str,
    /// Turns the copy of the good demo project into the bad one.
    setup: fn(&Project),
    /// The command; `{p}` is the pipeline file.
    args: &'static [&'static str],
    /// The exit code it must give.
    code: i32,
    /// Words its stderr must contain.
    contains: &'static [&'static str],
}

const LOGICAL_DATE: &str = "2026-11-01";
const RUN_ID: &str = "good";

const VALIDATE: &[&str] = &["validate", "{p}"];
const SILVER: &[&str] = &[
    "run",
    "{p}",
    "--layer",
    "silver",
    "--logical-date",
    LOGICAL_DATE,
    "--run-id",
    RUN_ID,
];
/// Only the model `silver.partners`, which the rows below add.
const PARTNERS: &[&str] = &[
    "run",
    "{p}",
    "--layer",
    "silver",
    "--logical-date",
    LOGICAL_DATE,
    "--run-id",
    RUN_ID,
    "--models",
    "partners",
];

/// Sets a top-level key of the demo pipeline file (before its first section).
fn set_top_level(p: &Project, line: &str) {
    let toml = std::fs::read_to_string(p.pipeline()).unwrap();
    let at = toml.find("\n[").expect("a section");
    std::fs::write(
        p.pipeline(),
        format!("{}\n{line}{}", &toml[..at], &toml[at..]),
    )
    .unwrap();
}

/// Writes a model file `sql/demo/<rel>`.
fn add_model(p: &Project, rel: &str, sql: &str) {
    let path = p.dir.path().join("sql/demo").join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, sql).unwrap();
}

/// `silver.partners` over carriers: the carrier id as a quoted, mixed-case `"CarrierID"`, and
/// `expect` as its only header line.
fn partners_over_carriers(p: &Project, expect: &str) {
    add_model(
        p,
        "silver/partners.sql",
        &format!(
            "-- expect: {expect}\nSELECT carrier_id AS \"CarrierID\", carrier_code\nFROM bronze.carriers\nWHERE _run_id = {{{{ run_id }}}}\n"
        ),
    );
}

/// `silver.partners` over fixed rows: duplicates only in the first two rows (`"CarrierID"` 1,
/// `partner_ref` 'a', `(region, zone)` ('x', 1)); every other repeat involves a NULL.
fn partners_with_nulls(p: &Project, expect: &str) {
    add_model(
        p,
        "silver/partners.sql",
        &format!(
            "-- expect: {expect}\nSELECT * FROM (VALUES\n  (1, 'a', 'x', 1),\n  (1, 'a', 'x', 1),\n  (2, NULL, 'x', NULL),\n  (3, NULL, 'x', NULL),\n  (4, NULL, NULL, 1),\n  (5, NULL, NULL, 1)\n) AS t(\"CarrierID\", partner_ref, region, zone)\n"
        ),
    );
}

fn cases() -> Vec<Case> {
    vec![
        // Issue 13 item 5: configuration that silently does nothing.
        Case {
            name: "models_dir that does not exist (validate)",
            setup: |p| set_top_level(p, "models_dir = \"sql/typo\""),
            args: VALIDATE,
            code: 2,
            contains: &["key `models_dir`", "sql/typo", "not a directory"],
        },
        Case {
            name: "models_dir that does not exist (run)",
            setup: |p| set_top_level(p, "models_dir = \"sql/typo\""),
            args: SILVER,
            code: 2,
            contains: &["key `models_dir`", "sql/typo"],
        },
        Case {
            name: "models_dir without silver/ or gold/",
            setup: |p| set_top_level(p, "models_dir = \"sql\""),
            args: VALIDATE,
            code: 2,
            contains: &["key `models_dir`", "no `silver/` or `gold/`"],
        },
        Case {
            name: "model files whose names differ only in case (validate)",
            setup: |p| {
                let silver = p.dir.path().join("sql/demo/silver");
                std::fs::copy(silver.join("carriers.sql"), silver.join("Carriers.sql")).unwrap();
            },
            args: VALIDATE,
            code: 2,
            contains: &[
                "sql/demo/silver/Carriers.sql",
                "sql/demo/silver/carriers.sql",
                "`silver.carriers`",
            ],
        },
        Case {
            name: "model files whose names differ only in case (run)",
            setup: |p| {
                let silver = p.dir.path().join("sql/demo/silver");
                std::fs::copy(silver.join("carriers.sql"), silver.join("Carriers.sql")).unwrap();
            },
            args: SILVER,
            code: 2,
            contains: &["Carriers.sql", "carriers.sql"],
        },
        // Issue 13 item 6: rule columns follow SQL identifier rules, and a missing one is named.
        Case {
            name: "unquoted rule column folds to lower case (not_null)",
            setup: |p| partners_over_carriers(p, "CarrierID not_null fail"),
            args: PARTNERS,
            code: 2,
            contains: &[
                "sql/demo/silver/partners.sql:1",
                "no column `carrierid`",
                "did you mean `\"CarrierID\"`?",
            ],
        },
        Case {
            name: "quoted rule column keeps its case (unique)",
            setup: |p| partners_over_carriers(p, "\"Carrier_Code\" unique fail"),
            args: PARTNERS,
            code: 2,
            contains: &["no column `Carrier_Code`", "did you mean `carrier_code`?"],
        },
        Case {
            name: "quoted column of a multi-column unique rule",
            setup: |p| partners_over_carriers(p, "\"CarrierID\", \"carrier_Code\" unique fail"),
            args: PARTNERS,
            code: 2,
            contains: &["no column `carrier_Code`", "`carrier_code`"],
        },
        Case {
            name: "unknown referenced column of a relationships rule",
            setup: |p| {
                partners_over_carriers(
                    p,
                    "\"CarrierID\" relationships silver.carriers.\"Carrier_ID\" fail",
                )
            },
            args: PARTNERS,
            code: 2,
            contains: &[
                "no column `Carrier_ID` in `silver.carriers`",
                "did you mean `carrier_id`?",
            ],
        },
        Case {
            name: "a relationships rule between text and numbers is refused before any write",
            setup: |p| {
                partners_over_carriers(
                    p,
                    "carrier_code relationships silver.carriers.carrier_id fail",
                )
            },
            args: PARTNERS,
            code: 2,
            contains: &[
                "sql/demo/silver/partners.sql:1",
                "`carrier_code` is Utf8 but `silver.carriers.carrier_id` is Int",
                "CAST one side",
            ],
        },
        Case {
            name: "unknown columns of several rules are all reported",
            setup: |p| {
                partners_over_carriers(p, "nope range 0 1 warn; mode_x accepted_values ('A') warn")
            },
            args: PARTNERS,
            code: 2,
            contains: &["no column `nope`", "no column `mode_x`"],
        },
        Case {
            name: "quoted column with real duplicates fails the unique rule",
            setup: |p| partners_with_nulls(p, "\"CarrierID\" unique fail"),
            args: PARTNERS,
            code: 3,
            contains: &[
                "silver.partners",
                "`\"CarrierID\" unique` failed for 2 row(s)",
            ],
        },
        // Issue 13 item 7: NULL keys are never duplicates; real duplicates still fail.
        Case {
            name: "unique counts only non-NULL duplicates",
            setup: |p| partners_with_nulls(p, "partner_ref unique fail"),
            args: PARTNERS,
            code: 3,
            contains: &["`partner_ref unique` failed for 2 row(s)"],
        },
        Case {
            name: "multi-column unique skips keys with a NULL part",
            setup: |p| partners_with_nulls(p, "region, zone unique fail"),
            args: PARTNERS,
            code: 3,
            contains: &["`region, zone unique` failed for 2 row(s)"],
        },
    ]
}

/// A copy of `base` (project and lake) in a new temporary directory.
fn copy_of(base: &Project) -> Project {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(base.dir.path(), dir.path());
    Project {
        dir,
        name: base.name.clone(),
    }
}

fn all_files(dir: &Path, out: &mut Vec<(String, u64)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            all_files(&e.path(), out);
        } else {
            out.push((e.path().display().to_string(), e.metadata().unwrap().len()));
        }
    }
}

#[test]
fn every_bad_input_gets_its_exit_code_and_names_the_culprit() {
    let base = Project::demo(0.01);
    base.ok(&[
        "run",
        "{p}",
        "--logical-date",
        LOGICAL_DATE,
        "--run-id",
        RUN_ID,
    ]);
    let mut before = Vec::new();
    all_files(&base.lake(), &mut before);

    let mut wrong = Vec::new();
    let mut internal = Vec::new();
    let cases = cases();
    for case in &cases {
        let p = copy_of(&base);
        (case.setup)(&p);
        let out = p.smelter(case.args);
        let (got, err) = (code(&out), stderr(&out));
        if got == 1 {
            internal.push(case.name);
        }
        let missing: Vec<&str> = case
            .contains
            .iter()
            .copied()
            .filter(|w| !err.contains(w))
            .collect();
        if got != case.code || !missing.is_empty() {
            wrong.push(format!(
                "{}: exit {got} (want {}), missing {missing:?}\n{err}",
                case.name, case.code
            ));
        }
    }
    assert!(!cases.is_empty());
    assert!(
        wrong.is_empty(),
        "{} of {} case(s) wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    assert!(
        internal.is_empty(),
        "bad input exited 1 (internal bug): {internal:?}"
    );
    let mut after = Vec::new();
    all_files(&base.lake(), &mut after);
    assert_eq!(before, after, "the good demo lake was changed");
}
