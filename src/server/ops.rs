//! The plain-HTTP ops listener: `/healthz` (the process answers),
//! `/readyz` (503 once shutdown has begun, through the drain delay), both
//! with a small JSON body, and `/metrics` (Prometheus
//! text). Keep it on loopback or a management network. It has its own
//! small connection cap and the API's header, request and idle timeouts, so
//! idle or half-sent connections to it can neither pile up nor take the
//! file descriptors the API listener needs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::accept;
use super::connection::{self, Activity};
use crate::config::LimitsConfig;
use crate::runtime::custody::{Custody, SealStatus};
use crate::store::Readiness;
use crate::vault::Vault;

/// What `/healthz` and `/readyz` answer: `{"state": "serving" |
/// "draining", "storage": "ready" | "unreachable" | "commit_stalled",
/// "sealed", "shares_received", "threshold", "version"}`.
fn status(ready: bool, storage: Readiness, seal: SealStatus) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "state": if ready { "serving" } else { "draining" },
        "storage": storage.as_str(),
        "sealed": seal.sealed,
        "shares_received": seal.shares_received,
        "threshold": seal.threshold,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// The ops routes; `ready` turns false when shutdown begins (then
/// `/readyz` answers 503, `/healthz` still 200). A sealed vault is alive
/// (`/healthz` 200) but not ready (`/readyz` 503 with the seal status);
/// so is one whose store cannot commit (a database unreachable or a
/// commit stalled), until it can again.
pub fn router(
    ready: Arc<AtomicBool>,
    custody: Arc<Custody>,
    vault: Arc<Vault>,
    metrics: PrometheusHandle,
) -> Router {
    let live = Arc::clone(&ready);
    let live_custody = Arc::clone(&custody);
    let live_vault = Arc::clone(&vault);
    let process = metrics_process::Collector::default();
    process.describe();
    Router::new()
        .route(
            "/healthz",
            get(move || {
                std::future::ready(status(
                    live.load(Ordering::SeqCst),
                    live_vault.store_readiness(),
                    live_custody.status(),
                ))
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::SeqCst);
                let storage = vault.store_readiness();
                let seal = custody.status();
                let code = if ready && !seal.sealed && storage == Readiness::Ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                std::future::ready((code, status(ready, storage, seal)))
            }),
        )
        .route(
            "/metrics",
            get(move || {
                // CPU, memory and descriptors of the process, read now.
                process.collect();
                std::future::ready(metrics.render())
            }),
        )
}

/// Serves `router` on `listener` (plain HTTP/1.1) with at most `max`
/// connections and the timeouts of `limits`, until `shutdown`.
pub async fn run(
    listener: TcpListener,
    router: Router,
    max: usize,
    limits: LimitsConfig,
    shutdown: watch::Receiver<bool>,
) {
    let stop = shutdown.clone();
    accept::run(
        listener,
        "ops",
        max,
        shutdown,
        move |stream, _peer, permit| {
            let router = router.clone();
            let stop = stop.clone();
            let limits = limits.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let activity = Activity::new();
                let in_flight = std::sync::Arc::clone(&activity);
                let request_timeout = Duration::from_millis(limits.request_timeout_ms.get());
                let service = hyper::service::service_fn(
                    move |req: axum::extract::Request<hyper::body::Incoming>| {
                        let _busy = in_flight.request();
                        let router = router.clone();
                        async move {
                            let _busy = _busy;
                            let response = connection::routed(router, req, request_timeout)
                                .await
                                .unwrap_or_else(|| StatusCode::SERVICE_UNAVAILABLE.into_response());
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    },
                );
                let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_millis(limits.header_timeout_ms.get()));
                let conn = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                let deadlines = connection::Deadlines {
                    idle: Duration::from_millis(limits.idle_timeout_ms.get()),
                    first_head: Duration::from_millis(limits.header_timeout_ms.get()),
                };
                connection::serve(conn, &activity, deadlines, stop).await;
            });
        },
    )
    .await;
}
