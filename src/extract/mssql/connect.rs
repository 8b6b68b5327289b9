//! Opening a tiberius connection: TCP (with a connect timeout), optional SQL Browser lookup for
//! named instances, TLS unless plaintext was asked for, SQL login with a password read from the
//! environment or a secret file, and Azure SQL gateway redirects. Errors are classified here.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tiberius::{AuthMethod, Client, Config, EncryptionLevel};
use tokio::io::ReadBuf;
use tokio::net::TcpStream;

use crate::config::{MssqlSource, PasswordSource};
use crate::error::{Error, Result};

/// A tokio TCP stream seen through the `futures` I/O traits tiberius uses.
///
/// A hand-written adapter instead of `tokio-util`'s `compat` feature keeps the dependency
/// features of the whole tree unchanged.
pub struct Compat(pub TcpStream);

impl futures::io::AsyncRead for Compat {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut rb = ReadBuf::new(buf);
        match tokio::io::AsyncRead::poll_read(Pin::new(&mut self.0), cx, &mut rb) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl futures::io::AsyncWrite for Compat {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        tokio::io::AsyncWrite::poll_flush(Pin::new(&mut self.0), cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut self.0), cx)
    }
}

/// A connected client.
pub type MssqlClient = Client<Compat>;

/// SQL Server error numbers worth retrying: deadlock victim, lock timeout, and the Azure SQL
/// transient set (database unavailable, service busy, resource limits, failover).
const TRANSIENT_CODES: &[u32] = &[
    1205, 1222, 4060, 4221, 10928, 10929, 40143, 40197, 40501, 40540, 40613, 49918, 49919, 49920,
];

/// Classifies a tiberius error for `what` (which names the table and server, never credentials).
pub fn source_error(what: &str, e: tiberius::error::Error) -> Error {
    use tiberius::error::Error as T;
    let (retryable, detail) = match &e {
        T::Io { kind, message } => (true, format!("connection failed ({kind:?}): {message}")),
        T::Server(t) if t.code() == 18456 => (
            false,
            format!(
                "login failed (error 18456): {}; check `source.user` and the password source",
                t.message()
            ),
        ),
        T::Server(t) if t.code() == 1205 => (
            true,
            format!("chosen as deadlock victim (error 1205): {}", t.message()),
        ),
        T::Server(t) => (
            TRANSIENT_CODES.contains(&t.code()),
            format!("server error {}: {}", t.code(), t.message()),
        ),
        T::Protocol(m) => (true, format!("protocol error (connection cut?): {m}")),
        T::Tls(m) => (
            false,
            format!("TLS failed: {m}; give the CA that signed the server certificate as `source.ca_certificate`, set `trust_server_certificate = true` to accept any certificate (self-signed dev servers), or `encrypt = false` for a plaintext test server"),
        ),
        other => (false, other.to_string()),
    };
    Error::Source {
        message: format!("{what}: {detail}"),
        retryable,
    }
}

/// Reads the password from its source.
fn password(src: &PasswordSource) -> Result<String> {
    match src {
        PasswordSource::Env(var) => std::env::var(var).map_err(|_| Error::Source {
            message: format!(
                "the password environment variable `{var}` (source.password_env) is not set"
            ),
            retryable: false,
        }),
        PasswordSource::Connection(id) => crate::config::connection::from_env(id)
            .and_then(|c| {
                c.password
                    .ok_or_else(|| format!("connection `{id}` has no password"))
            })
            .map_err(|m| Error::Source {
                message: format!("{m} (source.connection)"),
                retryable: false,
            }),
        PasswordSource::File(path) => std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| Error::Source {
                message: format!(
                    "cannot read the password file {} (source.password_file): {e}",
                    path.display()
                ),
                retryable: false,
            }),
    }
}

/// `host:port` for messages.
pub fn server_label(s: &MssqlSource) -> String {
    match (&s.instance, s.port) {
        (Some(i), None) => format!("{}\\{i}", s.host),
        (_, port) => format!("{}:{}", s.host, port.unwrap_or(1433)),
    }
}

/// Asks the SQL Browser (UDP, normally 1434) for the TCP port of a named instance.
async fn browse_port(host: &str, browser: u16, instance: &str, timeout: Duration) -> Result<u16> {
    let fail = |m: String| Error::Source {
        message: format!("SQL Browser on {host}:{browser} for instance `{instance}`: {m}"),
        retryable: true,
    };
    let sock = tokio::net::UdpSocket::bind("0.0.0.0:0")
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut msg = vec![0x04];
    msg.extend_from_slice(instance.as_bytes());
    sock.send_to(&msg, (host, browser))
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(timeout, sock.recv(&mut buf))
        .await
        .map_err(|_| fail("no answer; set `source.port` instead".into()))?
        .map_err(|e| fail(e.to_string()))?;
    let text = String::from_utf8_lossy(&buf[3.min(n)..n]).to_string();
    let parts: Vec<&str> = text.split(';').collect();
    parts
        .iter()
        .position(|p| p.eq_ignore_ascii_case("tcp"))
        .and_then(|i| parts.get(i + 1))
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| fail(format!("no TCP port in the answer `{text}`")))
}

/// Connects and logs in, following one Azure SQL gateway redirect.
pub async fn connect(s: &MssqlSource) -> Result<MssqlClient> {
    let label = server_label(s);
    let mut host = s.host.clone();
    let mut port = match (s.port, &s.instance) {
        (Some(p), _) => p,
        (None, Some(i)) => browse_port(&s.host, s.browser_port, i, s.connect_timeout).await?,
        (None, None) => 1433,
    };
    let password = password(&s.password)?;
    for _ in 0..2 {
        let mut config = Config::new();
        config.host(&host);
        config.port(port);
        if let Some(i) = &s.instance {
            config.instance_name(i);
        }
        config.application_name(&s.application_name);
        config.packet_size(s.packet_size);
        config.authentication(AuthMethod::sql_server(&s.user, &password));
        if s.encrypt {
            config.encryption(EncryptionLevel::Required);
            if s.trust_server_certificate {
                config.trust_cert();
            } else if let Some(ca) = &s.ca_certificate {
                config.trust_cert_ca(ca.to_string_lossy());
            }
        } else {
            config.encryption(EncryptionLevel::NotSupported);
        }
        config.handshake_timeout(Some(s.connect_timeout));
        config.command_timeout(Some(s.query_timeout));
        let what = format!("SQL Server {label}");
        let tcp =
            tokio::time::timeout(s.connect_timeout, TcpStream::connect((host.as_str(), port)))
                .await
                .map_err(|_| Error::Source {
                    message: format!(
                        "{what}: no connection within {}s (source.connect_timeout_seconds)",
                        s.connect_timeout.as_secs()
                    ),
                    retryable: true,
                })?
                .map_err(|e| Error::Source {
                    message: format!("{what}: cannot connect: {e}"),
                    retryable: true,
                })?;
        tcp.set_nodelay(true).ok();
        let login = tokio::time::timeout(s.connect_timeout, Client::connect(config, Compat(tcp)));
        match login.await {
            Err(_) => {
                return Err(Error::Source {
                    message: format!(
                        "{what}: no login answer within {}s (source.connect_timeout_seconds)",
                        s.connect_timeout.as_secs()
                    ),
                    retryable: true,
                })
            }
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(tiberius::error::Error::Routing { host: h, port: p })) => {
                host = h;
                port = p;
            }
            Ok(Err(e)) => return Err(source_error(&what, e)),
        }
    }
    Err(Error::Source {
        message: format!("SQL Server {label}: redirected more than once"),
        retryable: true,
    })
}
