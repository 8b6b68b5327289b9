//! Expectation rules that must pass: NULL keys under `unique` (SQL UNIQUE semantics) and quoted,
//! mixed-case column names in every rule kind and in the merge header. The failing side of both
//! is in `failures.rs`.

use crate::support::{code, stderr, Project, ONE_TABLE};

fn silver(p: &Project, run_id: &str) -> std::process::Output {
    p.smelter(&[
        "run",
        "{p}",
        "--layer",
        "silver",
        "--logical-date",
        "2026-11-01",
        "--run-id",
        run_id,
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn null_keys_never_count_as_duplicates() {
    // Every repeated key has a NULL part; the non-NULL keys are distinct.
    let p = Project::custom(
        ONE_TABLE,
        &[(
            "silver/partners.sql",
            "-- expect: partner_ref unique fail; region, zone unique fail\n\
             -- expect: \"CarrierID\" unique fail; partner_ref not_null warn\n\
             SELECT * FROM (VALUES\n  (1, 'a', 'x', 1),\n  (2, NULL, 'x', NULL),\n  (3, NULL, 'x', NULL),\n  \
             (4, NULL, NULL, 1),\n  (5, NULL, NULL, 1),\n  (6, 'b', 'y', 1)\n\
             ) AS t(\"CarrierID\", partner_ref, region, zone)\n",
        )],
    );
    let out = silver(&p, "n1");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let rows = p
        .scalar(
            &[("partners", "silver/partners")],
            "SELECT COUNT(*) FROM partners WHERE partner_ref IS NULL",
        )
        .await;
    assert_eq!(rows, 4, "the NULL-keyed rows were written");
}

#[tokio::test(flavor = "multi_thread")]
async fn quoted_columns_keep_their_case_in_every_rule_kind() {
    let p = Project::custom(
        ONE_TABLE,
        &[
            (
                "silver/refs.sql",
                "SELECT * FROM (VALUES (1), (2), (3)) AS t(\"RefID\")\n",
            ),
            (
                "silver/partners.sql",
                "-- materialized: merge\n\
                 -- unique_key: \"CarrierID\"\n\
                 -- partition_by: \"Region\"\n\
                 -- expect: \"CarrierID\" not_null fail; \"CarrierID\" unique fail\n\
                 -- expect: \"CarrierID\", \"Region\" unique fail; \"Weight\" range 0 10 fail\n\
                 -- expect: \"Region\" accepted_values ('EU', 'US') fail; \"Weight\" >= 0 fail\n\
                 -- expect: \"CarrierID\" relationships silver.refs.\"RefID\" fail\n\
                 -- expect: Plain_Col not_null fail; PLAIN_COL unique fail\n\
                 SELECT * FROM (VALUES (1, 'EU', 1.5, 'p'), (2, 'US', 2.5, 'q'), (3, 'EU', NULL, 'r'))\n\
                 AS t(\"CarrierID\", \"Region\", \"Weight\", plain_col)\n",
            ),
        ],
    );
    // The second run merges into the table the first one created.
    for run_id in ["q1", "q2"] {
        let out = silver(&p, run_id);
        assert_eq!(code(&out), 0, "{run_id}: {}", stderr(&out));
    }
    let n = p
        .scalar(
            &[("partners", "silver/partners")],
            "SELECT COUNT(DISTINCT \"CarrierID\") FROM partners WHERE \"Region\" IN ('EU', 'US')",
        )
        .await;
    assert_eq!(n, 3);
}

#[test]
fn an_unknown_rule_column_is_named_without_a_useless_suggestion() {
    let p = Project::custom(
        ONE_TABLE,
        &[(
            "silver/partners.sql",
            "-- description: partners\n-- expect: nothing_like_it not_null fail\nSELECT 1 AS \"CarrierID\"\n",
        )],
    );
    let out = silver(&p, "u1");
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        err.contains("sql/t/silver/partners.sql:2: expectation `nothing_like_it not_null`: no column `nothing_like_it` in the output of silver.partners"),
        "{err}"
    );
    assert!(!err.contains("did you mean"), "{err}");
    // `validate` finds it too, without data.
    let out = p.smelter(&["validate", "{p}"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        err.contains(
            "partners.sql:2: expectation `nothing_like_it not_null`: no column `nothing_like_it`"
        ),
        "{err}"
    );
}
