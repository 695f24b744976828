//! The API listener: its own accept loop over TCP with a connection cap, a
//! TLS handshake timeout (rustls, client certificate required), the caller's
//! identity from the verified certificate, HTTP/1.1 and HTTP/2 via hyper
//! with header and request timeouts, and a graceful drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::response::IntoResponse;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::audited::access_denied;
use super::error::ApiError;
use super::identity::{Caller, Policy};
use super::monitor::Monitor;
use super::observe::{new_request_id, set_request_id};
use super::tls;
use crate::audit::{AuditLog, Event, EventKind, Outcome};
use crate::config::LimitsConfig;

/// How long shutdown waits for in-flight requests before closing anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The API listener's parts.
pub struct ApiListener {
    /// TLS acceptor (client certificate required).
    pub acceptor: TlsAcceptor,
    /// Principal → tenant and roles.
    pub policy: Arc<Policy>,
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
    pub async fn run(self, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.limits.max_connections.get()));
        let graceful = GracefulShutdown::new();
        let this = Arc::new(self);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            let (stream, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                metrics::counter!("cardvault_connections_refused_total", "reason" => "limit")
                    .increment(1);
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let watcher = graceful.watcher();
            let this = Arc::clone(&this);
            tokio::spawn(async move {
                let _permit = permit;
                this.serve_connection(stream, peer, watcher).await;
            });
        }
        drop(listener);
        tokio::select! {
            _ = graceful.shutdown() => tracing::info!("drained in-flight requests"),
            _ = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("drain timed out; closing remaining connections"),
        }
    }

    async fn serve_connection(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        let handshake = Duration::from_millis(self.limits.handshake_timeout_ms.get());
        let tls = match tokio::time::timeout(handshake, self.acceptor.accept(stream)).await {
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
        let caller = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|leaf| Caller::from_certificate(leaf, peer, &self.policy));
        let Some(caller) = caller else {
            self.handshake_failed(peer, "no_principal");
            return;
        };
        if caller.access.is_none() {
            tracing::warn!(%peer, principal = %caller.principal, "certificate is valid but its principal is not configured");
        }
        let router = self.router.clone();
        let audit = self.audit.clone();
        let request_timeout = Duration::from_millis(self.limits.request_timeout_ms.get());
        let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            let router = router.clone();
            let caller = caller.clone();
            let audit = audit.clone();
            async move {
                if caller.access.is_none() {
                    let request_id = new_request_id();
                    audit.record(access_denied(
                        &caller,
                        &request_id,
                        "principal not configured",
                    ));
                    let mut response = ApiError::Forbidden.into_response();
                    set_request_id(&mut response, &request_id);
                    return Ok::<_, std::convert::Infallible>(response);
                }
                req.extensions_mut().insert(caller);
                let response = match tokio::time::timeout(
                    request_timeout,
                    router.oneshot(req.map(axum::body::Body::new)),
                )
                .await
                {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_) => ApiError::Unavailable("request timed out").into_response(),
                };
                Ok(response)
            }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(self.limits.header_timeout_ms.get()))
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(256);
        let conn = builder
            .serve_connection(TokioIo::new(tls), service)
            .into_owned();
        metrics::gauge!("cardvault_connections_active").increment(1.0);
        if let Err(e) = watcher.watch(conn).await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
        metrics::gauge!("cardvault_connections_active").decrement(1.0);
    }
}
