//! The one way a JSON response is built: its body bytes are wiped when
//! hyper drops them, so a revealed PAN does not linger in freed memory.
//! (Each route family holds its own response shapes.)

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use zeroize::Zeroizing;

use super::error::ApiError;

/// A JSON response whose body bytes are wiped when hyper drops them (hyper's
/// own write buffer may still hold a copy until the connection reuses it).
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            Body::from(bytes::Bytes::from_owner(Zeroizing::new(body))),
        )
            .into_response(),
        Err(_) => ApiError::Internal.into_response(),
    }
}
