//! Per-request observation, the middleware around every API route: a
//! request id (header and handler extension), metrics by route template and
//! outcome, and one log line for a failed request — never the body, never
//! the raw path, which may hold a token or a mistaken PAN.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use super::identity::Caller;

/// The request id of this request (given by the listener, which needs it
/// to answer a timed-out request; else by the observing middleware).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Where the observing middleware leaves the matched route template, for
/// the listener to name in its record of a request that timed out after
/// routing (the handler and middleware are dropped by then).
#[derive(Debug, Default)]
pub struct RouteSlot(std::sync::OnceLock<String>);

impl RouteSlot {
    /// The route template, if the request got as far as routing.
    pub fn route(&self) -> &str {
        self.0.get().map_or("unmatched", String::as_str)
    }
}

/// The middleware: wraps one request.
pub async fn observe(mut req: Request, next: Next) -> Response {
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
    if let Some(slot) = req.extensions().get::<std::sync::Arc<RouteSlot>>() {
        let _ = slot.0.set(route.clone());
    }
    let request_id = match req.extensions().get::<RequestId>() {
        Some(RequestId(id)) => id.clone(),
        None => {
            let id = new_request_id();
            req.extensions_mut().insert(RequestId(id.clone()));
            id
        }
    };
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
    metrics::counter!("cardvault_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status.as_u16().to_string()).increment(1);
    metrics::histogram!("cardvault_request_duration_seconds", "route" => route.clone(), "outcome" => outcome).record(elapsed);
    if let Some(error) = response.extensions().get::<ApiError>() {
        tracing::warn!(%request_id, %route, %method, %principal, status = status.as_u16(), code = error.code(), "request failed");
    }
    set_request_id(&mut response, &request_id);
    response
}

/// A fresh random request id: 16 hex digits.
pub fn new_request_id() -> String {
    let mut bytes = [0u8; 8];
    let _ = crate::random::fill_per_use(&mut bytes);
    format!("{:016x}", u64::from_be_bytes(bytes))
}

/// Puts `request_id` in the response's `x-request-id` header.
pub fn set_request_id(response: &mut Response, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
}
