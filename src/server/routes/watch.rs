//! `POST /v1/admin/watch/reports` (role `watcher`, which can do nothing
//! else): one check of one payment page from `cardvault watch run`. The
//! vault audits it — `page_checked` when the page matched or could not be
//! checked, `page_changed` with every difference's kind and subject
//! (never page content), and `page_baseline` with the approved scripts and
//! their justifications when the watcher's baseline is new — and exports
//! its gauges
//! ([`crate::runtime::watched`]) for the alert rules, with whether the
//! baseline carries an approval the vault's evidence key signed. A sealed
//! vault answers 503 `sealed` to both routes.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;

use crate::audit::EventKind;
use crate::config::Role;
use crate::peer::report::{BaselineApproval, Outcome, SignedApproval, WatchReport};
use crate::server::audited::Call;
use crate::server::error::ApiError;
use crate::server::request::read_json;
use crate::server::response::json;

/// Longest `detail` a report's event carries.
const MAX_DETAIL: usize = 4000;

/// Longest `detail` a baseline's event carries (256 justified scripts).
const MAX_BASELINE_DETAIL: usize = 32_000;

/// `text` cut to at most `max` bytes (on a character boundary), marked.
fn bounded(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(" …");
    }
    text
}

/// `{"page", "recorded": true, "baseline_approved"}` (the last for a
/// checked page).
#[derive(Serialize)]
struct Recorded {
    page: String,
    recorded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_approved: Option<bool>,
}

/// The first of `approvals` for `page`'s baseline `digest` that the
/// vault's evidence key signed.
async fn approval_of<'a>(
    audit: &crate::audit::AuditLog,
    page: &str,
    digest: &str,
    approvals: &'a [SignedApproval],
) -> Option<&'a SignedApproval> {
    for approval in approvals {
        if approval.page != page || approval.baseline_sha256 != digest {
            continue;
        }
        let Ok(signature) = hex::decode(&approval.signature) else {
            continue;
        };
        if audit
            .verifies(&approval.statement(), &signature)
            .await
            .unwrap_or(false)
        {
            return Some(approval);
        }
    }
    None
}

/// `POST /v1/admin/watch/reports` (watcher).
pub async fn report(call: Call, req: Request) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    let mut baseline_event = None;
    let response = call
        .audited(EventKind::PageChecked, async |audited| {
            caller.require(Role::Watcher)?;
            // Approvals are checked with the evidence key, which a sealed
            // vault does not have yet.
            if state.vault.is_sealed() {
                return Err(ApiError::Sealed);
            }
            let body: WatchReport =
                read_json(req, state.limits.body_limit_bytes.get(), &state.bodies).await?;
            body.validate()?;
            let now_s = crate::clock::now_ms() as f64 / 1000.0;
            let approval = match &body.baseline_sha256 {
                Some(digest) => {
                    approval_of(&state.audit, &body.page, digest, &body.approvals).await
                }
                None => None,
            };
            let approved = (body.outcome != Outcome::Unchecked).then_some(approval.is_some());
            state.watched.record(&body, approved, now_s).map_err(|_| {
                ApiError::InvalidRequest("at most 64 pages are watched; this would be one more")
            })?;
            let detail = match body.outcome {
                Outcome::Matches => {
                    format!("page {} ({}): matches its baseline", body.page, body.url)
                }
                Outcome::Unchecked => format!(
                    "page {} ({}): could not be checked: {}",
                    body.page,
                    body.url,
                    body.reason.as_deref().unwrap_or("-")
                ),
                Outcome::Changed => {
                    audited.event().event = EventKind::PageChanged;
                    audited.event().count = Some(body.differences.len() as u64);
                    let listed: Vec<String> = body
                        .differences
                        .iter()
                        .map(|d| format!("{} {}", d.kind, d.subject))
                        .collect();
                    format!(
                        "page {} ({}): {} difference(s) from its baseline: {}",
                        body.page,
                        body.url,
                        body.differences.len(),
                        listed.join("; ")
                    )
                }
            };
            if let Some(baseline) = &body.baseline {
                let mut event = audited.event().clone();
                event.event = EventKind::PageBaseline;
                event.count = Some(baseline.scripts.len() as u64);
                let scripts: Vec<String> = baseline
                    .scripts
                    .iter()
                    .map(|s| format!("{} {}: {}", s.script, s.sha384, s.justification))
                    .collect();
                event.detail = Some(bounded(
                    format!(
                        "page {}: baseline sha256 {}, {} approved script(s): {}",
                        body.page,
                        baseline.sha256,
                        baseline.scripts.len(),
                        scripts.join("; ")
                    ),
                    MAX_BASELINE_DETAIL,
                ));
                baseline_event = Some(event);
            }
            let detail = match (approved, approval) {
                (Some(true), Some(a)) => format!(
                    "{detail}; baseline approved by {} at {}",
                    a.approved_by, a.approved_at
                ),
                (Some(false), _) => format!(
                    "{detail}; baseline sha256 {} not approved by an admin",
                    body.baseline_sha256.as_deref().unwrap_or("(not reported)")
                ),
                _ => detail,
            };
            audited.event().detail = Some(bounded(detail, MAX_DETAIL));
            Ok(json(
                StatusCode::OK,
                &Recorded {
                    page: body.page,
                    recorded: true,
                    baseline_approved: approved,
                },
            ))
        })
        .await;
    // The baseline's event follows the report's own.
    if let Some(event) = baseline_event {
        state.audit.record(event);
    }
    response
}

/// `{"page", "baseline_sha256", "approved_by", "approval"}`: the last
/// signed by the vault's evidence key, for the watcher to carry.
#[derive(Serialize)]
struct Approved {
    page: String,
    baseline_sha256: String,
    approved_by: String,
    approval: SignedApproval,
}

/// `POST /v1/admin/watch/approvals` (admin, global scope).
pub async fn approve(call: Call, req: Request) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::PageBaselineApproved, async |audited| {
        caller.require(Role::Admin)?;
        if !caller.is_global_admin() {
            audited.event().detail =
                Some("approving a page baseline needs scope = \"global\"".into());
            return Err(ApiError::Forbidden);
        }
        if state.vault.is_sealed() {
            return Err(ApiError::Sealed);
        }
        let body: BaselineApproval =
            read_json(req, state.limits.body_limit_bytes.get(), &state.bodies).await?;
        let justification = body.validate()?;
        let mut approval = SignedApproval {
            page: body.page.clone(),
            baseline_sha256: body.baseline_sha256.clone(),
            justification: justification.clone(),
            approved_by: caller.principal.to_string(),
            approved_at: crate::clock::rfc3339(crate::clock::now_ms()),
            key: String::new(),
            signature: String::new(),
        };
        let signed = state.audit.sign(&approval.statement()).await.map_err(|e| {
            tracing::error!(error = %e, "cannot sign a page approval");
            ApiError::Unavailable("the audit trail is closed")
        })?;
        approval.key = signed.key;
        approval.signature = hex::encode(signed.signature);
        audited.event().detail = Some(format!(
            "page {}: baseline sha256 {} approved: {justification} (signed by evidence key {})",
            body.page, body.baseline_sha256, approval.key
        ));
        Ok(json(
            StatusCode::OK,
            &Approved {
                page: body.page,
                baseline_sha256: body.baseline_sha256,
                approved_by: caller.principal.to_string(),
                approval,
            },
        ))
    })
    .await
}
