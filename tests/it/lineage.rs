//! Column lineage from DataFusion plans, checked against hand-derived mappings for the demo
//! models and for joins, aggregates, CASE, window functions, UNION and CTEs.

use serde_json::Value;

use crate::support::Project;

fn lineage(p: &Project) -> Value {
    let out = p.ok(&["plan", "{p}", "--lineage", "--format", "json"]);
    serde_json::from_str::<Value>(&out).unwrap()["models"].clone()
}

/// `(table.column, KIND)` pairs of one column's `inputs` or `sources`, sorted.
fn refs(models: &Value, model: &str, column: &str, which: &str) -> Vec<String> {
    let cols = models[model]["columns"]
        .as_array()
        .unwrap_or_else(|| panic!("{model}"));
    let col = cols
        .iter()
        .find(|c| c["name"] == column)
        .unwrap_or_else(|| panic!("{model}.{column}"));
    let mut v: Vec<String> = col[which]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}.{} {}",
                r["table"].as_str().unwrap(),
                r["column"].as_str().unwrap(),
                r.get("kind").unwrap_or(&r["subtype"]).as_str().unwrap()
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn demo_gold_columns_trace_back_to_source_columns() {
    let p = Project::demo(0.002);
    let m = lineage(&p);
    assert_eq!(
        refs(&m, "gold.revenue_by_customer", "invoiced_amount", "sources"),
        vec!["LogisticsDB.dbo.invoices.amount AGGREGATE"]
    );
    assert_eq!(
        refs(
            &m,
            "gold.daily_shipments_by_carrier",
            "carrier_code",
            "inputs"
        ),
        vec!["silver.shipments_enriched.carrier_code IDENTITY"]
    );
    assert_eq!(
        refs(
            &m,
            "gold.daily_shipments_by_carrier",
            "carrier_code",
            "sources"
        ),
        vec!["LogisticsDB.dbo.carriers.carrier_code TRANSFORM"]
    );
    // A count of rows meeting a CASE condition over two columns: the columns decide the value
    // (indirect, CONDITIONAL) without flowing into it.
    assert_eq!(
        refs(&m, "gold.on_time_delivery", "on_time_rate", "sources"),
        Vec::<String>::new()
    );
    assert_eq!(
        refs(&m, "gold.on_time_delivery", "on_time_rate", "indirect"),
        vec![
            "silver.shipments_enriched.delivered_date CONDITIONAL",
            "silver.shipments_enriched.promised_date CONDITIONAL"
        ]
    );
    assert_eq!(
        refs(
            &m,
            "gold.on_time_delivery",
            "on_time_rate",
            "indirect_sources"
        ),
        vec![
            "LogisticsDB.dbo.shipments.delivered_at CONDITIONAL",
            "LogisticsDB.dbo.shipments.promised_date CONDITIONAL"
        ]
    );
    assert_eq!(
        refs(&m, "silver.shipments", "shipment_id", "inputs"),
        vec!["bronze.shipments.shipment_id IDENTITY"]
    );
    assert_eq!(
        refs(&m, "silver.shipments", "status", "inputs"),
        vec!["bronze.shipments.status TRANSFORM"]
    );
    // The dedup window and the run filter are indirect dependencies of the whole model.
    let indirect: Vec<String> = m["silver.shipments"]["indirect"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| format!("{}.{} {}", v["table"], v["column"], v["subtype"]).replace('"', ""))
        .collect();
    assert!(
        indirect.contains(&"bronze.shipments.modified_at WINDOW".to_string()),
        "{indirect:?}"
    );
    assert!(
        indirect.contains(&"bronze.shipments._run_id FILTER".to_string()),
        "{indirect:?}"
    );
    // Joined columns come from the joined table.
    assert_eq!(
        refs(&m, "silver.shipments_enriched", "customer_name", "inputs"),
        vec!["silver.customers.customer_name IDENTITY"]
    );
    // The history columns of the scd2 model: the version's start is the version column, its
    // end the next version's start (LEAD over the key's versions), the flag and the surrogate
    // key follow from the key and the version column.
    let h = "silver.customers_history";
    assert_eq!(
        refs(&m, h, "valid_from", "inputs"),
        vec!["bronze.customers.modified_at IDENTITY"]
    );
    for column in ["valid_to", "is_current"] {
        assert_eq!(
            refs(&m, h, column, "inputs"),
            vec!["bronze.customers.modified_at TRANSFORM"],
            "{column}"
        );
        assert_eq!(
            refs(&m, h, column, "indirect"),
            vec![
                "bronze.customers.customer_id WINDOW",
                "bronze.customers.modified_at WINDOW"
            ],
            "{column}"
        );
        assert_eq!(
            refs(&m, h, column, "sources"),
            vec!["LogisticsDB.dbo.customers.modified_at TRANSFORM"],
            "{column}"
        );
    }
    assert_eq!(
        refs(&m, h, "_scd_id", "inputs"),
        vec![
            "bronze.customers.customer_id TRANSFORM",
            "bronze.customers.modified_at TRANSFORM"
        ]
    );
    assert_eq!(
        refs(&m, h, "segment", "inputs"),
        vec!["bronze.customers.segment IDENTITY"]
    );
    // Metadata columns have no source column.
    let table = p.ok(&["plan", "{p}", "--lineage"]);
    assert!(
        table.contains("gold.revenue_by_customer.invoiced_amount"),
        "{table}"
    );
}

#[test]
fn union_cte_window_and_case() {
    let toml = r#"
name = "t"
[source]
type = "sample"
scale_factor = 0.002
[[source.tables]]
name = "shipments"
[[source.tables]]
name = "invoices"
[storage]
root = "lake"
"#;
    let p = Project::custom(
        toml,
        &[(
            "silver/mix.sql",
            "WITH s AS (SELECT shipment_id AS id, weight_kg AS w FROM bronze.shipments),\n\
             i AS (SELECT shipment_id AS id, amount AS w FROM bronze.invoices)\n\
             SELECT id, CASE WHEN w > 0 THEN w ELSE 0 END AS w_pos,\n\
                    SUM(w) OVER (PARTITION BY id) AS w_total\n\
             FROM (SELECT id, w FROM s UNION ALL SELECT id, w FROM i) u",
        )],
    );
    let m = lineage(&p);
    assert_eq!(
        refs(&m, "silver.mix", "id", "inputs"),
        vec![
            "bronze.invoices.shipment_id IDENTITY",
            "bronze.shipments.shipment_id IDENTITY"
        ]
    );
    assert_eq!(
        refs(&m, "silver.mix", "w_pos", "inputs"),
        vec![
            "bronze.invoices.amount TRANSFORM",
            "bronze.shipments.weight_kg TRANSFORM"
        ]
    );
    assert_eq!(
        refs(&m, "silver.mix", "w_total", "inputs"),
        vec![
            "bronze.invoices.amount AGGREGATE",
            "bronze.shipments.weight_kg AGGREGATE"
        ]
    );
}

#[test]
fn demo_run_writes_datahub_mcps_with_fine_grained_lineage() {
    let p = Project::demo(0.002);
    p.ok(&[
        "run",
        "{p}",
        "--logical-date",
        "2026-10-31",
        "--run-id",
        "l1",
    ]);
    let file = p.dir.path().join("lineage/l1/gold.json");
    let mcps: Vec<Value> = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let upstream = mcps
        .iter()
        .find(|m| {
            m["aspectName"] == "upstreamLineage"
                && m["entityUrn"]
                    .as_str()
                    .unwrap()
                    .contains("gold/revenue_by_customer")
        })
        .expect("upstreamLineage for gold.revenue_by_customer");
    let fine = upstream["aspect"]["json"]["fineGrainedLineages"]
        .as_array()
        .unwrap();
    let amount = fine
        .iter()
        .find(|f| {
            f["downstreams"][0]
                .as_str()
                .unwrap()
                .ends_with(",invoiced_amount)")
        })
        .unwrap();
    assert_eq!(amount["transformOperation"], "AGGREGATE");
    assert!(
        amount["upstreams"][0]
            .as_str()
            .unwrap()
            .contains("silver/invoices"),
        "{amount}"
    );
    let events: Vec<&Value> = mcps
        .iter()
        .filter(|m| m["aspectName"] == "dataProcessInstanceRunEvent")
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["aspect"]["json"]["result"]["type"], "SUCCESS");
    let bronze: Vec<Value> = serde_json::from_slice(
        &std::fs::read(p.dir.path().join("lineage/l1/bronze.json")).unwrap(),
    )
    .unwrap();
    assert!(bronze.iter().any(|m| m["aspectName"] == "upstreamLineage"
        && m["aspect"]["json"]["upstreams"][0]["dataset"]
            == "urn:li:dataset:(urn:li:dataPlatform:mssql,LogisticsDB.dbo.shipments,PROD)"));
}
