//! `POST /v1/proxy/{route}` (role `detokenize`, a principal the route
//! allows): the reveal proxy. The payment connector sends its request with
//! tokens where the card numbers go; every token at the route's `reveal`
//! JSON Pointers must exist in the caller's tenant (else 4xx and nothing
//! is sent); the reveal is written to the audit trail and synced first
//! (`proxy_reveal`: tokens, route, upstream — no trail, no reveal: 503);
//! then the tokens are replaced by PANs (and a held security code put at
//! `cvc_at`), the request goes to the upstream with an allow-list of
//! headers, and its answer comes back unchanged (status, content type,
//! body, within the route's size limit). The upstream's status is audited
//! too (`proxy_response`). An upstream that cannot be reached answers 502
//! `upstream_failed`, one whose certificate is refused 502 `upstream_tls`,
//! one too slow 504 `upstream_timeout`.

use axum::extract::{Path, Request};
use axum::http::{HeaderMap, HeaderName, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::audit::{EventKind, Outcome};
use crate::config::Role;
use crate::domain::Token;
use crate::runtime::upstream::{Answer, ProxyUpstream, UpstreamError};
use crate::server::audited::Call;
use crate::server::error::ApiError;
use crate::server::request::read_json_document;

/// The headers of the connector's request that go upstream.
fn forwarded(headers: &HeaderMap, allowed: &[String]) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in allowed {
        let Ok(name) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) else {
            continue;
        };
        for value in headers.get_all(&name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Sets the value at JSON Pointer `pointer`, creating the last member if
/// its parent object exists. False if the parent is missing.
fn set_at(document: &mut Value, pointer: &str, new: Value) -> bool {
    if let Some(slot) = document.pointer_mut(pointer) {
        *slot = new;
        return true;
    }
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return false;
    };
    let key = last.replace("~1", "/").replace("~0", "~");
    match document.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(key, new);
            true
        }
        _ => false,
    }
}

/// `POST /v1/proxy/{route}`.
pub async fn proxy(
    call: Call,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::ProxyReveal, async |audited| {
        let tenant = caller.require(Role::Detokenize)?;
        let Some(route) = state.proxy.get(&name) else {
            return Err(ApiError::NotFound);
        };
        audited.event().detail = Some(format!("route {name} to {}", route.upstream.authority()));
        if !route
            .config
            .allowed_principals
            .iter()
            .any(|p| p == caller.principal.as_str())
        {
            return Err(ApiError::Forbidden);
        }
        let headers = forwarded(req.headers(), &route.config.forward_headers);
        let mut document: Value =
            read_json_document(req, state.limits.body_limit_bytes.get(), &state.bodies).await?;
        let tokens = tokens_at(&document, &route.config.reveal)?;
        audited.event().tokens = Some(tokens.iter().map(Token::to_string).collect());
        state
            .rates
            .detokenize(caller.principal.as_str(), tokens.len())?;
        state
            .monitor
            .check_detokenize(caller, tokens.len() as u64)
            .map_err(|_| ApiError::Forbidden)?;
        let mut revealed = Vec::with_capacity(tokens.len());
        for token in &tokens {
            revealed.push(
                state
                    .vault
                    .detokenize(&tenant, token)
                    .await
                    .map_err(|e| ApiError::from_vault(&e))?,
            );
        }
        let cvc = match (&route.config.cvc_at, tokens.first()) {
            (Some(_), Some(first)) => state.cvcs.take(&tenant, first),
            _ => None,
        };
        if route.config.cvc_at.is_some() {
            let detail = audited.event().detail.take().unwrap_or_default();
            audited.event().detail = Some(format!(
                "{detail}; {}",
                if cvc.is_some() {
                    "security code delivered"
                } else {
                    "no security code held"
                }
            ));
        }
        // On disk before any PAN leaves; no trail, no reveal.
        audited.reveal().await?;
        metrics::counter!("cardvault_detokenizations_total", "principal" => caller.metric_label())
            .increment(tokens.len() as u64);
        for (pointer, pan) in route.config.reveal.iter().zip(&revealed) {
            set_at(
                &mut document,
                pointer,
                Value::String(pan.pan.expose_str().to_owned()),
            );
        }
        if let (Some(at), Some(code)) = (&route.config.cvc_at, &cvc) {
            set_at(&mut document, at, Value::String(code.to_string()));
        }
        let body = Zeroizing::new(serde_json::to_vec(&document).map_err(|_| ApiError::Internal)?);
        drop(document);
        drop(revealed);
        let answer = route.upstream.post(headers, body).await;
        record_answer(&call, &name, route, &answer);
        let answer = answer.map_err(upstream_error)?;
        let mut response = (answer.status, answer.body).into_response();
        if let Some(content_type) = answer.content_type {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
        }
        Ok(response)
    })
    .await
}

/// The tokens at the route's `reveal` pointers, in order.
fn tokens_at(document: &Value, pointers: &[String]) -> Result<Vec<Token>, ApiError> {
    pointers
        .iter()
        .map(|pointer| {
            let token = document.pointer(pointer).and_then(Value::as_str).ok_or(
                ApiError::InvalidRequest("a field the route reveals is missing or not a string"),
            )?;
            Token::parse(token).map_err(|e| ApiError::InvalidRequest(e.client_message()))
        })
        .collect()
}

/// Audits the upstream's answer (`proxy_response`: its status and size, or
/// the failure) and counts it per route and outcome.
fn record_answer(
    call: &Call,
    name: &str,
    route: &ProxyUpstream,
    answer: &Result<Answer, UpstreamError>,
) {
    let mut event = call.caller.event(EventKind::ProxyResponse);
    event.request_id = Some(call.request_id.clone());
    let outcome = match answer {
        Ok(a) => {
            event.detail = Some(format!(
                "route {name} to {}: status {}, {} bytes",
                route.upstream.authority(),
                a.status.as_u16(),
                a.body.len()
            ));
            a.status.as_u16().to_string()
        }
        Err(e) => {
            event.outcome = Outcome::Error;
            let error = upstream_error(*e);
            event.code = Some(error.code().to_owned());
            event.detail = Some(format!(
                "route {name} to {}: {}",
                route.upstream.authority(),
                error.message()
            ));
            error.code().to_owned()
        }
    };
    call.state.audit.record(event);
    metrics::counter!("cardvault_proxy_requests_total", "route" => name.to_owned(), "outcome" => outcome)
        .increment(1);
}

fn upstream_error(e: UpstreamError) -> ApiError {
    match e {
        UpstreamError::Failed(why) => ApiError::UpstreamFailed(why),
        UpstreamError::Tls => ApiError::UpstreamTls,
        UpstreamError::Timeout => ApiError::UpstreamTimeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_replace_and_create_members() {
        let mut doc = serde_json::json!({"card": {"number": "4111119270641111"}, "a/b": 1});
        assert!(set_at(&mut doc, "/card/number", Value::String("x".into())));
        assert!(set_at(&mut doc, "/card/cvc", Value::String("123".into())));
        assert!(!set_at(&mut doc, "/missing/cvc", Value::Null));
        assert!(set_at(&mut doc, "/a~1b", Value::from(2)));
        assert_eq!(
            doc,
            serde_json::json!({"card": {"number": "x", "cvc": "123"}, "a/b": 2})
        );
    }

    #[test]
    fn only_allowed_headers_go_upstream() {
        let mut h = HeaderMap::new();
        h.insert("accept", "application/json".parse().unwrap());
        h.insert("authorization", "Bearer x".parse().unwrap());
        h.insert("idempotency-key", "k1".parse().unwrap());
        let out = forwarded(&h, &["accept".into(), "Idempotency-Key".into()]);
        assert_eq!(out.len(), 2);
        assert!(out.get("authorization").is_none());
    }
}
