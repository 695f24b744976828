//! The card routes of the API (docs/openapi.json): tokenize, detokenize
//! (single and batch), metadata and delete. Each handler authorizes the
//! caller, reads its request through [`crate::server::request`], calls the vault
//! core and answers through [`crate::server::response`], inside one
//! [`Audited`] scope. Nothing here logs a body.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::audit::EventKind;
use crate::clock::rfc3339 as created_at;
use crate::config::Role;
use crate::domain::Pan;
use crate::server::audited::{Audited, Call};
use crate::server::error::ApiError;
use crate::server::error::ErrorObject;
use crate::server::identity::Caller;
use crate::server::request::{
    CvcRequest, DetokenizeRequest, LookupRequest, TokenizeRequest, parse_expiry, parse_pan,
    parse_token, path_token, read_batch, read_json, reveal_reason,
};
use crate::server::response::json;
use crate::server::state::AppState;
use crate::vault::cvc::CvcError;
use crate::vault::{Revealed, TokenInfo};
use secrecy::ExposeSecret;
use serde::Serialize;

/// Maps a vault error to its API error, logging the ones that are bugs.
fn vault_error(e: crate::vault::VaultError) -> ApiError {
    let api = ApiError::from_vault(&e);
    if api == ApiError::Internal {
        tracing::error!(error = %e, "vault operation failed");
    }
    api
}

/// `POST /v1/tokenize`.
pub async fn tokenize(call: Call, req: Request) -> Result<Response, ApiError> {
    call.audited(EventKind::Tokenize, async |audited| {
        tokenize_one(&call.state, &call.caller, req, audited).await
    })
    .await
}

async fn tokenize_one(
    state: &AppState,
    caller: &Caller,
    req: Request,
    audited: &mut Audited<'_>,
) -> Result<Response, ApiError> {
    let tenant = caller.require(Role::Tokenize)?;
    state.rates.tokenize(caller.principal.as_str(), 1)?;
    let body: TokenizeRequest =
        read_json(req, state.limits.body_limit_bytes.get(), &state.bodies).await?;
    let pan = parse_pan(&body.pan)?;
    let expiry = parse_expiry(body.expiry.as_deref())?;
    let expires_ms = expires_at(body.ttl_s)?;
    state.admit_cards(caller, &tenant, &[&pan], audited.event())?;
    let info = state
        .vault
        .tokenize_with_ttl(&tenant, &[(&pan, expiry)], expires_ms)
        .await
        .pop()
        .unwrap_or(Err(crate::vault::VaultError::TokenSpaceExhausted))
        .map_err(vault_error)?;
    audited.event().token = Some(info.token.to_string());
    Ok(json(StatusCode::OK, &TokenView::from(&info)))
}

/// Longest time to live a token may be given: ten years.
const MAX_TTL_S: u64 = 10 * 366 * 24 * 3600;

/// When a token made now with `ttl_s` expires (ms since the epoch).
fn expires_at(ttl_s: Option<u64>) -> Result<Option<u64>, ApiError> {
    let Some(ttl_s) = ttl_s else {
        return Ok(None);
    };
    if !(1..=MAX_TTL_S).contains(&ttl_s) {
        return Err(ApiError::InvalidRequest(
            "ttl_s must be 1 to 316224000 seconds (ten years)",
        ));
    }
    Ok(Some(crate::clock::now_ms() + ttl_s * 1000))
}

/// A batch body of `field` items (with a reveal `reason` when
/// `with_reason`) under the vault's batch limits.
async fn batch_body(
    state: &AppState,
    req: Request,
    field: &'static str,
    with_reason: bool,
) -> Result<crate::peer::body::Batch, ApiError> {
    read_batch(
        req,
        state.limits.batch_body_limit_bytes.get(),
        &state.bodies,
        field,
        state.limits.max_batch.get(),
        with_reason,
    )
    .await
}

/// `POST /v1/tokenize/batch`.
pub async fn tokenize_batch(call: Call, req: Request) -> Result<Response, ApiError> {
    call.audited(EventKind::TokenizeBatch, async |audited| {
        tokenize_many(&call.state, &call.caller, req, audited).await
    })
    .await
}

async fn tokenize_many(
    state: &AppState,
    caller: &Caller,
    req: Request,
    audited: &mut Audited<'_>,
) -> Result<Response, ApiError> {
    let tenant = caller.require(Role::Tokenize)?;
    let batch = batch_body(state, req, "pans", false).await?;
    let expires_ms = expires_at(batch.ttl_s)?;
    let pans = batch.items;
    state
        .rates
        .tokenize(caller.principal.as_str(), pans.len())?;
    let parsed: Vec<Result<Pan, ApiError>> = pans.iter().map(parse_pan).collect();
    drop(pans);
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
    let valid: Vec<(&Pan, Option<crate::domain::Expiry>)> =
        valid.iter().map(|(p, e)| (p, *e)).collect();
    // A batch whose cards would take one group over the guard's threshold
    // is refused whole.
    let cards: Vec<&Pan> = valid.iter().map(|(p, _)| *p).collect();
    state.admit_cards(caller, &tenant, &cards, audited.event())?;
    let mut outcomes = state
        .vault
        .tokenize_with_ttl(&tenant, &valid, expires_ms)
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
    let event = audited.event();
    event.count = Some(results.len() as u64);
    event.failed = Some((results.len() - tokens.len()) as u64);
    event.tokens = Some(tokens);
    Ok(json(StatusCode::OK, &Results { results }))
}

/// `POST /v1/detokenize`.
pub async fn detokenize(call: Call, req: Request) -> Result<Response, ApiError> {
    call.audited(EventKind::Detokenize, async |audited| {
        detokenize_one(&call.state, &call.caller, req, audited).await
    })
    .await
}

/// A metadata read, delete or lookup: the principal's metadata rate limit,
/// then the metadata burst rule.
fn metadata_access(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    state.rates.metadata(caller.principal.as_str())?;
    state.monitor.metadata_access(caller);
    Ok(())
}

/// Refuses a principal that an alert has blocked (the reason goes to the
/// audit event, not to the caller).
fn check_monitor(
    state: &AppState,
    caller: &Caller,
    items: u64,
    audited: &mut Audited<'_>,
) -> Result<(), ApiError> {
    state.monitor.check_detokenize(caller, items).map_err(|_| {
        audited.event().detail = Some("blocked by an alert until an admin clears it".into());
        ApiError::Forbidden
    })
}

async fn detokenize_one(
    state: &AppState,
    caller: &Caller,
    req: Request,
    audited: &mut Audited<'_>,
) -> Result<Response, ApiError> {
    let tenant = caller.require(Role::Detokenize)?;
    let body: DetokenizeRequest =
        read_json(req, state.limits.body_limit_bytes.get(), &state.bodies).await?;
    let token = parse_token(&body.token)?;
    audited.event().token = Some(token.to_string());
    audited.event().reason = reveal_reason(body.reason.as_ref(), caller.must_give_reason())?;
    state.rates.detokenize(caller.principal.as_str(), 1)?;
    check_monitor(state, caller, 1, audited)?;
    let revealed = state
        .vault
        .detokenize(&tenant, &token)
        .await
        .map_err(vault_error)?;
    // Taken before the event is written, so the trail says whether a code
    // went out; if the trail cannot be written, nothing is revealed and the
    // code is gone (it is never put back).
    let cvc = body.include_cvc.then(|| state.cvcs.take(&tenant, &token));
    if let Some(cvc) = &cvc {
        audited.event().detail = Some(
            if cvc.is_some() {
                "security code delivered"
            } else {
                "no security code held"
            }
            .into(),
        );
    }
    audited.reveal().await?;
    metrics::counter!("cardvault_detokenizations_total", "principal" => caller.metric_label())
        .increment(1);
    let view = RevealView::from(revealed);
    let view = match cvc {
        Some(code) => view.with_cvc(code),
        None => view,
    };
    Ok(json(StatusCode::OK, &view))
}

/// `POST /v1/detokenize/batch`.
pub async fn detokenize_batch(call: Call, req: Request) -> Result<Response, ApiError> {
    call.audited(EventKind::DetokenizeBatch, async |audited| {
        detokenize_many(&call.state, &call.caller, req, audited).await
    })
    .await
}

async fn detokenize_many(
    state: &AppState,
    caller: &Caller,
    req: Request,
    audited: &mut Audited<'_>,
) -> Result<Response, ApiError> {
    let tenant = caller.require(Role::Detokenize)?;
    let batch = batch_body(state, req, "tokens", true).await?;
    audited.event().reason = reveal_reason(batch.reason.as_ref(), caller.must_give_reason())?;
    let raw_tokens = batch.items;
    state
        .rates
        .detokenize(caller.principal.as_str(), raw_tokens.len())?;
    check_monitor(state, caller, raw_tokens.len() as u64, audited)?;
    let mut results = Vec::with_capacity(raw_tokens.len());
    let mut tokens = Vec::with_capacity(raw_tokens.len());
    for raw in &raw_tokens {
        let item = match parse_token(raw) {
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
    let event = audited.event();
    event.count = Some(results.len() as u64);
    event.failed = Some(results.len() as u64 - revealed);
    event.tokens = Some(tokens);
    if revealed > 0 {
        audited.reveal().await?;
    }
    metrics::counter!("cardvault_detokenizations_total", "principal" => caller.metric_label())
        .increment(revealed);
    Ok(json(StatusCode::OK, &Results { results }))
}

/// `GET /v1/tokens/{token}`.
pub async fn metadata(
    call: Call,
    token: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::MetadataRead, async |audited| {
        let tenant = caller.require(Role::Read)?;
        metadata_access(state, caller)?;
        let token = path_token(token)?;
        audited.event().token = Some(token.to_string());
        let info = state
            .vault
            .metadata(&tenant, &token)
            .await
            .map_err(vault_error)?;
        Ok(json(StatusCode::OK, &MetadataView::from(&info)))
    })
    .await
}

/// `POST /v1/lookup` (role `lookup`; `tokenize` or `read` while `[compat]
/// lookup_via_tokenize_or_read` holds): the metadata of the
/// token the PAN already has, or 404 `token_not_found`; never creates one.
/// Counted against the metadata rate limit and burst rule (it answers "is
/// this card on file?", so guessing PANs through it must be slow and seen).
pub async fn lookup(call: Call, req: Request) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::Lookup, async |audited| {
        let tenant = caller
            .authorize(Role::Lookup)
            .or_else(|| {
                state
                    .lookup_compat
                    .then(|| {
                        caller
                            .authorize(Role::Tokenize)
                            .or_else(|| caller.authorize(Role::Read))
                    })
                    .flatten()
            })
            .cloned()
            .ok_or(ApiError::Forbidden)?;
        metadata_access(state, caller)?;
        let body: LookupRequest =
            read_json(req, state.limits.body_limit_bytes.get(), &state.bodies).await?;
        let pan = parse_pan(&body.pan)?;
        state.admit_cards(caller, &tenant, &[&pan], audited.event())?;
        let info = state
            .vault
            .lookup(&tenant, &pan)
            .await
            .map_err(vault_error)?;
        audited.event().token = Some(info.token.to_string());
        Ok(json(StatusCode::OK, &MetadataView::from(&info)))
    })
    .await
}

/// `POST /v1/tokens/{token}/cvc` (role `tokenize`, the token's own
/// tenant): holds the card security code in memory only, for `ttl_s`
/// (default 900, at most `cvc.max_ttl_s`), until one detokenize with
/// `include_cvc` takes it. 204; audited as `cvc_held` without the code.
pub async fn hold_cvc(
    call: Call,
    token: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::CvcHeld, async |audited| {
        let tenant = caller.require(Role::Tokenize)?;
        let token = path_token(token)?;
        audited.event().token = Some(token.to_string());
        let body: CvcRequest =
            read_json(req, state.limits.body_limit_bytes.get(), &state.bodies).await?;
        let ttl = body.ttl_s.unwrap_or(crate::config::CVC_DEFAULT_TTL_S);
        if ttl == 0 || ttl > state.cvc_max_ttl.as_secs() {
            return Err(ApiError::InvalidRequest(
                "ttl_s must be 1 to cvc.max_ttl_s (at most 3600) seconds",
            ));
        }
        // The token must exist in the caller's tenant.
        state
            .vault
            .metadata(&tenant, &token)
            .await
            .map_err(vault_error)?;
        state
            .cvcs
            .hold(
                &tenant,
                &token,
                body.cvc.expose_secret(),
                std::time::Duration::from_secs(ttl),
            )
            .map_err(|e| match e {
                CvcError::Invalid => ApiError::InvalidRequest("cvc must be 3 or 4 digits"),
                CvcError::Full => {
                    ApiError::Unavailable("too many security codes are held; retry shortly")
                }
                CvcError::Crypto => ApiError::Internal,
            })?;
        audited.event().detail = Some(format!("held for {ttl} s"));
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// `DELETE /v1/tokens/{token}`.
pub async fn delete_token(
    call: Call,
    token: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::Delete, async |audited| {
        let tenant = caller.require(Role::Delete)?;
        metadata_access(state, caller)?;
        let token = path_token(token)?;
        audited.event().token = Some(token.to_string());
        state
            .vault
            .delete(&tenant, &token)
            .await
            .map_err(vault_error)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

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
