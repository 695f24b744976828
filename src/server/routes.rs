//! The API's route table: every path and method, and the fallbacks for
//! unknown paths (404 `not_found`) and wrong methods (405).

use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, post};

use super::error::ApiError;
use super::state::AppState;
use super::{admin, api, keys, portable, proxy, seal, tenants};

/// Every API route.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/tokenize", post(api::tokenize))
        .route("/v1/tokenize/batch", post(api::tokenize_batch))
        .route("/v1/detokenize", post(api::detokenize))
        .route("/v1/detokenize/batch", post(api::detokenize_batch))
        .route("/v1/lookup", post(api::lookup))
        .route("/v1/tokens/{token}/cvc", post(api::hold_cvc))
        .route(
            "/v1/tokens/{token}",
            get(api::metadata).delete(api::delete_token),
        )
        .route("/v1/admin/alerts", get(admin::list_blocks))
        .route("/v1/admin/alerts/clear", post(admin::clear_block))
        .route("/v1/admin/unseal", post(seal::unseal))
        .route("/v1/admin/seal", post(seal::seal))
        .route("/v1/admin/kek/rotate", post(seal::rotate_kek))
        .route("/v1/admin/keys", get(keys::inventory))
        .route("/v1/admin/tenants/{tenant}", delete(tenants::shred_request))
        .route("/v1/admin/approvals", get(tenants::list))
        .route("/v1/admin/approvals/{id}", post(tenants::approve))
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
