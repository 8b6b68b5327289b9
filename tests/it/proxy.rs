//! A fault-injecting HTTP proxy on 127.0.0.1 for storage fault tests.
//!
//! Each request is read whole, then either answered with `503 Service Unavailable` (when it
//! matches the rule and the rule has faults left) or forwarded to the upstream server with
//! `Connection: close`, so every request passes through the rule check.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Which requests fail, and how often.
#[derive(Clone)]
pub struct Rule {
    /// HTTP method to match, e.g. `PUT`.
    pub method: &'static str,
    /// Substring of the request path to match, e.g. `_delta_log/`.
    pub path_contains: &'static str,
    /// How many matching requests get a 503 (`usize::MAX`: all of them).
    pub faults: usize,
}

/// A running proxy; it stops when dropped.
pub struct FaultProxy {
    /// The proxy's port on 127.0.0.1.
    pub port: u16,
    injected: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`host:port`) applying `rule`.
    pub async fn start(upstream: String, rule: Rule) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let injected = Arc::new(AtomicUsize::new(0));
        let counter = injected.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (upstream, rule, counter) = (upstream.clone(), rule.clone(), counter.clone());
                tokio::spawn(async move {
                    let _ = serve(client, &upstream, &rule, &counter).await;
                });
            }
        });
        FaultProxy {
            port,
            injected,
            task,
        }
    }

    /// How many 503s were returned.
    pub fn injected(&self) -> usize {
        self.injected.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut client: TcpStream,
    upstream: &str,
    rule: &Rule,
    injected: &AtomicUsize,
) -> std::io::Result<()> {
    // Read the head (bounded), then the body by Content-Length.
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 8192];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 1 << 20 {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut parts = request_line.split(' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let content_length: usize = lines
        .clone()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + content_length {
        let mut chunk = vec![0u8; 65536];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if method == rule.method && path.contains(rule.path_contains) {
        let fail = injected
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < rule.faults).then_some(n + 1)
            })
            .is_ok();
        if fail {
            client
                .write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await?;
            return client.shutdown().await;
        }
    }
    // Forward with `Connection: close`, so the next request comes on a new connection.
    let mut forwarded = String::from(&request_line);
    forwarded.push_str("\r\n");
    for l in head
        .split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("connection:"))
    {
        forwarded.push_str(l);
        forwarded.push_str("\r\n");
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(upstream).await?;
    up.write_all(forwarded.as_bytes()).await?;
    up.write_all(&buf[head_end..]).await?;
    tokio::io::copy(&mut up, &mut client).await?;
    client.shutdown().await
}
