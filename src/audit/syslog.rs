//! Optional off-host mirror of the audit trail (PCI DSS 10.3.3): each sealed
//! entry is sent as one RFC 5424 message (facility authpriv, severity
//! notice, app-name `cardvault`, msgid `audit`; a signed checkpoint has
//! msgid `checkpoint`) over TLS (RFC 5425: the collector's certificate
//! verified against a CA file, and the vault's own client certificate if
//! given) or plain TCP, both with octet-counting framing (RFC 6587), or to
//! a Unix datagram socket such as `/dev/log`.
//! A separate thread sends, so a slow or absent collector never delays the
//! trail: when its queue is full, entries are dropped from the mirror (never
//! from the local trail) and counted.

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Where to mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTarget {
    /// `host:port`, RFC 5424 over TCP with octet counting.
    Tcp(String),
    /// `host:port`, RFC 5425: RFC 5424 over TLS with octet counting.
    Tls(SyslogTls),
    /// A Unix datagram socket (`/dev/log`).
    Unix(PathBuf),
}

/// A TLS collector: its address, the CA that signed its certificate
/// (checked against `host`), and the vault's client certificate if the
/// collector asks for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogTls {
    /// `host:port`; `host` must be in the collector's certificate.
    pub addr: String,
    /// PEM file of the CA(s) the collector's certificate chains to.
    pub ca_file: PathBuf,
    /// The vault's client certificate and key (PEM), when the collector
    /// authenticates its senders.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl SyslogTls {
    /// The rustls client configuration and the name to verify.
    pub fn client_config(
        &self,
    ) -> Result<(Arc<rustls::ClientConfig>, ServerName<'static>), String> {
        let read = |p: &PathBuf, e: rustls::pki_types::pem::Error| format!("{}: {e}", p.display());
        let mut roots = rustls::RootCertStore::empty();
        for cert in
            CertificateDer::pem_file_iter(&self.ca_file).map_err(|e| read(&self.ca_file, e))?
        {
            roots
                .add(cert.map_err(|e| read(&self.ca_file, e))?)
                .map_err(|e| format!("{}: {e}", self.ca_file.display()))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
        let config = match &self.client {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| read(cert, e))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| read(cert, e))?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| read(key, e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| e.to_string())?
            }
            None => builder.with_no_client_auth(),
        };
        let host = self
            .addr
            .rsplit_once(':')
            .map_or(self.addr.as_str(), |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name =
            ServerName::try_from(host.to_owned()).map_err(|e| format!("{}: {e}", self.addr))?;
        Ok((Arc::new(config), name))
    }
}

/// Entries waiting for the collector before the mirror starts dropping.
const QUEUE: usize = 65_536;

/// PRI for facility authpriv (10) and severity notice (5).
const PRI: u8 = 10 * 8 + 5;

/// The sending side of the mirror thread.
pub struct Mirror {
    tx: mpsc::SyncSender<(&'static str, Vec<u8>)>,
}

impl Mirror {
    /// Starts the mirror thread.
    pub fn start(target: SyslogTarget) -> Mirror {
        let (tx, rx) = mpsc::sync_channel::<(&'static str, Vec<u8>)>(QUEUE);
        let _ = std::thread::Builder::new()
            .name("cardvault-syslog".into())
            .spawn(move || run(target, rx));
        Mirror { tx }
    }

    /// Queues every line of `sealed` (newline-separated entries).
    pub fn send(&self, sealed: &[u8]) {
        self.queue("audit", sealed);
    }

    /// Queues a signed checkpoint line (msgid `checkpoint`).
    pub fn send_checkpoint(&self, line: &[u8]) {
        self.queue("checkpoint", line);
    }

    fn queue(&self, msgid: &'static str, lines: &[u8]) {
        for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if self.tx.try_send((msgid, line.to_vec())).is_err() {
                metrics::counter!("cardvault_audit_syslog_dropped_total").increment(1);
            }
        }
    }
}

/// One RFC 5424 message carrying `entry` as its MSG, with `msgid`.
pub fn format_message(hostname: &str, msgid: &str, entry: &[u8]) -> Vec<u8> {
    let ts = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "-".into());
    let mut message = format!(
        "<{PRI}>1 {ts} {hostname} cardvault {} {msgid} - ",
        std::process::id()
    )
    .into_bytes();
    message.extend_from_slice(entry);
    message
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "-".into())
}

enum Connection {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Unix(UnixDatagram),
}

fn connect(target: &SyslogTarget) -> std::io::Result<Connection> {
    let tcp = |addr: &str| -> std::io::Result<TcpStream> {
        let stream = TcpStream::connect(addr)?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(stream)
    };
    match target {
        SyslogTarget::Tcp(addr) => Ok(Connection::Tcp(tcp(addr)?)),
        SyslogTarget::Tls(tls) => {
            let (config, name) = tls.client_config().map_err(std::io::Error::other)?;
            let client =
                rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
            let mut stream = rustls::StreamOwned::new(client, tcp(&tls.addr)?);
            // The handshake now, so a collector that refuses us is a
            // connection failure rather than a lost first entry.
            while stream.conn.is_handshaking() {
                stream
                    .conn
                    .complete_io(&mut stream.sock)
                    .map_err(std::io::Error::other)?;
            }
            Ok(Connection::Tls(Box::new(stream)))
        }
        SyslogTarget::Unix(path) => {
            let socket = UnixDatagram::unbound()?;
            socket.connect(path)?;
            Ok(Connection::Unix(socket))
        }
    }
}

fn run(target: SyslogTarget, rx: mpsc::Receiver<(&'static str, Vec<u8>)>) {
    let host = hostname();
    let mut connection: Option<Connection> = None;
    let mut backoff = Duration::from_millis(100);
    let mut warned = false;
    for (msgid, entry) in rx {
        let message = format_message(&host, msgid, &entry);
        for attempt in 0..2 {
            if connection.is_none() {
                match connect(&target) {
                    Ok(c) => {
                        connection = Some(c);
                        backoff = Duration::from_millis(100);
                        if warned {
                            tracing::info!("audit syslog mirror reconnected");
                            warned = false;
                        }
                    }
                    Err(e) => {
                        if !warned {
                            tracing::warn!(error = %e, target = ?target, "audit syslog mirror cannot connect; retrying");
                            warned = true;
                        }
                        metrics::counter!("cardvault_audit_syslog_dropped_total").increment(1);
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        break;
                    }
                }
            }
            let frame = format!("{} ", message.len());
            let sent = match connection.as_mut() {
                Some(Connection::Tcp(stream)) => stream
                    .write_all(frame.as_bytes())
                    .and_then(|()| stream.write_all(&message)),
                Some(Connection::Tls(stream)) => stream
                    .write_all(frame.as_bytes())
                    .and_then(|()| stream.write_all(&message))
                    .and_then(|()| stream.flush()),
                Some(Connection::Unix(socket)) => socket.send(&message).map(|_| ()),
                None => break,
            };
            match sent {
                Ok(()) => {
                    metrics::counter!("cardvault_audit_syslog_sent_total").increment(1);
                    break;
                }
                Err(_) => {
                    connection = None;
                    if attempt == 1 {
                        metrics::counter!("cardvault_audit_syslog_dropped_total").increment(1);
                    }
                }
            }
        }
    }
    if let Some(Connection::Tls(stream)) = connection {
        close_tls(*stream);
    }
}

/// Ends a TLS mirror connection cleanly: `close_notify`, then what the
/// collector still sends (session tickets, its own `close_notify`) read
/// and dropped for at most two seconds. Closing with those unread would
/// reset the connection, and a collector's stack may then drop the last
/// entries it had not read yet.
fn close_tls(mut stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>) {
    use std::io::Read as _;
    stream.conn.send_close_notify();
    let _ = stream.flush();
    let _ = stream.sock.shutdown(std::net::Shutdown::Write);
    let _ = stream
        .sock
        .set_read_timeout(Some(Duration::from_millis(500)));
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut sink = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        match stream.sock.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}
