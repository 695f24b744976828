//! Hosted card fields without HTTP (docs/collect.md): collection sessions
//! created for a tenant and a page origin, the frame's grant (a per-frame
//! nonce whose digest the session keeps), a shopper's submit — card-testing
//! rules, the card checked, the oracle guard with the session's origin as
//! its scope, the PAN tokenized, the security code held in memory, the
//! session completed once by compare-and-swap — and the result the cart
//! reads. The server's public listener and the mTLS routes call it; it
//! never sees a request, and nothing it returns holds a PAN or a code.

mod origin;
mod submit;
mod testing;

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use sha2::{Digest, Sha256};

use crate::config::CollectConfig;
use crate::domain::TenantId;
use crate::runtime::oracle_guard::{OracleGuard, Refusal};
use crate::store::codec::{CvcPolicy, SessionRecord, SessionResult, SessionState};
use crate::vault::cvc::CvcHold;
use crate::vault::sessions::{Change, SessionId};
use crate::vault::{Vault, VaultError};

pub use testing::Velocity;

/// Refused submits after which a session locks.
pub const LOCK_AFTER_REFUSED: u32 = 5;

/// Frames one session may be served (each is a write).
const MAX_FRAMES: u32 = 50;

/// Default and longest session life.
const DEFAULT_TTL_S: u64 = 900;
const MAX_TTL_S: u64 = 3600;

/// Longest `reference`.
const MAX_REFERENCE_CHARS: usize = 64;

/// Why a collection call was refused. The server maps each to its API
/// error; [`CollectError::reason`] names it in logs, metrics and the trail.
#[derive(Debug)]
pub enum CollectError {
    /// No such session (or another tenant's).
    NotFound,
    /// The session's time is up.
    Expired,
    /// The session already holds a card.
    Completed,
    /// Too many refused submits.
    Locked,
    /// A per-IP, per-session or per-tenant limit; retry after seconds.
    RateLimited(&'static str, u32),
    /// A malformed field (fixed message, never the input).
    Invalid(&'static str),
    /// Not a valid card number (fixed message).
    InvalidPan(&'static str),
    /// The card's prefix is on the block list.
    CardRefused,
    /// The frame's nonce does not match the frame served last.
    BadNonce,
    /// The oracle guard refused the card's token group.
    Enumeration(Refusal),
    /// The vault failed.
    Vault(VaultError),
}

impl CollectError {
    /// A short stable name (metric label, audit detail).
    pub fn reason(&self) -> &'static str {
        match self {
            CollectError::NotFound => "session_not_found",
            CollectError::Expired => "session_expired",
            CollectError::Completed => "session_completed",
            CollectError::Locked => "session_locked",
            CollectError::RateLimited(which, _) => which,
            CollectError::Invalid(_) => "invalid_request",
            CollectError::InvalidPan(_) => "invalid_pan",
            CollectError::CardRefused => "card_refused",
            CollectError::BadNonce => "bad_nonce",
            CollectError::Enumeration(_) => "enumeration_suspected",
            CollectError::Vault(_) => "vault_error",
        }
    }

    /// Whether it counts towards the session's lock: a card or nonce the
    /// vault refused (not a limit, not the session's own state).
    fn counts(&self) -> bool {
        matches!(
            self,
            CollectError::Invalid(_)
                | CollectError::InvalidPan(_)
                | CollectError::CardRefused
                | CollectError::BadNonce
                | CollectError::Enumeration(_)
        )
    }
}

impl From<VaultError> for CollectError {
    fn from(e: VaultError) -> CollectError {
        CollectError::Vault(e)
    }
}

/// What the cart asks for (`POST /v1/collect/sessions`), parsed by the
/// route, checked here.
#[derive(Debug)]
pub struct NewSession<'a> {
    /// The page origin that will frame the form.
    pub origin: &'a str,
    /// Life in seconds (default 900, at most 3600).
    pub ttl_s: Option<u64>,
    /// `required`, `optional` or `none` (default `required`).
    pub cvc: Option<&'a str>,
    /// The cart's reference.
    pub reference: Option<&'a str>,
}

/// A created session.
#[derive(Debug)]
pub struct Created {
    /// Its id.
    pub id: SessionId,
    /// The frame's URL.
    pub frame_url: String,
    /// When it expires (ms since the epoch).
    pub expires_ms: u64,
    /// The origin, as stored.
    pub origin: String,
}

/// What the frame page needs: who may frame it and, for an open session,
/// the nonce only this frame's submit will carry.
#[derive(Debug)]
pub struct Frame {
    /// The one origin that may frame the page and receive its messages.
    pub origin: String,
    /// The security-code policy.
    pub cvc: CvcPolicy,
    /// The session's tenant.
    pub tenant: String,
    /// The nonce, or why the session takes no card.
    pub open: Result<String, CollectError>,
}

/// A shopper's card as the frame posts it, wiped on drop, never printed.
pub struct CardInput {
    /// The card number, digits only.
    pub pan: SecretString,
    /// `MM/YY` or `MM/YYYY`.
    pub exp: SecretString,
    /// The security code (empty when none was typed).
    pub cvc: SecretString,
}

/// A completed submit: what the frame may tell its parent.
#[derive(Debug)]
pub struct Completed {
    /// The session's tenant.
    pub tenant: String,
    /// The session's origin (the only `targetOrigin` for the message).
    pub origin: String,
    /// The token and what may be shown.
    pub result: SessionResult,
    /// The velocity rule's verdict on this card.
    pub velocity: Velocity,
}

/// The hosted fields' sessions and rules.
pub struct Collect {
    vault: Arc<Vault>,
    cvcs: Arc<CvcHold>,
    guard: Arc<OracleGuard>,
    testing: testing::CardTesting,
    public_url: String,
    allow_loopback_http: bool,
    cvc_ttl: Duration,
}

/// SHA-256 of a frame nonce, hex.
fn nonce_digest(nonce: &str) -> String {
    hex::encode(Sha256::digest(nonce.as_bytes()))
}

impl Collect {
    /// The service for `config`'s listener reached at `public_url`.
    pub fn new(
        config: &CollectConfig,
        public_url: String,
        vault: Arc<Vault>,
        cvcs: Arc<CvcHold>,
        guard: Arc<OracleGuard>,
        cvc_ttl: Duration,
    ) -> Collect {
        Collect {
            vault,
            cvcs,
            guard,
            testing: testing::CardTesting::new(&config.limits, &config.blocked_bins),
            public_url,
            allow_loopback_http: config.allow_loopback_http,
            cvc_ttl,
        }
    }

    /// The listener's public URL (`https://host[:port]`).
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Creates a session for `tenant`.
    pub async fn create(
        &self,
        tenant: &TenantId,
        asked: NewSession<'_>,
    ) -> Result<Created, CollectError> {
        let origin =
            origin::parse(asked.origin, self.allow_loopback_http).map_err(CollectError::Invalid)?;
        let ttl_s = asked.ttl_s.unwrap_or(DEFAULT_TTL_S);
        if !(1..=MAX_TTL_S).contains(&ttl_s) {
            return Err(CollectError::Invalid("ttl_s must be 1 to 3600 seconds"));
        }
        let cvc = match asked.cvc.unwrap_or("required") {
            "required" => CvcPolicy::Required,
            "optional" => CvcPolicy::Optional,
            "none" => CvcPolicy::None,
            _ => {
                return Err(CollectError::Invalid(
                    "cvc must be required, optional or none",
                ));
            }
        };
        let reference = asked.reference.map(check_reference).transpose()?;
        self.testing
            .create_for(tenant.as_str())
            .map_err(|s| CollectError::RateLimited("tenant_sessions", s))?;
        let now = crate::clock::now_ms();
        let record = SessionRecord {
            tenant: tenant.as_str().to_owned(),
            origin: origin.clone(),
            cvc,
            reference,
            created_ms: now,
            expires_ms: now + ttl_s * 1000,
            state: SessionState::Pending,
            refused: 0,
            frames: 0,
            frame_nonce: None,
            result: None,
        };
        // 128 random bits: a clash is a broken random source, not luck.
        let id = SessionId::generate().map_err(VaultError::Random)?;
        if !self.vault.create_session(&id, &record).await? {
            return Err(CollectError::Vault(VaultError::Store(
                crate::store::StoreError::Backend("session id already taken".into()),
            )));
        }
        Ok(Created {
            frame_url: format!("{}/collect/v1/frame/{id}", self.public_url),
            id,
            expires_ms: record.expires_ms,
            origin,
        })
    }

    /// The session `id` of `tenant` (404 for another tenant's).
    pub async fn result(
        &self,
        tenant: &TenantId,
        id: &SessionId,
    ) -> Result<SessionRecord, CollectError> {
        match self.vault.session(id).await? {
            Some(record) if record.tenant == tenant.as_str() => Ok(record),
            _ => Err(CollectError::NotFound),
        }
    }

    /// Serves a frame of session `id`: a fresh nonce for an open session
    /// (replacing the last frame's), or why it takes no card.
    pub async fn frame(&self, id: &SessionId) -> Result<Frame, CollectError> {
        let mut nonce_bytes = [0u8; 16];
        crate::random::fill(&mut nonce_bytes).map_err(VaultError::Random)?;
        let nonce = data_encoding::BASE64URL_NOPAD.encode(&nonce_bytes);
        let digest = nonce_digest(&nonce);
        let now = crate::clock::now_ms();
        let outcome = self
            .vault
            .update_session(id, |record| {
                let frame = |open| Frame {
                    origin: record.origin.clone(),
                    cvc: record.cvc,
                    tenant: record.tenant.clone(),
                    open,
                };
                if let Err(closed) = open_state(record, now) {
                    return Ok::<_, CollectError>(Change::Keep(frame(Err(closed))));
                }
                if record.frames >= MAX_FRAMES {
                    return Ok(Change::Keep(frame(Err(CollectError::RateLimited(
                        "session_frames",
                        60,
                    )))));
                }
                record.frames += 1;
                record.frame_nonce = Some(digest.clone());
                Ok(Change::Write(frame(Ok(nonce.clone()))))
            })
            .await?;
        match outcome {
            None => Err(CollectError::NotFound),
            Some(result) => result,
        }
    }

    /// Forgets idle card-testing state (from the sweep).
    pub fn sweep(&self) {
        self.testing.sweep();
    }
}

/// Whether a session takes a card now, or why not.
fn open_state(record: &SessionRecord, now_ms: u64) -> Result<(), CollectError> {
    match record.state {
        SessionState::Completed => Err(CollectError::Completed),
        SessionState::Locked => Err(CollectError::Locked),
        SessionState::Pending if now_ms >= record.expires_ms => Err(CollectError::Expired),
        SessionState::Pending => Ok(()),
    }
}

/// What a stored session shows as its state now.
pub fn state_name(record: &SessionRecord, now_ms: u64) -> &'static str {
    match open_state(record, now_ms) {
        Ok(()) => "pending",
        Err(CollectError::Completed) => "completed",
        Err(CollectError::Locked) => "locked",
        Err(_) => "expired",
    }
}

/// A reference of at most 64 printable ASCII characters with nothing
/// card-number-like in it.
fn check_reference(reference: &str) -> Result<String, CollectError> {
    let printable = reference.bytes().all(|b| (0x20..0x7f).contains(&b));
    if reference.is_empty() || reference.len() > MAX_REFERENCE_CHARS || !printable {
        return Err(CollectError::Invalid(
            "reference must be 1 to 64 printable ASCII characters",
        ));
    }
    if matches!(crate::redact::text(reference), std::borrow::Cow::Owned(_)) {
        return Err(CollectError::Invalid(
            "reference must not look like a card number",
        ));
    }
    Ok(reference.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_short_printable_and_never_card_like() {
        assert!(check_reference("order-1042").is_ok());
        assert!(check_reference("").is_err());
        assert!(check_reference(&"x".repeat(65)).is_err());
        assert!(check_reference("order\n1").is_err());
        assert!(check_reference("4111111111111111").is_err());
        assert!(check_reference("4111 1111 1111 1111").is_err());
        assert!(check_reference("ordér").is_err());
    }
}
