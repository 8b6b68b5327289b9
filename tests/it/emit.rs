//! Lineage emitters against a local HTTP server that captures the requests: DataHub REST
//! (`ingestProposalBatch`: headers, payload shape, batching, retry on 503), OpenLineage over HTTP,
//! a failing endpoint that must not fail the run, and `smelter lineage emit` afterwards.

use serde_json::Value;

use crate::http::Capture;
use crate::support::{code, stderr, Project};

const TOKEN: &str = "test-gms-token-8d1f2a9c";

/// The demo at a small scale with `[lineage]` pointing at `gms` (REST) and `ol` (OpenLineage).
fn project(gms: &str, ol: &str) -> Project {
    let p = Project::demo(0.002);
    let toml = std::fs::read_to_string(p.pipeline()).unwrap();
    let toml = toml.replace(
        "[lineage]\n",
        &format!(
            "[lineage]\ndatahub_rest = \"{gms}\"\ndatahub_batch_size = 7\nopenlineage_url = \"{ol}\"\n\
             retries = 3\n"
        ),
    );
    assert!(toml.contains("datahub_batch_size = 7"));
    std::fs::write(p.pipeline(), toml).unwrap();
    p
}

fn mcp_file_count(p: &Project, run_id: &str) -> usize {
    ["extract", "bronze", "silver", "gold"]
        .iter()
        .map(|layer| {
            let path = p.dir.path().join(format!("lineage/{run_id}/{layer}.json"));
            let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            serde_json::from_slice::<Value>(&body)
                .unwrap()
                .as_array()
                .unwrap()
                .len()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_and_openlineage_emitters_send_batched_authenticated_events_and_retry_503() {
    // The first two requests get a 503: the emitter must retry them.
    let server = Capture::start(2).await;
    let base = format!("http://127.0.0.1:{}", server.port);
    let p = project(&format!("{base}/"), &format!("{base}/api/v1/lineage"));
    let out = p.smelter_env(
        &[
            "run",
            "{p}",
            "--logical-date",
            "2026-11-03",
            "--run-id",
            "r1",
        ],
        &[("DATAHUB_GMS_TOKEN", TOKEN), ("OPENLINEAGE_API_KEY", TOKEN)],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stderr(&out).contains(TOKEN), "the token was logged");
    let requests = server.requests();

    let rest: Vec<_> = requests
        .iter()
        .filter(|r| r.path == "/aspects?action=ingestProposalBatch")
        .collect();
    assert!(!rest.is_empty(), "no REST requests");
    let mut proposals = 0;
    for r in &rest {
        assert_eq!(r.method, "POST");
        assert_eq!(r.header("x-restli-protocol-version"), Some("2.0.0"));
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body = r.json();
        let batch = body["proposals"].as_array().expect("proposals");
        assert!(
            !batch.is_empty() && batch.len() <= 7,
            "batch of {}",
            batch.len()
        );
        for p in batch {
            assert!(p["entityUrn"].as_str().unwrap().starts_with("urn:li:"));
            assert_eq!(p["changeType"], "UPSERT");
            assert_eq!(p["aspect"]["contentType"], "application/json");
            let inner: Value =
                serde_json::from_str(p["aspect"]["value"].as_str().expect("value is a string"))
                    .expect("value holds JSON");
            assert!(inner.is_object());
        }
        proposals += batch.len();
    }
    // Everything in the MCP files arrived over REST too, despite the 503s.
    assert_eq!(proposals, mcp_file_count(&p, "r1"));
    let aspects: Vec<String> = rest
        .iter()
        .flat_map(|r| {
            r.json()["proposals"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["aspectName"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for a in [
        "upstreamLineage",
        "schemaMetadata",
        "dataProcessInstanceRunEvent",
        "datasetProfile",
    ] {
        assert!(aspects.iter().any(|x| x == a), "no {a} sent");
    }
    // The profile sent for a gold table matches the table.
    let profile: Value = rest
        .iter()
        .flat_map(|r| r.json()["proposals"].as_array().unwrap().clone())
        .find(|p| {
            p["aspectName"] == "datasetProfile"
                && p["entityUrn"]
                    .as_str()
                    .unwrap()
                    .contains("gold/revenue_by_customer,")
        })
        .map(|p| serde_json::from_str(p["aspect"]["value"].as_str().unwrap()).unwrap())
        .expect("a datasetProfile for gold.revenue_by_customer");
    let rows = p
        .scalar(
            &[("g", "gold/revenue_by_customer")],
            "SELECT COUNT(*) FROM g",
        )
        .await;
    assert_eq!(profile["rowCount"], rows);
    let customer = profile["fieldProfiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fieldPath"] == "customer_id")
        .expect("customer_id profile");
    assert_eq!(customer["nullCount"], 0);
    assert_eq!(customer["uniqueCount"], rows);

    let ol: Vec<Value> = requests
        .iter()
        .filter(|r| r.path == "/api/v1/lineage")
        .map(|r| {
            assert_eq!(
                r.header("authorization"),
                Some(format!("Bearer {TOKEN}").as_str())
            );
            r.json()
        })
        .collect();
    for layer in ["extract", "bronze", "silver", "gold"] {
        let of_layer: Vec<&Value> = ol
            .iter()
            .filter(|e| e["job"]["name"] == format!("demo.{layer}"))
            .collect();
        let types: Vec<&str> = of_layer
            .iter()
            .map(|e| e["eventType"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["START", "COMPLETE"], "{layer}");
        assert_eq!(of_layer[0]["run"]["runId"], of_layer[1]["run"]["runId"]);
    }
    // Gold's weight column comes from silver's, which comes from bronze.
    let gold = ol
        .iter()
        .find(|e| e["job"]["name"] == "demo.gold" && e["eventType"] == "COMPLETE")
        .unwrap();
    let out = gold["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| {
            o["name"]
                .as_str()
                .unwrap()
                .ends_with("gold/daily_shipments_by_carrier")
        })
        .expect("gold output");
    assert_eq!(out["namespace"], "file");
    let fields = &out["facets"]["columnLineage"]["fields"];
    let inputs = fields["total_weight_kg"]["inputFields"].as_array().unwrap();
    assert!(
        inputs.iter().all(|i| i["name"]
            .as_str()
            .unwrap()
            .ends_with("silver/shipments_enriched")),
        "{inputs:?}"
    );
    assert_eq!(
        inputs[0]["transformations"][0]["subtype"], "AGGREGATION",
        "{inputs:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_lineage_endpoint_never_fails_the_run_and_lineage_emit_resends_later() {
    // Every request fails: the run still succeeds, with warnings.
    let down = Capture::start(usize::MAX).await;
    let base = format!("http://127.0.0.1:{}", down.port);
    let p = project(&format!("{base}/"), &format!("{base}/api/v1/lineage"));
    let out = p.smelter(&[
        "run",
        "{p}",
        "--logical-date",
        "2026-11-03",
        "--run-id",
        "r2",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("Could not emit lineage"), "{err}");
    assert!(err.contains("503"), "{err}");
    assert!(down.requests().is_empty());
    let gold_rows = p
        .scalar(
            &[("g", "gold/revenue_by_customer")],
            "SELECT COUNT(*) FROM g",
        )
        .await;
    assert!(gold_rows > 0, "the data write must stand");

    // Re-emission while the endpoint is still down fails, retryable.
    let out = p.smelter(&["lineage", "emit", "{p}", "--run-id", "r2"]);
    assert_eq!(code(&out), 75, "{}", stderr(&out));

    // Once it is back, `lineage emit` sends the run's lineage from the run log.
    drop(down);
    let up = Capture::start(0).await;
    let base = format!("http://127.0.0.1:{}", up.port);
    let toml = std::fs::read_to_string(p.pipeline()).unwrap();
    let old_port = toml
        .split("http://127.0.0.1:")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    std::fs::write(
        p.pipeline(),
        toml.replace(
            &format!("127.0.0.1:{old_port}"),
            &format!("127.0.0.1:{}", up.port),
        ),
    )
    .unwrap();
    let before = mcp_file_count(&p, "r2");
    std::fs::remove_dir_all(p.dir.path().join("lineage/r2")).unwrap();
    let out = p.ok(&["lineage", "emit", "{p}", "--run-id", "r2"]);
    assert!(out.contains("4 layers"), "{out}");
    let requests = up.requests();
    let proposals: usize = requests
        .iter()
        .filter(|r| r.path == "/aspects?action=ingestProposalBatch")
        .map(|r| r.json()["proposals"].as_array().unwrap().len())
        .sum();
    assert_eq!(proposals, before, "{base}: re-emitted MCPs differ");
    assert_eq!(mcp_file_count(&p, "r2"), before, "files rewritten");
    let ol = requests
        .iter()
        .filter(|r| r.path == "/api/v1/lineage")
        .count();
    assert_eq!(ol, 8, "START and COMPLETE for 4 layers");

    // An unknown run id has nothing to emit.
    let out = p.smelter(&["lineage", "emit", "{p}", "--run-id", "nope"]);
    assert_eq!(code(&out), 99, "{}", stderr(&out));
}
