//! The accept loop both listeners share: a connection cap (a semaphore of
//! slots; a connection past it is closed at once and counted), accept
//! errors backed off with a rate-limited log line (so running out of file
//! descriptors neither spins nor floods the log), and a drain on shutdown
//! that waits until every slot is back or the drain timeout passes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// How long shutdown waits for in-flight requests before closing anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed accept (out of file descriptors, usually).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one log line per this interval about failing accepts.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Accepts on `listener` until `shutdown`, handing each connection that
/// gets one of `max` slots to `serve` (which must hold the permit for as
/// long as the connection lives), then drains. `name` labels metrics and
/// log lines.
pub async fn run(
    listener: TcpListener,
    name: &'static str,
    max: usize,
    mut shutdown: watch::Receiver<bool>,
    mut serve: impl FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
) {
    let slots = Arc::new(Semaphore::new(max));
    let mut last_logged: Option<Instant> = None;
    let mut failed_since_log = 0u64;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                metrics::counter!("cardvault_accept_errors_total", "listener" => name).increment(1);
                failed_since_log += 1;
                if last_logged.is_none_or(|at| at.elapsed() >= ACCEPT_LOG_INTERVAL) {
                    tracing::warn!(listener = name, error = %e, failures = failed_since_log, "accept failed; backing off");
                    last_logged = Some(Instant::now());
                    failed_since_log = 0;
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            metrics::counter!("cardvault_connections_refused_total", "listener" => name, "reason" => "limit")
                .increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        serve(stream, peer, permit);
    }
    drop(listener);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    tokio::select! {
        _ = slots.acquire_many(all) => tracing::info!(listener = name, "drained in-flight requests"),
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!(listener = name, "drain timed out; closing remaining connections"),
    }
}
