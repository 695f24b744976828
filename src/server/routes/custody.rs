//! The custody routes: `POST /v1/admin/unseal` (role `custodian`: one KEK
//! share per request, audited as `unseal_share_accepted` or
//! `unseal_share_rejected` with the set and share index, never the share),
//! `POST /v1/admin/seal` (role `admin` with `scope = "global"`, audited as
//! `sealed`) — both answer the seal status `{"sealed", "shares_received",
//! "threshold"}` — and `POST /v1/admin/kek/rotate` (global admin, audited
//! as `kek_rotated` naming both KEKs), `POST /v1/admin/evidence-key/rotate`
//! (global admin, audited as `evidence_key_rotated` naming both keys).
//! Under `[keys.dual_control]` (the default) seal and both rotations wait
//! for a second global admin's approval (`approval_requested`; carried out
//! by `POST /v1/admin/approvals/{id}`).

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use secrecy::ExposeSecret;

use super::approvals::ask;
use crate::audit::EventKind;
use crate::config::Role;
use crate::crypto::shares::ShareError;
use crate::domain::TenantId;
use crate::runtime::approvals::Action;
use crate::runtime::custody::CustodyError;
use crate::server::audited::{Audited, Call};
use crate::server::error::ApiError;
use crate::server::request::{RotateKekRequest, UnsealRequest, read_json};
use crate::server::response::json;
use crate::server::state::AppState;

/// The fixed message for a refusal (no set ids or input in it).
fn api_error(e: &CustodyError) -> ApiError {
    match e {
        CustodyError::NotSealable => ApiError::SealState(
            "this vault's KEK is not split among custodians; it cannot be sealed or unsealed",
        ),
        CustodyError::NotSealed => ApiError::SealState("the vault is not sealed"),
        CustodyError::Share(ShareError::Checksum) => ApiError::ShareRejected(
            "the share file's checksum does not match: it was mistyped, truncated or edited",
        ),
        CustodyError::Share(ShareError::Malformed(_) | ShareError::Parameters { .. }) => {
            ApiError::ShareRejected("not a valid cardvault KEK share file")
        }
        CustodyError::Share(ShareError::Foreign { .. }) => ApiError::ShareRejected(
            "the share belongs to another split of the KEK, not this vault's",
        ),
        CustodyError::Share(ShareError::Duplicate(_)) => {
            ApiError::ShareRejected("this share was handed in already")
        }
        CustodyError::Share(ShareError::Mismatch) => ApiError::ShareRejected(
            "the shares do not combine to this vault's KEK; every share received was discarded",
        ),
        CustodyError::WrongKek(_) => ApiError::ShareRejected(
            "the rebuilt KEK does not open this vault's keys; every share received was discarded",
        ),
        CustodyError::BadTarget(_) => ApiError::InvalidRequest(
            "the KEK to rotate to cannot be opened or made (the audit event says why)",
        ),
        CustodyError::Failed(_) => ApiError::Internal,
    }
}

/// `POST /v1/admin/unseal` (custodian) `{"share": "<share file text>"}`.
pub async fn unseal(call: Call, req: Request) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    let mut unsealed = None;
    let response = call
        .audited(EventKind::UnsealShareAccepted, async |audited| {
            caller.require(Role::Custodian)?;
            let body: UnsealRequest =
                read_json(req, state.limits.body_limit_bytes.get(), &state.bodies).await?;
            match state.custody.offer(body.share.expose_secret()).await {
                Ok(offered) => {
                    audited.event().detail = Some(offered.detail);
                    unsealed = offered.unsealed.map(|detail| {
                        let mut event = audited.event().clone();
                        event.event = EventKind::Unsealed;
                        event.detail = Some(detail);
                        event
                    });
                    Ok(json(StatusCode::OK, &offered.status))
                }
                Err(e) => {
                    let event = audited.event();
                    event.event = EventKind::UnsealShareRejected;
                    event.detail = Some(e.to_string());
                    if let CustodyError::Failed(why) = &e {
                        tracing::error!(error = %why, "unseal failed");
                    }
                    Err(api_error(&e))
                }
            }
        })
        .await;
    // The `unsealed` event follows the share's own.
    if let Some(event) = unsealed {
        state.audit.record(event);
    }
    response
}

/// Refuses (403, said in the audit event) a caller that is not an admin
/// with `scope = "global"`: `what` acts on the whole vault.
fn global_admin(
    caller: &crate::server::identity::Caller,
    audited: &mut Audited<'_>,
    what: &str,
) -> Result<(), ApiError> {
    caller.require(Role::Admin)?;
    if caller.is_global_admin() {
        Ok(())
    } else {
        audited.event().detail = Some(format!("{what} needs scope = \"global\""));
        Err(ApiError::Forbidden)
    }
}

/// Under `[keys.dual_control]`: records the vault-wide `action` for a
/// second global admin and answers 202 (audited `approval_requested`).
fn ask_second_admin(
    state: &AppState,
    caller: &crate::server::identity::Caller,
    audited: &mut Audited<'_>,
    action: Action,
    what: &str,
) -> Result<Response, ApiError> {
    audited.event().event = EventKind::ApprovalRequested;
    ask(
        &state.approvals,
        caller,
        audited,
        action,
        TenantId::system(),
        what,
    )
}

/// `POST /v1/admin/seal` (admin, global scope): drops the KEK and every
/// key — at once, or, under `[keys.dual_control] seal`, once a second
/// global admin approves (202 with the pending approval).
pub async fn seal(call: Call) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::Sealed, async |audited| {
        global_admin(caller, audited, "sealing")?;
        if state.keys.dual_control.seal {
            return ask_second_admin(state, caller, audited, Action::SealVault, "seal_vault");
        }
        seal_now(state, audited, "KEK and every key dropped".into()).await
    })
    .await
}

/// Seals the vault; `detail` (what was asked, by whom) goes into the
/// `sealed` event, with the refusal when it could not be done.
pub(super) async fn seal_now(
    state: &AppState,
    audited: &mut Audited<'_>,
    detail: String,
) -> Result<Response, ApiError> {
    audited.event().event = EventKind::Sealed;
    match state.custody.seal().await {
        Ok(status) => {
            audited.event().detail = Some(detail);
            Ok(json(StatusCode::OK, &status))
        }
        Err(e) => {
            audited.event().detail = Some(format!("{detail}: not done, {e}"));
            if let CustodyError::Failed(why) = &e {
                tracing::error!(error = %why, "seal failed");
            }
            Err(api_error(&e))
        }
    }
}

/// `POST /v1/admin/kek/rotate` (admin, global scope): wraps every key under
/// a new KEK too; answers what was rewrapped and how to finish — or, under
/// `[keys.dual_control] kek_rotation`, 202 with the pending approval a
/// second global admin gives.
pub async fn rotate_kek(call: Call, req: Request) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::KekRotated, async |audited| {
        global_admin(caller, audited, "a KEK rotation")?;
        let body: RotateKekRequest =
            read_json(req, state.limits.body_limit_bytes.get(), &state.bodies).await?;
        if state.keys.dual_control.kek_rotation {
            let action = Action::RotateKek { to: body };
            return ask_second_admin(state, caller, audited, action, "rotate_kek");
        }
        rotate_now(state, audited, body, String::new()).await
    })
    .await
}

/// Rotates the KEK to `body`; `approval` (empty, or "approval ID: …; ")
/// leads the `kek_rotated` event's detail.
pub(super) async fn rotate_now(
    state: &AppState,
    audited: &mut Audited<'_>,
    body: RotateKekRequest,
    approval: String,
) -> Result<Response, ApiError> {
    audited.event().event = EventKind::KekRotated;
    match state.custody.rotate_kek(body).await {
        Ok(rotated) => {
            audited.event().count = Some(rotated.keys as u64);
            audited.event().detail = Some(format!(
                "{approval}from {} to {}: {} keys and the audit and evidence keys wrapped under the new KEK too; {}",
                rotated.from, rotated.to, rotated.keys, rotated.finish
            ));
            tracing::info!(keys = rotated.keys, to = %rotated.to, "KEK rotation: every key wrapped under the new KEK too");
            Ok(json(StatusCode::OK, &rotated))
        }
        Err(e) => {
            audited.event().detail = Some(format!("{approval}{e}"));
            // The caller named a KEK that cannot be used: its mistake,
            // a warning. Anything else is the vault's own failure.
            if matches!(e, CustodyError::BadTarget(_)) {
                tracing::warn!(error = %e, "KEK rotation refused");
            } else {
                tracing::error!(error = %e, "KEK rotation failed");
            }
            Err(api_error(&e))
        }
    }
}

/// `POST /v1/admin/evidence-key/rotate` (admin, global scope): a new
/// evidence key signs checkpoints and bundles after a handover checkpoint
/// signed by the old one — at once, or, under `[keys.dual_control]
/// evidence_key_rotation`, once a second global admin approves.
pub async fn rotate_evidence_key(call: Call) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::EvidenceKeyRotated, async |audited| {
        global_admin(caller, audited, "an evidence-key rotation")?;
        if state.keys.dual_control.evidence_key_rotation {
            let action = Action::RotateEvidenceKey;
            return ask_second_admin(state, caller, audited, action, "rotate_evidence_key");
        }
        rotate_evidence_now(state, audited, String::new()).await
    })
    .await
}

/// Rotates the evidence key; `approval` (empty, or "approval ID: …; ")
/// leads the `evidence_key_rotated` event's detail.
pub(super) async fn rotate_evidence_now(
    state: &AppState,
    audited: &mut Audited<'_>,
    approval: String,
) -> Result<Response, ApiError> {
    audited.event().event = EventKind::EvidenceKeyRotated;
    match state.vault.rotate_evidence_key().await {
        Ok(handover) => {
            audited.event().detail = Some(format!(
                "{approval}from key {} to key {} (public key {}); the handover checkpoint at seq {} is signed by the old key",
                handover.from, handover.to, handover.public_key, handover.seq
            ));
            Ok(json(StatusCode::OK, &handover))
        }
        Err(e) => {
            audited.event().detail = Some(format!("{approval}not done: {e}"));
            Err(crate::server::error::admin_key_error(
                "evidence-key rotation",
                &e,
            ))
        }
    }
}
