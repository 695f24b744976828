//! Reading requests over HTTP: JSON only (415), size-limited (413), room
//! in the body budget (503), then the wire shapes of [`super::body`]; and
//! parsing fields into domain types with fixed client-facing messages.
//! Nothing here logs.

use axum::extract::Request;
use axum::extract::rejection::PathRejection;
use axum::http::header;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use super::budget::{BodyBudget, Reserved};
use super::error::ApiError;
use crate::domain::{Expiry, Pan, Token};
use crate::peer::body::{self, BodyError};

pub use crate::peer::body::{
    ClearRequest, CvcRequest, DetokenizeRequest, ExportRequest, ImportLine, LookupRequest,
    RotateKekRequest, TokenizeRequest, UnsealRequest,
};

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> ApiError {
        match e {
            BodyError::Invalid(message) => ApiError::InvalidRequest(message),
            BodyError::TooMany => ApiError::BatchTooLarge,
        }
    }
}

/// Reads a JSON body: `application/json` only (415), at most `limit` bytes
/// (413), room for it in the body budget (else 503 after a short wait), no
/// sensitive authentication data, no unknown fields (400). Error messages
/// are fixed; the body is wiped after parsing.
pub async fn read_json<T: DeserializeOwned>(
    req: Request,
    limit: usize,
    budget: &BodyBudget,
) -> Result<T, ApiError> {
    let (bytes, _reserved) = read_body(req, limit, budget).await?;
    Ok(body::parse(&bytes)?)
}

/// Reads a JSON body like [`read_json`] for a shape that names a
/// security-code field by design (a collection session's `cvc` policy, a
/// hosted-field submit's code): the same media type, size and budget
/// checks and the fixed `message` on any parse failure, without the
/// sensitive-field refusal. Unknown fields are refused by the shape.
pub async fn read_json_shape<T: DeserializeOwned>(
    req: Request,
    limit: usize,
    budget: &BodyBudget,
    message: &'static str,
) -> Result<T, ApiError> {
    let (bytes, _reserved) = read_body(req, limit, budget).await?;
    serde_json::from_slice(&bytes).map_err(|_| ApiError::InvalidRequest(message))
}

/// Reads any JSON document (the reveal proxy's request, whose shape is the
/// upstream's) with [`read_json`]'s media type, size and budget checks.
pub async fn read_json_document(
    req: Request,
    limit: usize,
    budget: &BodyBudget,
) -> Result<serde_json::Value, ApiError> {
    let (bytes, _reserved) = read_body(req, limit, budget).await?;
    serde_json::from_slice(&bytes)
        .map_err(|_| ApiError::InvalidRequest("the body is not a JSON document"))
}

/// Reads a batch body `{"FIELD": [string, ...]}` (plus `"reason"` when
/// `with_reason`) like [`read_json`], but stops parsing at the `max`-th
/// item plus one (400 `batch_too_large`), so a body of millions of empty
/// strings is never expanded into memory.
pub async fn read_batch(
    req: Request,
    limit: usize,
    budget: &BodyBudget,
    field: &'static str,
    max: usize,
    with_reason: bool,
) -> Result<body::Batch, ApiError> {
    let (bytes, _reserved) = read_body(req, limit, budget).await?;
    Ok(body::parse_batch(&bytes, field, max, with_reason)?)
}

/// The reveal reason of a request, checked; `reason_required` when the
/// caller's principal must give one and did not.
pub fn reveal_reason(
    reason: Option<&SecretString>,
    required: bool,
) -> Result<Option<String>, ApiError> {
    match reason {
        Some(reason) => Ok(Some(body::check_reason(reason.expose_secret())?)),
        None if required => Err(ApiError::ReasonRequired),
        None => Ok(None),
    }
}

/// Reads the body into a buffer that is wiped on drop, with its budget
/// reservation (held while the caller parses).
/// Reads an NDJSON body (`application/x-ndjson`) like [`read_json`] reads
/// JSON; the caller parses the lines. Wiped on drop.
pub async fn read_ndjson(
    req: Request,
    limit: usize,
    budget: &BodyBudget,
) -> Result<(Zeroizing<Vec<u8>>, Reserved), ApiError> {
    read_body_of(req, limit, budget, "application/x-ndjson").await
}

async fn read_body(
    req: Request,
    limit: usize,
    budget: &BodyBudget,
) -> Result<(Zeroizing<Vec<u8>>, Reserved), ApiError> {
    read_body_of(req, limit, budget, "application/json").await
}

async fn read_body_of(
    req: Request,
    limit: usize,
    budget: &BodyBudget,
    media_type: &str,
) -> Result<(Zeroizing<Vec<u8>>, Reserved), ApiError> {
    let accepted = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(media_type));
    if !accepted {
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
    let reserved = budget
        .reserve(declared.map_or(limit, |n| n as usize))
        .await?;
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
    Ok((Zeroizing::new(Vec::from(collected.to_bytes())), reserved))
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
