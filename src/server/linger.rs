//! Early answers on HTTP/1, as nginx gives them (`discard_request_body`,
//! `lingering_close`): a request refused before its body was read — 413,
//! 403, 415, a 429 — is answered only after the rest of the body has been
//! read and discarded, within [`LINGER_BYTES`] and [`LINGER_TIME`]. A
//! client that sends its whole body before reading (Python's
//! `http.client`, `curl` without `Expect`) then reads the answer instead of
//! a connection reset. When the body was discarded whole, the connection
//! stays usable; a 413, or a body too large or too slow to discard, is
//! answered with `Connection: close`, so no client reuses a connection the
//! vault is closing. Nothing discarded is kept: frames are dropped as they
//! arrive. HTTP/2 needs none of this (a stream is reset on its own).

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Version, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

/// Most bytes of an unread body discarded before the answer.
pub const LINGER_BYTES: u64 = 64 << 20;
/// Longest time spent discarding an unread body.
pub const LINGER_TIME: Duration = Duration::from_secs(5);

/// The body behind [`Shared`], and whether it was read to its end (a
/// chunked body never says so itself).
struct Slot {
    body: Option<Body>,
    ended: bool,
}

impl Slot {
    fn complete(&self) -> bool {
        self.ended || self.body.as_ref().is_none_or(HttpBody::is_end_stream)
    }
}

/// A request body the handler reads through, while the middleware keeps
/// hold of what it leaves unread.
struct Shared(Arc<Mutex<Slot>>);

impl HttpBody for Shared {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let polled = match slot.body.as_mut() {
            Some(body) => std::pin::Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        };
        if matches!(polled, Poll::Ready(None)) {
            slot.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.0.lock().map(|slot| slot.complete()).unwrap_or(true)
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .lock()
            .ok()
            .and_then(|slot| slot.body.as_ref().map(HttpBody::size_hint))
            .unwrap_or_default()
    }
}

/// Reads and drops what is left of `body`, within the bounds; whether it
/// all arrived.
pub async fn discard(body: Body) -> bool {
    use http_body_util::BodyExt as _;
    let mut body = body;
    let mut seen = 0u64;
    let drained = tokio::time::timeout(LINGER_TIME, async {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Some(data) = frame.data_ref() {
                        seen += data.len() as u64;
                        if seen > LINGER_BYTES {
                            return false;
                        }
                    }
                }
                Err(_) => return false,
            }
        }
        true
    })
    .await;
    drained.unwrap_or(false)
}

/// Marks `response` as the connection's last (HTTP/1 only).
pub fn close_after(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

/// Whether `version` is HTTP/1.x.
pub fn is_http1(version: Version) -> bool {
    version == Version::HTTP_11 || version == Version::HTTP_10 || version == Version::HTTP_09
}

/// The middleware: on HTTP/1, a response to a request whose body was not
/// read to its end waits until the rest is discarded (bounded) and closes
/// the connection.
pub async fn linger(req: Request, next: Next) -> Response {
    if !is_http1(req.version()) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    if HttpBody::is_end_stream(&body) {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let slot = Arc::new(Mutex::new(Slot {
        body: Some(body),
        ended: false,
    }));
    let shared = Body::new(Shared(Arc::clone(&slot)));
    let mut response = next.run(Request::from_parts(parts, shared)).await;
    let rest = slot
        .lock()
        .ok()
        .and_then(|mut slot| (!slot.complete()).then(|| slot.body.take()).flatten());
    if let Some(rest) = rest {
        let whole = discard(rest).await;
        if !whole || response.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            close_after(&mut response);
        }
    }
    response
}
