//! Loopback HTTP servers for tests: a fault-injecting proxy for storage, and a capturing server for
//! lineage endpoints.
//!
//! The proxy reads each request whole, then either answers `503 Service Unavailable` (when it
//! matches the rule and the rule has faults left) or forwards it to the upstream server with
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
    /// Instead of a 503, forward the request and cut the response off halfway through its
    /// body, closing the connection (a network failure while a file is read).
    pub cut_body: bool,
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
    let Some(req) = read_request(&mut client).await? else {
        return Ok(());
    };
    let (method, path) = (req.method.as_str(), req.path.as_str());
    if method == rule.method && path.contains(rule.path_contains) {
        let fail = injected
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < rule.faults).then_some(n + 1)
            })
            .is_ok();
        if fail && rule.cut_body {
            let mut up = TcpStream::connect(upstream).await?;
            up.write_all(&forward(&req)).await?;
            let mut response = Vec::new();
            up.read_to_end(&mut response).await?;
            let body = response
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(0, |i| i + 4);
            client
                .write_all(&response[..body + (response.len() - body) / 2])
                .await?;
            return client.shutdown().await;
        }
        if fail {
            client
                .write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await?;
            return client.shutdown().await;
        }
    }
    let mut up = TcpStream::connect(upstream).await?;
    up.write_all(&forward(&req)).await?;
    tokio::io::copy(&mut up, &mut client).await?;
    client.shutdown().await
}

/// `req` as sent upstream, with `Connection: close`, so the next request comes on a new
/// connection.
fn forward(req: &Request) -> Vec<u8> {
    let mut forwarded = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
    for (k, v) in req.headers.iter().filter(|(k, _)| k != "connection") {
        forwarded.push_str(&format!("{k}: {v}\r\n"));
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    let mut out = forwarded.into_bytes();
    out.extend_from_slice(&req.body);
    out
}

/// One HTTP request as received.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Request {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// Reads one request (head bounded to 1 MiB, body by Content-Length); `None` on EOF.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 1 << 20 {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let path = request_line.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = vec![0u8; 65536];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(Request {
        method,
        path,
        headers,
        body: buf[head_end..head_end + length].to_vec(),
    }))
}

/// A server that records every request and answers 200, except that the first `fail_first`
/// requests get a 503 (or every request, with `usize::MAX`).
pub struct Capture {
    /// Port on 127.0.0.1.
    pub port: u16,
    requests: Arc<std::sync::Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Capture {
    /// Starts the server.
    pub async fn start(fail_first: usize) -> Capture {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind capture");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        let served = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (seen, served) = (seen.clone(), served.clone());
                tokio::spawn(async move {
                    while let Ok(Some(req)) = read_request(&mut stream).await {
                        let n = served.fetch_add(1, Ordering::SeqCst);
                        let reply: &[u8] = if n < fail_first {
                            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
                        } else {
                            seen.lock().unwrap().push(req);
                            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
                        };
                        if stream.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Capture {
            port,
            requests,
            task,
        }
    }

    /// The requests answered with 200 so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.task.abort();
    }
}
