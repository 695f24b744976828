//! API errors: always `{"error": {"code", "message"}}` with a fixed message
//! per code. Nothing from the request body — and so no PAN — ever reaches a
//! message; parser errors (which quote their input) are never passed through.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::vault::VaultError;

/// Everything an API call can fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiError {
    /// 400: malformed JSON, missing or unknown fields, bad token syntax.
    InvalidRequest(&'static str),
    /// 400: the card number is not a valid PAN (message from [`crate::domain::PanError`], which never holds input).
    InvalidPan(&'static str),
    /// 400: more items than the batch limit.
    BatchTooLarge,
    /// 400: the principal must give a reason for each reveal.
    ReasonRequired,
    /// 403: the caller lacks the role, or is not configured.
    Forbidden,
    /// 404: no such token in the caller's tenant.
    TokenNotFound,
    /// 404: no such route.
    NotFound,
    /// 405: the route exists with another method.
    MethodNotAllowed,
    /// 413: body larger than the limit.
    PayloadTooLarge,
    /// 415: not `application/json`.
    UnsupportedMediaType,
    /// 429: the principal's rate limit is spent; retry after this many seconds.
    RateLimited(u32),
    /// 429: the request would take a token group (BIN, last 4, length)
    /// past the distinct cards the oracle guard allows per window; retry
    /// after this many seconds.
    EnumerationSuspected(u32),
    /// 503: storage or a dependency is failing, or the request timed out.
    Unavailable(&'static str),
    /// 503: the vault is sealed until custodians hand in enough KEK shares.
    Sealed,
    /// 400: a KEK share was refused (the message says why, never its bytes).
    ShareRejected(&'static str),
    /// 409: unseal or seal asked of a vault whose KEK is not split, or
    /// unseal of a vault that is not sealed.
    SealState(&'static str),
    /// 409: an imported token clashes with what the vault holds (the
    /// token stands for another PAN, or the PAN has another token).
    TokenConflict(&'static str),
    /// 502: the reveal proxy's upstream could not be reached, broke the
    /// exchange, or answered more than the route allows.
    UpstreamFailed(&'static str),
    /// 502: the upstream's TLS certificate or handshake was refused.
    UpstreamTls,
    /// 504: the upstream did not answer within the route's timeout.
    UpstreamTimeout,
    /// 404: no such collection session in the caller's tenant.
    SessionNotFound,
    /// 409: the collection session already holds a card.
    SessionCompleted,
    /// 410: the collection session's time is up.
    SessionExpired,
    /// 423: the collection session took too many refused submits.
    SessionLocked,
    /// 422: the card's number range is refused by this vault's block list.
    CardRefused,
    /// 500: a bug or corrupted data; details are in the log, not the response.
    Internal,
}

#[derive(Serialize)]
struct Body {
    error: ErrorObject,
}

/// The `{"code", "message"}` object, also used for per-item batch errors.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorObject {
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Fixed human-readable message.
    pub message: &'static str,
}

impl ApiError {
    /// One of each kind (messages left empty), for documentation checks.
    pub const EVERY_KIND: [ApiError; 26] = [
        ApiError::InvalidRequest(""),
        ApiError::InvalidPan(""),
        ApiError::BatchTooLarge,
        ApiError::ReasonRequired,
        ApiError::Forbidden,
        ApiError::TokenNotFound,
        ApiError::NotFound,
        ApiError::MethodNotAllowed,
        ApiError::PayloadTooLarge,
        ApiError::UnsupportedMediaType,
        ApiError::RateLimited(1),
        ApiError::EnumerationSuspected(1),
        ApiError::Unavailable(""),
        ApiError::Sealed,
        ApiError::ShareRejected(""),
        ApiError::SealState(""),
        ApiError::TokenConflict(""),
        ApiError::UpstreamFailed(""),
        ApiError::UpstreamTls,
        ApiError::UpstreamTimeout,
        ApiError::SessionNotFound,
        ApiError::SessionCompleted,
        ApiError::SessionExpired,
        ApiError::SessionLocked,
        ApiError::CardRefused,
        ApiError::Internal,
    ];

    /// HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_)
            | ApiError::InvalidPan(_)
            | ApiError::BatchTooLarge
            | ApiError::ReasonRequired
            | ApiError::ShareRejected(_) => StatusCode::BAD_REQUEST,
            ApiError::SealState(_) | ApiError::TokenConflict(_) => StatusCode::CONFLICT,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::TokenNotFound | ApiError::NotFound | ApiError::SessionNotFound => {
                StatusCode::NOT_FOUND
            }
            ApiError::SessionCompleted => StatusCode::CONFLICT,
            ApiError::SessionExpired => StatusCode::GONE,
            ApiError::SessionLocked => StatusCode::LOCKED,
            ApiError::CardRefused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited(_) | ApiError::EnumerationSuspected(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Unavailable(_) | ApiError::Sealed => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UpstreamFailed(_) | ApiError::UpstreamTls => StatusCode::BAD_GATEWAY,
            ApiError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable code.
    pub fn code(self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::InvalidPan(_) => "invalid_pan",
            ApiError::BatchTooLarge => "batch_too_large",
            ApiError::ReasonRequired => "reason_required",
            ApiError::Forbidden => "forbidden",
            ApiError::TokenNotFound => "token_not_found",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::EnumerationSuspected(_) => "enumeration_suspected",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Sealed => "sealed",
            ApiError::ShareRejected(_) => "share_rejected",
            ApiError::SealState(_) => "seal_state",
            ApiError::TokenConflict(_) => "token_conflict",
            ApiError::UpstreamFailed(_) => "upstream_failed",
            ApiError::UpstreamTls => "upstream_tls",
            ApiError::UpstreamTimeout => "upstream_timeout",
            ApiError::SessionNotFound => "session_not_found",
            ApiError::SessionCompleted => "session_completed",
            ApiError::SessionExpired => "session_expired",
            ApiError::SessionLocked => "session_locked",
            ApiError::CardRefused => "card_refused",
            ApiError::Internal => "internal",
        }
    }

    /// Fixed message.
    pub fn message(self) -> &'static str {
        match self {
            ApiError::InvalidRequest(m)
            | ApiError::InvalidPan(m)
            | ApiError::Unavailable(m)
            | ApiError::ShareRejected(m)
            | ApiError::SealState(m)
            | ApiError::TokenConflict(m)
            | ApiError::UpstreamFailed(m) => m,
            ApiError::UpstreamTls => {
                "the upstream's TLS certificate or handshake was refused (check the route's ca_file)"
            }
            ApiError::UpstreamTimeout => "the upstream did not answer within the route's timeout",
            ApiError::Sealed => "the vault is sealed; custodians must unseal it (cardvault unseal)",
            ApiError::BatchTooLarge => "too many items in one batch",
            ApiError::ReasonRequired => "this principal must give a \"reason\" for each reveal",
            ApiError::Forbidden => "the client certificate is not authorized for this operation",
            ApiError::TokenNotFound => "no such token",
            ApiError::NotFound => "no such endpoint",
            ApiError::MethodNotAllowed => "method not allowed on this endpoint",
            ApiError::PayloadTooLarge => "request body is larger than the limit",
            ApiError::UnsupportedMediaType => "request body must be application/json",
            ApiError::RateLimited(_) => {
                "rate limit for this client certificate reached; retry after the Retry-After seconds"
            }
            ApiError::EnumerationSuspected(_) => {
                "too many distinct cards with this BIN and last 4 in the window; retry after the Retry-After seconds"
            }
            ApiError::SessionNotFound => "no such collection session",
            ApiError::SessionCompleted => "this collection session already holds a card",
            ApiError::SessionExpired => "this collection session has expired",
            ApiError::SessionLocked => {
                "this collection session is locked after too many refused submits"
            }
            ApiError::CardRefused => "this card cannot be accepted here",
            ApiError::Internal => "internal error; see the vault's log by request id",
        }
    }

    /// The `{"code", "message"}` object.
    pub fn object(self) -> ErrorObject {
        ErrorObject {
            code: self.code(),
            message: self.message(),
        }
    }

    /// Maps a vault error. Storage trouble is 503 (retryable); crypto and
    /// key-state failures are 500 and logged by the caller.
    pub fn from_vault(e: &VaultError) -> ApiError {
        match e {
            VaultError::TokenNotFound | VaultError::UnknownTenant(_) => ApiError::TokenNotFound,
            VaultError::Sealed => ApiError::Sealed,
            VaultError::Key(crate::crypto::KeyError::Unavailable(_)) => {
                ApiError::Unavailable("the HSM holding the KEK is unavailable; retry later")
            }
            VaultError::StorageFull { .. } => ApiError::Unavailable("storage is full; retry later"),
            VaultError::Store(_) => ApiError::Unavailable("storage is unavailable; retry later"),
            VaultError::TokenSpaceExhausted => {
                ApiError::Unavailable("no free token for this card's BIN and last 4; retry later")
            }
            VaultError::KeyExhausted { .. } | VaultError::Random(_) => {
                ApiError::Unavailable("encryption is temporarily unavailable; retry later")
            }
            VaultError::Key(_)
            | VaultError::Record(_)
            | VaultError::KeyState(..)
            | VaultError::MissingKeyVersion { .. }
            | VaultError::KeyDestroyed { .. } => ApiError::Internal,
        }
    }
}

/// Maps a refusal of the hosted fields (logging the vault's failures).
pub fn collect_error(e: &crate::runtime::collect::CollectError) -> ApiError {
    use crate::runtime::collect::CollectError;
    match e {
        CollectError::NotFound => ApiError::SessionNotFound,
        CollectError::Expired => ApiError::SessionExpired,
        CollectError::Completed => ApiError::SessionCompleted,
        CollectError::Locked => ApiError::SessionLocked,
        CollectError::RateLimited(_, seconds) => ApiError::RateLimited(*seconds),
        CollectError::Invalid(m) => ApiError::InvalidRequest(m),
        CollectError::InvalidPan(m) => ApiError::InvalidPan(m),
        CollectError::CardRefused => ApiError::CardRefused,
        CollectError::BadNonce => ApiError::Forbidden,
        CollectError::Enumeration(refusal) => ApiError::EnumerationSuspected(refusal.retry_after_s),
        CollectError::Vault(e) => {
            let api = ApiError::from_vault(e);
            if api == ApiError::Internal {
                tracing::error!(error = %e, "collection session operation failed");
            }
            api
        }
    }
}

/// Maps a vault error of an admin key operation (rotation, re-encryption,
/// shred): a tenant without keys is the caller's mistake (400); anything
/// else is logged with `what` and mapped as for card routes.
pub fn admin_key_error(what: &str, e: &VaultError) -> ApiError {
    match e {
        VaultError::UnknownTenant(_) => ApiError::InvalidRequest("the tenant has no keys"),
        other => {
            tracing::error!(error = %other, "{what} failed");
            ApiError::from_vault(other)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status(),
            Json(Body {
                error: self.object(),
            }),
        )
            .into_response();
        if let ApiError::RateLimited(seconds) | ApiError::EnumerationSuspected(seconds) = self {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.max(1).into());
        }
        response.extensions_mut().insert(self);
        response
    }
}
