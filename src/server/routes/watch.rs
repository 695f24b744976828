//! `POST /v1/admin/watch/reports` (role `watcher`, which can do nothing
//! else): one check of one payment page from `cardvault watch run`. The
//! vault audits it — `page_checked` when the page matched or could not be
//! checked, `page_changed` with every difference's kind and subject
//! (never page content), and `page_baseline` with the approved scripts and
//! their justifications when the watcher's baseline is new — and exports
//! its gauges
//! ([`crate::runtime::watched`]) for the alert rules.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;

use crate::audit::EventKind;
use crate::config::Role;
use crate::peer::report::{BaselineApproval, Outcome, WatchReport};
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

/// `{"page", "recorded": true}`.
#[derive(Serialize)]
struct Recorded {
    page: String,
    recorded: bool,
}

/// `POST /v1/admin/watch/reports` (watcher).
pub async fn report(call: Call, req: Request) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    let mut baseline_event = None;
    let response = call
        .audited(EventKind::PageChecked, async |audited| {
            caller.require(Role::Watcher)?;
            let body: WatchReport =
                read_json(req, state.limits.body_limit_bytes.get(), &state.bodies).await?;
            body.validate()?;
            let now_s = crate::clock::now_ms() as f64 / 1000.0;
            state.watched.record(&body, now_s).map_err(|_| {
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
            audited.event().detail = Some(bounded(detail, MAX_DETAIL));
            Ok(json(
                StatusCode::OK,
                &Recorded {
                    page: body.page,
                    recorded: true,
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

/// `{"page", "baseline_sha256", "approved_by"}`.
#[derive(Serialize)]
struct Approved {
    page: String,
    baseline_sha256: String,
    approved_by: String,
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
        let body: BaselineApproval =
            read_json(req, state.limits.body_limit_bytes.get(), &state.bodies).await?;
        let justification = body.validate()?;
        audited.event().detail = Some(format!(
            "page {}: baseline sha256 {} approved: {justification}",
            body.page, body.baseline_sha256
        ));
        Ok(json(
            StatusCode::OK,
            &Approved {
                page: body.page,
                baseline_sha256: body.baseline_sha256,
                approved_by: caller.principal.to_string(),
            },
        ))
    })
    .await
}
