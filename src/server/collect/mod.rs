//! The hosted card fields' public listener (docs/collect.md): HTTPS with a
//! server certificate only, on its own address, serving the card frame,
//! its assets, the shop's `cardvault.js` and the submit route — nothing of
//! the mTLS API. It faces the internet, so every request is presumed
//! hostile: its own connection cap and per-IP share, handshake, header,
//! idle and request timeouts, a few-KiB body limit, small HTTP/1 and
//! HTTP/2 buffers, and the security headers on every answer. It runs on
//! its own runtime whose threads have a lower priority than the rest of
//! the vault (`serve` starts it), so a flood here leaves the mTLS API its
//! CPU.

mod pages;
mod submit;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::accept;
use super::conn_quota::Shares;
use super::connection::{self, Activity};
use super::error::ApiError;
use super::monitor::Monitor;
use crate::audit::{AuditLog, Event, EventKind, Outcome};
use crate::config::CollectLimits;
use crate::runtime::collect::{Collect, CollectError};
use crate::vault::sessions::SessionId;

/// The public listener's scripts and styles with their integrity hashes
/// (PCI DSS 6.4.3's inventory): path → (`sha384-…`, bytes).
pub fn inventory() -> [(&'static str, String, usize); 3] {
    let hashes = pages::integrity();
    [
        (
            "/collect/v1/frame.js",
            hashes.frame_js.clone(),
            pages::FRAME_JS.len(),
        ),
        (
            "/collect/v1/frame.css",
            hashes.frame_css.clone(),
            pages::FRAME_CSS.len(),
        ),
        (
            "/collect/v1/cardvault.js",
            hashes.cardvault_js.clone(),
            pages::CARDVAULT_JS.len(),
        ),
    ]
}

/// The frame's Content-Security-Policy as a template (`{nonce}` is fresh
/// per answer, `{origin}` the session's), for the evidence bundle.
pub fn frame_policy() -> String {
    pages::frame_csp("{nonce}", "{session origin}")
}

/// The HTML a shop puts on its checkout page to load `cardvault.js` from
/// the listener at `public_url`, pinned by its integrity hash
/// (`cardvault collect snippet`).
pub fn snippet(public_url: &str) -> String {
    format!(
        "<script src=\"{}/collect/v1/cardvault.js\" integrity=\"{}\" crossorigin=\"anonymous\"></script>",
        public_url.trim_end_matches('/'),
        pages::integrity().cardvault_js
    )
}

/// What the public handlers share.
pub struct Public {
    /// Sessions and rules.
    pub collect: Arc<Collect>,
    /// Where refusals, frames and submits are recorded.
    pub audit: AuditLog,
    /// The card-testing alert.
    pub monitor: Arc<Monitor>,
    /// Bounds.
    pub limits: CollectLimits,
    /// This listener's own origin (`https://host[:port]`): the only
    /// `Origin` a submit may carry.
    pub origin: String,
    /// Submit bodies held in memory, all public connections together.
    pub bodies: super::budget::BodyBudget,
}

impl Public {
    /// The body budget of a listener with `limits`: every stream of every
    /// connection holding a whole body at once fits, so it never refuses a
    /// request the connection cap and body limit let through; it is the
    /// reader's accounting, shared with the mTLS API's.
    pub fn body_budget(limits: &CollectLimits) -> super::budget::BodyBudget {
        super::budget::BodyBudget::new(
            limits.max_connections.get() * HTTP2_MAX_STREAMS as usize * limits.max_body_bytes.get(),
            Duration::from_secs(2),
        )
    }
}

/// The peer of the connection a request came on.
#[derive(Clone, Copy)]
struct Peer(SocketAddr);

/// The public listener's parts.
pub struct PublicListener {
    /// Shared with the handlers.
    pub public: Arc<Public>,
    /// TLS with the `[collect]` certificate, no client certificate.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The handshake rate (`[collect.limits] handshakes_per_second`).
    pub handshakes: governor::DefaultDirectRateLimiter,
}

impl PublicListener {
    /// The handshake rate of `limits`, its burst the same.
    pub fn handshake_rate(limits: &CollectLimits) -> governor::DefaultDirectRateLimiter {
        governor::RateLimiter::direct(governor::Quota::per_second(limits.handshakes_per_second))
    }
}

/// Concurrent HTTP/2 streams on one public connection.
const HTTP2_MAX_STREAMS: u32 = 16;
/// Unread bytes one HTTP/2 stream or connection may send ahead.
const HTTP2_WINDOW: u32 = 64 << 10;
/// HTTP/1 read buffer (hyper's smallest) and HTTP/2 header list bound.
const MAX_HEADER_BYTES: usize = 8192;

impl PublicListener {
    /// Accepts until `shutdown`, then drains.
    pub async fn run(self, listener: TcpListener, shutdown: watch::Receiver<bool>) {
        let limits = self.public.limits.clone();
        let shares = Shares::new(limits.max_connections_per_ip.get(), 1);
        let router = router(Arc::clone(&self.public));
        let this = Arc::new(self);
        let stop = shutdown.clone();
        accept::run(
            listener,
            "collect",
            limits.max_connections.get(),
            shutdown,
            move |stream, peer, permit| {
                let Some(share) = shares.take(&peer.ip().to_string(), true) else {
                    metrics::counter!("cardvault_connections_refused_total", "listener" => "collect", "reason" => "ip_share")
                        .increment(1);
                    return;
                };
                let this = Arc::clone(&this);
                let router = router.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let _share = share;
                    this.serve_connection(stream, peer, router, stop).await;
                });
            },
        )
        .await;
    }

    async fn serve_connection(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        router: Router,
        shutdown: watch::Receiver<bool>,
    ) {
        let limits = &self.public.limits;
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(limits.handshake_timeout_ms.get());
        if tokio::time::timeout_at(deadline, self.handshakes.until_ready())
            .await
            .is_err()
        {
            metrics::counter!("cardvault_connections_refused_total", "listener" => "collect", "reason" => "handshake_rate")
                .increment(1);
            return;
        }
        let tls = match tokio::time::timeout_at(deadline, self.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                let reason = super::tls::handshake_failure_reason(&e);
                metrics::counter!("cardvault_collect_handshake_failures_total", "reason" => reason)
                    .increment(1);
                return;
            }
            Err(_) => {
                metrics::counter!("cardvault_collect_handshake_failures_total", "reason" => "timeout")
                    .increment(1);
                return;
            }
        };
        let activity = Activity::new();
        let request_timeout = Duration::from_millis(limits.request_timeout_ms.get());
        let service = {
            let activity = Arc::clone(&activity);
            hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                let in_flight = activity.request();
                let router = router.clone();
                req.extensions_mut().insert(Peer(peer));
                async move {
                    let _in_flight = in_flight;
                    let response = connection::routed(router, req, request_timeout)
                        .await
                        .unwrap_or_else(|| {
                            metrics::counter!("cardvault_collect_requests_timed_out_total")
                                .increment(1);
                            let mut response =
                                public_error(ApiError::Unavailable("request timed out"));
                            response
                                .headers_mut()
                                .insert(header::CONNECTION, HeaderValue::from_static("close"));
                            secure(response)
                        });
                    Ok::<_, std::convert::Infallible>(response)
                }
            })
        };
        let conn = http_builder(limits)
            .serve_connection(TokioIo::new(tls), service)
            .into_owned();
        metrics::gauge!("cardvault_collect_connections_active").increment(1.0);
        let deadlines = connection::Deadlines {
            idle: Duration::from_millis(limits.idle_timeout_ms.get()),
            first_head: Duration::from_millis(limits.header_timeout_ms.get()),
        };
        connection::serve(conn, &activity, deadlines, shutdown).await;
        metrics::gauge!("cardvault_collect_connections_active").decrement(1.0);
    }
}

/// HTTP/1.1 and HTTP/2 settings of a public connection: small buffers and
/// windows, few streams, the header timeout.
fn http_builder(limits: &CollectLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_timeout_ms.get()))
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(HTTP2_MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .initial_stream_window_size(HTTP2_WINDOW)
        .initial_connection_window_size(HTTP2_WINDOW)
        .keep_alive_interval(Some(Duration::from_secs(10)))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

/// The public routes: the frame, its assets, the shop's script and the
/// submit. Anything else is 404, every answer carries the security headers.
fn router(public: Arc<Public>) -> Router {
    let hsts = HeaderValue::from_str(&format!(
        "max-age={}; includeSubDomains",
        public.limits.hsts_max_age_s.get()
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("max-age=31536000"));
    Router::new()
        .route("/collect/v1/frame/{id}", get(frame))
        .route(
            "/collect/v1/frame.js",
            get(|| async {
                pages::asset(pages::FRAME_JS, "text/javascript; charset=utf-8", false)
            }),
        )
        .route(
            "/collect/v1/frame.css",
            get(|| async { pages::asset(pages::FRAME_CSS, "text/css; charset=utf-8", false) }),
        )
        .route(
            "/collect/v1/cardvault.js",
            get(|| async {
                pages::asset(pages::CARDVAULT_JS, "text/javascript; charset=utf-8", true)
            }),
        )
        .route("/collect/v1/sessions/{id}/submit", post(submit::submit))
        .fallback(|| async { public_error(ApiError::NotFound) })
        .method_not_allowed_fallback(|| async { public_error(ApiError::MethodNotAllowed) })
        .layer(axum::middleware::map_response(move |response: Response| {
            let hsts = hsts.clone();
            async move {
                let mut response = secure(response);
                response
                    .headers_mut()
                    .insert(header::STRICT_TRANSPORT_SECURITY, hsts);
                response
            }
        }))
        .with_state(public)
}

/// The headers every public answer carries; the default CSP and no-store
/// unless the handler set its own.
fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        "permissions-policy",
        HeaderValue::from_static(
            "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=(), interest-cohort=()",
        ),
    );
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(pages::DEFAULT_CSP));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// An API error as the public listener answers it: the code and a fixed
/// message (403 says the request did not come from the frame, not that a
/// certificate is missing).
fn public_error(error: ApiError) -> Response {
    if error == ApiError::Forbidden {
        let body = serde_json::json!({"error": {
            "code": error.code(),
            "message": "this request did not come from the card frame it names",
        }});
        return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    }
    error.into_response()
}

/// An audit event of the public listener about `session` from `peer`.
fn event(kind: EventKind, session: Option<&SessionId>, peer: SocketAddr) -> Event {
    let mut event = Event::new(kind);
    event.session = session.map(ToString::to_string);
    event.peer = Some(peer.to_string());
    event
}

/// Records a refusal: counted by reason, audited (never the input).
fn refused(
    public: &Public,
    session: Option<&SessionId>,
    tenant: Option<&str>,
    peer: SocketAddr,
    reason: &'static str,
    error: ApiError,
) {
    metrics::counter!("cardvault_collect_refusals_total", "reason" => reason).increment(1);
    let mut event = event(EventKind::CollectRefused, session, peer).with_detail(reason);
    event.tenant = tenant.map(str::to_owned);
    event.outcome = Outcome::Denied;
    event.code = Some(error.code().to_owned());
    public.audit.record(event);
}

/// `GET /collect/v1/frame/{id}`.
async fn frame(
    State(public): State<Arc<Public>>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let not_found = || {
        pages::html(
            StatusCode::NOT_FOUND,
            "<!doctype html><html lang=\"en\"><title>Not found</title><p>No such card form.</p></html>".into(),
            pages::DEFAULT_CSP,
        )
    };
    let Some(id) = id.ok().and_then(|Path(raw)| SessionId::parse(&raw)) else {
        metrics::counter!("cardvault_collect_refusals_total", "reason" => "session_not_found")
            .increment(1);
        return not_found();
    };
    let frame = match public.collect.frame(&id).await {
        Ok(frame) => frame,
        Err(CollectError::NotFound) => {
            refused(
                &public,
                Some(&id),
                None,
                peer,
                "session_not_found",
                ApiError::SessionNotFound,
            );
            return not_found();
        }
        Err(e) => return public_error(super::error::collect_error(&e)),
    };
    let code = frame.open.as_ref().err().map(pages::closed_code);
    let mut csp_bytes = [0u8; 16];
    if crate::random::fill(&mut csp_bytes).is_err() {
        return public_error(ApiError::Unavailable("the random source failed"));
    }
    let csp_nonce = data_encoding::BASE64.encode(&csp_bytes);
    let page = pages::frame_page(&id.to_string(), &frame, &csp_nonce, code);
    let mut event = event(EventKind::CollectFrameServed, Some(&id), peer);
    event.tenant = Some(frame.tenant.clone());
    if let Some(code) = code {
        event.detail = Some(format!("closed: {code}"));
    }
    public.audit.record(event);
    metrics::counter!("cardvault_collect_frames_served_total").increment(1);
    pages::html(
        StatusCode::OK,
        page,
        &pages::frame_csp(&csp_nonce, &frame.origin),
    )
}
