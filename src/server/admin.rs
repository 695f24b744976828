//! Admin routes under `/v1/admin/`: the alert blocks (list and clear). Each
//! needs the `admin` role and is audited like every request. An admin acts
//! on its own tenant's principals only, unless its principal is configured
//! with `scope = "global"`; a principal outside the admin's reach is
//! answered exactly like one that does not exist (no name oracle).

use std::sync::Arc;

use axum::extract::{Extension, Request, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::audited::Audited;
use super::error::ApiError;
use super::identity::Caller;
use super::observe::RequestId;
use super::request::{ClearRequest, read_json};
use super::response::{BlockList, Cleared, json};
use super::state::AppState;
use crate::audit::EventKind;
use crate::config::Role;

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
pub async fn list_blocks(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Extension(RequestId(rid)): Extension<RequestId>,
) -> Result<Response, ApiError> {
    let audited = Audited::open(&state.audit, EventKind::AlertsListed, &caller, &rid);
    let result = caller.require(Role::Admin).map(|_| {
        json(
            StatusCode::OK,
            &BlockList {
                blocked: state
                    .monitor
                    .blocked(|principal| reaches(&state, &caller, principal)),
            },
        )
    });
    audited.close(result)
}

/// `POST /v1/admin/alerts/clear` (admin) `{"principal": "..."}`: lifts a
/// block. Audited as `alert_cleared`, naming whose block.
pub async fn clear_block(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Extension(RequestId(rid)): Extension<RequestId>,
    req: Request,
) -> Result<Response, ApiError> {
    let mut audited = Audited::open(&state.audit, EventKind::AlertCleared, &caller, &rid);
    let result = async {
        caller.require(Role::Admin)?;
        let body: ClearRequest =
            read_json(req, state.limits.body_limit_bytes.get(), &state.bodies).await?;
        if !reaches(&state, &caller, &body.principal) {
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
    }
    .await;
    audited.close(result)
}
