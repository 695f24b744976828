//! Tenant routes with dual control: `DELETE /v1/admin/tenants/{tenant}`
//! (admin reaching the tenant) asks for a crypto-shred and answers 202 with
//! a pending approval; `POST /v1/admin/approvals/{id}` by a **different**
//! admin who also reaches the tenant carries it out (keys destroyed,
//! records deleted, files compacted); `GET /v1/admin/approvals` lists what
//! waits. Audited as `approval_requested`, `tenant_shredded` (naming both
//! admins) and `access_denied` for refusals.

use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;

use super::approvals::{Action, ApprovalError, Pending, approval_error, ask, requested_tenant};
use super::audited::Audited;
use super::error::{ApiError, admin_key_error};
use super::identity::Caller;
use super::observe::RequestId;
use super::response::json;
use super::state::AppState;
use crate::audit::EventKind;
use crate::config::Role;

/// `DELETE /v1/admin/tenants/{tenant}`: 202 with the pending approval.
pub async fn shred_request(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Extension(RequestId(rid)): Extension<RequestId>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    let mut audited = Audited::open(&state.audit, EventKind::ApprovalRequested, &caller, &rid);
    let result = async {
        let tenant = requested_tenant(&caller, &mut audited, &tenant)?;
        let action = Action::ShredTenant {
            tenant: tenant.to_string(),
        };
        ask(
            &state.approvals,
            &caller,
            &mut audited,
            action,
            tenant,
            "shred_tenant",
        )
    }
    .await;
    audited.close(result)
}

/// `{"approvals": [...]}`.
#[derive(Serialize)]
struct PendingList {
    approvals: Vec<Pending>,
}

/// `GET /v1/admin/approvals`: what waits, on tenants the admin reaches.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Extension(RequestId(rid)): Extension<RequestId>,
) -> Result<Response, ApiError> {
    let audited = Audited::open(&state.audit, EventKind::ApprovalsListed, &caller, &rid);
    let result = caller.require(Role::Admin).map(|_| {
        let approvals = state.approvals.list(|tenant| caller.admin_reaches(tenant));
        json(StatusCode::OK, &PendingList { approvals })
    });
    audited.close(result)
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
pub async fn approve(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Extension(RequestId(rid)): Extension<RequestId>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let mut audited = Audited::open(&state.audit, EventKind::TenantShredded, &caller, &rid);
    let result = async {
        caller.require(Role::Admin)?;
        if !super::approvals::is_approval_id(&id) {
            return Err(ApiError::InvalidRequest("not an approval id"));
        }
        // The approver must reach the tenant too; checked before the
        // approval is used up.
        if let Some(tenant) = state.approvals.tenant_of(&id)
            && !caller.admin_reaches(&tenant)
        {
            return Err(ApiError::Forbidden);
        }
        let principal = caller.principal.to_string();
        let (pending, tenant) = state.approvals.approve(&id, &principal).map_err(|e| {
            if e == ApprovalError::SameAdmin {
                audited.event().detail = Some(format!("approval {id}: {e}"));
            }
            approval_error(&e)
        })?;
        audited.event().tenant = Some(tenant.to_string());
        if let Action::ExportTenant { recipient, .. } = &pending.action {
            audited.event().event = EventKind::ExportApproved;
            audited.event().detail = Some(format!(
                "approval {id}: export to {recipient} requested by {}, approved by {principal}; only {} may fetch it",
                pending.requested_by, pending.requested_by
            ));
            state.exports.grant(
                &id,
                tenant.clone(),
                recipient.clone(),
                pending.requested_by.clone(),
                principal.clone(),
            );
            return Ok(json(
                StatusCode::OK,
                &ExportApproved {
                    action: "export_tenant",
                    tenant: tenant.to_string(),
                    recipient: recipient.clone(),
                    download: format!("/v1/admin/exports/{id}"),
                    requested_by: pending.requested_by,
                    approved_by: principal,
                },
            ));
        }
        let shredded = state
            .vault
            .shred_tenant(&tenant)
            .await
            .map_err(|e| admin_key_error("crypto-shred", &e))?;
        audited.event().count = Some(shredded.records);
        audited.event().detail = Some(format!(
            "approval {id}: requested by {}, approved by {principal}; {} keys destroyed, {} records deleted, files compacted",
            pending.requested_by, shredded.keys, shredded.records
        ));
        Ok(json(
            StatusCode::OK,
            &ShredDone {
                tenant: tenant.to_string(),
                records_deleted: shredded.records,
                keys_destroyed: shredded.keys,
                requested_by: pending.requested_by,
                approved_by: principal,
            },
        ))
    }
    .await;
    audited.close(result)
}
