//! The hosted fields' mTLS routes (docs/collect.md): a cart creates a
//! collection session (`POST /v1/collect/sessions`, role `tokenize`) and
//! reads its result (`GET /v1/collect/sessions/{id}`, `tokenize` or
//! `read`). The card itself never comes this way: the shopper's browser
//! sends it to the public listener (`server/collect/`).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::audit::EventKind;
use crate::clock::rfc3339;
use crate::config::Role;
use crate::runtime::collect::{self, Collect, NewSession};
use crate::server::audited::Call;
use crate::server::error::{ApiError, collect_error};
use crate::server::request::read_json_shape;
use crate::server::response::json;
use crate::store::codec::SessionRecord;
use crate::vault::sessions::SessionId;

/// `POST /v1/collect/sessions`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    origin: String,
    #[serde(default)]
    ttl_s: Option<u64>,
    #[serde(default)]
    cvc: Option<String>,
    #[serde(default)]
    reference: Option<String>,
}

/// What a created session answers.
#[derive(Serialize)]
struct CreatedView {
    session: String,
    frame_url: String,
    expires_at: String,
}

/// What a session shows its cart.
#[derive(Serialize)]
struct SessionView<'a> {
    session: String,
    state: &'static str,
    origin: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
    expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bin: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last4: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    brand: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp_month: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp_year: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cvc_held: Option<bool>,
}

impl<'a> SessionView<'a> {
    fn of(id: &SessionId, record: &'a SessionRecord) -> SessionView<'a> {
        let result = record.result.as_ref();
        SessionView {
            session: id.to_string(),
            state: collect::state_name(record, crate::clock::now_ms()),
            origin: &record.origin,
            reference: record.reference.as_deref(),
            expires_at: rfc3339(record.expires_ms),
            token: result.map(|r| r.token.as_str()),
            bin: result.and_then(|r| r.bin.as_deref()),
            last4: result.map(|r| r.last4.as_str()),
            brand: result.map(|r| r.brand.as_str()),
            exp_month: result.map(|r| r.exp_month),
            exp_year: result.map(|r| r.exp_year),
            cvc_held: result.map(|r| r.cvc_held),
        }
    }
}

/// The hosted fields, or 503 when `[collect]` is not configured.
fn enabled(call: &Call) -> Result<&Collect, ApiError> {
    call.state.collect.as_deref().ok_or(ApiError::Unavailable(
        "hosted card fields are not enabled on this vault ([collect])",
    ))
}

/// `POST /v1/collect/sessions`.
pub async fn create(call: Call, req: Request) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::CollectSessionCreated, async |audited| {
        let tenant = caller.require(Role::Tokenize)?;
        let collect = enabled(&call)?;
        let body: CreateRequest = read_json_shape(
            req,
            state.limits.body_limit_bytes.get(),
            &state.bodies,
            "the body must be {\"origin\", \"ttl_s\", \"cvc\", \"reference\"} with origin required",
        )
        .await?;
        let created = collect
            .create(
                &tenant,
                NewSession {
                    origin: &body.origin,
                    ttl_s: body.ttl_s,
                    cvc: body.cvc.as_deref(),
                    reference: body.reference.as_deref(),
                },
            )
            .await
            .map_err(|e| {
                metrics::counter!("cardvault_collect_refusals_total", "reason" => e.reason())
                    .increment(1);
                collect_error(&e)
            })?;
        metrics::counter!("cardvault_collect_sessions_created_total").increment(1);
        let event = audited.event();
        event.session = Some(created.id.to_string());
        event.detail = Some(format!("origin {}", created.origin));
        Ok(json(
            StatusCode::CREATED,
            &CreatedView {
                session: created.id.to_string(),
                frame_url: created.frame_url,
                expires_at: rfc3339(created.expires_ms),
            },
        ))
    })
    .await
}

/// `GET /v1/collect/sessions/{id}`.
pub async fn read(
    call: Call,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let caller = &call.caller;
    call.audited(EventKind::CollectResultRead, async |audited| {
        let tenant = caller
            .require(Role::Tokenize)
            .or_else(|_| caller.require(Role::Read))?;
        let collect = enabled(&call)?;
        // An id that does not parse is never echoed (it could be anything).
        let id = id
            .ok()
            .and_then(|Path(raw)| SessionId::parse(&raw))
            .ok_or(ApiError::SessionNotFound)?;
        audited.event().session = Some(id.to_string());
        let record = collect
            .result(&tenant, &id)
            .await
            .map_err(|e| collect_error(&e))?;
        audited.event().token = record.result.as_ref().map(|r| r.token.clone());
        Ok(json(StatusCode::OK, &SessionView::of(&id, &record)))
    })
    .await
}
