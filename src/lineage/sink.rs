//! Where lineage goes: files (DataHub MCP JSON arrays, OpenLineage JSON lines) and HTTP endpoints
//! (DataHub GMS `ingestProposalBatch`, an OpenLineage collector). HTTP requests are retried with
//! exponential backoff on 429, 5xx and connection errors; tokens come from env vars and are never
//! logged.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use url::Url;

/// The largest REST request body DataHub accepts comfortably.
pub const MAX_BATCH_BYTES: usize = 15 * 1024 * 1024;

/// Env var holding the DataHub GMS bearer token.
pub const DATAHUB_TOKEN_ENV: &str = "DATAHUB_GMS_TOKEN";

/// Env var holding the OpenLineage collector's bearer token.
pub const OPENLINEAGE_TOKEN_ENV: &str = "OPENLINEAGE_API_KEY";

/// Writes `body` to `path`, creating its directory.
pub fn write_file(path: &Path, body: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, body)
}

/// Splits MCPs into REST batches of at most `max_count` proposals and `max_bytes` of JSON.
pub fn batches(proposals: Vec<Value>, max_count: usize, max_bytes: usize) -> Vec<Vec<Value>> {
    let mut out: Vec<Vec<Value>> = Vec::new();
    let mut size = 0;
    for p in proposals {
        let len = p.to_string().len() + 1;
        let full = out
            .last()
            .is_none_or(|b| b.len() >= max_count || size + len > max_bytes);
        if full {
            out.push(Vec::new());
            size = 0;
        }
        size += len;
        out.last_mut().expect("a batch").push(p);
    }
    out
}

/// An MCP in the file format (`aspect.json`) as the REST API wants it (`aspect.value` as a JSON
/// string with its content type).
pub fn rest_proposal(mcp: &Value) -> Value {
    let mut p = mcp.clone();
    if let Some(aspect) = mcp.get("aspect").and_then(|a| a.get("json")) {
        p["aspect"] = json!({
            "value": aspect.to_string(),
            "contentType": "application/json",
        });
    }
    p
}

/// Sends MCPs to DataHub GMS at `gms` in batches; returns the number of requests made.
pub async fn datahub_rest(
    gms: &Url,
    mcps: &[Value],
    batch_size: usize,
    retries: u32,
) -> Result<usize, String> {
    let url = gms
        .join("aspects?action=ingestProposalBatch")
        .map_err(|e| e.to_string())?;
    let proposals = mcps.iter().map(rest_proposal).collect();
    let batches = batches(proposals, batch_size, MAX_BATCH_BYTES);
    for batch in &batches {
        let body = json!({ "proposals": batch }).to_string().into_bytes();
        post(
            &url,
            body,
            &[("X-RestLi-Protocol-Version", "2.0.0")],
            DATAHUB_TOKEN_ENV,
            retries,
        )
        .await?;
    }
    Ok(batches.len())
}

/// POSTs one JSON body to `url`, with a bearer token from `token_env` when it is set, retrying
/// 429, 5xx and connection errors up to `attempts` times with exponential backoff.
pub async fn post(
    url: &Url,
    body: Vec<u8>,
    headers: &[(&str, &str)],
    token_env: &str,
    attempts: u32,
) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let token = std::env::var(token_env).ok().filter(|t| !t.is_empty());
    let shown = crate::storage::redact(url);
    let mut delay = Duration::from_millis(200);
    let mut last = String::new();
    for attempt in 1..=attempts.max(1) {
        let mut req = client
            .post(url.clone())
            .header("Content-Type", "application/json")
            .body(body.clone());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                last = format!(
                    "{shown} answered {status}: {}",
                    crate::storage::scrub(&text.chars().take(300).collect::<String>())
                );
                if !(status.as_u16() == 429 || status.is_server_error()) {
                    return Err(last);
                }
            }
            Err(e) => {
                last = format!(
                    "{shown}: {}",
                    crate::storage::scrub(&e.without_url().to_string())
                )
            }
        }
        if attempt < attempts {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
    Err(format!("{last} (after {attempts} attempts)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_count_and_byte_limits_and_keep_order() {
        let mcps: Vec<Value> = (0..10)
            .map(|i| json!({ "n": i, "pad": "x".repeat(90) }))
            .collect();
        let one = mcps[0].to_string().len() + 1;
        let by_count = batches(mcps.clone(), 4, usize::MAX);
        assert_eq!(by_count.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 2]);
        let by_bytes = batches(mcps.clone(), 200, one * 3);
        assert_eq!(
            by_bytes.iter().map(Vec::len).collect::<Vec<_>>(),
            [3, 3, 3, 1]
        );
        let flat: Vec<Value> = by_bytes.into_iter().flatten().collect();
        assert_eq!(flat, mcps);
    }

    #[test]
    fn rest_proposals_carry_the_aspect_as_a_json_string() {
        let mcp = json!({ "entityUrn": "urn:li:x", "aspect": { "json": { "a": 1 } } });
        let p = rest_proposal(&mcp);
        assert_eq!(p["aspect"]["contentType"], "application/json");
        assert_eq!(p["aspect"]["value"], "{\"a\":1}");
        assert_eq!(p["entityUrn"], "urn:li:x");
    }
}
