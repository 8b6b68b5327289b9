//! Real source schemas drive planning: schema contracts written by `smelter source sync` from the
//! TDS fixture server (tables the sample generator does not have, and a table that shares a
//! sample name with other columns), offline planning from them, drift at extraction, and the
//! `on_schema_change` policies for bronze tables and incremental models.

use crate::mssql::{project, server, ENV};
use crate::support::{code, expect_code, out_text, Project, ONE_TABLE};
use crate::tds::FixtureOptions;

fn smelter(p: &Project, args: &[&str]) -> std::process::Output {
    p.smelter_env(args, ENV)
}

fn expect(p: &Project, args: &[&str], want: i32) -> String {
    expect_code(&smelter(p, args), args, want)
}

/// Runs the extract layer of 2026-11-02 under `run_id`, expecting exit `want`.
fn extract(p: &Project, run_id: &str, want: i32) -> String {
    expect(
        p,
        &[
            "run",
            "{p}",
            "--layer",
            "extract",
            "--logical-date",
            "2026-11-02",
            "--run-id",
            run_id,
        ],
        want,
    )
}

fn run_all(p: &Project, date: &str, run_id: &str, want: i32) -> String {
    expect(
        p,
        &["run", "{p}", "--logical-date", date, "--run-id", run_id],
        want,
    )
}

const BIG: &str = r#"name = "big"
object = "dbo.Big"
key = ["id"]"#;

/// Same lake name as a sample table, entirely different columns.
const SHIPMENTS_QUERY: &str = r#"name = "shipments"
query = "SELECT shipment_id, status AS tracking_no, modified_at FROM dbo.shipments"
key = ["shipment_id"]"#;

fn write_models(p: &Project) {
    let dir = p.dir.path().join("sql/t/silver");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("big_clean.sql"),
        "-- description: Flagged rows of dbo.Big.\nSELECT id, amount, UPPER(code) AS code FROM bronze.big WHERE flag\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("tracking.sql"),
        "SELECT shipment_id, TRIM(tracking_no) AS tracking_no FROM bronze.shipments\n",
    )
    .unwrap();
}

/// Points the project's pipeline at another fixture server port.
fn set_port(p: &Project, port: u16) {
    let toml = std::fs::read_to_string(p.pipeline()).unwrap();
    let start = toml.find("port = ").unwrap();
    let end = start + toml[start..].find('\n').unwrap();
    let toml = format!("{}port = {port}{}", &toml[..start], &toml[end..]);
    std::fs::write(p.pipeline(), toml).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_the_sample_lacks_validate_plan_and_run_from_contracts() {
    let s = server(FixtureOptions::default());
    let p = project(&s, &[BIG, SHIPMENTS_QUERY], "");
    write_models(&p);

    // Without a contract, planning names the table and the command that writes it.
    let text = expect(&p, &["validate", "{p}"], 2);
    assert!(text.contains("bronze.big"), "{text}");
    assert!(text.contains("smelter source sync"), "{text}");
    assert!(!text.contains("internal error"), "{text}");

    let text = expect(&p, &["source", "sync", "{p}"], 0);
    assert!(text.contains("schemas/t/big.toml: written"), "{text}");
    let contract = std::fs::read_to_string(p.dir.path().join("schemas/t/big.toml")).unwrap();
    assert!(
        contract.contains("source_type = \"decimal(18,4)\""),
        "{contract}"
    );
    assert!(
        contract.contains("arrow_type = \"Decimal128(18, 4)\""),
        "{contract}"
    );
    assert!(contract.contains("source = \"mssql:"), "{contract}");
    let shipments = std::fs::read_to_string(p.dir.path().join("schemas/t/shipments.toml")).unwrap();
    assert!(shipments.contains("name = \"tracking_no\""), "{shipments}");
    assert!(!shipments.contains("customer_id"), "{shipments}");
    let text = expect(&p, &["source", "sync", "{p}", "--tables", "big"], 0);
    assert!(text.contains("big.toml: unchanged"), "{text}");
    assert!(!text.contains("shipments"), "{text}");
    let text = expect(&p, &["source", "sync", "{p}", "--tables", "bigg"], 2);
    assert!(text.contains("did you mean `big`"), "{text}");

    // Offline: no server, no lake tables; the contracts are enough.
    drop(s);
    let text = expect(&p, &["validate", "{p}"], 0);
    assert!(text.contains("2 models"), "{text}");
    let text = expect(&p, &["plan", "{p}", "--lineage", "--format", "json"], 0);
    let lineage: serde_json::Value = serde_json::from_str(
        text.split("stdout:\n")
            .nth(1)
            .unwrap()
            .split("\nstderr:")
            .next()
            .unwrap(),
    )
    .unwrap_or_else(|e| panic!("{e}: {text}"));
    let shown = lineage.to_string();
    assert!(shown.contains("bronze.shipments"), "{shown}");
    assert!(shown.contains("tracking_no"), "{shown}");
    assert!(shown.contains("bronze.big"), "{shown}");
    // A model using a column the contract does not have is a planning error naming it.
    std::fs::write(
        p.dir.path().join("sql/t/silver/wrong.sql"),
        "SELECT customer_id FROM bronze.shipments\n",
    )
    .unwrap();
    let text = expect(&p, &["validate", "{p}"], 2);
    assert!(text.contains("wrong.sql"), "{text}");
    assert!(text.contains("customer_id"), "{text}");
    std::fs::remove_file(p.dir.path().join("sql/t/silver/wrong.sql")).unwrap();

    // And the pipeline runs end to end on a server again.
    let s = server(FixtureOptions::default());
    set_port(&p, s.port);
    run_all(&p, "2026-11-02", "r1", 0);
    let n = p
        .scalar(
            &[("t", "silver/tracking"), ("b", "bronze/shipments")],
            "SELECT (SELECT COUNT(*) FROM t) - (SELECT COUNT(*) FROM b)",
        )
        .await;
    assert_eq!(n, 0);
    let n = p
        .scalar(&[("t", "silver/big_clean")], "SELECT COUNT(*) FROM t")
        .await;
    assert!(n > 0);
}

#[test]
fn extraction_compares_the_source_with_its_contract() {
    let s = server(FixtureOptions::default());
    let p = project(&s, &[BIG], "");
    expect(&p, &["source", "sync", "{p}"], 0);
    let file = p.dir.path().join("schemas/t/big.toml");
    let original = std::fs::read_to_string(&file).unwrap();

    // The source has a column the contract lacks: added (default policy), logged by name.
    let start = original.find("name = \"ref\"").unwrap();
    let start = original[..start].rfind("[[columns]]").unwrap();
    let without_ref = original[..start].to_string();
    std::fs::write(&file, &without_ref).unwrap();
    let text = extract(&p, "a", 0);
    assert!(text.contains("column `ref` added"), "{text}");
    let text = expect(&p, &["source", "sync", "{p}", "--check"], 2);
    assert!(text.contains("column `ref` added"), "{text}");
    assert!(text.contains("out of date"), "{text}");

    // The contract says bigint where the source has int: a type change, refused.
    let changed = without_ref.replace(
        "name = \"qty\"\nsource_type = \"int\"\narrow_type = \"Int32\"",
        "name = \"qty\"\nsource_type = \"bigint\"\narrow_type = \"Int64\"",
    );
    assert_ne!(changed, without_ref, "{without_ref}");
    std::fs::write(&file, &changed).unwrap();
    let text = extract(&p, "b", 2);
    assert!(text.contains("`qty`"), "{text}");
    assert!(text.contains("schemas/t/big.toml"), "{text}");
    assert!(text.contains("source sync"), "{text}");
    assert!(
        !p.lake().join("landing/big/run=b/_manifest.json").exists(),
        "nothing lands when the contract check fails"
    );

    // `fail` refuses even an added column.
    std::fs::write(&file, &without_ref).unwrap();
    let toml = std::fs::read_to_string(p.pipeline()).unwrap();
    std::fs::write(
        p.pipeline(),
        toml.replace(
            "key = [\"id\"]",
            "key = [\"id\"]\non_schema_change = \"fail\"",
        ),
    )
    .unwrap();
    let text = extract(&p, "c", 2);
    assert!(text.contains("`on_schema_change = \"fail\"`"), "{text}");

    // Re-syncing shows the diff and makes the contract current again.
    let text = expect(&p, &["source", "sync", "{p}"], 0);
    assert!(text.contains("big.toml: updated"), "{text}");
    assert!(text.contains("column `ref` added"), "{text}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
    extract(&p, "c", 0);
}

fn set_model(p: &Project, sql: &str) {
    let dir = p.dir.path().join("sql/t/silver");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("events.sql"), sql).unwrap();
}

const MODEL_HEAD: &str = "-- materialized: append\n";

fn model(header: &str, cols: &str) -> String {
    format!(
        "{MODEL_HEAD}{header}SELECT shipment_id, {cols} FROM bronze.shipments WHERE _run_id = {{{{ run_id }}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn incremental_models_follow_on_schema_change() {
    let p = Project::custom(ONE_TABLE, &[]);
    let q = |sql: &'static str| (sql, [("e", "silver/events")]);
    set_model(
        &p,
        &model("", "CAST(1 AS BIGINT) AS v, CAST(1 AS INT) AS w"),
    );
    run_all(&p, "2026-01-02", "r1", 0);
    let r1 = p
        .scalar(&[("e", "silver/events")], "SELECT COUNT(*) FROM e")
        .await;
    assert!(r1 > 0);

    // Added column: merged into the table; the old rows hold NULL.
    set_model(
        &p,
        &model(
            "",
            "CAST(1 AS BIGINT) AS v, CAST(1 AS INT) AS w, 'x' AS extra",
        ),
    );
    run_all(&p, "2026-01-03", "r2", 0);
    let (sql, t) = q("SELECT COUNT(*) FROM e WHERE extra IS NULL");
    assert_eq!(p.scalar(&t, sql).await, r1);
    // Removed column: kept in the table, NULL from then on.
    set_model(
        &p,
        &model("", "CAST(1 AS BIGINT) AS v, CAST(1 AS INT) AS w"),
    );
    run_all(&p, "2026-01-04", "r3", 0);
    let (sql, t) = q("SELECT COUNT(*) FROM e WHERE extra = 'x'");
    let r2 = p.scalar(&t, sql).await;
    assert!(r2 > 0);
    let total = p
        .scalar(&[("e", "silver/events")], "SELECT COUNT(*) FROM e")
        .await;
    let (sql, t) = q("SELECT COUNT(*) FROM e WHERE extra IS NULL");
    assert_eq!(p.scalar(&t, sql).await, total - r2);

    // A lossless widening is refused by the default policy, applied by sync_all_columns.
    set_model(
        &p,
        &model("", "CAST(1 AS BIGINT) AS v, CAST(2 AS BIGINT) AS w"),
    );
    let text = run_all(&p, "2026-01-05", "r4", 2);
    assert!(text.contains("silver/events.sql"), "{text}");
    assert!(text.contains("`w`"), "{text}");
    assert!(text.contains("Int32") && text.contains("Int64"), "{text}");
    assert!(text.contains("--full-refresh"), "{text}");
    let after_refusal = p
        .scalar(&[("e", "silver/events")], "SELECT COUNT(*) FROM e")
        .await;
    assert_eq!(after_refusal, total, "a refused change writes nothing");
    set_model(
        &p,
        &model(
            "-- on_schema_change: sync_all_columns\n",
            "CAST(1 AS BIGINT) AS v, CAST(2 AS BIGINT) AS w",
        ),
    );
    run_all(&p, "2026-01-05", "r4", 0);
    let batches = p
        .query(&[("e", "silver/events")], "SELECT w FROM e LIMIT 1")
        .await;
    assert_eq!(
        batches[0].schema().field(0).data_type(),
        &arrow::datatypes::DataType::Int64
    );
    let (sql, t) = q("SELECT COUNT(*) FROM e WHERE w = 1");
    assert_eq!(
        p.scalar(&t, sql).await,
        total,
        "old values survive the widening"
    );

    // A lossy change is refused whatever the policy: BIGINT → DOUBLE would round 10.5.
    set_model(
        &p,
        &model(
            "-- on_schema_change: sync_all_columns\n",
            "CAST(10.5 AS DOUBLE) AS v, CAST(2 AS BIGINT) AS w",
        ),
    );
    let text = run_all(&p, "2026-01-06", "r5", 2);
    assert!(text.contains("`v`") && text.contains("Float64"), "{text}");
    assert!(!text.contains("internal error"), "{text}");
    // `fail` refuses an added column.
    set_model(
        &p,
        &model(
            "-- on_schema_change: fail\n",
            "CAST(1 AS BIGINT) AS v, CAST(2 AS BIGINT) AS w, 1 AS more",
        ),
    );
    let text = run_all(&p, "2026-01-06", "r5", 2);
    assert!(text.contains("column `more` added"), "{text}");

    // --full-refresh rebuilds the table with the new types.
    set_model(
        &p,
        &model("", "CAST(10.5 AS DOUBLE) AS v, CAST(2 AS BIGINT) AS w"),
    );
    expect(
        &p,
        &[
            "run",
            "{p}",
            "--layer",
            "silver",
            "--logical-date",
            "2026-01-06",
            "--run-id",
            "r5",
            "--full-refresh",
        ],
        0,
    );
    let (sql, t) = q("SELECT COUNT(*) FROM e WHERE v = 10.5");
    let rebuilt = p.scalar(&t, sql).await;
    assert!(rebuilt > 0);
    // Retrying that run id (as Airflow does) appends nothing on top of the rebuilt table.
    run_all(&p, "2026-01-06", "r5", 0);
    let total = p
        .scalar(&[("e", "silver/events")], "SELECT COUNT(*) FROM e")
        .await;
    assert_eq!(total, rebuilt, "the retry appended again");

    // A mistyped model name is a usage error, not a skipped task.
    let text = expect(&p, &["run", "{p}", "--models", "evnts"], 2);
    assert!(text.contains("unknown model(s) `evnts`"), "{text}");
    assert!(text.contains("silver.events"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bronze_tables_evolve_with_the_source() {
    let s = server(FixtureOptions::default());
    let table = |query: &str, extra: &str| {
        format!("name = \"big\"\nquery = \"{query}\"\nkey = [\"id\"]\n{extra}")
    };
    let p = project(
        &s,
        &[&table(
            "SELECT id, CAST(qty AS int) AS qty, code FROM dbo.Big",
            "",
        )],
        "",
    );
    let layers = |p: &Project, run: &str, want: i32| -> String {
        let mut text = String::new();
        for layer in ["extract", "bronze"] {
            let out = smelter(
                p,
                &[
                    "run",
                    "{p}",
                    "--layer",
                    layer,
                    "--logical-date",
                    "2026-11-02",
                    "--run-id",
                    run,
                ],
            );
            text = out_text(&out);
            if code(&out) != 0 {
                assert_eq!(code(&out), want, "{layer} {run}:\n{text}");
                return text;
            }
        }
        assert_eq!(want, 0, "{text}");
        text
    };
    layers(&p, "r1", 0);
    let rows = p
        .scalar(&[("b", "bronze/big")], "SELECT COUNT(*) FROM b")
        .await;
    assert!(rows > 0);

    let set_table = |t: String| {
        let toml = std::fs::read_to_string(p.pipeline()).unwrap();
        let start = toml.find("name = \"big\"").unwrap();
        let end = start + toml[start..].find("[storage]").unwrap();
        std::fs::write(
            p.pipeline(),
            format!("{}{t}\n{}", &toml[..start], &toml[end..]),
        )
        .unwrap();
    };
    // Widened and a new column: refused by the default policy, naming table and column.
    set_table(table(
        "SELECT id, CAST(qty AS bigint) AS qty, code, name FROM dbo.Big",
        "",
    ));
    let text = layers(&p, "r2", 2);
    assert!(
        text.contains("bronze.big") && text.contains("`qty`"),
        "{text}"
    );
    set_table(table(
        "SELECT id, CAST(qty AS bigint) AS qty, code, name FROM dbo.Big",
        "on_schema_change = \"sync_all_columns\"",
    ));
    layers(&p, "r2", 0);
    let n = p
        .scalar(
            &[("b", "bronze/big")],
            "SELECT COUNT(*) FROM b WHERE name IS NULL AND _run_id = 'r1'",
        )
        .await;
    assert_eq!(n, rows);
    let batches = p
        .query(&[("b", "bronze/big")], "SELECT qty FROM b LIMIT 1")
        .await;
    assert_eq!(
        batches[0].schema().field(0).data_type(),
        &arrow::datatypes::DataType::Int64
    );
    // A removed column stays, NULL from then on.
    set_table(table(
        "SELECT id, CAST(qty AS bigint) AS qty, name FROM dbo.Big",
        "on_schema_change = \"sync_all_columns\"",
    ));
    layers(&p, "r3", 0);
    let n = p
        .scalar(
            &[("b", "bronze/big")],
            "SELECT COUNT(*) FROM b WHERE _run_id = 'r3' AND code IS NOT NULL",
        )
        .await;
    assert_eq!(n, 0);
    // Narrowing is refused whatever the policy.
    set_table(table(
        "SELECT id, CAST(qty AS smallint) AS qty, name FROM dbo.Big",
        "on_schema_change = \"sync_all_columns\"",
    ));
    let text = layers(&p, "r4", 2);
    assert!(text.contains("`qty`") && text.contains("Int16"), "{text}");
    let total = p
        .scalar(&[("b", "bronze/big")], "SELECT COUNT(*) FROM b")
        .await;
    assert_eq!(total, 3 * rows);
}

const FILES_PIPELINE: &str = r#"
name = "t"
[source]
type = "files"
root = "incoming"
[[source.tables]]
name = "orders"
path = "orders/*.csv"
[storage]
root = "lake"
"#;

/// The contract after hand edits: `id` NOT NULL, `amount` declared `decimal(18,2)` (inferred
/// Float64, values with two decimals), `code` declared `varchar(2)` (values fit), `note`
/// declared Int64 (values are words: cannot be kept), plus a key and a watermark the pipeline
/// does not set.
const HAND_EDITED: &str = r#"
table = "orders"
source = "files:orders/*.csv"
key = ["id"]
watermark = "id"

[[columns]]
name = "id"
arrow_type = "Int64"
nullable = false

[[columns]]
name = "amount"
source_type = "decimal(18,2)"
arrow_type = "Decimal128(18, 2)"
nullable = true

[[columns]]
name = "code"
source_type = "varchar(2)"
arrow_type = "Utf8"
nullable = true

[[columns]]
name = "note"
arrow_type = "Int64"
nullable = true
"#;

#[test]
fn source_sync_keeps_hand_edits_the_source_agrees_with() {
    let p = Project::custom(FILES_PIPELINE, &[]);
    let csv = p.dir.path().join("incoming/orders/a.csv");
    std::fs::create_dir_all(csv.parent().unwrap()).unwrap();
    std::fs::write(
        &csv,
        "id,amount,code,note\n1,10.25,AB,hello\n2,7.50,CD,world\n",
    )
    .unwrap();
    let sync = |args: &[&str], want: i32| expect_code(&p.smelter(args), args, want);
    let file = p.dir.path().join("schemas/t/orders.toml");

    sync(&["source", "sync", "{p}"], 0);
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(written.contains("arrow_type = \"Float64\""), "{written}");

    std::fs::write(&file, HAND_EDITED).unwrap();
    // Only `note` would change: --check says so with exit 2, and says what it keeps and why.
    let text = sync(&["source", "sync", "{p}", "--check"], 2);
    assert!(text.contains("differs from the source"), "{text}");
    for want in [
        "kept `id` NOT NULL",
        "kept `amount`: decimal(18,2)",
        "kept `code`: varchar(2)",
        "replaced `note`",
        "changed type",
        "kept key [\"id\"]",
        "kept watermark `id`",
    ] {
        assert!(text.contains(want), "missing {want:?}:\n{text}");
    }
    assert!(!text.contains("`amount`: Float64"), "{text}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), HAND_EDITED);

    sync(&["source", "sync", "{p}"], 0);
    let merged = std::fs::read_to_string(&file).unwrap();
    for want in [
        "arrow_type = \"Decimal128(18, 2)\"",
        "source_type = \"decimal(18,2)\"",
        "source_type = \"varchar(2)\"",
        "key = [\"id\"]",
        "watermark = \"id\"",
    ] {
        assert!(merged.contains(want), "missing {want:?}:\n{merged}");
    }
    assert!(!merged.contains("\"Float64\""), "{merged}");
    let note = &merged[merged.find("name = \"note\"").unwrap()..];
    assert!(note.contains("arrow_type = \"Utf8\""), "{merged}");
    let id = &merged[merged.find("name = \"id\"").unwrap()..];
    assert!(
        id[..id.find("[[columns]]").unwrap()].contains("nullable = false"),
        "{merged}"
    );
    let text = sync(&["source", "sync", "{p}", "--check"], 0);
    assert!(text.contains("unchanged"), "{text}");

    // The source changes: a value no longer fits varchar(2), and a column is added. Only those
    // change in the contract; the decimal and the NOT NULL stay.
    std::fs::write(
        &csv,
        "id,amount,code,note,extra\n1,10.25,ABC,hello,x\n2,7.50,CD,world,y\n",
    )
    .unwrap();
    let text = sync(&["source", "sync", "{p}", "--check"], 2);
    assert!(text.contains("replaced `code`"), "{text}");
    assert!(text.contains("ABC"), "{text}");
    assert!(text.contains("extra"), "{text}");
    sync(&["source", "sync", "{p}"], 0);
    let merged = std::fs::read_to_string(&file).unwrap();
    assert!(merged.contains("name = \"extra\""), "{merged}");
    assert!(!merged.contains("varchar(2)"), "{merged}");
    assert!(merged.contains("Decimal128(18, 2)"), "{merged}");
}
