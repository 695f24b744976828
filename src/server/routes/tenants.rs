//! Tenant routes with dual control: `DELETE /v1/admin/tenants/{tenant}`
//! (admin reaching the tenant) asks for a crypto-shred and answers 202 with
//! a pending approval; `POST /v1/admin/approvals/{id}` by a **different**
//! admin who also reaches the tenant carries it out (keys destroyed,
//! records deleted, files compacted); `GET /v1/admin/approvals` lists what
//! waits. Audited as `approval_requested`, `tenant_shredded` (naming both
//! admins) and `access_denied` for refusals.

use axum::extract::Path;
use axum::response::Response;

use super::approvals::{ask, requested_tenant};
use crate::audit::EventKind;
use crate::runtime::approvals::Action;
use crate::server::audited::Call;
use crate::server::error::ApiError;

/// `DELETE /v1/admin/tenants/{tenant}`: 202 with the pending approval.
pub async fn shred_request(call: Call, Path(tenant): Path<String>) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::ApprovalRequested, async |audited| {
        let tenant = requested_tenant(caller, &mut *audited, &tenant)?;
        let action = Action::ShredTenant {
            tenant: tenant.to_string(),
        };
        ask(
            &state.approvals,
            caller,
            &mut *audited,
            action,
            tenant,
            "shred_tenant",
        )
    })
    .await
}
