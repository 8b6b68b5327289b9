//! A TDS 7.4 test server: real SQL Server wire protocol on 127.0.0.1, queries answered by DataFusion
//! over in-memory fixture tables.
//!
//! Flow per connection: PRELOGIN (encryption not supported) → LOGIN7 → LOGINACK + ENVCHANGE + DONE,
//! then SQL batches and RPC `sp_executesql` calls. A SELECT is lightly rewritten from T-SQL to
//! DataFusion SQL (`[x]` → `"x"`, `TOP n` → `LIMIT n`, `@P1` → `$1`, `INFORMATION_SCHEMA.COLUMNS` →
//! the fixture catalog), executed, and streamed back as COLMETADATA, ROW/NBCROW and DONE tokens;
//! failures become ERROR tokens. Other statements (`SET ...`, `BEGIN TRAN`) are acknowledged with
//! DONE. [`Faults`] injects login failures, deadlocks (1205), stalls and dropped connections.

#![allow(dead_code)]

pub mod change_tracking;
pub mod fixtures;
pub mod tpch;
pub mod types;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smelter::extract::mssql::connect::Compat;
use tokio::net::{TcpListener, TcpStream};

pub use fixtures::FixtureOptions;
use types::{encode_value, Col, SqlType};

/// Packet size before login, and the most the server grants (SQL Server's limit).
const PACKET_SIZE: usize = 4096;
const MAX_PACKET_SIZE: usize = 32_767;

/// Faults the server injects; counters say how many more times each fires.
#[derive(Debug, Default)]
pub struct Faults {
    /// Reject every login with error 18456.
    pub reject_login: AtomicBool,
    /// Drop the connection after this many rows of a matching query (0: off).
    pub drop_after_rows: AtomicU64,
    /// How many more queries get dropped.
    pub drops: AtomicU32,
    /// How many more matching queries fail with error 1205 (deadlock victim).
    pub deadlocks: AtomicU32,
    /// Stall a matching query this long before answering.
    pub stall_ms: AtomicU64,
    /// How many more matching queries stall.
    pub stalls: AtomicU32,
    /// Only queries whose text contains this string are faulted (`None`: any data query).
    pub only_matching: Mutex<Option<String>>,
}

impl Faults {
    fn matches(&self, sql: &str) -> bool {
        if sql.to_ascii_uppercase().contains("INFORMATION_SCHEMA") {
            return false;
        }
        match &*self.only_matching.lock().expect("faults lock") {
            Some(m) => sql.contains(m.as_str()),
            None => true,
        }
    }

    fn take(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Server settings.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Port on 127.0.0.1 (0: ephemeral).
    pub port: u16,
    /// Expected password for every login (`None`: accept any).
    pub password: Option<String>,
    /// Fixture data.
    pub fixtures: FixtureOptions,
    /// Answer SQL Browser (SSRP) requests for this instance name on a UDP port of its own.
    pub instance: Option<String>,
    /// Offer TLS with this identity (PEM certificate chain, PKCS#8 PEM key) and encrypt every
    /// connection whose client asks for it.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
}

/// The test identity: a server certificate for `localhost` and 127.0.0.1, and the CA that
/// signed it (`ca.pem`, for `source.ca_certificate`). Test-only keys, valid until 2126.
pub fn test_identity() -> (Vec<u8>, Vec<u8>) {
    (
        include_bytes!("tls/server.pem").to_vec(),
        include_bytes!("tls/server.key").to_vec(),
    )
}

/// The CA certificate of [`test_identity`], PEM.
pub const TEST_CA: &[u8] = include_bytes!("tls/ca.pem");

/// A login as the server accepted it.
#[derive(Debug, Clone)]
pub struct Session {
    /// Login name.
    pub user: String,
    /// Packet size the server granted.
    pub packet_size: usize,
    /// Whether the session ran over TLS.
    pub encrypted: bool,
}

/// A query as the server received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Statement text.
    pub sql: String,
    /// Bound parameter values.
    pub params: Vec<String>,
}

struct Shared {
    ctx: SessionContext,
    faults: Arc<Faults>,
    password: Option<String>,
    log: Mutex<Vec<Received>>,
    sessions: Mutex<Vec<Session>>,
    tls: Option<async_native_tls::TlsAcceptor>,
    tracked: Mutex<change_tracking::Tracked>,
}

/// A running server; stops when dropped.
pub struct TdsServer {
    /// Bound port.
    pub port: u16,
    /// Fault switches.
    pub faults: Arc<Faults>,
    /// UDP port of the SQL Browser responder, when `ServerOptions::instance` is set.
    pub browser_port: Option<u16>,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TdsServer {
    /// Builds the fixtures and starts the server on its own runtime thread.
    pub fn start(opts: ServerOptions) -> std::io::Result<TdsServer> {
        let ctx = fixtures::session(&opts.fixtures).map_err(std::io::Error::other)?;
        let faults = Arc::new(Faults::default());
        let tls = match &opts.tls {
            Some((cert, key)) => {
                let id =
                    native_tls::Identity::from_pkcs8(cert, key).map_err(std::io::Error::other)?;
                // TDS 7.x encrypts with TLS 1.2, as SQL Server does (TLS 1.3 needs TDS 8).
                let acceptor = native_tls::TlsAcceptor::builder(id)
                    .max_protocol_version(Some(native_tls::Protocol::Tlsv12))
                    .build()
                    .map_err(std::io::Error::other)?;
                Some(async_native_tls::TlsAcceptor::from(acceptor))
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            tls,
            ctx,
            faults: faults.clone(),
            password: opts.password.clone(),
            log: Mutex::new(Vec::new()),
            sessions: Mutex::new(Vec::new()),
            tracked: Mutex::new(change_tracking::Tracked::default()),
        });
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", opts.port))?;
        std_listener.set_nonblocking(true)?;
        let port = std_listener.local_addr()?.port();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let browser = match &opts.instance {
            Some(name) => {
                let udp = std::net::UdpSocket::bind(("127.0.0.1", 0))?;
                udp.set_nonblocking(true)?;
                Some((udp, name.clone()))
            }
            None => None,
        };
        let browser_port = match &browser {
            Some((udp, _)) => Some(udp.local_addr()?.port()),
            None => None,
        };
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("server runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                if let Some((udp, name)) = browser {
                    let udp = tokio::net::UdpSocket::from_std(udp).expect("browser socket");
                    tokio::spawn(ssrp(udp, name, port));
                }
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => {
                            if let Ok((sock, _)) = accepted {
                                let s = s.clone();
                                tokio::spawn(async move {
                                    let _ = serve(sock, s).await;
                                });
                            }
                        }
                    }
                }
            });
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        Ok(TdsServer {
            port,
            faults,
            browser_port,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Logins accepted so far.
    pub fn sessions(&self) -> Vec<Session> {
        self.shared.sessions.lock().expect("sessions lock").clone()
    }

    /// Queries received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.log.lock().expect("log lock").clone()
    }

    /// Change-tracked `dbo.Tracked`: inserts or updates row `id` (`amount` in hundredths) in one
    /// transaction; returns its change-tracking version.
    pub fn tracked_upsert(&self, id: i32, name: &str, amount: Option<i128>) -> i64 {
        self.change_tracked(|t| t.upsert(id, name, amount))
    }

    /// Change-tracked `dbo.Tracked`: deletes row `id`; returns the version.
    pub fn tracked_delete(&self, id: i32) -> i64 {
        self.change_tracked(|t| t.delete(id))
    }

    /// Change tracking cleanup on `dbo.Tracked`: the minimum valid version becomes the current
    /// version (a client synced to an older one must re-sync in full); returns it.
    pub fn tracked_cleanup(&self) -> i64 {
        self.change_tracked(change_tracking::Tracked::cleanup)
    }

    /// The database's current change-tracking version.
    pub fn tracked_version(&self) -> i64 {
        self.change_tracked(|t| t.version())
    }

    /// Runs `f` on the tracked table and serves its rows from then on.
    fn change_tracked<T>(&self, f: impl FnOnce(&mut change_tracking::Tracked) -> T) -> T {
        let mut tracked = self.shared.tracked.lock().expect("tracked lock");
        let out = f(&mut tracked);
        let batch = tracked.batch().expect("tracked rows");
        let table = datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])
            .expect("tracked table");
        let name = datafusion::common::TableReference::partial("dbo", change_tracking::TABLE);
        let ctx = &self.shared.ctx;
        ctx.deregister_table(name.clone()).expect("deregister");
        ctx.register_table(name, Arc::new(table))
            .expect("register tracked table");
        out
    }
}

impl Drop for TdsServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers SQL Browser unicast instance requests (SSRP `CLNT_UCAST_INST`, 0x04 + name) with the
/// instance's TCP port (`SVR_RESP`, 0x05); other names get no answer, as on a real server.
async fn ssrp(udp: tokio::net::UdpSocket, instance: String, port: u16) {
    let mut buf = [0u8; 512];
    while let Ok((n, from)) = udp.recv_from(&mut buf).await {
        let asked = String::from_utf8_lossy(&buf[1.min(n)..n]);
        let asked = asked.trim_end_matches('\0');
        if buf[0] != 0x04 || !asked.eq_ignore_ascii_case(&instance) {
            continue;
        }
        let text = format!(
            "ServerName;FIXTURE;InstanceName;{instance};IsClustered;No;Version;16.0.2000.5;tcp;{port};;"
        );
        let mut reply = vec![0x05];
        reply.extend_from_slice(&(text.len() as u16).to_le_bytes());
        reply.extend_from_slice(text.as_bytes());
        let _ = udp.send_to(&reply, from).await;
    }
}

/// The server's byte stream: plain TCP, or TLS over it.
trait Wire: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Wire for T {}

/// TDS framing of the TLS handshake: until it completes, TLS records travel inside PRELOGIN
/// (0x12) packets, one packet per flushed flight; afterwards they flow bare on the socket.
struct HandshakeFraming<S> {
    inner: S,
    handshaking: bool,
    header: [u8; 8],
    header_len: usize,
    body_left: usize,
    out: Vec<u8>,
    packet: Vec<u8>,
    sent: usize,
}

impl<S: Wire> HandshakeFraming<S> {
    fn new(inner: S) -> Self {
        HandshakeFraming {
            inner,
            handshaking: true,
            header: [0; 8],
            header_len: 0,
            body_left: 0,
            out: Vec::new(),
            packet: Vec::new(),
            sent: 0,
        }
    }
}

impl<S: Wire> AsyncRead for HandshakeFraming<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        let this = self.get_mut();
        if !this.handshaking {
            return std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        while this.body_left == 0 {
            if this.header_len < 8 {
                let n = futures::ready!(std::pin::Pin::new(&mut this.inner)
                    .poll_read(cx, &mut this.header[this.header_len..]))?;
                if n == 0 {
                    return Poll::Ready(Ok(0));
                }
                this.header_len += n;
                continue;
            }
            if this.header[0] != 0x12 {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "expected a PRELOGIN packet during the TLS handshake",
                )));
            }
            let len = u16::from_be_bytes([this.header[2], this.header[3]]) as usize;
            this.body_left = len.saturating_sub(8);
            this.header_len = 0;
        }
        let max = this.body_left.min(buf.len());
        let n =
            futures::ready!(std::pin::Pin::new(&mut this.inner).poll_read(cx, &mut buf[..max]))?;
        this.body_left -= n;
        Poll::Ready(Ok(n))
    }
}

impl<S: Wire> AsyncWrite for HandshakeFraming<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if !this.handshaking {
            return std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        this.out.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.packet.is_empty() && !this.out.is_empty() {
            let len = (this.out.len() + 8) as u16;
            this.packet.extend_from_slice(&[0x12, 0x01]);
            this.packet.extend_from_slice(&len.to_be_bytes());
            this.packet.extend_from_slice(&[0, 0, 1, 0]);
            this.packet.append(&mut this.out);
            this.sent = 0;
        }
        while this.sent < this.packet.len() {
            let n = futures::ready!(
                std::pin::Pin::new(&mut this.inner).poll_write(cx, &this.packet[this.sent..])
            )?;
            if n == 0 {
                return std::task::Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            this.sent += n;
        }
        this.packet.clear();
        std::pin::Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

/// The ENCRYPTION option (token 1) of a client PRELOGIN message.
fn prelogin_encryption(p: &[u8]) -> Option<u8> {
    let mut i = 0;
    while i + 5 <= p.len() && p[i] != 0xFF {
        if p[i] == 1 {
            let off = u16::from_be_bytes([p[i + 1], p[i + 2]]) as usize;
            return p.get(off).copied();
        }
        i += 5;
    }
    None
}

/// One request message: packet type and the reassembled payload.
async fn read_message<S: Wire>(sock: &mut S) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut payload = Vec::new();
    loop {
        let mut header = [0u8; 8];
        match sock.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u16::from_be_bytes([header[2], header[3]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(8)];
        sock.read_exact(&mut body).await?;
        payload.extend_from_slice(&body);
        if header[1] & 0x01 != 0 {
            return Ok(Some((header[0], payload)));
        }
    }
}

/// Buffers tokens and writes them as type-4 (tabular result) packets.
struct Writer {
    buf: Vec<u8>,
    packet_id: u8,
    /// Negotiated packet size.
    size: usize,
}

impl Writer {
    fn new() -> Self {
        Writer {
            buf: Vec::with_capacity(PACKET_SIZE * 2),
            packet_id: 1,
            size: PACKET_SIZE,
        }
    }

    /// Sends every full packet in the buffer.
    async fn flush_full<S: Wire>(&mut self, sock: &mut S) -> std::io::Result<()> {
        let body = self.size - 8;
        if self.buf.len() <= body {
            return Ok(());
        }
        let mut out = Vec::with_capacity(self.buf.len() + self.buf.len() / body * 8);
        let mut start = 0;
        while self.buf.len() - start > body {
            self.packet(&mut out, start, start + body, false);
            start += body;
        }
        self.buf.drain(..start);
        sock.write_all(&out).await
    }

    /// Sends the rest as the final packet of the message.
    async fn finish<S: Wire>(&mut self, sock: &mut S) -> std::io::Result<()> {
        self.flush_full(sock).await?;
        let mut out = Vec::with_capacity(self.buf.len() + 8);
        self.packet(&mut out, 0, self.buf.len(), true);
        self.buf.clear();
        self.packet_id = 1;
        sock.write_all(&out).await?;
        sock.flush().await
    }

    fn packet(&mut self, out: &mut Vec<u8>, from: usize, to: usize, last: bool) {
        let len = (to - from + 8) as u16;
        out.extend_from_slice(&[4, last as u8]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&[0, 0x33, self.packet_id, 0]);
        out.extend_from_slice(&self.buf[from..to]);
        self.packet_id = self.packet_id.wrapping_add(1);
    }
}

fn b_varchar(out: &mut Vec<u8>, s: &str) {
    let units: Vec<u16> = s.encode_utf16().collect();
    out.push(units.len() as u8);
    for u in units {
        out.extend_from_slice(&u.to_le_bytes());
    }
}

fn us_varchar(out: &mut Vec<u8>, s: &str) {
    let units: Vec<u16> = s.encode_utf16().collect();
    out.extend_from_slice(&(units.len() as u16).to_le_bytes());
    for u in units {
        out.extend_from_slice(&u.to_le_bytes());
    }
}

const DONE_MORE: u16 = 0x01;
const DONE_ERROR: u16 = 0x02;
const DONE_COUNT: u16 = 0x10;

fn done(out: &mut Vec<u8>, token: u8, status: u16, rows: u64) {
    out.push(token);
    out.extend_from_slice(&status.to_le_bytes());
    out.extend_from_slice(&0xC1u16.to_le_bytes());
    out.extend_from_slice(&rows.to_le_bytes());
}

fn error_token(out: &mut Vec<u8>, number: i32, class: u8, msg: &str) {
    let mut body = Vec::new();
    body.extend_from_slice(&number.to_le_bytes());
    body.push(1); // state
    body.push(class);
    us_varchar(&mut body, msg);
    b_varchar(&mut body, "smelter-tds-fixture");
    b_varchar(&mut body, "");
    body.extend_from_slice(&1i32.to_le_bytes());
    out.push(0xAA);
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
}

fn env_change(out: &mut Vec<u8>, kind: u8, new: &str, old: &str) {
    let mut body = vec![kind];
    b_varchar(&mut body, new);
    b_varchar(&mut body, old);
    out.push(0xE3);
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
}

fn prelogin_response(encryption: u8) -> Vec<u8> {
    // Options: VERSION(6), ENCRYPTION(1), INSTOPT(1), THREADID(4), MARS(1).
    let opts: [(u8, &[u8]); 5] = [
        (0, &[16, 0, 0x07, 0xD0, 0, 0]),
        (1, &[encryption]),
        (2, &[0]),
        (3, &[0, 0, 0, 1]),
        (4, &[0]),
    ];
    let mut head = Vec::new();
    let mut data = Vec::new();
    let base = opts.len() * 5 + 1;
    for (tok, bytes) in opts {
        head.push(tok);
        head.extend_from_slice(&((base + data.len()) as u16).to_be_bytes());
        head.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        data.extend_from_slice(bytes);
    }
    head.push(0xFF);
    head.extend_from_slice(&data);
    head
}

struct Login {
    packet_size: usize,
    user: String,
    password: String,
    database: String,
}

fn utf16_at(p: &[u8], off: usize, chars: usize) -> String {
    let end = (off + chars * 2).min(p.len());
    let units: Vec<u16> = p
        .get(off..end)
        .unwrap_or(&[])
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

fn parse_login(p: &[u8]) -> Login {
    let field = |at: usize| -> (usize, usize) {
        let off = u16::from_le_bytes([
            p.get(at).copied().unwrap_or(0),
            p.get(at + 1).copied().unwrap_or(0),
        ]);
        let len = u16::from_le_bytes([
            p.get(at + 2).copied().unwrap_or(0),
            p.get(at + 3).copied().unwrap_or(0),
        ]);
        (off as usize, len as usize)
    };
    let (uo, ul) = field(40);
    let (po, pl) = field(44);
    let (dbo, dbl) = field(68);
    let pw: Vec<u8> = p
        .get(po..(po + pl * 2).min(p.len()))
        .unwrap_or(&[])
        .iter()
        .map(|b| {
            let x = b ^ 0xA5;
            x.rotate_left(4)
        })
        .collect();
    Login {
        packet_size: p
            .get(8..12)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize),
        user: utf16_at(p, uo, ul),
        password: utf16_at(&pw, 0, pl),
        database: utf16_at(p, dbo, dbl),
    }
}

async fn serve(tcp: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    let mut sock = Compat(tcp);
    let mut w = Writer::new();
    // PRELOGIN.
    let Some((ty, payload)) = read_message(&mut sock).await? else {
        return Ok(());
    };
    if ty != 0x12 {
        return Ok(());
    }
    // ENCRYPT_ON when the server has a certificate (ENCRYPT_REQ if the client said it has no
    // TLS, which then ends the connection), NOT_SUP otherwise.
    let encryption = match (&shared.tls, prelogin_encryption(&payload)) {
        (None, _) => 2,
        (Some(_), Some(2)) => 3,
        (Some(_), _) => 1,
    };
    w.buf.extend_from_slice(&prelogin_response(encryption));
    w.finish(&mut sock).await?;
    match &shared.tls {
        Some(acceptor) => {
            let mut tls = acceptor
                .accept(HandshakeFraming::new(sock))
                .await
                .map_err(std::io::Error::other)?;
            tls.get_mut().handshaking = false;
            session(tls, w, shared, true).await
        }
        None => session(sock, w, shared, false).await,
    }
}

/// LOGIN7 and the requests of one logged-in session.
async fn session<S: Wire>(
    mut sock: S,
    mut w: Writer,
    shared: Arc<Shared>,
    encrypted: bool,
) -> std::io::Result<()> {
    // LOGIN7.
    let Some((ty, payload)) = read_message(&mut sock).await? else {
        return Ok(());
    };
    if ty != 0x10 {
        return Ok(());
    }
    let login = parse_login(&payload);
    let bad_password = shared
        .password
        .as_ref()
        .is_some_and(|p| *p != login.password);
    if shared.faults.reject_login.load(Ordering::SeqCst) || bad_password {
        error_token(
            &mut w.buf,
            18456,
            14,
            &format!("Login failed for user '{}'.", login.user),
        );
        done(&mut w.buf, 0xFD, DONE_ERROR, 0);
        w.finish(&mut sock).await?;
        return Ok(());
    }
    let db = if login.database.is_empty() {
        "LogisticsDB".to_string()
    } else {
        login.database.clone()
    };
    env_change(&mut w.buf, 1, &db, "master");
    // Collation (type 7): new value 5 bytes, old value empty.
    w.buf.push(0xE3);
    w.buf.extend_from_slice(&8u16.to_le_bytes());
    w.buf.push(7);
    w.buf.push(5);
    w.buf.extend_from_slice(&types::COLLATION);
    w.buf.push(0);
    // The client's packet size (0: keep the server's), capped as SQL Server does.
    if login.packet_size >= 512 {
        w.size = login.packet_size.min(MAX_PACKET_SIZE);
    }
    env_change(&mut w.buf, 4, &w.size.to_string(), &PACKET_SIZE.to_string());
    shared
        .sessions
        .lock()
        .expect("sessions lock")
        .push(Session {
            user: login.user.clone(),
            packet_size: w.size,
            encrypted,
        });
    let mut ack = vec![1u8, 0x74, 0x00, 0x00, 0x04];
    b_varchar(&mut ack, "Microsoft SQL Server");
    ack.extend_from_slice(&[16, 0, 0x07, 0xD0]);
    w.buf.push(0xAD);
    w.buf.extend_from_slice(&(ack.len() as u16).to_le_bytes());
    w.buf.extend_from_slice(&ack);
    done(&mut w.buf, 0xFD, 0, 0);
    w.finish(&mut sock).await?;

    loop {
        let Some((ty, payload)) = read_message(&mut sock).await? else {
            return Ok(());
        };
        match ty {
            0x01 => {
                let text = utf16_at(&payload, skip_all_headers(&payload), (payload.len()) / 2);
                let text = text.trim_end_matches('\0').to_string();
                if !run_statement(&mut sock, &mut w, &shared, &text, Vec::new(), false).await? {
                    return Ok(());
                }
            }
            0x03 => match parse_rpc(&payload) {
                Ok((sql, params)) => {
                    if !run_statement(&mut sock, &mut w, &shared, &sql, params, true).await? {
                        return Ok(());
                    }
                }
                Err(msg) => {
                    error_token(&mut w.buf, 8009, 16, &msg);
                    done(&mut w.buf, 0xFE, DONE_ERROR, 0);
                    w.finish(&mut sock).await?;
                }
            },
            0x06 => {
                // Attention: acknowledge.
                done(&mut w.buf, 0xFD, 0x20, 0);
                w.finish(&mut sock).await?;
            }
            0x0E => {
                // Transaction manager request: acknowledge without a transaction.
                done(&mut w.buf, 0xFD, 0, 0);
                w.finish(&mut sock).await?;
            }
            _ => {
                error_token(&mut w.buf, 4002, 16, "unsupported request");
                done(&mut w.buf, 0xFD, DONE_ERROR, 0);
                w.finish(&mut sock).await?;
            }
        }
    }
}

fn skip_all_headers(p: &[u8]) -> usize {
    if p.len() < 4 {
        return 0;
    }
    let total = u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as usize;
    // ALL_HEADERS is present when its declared length fits and starts with a header length.
    if (4..=p.len()).contains(&total) && total >= 22 {
        total
    } else {
        0
    }
}

/// Reads RPC `sp_executesql` (id 10) or `sp_prepexec` (id 13): statement text and parameters.
fn parse_rpc(p: &[u8]) -> Result<(String, Vec<ScalarValue>), String> {
    let mut r = Reader {
        p,
        at: skip_all_headers(p),
    };
    let name_len = r.u16()?;
    let proc_id = if name_len == 0xFFFF {
        r.u16()?
    } else {
        let name = r.utf16(name_len as usize)?;
        match name.to_ascii_lowercase().as_str() {
            "sp_executesql" => 10,
            "sp_prepexec" => 13,
            other => return Err(format!("unsupported procedure {other}")),
        }
    };
    let _flags = r.u16()?;
    let mut values = Vec::new();
    while r.at < p.len() {
        let n = r.u8()? as usize;
        let _name = r.utf16(n)?;
        let _status = r.u8()?;
        values.push(r.value()?);
    }
    let (sql, rest) = match proc_id {
        10 => {
            let mut it = values.into_iter();
            let sql = scalar_text(it.next());
            let _decl = it.next();
            (sql, it.collect::<Vec<_>>())
        }
        13 => {
            let mut it = values.into_iter();
            let _handle = it.next();
            let _decl = it.next();
            let sql = scalar_text(it.next());
            (sql, it.collect())
        }
        other => return Err(format!("unsupported RPC procedure id {other}")),
    };
    Ok((sql, rest))
}

fn scalar_text(v: Option<ScalarValue>) -> String {
    match v {
        Some(ScalarValue::Utf8(Some(s))) => s,
        _ => String::new(),
    }
}

struct Reader<'a> {
    p: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let s = self
            .p
            .get(self.at..self.at + n)
            .ok_or_else(|| "truncated RPC request".to_string())?;
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn utf16(&mut self, chars: usize) -> Result<String, String> {
        let b = self.take(chars * 2)?;
        Ok(utf16_at(b, 0, chars))
    }
    fn int_le(&mut self, n: usize) -> Result<i128, String> {
        let b = self.take(n)?;
        let mut v: i128 = 0;
        for (i, x) in b.iter().enumerate() {
            v |= (*x as i128) << (8 * i);
        }
        Ok(v)
    }
    fn plp(&mut self) -> Result<Option<Vec<u8>>, String> {
        let total = self.take(8)?;
        if total == [0xFF; 8] {
            return Ok(None);
        }
        let mut out = Vec::new();
        loop {
            let b = self.take(4)?;
            let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
            if n == 0 {
                return Ok(Some(out));
            }
            out.extend_from_slice(self.take(n)?);
        }
    }

    /// TYPE_INFO followed by a value, as an Arrow scalar.
    fn value(&mut self) -> Result<ScalarValue, String> {
        let ty = self.u8()?;
        Ok(match ty {
            // Fixed-length ints/floats/bit.
            0x30 => ScalarValue::Int64(Some(self.int_le(1)? as i64)),
            0x32 => ScalarValue::Boolean(Some(self.u8()? != 0)),
            0x34 => ScalarValue::Int64(Some(self.int_le(2)? as i16 as i64)),
            0x38 => ScalarValue::Int64(Some(self.int_le(4)? as i32 as i64)),
            0x7F => ScalarValue::Int64(Some(self.int_le(8)? as i64)),
            0x26 | 0x68 | 0x6D => {
                let _max = self.u8()?;
                let len = self.u8()? as usize;
                if len == 0 {
                    return Ok(ScalarValue::Null);
                }
                match ty {
                    0x68 => ScalarValue::Boolean(Some(self.u8()? != 0)),
                    0x6D if len == 4 => {
                        let b = self.take(4)?;
                        ScalarValue::Float64(Some(
                            f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64
                        ))
                    }
                    0x6D => {
                        let b = self.take(8)?;
                        let mut a = [0u8; 8];
                        a.copy_from_slice(b);
                        ScalarValue::Float64(Some(f64::from_le_bytes(a)))
                    }
                    _ => {
                        let v = self.int_le(len)?;
                        let shift = 128 - 8 * len as u32;
                        ScalarValue::Int64(Some(((v << shift) >> shift) as i64))
                    }
                }
            }
            0x6A | 0x6C => {
                let _max = self.u8()?;
                let p = self.u8()?;
                let s = self.u8()?;
                let len = self.u8()? as usize;
                if len == 0 {
                    return Ok(ScalarValue::Decimal128(None, p, s as i8));
                }
                let sign = self.u8()?;
                let v = self.int_le(len - 1)?;
                ScalarValue::Decimal128(Some(if sign == 0 { -v } else { v }), p.max(1), s as i8)
            }
            0x28 => {
                let len = self.u8()?;
                if len == 0 {
                    return Ok(ScalarValue::Date32(None));
                }
                let d = self.int_le(3)? as i64 - types::DAYS_0001_TO_1970;
                ScalarValue::Date32(Some(d as i32))
            }
            0x29..=0x2B => {
                let scale = self.u8()? as u32;
                let len = self.u8()? as usize;
                if len == 0 {
                    return Ok(ScalarValue::Null);
                }
                let tlen = match scale {
                    0..=2 => 3,
                    3..=4 => 4,
                    _ => 5,
                };
                let incr = self.int_le(tlen)? as i64;
                let ns = incr * 10i64.pow(9 - scale);
                if ty == 0x29 {
                    return Ok(ScalarValue::Time64Nanosecond(Some(ns)));
                }
                let days = self.int_le(3)? as i64 - types::DAYS_0001_TO_1970;
                let total = days * 86_400_000_000_000 + ns;
                if ty == 0x2B {
                    let _offset = self.int_le(2)?;
                    ScalarValue::TimestampNanosecond(Some(total), Some("UTC".into()))
                } else {
                    ScalarValue::TimestampNanosecond(Some(total), None)
                }
            }
            0xE7 | 0xEF | 0xA7 | 0xAF | 0xA5 | 0xAD => {
                let max = self.u16()?;
                if matches!(ty, 0xE7 | 0xEF | 0xA7 | 0xAF) {
                    self.take(5)?;
                }
                let bytes = if max == 0xFFFF {
                    self.plp()?
                } else {
                    let n = self.u16()?;
                    if n == 0xFFFF {
                        None
                    } else {
                        Some(self.take(n as usize)?.to_vec())
                    }
                };
                let Some(bytes) = bytes else {
                    return Ok(ScalarValue::Utf8(None));
                };
                match ty {
                    0xE7 | 0xEF => ScalarValue::Utf8(Some(utf16_at(&bytes, 0, bytes.len() / 2))),
                    0xA7 | 0xAF => {
                        ScalarValue::Utf8(Some(String::from_utf8_lossy(&bytes).into_owned()))
                    }
                    _ => ScalarValue::Binary(Some(bytes)),
                }
            }
            0x24 => {
                let _max = self.u8()?;
                let len = self.u8()? as usize;
                if len == 0 {
                    return Ok(ScalarValue::Utf8(None));
                }
                let b = self.take(16)?;
                let mut u = [0u8; 16];
                u.copy_from_slice(b);
                u[..4].reverse();
                u[4..6].reverse();
                u[6..8].reverse();
                ScalarValue::Utf8(Some(uuid::Uuid::from_bytes(u).to_string()))
            }
            other => return Err(format!("unsupported parameter type 0x{other:02X}")),
        })
    }
}

/// Rewrites the T-SQL the clients send into DataFusion SQL.
pub fn rewrite(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            out.push(c);
            if c == '\'' {
                in_str = false;
            }
            continue;
        }
        match c {
            '\'' => {
                in_str = true;
                out.push(c);
            }
            'N' | 'n'
                if chars.peek() == Some(&'\'')
                    && !out.ends_with(|p: char| p.is_alphanumeric() || p == '_') => {}
            '[' => {
                out.push('"');
                while let Some(d) = chars.next() {
                    if d == ']' {
                        if chars.peek() == Some(&']') {
                            chars.next();
                            out.push(']');
                            continue;
                        }
                        break;
                    }
                    if d == '"' {
                        out.push('"');
                    }
                    out.push(d);
                }
                out.push('"');
            }
            '@' => {
                let mut name = String::new();
                while let Some(d) = chars.peek() {
                    if d.is_alphanumeric() || *d == '_' {
                        name.push(*d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                match name.strip_prefix('P').or_else(|| name.strip_prefix('p')) {
                    Some(n) if n.parse::<u32>().is_ok() => out.push_str(&format!("${n}")),
                    _ => {
                        out.push('@');
                        out.push_str(&name);
                    }
                }
            }
            _ => out.push(c),
        }
    }
    let mut sql = out.trim().trim_end_matches(';').to_string();
    let upper = sql.to_ascii_uppercase();
    if let Some(i) = upper.find("INFORMATION_SCHEMA.COLUMNS") {
        sql.replace_range(
            i..i + "INFORMATION_SCHEMA.COLUMNS".len(),
            "fixture_catalog.columns",
        );
    }
    let sql = cast_targets(
        &sql.replace("COUNT_BIG(", "COUNT(")
            .replace("count_big(", "count(")
            .replace("CONVERT(binary(8), ", "rowversion_bytes("),
    );
    // SELECT TOP (n) / TOP n → LIMIT n.
    let upper = sql.to_ascii_uppercase();
    if let Some(i) = upper.find("SELECT TOP") {
        let rest = &sql[i + "SELECT TOP".len()..];
        let trimmed = rest.trim_start();
        let (n, after) = if let Some(r) = trimmed.strip_prefix('(') {
            let end = r.find(')').unwrap_or(r.len());
            (
                r[..end].trim().to_string(),
                r[(end + 1).min(r.len())..].to_string(),
            )
        } else {
            let end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
            (trimmed[..end].to_string(), trimmed[end..].to_string())
        };
        return format!("{}SELECT{} LIMIT {}", &sql[..i], after, n);
    }
    sql
}

/// Rewrites the T-SQL target types of `CAST(x AS type)` that DataFusion does not know.
fn cast_targets(sql: &str) -> String {
    let upper = sql.to_ascii_uppercase();
    let mut out = String::with_capacity(sql.len());
    let mut from = 0;
    while let Some(i) = upper[from..].find("CAST(") {
        let start = from + i + 5;
        let mut depth = 1;
        let mut end = sql.len();
        let mut last_as = None;
        for (j, c) in sql[start..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ if depth == 1 && upper[start + j..].starts_with(" AS ") => {
                    last_as = Some(start + j + 4)
                }
                _ => {}
            }
            if depth == 0 {
                end = start + j;
                break;
            }
        }
        let Some(t) = last_as else {
            out.push_str(&sql[from..start]);
            from = start;
            continue;
        };
        let ty = upper[t..end].trim();
        let base = ty.split('(').next().unwrap_or("").trim();
        let mapped = match base {
            "NVARCHAR" | "VARCHAR" | "NCHAR" | "CHAR" | "SYSNAME" => Some("VARCHAR"),
            "DATETIME2" | "DATETIME" | "SMALLDATETIME" => Some("TIMESTAMP"),
            "FLOAT" => Some("DOUBLE"),
            "BIT" => Some("BOOLEAN"),
            _ => None,
        };
        out.push_str(&sql[from..t]);
        out.push_str(mapped.unwrap_or(&sql[t..end]));
        from = end;
    }
    out.push_str(&sql[from..]);
    out
}

/// Output names of `CAST(...) AS "name"` expressions in rewritten SQL.
fn cast_aliases(sql: &str) -> Vec<String> {
    let upper = sql.to_ascii_uppercase();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = upper[from..].find("CAST(") {
        let start = from + i + 5;
        let mut depth = 1;
        let mut end = start;
        for (j, c) in sql[start..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                end = start + j + 1;
                break;
            }
        }
        let rest = sql[end..].trim_start();
        if rest.len() > 3 && rest[..3].eq_ignore_ascii_case("AS ") {
            let name = rest[3..].trim_start();
            if let Some(n) = name.strip_prefix('"') {
                if let Some(e) = n.find('"') {
                    out.push(n[..e].to_string());
                }
            }
        }
        from = end.max(start);
    }
    out
}

/// The SQL types of a result: a CAST makes a new typed value whose type comes from Arrow; other
/// columns keep the fixture declaration.
fn result_types(sql: &str, schema: &arrow::datatypes::Schema) -> Vec<SqlType> {
    let cast_aliases = cast_aliases(sql);
    schema
        .fields()
        .iter()
        .map(|f| {
            if cast_aliases.iter().any(|a| a == f.name()) {
                SqlType::for_arrow(f.data_type())
            } else {
                SqlType::of_field(f)
            }
        })
        .collect()
}

const DESCRIBE: &str = "sys.dm_exec_describe_first_result_set(";

/// Serves `sys.dm_exec_describe_first_result_set(@P1, NULL, 0)`: plans the query in `$1`
/// and registers its description (or its error) as a table the statement reads instead.
/// Returns the statement rewritten to read that table, and the table's name to drop after.
async fn describe_first_result_set(
    shared: &Shared,
    sql: &str,
    params: &[ScalarValue],
) -> datafusion::error::Result<Option<(String, String)>> {
    let Some(at) = sql.to_ascii_lowercase().find(DESCRIBE) else {
        return Ok(None);
    };
    let end = sql[at..].find(')').map_or(sql.len(), |e| at + e + 1);
    let inner = match params.first() {
        Some(ScalarValue::Utf8(Some(q))) => rewrite(q),
        _ => String::new(),
    };
    // (name, system_type_name, is_nullable) per column, or the reason the query cannot run.
    let described: Result<Vec<(String, String, bool)>, String> = match shared.ctx.sql(&inner).await
    {
        Ok(df) => {
            let schema = df.schema().as_arrow().clone();
            Ok(schema
                .fields()
                .iter()
                .zip(result_types(&inner, &schema))
                .map(|(f, t)| (f.name().clone(), t.type_name(), f.is_nullable()))
                .collect())
        }
        Err(e) => Err(e.to_string()),
    };
    use arrow::array::{ArrayRef, BooleanArray, Int32Array, StringArray};
    let fields = vec![
        types::field("column_ordinal", "int", false),
        types::field("name", "nvarchar(128)", true),
        types::field("system_type_name", "nvarchar(256)", true),
        types::field("is_nullable", "bit", true),
        types::field("is_hidden", "bit", true),
        types::field("error_number", "int", true),
        types::field("error_message", "nvarchar(4000)", true),
    ];
    let columns: Vec<ArrayRef> = match described {
        Ok(cols) => vec![
            Arc::new(Int32Array::from_iter_values(1..=cols.len() as i32)),
            Arc::new(StringArray::from_iter_values(cols.iter().map(|c| &c.0))),
            Arc::new(StringArray::from_iter_values(cols.iter().map(|c| &c.1))),
            Arc::new(BooleanArray::from(
                cols.iter().map(|c| c.2).collect::<Vec<_>>(),
            )),
            Arc::new(BooleanArray::from(vec![false; cols.len()])),
            Arc::new(Int32Array::from(vec![None; cols.len()])),
            Arc::new(StringArray::from(vec![None::<&str>; cols.len()])),
        ],
        // One row with the error, as SQL Server reports a query it cannot describe.
        Err(message) => vec![
            Arc::new(Int32Array::from(vec![1])),
            Arc::new(StringArray::from(vec![None::<&str>])),
            Arc::new(StringArray::from(vec![None::<&str>])),
            Arc::new(BooleanArray::from(vec![None])),
            Arc::new(BooleanArray::from(vec![None])),
            Arc::new(Int32Array::from(vec![11501])),
            Arc::new(StringArray::from(vec![message])),
        ],
    };
    let batch = RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns)?;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!("describe_{}", NEXT.fetch_add(1, Ordering::SeqCst));
    let table = datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])?;
    shared.ctx.register_table(name.as_str(), Arc::new(table))?;
    Ok(Some((format!("{}{name}{}", &sql[..at], &sql[end..]), name)))
}

/// Runs one statement; `false` when the connection was dropped on purpose.
async fn run_statement<S: Wire>(
    sock: &mut S,
    w: &mut Writer,
    shared: &Shared,
    text: &str,
    params: Vec<ScalarValue>,
    rpc: bool,
) -> std::io::Result<bool> {
    shared.log.lock().expect("log lock").push(Received {
        sql: text.to_string(),
        params: params.iter().map(|p| p.to_string()).collect(),
    });
    let final_token = if rpc { 0xFE } else { 0xFD };
    let trimmed = text.trim_start().to_ascii_uppercase();
    if !(trimmed.starts_with("SELECT") || trimmed.starts_with("WITH")) {
        done(&mut w.buf, final_token, 0, 0);
        w.finish(sock).await?;
        return Ok(true);
    }
    let faults = &shared.faults;
    let faulted = faults.matches(text);
    if faulted && faults.stall_ms.load(Ordering::SeqCst) > 0 && Faults::take(&faults.stalls) {
        tokio::time::sleep(Duration::from_millis(
            faults.stall_ms.load(Ordering::SeqCst),
        ))
        .await;
    }
    if faulted && Faults::take(&faults.deadlocks) {
        error_token(
            &mut w.buf,
            1205,
            13,
            "Transaction (Process ID 51) was deadlocked on lock resources with another process and has been chosen as the deadlock victim. Rerun the transaction.",
        );
        done(&mut w.buf, final_token, DONE_ERROR, 0);
        w.finish(sock).await?;
        return Ok(true);
    }
    let drop_after = faults.drop_after_rows.load(Ordering::SeqCst);
    let drop_after = (faulted && drop_after > 0).then_some(drop_after);

    let mut sql = rewrite(text);
    let mut params = params;
    let mut temp = None;
    static NEXT_CHANGES: AtomicU64 = AtomicU64::new(0);
    let changes_name = format!("changes_{}", NEXT_CHANGES.fetch_add(1, Ordering::SeqCst));
    let tracked =
        shared
            .tracked
            .lock()
            .expect("tracked lock")
            .rewrite(&sql, &params, &changes_name);
    match tracked {
        Ok(None) => {}
        Ok(Some((rewritten, changes))) => {
            sql = rewritten;
            params.clear();
            if let Some(batch) = changes {
                let registered =
                    datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])
                        .and_then(|t| {
                            shared
                                .ctx
                                .register_table(changes_name.as_str(), Arc::new(t))
                        });
                if let Err(e) = registered {
                    error_token(&mut w.buf, 50000, 16, &format!("fixture: {e}"));
                    done(&mut w.buf, final_token, DONE_ERROR, 0);
                    w.finish(sock).await?;
                    return Ok(true);
                }
                temp = Some(changes_name);
            }
        }
        Err(message) => {
            error_token(&mut w.buf, 50000, 16, &message);
            done(&mut w.buf, final_token, DONE_ERROR, 0);
            w.finish(sock).await?;
            return Ok(true);
        }
    }
    match describe_first_result_set(shared, &sql, &params).await {
        Ok(Some((rewritten, name))) => {
            sql = rewritten;
            params.clear();
            temp = Some(name);
        }
        Ok(None) => {}
        Err(e) => {
            error_token(&mut w.buf, 102, 15, &format!("{e}"));
            done(&mut w.buf, final_token, DONE_ERROR, 0);
            w.finish(sock).await?;
            return Ok(true);
        }
    }
    let stream = async {
        let df = shared.ctx.sql(&sql).await?;
        let df = if params.is_empty() {
            df
        } else {
            df.with_param_values(params)?
        };
        df.execute_stream().await
    }
    .await;
    if let Some(name) = temp {
        let _ = shared.ctx.deregister_table(name.as_str());
    }
    let mut stream = match stream {
        Ok(s) => s,
        Err(e) => {
            error_token(&mut w.buf, 102, 15, &format!("{e}"));
            done(&mut w.buf, final_token, DONE_ERROR, 0);
            w.finish(sock).await?;
            return Ok(true);
        }
    };
    let schema = stream.schema();
    let sql_types = result_types(&sql, &schema);
    // COLMETADATA.
    w.buf.push(0x81);
    w.buf
        .extend_from_slice(&(schema.fields().len() as u16).to_le_bytes());
    for (f, t) in schema.fields().iter().zip(&sql_types) {
        w.buf.extend_from_slice(&0u32.to_le_bytes());
        let flags: u16 = if f.is_nullable() { 0x0001 } else { 0 };
        w.buf.extend_from_slice(&flags.to_le_bytes());
        t.type_info(&mut w.buf);
        b_varchar(&mut w.buf, f.name());
    }
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch: RecordBatch = match batch {
            Ok(b) => b,
            Err(e) => {
                error_token(&mut w.buf, 8114, 16, &format!("{e}"));
                done(&mut w.buf, final_token, DONE_ERROR, rows);
                w.finish(sock).await?;
                return Ok(true);
            }
        };
        let cols: Vec<Col<'_>> = batch.columns().iter().map(Col::new).collect();
        let nbytes = cols.len().div_ceil(8);
        for i in 0..batch.num_rows() {
            if drop_after.is_some_and(|n| rows >= n) && Faults::take(&faults.drops) {
                // Send what is complete, then cut the connection mid-message.
                let cut = w.buf.len();
                w.flush_full(sock).await?;
                let _ = cut;
                sock.close().await.ok();
                return Ok(false);
            }
            let any_null = cols.iter().any(|c| c.is_null(i));
            if any_null {
                w.buf.push(0xD2);
                let start = w.buf.len();
                w.buf.resize(start + nbytes, 0);
                for (j, c) in cols.iter().enumerate() {
                    if c.is_null(i) {
                        w.buf[start + j / 8] |= 1 << (j % 8);
                    } else {
                        encode_value(&sql_types[j], c, i, &mut w.buf);
                    }
                }
            } else {
                w.buf.push(0xD1);
                for (j, c) in cols.iter().enumerate() {
                    encode_value(&sql_types[j], c, i, &mut w.buf);
                }
            }
            rows += 1;
            if w.buf.len() >= w.size * 16 {
                w.flush_full(sock).await?;
            }
        }
    }
    if rpc {
        done(&mut w.buf, 0xFF, DONE_COUNT | DONE_MORE, rows);
        // RETURNSTATUS 0, then DONEPROC.
        w.buf.push(0x79);
        w.buf.extend_from_slice(&0i32.to_le_bytes());
        done(&mut w.buf, 0xFE, 0, 0);
    } else {
        done(&mut w.buf, 0xFD, DONE_COUNT, rows);
    }
    w.finish(sock).await?;
    Ok(true)
}

/// Parses `--port N`, `--scale F`, `--days N`, `--big-rows N`, `--tpch-scale F` (serve the TPC-H
/// tables at scale factor F), `--tpch-dump DIR` (also write them as Parquet and CSV files to DIR),
/// `--password-env NAME` and fault env vars
/// (`TDS_FAULT_REJECT_LOGIN=1`, `TDS_FAULT_DEADLOCKS=n`, `TDS_FAULT_DROP_AFTER_ROWS=n` with
/// `TDS_FAULT_DROPS=n`, `TDS_FAULT_MATCH=text`) for the runnable server binary.
pub fn options_from_args(args: &[String]) -> Result<ServerOptions, String> {
    let mut opts = ServerOptions::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--port" => opts.port = val()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--scale" => {
                opts.fixtures.scale_factor = val()?.parse().map_err(|e| format!("--scale: {e}"))?
            }
            "--days" => opts.fixtures.days = val()?.parse().map_err(|e| format!("--days: {e}"))?,
            "--big-rows" => {
                opts.fixtures.big_rows = val()?.parse().map_err(|e| format!("--big-rows: {e}"))?
            }
            "--tpch-scale" => {
                opts.fixtures.tpch_scale_factor =
                    val()?.parse().map_err(|e| format!("--tpch-scale: {e}"))?
            }
            "--tpch-dump" => opts.fixtures.tpch_dump = Some(val()?.into()),
            "--password-env" => opts.password = std::env::var(val()?).ok(),
            "--tls" => opts.tls = Some(test_identity()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(opts)
}

/// Applies the fault env vars documented at [`options_from_args`].
pub fn faults_from_env(f: &Faults) {
    let num = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    if num("TDS_FAULT_REJECT_LOGIN").is_some_and(|v| v > 0) {
        f.reject_login.store(true, Ordering::SeqCst);
    }
    if let Some(n) = num("TDS_FAULT_DEADLOCKS") {
        f.deadlocks.store(n as u32, Ordering::SeqCst);
    }
    if let Some(n) = num("TDS_FAULT_DROP_AFTER_ROWS") {
        f.drop_after_rows.store(n, Ordering::SeqCst);
        f.drops
            .store(num("TDS_FAULT_DROPS").unwrap_or(1) as u32, Ordering::SeqCst);
    }
    if let Ok(m) = std::env::var("TDS_FAULT_MATCH") {
        *f.only_matching.lock().expect("faults lock") = Some(m);
    }
}
