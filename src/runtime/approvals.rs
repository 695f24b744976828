//! Dual control: a destructive or revealing request (a tenant shred, a
//! tenant export) and, unless `[keys.dual_control]` turns them off, the
//! vault-wide key operations (sealing, a KEK rotation) by one admin wait
//! as a pending approval until a different admin principal confirms it, within its
//! lifetime (`[keys] approval_ttl_s`, at most and by default 10 minutes),
//! or it expires. Pending approvals live in memory
//! only: a restart cancels them, which fails safe.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::domain::TenantId;

/// Exports a second admin approved, waiting (at most the approval
/// lifetime) for the admin who asked to fetch them, once.
pub struct GrantedExports {
    held: Mutex<HashMap<String, Granted>>,
    ttl: Duration,
}

/// One approved export.
pub struct Granted {
    /// The tenant.
    pub tenant: TenantId,
    /// The age recipient.
    pub recipient: String,
    /// The admin who asked (the only one who may fetch it).
    pub requested_by: String,
    /// The admin who approved.
    pub approved_by: String,
    deadline: Instant,
}

impl GrantedExports {
    /// None granted; each waits at most `ttl` for its download.
    pub fn new(ttl: Duration) -> GrantedExports {
        GrantedExports {
            held: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// Records an approved export under its approval id.
    pub fn grant(
        &self,
        id: &str,
        tenant: TenantId,
        recipient: String,
        requested_by: String,
        approved_by: String,
    ) {
        if let Ok(mut held) = self.held.lock() {
            let now = Instant::now();
            held.retain(|_, g| g.deadline > now);
            held.insert(
                id.to_owned(),
                Granted {
                    tenant,
                    recipient,
                    requested_by,
                    approved_by,
                    deadline: now + self.ttl,
                },
            );
        }
    }

    /// Takes the export `id` for `principal` (the admin who asked), once:
    /// `None` if there is none, [`ApprovalError::NotYours`] for another admin.
    pub fn take(&self, id: &str, principal: &str) -> Result<Option<Granted>, ApprovalError> {
        let mut held = self.held.lock().map_err(|_| ApprovalError::Unknown)?;
        let now = Instant::now();
        held.retain(|_, g| g.deadline > now);
        match held.get(id) {
            None => Ok(None),
            Some(g) if g.requested_by != principal => Err(ApprovalError::NotYours),
            Some(_) => Ok(held.remove(id)),
        }
    }
}

/// Random bytes in an approval id (printed as hex).
const ID_BYTES: usize = 12;

/// Whether `id` has the shape of an approval (or export) id, checked before
/// it is looked up or put in a path.
pub fn is_approval_id(id: &str) -> bool {
    id.len() == 2 * ID_BYTES && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Most approvals pending at once (a bound on what admins can pile up).
const MAX_PENDING: usize = 64;

/// What a pending approval would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Crypto-shred a tenant: destroy its keys, delete its records.
    ShredTenant {
        /// The tenant.
        tenant: String,
    },
    /// Export a tenant's tokens and PANs, encrypted to an age recipient.
    ExportTenant {
        /// The tenant.
        tenant: String,
        /// The age X25519 public key the export is encrypted to.
        recipient: String,
    },
    /// Seal the vault (vault-wide: a global admin approves).
    SealVault,
    /// Rotate the evidence-signing key (vault-wide: a global admin
    /// approves).
    RotateEvidenceKey,
    /// Rotate the KEK to `to` (vault-wide: a global admin approves).
    RotateKek {
        /// The KEK to rotate to, as the request named it (paths, labels;
        /// never key material).
        to: crate::peer::body::RotateKekRequest,
    },
}

impl Action {
    /// Whether the action acts on the whole vault (asked and approved by
    /// global admins only).
    pub fn is_vault_wide(&self) -> bool {
        matches!(
            self,
            Action::SealVault | Action::RotateKek { .. } | Action::RotateEvidenceKey
        )
    }
}

/// A pending approval, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Pending {
    /// Its id (random, hex).
    pub id: String,
    /// What it would do.
    #[serde(flatten)]
    pub action: Action,
    /// Who asked.
    pub requested_by: String,
    /// When it expires (ms since the epoch).
    pub expires_ms: u64,
}

struct Held {
    pending: Pending,
    tenant: TenantId,
    deadline: Instant,
}

/// Why an approval was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    /// No such id: unknown, used or expired.
    #[error("no pending approval with this id (unknown, used or expired)")]
    Unknown,
    /// The requester tried to approve its own request.
    #[error("the admin who asked cannot approve: a different admin must")]
    SameAdmin,
    /// Too many pending.
    #[error("too many approvals pending")]
    Full,
    /// An approved export asked for by another admin than the requester.
    #[error("only the admin who asked may fetch this export")]
    NotYours,
}

/// The pending approvals.
pub struct Approvals {
    held: Mutex<HashMap<String, Held>>,
    ttl: Duration,
}

impl Approvals {
    /// No approvals pending; each waits at most `ttl`.
    pub fn new(ttl: Duration) -> Approvals {
        Approvals {
            held: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// Records `action` on `tenant` asked by `principal`.
    pub fn request(
        &self,
        action: Action,
        tenant: TenantId,
        principal: &str,
    ) -> Result<Pending, ApprovalError> {
        let mut id = [0u8; ID_BYTES];
        crate::random::fill(&mut id).map_err(|_| ApprovalError::Full)?;
        let now = Instant::now();
        let expires_ms = SystemTime::now()
            .checked_add(self.ttl)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        let pending = Pending {
            id: hex::encode(id),
            action,
            requested_by: principal.to_owned(),
            expires_ms,
        };
        let mut held = self.held.lock().map_err(|_| ApprovalError::Full)?;
        held.retain(|_, h| h.deadline > now);
        if held.len() >= MAX_PENDING {
            return Err(ApprovalError::Full);
        }
        held.insert(
            pending.id.clone(),
            Held {
                pending: pending.clone(),
                tenant,
                deadline: now + self.ttl,
            },
        );
        Ok(pending)
    }

    /// Takes the approval `id` for `principal`, if it is pending, not
    /// expired, and asked by someone else. The approval is used up.
    pub fn approve(&self, id: &str, principal: &str) -> Result<(Pending, TenantId), ApprovalError> {
        let mut held = self.held.lock().map_err(|_| ApprovalError::Unknown)?;
        let now = Instant::now();
        held.retain(|_, h| h.deadline > now);
        let entry = held.get(id).ok_or(ApprovalError::Unknown)?;
        if entry.pending.requested_by == principal {
            return Err(ApprovalError::SameAdmin);
        }
        let entry = held.remove(id).ok_or(ApprovalError::Unknown)?;
        Ok((entry.pending, entry.tenant))
    }

    /// The pending approvals on tenants `reach` accepts.
    pub fn list(&self, reach: impl Fn(&TenantId) -> bool) -> Vec<Pending> {
        let now = Instant::now();
        match self.held.lock() {
            Ok(held) => held
                .values()
                .filter(|h| h.deadline > now && reach(&h.tenant))
                .map(|h| h.pending.clone())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The pending approval `id`, if it still waits.
    pub fn pending(&self, id: &str) -> Option<Pending> {
        let now = Instant::now();
        let held = self.held.lock().ok()?;
        held.get(id)
            .filter(|h| h.deadline > now)
            .map(|h| h.pending.clone())
    }

    /// The tenant of pending approval `id` (to check the approver's reach).
    pub fn tenant_of(&self, id: &str) -> Option<TenantId> {
        let now = Instant::now();
        let held = self.held.lock().ok()?;
        held.get(id)
            .filter(|h| h.deadline > now)
            .map(|h| h.tenant.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shred(tenant: &str) -> (Action, TenantId) {
        (
            Action::ShredTenant {
                tenant: tenant.into(),
            },
            TenantId::parse(tenant).unwrap(),
        )
    }

    #[test]
    fn a_second_admin_approves_once_and_the_first_never() {
        let approvals = Approvals::new(Duration::from_secs(600));
        let (action, tenant) = shred("shop");
        let pending = approvals.request(action, tenant.clone(), "alice").unwrap();
        assert_eq!(pending.id.len(), 24);
        assert_eq!(
            approvals.approve(&pending.id, "alice").err(),
            Some(ApprovalError::SameAdmin)
        );
        assert_eq!(approvals.list(|_| true).len(), 1);
        let (approved, of) = approvals.approve(&pending.id, "bob").unwrap();
        assert_eq!((approved.requested_by.as_str(), of), ("alice", tenant));
        assert_eq!(
            approvals.approve(&pending.id, "carol").err(),
            Some(ApprovalError::Unknown)
        );
        assert!(approvals.list(|_| true).is_empty());
        assert_eq!(
            approvals.approve("nope", "bob").err(),
            Some(ApprovalError::Unknown)
        );
    }

    #[test]
    fn an_expired_approval_is_gone() {
        let approvals = Approvals::new(Duration::from_millis(1));
        let (action, tenant) = shred("shop");
        let pending = approvals.request(action, tenant, "alice").unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            approvals.approve(&pending.id, "bob").err(),
            Some(ApprovalError::Unknown)
        );
        assert!(approvals.list(|_| true).is_empty());
    }

    #[test]
    fn pending_approvals_are_bounded() {
        let approvals = Approvals::new(Duration::from_secs(600));
        for _ in 0..MAX_PENDING {
            let (action, tenant) = shred("t");
            approvals.request(action, tenant, "a").unwrap();
        }
        let (action, tenant) = shred("t");
        assert_eq!(
            approvals.request(action, tenant, "a").err(),
            Some(ApprovalError::Full)
        );
    }
}
