//! One HTTP connection's life after its handshake (API and ops listeners
//! alike): it is served until the peer closes it, until shutdown (graceful:
//! in-flight requests finish), or until it has been idle — no request in
//! flight and none finished — for the idle timeout, on HTTP/1 and HTTP/2,
//! before the first request and between requests. A peer that completes
//! the handshake and then sends nothing, only part of a request line, or
//! only the HTTP/2 preface and SETTINGS, is closed after the idle timeout
//! instead of holding a connection slot for ever. The first request's head
//! has its own, shorter bound (`limits.header_timeout_ms`): a connection
//! with no complete request head that long after its handshake — nothing
//! sent, half a request line, only the HTTP/2 preface and SETTINGS — is
//! closed then, as nginx's `client_header_timeout` does from accept.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::server::conn::auto;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long an idle connection that was asked to close gracefully may take
/// before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Whether a connection is doing anything: requests in flight and the time
/// the last one started or finished. Shared by the connection's service
/// (which reports requests) and its watchdog.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
    /// Whether a complete request head ever reached the service.
    seen: std::sync::atomic::AtomicBool,
}

impl Activity {
    /// A connection that starts now, idle.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            seen: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub fn request(self: &Arc<Activity>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.seen.store(true, Ordering::Relaxed);
        self.touch();
        InFlight(Arc::clone(self))
    }

    /// When the connection becomes idle if nothing happens meanwhile; `None`
    /// while a request is in flight (the request timeout bounds those).
    fn idle_at(&self, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        Some(self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle)
    }

    /// When the first request's head is overdue; `None` once one arrived.
    fn first_head_due(&self, header: Duration) -> Option<Instant> {
        (!self.seen.load(Ordering::Relaxed)).then(|| self.start + header)
    }
}

/// A request in flight on a connection (see [`Activity::request`]).
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The two ways of ending a served connection early.
pub trait Closable: Future {
    /// Asks the connection to finish in-flight requests and close.
    fn close_gracefully(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E, B> Closable for auto::Connection<'static, I, S, E>
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
        >,
    S::Future: 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: auto::HttpServerConnExec<S::Future, B>,
{
    fn close_gracefully(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// How a served connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The peer closed it, or it failed.
    Closed,
    /// Closed by the vault after the idle timeout.
    Idle,
    /// Closed by the vault: no complete request head within the header
    /// timeout after the handshake.
    HeaderTimeout,
    /// Closed by shutdown.
    Shutdown,
}

/// The timeouts that end a served connection early.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// No request in flight and none finished for this long.
    pub idle: Duration,
    /// No complete first request head this long after the handshake.
    pub first_head: Duration,
}

/// Serves `conn` until it ends, shutdown begins (then closes it
/// gracefully), its first request head is overdue or it is idle too long
/// (then closes it, gracefully first, dropping it after a short grace).
pub async fn serve<C>(
    conn: C,
    activity: &Activity,
    deadlines: Deadlines,
    mut shutdown: watch::Receiver<bool>,
) -> Ended
where
    C: Closable,
{
    let Deadlines { idle, first_head } = deadlines;
    let mut conn = pin!(conn);
    let mut ended = Ended::Closed;
    let mut give_up: Option<Instant> = None;
    loop {
        let due = [activity.idle_at(idle), activity.first_head_due(first_head)]
            .into_iter()
            .flatten()
            .min();
        let wake = match (give_up, due) {
            (Some(at), _) => at,
            (None, Some(at)) => at,
            (None, None) => Instant::now() + idle,
        };
        tokio::select! {
            _ = conn.as_mut() => return ended,
            _ = shutdown.wait_for(|stop| *stop), if ended == Ended::Closed => {
                ended = Ended::Shutdown;
                conn.as_mut().close_gracefully();
            }
            _ = tokio::time::sleep_until(wake) => {
                if give_up.is_some() {
                    return ended;
                }
                let now = Instant::now();
                let overdue = |at: Option<Instant>| at.is_some_and(|at| at <= now);
                if overdue(activity.first_head_due(first_head)) {
                    ended = Ended::HeaderTimeout;
                    metrics::counter!("cardvault_connections_header_timeout_total").increment(1);
                } else if overdue(activity.idle_at(idle)) {
                    ended = Ended::Idle;
                    metrics::counter!("cardvault_connections_idle_closed_total").increment(1);
                } else {
                    continue;
                }
                conn.as_mut().close_gracefully();
                give_up = Some(now + CLOSE_GRACE);
            }
        }
    }
}

/// Hands `req` to `router` and waits at most `timeout` for the response;
/// `None` when it took longer (the handler is dropped then).
pub async fn routed(
    router: axum::Router,
    req: hyper::Request<hyper::body::Incoming>,
    timeout: Duration,
) -> Option<axum::response::Response> {
    use tower::ServiceExt;
    match tokio::time::timeout(timeout, router.oneshot(req.map(axum::body::Body::new))).await {
        Ok(Ok(response)) => Some(response),
        Ok(Err(never)) => match never {},
        Err(_) => None,
    }
}
