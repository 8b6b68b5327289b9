//! Smaller mistakes a new user makes, each refused or reported accurately: a CSV file with no
//! header line (an empty file is no snapshot), a header naming a column twice, a bronze `key`
//! naming a column the table lacks (caught by `validate`), an scd2 run counting only the versions
//! it changed, a `delete_when` that is not a condition, bronze after an extract that found
//! nothing new, a `table` model changing its columns' nullability, an scd2 model partitioned by a
//! string column, a model failing before its first commit, an empty string in a
//! partition column, a merge model casting to TIMESTAMP run twice, and a windowed append
//! whose column is widened.

use crate::support::{files_pipeline, Project};

/// A files project of `customers` with `detect_deletes` and one CSV file `name` holding `text`.
fn customers(detect_deletes: bool, files: &[(&str, &str)], models: &[(&str, &str)]) -> Project {
    let mut toml = files_pipeline("customers", "customer_id");
    if detect_deletes {
        toml = toml.replace(
            "key = [\"customer_id\"]\n",
            "key = [\"customer_id\"]\ndetect_deletes = true\n",
        );
    }
    let p = Project::custom(&toml, models);
    write(&p, files);
    p
}

/// Stores `p`'s tables in `format` (`delta`, `iceberg`).
fn in_format(p: &Project, format: &str) {
    let toml = std::fs::read_to_string(p.pipeline()).unwrap();
    std::fs::write(
        p.pipeline(),
        format!("{toml}[format]\ntable = \"{format}\"\n"),
    )
    .unwrap();
}

fn write(p: &Project, files: &[(&str, &str)]) {
    let dir = p.dir.path().join("incoming/customers");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// A 0-byte file is refused at extract naming it (exit 2), and deletes nothing; a header-only
/// file is a real empty snapshot and deletes every key.
#[tokio::test]
async fn an_empty_csv_file_is_refused_and_a_header_only_file_is_an_empty_snapshot() {
    let p = customers(true, &[("d1.csv", "customer_id,name\n1,ann\n2,bob\n")], &[]);
    p.expect(&["source", "sync", "{p}"], 0);
    p.run_layer("extract", "r1", 0);
    p.run_layer("bronze", "r1", 0);
    write(&p, &[("d2.csv", "")]);
    let err = p.run_layer("extract", "r2", 2);
    assert!(err.contains("d2.csv"), "{err}");
    assert!(err.contains("no header line"), "{err}");
    assert_eq!(
        p.scalar(
            &[("b", "bronze/customers")],
            "SELECT COUNT(*) FROM b WHERE _op = 'D'"
        )
        .await,
        0
    );
    std::fs::remove_file(p.dir.path().join("incoming/customers/d2.csv")).unwrap();
    write(&p, &[("d3.csv", "customer_id,name\n")]);
    p.run_layer("extract", "r3", 0);
    p.run_layer("bronze", "r3", 0);
    assert_eq!(
        p.scalar(
            &[("b", "bronze/customers")],
            "SELECT COUNT(*) FROM b WHERE _op = 'D' AND _run_id = 'r3'"
        )
        .await,
        2
    );
}

/// A header naming a column twice is refused (exit 2), naming the file and the column, at
/// `source sync` and at extract.
#[test]
fn a_csv_header_naming_a_column_twice_is_refused() {
    let p = customers(
        false,
        &[("d1.csv", "customer_id,name,name\n1,ann,ANN\n")],
        &[],
    );
    for args in [
        &["source", "sync", "{p}"][..],
        &["run", "{p}", "--layer", "extract", "--run-id", "r1"][..],
    ] {
        let err = p.expect(args, 2);
        assert!(err.contains("d1.csv"), "{err}");
        assert!(err.contains("names column `name` twice"), "{err}");
    }
}

/// `validate` checks a bronze table's `key` against its known columns (the contract): exit 2,
/// naming the table, the key and the columns.
#[test]
fn validate_refuses_a_key_the_bronze_table_lacks() {
    let p = customers(false, &[("d1.csv", "customer_id,name\n1,ann\n")], &[]);
    p.expect(&["source", "sync", "{p}"], 0);
    p.expect(&["validate", "{p}"], 0);
    let toml = std::fs::read_to_string(p.pipeline())
        .unwrap()
        .replace("key = [\"customer_id\"]", "key = [\"cust_id\"]");
    std::fs::write(p.pipeline(), toml).unwrap();
    let err = p.expect(&["validate", "{p}"], 2);
    for want in ["bronze.customers", "`cust_id`", "customer_id, name"] {
        assert!(err.contains(want), "{want}\n{err}");
    }
}

/// An scd2 run reports as updated only the versions whose row changed (the version it closed),
/// not the unchanged versions of the same keys it recomputed.
#[tokio::test]
async fn scd2_counts_only_the_versions_it_changed() {
    let history =
        "-- materialized: scd2\n-- unique_key: customer_id\n-- sequence_by: modified_at\n\
        SELECT customer_id, name, modified_at\nFROM {{ unprocessed('bronze.customers') }} AS c\n";
    let p = customers(
        false,
        &[(
            "d1.csv",
            "customer_id,name,modified_at\n1,ann,2026-11-01T08:00:00\n2,bob,2026-11-01T08:00:00\n",
        )],
        &[("silver/history.sql", history)],
    );
    p.expect(&["source", "sync", "{p}"], 0);
    p.run_layer("all", "r1", 0);
    write(
        &p,
        &[(
            "d2.csv",
            "customer_id,name,modified_at\n1,ann2,2026-11-02T08:00:00\n2,bob2,2026-11-02T08:00:00\n",
        )],
    );
    p.run_layer("all", "r2", 0);
    // Key 1 changes again: its first version is unchanged, its second is closed.
    write(
        &p,
        &[(
            "d3.csv",
            "customer_id,name,modified_at\n1,ann3,2026-11-03T08:00:00\n",
        )],
    );
    p.run_layer("all", "r3", 0);
    let updated = p
        .scalar(
            &[("r", "_smelter/runs")],
            "SELECT rows_updated FROM r WHERE run_id = 'r3' AND target = 'silver.history' AND status = 'success'",
        )
        .await;
    assert_eq!(updated, 1);
}

/// A `delete_when` that is not a condition shows the SQL type, and one naming a missing column
/// names it plainly (no qualified names, no Arrow type names).
#[test]
fn delete_when_messages_speak_sql() {
    let model = |when: &str| {
        format!(
            "-- materialized: merge\n-- unique_key: customer_id\n-- delete_when: {when}\n\
             SELECT customer_id, name FROM bronze.customers\n"
        )
    };
    let p = customers(
        false,
        &[("d1.csv", "customer_id,name\n1,ann\n")],
        &[
            ("silver/typed.sql", &model("name")),
            ("silver/missing.sql", &model("op = 'D'")),
        ],
    );
    p.expect(&["source", "sync", "{p}"], 0);
    let err = p.expect(&["validate", "{p}"], 2);
    assert!(err.contains("its type is VARCHAR"), "{err}");
    assert!(
        err.contains("names column `op`, which the model's output does not have"),
        "{err}"
    );
    for wrong in ["Utf8", "customers.customer_id", "Valid fields"] {
        assert!(!err.contains(wrong), "{wrong}\n{err}");
    }
}

/// Bronze after an extract that landed nothing new says so (exit 99), instead of asking for an
/// extract that just ran.
#[test]
fn bronze_after_an_extract_with_nothing_new_says_so() {
    let p = customers(false, &[("d1.csv", "customer_id,name\n1,ann\n")], &[]);
    p.expect(&["source", "sync", "{p}"], 0);
    p.run_layer("extract", "r1", 0);
    p.run_layer("bronze", "r1", 0);
    let out = p.expect(&["run", "{p}", "--layer", "all", "--run-id", "r2"], 99);
    assert!(out.contains("landed nothing new"), "{out}");
    assert!(
        !out.contains("run the extract layer with this run id first"),
        "{out}"
    );
}

/// `plan --format json` of a files source shows no database (it reads none).
#[test]
fn plan_json_of_a_files_source_shows_no_database() {
    let p = customers(false, &[("d1.csv", "customer_id,name\n1,ann\n")], &[]);
    p.expect(&["source", "sync", "{p}"], 0);
    let out = p.ok(&["plan", "{p}", "--format", "json"]);
    let start = out.find('{').expect("JSON");
    let plan: serde_json::Value = serde_json::from_str(&out[start..]).expect("JSON plan");
    assert_eq!(plan["source"]["type"], "files", "{plan}");
    assert!(plan["source"]["database"].is_null(), "{plan}");
}

/// The `price` values of every Parquet file under `dir`, read with the parquet crate (not with
/// DataFusion, whose statistics shortcut is what this guards against).
fn prices(dir: &std::path::Path) -> Vec<f64> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        let file = std::fs::File::open(&path).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1024).unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let col = batch.column_by_name("price").expect("price column");
            let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Float64).unwrap();
            let col = col
                .as_any()
                .downcast_ref::<arrow::array::Float64Array>()
                .unwrap();
            out.extend(col.iter().flatten());
        }
    }
    out
}

/// A NaN next to values that are all equal survives bronze and silver. Parquet statistics leave
/// NaN out of min and max, and DataFusion read a column whose file min equals max as that
/// constant: `[1.5, NaN]` landed as `[1.5, 1.5]`.
#[test]
fn a_nan_beside_equal_values_is_kept() {
    let toml = files_pipeline("t", "id");
    let p = Project::custom(
        &toml,
        &[(
            "silver/x.sql",
            "-- materialized: table\nSELECT id, price FROM bronze.t\n",
        )],
    );
    incoming(&p, "a.csv", "id,price\n1,1.5\n2,NaN\n3,1.5\n");
    p.ok(&["run", "{p}", "--run-id", "r1"]);
    for table in ["bronze/t", "silver/x"] {
        let got = prices(&p.lake().join(table));
        assert_eq!(got.len(), 3, "{table}: {got:?}");
        assert_eq!(
            got.iter().filter(|v| v.is_nan()).count(),
            1,
            "{table}: {got:?}"
        );
        assert_eq!(
            got.iter().filter(|v| **v == 1.5).count(),
            2,
            "{table}: {got:?}"
        );
    }
}

/// An aggregate `FILTER (WHERE p)` skips rows where `p` is NULL. DataFusion 53's grouped
/// accumulators read only the filter's value bits, so a NULL `b` (stored as 0 under its NULL
/// bit) counted as `b < 1` (apache/datafusion#22067).
#[tokio::test]
async fn an_aggregate_filter_skips_rows_whose_condition_is_null() {
    let toml = files_pipeline("t", "g");
    let p = Project::custom(
        &toml,
        &[(
            "silver/x.sql",
            "-- materialized: table\n\
             SELECT g, COUNT(*) FILTER (WHERE b < 1) AS n, SUM(b) FILTER (WHERE b < 5) AS s\n\
             FROM bronze.t GROUP BY g\n",
        )],
    );
    incoming(&p, "a.csv", "g,b\n1,\n1,2\n2,0\n2,\n");
    p.ok(&["run", "{p}", "--run-id", "r1"]);
    let x = [("x", "silver/x")];
    assert_eq!(p.scalar(&x, "SELECT n FROM x WHERE g = 1").await, 0);
    assert_eq!(p.scalar(&x, "SELECT n FROM x WHERE g = 2").await, 1);
    assert_eq!(p.scalar(&x, "SELECT s FROM x WHERE g = 1").await, 2);
}

/// Writes `incoming/t/<file>` of project `p`.
fn incoming(p: &Project, file: &str, text: &str) {
    let dir = p.dir.path().join("incoming/t");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(file), text).unwrap();
}

/// A `table` model whose SQL changes drops a NOT NULL column, then makes one nullable and
/// writes NULLs into it. delta-rs checks an overwrite against the NOT NULL columns of the schema
/// it replaces: the first change failed with "No field named a" (exit 1), the second on its NULL.
/// Each run now replaces the table's schema, and a reader sees the new columns and rows.
#[tokio::test]
async fn a_table_model_may_drop_a_not_null_column_or_make_it_nullable() {
    let toml = files_pipeline("t", "id");
    let model = |sql: &str| [("silver/x.sql", format!("-- materialized: table\n{sql}\n"))];
    let p = Project::custom(&toml, &[]);
    incoming(&p, "a.csv", "id,name\n1,a\n2,b\n3,c\n");
    let write_model = |sql: &str| {
        for (rel, text) in model(sql) {
            let path = p.dir.path().join("sql/t").join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    };
    write_model("SELECT id, 1 AS a FROM bronze.t");
    p.ok(&["run", "{p}", "--run-id", "r1"]);
    write_model("SELECT id, 'x' AS b FROM bronze.t");
    p.ok(&["run", "{p}", "--layer", "silver", "--run-id", "r2"]);
    let x = [("x", "silver/x")];
    assert_eq!(
        p.scalar(&x, "SELECT COUNT(*) FROM x WHERE b = 'x'").await,
        3
    );
    let batches = p.query(&x, "SELECT * FROM x").await;
    let names: Vec<String> = batches[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["id", "b"]);
    write_model("SELECT id, CASE WHEN id = 1 THEN NULL ELSE 'y' END AS b FROM bronze.t");
    p.ok(&["run", "{p}", "--layer", "silver", "--run-id", "r3"]);
    assert_eq!(
        p.scalar(&x, "SELECT COUNT(*) FROM x WHERE b IS NULL").await,
        1
    );
    assert_eq!(
        p.scalar(&x, "SELECT COUNT(*) FROM x WHERE b = 'y'").await,
        2
    );
}

/// An scd2 model partitioned by a string column, run twice. Its second run compares the
/// table's versions with the batch's (`IS NOT DISTINCT FROM` in a correlated `NOT EXISTS`), and
/// a dictionary-encoded partition column against a `Utf8View` one failed at run time (exit 2,
/// blaming the model's SQL).
#[tokio::test]
async fn an_scd2_model_partitioned_by_a_string_column_runs_twice() {
    let toml = files_pipeline("t", "id");
    let p = Project::custom(
        &toml,
        &[(
            "silver/h.sql",
            "-- materialized: scd2\n-- unique_key: id\n-- sequence_by: ts\n-- partition_by: region\n\
             SELECT id, region, name, ts FROM bronze.t\n",
        )],
    );
    incoming(
        &p,
        "a.csv",
        "id,region,name,ts\n1,eu,a,2026-01-01 00:00:00\n2,us,b,2026-01-02 00:00:00\n",
    );
    p.ok(&["run", "{p}", "--run-id", "r1"]);
    incoming(
        &p,
        "b.csv",
        "id,region,name,ts\n1,eu,a2,2026-02-01 00:00:00\n3,us,c,2026-02-02 00:00:00\n",
    );
    p.ok(&["run", "{p}", "--run-id", "r2"]);
    let h = [("h", "silver/h")];
    assert_eq!(p.scalar(&h, "SELECT COUNT(*) FROM h").await, 4);
    assert_eq!(
        p.scalar(&h, "SELECT COUNT(*) FROM h WHERE is_current")
            .await,
        3
    );
    assert_eq!(
        p.scalar(
            &h,
            "SELECT COUNT(*) FROM h WHERE id = 1 AND name = 'a' AND NOT is_current \
             AND valid_to = TIMESTAMP '2026-02-01 00:00:00'"
        )
        .await,
        1
    );
}

/// A model that fails on its data before its table's first commit leaves no table folder
/// behind (an empty folder looked like a table to people browsing the lake).
#[test]
fn a_model_failing_before_its_first_commit_leaves_no_folder() {
    let toml = files_pipeline("t", "id");
    let p = Project::custom(
        &toml,
        &[(
            "silver/bad.sql",
            "SELECT id, CAST(name AS INT) AS n FROM bronze.t\n",
        )],
    );
    incoming(&p, "a.csv", "id,name\n1,a\n");
    let out = p.expect(&["run", "{p}", "--run-id", "r1"], 2);
    assert!(out.contains("silver.bad"), "{out}");
    assert!(p.lake().join("bronze/t").is_dir());
    assert!(!p.lake().join("silver/bad").exists());
}

/// An empty string in a string partition column is refused before anything is committed (exit
/// 2, naming the model and the column): Delta Lake stores it as a NULL partition value, which made
/// a NOT NULL column's committed table unreadable. Mapped in the SQL, the same rows load.
#[tokio::test]
async fn an_empty_string_in_a_partition_column_is_refused_before_commit() {
    let toml = files_pipeline("t", "id");
    let model = |region: &str| {
        format!(
            "-- materialized: table\n-- partition_by: region\n\
             SELECT id, {region} AS region FROM bronze.t\n"
        )
    };
    let p = Project::custom(&toml, &[("silver/p.sql", &model("COALESCE(region, '')"))]);
    incoming(&p, "a.csv", "id,region\n1,north\n2,\n3,south\n");
    let out = p.expect(&["run", "{p}", "--run-id", "r1"], 2);
    for want in [
        "silver.p",
        "partition column `region`",
        "NULLIF(region, '')",
    ] {
        assert!(out.contains(want), "{want}\n{out}");
    }
    assert!(!p.lake().join("silver/p").exists());
    std::fs::write(
        p.dir.path().join("sql/t/silver/p.sql"),
        model("COALESCE(NULLIF(region, ''), '(blank)')"),
    )
    .unwrap();
    p.ok(&["run", "{p}", "--layer", "silver", "--run-id", "r2"]);
    let t = [("p", "silver/p")];
    assert_eq!(
        p.scalar(
            &t,
            "SELECT COUNT(*) FROM p WHERE region = '(blank)' AND id = 2"
        )
        .await,
        1
    );
    p.ok(&["show", "{p}", "silver.p"]);
}

/// Grouped `MIN`/`MAX` of a float column holding only infinities, or NaN beside a number, give
/// the data's values: DataFusion 53 gave `MIN` = `f64::MAX` for a group of `+inf` and let row
/// order decide NaN (apache/datafusion#24432).
#[tokio::test]
async fn grouped_float_min_and_max_give_the_datas_values() {
    let toml = files_pipeline("t", "id");
    let p = Project::custom(
        &toml,
        &[(
            "silver/x.sql",
            "-- materialized: table\n\
             SELECT g, MIN(v) AS lo, MAX(v) AS hi FROM bronze.t GROUP BY g\n",
        )],
    );
    incoming(
        &p,
        "a.csv",
        "id,g,v\n1,1,inf\n2,1,inf\n3,2,-inf\n4,3,NaN\n5,3,1.5\n6,4,1.5\n7,4,NaN\n",
    );
    p.ok(&["run", "{p}", "--run-id", "r1"]);
    let x = [("x", "silver/x")];
    let count = |sql: &'static str| p.scalar(&x, sql);
    assert_eq!(
        count("SELECT COUNT(*) FROM x WHERE g = 1 AND lo = 'inf'::double AND hi = 'inf'::double")
            .await,
        1
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM x WHERE g = 2 AND lo = '-inf'::double AND hi = '-inf'::double")
            .await,
        1
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM x WHERE g IN (3, 4) AND lo = 1.5 AND isnan(hi)").await,
        2
    );
}

/// The Delta log's commit files of table `rel` (one per version).
fn versions(p: &Project, rel: &str) -> usize {
    std::fs::read_dir(p.lake().join(rel).join("_delta_log"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".json")
        })
        .count()
}

/// A files project `t` (`id,name`: `1,a`, `2,b`, `3,` with an empty name) with no models yet.
fn three_rows() -> Project {
    let p = Project::custom(&files_pipeline("t", "id"), &[]);
    incoming(&p, "a.csv", "id,name\n1,a\n2,b\n3,\n");
    p
}

fn model(p: &Project, name: &str, text: &str) {
    let path = p
        .dir
        .path()
        .join("sql/t/silver")
        .join(format!("{name}.sql"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A `table` model's layout follows its header: dropping `partition_by` together with the old
/// partition column rewrote nothing and exited 1 ("Partition column(s) not found in write
/// schema"). And a run that fails on its data commits nothing, not even the NOT NULL
/// relaxation that a schema change needs first.
#[tokio::test]
async fn a_table_model_drops_its_partitioning_and_a_failed_run_commits_nothing() {
    let p = three_rows();
    model(
        &p,
        "x",
        "-- materialized: table\n-- partition_by: id\nSELECT id, COALESCE(name, '?') AS name FROM bronze.t\n",
    );
    p.ok(&["run", "{p}", "--run-id", "r1"]);
    model(
        &p,
        "x",
        "-- materialized: table\nSELECT id, name, 10 / (id - 3) AS boom FROM bronze.t\n",
    );
    let out = p.expect(&["run", "{p}", "--layer", "silver", "--run-id", "r2"], 2);
    assert!(out.contains("silver.x"), "{out}");
    assert_eq!(versions(&p, "silver/x"), 1, "a failed run committed");
    model(
        &p,
        "x",
        "-- materialized: table\nSELECT name FROM bronze.t\n",
    );
    p.ok(&["run", "{p}", "--layer", "silver", "--run-id", "r3"]);
    let x = [("x", "silver/x")];
    assert_eq!(
        p.scalar(&x, "SELECT COUNT(*) FROM x WHERE name IS NULL")
            .await,
        1
    );
    let log = std::fs::read_dir(p.lake().join("silver/x/_delta_log"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(log.contains("\"partitionColumns\":[]"), "{log}");
}

/// A merge or append model whose `partition_by` changed is refused with exit 2, pointing at
/// `--full-refresh` (an append exited 1 in delta-rs, a merge ignored the header); the full
/// refresh then rebuilds the table with the new partitioning.
#[test]
fn a_changed_partition_by_of_a_merge_or_append_needs_a_full_refresh() {
    for (name, header) in [
        ("m", "-- materialized: merge\n-- unique_key: id\n"),
        ("a", "-- materialized: append\n"),
    ] {
        let p = three_rows();
        let sql = |col: &str| {
            format!("{header}-- partition_by: {col}\nSELECT id, name FROM {{{{ unprocessed('bronze.t') }}}} AS t\n")
        };
        model(&p, name, &sql("name"));
        p.ok(&["run", "{p}", "--run-id", "r1"]);
        model(&p, name, &sql("id"));
        std::fs::write(p.dir.path().join("incoming/t/b.csv"), "id,name\n4,d\n").unwrap();
        let out = p.expect(&["run", "{p}", "--run-id", "r2"], 2);
        assert!(
            out.contains(&format!("silver.{name}")) && out.contains("--full-refresh"),
            "{out}"
        );
        p.ok(&[
            "run",
            "{p}",
            "--layer",
            "silver",
            "--run-id",
            "r2",
            "--full-refresh",
        ]);
    }
}

/// Two grouped aggregates with the same `FILTER` share it as a common subexpression; the NULL
/// filter fix wrote it as `p IS TRUE`, whose logical and physical nullability differ, and
/// DataFusion refused the plan (exit 1).
#[tokio::test]
async fn two_grouped_aggregates_may_share_a_filter() {
    let p = three_rows();
    model(
        &p,
        "f",
        "-- materialized: table\n\
         SELECT name, SUM(id) FILTER (WHERE id > 1) AS s, COUNT(*) FILTER (WHERE id > 1) AS n \
         FROM bronze.t GROUP BY name\n",
    );
    p.ok(&["run", "{p}", "--run-id", "r1"]);
    let f = [("f", "silver/f")];
    assert_eq!(p.scalar(&f, "SELECT SUM(n) FROM f").await, 2);
    assert_eq!(p.scalar(&f, "SELECT SUM(s) FROM f").await, 5);
}

/// A merge or append model that casts to TIMESTAMP (nanoseconds in DataFusion) wrote its table
/// in microseconds, the unit both formats store: its second run is no schema change, on either
/// format, and keeps every key once with its latest value.
#[test]
fn a_timestamp_cast_in_a_merge_model_is_no_schema_change_on_the_next_run() {
    for format in ["delta", "iceberg"] {
        let p = customers(
            false,
            &[("a.csv", "customer_id,seen\n1,2026-01-01T00:00:00.1234567\n2,2026-01-02T00:00:00\n")],
            &[(
                "silver/seen.sql",
                "-- materialized: merge\n-- unique_key: customer_id\n\
                 SELECT CAST(customer_id AS BIGINT) AS customer_id, CAST(seen AS TIMESTAMP) AS seen\n\
                 FROM {{ unprocessed('bronze.customers') }} AS c\n",
            )],
        );
        in_format(&p, format);
        p.ok(&["run", "{p}", "--run-id", "r1"]);
        write(
            &p,
            &[(
                "b.csv",
                "customer_id,seen\n1,2026-03-01T00:00:00\n3,2026-03-02T00:00:00\n",
            )],
        );
        p.ok(&["run", "{p}", "--run-id", "r2"]);
        let shown = p.ok(&["show", "{p}", "silver.seen", "--limit", "10"]);
        assert!(shown.contains("2026-03-01T00:00:00"), "{format}: {shown}");
        assert!(shown.contains("2026-01-02T00:00:00"), "{format}: {shown}");
        assert!(!shown.contains("2026-01-01T00:00:00"), "{format}: {shown}");
        assert_eq!(shown.matches("2026-").count(), 3, "{format}: {shown}");
    }
}

/// An append model over a catch-up window whose column is widened (`sync_all_columns`): the
/// widening's own rewrite is not mistaken for another writer's commit, so the run commits on
/// its first attempt, on either format, with every row once.
#[test]
fn a_widened_column_of_a_windowed_append_commits_on_the_first_attempt() {
    for format in ["delta", "iceberg"] {
        let model = |t: &str| {
            format!(
                "-- materialized: append\n-- on_schema_change: sync_all_columns\n\
                 SELECT CAST(customer_id AS BIGINT) AS customer_id, CAST(n AS {t}) AS n\n\
                 FROM {{{{ unprocessed('bronze.customers') }}}} AS c\n"
            )
        };
        let p = customers(
            false,
            &[("a.csv", "customer_id,n\n1,10\n2,20\n")],
            &[("silver/counts.sql", &model("INT"))],
        );
        in_format(&p, format);
        p.ok(&["run", "{p}", "--run-id", "r1"]);
        write(&p, &[("b.csv", "customer_id,n\n3,5000000000\n")]);
        std::fs::write(
            p.dir
                .path()
                .join(format!("sql/{}/silver/counts.sql", p.name)),
            model("BIGINT"),
        )
        .unwrap();
        p.ok(&["run", "{p}", "--run-id", "r2"]);
        let shown = p.ok(&["show", "{p}", "silver.counts", "--format", "json"]);
        let mut rows: Vec<(i64, i64)> = shown
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["customer_id"].as_i64().unwrap(), v["n"].as_i64().unwrap())
            })
            .collect();
        rows.sort();
        assert_eq!(
            rows,
            [(1, 10), (2, 20), (3, 5_000_000_000)],
            "{format}: {shown}"
        );
    }
}
