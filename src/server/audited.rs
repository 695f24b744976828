//! The one way a request is handled and audited. Every handler takes a
//! [`Call`] (the shared state, the caller and the request id, extracted
//! once) and runs its body through [`Call::audited`], which opens the
//! request's [`Audited`] scope (who, from where, which tenant, which
//! request), lets the body fill in what it learns (tokens, counts, detail)
//! and call [`Audited::reveal`] before a PAN leaves (the event must be on
//! disk first; if it cannot be written, nothing is revealed: 503), and
//! closes it with the body's result — success as is, a 403 as
//! `access_denied` naming what was attempted, any other error with its
//! code — unless the reveal already wrote the event.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::Response;

use super::error::ApiError;
use super::identity::Caller;
use super::observe::RequestId;
use super::state::AppState;
use crate::audit::{AuditLog, Event, EventKind, Outcome};

/// What every handler starts from: the shared state, the caller (set by
/// the listener from the verified certificate) and the request id.
pub struct Call {
    /// The handlers' shared state.
    pub state: Arc<AppState>,
    /// Who is calling, with the principals table in force.
    pub caller: Caller,
    /// This request's id (the `x-request-id` header).
    pub request_id: String,
}

impl FromRequestParts<Arc<AppState>> for Call {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Call, ApiError> {
        // The listener puts both on every request before routing; a
        // request without them never came through it.
        let caller = parts.extensions.get::<Caller>().cloned();
        let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone());
        match (caller, request_id) {
            (Some(caller), Some(request_id)) => Ok(Call {
                state: Arc::clone(state),
                caller,
                request_id,
            }),
            _ => Err(ApiError::Internal),
        }
    }
}

impl Call {
    /// Runs `body` inside this request's audit scope of `kind` and closes
    /// the scope with its result.
    pub async fn audited(
        &self,
        kind: EventKind,
        body: impl AsyncFnOnce(&mut Audited<'_>) -> Result<Response, ApiError>,
    ) -> Result<Response, ApiError> {
        let mut audited = Audited::open(&self.state.audit, kind, &self.caller, &self.request_id);
        let result = body(&mut audited).await;
        audited.close(result)
    }
}

/// The audit event of one request, from open to close.
pub struct Audited<'a> {
    audit: &'a AuditLog,
    event: Event,
    written: bool,
}

impl<'a> Audited<'a> {
    /// Opens the event `kind` for `caller`'s request `request_id`.
    pub fn open(
        audit: &'a AuditLog,
        kind: EventKind,
        caller: &Caller,
        request_id: &str,
    ) -> Audited<'a> {
        Audited {
            audit,
            event: request_event(kind, caller, request_id),
            written: false,
        }
    }

    /// The event, for the handler to fill in.
    pub fn event(&mut self) -> &mut Event {
        &mut self.event
    }

    /// Writes the event now and waits until it is on disk: a reveal is
    /// accounted for before the PAN is sent. If the trail cannot be written,
    /// 503, and [`Audited::close`] still tries to record the refusal.
    pub async fn reveal(&mut self) -> Result<(), ApiError> {
        match self.audit.record_durable(self.event.clone()).await {
            Ok(_seq) => {
                self.written = true;
                Ok(())
            }
            Err(e) => {
                metrics::counter!("cardvault_detokenize_refused_audit_total").increment(1);
                tracing::error!(error = %e, "detokenization refused: the audit trail cannot be written");
                Err(ApiError::Unavailable(
                    "the audit trail cannot be written; nothing was revealed",
                ))
            }
        }
    }

    /// Records how the request ended (unless [`Audited::reveal`] already
    /// wrote it) and passes the result through.
    pub fn close(mut self, result: Result<Response, ApiError>) -> Result<Response, ApiError> {
        if self.written {
            return result;
        }
        if let Err(error) = &result {
            let event = &mut self.event;
            event.code = Some(error.code().to_owned());
            if *error == ApiError::Forbidden {
                let attempted = event.event.as_str();
                event.detail = Some(match event.detail.take() {
                    Some(why) => format!("{attempted}: {why}"),
                    None => attempted.to_owned(),
                });
                event.event = EventKind::AccessDenied;
                event.outcome = Outcome::Denied;
            } else {
                event.outcome = Outcome::Error;
            }
        }
        self.audit.record(self.event);
        result
    }
}

/// An event about `caller`'s request `request_id`.
fn request_event(kind: EventKind, caller: &Caller, request_id: &str) -> Event {
    let mut event = caller.event(kind);
    event.request_id = Some(request_id.to_owned());
    event
}

/// The `access_denied` event of a request refused before any handler ran
/// (an unconfigured principal).
pub fn access_denied(caller: &Caller, request_id: &str, detail: &str) -> Event {
    let mut event = request_event(EventKind::AccessDenied, caller, request_id).with_detail(detail);
    event.outcome = Outcome::Denied;
    event.code = Some(ApiError::Forbidden.code().to_owned());
    event
}

/// The `request_timeout` event of a request cut off by the request
/// timeout: the handler was dropped, so this is its only record.
pub fn timed_out(caller: &Caller, request_id: &str, route: &str) -> Event {
    let mut event = request_event(EventKind::RequestTimeout, caller, request_id).with_detail(route);
    event.outcome = Outcome::Error;
    event.code = Some(ApiError::Unavailable("").code().to_owned());
    event
}
