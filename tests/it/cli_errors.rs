//! Config and SQL errors: exit code 2 and messages that name the file, line, column and key.

use crate::support::{code, stderr, Project, ONE_TABLE as BASE};

#[test]
fn unknown_config_key_names_the_key_and_choices() {
    let toml = BASE.replace("scale_factor = 0.002", "scale_factr = 0.002");
    let p = Project::custom(&toml, &[]);
    let out = p.smelter(&["validate", "{p}"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("t.toml"), "{err}");
    assert!(err.contains("unknown field `scale_factr`"), "{err}");
    assert!(err.contains("scale_factor"), "valid choices listed: {err}");
    // A secret put where a variable name belongs is never echoed back.
    let toml = format!(
        "{BASE}\n[format]\ntable = \"iceberg\"\n[format.iceberg]\ncatalog = \"rest\"\n\
         uri = \"http://127.0.0.1:1\"\ntoken = \"tok-supersecret-1234\"\n"
    );
    let p = Project::custom(&toml, &[]);
    let out = p.smelter(&["validate", "{p}"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("unknown field `token`"), "{err}");
    assert!(err.contains("token_env"), "valid choices listed: {err}");
    assert!(err.contains("line "), "{err}");
    assert!(!err.contains("supersecret"), "{err}");
}

#[test]
fn bad_values_are_all_reported_at_once() {
    let toml = BASE
        .replace("type = \"sample\"", "type = \"oracle\"")
        .replace("name = \"shipments\"", "name = \"shipment\"")
        + "[[schedule]]\ncron = \"0 2 * * *\"\ninterval_seconds = 60\n";
    let p = Project::custom(&toml, &[]);
    let out = p.smelter(&["validate", "{p}"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains("key `source.type`") && err.contains("oracle"),
        "{err}"
    );
    assert!(err.contains("did you mean `shipments`"), "{err}");
    assert!(err.contains("key `schedule[0]`"), "{err}");
}

#[test]
fn unknown_table_names_file_line_and_suggests() {
    let p = Project::custom(
        BASE,
        &[
            ("silver/shipments.sql", "-- materialized: table\nSELECT * FROM bronze.shipments"),
            (
                "gold/daily.sql",
                "-- materialized: table\nSELECT ship_date, COUNT(*) AS n\nFROM silver.shipment\nGROUP BY ship_date",
            ),
        ],
    );
    let out = p.smelter(&["validate", "{p}"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains("sql/t/gold/daily.sql:3:6: unknown table `silver.shipment`"),
        "{err}"
    );
    assert!(err.contains("did you mean `silver.shipments`?"), "{err}");
}

#[test]
fn cycles_are_reported_with_the_path() {
    let p = Project::custom(
        BASE,
        &[
            ("silver/a.sql", "SELECT * FROM silver.b"),
            ("silver/b.sql", "SELECT * FROM silver.a"),
        ],
    );
    let out = p.smelter(&["plan", "{p}"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("dependency cycle: silver."), "{err}");
    assert!(
        err.contains("sql/t/silver/a.sql") && err.contains("sql/t/silver/b.sql"),
        "{err}"
    );
}

#[test]
fn syntax_errors_carry_file_line_and_column() {
    let p = Project::custom(
        BASE,
        &[(
            "silver/shipments.sql",
            "-- materialized: table\nSELECT shipment_id,\n  FROM FROM bronze.shipments",
        )],
    );
    let out = p.smelter(&["validate", "{p}"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("sql/t/silver/shipments.sql:3:"), "{err}");
}

#[test]
fn unknown_columns_are_found_by_planning() {
    let p = Project::custom(
        BASE,
        &[(
            "silver/shipments.sql",
            "-- materialized: merge\n-- unique_key: shipment_id\nSELECT shipment_id,\n       weight_lbs\nFROM bronze.shipments",
        )],
    );
    let out = p.smelter(&["validate", "{p}"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("sql/t/silver/shipments.sql:4:8"), "{err}");
    assert!(err.contains("weight_lbs"), "{err}");
}

#[test]
fn header_errors_name_the_line() {
    let p = Project::custom(
        BASE,
        &[(
            "silver/shipments.sql",
            "-- materialized: upsert\nSELECT * FROM bronze.shipments",
        )],
    );
    let out = p.smelter(&["validate", "{p}"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains("sql/t/silver/shipments.sql:1: unknown materialization `upsert`"),
        "{err}"
    );
}

#[test]
fn demo_validates_and_plans() {
    let p = Project::demo(0.002);
    let out = p.ok(&["validate", "{p}"]);
    assert!(out.contains("ok (6 source tables, 11 models)"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&p.ok(&["plan", "{p}", "--format", "json"])).unwrap();
    let names: Vec<&str> = json["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    let pos = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .unwrap_or_else(|| panic!("{n} in {names:?}"))
    };
    assert!(pos("silver.shipments") < pos("silver.shipments_enriched"));
    assert!(pos("silver.shipments_enriched") < pos("gold.on_time_delivery"));
    assert_eq!(json["schedules"][0]["cron"], "0 2 * * *");
    let mermaid = p.ok(&["plan", "{p}", "--format", "mermaid"]);
    assert!(
        mermaid.contains("silver_shipments --> silver_shipments_enriched"),
        "{mermaid}"
    );
}

#[test]
fn nested_and_shadowing_ctes_are_not_tables_but_unknown_tables_are_errors() {
    let p = Project::demo(0.002);
    let model = p.dir.path().join("sql/demo/gold/carrier_shipments.sql");
    // A CTE inside a derived table, a CTE named like a table, an outer CTE read from an EXISTS
    // subquery and from both sides of a UNION.
    std::fs::write(
        &model,
        "-- materialized: table
WITH shipments AS (SELECT carrier_id, shipment_id FROM silver.shipments)
SELECT t.carrier_id, t.n
FROM (
    WITH per_carrier AS (SELECT carrier_id, COUNT(*) AS n FROM shipments GROUP BY carrier_id)
    SELECT * FROM per_carrier
) t
WHERE EXISTS (SELECT 1 FROM shipments s WHERE s.carrier_id = t.carrier_id)
UNION ALL
SELECT carrier_id, 0 FROM shipments WHERE shipment_id IS NULL
",
    )
    .unwrap();
    let out = p.ok(&["validate", "{p}"]);
    assert!(out.contains("ok (6 source tables, 12 models)"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&p.ok(&["plan", "{p}", "--format", "json"])).unwrap();
    let deps = json["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "gold.carrier_shipments")
        .map(|m| m["depends_on"].clone());
    assert_eq!(
        deps,
        Some(serde_json::json!(["silver.shipments"])),
        "{json}"
    );

    // A real unknown table inside the nested CTE is still reported at its line and column.
    let sql = std::fs::read_to_string(&model).unwrap();
    std::fs::write(
        &model,
        sql.replace("FROM shipments GROUP BY", "FROM silver.shipment GROUP BY"),
    )
    .unwrap();
    let out = p.smelter(&["validate", "{p}"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("sql/demo/gold/carrier_shipments.sql:5:64: unknown table `silver.shipment`; did you mean `silver.shipments`?"),
        "{err}"
    );
}

/// A silver model whose column is `timestamp - timestamp` (an Arrow Duration).
const DURATION_MODEL: &str = "-- materialized: table
SELECT shipment_id,
       delivered_at - created_at AS transit
FROM bronze.shipments";

#[test]
fn validate_refuses_output_types_delta_cannot_store_and_the_hint_fixes_it() {
    let p = Project::custom(BASE, &[("silver/transit.sql", DURATION_MODEL)]);
    let out = p.smelter(&["validate", "{p}"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("sql/t/silver/transit.sql: column `transit` has type Duration("),
        "{err}"
    );
    assert!(err.contains("CAST(<expr> AS BIGINT)"), "{err}");
    assert!(err.contains("EXTRACT(EPOCH FROM <expr>)"), "{err}");

    // Both suggested fixes plan and pass.
    let fixed = DURATION_MODEL.replace(
        "delivered_at - created_at AS transit",
        "CAST(delivered_at - created_at AS BIGINT) AS transit_us,\n       EXTRACT(EPOCH FROM delivered_at - created_at) AS transit_s",
    );
    std::fs::write(p.dir.path().join("sql/t/silver/transit.sql"), fixed).unwrap();
    p.ok(&["validate", "{p}"]);
}

#[test]
fn run_refuses_unstorable_types_before_creating_the_table() {
    let p = Project::custom(BASE, &[("silver/transit.sql", DURATION_MODEL)]);
    let out = p.smelter(&[
        "run",
        "{p}",
        "--logical-date",
        "2026-11-03",
        "--run-id",
        "r1",
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("sql/t/silver/transit.sql: column `transit` has type Duration("),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    assert!(
        p.lake().join("bronze/shipments").exists(),
        "bronze ran first"
    );
    assert!(
        !p.lake().join("silver/transit").exists(),
        "a table folder was left behind"
    );
}
