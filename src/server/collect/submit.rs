//! `POST /collect/v1/sessions/{id}/submit`: the card frame's submit. Only
//! from the frame itself — `Origin` exactly this listener's origin and
//! `Sec-Fetch-Site: same-origin` — with the nonce of the frame served
//! last; a JSON body of a few KiB read under the request timeout. The
//! answer (and the audit event) carries the token and what may be shown,
//! never the card number or the code.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::{Peer, Public, event, public_error, refused};
use crate::audit::EventKind;
use crate::runtime::collect::CardInput;
use crate::server::error::{ApiError, collect_error};
use crate::server::request::read_json_shape;
use crate::vault::sessions::SessionId;

/// The frame's body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    nonce: String,
    number: SecretString,
    expiry: SecretString,
    #[serde(default = "empty")]
    code: SecretString,
}

fn empty() -> SecretString {
    SecretString::from(String::new())
}

/// What the frame hands its parent page.
#[derive(Serialize)]
struct Tokenized<'a> {
    session: String,
    token: &'a str,
    bin: Option<&'a str>,
    last4: &'a str,
    brand: &'a str,
}

/// Whether the request came from a page of this listener's origin.
fn from_the_frame(req: &Request, origin: &str) -> bool {
    let headers = req.headers();
    let header_is = |name: &str, want: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == want)
    };
    header_is(header::ORIGIN.as_str(), origin) && header_is("sec-fetch-site", "same-origin")
}

/// `POST /collect/v1/sessions/{id}/submit`.
pub async fn submit(
    State(public): State<Arc<Public>>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    req: Request,
) -> Response {
    let id = id.ok().and_then(|Path(raw)| SessionId::parse(&raw));
    if !from_the_frame(&req, &public.origin) {
        refused(
            &public,
            id.as_ref(),
            None,
            peer,
            "not_from_frame",
            ApiError::Forbidden,
        );
        return public_error(ApiError::Forbidden);
    }
    let Some(id) = id else {
        refused(
            &public,
            None,
            None,
            peer,
            "session_not_found",
            ApiError::SessionNotFound,
        );
        return public_error(ApiError::SessionNotFound);
    };
    let body: SubmitBody = match read_json_shape(
        req,
        public.limits.max_body_bytes.get(),
        &public.bodies,
        "the body must be {\"nonce\", \"number\", \"expiry\", \"code\"}",
    )
    .await
    {
        Ok(body) => body,
        Err(error) => {
            refused(&public, Some(&id), None, peer, error.code(), error);
            return public_error(error);
        }
    };
    let card = CardInput {
        pan: body.number,
        exp: body.expiry,
        cvc: body.code,
    };
    match public
        .collect
        .submit(&id, &body.nonce, card, peer.ip())
        .await
    {
        Ok(done) => {
            let result = &done.result;
            let mut event = event(EventKind::CollectSubmitted, Some(&id), peer);
            event.tenant = Some(done.tenant.clone());
            event.token = Some(result.token.clone());
            if result.cvc_held {
                event.detail = Some("security code held".into());
            }
            public.audit.record(event);
            metrics::counter!("cardvault_collect_submits_total").increment(1);
            if done.velocity.alert {
                public.monitor.card_testing(
                    &done.tenant,
                    &id.to_string(),
                    peer.ip(),
                    done.velocity.sessions,
                );
            }
            crate::server::response::json(
                StatusCode::OK,
                &Tokenized {
                    session: id.to_string(),
                    token: &result.token,
                    bin: result.bin.as_deref(),
                    last4: &result.last4,
                    brand: &result.brand,
                },
            )
        }
        Err(e) => {
            let error = collect_error(&e);
            refused(&public, Some(&id), None, peer, e.reason(), error);
            public_error(error)
        }
    }
}
