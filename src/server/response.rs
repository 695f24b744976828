//! Response shapes of the API (docs/openapi.json) and the one way a JSON
//! response is built: its body bytes are wiped when hyper drops them, so a
//! revealed PAN does not linger in freed memory.

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use zeroize::Zeroizing;

use super::error::{ApiError, ErrorObject};
use crate::domain::Pan;
use crate::vault::{Revealed, TokenInfo};

/// `{"token", "bin", "last4", "brand"}`.
#[derive(Serialize)]
pub struct TokenView {
    token: String,
    bin: Option<String>,
    last4: String,
    brand: &'static str,
    /// When an expiring token expires (absent for tokens that do not).
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
}

impl From<&TokenInfo> for TokenView {
    fn from(info: &TokenInfo) -> TokenView {
        TokenView {
            token: info.token.to_string(),
            bin: info.bin.map(|b| b.to_string()),
            last4: info.last4.to_string(),
            brand: info.brand.as_str(),
            expires_at: info.expires_ms.map(created_at),
        }
    }
}

/// `{"token", "bin", "last4", "brand", "expiry"?, "created_at"}`.
#[derive(Serialize)]
pub struct MetadataView {
    #[serde(flatten)]
    token: TokenView,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiry: Option<String>,
    created_at: String,
}

impl From<&TokenInfo> for MetadataView {
    fn from(info: &TokenInfo) -> MetadataView {
        MetadataView {
            token: TokenView::from(info),
            expiry: info.expiry.map(|e| e.to_string()),
            created_at: created_at(info.created_ms),
        }
    }
}

/// The PAN of a detokenize response, serialized straight from the `Pan`.
struct RevealedPan(Pan);

impl Serialize for RevealedPan {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose_str())
    }
}

/// A security code on its way out: written straight into the body, wiped
/// on drop.
struct RevealedCvc(zeroize::Zeroizing<String>);

impl Serialize for RevealedCvc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// `{"pan", "expiry"?, "cvc"?}` (`cvc` only when asked for: the held code,
/// or `null`).
#[derive(Serialize)]
pub struct RevealView {
    pan: RevealedPan,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiry: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cvc: Option<Option<RevealedCvc>>,
}

impl RevealView {
    /// Adds the answer to `include_cvc`: the code, or `null`.
    pub fn with_cvc(mut self, cvc: Option<zeroize::Zeroizing<String>>) -> RevealView {
        self.cvc = Some(cvc.map(RevealedCvc));
        self
    }
}

impl From<Revealed> for RevealView {
    fn from(r: Revealed) -> RevealView {
        RevealView {
            expiry: r.expiry.map(|e| e.to_string()),
            pan: RevealedPan(r.pan),
            cvc: None,
        }
    }
}

/// One result of a batch: the value or `{"error": {...}}`.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Item<T> {
    /// The item's value.
    Ok(T),
    /// The item's error.
    Err {
        /// Code and fixed message.
        error: ErrorObject,
    },
}

/// `{"results": [...]}` in input order.
#[derive(Serialize)]
pub struct Results<T> {
    /// One per input item.
    pub results: Vec<Item<T>>,
}

/// `GET /v1/admin/alerts`: `{"blocked": [...]}`.
#[derive(Serialize)]
pub struct BlockList {
    /// Blocked principals.
    pub blocked: Vec<String>,
}

/// `POST /v1/admin/alerts/clear`: `{"principal", "was_blocked"}`.
#[derive(Serialize)]
pub struct Cleared {
    /// Whose block was lifted.
    pub principal: String,
    /// Whether it was blocked.
    pub was_blocked: bool,
}

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

/// RFC 3339 UTC time of `ms` since the epoch.
pub fn created_at(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
