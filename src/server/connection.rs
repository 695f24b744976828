//! One HTTP connection's life after its handshake (API and ops listeners
//! alike): it is served until the peer closes it, until shutdown (graceful:
//! in-flight requests finish), or until it has been idle — no request in
//! flight and none finished — for the idle timeout, on HTTP/1 and HTTP/2,
//! before the first request and between requests. A peer that completes
//! the handshake and then sends nothing, only part of a request line, or
//! only the HTTP/2 preface and SETTINGS, is closed after the idle timeout
//! instead of holding a connection slot for ever.

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
}

impl Activity {
    /// A connection that starts now, idle.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub fn request(self: &Arc<Activity>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
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
    /// Closed by shutdown.
    Shutdown,
}

/// Serves `conn` until it ends, shutdown begins (then closes it
/// gracefully) or it is idle for `idle` (then closes it, gracefully first,
/// dropping it after a short grace).
pub async fn serve<C>(
    conn: C,
    activity: &Activity,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Ended
where
    C: Closable,
{
    let mut conn = pin!(conn);
    let mut ended = Ended::Closed;
    let mut give_up: Option<Instant> = None;
    loop {
        let wake = match (give_up, activity.idle_at(idle)) {
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
                if activity.idle_at(idle).is_some_and(|at| at <= Instant::now()) {
                    ended = Ended::Idle;
                    metrics::counter!("cardvault_connections_idle_closed_total").increment(1);
                    conn.as_mut().close_gracefully();
                    give_up = Some(Instant::now() + CLOSE_GRACE);
                }
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
