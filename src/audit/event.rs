//! What one audit event says (docs/audit.md, PCI DSS 10.2.2): what happened,
//! with what outcome, who (principal and certificate serial), from where,
//! on which tenant and token. An event has no field that could hold a PAN:
//! resources are named by token only.

use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// `POST /v1/tokenize`.
    Tokenize,
    /// `POST /v1/tokenize/batch` (one event per call, listing the tokens).
    TokenizeBatch,
    /// `POST /v1/detokenize`.
    Detokenize,
    /// `POST /v1/detokenize/batch` (one event per call, listing the tokens).
    DetokenizeBatch,
    /// `GET /v1/tokens/{token}`.
    MetadataRead,
    /// `DELETE /v1/tokens/{token}`.
    Delete,
    /// A tenant's data and fingerprint keys were created.
    KeyCreated,
    /// A tenant's data key was rotated.
    KeyRotated,
    /// A request refused with 403 (role missing, principal unknown or blocked);
    /// `detail` names what was attempted.
    AccessDenied,
    /// A TLS handshake failed; `detail` gives the reason.
    TlsHandshakeFailed,
    /// The vault started serving.
    VaultStart,
    /// The vault stopped serving.
    VaultStop,
    /// The audit trail was opened (new chain or continued).
    AuditStart,
    /// The audit trail was closed.
    AuditStop,
    /// The audit trail could be written again after failures; `count` is
    /// the number of events lost meanwhile.
    AuditResumed,
    /// A monitoring rule fired; `detail` names the rule.
    Alert,
    /// An administrator lifted an alert's block on a principal.
    AlertCleared,
    /// An admin listed the alert blocks.
    AlertsListed,
    /// A request did not finish within `limits.request_timeout_ms` (a body
    /// shorter than announced, a chunked body that never ends); `detail`
    /// names the route template, never the raw path.
    RequestTimeout,
    /// A card security code was put on hold in memory for a token (the
    /// code itself is never recorded); `detail` gives its time to live.
    CvcHeld,
    /// A caller asked whether a PAN has a token (never creating one);
    /// `token` is set when it has.
    Lookup,
    /// The TLS configuration and principals were reloaded (SIGHUP, or TLS
    /// files changed under `[api] tls_check_s`); on failure `detail` says
    /// why and the old configuration stays.
    ConfigReloaded,
    /// A connection was refused after the handshake because its
    /// principal's connection share was used up; `detail` says which share.
    ConnectionRefused,
    /// A custodian handed in a KEK share that was accepted; `detail` names
    /// the set and the share index (never share bytes).
    UnsealShareAccepted,
    /// A KEK share was refused; `detail` says why (malformed, checksum,
    /// foreign set, duplicate, check value), never the share's bytes.
    UnsealShareRejected,
    /// Enough shares were handed in: the KEK was rebuilt and the keys
    /// unwrapped; the vault serves.
    Unsealed,
    /// The vault was sealed: the KEK and every unwrapped key were dropped.
    Sealed,
    /// A data key was destroyed: no record is sealed under it any more.
    KeyDestroyed,
    /// An admin read the key inventory.
    KeysListed,
    /// A destructive request waits for a second admin's approval.
    ApprovalRequested,
    /// An admin listed the approvals waiting for a second admin.
    ApprovalsListed,
    /// A tenant was crypto-shredded (`detail` names both admins).
    TenantShredded,
    /// A re-encryption job started, resumed, finished or failed (`detail`).
    Reencrypt,
    /// A KEK rotation step: every key wrapped under the next KEK too
    /// (`detail` names both KEKs and the count), or the rotation finished or
    /// rolled back when the vault opened on one of them.
    KekRotated,
    /// The HSM holding the KEK failed an operation after a retry.
    HsmUnavailable,
    /// The HSM answered again after a failure.
    HsmRecovered,
    /// Tokens made elsewhere were imported (`count`, `failed`, `detail`).
    Import,
    /// A second admin approved a tenant export.
    ExportApproved,
    /// A tenant's tokens and PANs left the vault, encrypted to an age
    /// recipient (`count`; `detail`: recipient, admins, ciphertext SHA-256).
    Export,
    /// The reveal proxy revealed `tokens` to a route's upstream (synced
    /// before the request is sent; `detail`: route and upstream).
    ProxyReveal,
    /// What the upstream answered a proxied request (`detail`: status).
    ProxyResponse,
    /// The sweep deleted expired tokens (`count`).
    TokensExpired,
    /// A cart created a hosted-field collection session (`session`;
    /// `detail`: the page origin).
    CollectSessionCreated,
    /// The public listener served a session's card frame (`session`).
    CollectFrameServed,
    /// A shopper's card was tokenized through a session (`session`,
    /// `token`; never the PAN or the code).
    CollectSubmitted,
    /// The public listener refused a submit or a frame (`session` when
    /// known, `detail`: the reason).
    CollectRefused,
    /// A cart read a session's result (`session`, `token` once completed).
    CollectResultRead,
    /// The sweep deleted collection sessions an hour past their expiry
    /// (`count`).
    CollectSessionsSwept,
    /// The evidence-signing key was created (`detail`: its public key and
    /// fingerprint, never the seed).
    EvidenceKeyCreated,
    /// The evidence-signing key was rotated (`detail`: both fingerprints,
    /// the new public key, the handover checkpoint's seq, the approval).
    EvidenceKeyRotated,
    /// A watcher reported a payment page that matched its baseline, or
    /// could not be checked (`detail`: page, URL, outcome, reason).
    PageChecked,
    /// A watcher reported a payment page that differs from its baseline
    /// (`count`; `detail`: page, URL and each difference's kind and
    /// subject — URLs, hashes, header names, origins; never page content).
    PageChanged,
    /// The approved baseline a watcher checks a page against, when it is
    /// new to the watcher's run (`count`; `detail`: page, the file's
    /// SHA-256, each approved script with its hash and justification).
    PageBaseline,
    /// An admin approved a page's baseline (`principal`; `detail`: page,
    /// the baseline file's SHA-256, the justification).
    PageBaselineApproved,
    /// A backup was taken (`detail`: where; the trail in the backup ends
    /// at or after this entry).
    BackupTaken,
    /// The vault was restored from a backup (`detail`: the backup's
    /// manifest digest and when it was taken).
    VaultRestored,
}

impl EventKind {
    /// The name written in the trail.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Tokenize => "tokenize",
            EventKind::TokenizeBatch => "tokenize_batch",
            EventKind::Detokenize => "detokenize",
            EventKind::DetokenizeBatch => "detokenize_batch",
            EventKind::MetadataRead => "metadata_read",
            EventKind::Delete => "delete",
            EventKind::KeyCreated => "key_created",
            EventKind::KeyRotated => "key_rotated",
            EventKind::AccessDenied => "access_denied",
            EventKind::TlsHandshakeFailed => "tls_handshake_failed",
            EventKind::VaultStart => "vault_start",
            EventKind::VaultStop => "vault_stop",
            EventKind::AuditStart => "audit_start",
            EventKind::AuditStop => "audit_stop",
            EventKind::AuditResumed => "audit_resumed",
            EventKind::Alert => "alert",
            EventKind::AlertCleared => "alert_cleared",
            EventKind::AlertsListed => "alerts_listed",
            EventKind::RequestTimeout => "request_timeout",
            EventKind::ConnectionRefused => "connection_refused",
            EventKind::ConfigReloaded => "config_reloaded",
            EventKind::Lookup => "lookup",
            EventKind::CvcHeld => "cvc_held",
            EventKind::UnsealShareAccepted => "unseal_share_accepted",
            EventKind::UnsealShareRejected => "unseal_share_rejected",
            EventKind::Unsealed => "unsealed",
            EventKind::Sealed => "sealed",
            EventKind::KekRotated => "kek_rotated",
            EventKind::KeyDestroyed => "key_destroyed",
            EventKind::KeysListed => "keys_listed",
            EventKind::ApprovalRequested => "approval_requested",
            EventKind::ApprovalsListed => "approvals_listed",
            EventKind::TenantShredded => "tenant_shredded",
            EventKind::Reencrypt => "reencrypt",
            EventKind::HsmUnavailable => "hsm_unavailable",
            EventKind::HsmRecovered => "hsm_recovered",
            EventKind::Import => "import",
            EventKind::ExportApproved => "export_approved",
            EventKind::Export => "export",
            EventKind::ProxyReveal => "proxy_reveal",
            EventKind::ProxyResponse => "proxy_response",
            EventKind::TokensExpired => "tokens_expired",
            EventKind::CollectSessionCreated => "collect_session_created",
            EventKind::CollectFrameServed => "collect_frame_served",
            EventKind::CollectSubmitted => "collect_submitted",
            EventKind::CollectRefused => "collect_refused",
            EventKind::CollectResultRead => "collect_result_read",
            EventKind::CollectSessionsSwept => "collect_sessions_swept",
            EventKind::EvidenceKeyCreated => "evidence_key_created",
            EventKind::EvidenceKeyRotated => "evidence_key_rotated",
            EventKind::PageChecked => "page_checked",
            EventKind::PageChanged => "page_changed",
            EventKind::PageBaseline => "page_baseline",
            EventKind::PageBaselineApproved => "page_baseline_approved",
            EventKind::BackupTaken => "backup_taken",
            EventKind::VaultRestored => "vault_restored",
        }
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done as asked.
    Success,
    /// Refused for lack of authority.
    Denied,
    /// Failed; `code` says why.
    Error,
}

/// One audit event. The writer adds the sequence number, the UTC time and
/// the chain MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub event: EventKind,
    /// How it ended.
    pub outcome: Outcome,
    /// Error code of the API contract when `outcome` is not success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Principal from the client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// Client certificate serial number, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_serial: Option<String>,
    /// Peer address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Tenant acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The token acted on (single-item calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The tokens acted on successfully (batch calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Vec<String>>,
    /// Items in a batch, or events lost (`audit_resumed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Items of a batch that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<u64>,
    /// Why a PAN was revealed, as the caller gave it (checked: at most 200
    /// characters, no control characters, nothing card-number-like).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The hosted-field collection session acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Request id (the `x-request-id` response header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Free detail from the vault itself (never from a request): a
    /// handshake failure reason, an alert rule, a key version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Event {
    /// The event with its free-text fields (`detail`, `reason`) run through
    /// [`crate::redact::text`]: whatever text reached them — an error that
    /// quoted a caller's field included — no control character and no
    /// card-number-like digit chain is written to the trail.
    pub fn redacted(mut self) -> Event {
        for field in [&mut self.detail, &mut self.reason] {
            if let Some(text) = field
                && let std::borrow::Cow::Owned(clean) = crate::redact::text(text)
            {
                *text = clean;
            }
        }
        self
    }

    /// An event of `kind` with outcome success and nothing else filled in.
    pub fn new(kind: EventKind) -> Event {
        Event {
            event: kind,
            outcome: Outcome::Success,
            code: None,
            principal: None,
            cert_serial: None,
            peer: None,
            tenant: None,
            token: None,
            tokens: None,
            count: None,
            failed: None,
            reason: None,
            session: None,
            request_id: None,
            detail: None,
        }
    }

    /// Sets `detail`.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Event {
        self.detail = Some(detail.into());
        self
    }

    /// Sets `tenant`.
    pub fn with_tenant(mut self, tenant: impl Into<String>) -> Event {
        self.tenant = Some(tenant.into());
        self
    }
}
