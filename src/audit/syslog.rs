//! Optional off-host mirror of the audit trail (PCI DSS 10.3.3): each sealed
//! entry is sent as one RFC 5424 message (facility authpriv, severity
//! notice, app-name `cardvault`, msgid `audit`; a signed checkpoint has
//! msgid `checkpoint`) over TCP with octet-counting
//! framing (RFC 6587) or to a Unix datagram socket such as `/dev/log`.
//! A separate thread sends, so a slow or absent collector never delays the
//! trail: when its queue is full, entries are dropped from the mirror (never
//! from the local trail) and counted.

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

/// Where to mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTarget {
    /// `host:port`, RFC 5424 over TCP with octet counting.
    Tcp(String),
    /// A Unix datagram socket (`/dev/log`).
    Unix(PathBuf),
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
    Unix(UnixDatagram),
}

fn connect(target: &SyslogTarget) -> std::io::Result<Connection> {
    match target {
        SyslogTarget::Tcp(addr) => {
            let stream = TcpStream::connect(addr)?;
            stream.set_write_timeout(Some(Duration::from_secs(5)))?;
            Ok(Connection::Tcp(stream))
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
            let sent = match connection.as_mut() {
                Some(Connection::Tcp(stream)) => {
                    let frame = format!("{} ", message.len());
                    stream
                        .write_all(frame.as_bytes())
                        .and_then(|()| stream.write_all(&message))
                }
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
}
