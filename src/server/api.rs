//! The HTTP/JSON API of DESIGN.md §6: routes, request parsing and response
//! shapes. Bodies are read by [`read_json`] (JSON only, size-limited, unknown
//! fields refused, card security codes / track data / PINs refused) and PANs
//! are held in types that wipe themselves; nothing here logs a body.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::error::{ApiError, ErrorObject};
use super::identity::Caller;
use super::monitor::Monitor;
use super::ratelimit::RateLimits;
use crate::audit::{AuditLog, Event, EventKind, Outcome};
use crate::config::{LimitsConfig, Role};
use crate::domain::{Expiry, Pan, TenantId, Token, TokenError};
use crate::vault::{Revealed, TokenInfo, Vault};

/// What every handler shares.
pub struct AppState {
    /// The vault core.
    pub vault: Arc<Vault>,
    /// Body and batch limits.
    pub limits: LimitsConfig,
    /// The audit trail.
    pub audit: AuditLog,
    /// Alert rules and blocks.
    pub monitor: Arc<Monitor>,
    /// Per-principal rate limits.
    pub rates: RateLimits,
}

/// The request id the observing middleware gave this request.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// An audit event about `caller`'s request: who, from where, which tenant,
/// which request.
pub fn caller_event(kind: EventKind, caller: &Caller, request_id: &str) -> Event {
    let mut event = caller.event(kind);
    event.request_id = Some(request_id.to_owned());
    event
}

/// The `access_denied` event of a 403 that no handler's [`finish`] records.
pub fn access_denied(caller: &Caller, request_id: &str, detail: &str) -> Event {
    let mut event = caller_event(EventKind::AccessDenied, caller, request_id).with_detail(detail);
    event.outcome = Outcome::Denied;
    event.code = Some(ApiError::Forbidden.code().to_owned());
    event
}

/// Records how a request ended: success as is; 403 as `access_denied`
/// naming what was attempted; any other error with its code.
fn finish(audit: &AuditLog, event: Option<Event>, result: &Result<Response, ApiError>) {
    let Some(mut event) = event else { return };
    if let Err(error) = result {
        event.code = Some(error.code().to_owned());
        if *error == ApiError::Forbidden {
            let attempted = event.event.as_str();
            event.detail = Some(match event.detail.take() {
                Some(why) => format!("{attempted}: {why}"),
                None => attempted.to_owned(),
            });
            event.event = EventKind::AccessDenied;
            event.outcome = Outcome::Denied;
        } else {
            event.outcome = Outcome::Error;
        }
    }
    audit.record(event);
}

/// Writes the event of a reveal and waits until it is on disk. If the
/// trail cannot be written, nothing may be revealed: 503.
async fn record_reveal(audit: &AuditLog, event: &mut Option<Event>) -> Result<(), ApiError> {
    let Some(pending) = event.take() else {
        return Ok(());
    };
    if let Err(e) = audit.record_durable(pending.clone()).await {
        metrics::counter!("cardvault_detokenize_refused_audit_total").increment(1);
        tracing::error!(error = %e, "detokenization refused: the audit trail cannot be written");
        *event = Some(pending);
        return Err(ApiError::Unavailable(
            "the audit trail cannot be written; nothing was revealed",
        ));
    }
    Ok(())
}

/// The API routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/tokenize", post(tokenize))
        .route("/v1/tokenize/batch", post(tokenize_batch))
        .route("/v1/detokenize", post(detokenize))
        .route("/v1/detokenize/batch", post(detokenize_batch))
        .route("/v1/tokens/{token}", get(metadata).delete(delete_token))
        .route("/v1/admin/alerts", get(list_blocks))
        .route("/v1/admin/alerts/clear", post(clear_block))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

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

/// A string from the request that may hold card data: wiped on drop, never printed.
pub struct SecretString(Zeroizing<String>);

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
        String::deserialize(d).map(|s| SecretString(Zeroizing::new(s)))
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
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

fn authorize(caller: &Caller, role: Role) -> Result<TenantId, ApiError> {
    caller.authorize(role).cloned().ok_or(ApiError::Forbidden)
}

fn parse_pan(input: &SecretString) -> Result<Pan, ApiError> {
    use crate::domain::PanError::*;
    Pan::parse(&input.0).map_err(|e| {
        ApiError::InvalidPan(match e {
            Empty => "card number is empty",
            InputTooLong => "card number input is too long",
            InvalidCharacter { .. } => {
                "card number may contain only digits, with single spaces or dashes between groups"
            }
            MisplacedSeparator { .. } => "card number has a misplaced space or dash",
            WrongLength { .. } => "card number must have 12 to 19 digits",
            LuhnCheckFailed => "card number fails the Luhn check",
        })
    })
}

fn parse_token(input: &str) -> Result<Token, ApiError> {
    Token::parse(input).map_err(|e| {
        ApiError::InvalidRequest(match e {
            TokenError::LooksLikePan => {
                "value passes the Luhn check, so it is not a token (was a card number sent?)"
            }
            _ => "token must be 12 to 19 digits",
        })
    })
}

fn parse_expiry(input: Option<&str>) -> Result<Option<Expiry>, ApiError> {
    input
        .map(Expiry::parse)
        .transpose()
        .map_err(|_| ApiError::InvalidRequest("expiry must be MM/YY or MM/YYYY"))
}

fn vault_error(e: crate::vault::VaultError) -> ApiError {
    let api = ApiError::from_vault(&e);
    if api == ApiError::Internal {
        tracing::error!(error = %e, "vault operation failed");
    }
    api
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenizeRequest {
    pan: SecretString,
    #[serde(default)]
    expiry: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenizeBatchRequest {
    pans: Vec<SecretString>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DetokenizeRequest {
    /// A caller may send a PAN here by mistake: wiped on drop too.
    token: SecretString,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DetokenizeBatchRequest {
    tokens: Vec<SecretString>,
}

/// `{"token", "bin", "last4", "brand"}`.
#[derive(Serialize)]
struct TokenView {
    token: String,
    bin: Option<String>,
    last4: String,
    brand: &'static str,
}

impl From<&TokenInfo> for TokenView {
    fn from(info: &TokenInfo) -> TokenView {
        TokenView {
            token: info.token.to_string(),
            bin: info.bin.map(|b| b.to_string()),
            last4: info.last4.to_string(),
            brand: info.brand.as_str(),
        }
    }
}

/// `{"token", "bin", "last4", "brand", "expiry"?, "created_at"}`.
#[derive(Serialize)]
struct MetadataView {
    #[serde(flatten)]
    token: TokenView,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiry: Option<String>,
    created_at: String,
}

/// The PAN of a detokenize response, serialized straight from the `Pan`.
struct RevealedPan(Pan);

impl Serialize for RevealedPan {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose_str())
    }
}

/// `{"pan", "expiry"?}`.
#[derive(Serialize)]
struct RevealView {
    pan: RevealedPan,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiry: Option<String>,
}

impl From<Revealed> for RevealView {
    fn from(r: Revealed) -> RevealView {
        RevealView {
            expiry: r.expiry.map(|e| e.to_string()),
            pan: RevealedPan(r.pan),
        }
    }
}

/// One result of a batch: the value or `{"error": {...}}`.
#[derive(Serialize)]
#[serde(untagged)]
enum Item<T> {
    Ok(T),
    Err { error: ErrorObject },
}

#[derive(Serialize)]
struct Results<T> {
    results: Vec<Item<T>>,
}

/// A JSON response whose body bytes are wiped when hyper drops them, so a
/// revealed PAN does not linger in freed memory (hyper's own write buffer
/// may still hold a copy until the connection reuses it).
fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
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

fn created_at(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

async fn tokenize(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Extension(RequestId(rid)): Extension<RequestId>,
    req: Request,
) -> Result<Response, ApiError> {
    let mut event = caller_event(EventKind::Tokenize, &caller, &rid);
    let result = tokenize_one(&state, &caller, req, &mut event).await;
    finish(&state.audit, Some(event), &result);
    result
}

async fn tokenize_one(
    state: &AppState,
    caller: &Caller,
    req: Request,
    event: &mut Event,
) -> Result<Response, ApiError> {
    let tenant = authorize(caller, Role::Tokenize)?;
    state.rates.tokenize(caller.principal.as_str(), 1)?;
    let body: TokenizeRequest = read_json(req, state.limits.body_limit_bytes).await?;
    let pan = parse_pan(&body.pan)?;
    let expiry = parse_expiry(body.expiry.as_deref())?;
    let info = state
        .vault
        .tokenize(&tenant, &pan, expiry)
        .await
        .map_err(vault_error)?;
    event.token = Some(info.token.to_string());
    Ok(json(StatusCode::OK, &TokenView::from(&info)))
}

async fn tokenize_batch(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Extension(RequestId(rid)): Extension<RequestId>,
    req: Request,
) -> Result<Response, ApiError> {
    let mut event = caller_event(EventKind::TokenizeBatch, &caller, &rid);
    let result = tokenize_many(&state, &caller, req, &mut event).await;
    finish(&state.audit, Some(event), &result);
    result
}

async fn tokenize_many(
    state: &AppState,
    caller: &Caller,
    req: Request,
    event: &mut Event,
) -> Result<Response, ApiError> {
    let tenant = authorize(caller, Role::Tokenize)?;
    let body: TokenizeBatchRequest = read_json(req, state.limits.batch_body_limit_bytes).await?;
    if body.pans.len() > state.limits.max_batch {
        return Err(ApiError::BatchTooLarge);
    }
    state
        .rates
        .tokenize(caller.principal.as_str(), body.pans.len())?;
    let parsed: Vec<Result<Pan, ApiError>> = body.pans.iter().map(parse_pan).collect();
    drop(body);
    // The valid PANs go to the vault in one call; its results come back in
    // the same order, so they fill the valid slots one after another.
    let mut slots = Vec::with_capacity(parsed.len());
    let mut valid = Vec::with_capacity(parsed.len());
    for result in parsed {
        match result {
            Ok(pan) => {
                slots.push(None);
                valid.push((pan, None));
            }
            Err(e) => slots.push(Some(e)),
        }
    }
    let mut outcomes = state
        .vault
        .tokenize_batch(&tenant, &valid)
        .await
        .into_iter();
    let mut tokens = Vec::with_capacity(slots.len());
    let results: Vec<Item<TokenView>> = slots
        .into_iter()
        .map(|invalid| {
            let outcome = match invalid {
                Some(e) => Err(e),
                None => outcomes
                    .next()
                    .map_or(Err(ApiError::Internal), |r| r.map_err(vault_error)),
            };
            match outcome {
                Ok(info) => {
                    tokens.push(info.token.to_string());
                    Item::Ok(TokenView::from(&info))
                }
                Err(e) => Item::Err { error: e.object() },
            }
        })
        .collect();
    event.count = Some(results.len() as u64);
    event.failed = Some((results.len() - tokens.len()) as u64);
    event.tokens = Some(tokens);
    Ok(json(StatusCode::OK, &Results { results }))
}

async fn detokenize(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Extension(RequestId(rid)): Extension<RequestId>,
    req: Request,
) -> Result<Response, ApiError> {
    let mut event = Some(caller_event(EventKind::Detokenize, &caller, &rid));
    let result = detokenize_one(&state, &caller, req, &mut event).await;
    finish(&state.audit, event, &result);
    result
}

/// Refuses a principal that an alert has blocked (the reason goes to the
/// audit event, not to the caller).
fn check_monitor(
    state: &AppState,
    caller: &Caller,
    items: u64,
    event: &mut Option<Event>,
) -> Result<(), ApiError> {
    state.monitor.check_detokenize(caller, items).map_err(|_| {
        if let Some(event) = event.as_mut() {
            event.detail = Some("blocked by an alert until an admin clears it".into());
        }
        ApiError::Forbidden
    })
}

async fn detokenize_one(
    state: &AppState,
    caller: &Caller,
    req: Request,
    event: &mut Option<Event>,
) -> Result<Response, ApiError> {
    let tenant = authorize(caller, Role::Detokenize)?;
    let body: DetokenizeRequest = read_json(req, state.limits.body_limit_bytes).await?;
    let token = parse_token(&body.token.0)?;
    if let Some(event) = event.as_mut() {
        event.token = Some(token.to_string());
    }
    state.rates.detokenize(caller.principal.as_str(), 1)?;
    check_monitor(state, caller, 1, event)?;
    let revealed = state
        .vault
        .detokenize(&tenant, &token)
        .await
        .map_err(vault_error)?;
    record_reveal(&state.audit, event).await?;
    metrics::counter!("cardvault_detokenizations_total", "principal" => caller.metric_label())
        .increment(1);
    Ok(json(StatusCode::OK, &RevealView::from(revealed)))
}

async fn detokenize_batch(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Extension(RequestId(rid)): Extension<RequestId>,
    req: Request,
) -> Result<Response, ApiError> {
    let mut event = Some(caller_event(EventKind::DetokenizeBatch, &caller, &rid));
    let result = detokenize_many(&state, &caller, req, &mut event).await;
    finish(&state.audit, event, &result);
    result
}

async fn detokenize_many(
    state: &AppState,
    caller: &Caller,
    req: Request,
    event: &mut Option<Event>,
) -> Result<Response, ApiError> {
    let tenant = authorize(caller, Role::Detokenize)?;
    let body: DetokenizeBatchRequest = read_json(req, state.limits.batch_body_limit_bytes).await?;
    if body.tokens.len() > state.limits.max_batch {
        return Err(ApiError::BatchTooLarge);
    }
    state
        .rates
        .detokenize(caller.principal.as_str(), body.tokens.len())?;
    check_monitor(state, caller, body.tokens.len() as u64, event)?;
    let mut results = Vec::with_capacity(body.tokens.len());
    let mut tokens = Vec::with_capacity(body.tokens.len());
    for raw in &body.tokens {
        let item = match parse_token(&raw.0) {
            Ok(token) => state
                .vault
                .detokenize(&tenant, &token)
                .await
                .map(|r| (token, r))
                .map_err(vault_error),
            Err(e) => Err(e),
        };
        results.push(match item {
            Ok((token, r)) => {
                tokens.push(token.to_string());
                Item::Ok(RevealView::from(r))
            }
            Err(e) => Item::Err { error: e.object() },
        });
    }
    let revealed = tokens.len() as u64;
    if let Some(event) = event.as_mut() {
        event.count = Some(results.len() as u64);
        event.failed = Some(results.len() as u64 - revealed);
        event.tokens = Some(tokens);
    }
    if revealed > 0 {
        record_reveal(&state.audit, event).await?;
    }
    metrics::counter!("cardvault_detokenizations_total", "principal" => caller.metric_label())
        .increment(revealed);
    Ok(json(StatusCode::OK, &Results { results }))
}

async fn metadata(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Extension(RequestId(rid)): Extension<RequestId>,
    token: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let mut event = caller_event(EventKind::MetadataRead, &caller, &rid);
    let result = async {
        let tenant = authorize(&caller, Role::Read)?;
        let token = path_token(token)?;
        event.token = Some(token.to_string());
        let info = state
            .vault
            .metadata(&tenant, &token)
            .await
            .map_err(vault_error)?;
        let view = MetadataView {
            token: TokenView::from(&info),
            expiry: info.expiry.map(|e| e.to_string()),
            created_at: created_at(info.created_ms),
        };
        Ok(json(StatusCode::OK, &view))
    }
    .await;
    finish(&state.audit, Some(event), &result);
    result
}

async fn delete_token(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Extension(RequestId(rid)): Extension<RequestId>,
    token: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let mut event = caller_event(EventKind::Delete, &caller, &rid);
    let result = async {
        let tenant = authorize(&caller, Role::Delete)?;
        let token = path_token(token)?;
        event.token = Some(token.to_string());
        state
            .vault
            .delete(&tenant, &token)
            .await
            .map_err(vault_error)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    finish(&state.audit, Some(event), &result);
    result
}

/// The token in the path. A syntactically invalid one is never echoed, not
/// even into the audit trail: it could be a mistaken PAN.
fn path_token(token: Result<Path<String>, PathRejection>) -> Result<Token, ApiError> {
    let Path(raw) = token.map_err(|_| ApiError::InvalidRequest("token must be 12 to 19 digits"))?;
    parse_token(&Zeroizing::new(raw))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClearRequest {
    principal: String,
}

#[derive(Serialize)]
struct BlockList {
    blocked: Vec<String>,
}

#[derive(Serialize)]
struct Cleared {
    principal: String,
    was_blocked: bool,
}

/// `GET /v1/admin/alerts` (admin): principals whose detokenizations an
/// alert has blocked.
async fn list_blocks(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Extension(RequestId(rid)): Extension<RequestId>,
) -> Result<Response, ApiError> {
    let result = authorize(&caller, Role::Admin).map(|_| {
        json(
            StatusCode::OK,
            &BlockList {
                blocked: state.monitor.blocked(),
            },
        )
    });
    if result.is_err() {
        // Only a missing admin role fails here.
        state
            .audit
            .record(access_denied(&caller, &rid, "list alert blocks"));
    }
    result
}

/// `POST /v1/admin/alerts/clear` (admin) `{"principal": "..."}`: lifts a
/// block. Audited as `alert_cleared`.
async fn clear_block(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Extension(RequestId(rid)): Extension<RequestId>,
    req: Request,
) -> Result<Response, ApiError> {
    let result = async {
        authorize(&caller, Role::Admin)?;
        let body: ClearRequest = read_json(req, state.limits.body_limit_bytes).await?;
        if !state.monitor.knows(&body.principal) {
            return Err(ApiError::InvalidRequest("no such principal in the config"));
        }
        let was_blocked = state.monitor.clear(&body.principal, &caller, &rid);
        Ok(json(
            StatusCode::OK,
            &Cleared {
                principal: body.principal,
                was_blocked,
            },
        ))
    }
    .await;
    if result.is_err() {
        let event = caller_event(EventKind::AlertCleared, &caller, &rid);
        finish(&state.audit, Some(event), &result);
    }
    result
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
}
