//! The plain-HTTP ops listener, open from the start of `serve` (before the
//! KEK and the store): `/healthz` (the process answers; starting, serving
//! or draining), `/readyz` (200 only when serving: 503 while starting,
//! sealed, with the store unable to commit, and once shutdown has begun,
//! through the drain delay), both with a small JSON body, and `/metrics`
//! (Prometheus text). Keep it on loopback or a management network. It has its own
//! small connection cap and the API's header, request and idle timeouts, so
//! idle or half-sent connections to it can neither pile up nor take the
//! file descriptors the API listener needs.

use std::sync::Arc;
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
use super::phase::Phase;
use crate::config::LimitsConfig;

/// The ops routes, answering from the moment the port opens (see
/// [`Phase`]): `/healthz` 200 while the process runs — starting, serving
/// or draining — with the state; `/readyz` 200 only when serving, unsealed
/// and the store can commit (503 while starting, sealed, draining or with
/// the database unreachable or a commit stalled); `/metrics` with the
/// state gauges set at each scrape.
pub fn router(phase: Arc<Phase>, metrics: PrometheusHandle) -> Router {
    let live = Arc::clone(&phase);
    let ready = Arc::clone(&phase);
    let process = metrics_process::Collector::default();
    process.describe();
    Router::new()
        .route(
            "/healthz",
            get(move || std::future::ready(axum::Json(live.status().body))),
        )
        .route(
            "/readyz",
            get(move || {
                let status = ready.status();
                let code = if status.ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                std::future::ready((code, axum::Json(status.body)))
            }),
        )
        .route(
            "/metrics",
            get(move || {
                // CPU, memory and descriptors of the process, and the
                // vault's state, read now.
                process.collect();
                phase.publish();
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
