//! The mTLS service: the API listener (rustls, client certificate required,
//! own accept loop with a handshake timeout and a connection cap, HTTP/1.1
//! and HTTP/2 via hyper, graceful drain on shutdown) and the plain-HTTP ops
//! listener (`/healthz`, `/readyz`, `/metrics`). Thin: all card logic is in
//! [`crate::vault`].

pub mod api;
pub mod error;
pub mod identity;
pub mod metrics;
pub mod monitor;
pub mod ratelimit;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::audit::{AuditLog, Event, EventKind, Outcome};
use crate::config::{Config, LimitsConfig};
use crate::crypto::KeyFileProvider;
use crate::vault::{Vault, VaultOptions};
use api::RequestId;
use error::ApiError;
use identity::{Caller, Policy};
use monitor::Monitor;

/// How long shutdown waits for in-flight requests before closing anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// TLS configuration.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Binding a listener.
    #[error("cannot listen on {addr}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// A running server: its bound addresses and a handle to stop it.
pub struct Running {
    /// Where the API listens (the real port when the config said 0).
    pub api_addr: SocketAddr,
    /// Where the ops listener listens.
    pub ops_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    ready: Arc<AtomicBool>,
    api: JoinHandle<()>,
    ops: JoinHandle<()>,
}

impl Running {
    /// Stops accepting, drains in-flight requests (up to [`DRAIN_TIMEOUT`])
    /// and returns when both listeners are closed.
    pub async fn shutdown(self) {
        self.ready.store(false, Ordering::SeqCst);
        let _ = self.shutdown.send(true);
        let _ = self.api.await;
        let _ = self.ops.await;
    }
}

/// The whole vault as `serve` runs it: KEK provider, audit trail, vault
/// core and both listeners, started and stopped in the right order.
pub struct Service {
    /// Where the API listens.
    pub api_addr: SocketAddr,
    /// Where the ops listener listens.
    pub ops_addr: SocketAddr,
    running: Running,
    vault: Arc<Vault>,
    audit: AuditLog,
}

impl Service {
    /// Refuses private keys readable by others and directories owned by
    /// another user, opens the KEK, the audit trail (which must be writable:
    /// a vault that cannot account for reveals does not start) and the
    /// vault, then starts serving and records `vault_start`.
    pub async fn launch(config: &Config) -> anyhow::Result<Service> {
        crate::hardening::refuse_unsafe_files(
            &[
                ("TLS private key (api.key)", &config.api.key),
                ("KEK file (storage.key_file)", &config.storage.key_file),
            ],
            &[
                (
                    "data directory (storage.data_dir)",
                    &config.storage.data_dir,
                ),
                ("audit directory (audit.dir)", &config.audit.dir),
            ],
        )?;
        let provider = Arc::new(KeyFileProvider::open(&config.storage.key_file)?);
        let audit = AuditLog::open(config.audit.settings(), provider.as_ref())?;
        let mut options = VaultOptions {
            tenant_modes: config.tenant_modes(),
            audit: Some(audit.clone()),
            ..VaultOptions::default()
        };
        options.store.min_free_bytes = config.storage.min_free_bytes;
        let vault = Arc::new(Vault::open(&config.storage.data_dir, provider, options)?);
        let running = start(config, Arc::clone(&vault), audit.clone()).await?;
        audit.record(Event::new(EventKind::VaultStart).with_detail(format!(
            "api {} ops {} version {}",
            running.api_addr,
            running.ops_addr,
            env!("CARGO_PKG_VERSION")
        )));
        Ok(Service {
            api_addr: running.api_addr,
            ops_addr: running.ops_addr,
            running,
            vault,
            audit,
        })
    }

    /// Drains and stops the listeners, closes the vault (exact counters),
    /// records `vault_stop` and closes the audit trail.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.running.shutdown().await;
        let closed = match Arc::try_unwrap(self.vault) {
            Ok(vault) => vault.close().await.map_err(anyhow::Error::from),
            Err(_) => {
                tracing::warn!(
                    "vault still referenced at shutdown; closing without final counters"
                );
                Ok(())
            }
        };
        self.audit.record(Event::new(EventKind::VaultStop));
        self.audit.close().await?;
        closed
    }
}

/// Binds both listeners and starts serving.
pub async fn start(
    config: &Config,
    vault: Arc<Vault>,
    audit: AuditLog,
) -> Result<Running, ServerError> {
    let tls = tls::server_config(&config.api)?;
    let metrics = metrics::handle();
    let (api_listener, api_addr) = bind(config.api.listen).await?;
    let (ops_listener, ops_addr) = bind(config.ops.listen).await?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let ready = Arc::new(AtomicBool::new(true));
    let monitor = Arc::new(Monitor::new(config, audit.clone()));
    let state = Arc::new(api::AppState {
        vault,
        limits: config.limits.clone(),
        audit: audit.clone(),
        monitor: Arc::clone(&monitor),
        rates: ratelimit::RateLimits::new(&config.limits),
    });
    let router = api::router(state).layer(middleware::from_fn(observe));
    let listener = ApiListener {
        acceptor: TlsAcceptor::from(tls),
        policy: Arc::new(Policy::from_config(config)),
        limits: config.limits.clone(),
        router,
        audit,
        monitor,
    };
    let api = tokio::spawn(listener.run(api_listener, shutdown_rx.clone()));
    let ops_router = ops_router(Arc::clone(&ready), metrics);
    let mut ops_shutdown = shutdown_rx;
    let ops = tokio::spawn(async move {
        let stop = async move {
            let _ = ops_shutdown.wait_for(|stop| *stop).await;
        };
        if let Err(e) = axum::serve(ops_listener, ops_router)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "ops listener failed");
        }
    });
    tracing::info!(api = %api_addr, ops = %ops_addr, "cardvault listening");
    Ok(Running {
        api_addr,
        ops_addr,
        shutdown,
        ready,
        api,
        ops,
    })
}

/// Binds `addr`; returns the listener and the address it really got (the
/// port when `addr` asked for 0).
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    let bound = async {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        Ok((listener, local))
    };
    bound
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

fn ops_router(
    ready: Arc<AtomicBool>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::SeqCst);
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        )
}

struct ApiListener {
    acceptor: TlsAcceptor,
    policy: Arc<Policy>,
    limits: LimitsConfig,
    router: Router,
    audit: AuditLog,
    monitor: Arc<Monitor>,
}

impl ApiListener {
    /// Counts, logs and audits a failed handshake and feeds the burst rule.
    fn handshake_failed(&self, peer: SocketAddr, reason: &'static str) {
        ::metrics::counter!("cardvault_tls_handshake_failures_total", "reason" => reason)
            .increment(1);
        tracing::warn!(%peer, reason, "TLS handshake failed");
        let mut event = Event::new(EventKind::TlsHandshakeFailed).with_detail(reason);
        event.outcome = Outcome::Denied;
        event.peer = Some(peer.to_string());
        self.audit.record(event);
        self.monitor.handshake_failed(peer.ip());
    }

    async fn run(self, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.limits.max_connections));
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
                ::metrics::counter!("cardvault_connections_refused_total", "reason" => "limit")
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
        let handshake = Duration::from_millis(self.limits.handshake_timeout_ms);
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
        let request_timeout = Duration::from_millis(self.limits.request_timeout_ms);
        let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            let router = router.clone();
            let caller = caller.clone();
            let audit = audit.clone();
            async move {
                if caller.access.is_none() {
                    let request_id = request_id();
                    audit.record(api::access_denied(
                        &caller,
                        &request_id,
                        "principal not configured",
                    ));
                    let mut response = ApiError::Forbidden.into_response();
                    if let Ok(value) = HeaderValue::from_str(&request_id) {
                        response.headers_mut().insert("x-request-id", value);
                    }
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
            .header_read_timeout(Duration::from_millis(self.limits.header_timeout_ms))
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(256);
        let conn = builder
            .serve_connection(TokioIo::new(tls), service)
            .into_owned();
        ::metrics::gauge!("cardvault_connections_active").increment(1.0);
        if let Err(e) = watcher.watch(conn).await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
        ::metrics::gauge!("cardvault_connections_active").decrement(1.0);
    }
}

/// Per-request observation: request id header, metrics by route template
/// and outcome, and one log line for a failed request (never the body, never
/// the raw path, which may hold a token or a mistaken PAN).
async fn observe(mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let principal = req
        .extensions()
        .get::<Caller>()
        .map(|c| c.principal.as_str().to_owned())
        .unwrap_or_default();
    let request_id = request_id();
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let mut response = next.run(req).await;
    let status = response.status();
    let outcome = if status.is_success() {
        "ok"
    } else if status.is_client_error() {
        "client_error"
    } else {
        "server_error"
    };
    let elapsed = start.elapsed().as_secs_f64();
    ::metrics::counter!("cardvault_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status.as_u16().to_string()).increment(1);
    ::metrics::histogram!("cardvault_request_duration_seconds", "route" => route.clone(), "outcome" => outcome).record(elapsed);
    if let Some(error) = response.extensions().get::<ApiError>() {
        tracing::warn!(%request_id, %route, %method, %principal, status = status.as_u16(), code = error.code(), "request failed");
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

fn request_id() -> String {
    let mut bytes = [0u8; 8];
    let _ = crate::random::fill(&mut bytes);
    format!("{:016x}", u64::from_be_bytes(bytes))
}
