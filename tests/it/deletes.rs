//! Deletes from the source: `detect_deletes` on a full-snapshot files source, SQL Server Change
//! Tracking through the TDS fixture server (incremental changes with deletes, the watermark
//! committed only after bronze, the full re-sync when cleanup passed the synced version), and
//! the configuration errors.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;

use crate::mssql::{project, server, ENV};
use crate::support::{expect_code, Project};
use crate::tds::FixtureOptions;

/// Every row of a query as `|`-joined text (NULL as `∅`), in the query's order.
fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let cols: Vec<_> = b
            .columns()
            .iter()
            .map(|c| arrow::compute::cast(c, &DataType::Utf8).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            let row: Vec<String> = cols
                .iter()
                .map(|c| {
                    let s = c.as_string::<i32>();
                    if s.is_null(r) {
                        "∅".to_string()
                    } else {
                        s.value(r).to_string()
                    }
                })
                .collect();
            out.push(row.join("|"));
        }
    }
    out
}

const FILES: &str = r#"
name = "t"
[source]
type = "files"
root = "incoming"
[[source.tables]]
name = "accounts"
path = "accounts/*.csv"
key = ["account_id"]
detect_deletes = true
[storage]
root = "lake"
"#;

fn snapshot(p: &Project, file: &str, lines: &[&str]) {
    snapshot_with(p, file, "account_id,owner,balance", lines)
}

/// Writes the snapshot file `file` with the CSV `header` and `lines`.
fn snapshot_with(p: &Project, file: &str, header: &str, lines: &[&str]) {
    let path = p.dir.path().join("incoming/accounts").join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut text = format!("{header}\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn land(p: &Project, run_id: &str) {
    p.run_layer("extract", run_id, 0);
    p.run_layer("bronze", run_id, 0);
}

/// The bronze rows of one run: `op|account_id|owner|balance`, by key.
async fn bronze_run(p: &Project, run_id: &str) -> Vec<String> {
    rows(
        &p.query(
            &[("b", "bronze/accounts")],
            &format!(
                "SELECT _op, account_id, owner, balance FROM b WHERE _run_id = '{run_id}' ORDER BY account_id"
            ),
        )
        .await,
    )
}

#[tokio::test]
async fn detect_deletes_turns_keys_missing_from_a_full_snapshot_into_delete_rows() {
    let p = Project::custom(FILES, &[]);
    snapshot(
        &p,
        "d1.csv",
        &[
            "1,ann,10.5",
            "2,bob,20.5",
            "3,cy,30.5",
            "4,dee,40.5",
            "5,eve,50.5",
        ],
    );
    land(&p, "r1");
    assert_eq!(
        bronze_run(&p, "r1").await,
        [
            "U|1|ann|10.5",
            "U|2|bob|20.5",
            "U|3|cy|30.5",
            "U|4|dee|40.5",
            "U|5|eve|50.5"
        ]
    );

    // Keys 3 and 5 removed, 2 changed: the deletes carry the last values of their keys.
    snapshot(&p, "d2.csv", &["1,ann,10.5", "2,bob,99.5", "4,dee,40.5"]);
    land(&p, "r2");
    let r2 = [
        "U|1|ann|10.5",
        "U|2|bob|99.5",
        "D|3|cy|30.5",
        "U|4|dee|40.5",
        "D|5|eve|50.5",
    ];
    assert_eq!(bronze_run(&p, "r2").await, r2);

    // A retry of run 2 (extract and bronze again) appends nothing.
    land(&p, "r2");
    assert_eq!(bronze_run(&p, "r2").await, r2);
    let total = p
        .scalar(&[("b", "bronze/accounts")], "SELECT COUNT(*) FROM b")
        .await;
    assert_eq!(total, 10);

    // 3 re-appears (an upsert again), 4 goes, 5 stays deleted (not deleted twice).
    snapshot(&p, "d3.csv", &["1,ann,10.5", "2,bob,99.5", "3,cy,31.5"]);
    land(&p, "r3");
    assert_eq!(
        bronze_run(&p, "r3").await,
        [
            "U|1|ann|10.5",
            "U|2|bob|99.5",
            "U|3|cy|31.5",
            "D|4|dee|40.5"
        ]
    );

    // An empty snapshot deletes every key still present, with its newest values.
    snapshot(&p, "d4.csv", &[]);
    land(&p, "r4");
    assert_eq!(
        bronze_run(&p, "r4").await,
        ["D|1|ann|10.5", "D|2|bob|99.5", "D|3|cy|31.5"]
    );

    // `_op` is a NOT NULL column of the bronze table.
    let nulls = p
        .scalar(
            &[("b", "bronze/accounts")],
            "SELECT COUNT(*) FROM b WHERE _op IS NULL OR _op NOT IN ('U', 'D')",
        )
        .await;
    assert_eq!(nulls, 0);
}

/// A versioned merge over a table whose deletes bronze detects from snapshots, ordered by
/// `modified_at, _ingested_at`: a key that a partial snapshot deletes and a later snapshot
/// brings back unchanged (the same `modified_at` as its delete row) is present again:
/// incrementally, after a re-run of the older run id, and after `--full-refresh`. The same model
/// ordered by `modified_at` alone is refused before anything is written (exit 2, at its
/// `sequence_by` line), since its deletes would win the tie.
#[tokio::test]
async fn a_key_back_unchanged_after_a_partial_snapshot_is_present_again() {
    let merge = |sequence_by: &str| {
        format!(
            "-- materialized: merge\n-- unique_key: account_id\n-- sequence_by: {sequence_by}\nSELECT account_id, owner, modified_at, _ingested_at, _op\nFROM {{{{ unprocessed('bronze.accounts') }}}} AS a\n"
        )
    };
    let p = Project::custom(
        FILES,
        &[
            ("silver/current.sql", &merge("modified_at, _ingested_at")),
            ("silver/tied.sql", &merge("modified_at")),
            // The same deletes under another name.
            (
                "silver/renamed.sql",
                "-- materialized: merge\n-- unique_key: account_id\n-- sequence_by: modified_at\n-- delete_when: op = 'D'\nSELECT account_id, owner, modified_at, _op AS op\nFROM {{ unprocessed('bronze.accounts') }} AS a\n",
            ),
            // The check strategy over each key's newest bronze row (docs/incremental.md).
            (
                "silver/history.sql",
                "-- materialized: scd2\n-- unique_key: account_id\n-- check_cols: owner\n-- hard_deletes: invalidate\nSELECT account_id, owner, _op\nFROM {{ unprocessed('bronze.accounts') }} AS a\nQUALIFY ROW_NUMBER() OVER (PARTITION BY account_id ORDER BY _ingested_at DESC) = 1\n",
            ),
        ],
    );
    let header = "account_id,owner,modified_at";
    let silver = |run_id: &str, extra: &[&str], want: i32| {
        let mut args = vec![
            "run",
            "{p}",
            "--layer",
            "silver",
            "--models",
            "current,history",
            "--run-id",
            run_id,
        ];
        args.extend_from_slice(extra);
        p.expect(&args, want)
    };
    let current = || async {
        rows(
            &p.query(
                &[("s", "silver/current")],
                "SELECT account_id, owner FROM s ORDER BY account_id",
            )
            .await,
        )
    };
    snapshot_with(
        &p,
        "d1.csv",
        header,
        &["1,ann,2026-11-01 08:00:00", "2,bob,2026-11-01 09:00:00"],
    );
    land(&p, "r1");
    silver("r1", &[], 0);
    assert_eq!(current().await, ["1|ann", "2|bob"]);

    // A partial snapshot: bronze deletes 2 with its last version.
    snapshot_with(&p, "d2.csv", header, &["1,ann,2026-11-01 08:00:00"]);
    land(&p, "r2");
    assert_eq!(
        p.scalar(
            &[("b", "bronze/accounts")],
            "SELECT COUNT(*) FROM b WHERE _run_id = 'r2' AND _op = 'D' AND account_id = 2"
        )
        .await,
        1
    );
    silver("r2", &[], 0);
    assert_eq!(current().await, ["1|ann"]);
    // The run log counts the deleted row.
    assert_eq!(
        p.scalar(
            &[("r", "_smelter/runs")],
            "SELECT SUM(rows_deleted) FROM r WHERE run_id = 'r2' AND target = 'silver.current' AND status = 'success'"
        )
        .await,
        1
    );

    // 2 comes back unchanged: same modified_at as its delete row, a later ingestion.
    snapshot_with(
        &p,
        "d3.csv",
        header,
        &["1,ann,2026-11-01 08:00:00", "2,bob,2026-11-01 09:00:00"],
    );
    land(&p, "r3");
    silver("r3", &[], 0);
    assert_eq!(current().await, ["1|ann", "2|bob"]);

    // The history: 2's first version ended by the delete, a second one current.
    let history = rows(
        &p.query(
            &[("h", "silver/history")],
            "SELECT account_id, owner, valid_to IS NULL, is_current FROM h ORDER BY account_id, valid_from",
        )
        .await,
    );
    assert_eq!(
        history,
        ["1|ann|true|true", "2|bob|false|false", "2|bob|true|true"]
    );

    // Re-running the older run id (its window holds the delete) changes nothing, and reports
    // the counts of the commit that holds it, the deleted row included.
    silver("r2", &[], 0);
    assert_eq!(current().await, ["1|ann", "2|bob"]);
    assert_eq!(
        p.scalar(
            &[("r", "_smelter/runs")],
            "SELECT SUM(rows_deleted) FROM r WHERE run_id = 'r2' AND target = 'silver.current' AND status = 'already_committed'"
        )
        .await,
        1
    );

    // A full refresh (all of bronze in one batch) gives the same table, and keeps the
    // check-strategy history, which bronze cannot rebuild.
    silver("r4", &["--full-refresh"], 0);
    assert_eq!(current().await, ["1|ann", "2|bob"]);
    let after = rows(
        &p.query(
            &[("h", "silver/history")],
            "SELECT account_id, owner, valid_to IS NULL, is_current FROM h ORDER BY account_id, valid_from",
        )
        .await,
    );
    assert_eq!(after, history);

    // A full refresh of every layer with no new file: extract and bronze have nothing to do,
    // silver is still rebuilt from all of bronze.
    let out = p.expect(
        &[
            "run",
            "{p}",
            "--models",
            "current",
            "--run-id",
            "r6",
            "--full-refresh",
        ],
        0,
    );
    assert!(out.contains("silver.current"), "{out}");
    assert_eq!(
        p.scalar(
            &[("r", "_smelter/runs")],
            "SELECT COUNT(*) FROM r WHERE run_id = 'r6' AND target = 'silver.current' AND status = 'success'"
        )
        .await,
        1
    );

    // Ordered by modified_at alone, the delete would win the tie: refused, nothing written.
    let out = p.expect(
        &[
            "run", "{p}", "--layer", "silver", "--models", "tied", "--run-id", "r5",
        ],
        2,
    );
    assert!(
        out.contains("silver/tied.sql:3")
            && out.contains("`bronze.accounts` detects deletes")
            && out.contains("-- sequence_by: modified_at, _ingested_at"),
        "{out}"
    );
    assert!(!p.lake().join("silver/tied").exists());
    let out = p.expect(
        &[
            "run", "{p}", "--layer", "silver", "--models", "renamed", "--run-id", "r5",
        ],
        2,
    );
    assert!(out.contains("silver/renamed.sql:3"), "{out}");
}

/// A snapshot whose rows have no key (a header without the key column, a wrong delimiter)
/// cannot tell which keys are gone: bronze stops with exit 3 naming the table, and appends
/// nothing, instead of deleting every key.
#[tokio::test]
async fn a_snapshot_without_keys_is_refused_instead_of_deleting_everything() {
    let p = Project::custom(FILES, &[]);
    snapshot(&p, "d1.csv", &["1,ann,10.5", "2,bob,20.5"]);
    land(&p, "r1");
    p.expect(&["source", "sync", "{p}"], 0);
    snapshot_with(
        &p,
        "d2.csv",
        "account_id;owner;balance",
        &["1;ann;10.5", "2;bob;20.5"],
    );
    p.run_layer("extract", "r2", 0);
    let out = p.run_layer("bronze", "r2", 3);
    assert!(
        out.contains("bronze.accounts") && out.contains("NULL key (account_id)"),
        "{out}"
    );
    assert_eq!(
        p.scalar(&[("b", "bronze/accounts")], "SELECT COUNT(*) FROM b")
            .await,
        2
    );
}

#[test]
fn delete_tracking_configuration_errors_exit_2_naming_the_key() {
    let sample = |table: &str| {
        Project::custom(
            &format!(
                "name = \"t\"\n[source]\ntype = \"sample\"\nscale_factor = 0.002\n[[source.tables]]\n{table}\n[storage]\nroot = \"lake\"\n"
            ),
            &[],
        )
    };
    for (table, wants) in [
        (
            "name = \"customers\"\nkey = [\"customer_id\"]\nwatermark = \"modified_at\"\ndetect_deletes = true",
            &["source.tables[0].detect_deletes", "needs a full extract", "watermark = \"modified_at\""][..],
        ),
        (
            "name = \"carriers\"\ndetect_deletes = true",
            &["source.tables[0].detect_deletes", "key columns"][..],
        ),
        (
            "name = \"carriers\"\nkey = [\"carrier_id\"]\nmode = \"change_tracking\"",
            &["source.tables[0].mode", "only applies to `type = \"mssql\"`"][..],
        ),
        (
            "name = \"carriers\"\nkey = [\"carrier_id\"]\nmode = \"changes\"",
            &["source.tables[0].mode", "valid choices", "change_tracking"][..],
        ),
    ] {
        let p = sample(table);
        let out = p.smelter(&["validate", "{p}"]);
        let text = expect_code(&out, &["validate", table], 2);
        for want in wants {
            assert!(text.contains(want), "{table}: missing `{want}` in:\n{text}");
        }
    }
}

#[test]
fn change_tracking_configuration_errors_exit_2() {
    let s = server(FixtureOptions::default());
    for (table, wants) in [
        (
            "name = \"tracked\"\nobject = \"dbo.Tracked\"\nmode = \"change_tracking\"",
            &["source.tables[0].key", "primary key"][..],
        ),
        (
            "name = \"tracked\"\nobject = \"dbo.Tracked\"\nkey = [\"id\"]\nmode = \"change_tracking\"\nwatermark = \"id\"",
            &["source.tables[0].watermark", "change_tracking"][..],
        ),
    ] {
        let p = project(&s, &[table], "");
        let out = p.smelter_env(&["validate", "{p}"], ENV);
        let text = expect_code(&out, &["validate", table], 2);
        for want in wants {
            assert!(text.contains(want), "{table}: missing `{want}` in:\n{text}");
        }
    }
    // A table without change tracking: exit 2 naming the statement that enables it.
    let p = project(
        &s,
        &["name = \"big\"\nobject = \"dbo.Big\"\nkey = [\"id\"]\nmode = \"change_tracking\""],
        "",
    );
    let out = p.smelter_env(
        &[
            "run",
            "{p}",
            "--layer",
            "extract",
            "--logical-date",
            "2026-11-02",
            "--run-id",
            "r1",
        ],
        ENV,
    );
    let text = expect_code(&out, &["extract"], 2);
    assert!(text.contains("ENABLE CHANGE_TRACKING"), "{text}");
}

const CT_TABLE: &str =
    "name = \"tracked\"\nobject = \"dbo.Tracked\"\nkey = [\"id\"]\nmode = \"change_tracking\"";

/// A merge model over the change-tracked table; `_op` is renamed so that only the rows arrive
/// (whatever a merge does with an `_op` column).
/// The rows of `silver.current` (`id|name|_change_version`, by id).
async fn current_rows(p: &Project) -> Vec<String> {
    rows(
        &p.query(
            &[("c", "silver/current")],
            "SELECT id, name, _change_version FROM c ORDER BY id",
        )
        .await,
    )
}

const CURRENT: &str = "-- materialized: merge\n-- unique_key: id\n-- sequence_by: _change_version\nSELECT id, name, _change_version, _op\nFROM {{ unprocessed('bronze.tracked') }} AS t\n";
const SILVER: &str = "-- materialized: merge\n-- unique_key: id\n-- sequence_by: _change_version\nSELECT id, name, amount, _op AS op, _change_version\nFROM {{ unprocessed('bronze.tracked') }} AS t\n";

fn ct_layer(p: &Project, layer: &str, run_id: &str, want: i32) -> String {
    let args = [
        "run",
        "{p}",
        "--layer",
        layer,
        "--logical-date",
        "2026-11-02",
        "--run-id",
        run_id,
    ];
    expect_code(&p.smelter_env(&args, ENV), &args, want)
}

/// `op|id|name|amount|version` of the bronze rows of a run, by key.
async fn ct_run(p: &Project, run_id: &str) -> Vec<String> {
    rows(
        &p.query(
            &[("b", "bronze/tracked")],
            &format!(
                "SELECT _op, id, name, amount, _change_version FROM b WHERE _run_id = '{run_id}' ORDER BY id"
            ),
        )
        .await,
    )
}

async fn synced_version(p: &Project) -> i64 {
    p.scalar(
        &[("w", "_smelter/watermarks")],
        "SELECT value FROM w WHERE table_name = 'tracked' AND kind = 'change_version' ORDER BY committed_at DESC LIMIT 1",
    )
    .await
}

#[tokio::test]
async fn change_tracking_lands_changes_and_deletes_and_resyncs_after_cleanup() {
    let s = server(FixtureOptions::default());
    let p = project(&s, &[CT_TABLE], "");
    let model = p.dir.path().join("sql/t/silver/tracked.sql");
    std::fs::create_dir_all(model.parent().unwrap()).unwrap();
    std::fs::write(&model, SILVER).unwrap();
    // A second merge applies the deletes (its output has `_op`: `delete_when` defaults to
    // `_op = 'D'`).
    std::fs::write(model.with_file_name("current.sql"), CURRENT).unwrap();

    // First sync: the whole table at the current version.
    let v0 = s.tracked_version();
    ct_layer(&p, "extract", "r1", 0);
    ct_layer(&p, "bronze", "r1", 0);
    assert_eq!(
        ct_run(&p, "r1").await,
        [
            format!("U|1|item 1|1.25|{v0}"),
            format!("U|2|item 2|2.25|{v0}"),
            format!("U|3|item 3|3.25|{v0}"),
            format!("U|4|item 4|4.25|{v0}"),
            format!("U|5|item 5|∅|{v0}"),
        ]
    );
    assert_eq!(synced_version(&p).await, v0);
    // Only the key stays NOT NULL: a delete row carries nothing else.
    let schema = p
        .query(&[("b", "bronze/tracked")], "SELECT * FROM b LIMIT 1")
        .await;
    let schema = schema[0].schema();
    for (column, nullable) in [
        ("id", false),
        ("name", true),
        ("amount", true),
        ("_op", false),
        ("_change_version", false),
    ] {
        assert_eq!(
            schema.field_with_name(column).unwrap().is_nullable(),
            nullable,
            "{column}"
        );
    }

    // Inserts, updates and deletes (7 inserted and deleted again: a delete of its key).
    let v6 = s.tracked_upsert(6, "item 6", Some(650));
    let v2 = s.tracked_upsert(2, "item 2b", Some(999));
    let v3 = s.tracked_delete(3);
    s.tracked_upsert(7, "item 7", None);
    let v7 = s.tracked_delete(7);
    ct_layer(&p, "extract", "r2", 0);
    // The version is committed by bronze, not by extract.
    assert_eq!(synced_version(&p).await, v0);

    // A bronze that fails leaves the synced version as it was.
    let landing = p.lake().join("landing/tracked/run=r2");
    let part = std::fs::read_dir(&landing)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|f| f.extension().is_some_and(|x| x == "parquet"))
        .expect("a landed file");
    std::fs::write(&part, b"not parquet").unwrap();
    let out = p.smelter_env(
        &[
            "run",
            "{p}",
            "--layer",
            "bronze",
            "--logical-date",
            "2026-11-02",
            "--run-id",
            "r2",
        ],
        ENV,
    );
    assert_ne!(
        out.status.code(),
        Some(0),
        "bronze of a corrupt landing file"
    );
    assert_eq!(synced_version(&p).await, v0);

    // The retry reads the same changes again and commits them once.
    ct_layer(&p, "extract", "r2", 0);
    ct_layer(&p, "bronze", "r2", 0);
    assert_eq!(
        ct_run(&p, "r2").await,
        [
            format!("U|2|item 2b|9.99|{v2}"),
            format!("D|3|∅|∅|{v3}"),
            format!("U|6|item 6|6.50|{v6}"),
            format!("D|7|∅|∅|{v7}"),
        ]
    );
    assert_eq!(synced_version(&p).await, v7);

    // The rows reach a silver merge ordered by `_change_version`.
    ct_layer(&p, "silver", "r2", 0);
    let silver = rows(
        &p.query(
            &[("s", "silver/tracked")],
            "SELECT op, id, _change_version FROM s ORDER BY id",
        )
        .await,
    );
    assert_eq!(
        silver,
        [
            format!("U|1|{v0}"),
            format!("U|2|{v2}"),
            format!("D|3|{v3}"),
            format!("U|4|{v0}"),
            format!("U|5|{v0}"),
            format!("U|6|{v6}"),
            format!("D|7|{v7}"),
        ]
    );

    // ... and the deletes reach the merge that applies them: 3 and 7 are gone.
    assert_eq!(
        current_rows(&p).await,
        [
            format!("1|item 1|{v0}"),
            format!("2|item 2b|{v2}"),
            format!("4|item 4|{v0}"),
            format!("5|item 5|{v0}"),
            format!("6|item 6|{v6}"),
        ]
    );

    // Cleanup passes the synced version: a full re-sync, with a delete for the key that
    // vanished meanwhile (4) and none for keys deleted before (3, 7).
    s.tracked_upsert(1, "item 1b", Some(111));
    s.tracked_delete(4);
    let min_valid = s.tracked_cleanup();
    let out = ct_layer(&p, "extract", "r3", 0);
    assert!(
        out.contains("older than the table's minimum valid version"),
        "{out}"
    );
    ct_layer(&p, "bronze", "r3", 0);
    assert_eq!(
        ct_run(&p, "r3").await,
        [
            format!("U|1|item 1b|1.11|{min_valid}"),
            format!("U|2|item 2b|9.99|{min_valid}"),
            format!("D|4|item 4|4.25|{min_valid}"),
            format!("U|5|item 5|∅|{min_valid}"),
            format!("U|6|item 6|6.50|{min_valid}"),
        ]
    );
    assert_eq!(synced_version(&p).await, min_valid);

    // Incremental again from the re-synced version: a deleted key re-inserted.
    let v8 = s.tracked_upsert(3, "item 3 again", Some(300));
    ct_layer(&p, "extract", "r4", 0);
    ct_layer(&p, "bronze", "r4", 0);
    assert_eq!(
        ct_run(&p, "r4").await,
        [format!("U|3|item 3 again|3.00|{v8}")]
    );
    assert_eq!(synced_version(&p).await, v8);
    // Silver catches up on r3 and r4: the re-sync's delete of 4 removes it, 3 comes back
    // (newer than its tombstone), 1 is updated.
    ct_layer(&p, "silver", "r4", 0);
    assert_eq!(
        current_rows(&p).await,
        [
            format!("1|item 1b|{min_valid}"),
            format!("2|item 2b|{min_valid}"),
            format!("3|item 3 again|{v8}"),
            format!("5|item 5|{min_valid}"),
            format!("6|item 6|{min_valid}"),
        ]
    );

    // `--full-refresh` re-syncs in full: every row at the current version, no delete.
    let args = [
        "run",
        "{p}",
        "--layer",
        "extract",
        "--logical-date",
        "2026-11-02",
        "--run-id",
        "r5",
        "--full-refresh",
    ];
    expect_code(&p.smelter_env(&args, ENV), &args, 0);
    ct_layer(&p, "bronze", "r5", 0);
    let r5 = ct_run(&p, "r5").await;
    assert_eq!(r5.len(), 5, "{r5:?}");
    assert!(
        r5.iter()
            .all(|r| r.starts_with("U|") && r.ends_with(&format!("|{v8}"))),
        "{r5:?}"
    );

    // Every CHANGETABLE read started from a valid version (the fixture refuses others), and the
    // versions were bound as parameters.
    let reads: Vec<_> = s
        .received()
        .into_iter()
        .filter(|r| r.sql.contains("CHANGETABLE"))
        .collect();
    assert_eq!(reads.len(), 3, "r2 twice, r4");
    assert!(reads
        .iter()
        .all(|r| r.sql.contains("@P1") && r.params.len() == 1));
}
