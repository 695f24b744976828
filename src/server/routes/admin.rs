//! Admin routes under `/v1/admin/`: the alert blocks (list and clear). Each
//! needs the `admin` role and is audited like every request. An admin acts
//! on its own tenant's principals only, unless its principal is configured
//! with `scope = "global"`; a principal outside the admin's reach is
//! answered exactly like one that does not exist (no name oracle).

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;

use crate::audit::EventKind;
use crate::config::Role;
use crate::server::audited::Call;
use crate::server::error::ApiError;
use crate::server::identity::Caller;
use crate::server::request::{ClearRequest, read_json};
use crate::server::response::json;
use crate::server::state::AppState;
use serde::Serialize;

/// Whether `principal` is configured (in the principals table in force)
/// and in the admin `caller`'s reach. Only those can be listed or cleared,
/// so a request cannot get arbitrary text into logs.
fn reaches(state: &AppState, caller: &Caller, principal: &str) -> bool {
    state
        .principals
        .policy()
        .tenant_of(principal)
        .is_some_and(|tenant| caller.admin_reaches(tenant))
}

/// `GET /v1/admin/alerts` (admin): principals whose detokenizations an
/// alert has blocked. Audited as `alerts_listed`.
pub async fn list_blocks(call: Call) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::AlertsListed, async |_| {
        caller.require(Role::Admin)?;
        let blocked = state
            .monitor
            .blocked(|principal| reaches(state, caller, principal));
        Ok(json(StatusCode::OK, &BlockList { blocked }))
    })
    .await
}

/// `POST /v1/admin/alerts/clear` (admin) `{"principal": "..."}`: lifts a
/// block. Audited as `alert_cleared`, naming whose block.
pub async fn clear_block(call: Call, req: Request) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::AlertCleared, async |audited| {
        caller.require(Role::Admin)?;
        let body: ClearRequest =
            read_json(req, state.limits.body_limit_bytes.get(), &state.bodies).await?;
        if !reaches(state, caller, &body.principal) {
            return Err(ApiError::InvalidRequest(
                "no such principal in the config for your tenant",
            ));
        }
        let was_blocked = state.monitor.clear(&body.principal, &caller.principal);
        audited.event().detail = Some(format!(
            "principal {}{}",
            body.principal,
            if was_blocked {
                ""
            } else {
                " (was not blocked)"
            }
        ));
        Ok(json(
            StatusCode::OK,
            &Cleared {
                principal: body.principal,
                was_blocked,
            },
        ))
    })
    .await
}

/// `GET /v1/admin/alerts`: `{"blocked": [...]}`.
#[derive(Serialize)]
pub struct BlockList {
    /// Blocked principals.
    pub blocked: Vec<String>,
}

/// `POST /v1/admin/alerts/clear`: `{"principal", "was_blocked"}`.
#[derive(Serialize)]
pub struct Cleared {
    /// Whose block was lifted.
    pub principal: String,
    /// Whether it was blocked.
    pub was_blocked: bool,
}
