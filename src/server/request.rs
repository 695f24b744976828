//! Reading requests: JSON bodies (JSON only, size-limited, unknown fields
//! refused, card security codes / track data / PINs refused), the request
//! types of every route, and parsing their fields into domain types with
//! fixed client-facing messages. Values that may hold card data are
//! [`SecretString`]s (wiped on drop, never printed); nothing here logs.

use std::collections::HashMap;

use axum::extract::Request;
use axum::extract::rejection::PathRejection;
use axum::http::header;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use zeroize::Zeroizing;

use super::error::ApiError;
use crate::domain::{Expiry, Pan, Token};

/// Field names that announce sensitive authentication data, which PCI DSS
/// 3.3.1 forbids storing: refused outright.
const SENSITIVE_FIELDS: [&str; 12] = [
    "cvv",
    "cvc",
    "cid",
    "csc",
    "cav",
    "security_code",
    "securitycode",
    "track",
    "magstripe",
    "pin",
    "pinblock",
    "pin_block",
];

fn names_sensitive_data(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SENSITIVE_FIELDS
        .iter()
        .any(|s| key == *s || (s.len() > 3 && key.contains(s)) || key.starts_with(s))
}

/// Reads a JSON body: `application/json` only (415), at most `limit` bytes
/// (413), no sensitive authentication data, no unknown fields (400). Error
/// messages are fixed; the body is wiped after parsing.
pub async fn read_json<T: DeserializeOwned>(req: Request, limit: usize) -> Result<T, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    let collected = Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                ApiError::PayloadTooLarge
            } else {
                ApiError::InvalidRequest("could not read the request body")
            }
        })?;
    let bytes = Zeroizing::new(Vec::from(collected.to_bytes()));
    // Every request type refuses unknown fields, so a body naming card
    // security codes, track data or PINs never parses; only then is it worth
    // a second look to choose the message.
    serde_json::from_slice(&bytes).map_err(|_| {
        let sensitive = serde_json::from_slice::<HashMap<String, IgnoredAny>>(&bytes)
            .is_ok_and(|fields| fields.keys().any(|k| names_sensitive_data(k)));
        if sensitive {
            ApiError::InvalidRequest(
                "card security codes, track data and PINs are never accepted (PCI DSS 3.3.1)",
            )
        } else {
            ApiError::InvalidRequest(
                "body is not valid JSON of the expected shape (see docs/openapi.json)",
            )
        }
    })
}

/// `POST /v1/tokenize`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    /// The card number.
    pub pan: SecretString,
    /// `MM/YY` or `MM/YYYY`.
    #[serde(default)]
    pub expiry: Option<String>,
}

/// `POST /v1/tokenize/batch`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeBatchRequest {
    /// The card numbers.
    pub pans: Vec<SecretString>,
}

/// `POST /v1/detokenize`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetokenizeRequest {
    /// A caller may send a PAN here by mistake: wiped on drop too.
    pub token: SecretString,
}

/// `POST /v1/detokenize/batch`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetokenizeBatchRequest {
    /// The tokens (or mistaken PANs).
    pub tokens: Vec<SecretString>,
}

/// `POST /v1/admin/alerts/clear`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearRequest {
    /// Whose block to lift.
    pub principal: String,
}

/// A PAN from the request, or `invalid_pan` with the error's fixed message.
pub fn parse_pan(input: &SecretString) -> Result<Pan, ApiError> {
    Pan::parse(input.expose_secret()).map_err(|e| ApiError::InvalidPan(e.client_message()))
}

/// A token from the request, or `invalid_request` with a fixed message.
pub fn parse_token(input: &SecretString) -> Result<Token, ApiError> {
    Token::parse(input.expose_secret()).map_err(|e| ApiError::InvalidRequest(e.client_message()))
}

/// An optional expiry, or `invalid_request`.
pub fn parse_expiry(input: Option<&str>) -> Result<Option<Expiry>, ApiError> {
    input
        .map(Expiry::parse)
        .transpose()
        .map_err(|_| ApiError::InvalidRequest("expiry must be MM/YY or MM/YYYY"))
}

/// The token in the path. A syntactically invalid one is never echoed, not
/// even into the audit trail: it could be a mistaken PAN.
pub fn path_token(
    token: Result<axum::extract::Path<String>, PathRejection>,
) -> Result<Token, ApiError> {
    let axum::extract::Path(raw) =
        token.map_err(|_| ApiError::InvalidRequest("token must be 12 to 19 digits"))?;
    parse_token(&SecretString::from(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_field_names() {
        for k in [
            "cvv",
            "CVV2",
            "cvc",
            "cid",
            "csc",
            "track2",
            "track_data",
            "pin",
            "pin_block",
            "security_code",
        ] {
            assert!(names_sensitive_data(k), "{k}");
        }
        for k in ["pan", "pans", "expiry", "token", "tokens", "spinner"] {
            assert!(!names_sensitive_data(k), "{k}");
        }
    }

    #[test]
    fn request_secrets_print_redacted() {
        let body: TokenizeRequest =
            serde_json::from_str(r#"{"pan":"4111111111111111"}"#).expect("parses");
        let printed = format!("{:?}", body.pan);
        assert!(!printed.contains("4111"), "{printed}");
    }
}
