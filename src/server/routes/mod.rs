//! The API's route table — every path and method, and the fallbacks for
//! unknown paths (404 `not_found`) and wrong methods (405) — over one file
//! per route family, each holding its handlers and their response types:
//! `cards` (tokenize, detokenize, lookup, metadata, delete, security codes),
//! `admin` (alert blocks), `keys` (rotation, re-encryption, inventory),
//! `custody` (unseal, seal, KEK rotation), `tenants` (crypto-shred),
//! `approvals` (dual control), `portable` (import, export) and `proxy`
//! (the reveal proxy), `collect` (hosted-field sessions), `watch` (page
//! watch reports). Every handler takes a [`Call`] and runs through
//! [`Call::audited`].

use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, post};

#[allow(unused_imports)]
use super::audited::Call;
use super::error::ApiError;
use super::state::AppState;

mod admin;
mod approvals;
mod backup;
pub(super) mod cards;
mod collect;
mod custody;
pub(super) mod keys;
mod portable;
mod proxy;
mod tenants;
mod watch;

/// Every API route.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/tokenize", post(cards::tokenize))
        .route("/v1/tokenize/batch", post(cards::tokenize_batch))
        .route("/v1/detokenize", post(cards::detokenize))
        .route("/v1/detokenize/batch", post(cards::detokenize_batch))
        .route("/v1/lookup", post(cards::lookup))
        .route("/v1/tokens/{token}/cvc", post(cards::hold_cvc))
        .route(
            "/v1/tokens/{token}",
            get(cards::metadata).delete(cards::delete_token),
        )
        .route("/v1/collect/sessions", post(collect::create))
        .route("/v1/collect/sessions/{id}", get(collect::read))
        .route("/v1/admin/alerts", get(admin::list_blocks))
        .route("/v1/admin/alerts/clear", post(admin::clear_block))
        .route("/v1/admin/unseal", post(custody::unseal))
        .route("/v1/admin/seal", post(custody::seal))
        .route("/v1/admin/kek/rotate", post(custody::rotate_kek))
        .route("/v1/admin/watch/reports", post(watch::report))
        .route("/v1/admin/watch/approvals", post(watch::approve))
        .route("/v1/admin/backup", post(backup::take))
        .route(
            "/v1/admin/evidence-key/rotate",
            post(custody::rotate_evidence_key),
        )
        .route("/v1/admin/keys", get(keys::inventory))
        .route("/v1/admin/tenants/{tenant}", delete(tenants::shred_request))
        .route("/v1/admin/approvals", get(approvals::list))
        .route("/v1/admin/approvals/{id}", post(approvals::approve))
        .route("/v1/admin/import", post(portable::import))
        .route("/v1/proxy/{route}", post(proxy::proxy))
        .route(
            "/v1/admin/tenants/{tenant}/export",
            post(portable::export_request),
        )
        .route("/v1/admin/exports/{id}", get(portable::export_download))
        .route("/v1/admin/keys/{tenant}/rotate", post(keys::rotate))
        .route(
            "/v1/admin/keys/{tenant}/reencrypt",
            post(keys::reencrypt_start)
                .get(keys::reencrypt_status)
                .delete(keys::reencrypt_pause),
        )
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}
