//! The API listener: the shared accept loop (connection cap, drain), a TLS
//! handshake timeout (rustls, client certificate required), the caller's
//! identity from the verified certificate, the principal's connection
//! share, HTTP/1.1 and HTTP/2 via hyper with header, idle and request
//! timeouts and HTTP/2 keep-alive pings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;

use axum::Router;
use axum::extract::Request;
use axum::response::IntoResponse;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::accept;
pub use super::accept::DRAIN_TIMEOUT;
use super::audited::{access_denied, timed_out};
use super::conn_quota::Shares;
use super::connection::{self, Activity, Ended};
use super::error::ApiError;
use super::identity::{Caller, IdentityRefused};
use super::linger;
use super::monitor::Monitor;
use super::observe::{RequestId, RouteSlot, new_request_id, set_request_id};
use super::reload::Reloadable;
use super::tls;
use crate::audit::{AuditLog, Event, EventKind, Outcome};
use crate::config::LimitsConfig;

/// The API listener's parts.
pub struct ApiListener {
    /// TLS acceptor (client certificate required) and principal → tenant
    /// and roles, both replaced by a reload.
    pub reloadable: Arc<Reloadable>,
    /// Connection, timeout and body limits.
    pub limits: LimitsConfig,
    /// The API routes, wrapped in the observing middleware.
    pub router: Router,
    /// Where failed handshakes and refused principals are recorded.
    pub audit: AuditLog,
    /// Handshake-burst rule.
    pub monitor: Arc<Monitor>,
}

impl ApiListener {
    /// Counts, logs and audits a failed handshake and feeds the burst rule.
    fn handshake_failed(&self, peer: SocketAddr, reason: &'static str) {
        metrics::counter!("cardvault_tls_handshake_failures_total", "reason" => reason)
            .increment(1);
        tracing::warn!(%peer, reason, "TLS handshake failed");
        let mut event = Event::new(EventKind::TlsHandshakeFailed).with_detail(reason);
        event.outcome = Outcome::Denied;
        event.peer = Some(peer.to_string());
        self.audit.record(event);
        self.monitor.handshake_failed(peer.ip());
    }

    /// Accepts until `shutdown`, then drains (up to [`DRAIN_TIMEOUT`]).
    pub async fn run(self, listener: TcpListener, shutdown: watch::Receiver<bool>) {
        let max = self.limits.max_connections.get();
        let shares = Shares::new(
            self.limits.max_connections_per_principal.get(),
            self.limits.max_connections_roleless.get(),
        );
        let this = Arc::new(self);
        let stop = shutdown.clone();
        accept::run(
            listener,
            "api",
            max,
            shutdown,
            move |stream, peer, permit| {
                let this = Arc::clone(&this);
                let shares = Arc::clone(&shares);
                let stop = stop.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    this.serve_connection(stream, peer, &shares, stop).await;
                });
            },
        )
        .await;
    }

    async fn serve_connection(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        shares: &Arc<Shares>,
        shutdown: watch::Receiver<bool>,
    ) {
        let handshake = Duration::from_millis(self.limits.handshake_timeout_ms.get());
        let acceptor = self.reloadable.acceptor();
        let tls = match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                self.handshake_failed(peer, tls::handshake_failure_reason(&e));
                return;
            }
            Err(_) => {
                self.handshake_failed(peer, "timeout");
                return;
            }
        };
        let identified = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
            Some(leaf) => Caller::from_certificate(leaf, peer, &self.reloadable.policy()),
            None => Err(IdentityRefused::NoPrincipal),
        };
        let caller = match identified {
            Ok(caller) => caller,
            Err(refused) => {
                self.handshake_failed(peer, refused.reason());
                return;
            }
        };
        let has_roles = caller.access.as_ref().is_some_and(|a| !a.roles.is_empty());
        let Some(_share) = shares.take(caller.principal.as_str(), has_roles) else {
            metrics::counter!("cardvault_connections_refused_total", "listener" => "api", "reason" => "principal_share")
                .increment(1);
            tracing::warn!(%peer, principal = %caller.principal, has_roles, "connection refused: the principal's connection share is used up");
            let share = if has_roles {
                "per-principal connection share used up"
            } else {
                "connection share of principals without roles used up"
            };
            let mut event = caller
                .event(EventKind::ConnectionRefused)
                .with_detail(share);
            event.outcome = Outcome::Denied;
            self.audit.record(event);
            return;
        };
        if caller.access.is_none() {
            tracing::warn!(%peer, principal = %caller.principal, "certificate is valid but its principal is not configured");
        }
        let activity = Activity::new();
        let service = self.service(caller, Arc::clone(&activity));
        let conn = http_builder(&self.limits)
            .serve_connection(TokioIo::new(tls), service)
            .into_owned();
        metrics::gauge!("cardvault_connections_active").increment(1.0);
        let deadlines = connection::Deadlines {
            idle: Duration::from_millis(self.limits.idle_timeout_ms.get()),
            first_head: Duration::from_millis(self.limits.header_timeout_ms.get()),
        };
        match connection::serve(conn, &activity, deadlines, shutdown).await {
            Ended::Idle => tracing::debug!(%peer, "closed an idle connection"),
            Ended::HeaderTimeout => {
                tracing::debug!(%peer, "closed a connection that sent no request head in time")
            }
            Ended::Closed | Ended::Shutdown => {}
        }
        metrics::gauge!("cardvault_connections_active").decrement(1.0);
    }

    /// The per-connection service: refuses an unconfigured principal (403,
    /// audited), else hands the request to the router under the request
    /// timeout. A request the timeout cuts off is answered 503 with its
    /// request id, logged and audited as `request_timeout`.
    fn service(
        &self,
        caller: Caller,
        activity: Arc<Activity>,
    ) -> impl hyper::service::Service<
        Request<hyper::body::Incoming>,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>>
                 + Send
                 + 'static,
    > + Clone
    + Send
    + 'static {
        let router = self.router.clone();
        let audit = self.audit.clone();
        let reloadable = Arc::clone(&self.reloadable);
        let request_timeout = Duration::from_millis(self.limits.request_timeout_ms.get());
        hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            let in_flight = activity.request();
            let router = router.clone();
            let mut caller = caller.clone();
            // The principals table in force now (a reload may have changed
            // or removed this principal since the handshake).
            caller.access = reloadable.policy().access_of(&caller.principal);
            let audit = audit.clone();
            async move {
                let _in_flight = in_flight;
                let request_id = new_request_id();
                let http1 = linger::is_http1(req.version());
                if caller.access.is_none() {
                    audit.record(access_denied(
                        &caller,
                        &request_id,
                        "principal not configured",
                    ));
                    let mut response = ApiError::Forbidden.into_response();
                    set_request_id(&mut response, &request_id);
                    // Read what the client is still sending, so it reads
                    // this answer (see `linger`).
                    if http1 && !linger::discard(axum::body::Body::new(req.into_body())).await {
                        linger::close_after(&mut response);
                    }
                    return Ok::<_, std::convert::Infallible>(response);
                }
                let slot = Arc::new(RouteSlot::default());
                req.extensions_mut().insert(caller.clone());
                req.extensions_mut().insert(RequestId(request_id.clone()));
                req.extensions_mut().insert(Arc::clone(&slot));
                let response = match connection::routed(router, req, request_timeout).await {
                    Some(response) => response,
                    None => {
                        let route = slot.route();
                        metrics::counter!("cardvault_requests_timed_out_total", "route" => route.to_owned())
                            .increment(1);
                        tracing::warn!(%request_id, %route, principal = %caller.principal, "request timed out");
                        audit.record(timed_out(&caller, &request_id, route));
                        let mut response =
                            ApiError::Unavailable("request timed out").into_response();
                        set_request_id(&mut response, &request_id);
                        if http1 {
                            linger::close_after(&mut response);
                        }
                        response
                    }
                };
                Ok(response)
            }
        })
    }
}

/// HTTP/1.1 and HTTP/2 settings of an API connection: header timeout,
/// HTTP/2 keep-alive pings, and HTTP/2 flow-control windows that bound how
/// many unread body bytes one connection can make the vault buffer.
fn http_builder(limits: &LimitsConfig) -> auto::Builder<TokioExecutor> {
    let keepalive = Duration::from_millis(limits.http2_keepalive_ms.get());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_timeout_ms.get()))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(HTTP2_MAX_STREAMS)
        .initial_stream_window_size(HTTP2_STREAM_WINDOW)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
        .keep_alive_interval(Some(keepalive))
        .keep_alive_timeout(keepalive);
    builder
}

/// Concurrent HTTP/2 streams on one connection.
const HTTP2_MAX_STREAMS: u32 = 64;
/// Unread bytes one HTTP/2 stream may send ahead.
const HTTP2_STREAM_WINDOW: u32 = 256 << 10;
/// Unread bytes one HTTP/2 connection may send ahead, all streams together.
const HTTP2_CONNECTION_WINDOW: u32 = 1 << 20;
