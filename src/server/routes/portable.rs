//! Portable tokens. `POST /v1/admin/import[?tenant=T]` (admin reaching the
//! tenant; default its own) takes NDJSON lines `{"token", "pan", "expiry"?}`
//! and keeps the given tokens, answering per line. `POST
//! /v1/admin/tenants/{tenant}/export` with an age recipient asks for an
//! export under dual control; once a different admin approved it
//! (`POST /v1/admin/approvals/{id}`), the admin who asked fetches it once
//! from `GET /v1/admin/exports/{id}`: NDJSON `{"token", "pan", "expiry"}`
//! encrypted to the recipient with age before it leaves the vault — no
//! plaintext is ever written, and none crosses the wire.
//!
//! Audited as `import` (counts), `approval_requested`, `export_approved`
//! and `export` (count, recipient, SHA-256 of the ciphertext).

use std::io::Write as _;
use std::str::FromStr as _;

use axum::extract::{Path, RawQuery, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::approvals::{approval_error, ask, requested_tenant};
use crate::audit::EventKind;
use crate::config::Role;
use crate::domain::{Pan, TenantId, Token, TokenError};
use crate::runtime::approvals::Action;
use crate::server::audited::Call;
use crate::server::error::{ApiError, ErrorObject};
use crate::server::identity::Caller;
use crate::server::request::{ExportRequest, ImportLine, parse_expiry, read_json, read_ndjson};
use crate::server::response::json;
use crate::server::state::AppState;
use crate::vault::ImportOutcome;

/// Records per page read from the store while an export is written.
const EXPORT_PAGE: usize = 1024;

/// The tenant an admin acts on: `?tenant=T` if it reaches it, else its own.
fn target_tenant(caller: &Caller, query: Option<&str>) -> Result<TenantId, ApiError> {
    let own = caller.require(Role::Admin)?;
    let tenant = match query.unwrap_or("") {
        "" => own,
        q => {
            let name = q.strip_prefix("tenant=").ok_or(ApiError::InvalidRequest(
                "the only query parameter is tenant=NAME",
            ))?;
            TenantId::parse(name)
                .map_err(|_| ApiError::InvalidRequest("not a valid tenant name"))?
        }
    };
    if caller.admin_reaches(&tenant) {
        Ok(tenant)
    } else {
        Err(ApiError::Forbidden)
    }
}

/// One line's answer.
#[derive(Serialize)]
struct LineResult {
    line: usize,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorObject>,
}

/// The import's answer.
#[derive(Serialize)]
struct ImportDone {
    tenant: String,
    imported: u64,
    already_present: u64,
    refused: u64,
    results: Vec<LineResult>,
}

/// A line's (token, PAN, expiry), or why it is refused.
fn parse_line(line: &[u8]) -> Result<(Token, Pan, Option<crate::domain::Expiry>), ApiError> {
    let parsed: ImportLine = crate::peer::body::parse(line)?;
    let pan = crate::server::request::parse_pan(&parsed.pan)?;
    let token = Token::parse(parsed.token.expose_secret()).map_err(|e| match e {
        TokenError::LooksLikePan => ApiError::InvalidRequest(
            "the token passes the Luhn check: cardvault tokens never do, so they can never be taken for card numbers",
        ),
        other => ApiError::InvalidRequest(other.client_message()),
    })?;
    if token.as_bytes() == pan.expose_digits() {
        return Err(ApiError::InvalidRequest("the token equals its PAN"));
    }
    let expiry = parse_expiry(parsed.expiry.as_deref())?;
    Ok((token, pan, expiry))
}

/// `POST /v1/admin/import`.
pub async fn import(
    call: Call,
    RawQuery(query): RawQuery,
    req: Request,
) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::Import, async |audited| {
        let tenant = target_tenant(caller, query.as_deref())?;
        audited.event().tenant = Some(tenant.to_string());
        let (body, _reserved) = read_ndjson(
            req,
            state.limits.batch_body_limit_bytes.get(),
            &state.bodies,
        )
        .await?;
        let lines: Vec<(usize, &[u8])> = body
            .split(|b| *b == b'\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l.strip_suffix(b"\r").unwrap_or(l)))
            .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
            .collect();
        if lines.len() > state.limits.max_batch.get() {
            return Err(ApiError::BatchTooLarge);
        }
        let mut results: Vec<LineResult> = Vec::with_capacity(lines.len());
        let mut valid = Vec::with_capacity(lines.len());
        let mut valid_at = Vec::with_capacity(lines.len());
        for (number, line) in &lines {
            match parse_line(line) {
                Ok(item) => {
                    valid_at.push(results.len());
                    valid.push(item);
                    results.push(LineResult {
                        line: *number,
                        status: "",
                        error: None,
                    });
                }
                Err(e) => results.push(LineResult {
                    line: *number,
                    status: "refused",
                    error: Some(e.object()),
                }),
            }
        }
        let items: Vec<(Token, &Pan, Option<crate::domain::Expiry>)> =
            valid.iter().map(|(t, p, e)| (*t, p, *e)).collect();
        // "Already present" confirms a (token, card) pair: the oracle guard
        // counts imports like tokenizations, and refuses the request whole.
        let cards: Vec<&Pan> = items.iter().map(|(_, p, _)| *p).collect();
        state.admit_cards(caller, &tenant, &cards, audited.event())?;
        let outcomes = state.vault.import(&tenant, &items).await;
        for (at, outcome) in valid_at.into_iter().zip(outcomes) {
            let slot = &mut results[at];
            match outcome {
                Ok(ImportOutcome::Imported) => slot.status = "imported",
                Ok(ImportOutcome::AlreadyPresent) => slot.status = "already_present",
                Ok(ImportOutcome::TokenTaken) => {
                    slot.status = "refused";
                    slot.error = Some(
                        ApiError::TokenConflict("the token already stands for another card number")
                            .object(),
                    );
                }
                Ok(ImportOutcome::PanHasOtherToken) => {
                    slot.status = "refused";
                    slot.error = Some(
                        ApiError::TokenConflict("the card number already has another token")
                            .object(),
                    );
                }
                Err(e) => {
                    slot.status = "refused";
                    slot.error = Some(crate::server::error::admin_key_error("import", &e).object());
                }
            }
        }
        let count = |s: &str| results.iter().filter(|r| r.status == s).count() as u64;
        let done = ImportDone {
            tenant: tenant.to_string(),
            imported: count("imported"),
            already_present: count("already_present"),
            refused: count("refused"),
            results,
        };
        let event = audited.event();
        event.count = Some(lines.len() as u64);
        event.failed = Some(done.refused);
        event.detail = Some(format!(
            "imported {}, already present {}, refused {}",
            done.imported, done.already_present, done.refused
        ));
        Ok(json(StatusCode::OK, &done))
    })
    .await
}

/// `POST /v1/admin/tenants/{tenant}/export`: 202 with the pending approval.
pub async fn export_request(
    call: Call,
    Path(tenant): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::ApprovalRequested, async |audited| {
        let tenant = requested_tenant(caller, &mut *audited, &tenant)?;
        let body: ExportRequest =
            read_json(req, state.limits.body_limit_bytes.get(), &state.bodies).await?;
        let recipient = age::x25519::Recipient::from_str(body.recipient.trim()).map_err(|_| {
            ApiError::InvalidRequest("recipient must be an age X25519 public key (age1…)")
        })?;
        let action = Action::ExportTenant {
            tenant: tenant.to_string(),
            recipient: recipient.to_string(),
        };
        let what = format!("export_tenant to {recipient}");
        ask(
            &state.approvals,
            caller,
            &mut *audited,
            action,
            tenant,
            &what,
        )
    })
    .await
}

/// `{"status": "pending", …}` while the approval waits.
#[derive(Serialize)]
struct ExportPending {
    status: &'static str,
    id: String,
    expires_ms: u64,
}

/// `GET /v1/admin/exports/{id}`: 202 while pending; the age ciphertext once
/// approved (to the admin who asked, once).
pub async fn export_download(call: Call, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::Export, async |audited| {
        caller.require(Role::Admin)?;
        if !crate::runtime::approvals::is_approval_id(&id) {
            return Err(ApiError::InvalidRequest("not an export id"));
        }
        let principal = caller.principal.to_string();
        let granted = state
            .exports
            .take(&id, &principal)
            .map_err(|e| approval_error(&e))?;
        let Some(granted) = granted else {
            audited.event().detail = Some(format!("export {id}: not released"));
            return match state.approvals.pending(&id) {
                Some(p) if p.requested_by == principal => Ok(json(
                    StatusCode::ACCEPTED,
                    &ExportPending {
                        status: "pending",
                        id: id.clone(),
                        expires_ms: p.expires_ms,
                    },
                )),
                Some(_) => Err(ApiError::Forbidden),
                None => Err(ApiError::InvalidRequest(
                    "no export with this id (unknown, fetched already, or expired)",
                )),
            };
        };
        audited.event().tenant = Some(granted.tenant.to_string());
        let (ciphertext, count) = encrypt_tenant(state, &granted.tenant, &granted.recipient).await?;
        let digest = hex::encode(Sha256::digest(&ciphertext));
        let event = audited.event();
        event.count = Some(count);
        event.detail = Some(format!(
            "export {id} to {}: {count} records, requested by {}, approved by {}, age ciphertext sha256 {digest}",
            granted.recipient, granted.requested_by, granted.approved_by
        ));
        Ok((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (
                    header::HeaderName::from_static("x-cardvault-export-sha256"),
                    digest,
                ),
            ],
            ciphertext,
        )
            .into_response())
    })
    .await
}

/// The tenant's (token, PAN, expiry) lines, encrypted to `recipient` as
/// they are written; the plaintext exists only line by line, in memory.
async fn encrypt_tenant(
    state: &AppState,
    tenant: &TenantId,
    recipient: &str,
) -> Result<(Vec<u8>, u64), ApiError> {
    let recipient = age::x25519::Recipient::from_str(recipient).map_err(|_| ApiError::Internal)?;
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .map_err(|_| ApiError::Internal)?;
    let mut writer = encryptor
        .wrap_output(Vec::new())
        .map_err(|_| ApiError::Internal)?;
    let mut after = None;
    let mut count = 0u64;
    loop {
        let (page, next) = state
            .vault
            .export_page(tenant, after, EXPORT_PAGE)
            .await
            .map_err(|e| crate::server::error::admin_key_error("export", &e))?;
        for (token, revealed) in &page {
            let mut line = Zeroizing::new(Vec::with_capacity(96));
            line.extend_from_slice(b"{\"token\":\"");
            line.extend_from_slice(token.as_bytes());
            line.extend_from_slice(b"\",\"pan\":\"");
            line.extend_from_slice(revealed.pan.expose_digits());
            line.extend_from_slice(b"\"");
            if let Some(expiry) = revealed.expiry {
                line.extend_from_slice(format!(",\"expiry\":\"{expiry}\"").as_bytes());
            }
            line.extend_from_slice(b"}\n");
            writer.write_all(&line).map_err(|_| ApiError::Internal)?;
            count += 1;
        }
        match next {
            Some(token) => after = Some(token),
            None => break,
        }
    }
    let ciphertext = writer.finish().map_err(|_| ApiError::Internal)?;
    Ok((ciphertext, count))
}
