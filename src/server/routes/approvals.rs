//! The dual-control routes: `GET /v1/admin/approvals` lists the requests
//! waiting for a second admin on tenants the admin reaches;
//! `POST /v1/admin/approvals/{id}` by a **different** admin who also
//! reaches the tenant carries a shred out (keys destroyed, records deleted,
//! files compacted), releases an export to the admin who asked, or — a
//! different *global* admin — seals the vault or rotates its KEK or its
//! evidence key. And the
//! helpers the asking routes share (`tenants`, `portable`): the requested
//! tenant, the pending approval's 202, the refusals. Audited as
//! `approvals_listed`, `tenant_shredded` (naming both admins),
//! `export_approved` and `access_denied` for refusals. The approvals
//! themselves live in [`crate::runtime::approvals`].

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;

use crate::audit::EventKind;
use crate::config::Role;
use crate::domain::TenantId;
use crate::runtime::approvals::{Action, ApprovalError, Approvals, Pending, is_approval_id};
use crate::server::audited::{Audited, Call};
use crate::server::error::{ApiError, admin_key_error};
use crate::server::identity::Caller;
use crate::server::response::json;

/// The tenant of a dual-control request: a valid name the calling admin
/// reaches (recorded in the request's audit event).
pub fn requested_tenant(
    caller: &Caller,
    audited: &mut Audited<'_>,
    tenant: &str,
) -> Result<TenantId, ApiError> {
    caller.require(crate::config::Role::Admin)?;
    let tenant =
        TenantId::parse(tenant).map_err(|_| ApiError::InvalidRequest("not a valid tenant name"))?;
    audited.event().tenant = Some(tenant.to_string());
    if caller.admin_reaches(&tenant) {
        Ok(tenant)
    } else {
        Err(ApiError::Forbidden)
    }
}

/// Records `action` on `tenant` for a second admin and answers 202 with
/// the pending approval; the audit detail says `what` and the id.
pub fn ask(
    approvals: &Approvals,
    caller: &Caller,
    audited: &mut Audited<'_>,
    action: Action,
    tenant: TenantId,
    what: &str,
) -> Result<axum::response::Response, ApiError> {
    let pending = approvals
        .request(action, tenant, &caller.principal.to_string())
        .map_err(|e| approval_error(&e))?;
    audited.event().detail = Some(format!(
        "{what}, approval {}; another admin must approve it",
        pending.id
    ));
    Ok(json(axum::http::StatusCode::ACCEPTED, &pending))
}

/// The API error for an approval refusal.
pub fn approval_error(e: &ApprovalError) -> ApiError {
    match e {
        ApprovalError::Unknown => {
            ApiError::InvalidRequest("no pending approval with this id (unknown, used or expired)")
        }
        ApprovalError::SameAdmin | ApprovalError::NotYours => ApiError::Forbidden,
        ApprovalError::Full => ApiError::Unavailable("too many approvals pending; retry later"),
    }
}

/// `{"approvals": [...]}`.
#[derive(Serialize)]
struct PendingList {
    approvals: Vec<Pending>,
}

/// `GET /v1/admin/approvals`: what waits, on tenants the admin reaches.
pub async fn list(call: Call) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::ApprovalsListed, async |_| {
        caller.require(Role::Admin)?;
        let approvals = state.approvals.list(|tenant| caller.admin_reaches(tenant));
        Ok(json(StatusCode::OK, &PendingList { approvals }))
    })
    .await
}

/// What a shred did.
#[derive(Serialize)]
struct ShredDone {
    tenant: String,
    records_deleted: u64,
    keys_destroyed: usize,
    requested_by: String,
    approved_by: String,
}

/// What approving an export did.
#[derive(Serialize)]
struct ExportApproved {
    action: &'static str,
    tenant: String,
    recipient: String,
    download: String,
    requested_by: String,
    approved_by: String,
}

/// `POST /v1/admin/approvals/{id}`: a second admin carries the request out
/// (a shred), or releases it to the admin who asked (an export).
pub async fn approve(call: Call, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::TenantShredded, async |audited| {
        caller.require(Role::Admin)?;
        if !is_approval_id(&id) {
            return Err(ApiError::InvalidRequest("not an approval id"));
        }
        // The approver must reach the tenant too (a vault-wide action:
        // be a global admin); checked before the approval is used up.
        if let Some(tenant) = state.approvals.tenant_of(&id)
            && !caller.admin_reaches(&tenant)
        {
            return Err(ApiError::Forbidden);
        }
        if state
            .approvals
            .pending(&id)
            .is_some_and(|p| p.action.is_vault_wide())
            && !caller.is_global_admin()
        {
            return Err(ApiError::Forbidden);
        }
        let approver = caller.principal.to_string();
        let (pending, tenant) = state.approvals.approve(&id, &approver).map_err(|e| {
            if e == ApprovalError::SameAdmin {
                audited.event().detail = Some(format!("approval {id}: {e}"));
            }
            approval_error(&e)
        })?;
        audited.event().tenant = Some(tenant.to_string());
        let approval = Approved {
            id: &id,
            tenant,
            requested_by: pending.requested_by,
            approved_by: approver,
        };
        match pending.action {
            Action::ExportTenant { recipient, .. } => {
                Ok(release_export(&state.exports, audited, approval, recipient))
            }
            Action::ShredTenant { .. } => shred(state, audited, approval).await,
            Action::SealVault => {
                audited.event().tenant = None;
                let detail = format!("{}seal: KEK and every key dropped", approval.lead());
                super::custody::seal_now(state, audited, detail).await
            }
            Action::RotateEvidenceKey => {
                audited.event().tenant = None;
                super::custody::rotate_evidence_now(state, audited, approval.lead()).await
            }
            Action::RotateKek { to } => {
                audited.event().tenant = None;
                super::custody::rotate_now(state, audited, to, approval.lead()).await
            }
        }
    })
    .await
}

/// An approval a second admin just gave.
struct Approved<'a> {
    id: &'a str,
    tenant: TenantId,
    requested_by: String,
    approved_by: String,
}

impl Approved<'_> {
    /// "approval ID: requested by A, approved by B; " — what leads the
    /// event of a vault-wide action carried out on approval.
    fn lead(&self) -> String {
        format!(
            "approval {}: requested by {}, approved by {}; ",
            self.id, self.requested_by, self.approved_by
        )
    }
}

/// Hands an approved export to the admin who asked for it (only they may
/// fetch it, within the approval's lifetime).
fn release_export(
    exports: &crate::runtime::approvals::GrantedExports,
    audited: &mut Audited<'_>,
    approval: Approved<'_>,
    recipient: String,
) -> Response {
    let Approved {
        id,
        tenant,
        requested_by,
        approved_by,
    } = approval;
    audited.event().event = EventKind::ExportApproved;
    audited.event().detail = Some(format!(
        "approval {id}: export to {recipient} requested by {requested_by}, approved by {approved_by}; only {requested_by} may fetch it"
    ));
    exports.grant(
        id,
        tenant.clone(),
        recipient.clone(),
        requested_by.clone(),
        approved_by.clone(),
    );
    json(
        StatusCode::OK,
        &ExportApproved {
            action: "export_tenant",
            tenant: tenant.to_string(),
            recipient,
            download: format!("/v1/admin/exports/{id}"),
            requested_by,
            approved_by,
        },
    )
}

/// Crypto-shreds an approved tenant: keys destroyed, records deleted,
/// files compacted.
async fn shred(
    state: &crate::server::state::AppState,
    audited: &mut Audited<'_>,
    approval: Approved<'_>,
) -> Result<Response, ApiError> {
    let Approved {
        id,
        tenant,
        requested_by,
        approved_by,
    } = approval;
    let shredded = state
        .vault
        .shred_tenant(&tenant)
        .await
        .map_err(|e| admin_key_error("crypto-shred", &e))?;
    audited.event().count = Some(shredded.records);
    audited.event().detail = Some(format!(
        "approval {id}: requested by {requested_by}, approved by {approved_by}; {} keys destroyed, {} records deleted, files compacted",
        shredded.keys, shredded.records
    ));
    Ok(json(
        StatusCode::OK,
        &ShredDone {
            tenant: tenant.to_string(),
            records_deleted: shredded.records,
            keys_destroyed: shredded.keys,
            requested_by,
            approved_by,
        },
    ))
}
