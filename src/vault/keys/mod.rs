//! The keyring: the KEK provider and every tenant's unwrapped keys, split
//! by concern — here the keys themselves and their lookup and caching
//! (loading at open, creating a tenant's keys on first use, reading keys
//! another node made); `lifecycle` (rotate, destroy, shred), `wrapping`
//! (the KEK: unseal, seal, rotation and convergence) and `counters`
//! (encryption claims and the rotation policy).
//!
//! The keyring It loads
//! and unwraps the stored keys at open, creates a tenant's data and
//! fingerprint keys on first use, hands out encryption claims against the
//! active data key (rotating at the threshold and at the hard limit), and
//! reports counters and status. It writes only through the [`Store`] it is
//! given; it never touches card data.
//!
//! A keyring can be **sealed**: no KEK provider and no unwrapped key (a
//! vault whose KEK is split among custodians starts so). Every operation
//! then fails with [`VaultError::Sealed`]; [`Keyring::unseal`] unwraps the
//! stored keys with the provider the custodians rebuilt, [`Keyring::seal`]
//! drops the provider and every key again (their memory is wiped on drop).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use super::{VaultError, now_ms};
use crate::audit::{AuditLog, Event, EventKind};
use crate::crypto::{
    DataKey, Fingerprinter, KeyError, KeyLabel, KeyProvider, KeyPurpose, SecretKey,
};
use crate::domain::TenantId;
use crate::store::codec::{KeyRecord, KeyState};
use crate::store::{Store, StoredKeys};

mod counters;
mod lifecycle;
mod wrapping;

pub use counters::{RotationPolicy, UNCLEAN_SHUTDOWN_COUNTER_MARGIN};
use wrapping::unwrap_all;

/// One data-key version as held in memory.
struct DekSlot {
    key: Arc<DataKey>,
    record: KeyRecord,
}

/// A tenant's data keys: the active one seals, all of them open.
struct DekSet {
    active: u32,
    versions: HashMap<u32, DekSlot>,
    /// Versions destroyed after re-encryption emptied them.
    destroyed: std::collections::BTreeSet<u32>,
}

/// A tenant's fingerprint keys: the active one fingerprints, older ones
/// (during a fingerprint-key rotation) are still looked up.
pub(super) struct FpSet {
    pub(super) active: Arc<Fingerprinter>,
    pub(super) older: Vec<Arc<Fingerprinter>>,
    records: HashMap<u32, KeyRecord>,
    destroyed: std::collections::BTreeSet<u32>,
}

/// A tenant's unwrapped keys.
pub(super) struct TenantKeys {
    pub(super) tenant: TenantId,
    deks: RwLock<DekSet>,
    fps: RwLock<FpSet>,
    /// Held (read) by every deterministic tokenize from its fingerprints to
    /// its insert, and (write) by a fingerprint-key rotation: no insert
    /// computed with the old active key lands after the new one is active.
    pub(super) fp_epoch: tokio::sync::RwLock<()>,
}

impl TenantKeys {
    /// Whether a fingerprint-key rotation waits for its re-encryption pass.
    pub(super) fn fingerprint_rotation_pending(&self) -> bool {
        self.fps
            .read()
            .map(|set| !set.older.is_empty())
            .unwrap_or(false)
    }

    /// The active fingerprint key and the older ones still looked up.
    pub(super) fn fingerprinters(&self) -> (Arc<Fingerprinter>, Vec<Arc<Fingerprinter>>) {
        match self.fps.read() {
            Ok(set) => (Arc::clone(&set.active), set.older.clone()),
            Err(poisoned) => {
                let set = poisoned.into_inner();
                (Arc::clone(&set.active), set.older.clone())
            }
        }
    }

    pub(super) fn active(&self) -> Option<Arc<DataKey>> {
        let set = self.deks.read().ok()?;
        set.versions
            .get(&set.active)
            .map(|slot| Arc::clone(&slot.key))
    }

    /// The data key of `version`, or why there is none: destroyed after
    /// re-encryption emptied it, or never existed.
    pub(super) fn opener(&self, version: u32) -> Result<Arc<DataKey>, VaultError> {
        let set = self.deks.read().map_err(|_| self.poisoned())?;
        if let Some(slot) = set.versions.get(&version) {
            return Ok(Arc::clone(&slot.key));
        }
        Err(if set.destroyed.contains(&version) {
            VaultError::KeyDestroyed {
                tenant: self.tenant.clone(),
                version,
            }
        } else {
            VaultError::MissingKeyVersion {
                tenant: self.tenant.clone(),
                version,
            }
        })
    }

    /// The active data key's version.
    pub(super) fn active_version(&self) -> Option<u32> {
        self.deks.read().ok().map(|set| set.active)
    }

    /// The label of this tenant's key of `purpose` and `version`.
    pub(super) fn label(&self, purpose: KeyPurpose, version: u32) -> KeyLabel {
        KeyLabel {
            tenant: self.tenant.clone(),
            purpose,
            version,
        }
    }

    pub(super) fn poisoned(&self) -> VaultError {
        VaultError::KeyState(self.tenant.clone(), "key set lock poisoned")
    }
}

/// The KEK provider and every tenant's keys.
pub(super) struct Keyring {
    /// `None` while sealed.
    provider: RwLock<Option<Arc<dyn KeyProvider>>>,
    /// The KEK a rotation is moving to: every key is wrapped under it too,
    /// until the vault opens on it (docs/keys.md, "KEK rotation").
    next: RwLock<Option<Arc<dyn KeyProvider>>>,
    sealed: AtomicBool,
    /// Whether the stored counters are exact (a clean shutdown, or a seal
    /// that wrote them); otherwise the next unseal adds the margin.
    counters_exact: AtomicBool,
    /// Whether keys were ever unwrapped in this process.
    ever_unsealed: AtomicBool,
    /// Whether the provider's device failed its last call.
    device_down: AtomicBool,
    tenants: RwLock<HashMap<TenantId, Arc<TenantKeys>>>,
    /// Serializes key creation and rotation (rare, and each writes to the store).
    admin: tokio::sync::Mutex<()>,
    policy: RotationPolicy,
    audit: Option<AuditLog>,
}

impl Keyring {
    /// Unwraps every stored key with the KEK (failing fast if the KEK is not
    /// the one that wrapped them). After an unclean shutdown (`clean` false)
    /// every counter is raised by [`UNCLEAN_SHUTDOWN_COUNTER_MARGIN`].
    /// Also returns the key records a finished or abandoned KEK rotation
    /// leaves to write back (see [`Keyring::unseal`]).
    pub(super) fn load(
        provider: Arc<dyn KeyProvider>,
        stored: StoredKeys,
        clean: bool,
        policy: RotationPolicy,
        audit: Option<AuditLog>,
    ) -> Result<(Keyring, Vec<(KeyLabel, KeyRecord)>), VaultError> {
        let keyring = Keyring::sealed(clean, policy, audit);
        let converged = keyring.unseal(provider, stored)?;
        Ok((keyring, converged))
    }

    /// A sealed keyring: no provider, no keys, until [`Keyring::unseal`].
    pub(super) fn sealed(clean: bool, policy: RotationPolicy, audit: Option<AuditLog>) -> Keyring {
        Keyring {
            provider: RwLock::new(None),
            next: RwLock::new(None),
            sealed: AtomicBool::new(true),
            counters_exact: AtomicBool::new(clean),
            ever_unsealed: AtomicBool::new(false),
            device_down: AtomicBool::new(false),
            tenants: RwLock::new(HashMap::new()),
            admin: tokio::sync::Mutex::new(()),
            policy,
            audit,
        }
    }

    /// Whether the keyring is sealed.
    pub(super) fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    /// Whether keys were unwrapped at some point in this process (if not,
    /// the stored counters were never raised and must not be marked exact).
    pub(super) fn ever_unsealed(&self) -> bool {
        self.ever_unsealed.load(Ordering::Acquire)
    }

    /// Passes a provider call's result through, auditing the device going
    /// away (`hsm_unavailable`) and coming back (`hsm_recovered`) once each.
    pub(super) fn device<T>(&self, result: Result<T, KeyError>) -> Result<T, KeyError> {
        match &result {
            Err(KeyError::Unavailable(why)) => {
                if !self.device_down.swap(true, Ordering::AcqRel) {
                    tracing::error!(error = %why, "the KEK device is unavailable");
                    self.audit(Event::new(EventKind::HsmUnavailable).with_detail(why.clone()));
                }
            }
            Ok(_) => {
                if self.device_down.swap(false, Ordering::AcqRel) {
                    tracing::info!("the KEK device answers again");
                    self.audit(Event::new(EventKind::HsmRecovered));
                }
            }
            Err(_) => {}
        }
        result
    }

    /// Wraps a new key under the KEK and, while a rotation is in progress,
    /// under the next KEK too.
    pub(super) fn wrap_new(
        &self,
        label: &KeyLabel,
        key: &SecretKey,
    ) -> Result<(Vec<u8>, Option<Vec<u8>>), VaultError> {
        let wrapped = self.device(self.provider()?.wrap(label, key))?;
        let next = self.next.read().ok().and_then(|n| n.clone());
        let wrapped_next = match next {
            Some(next) => Some(next.wrap(label, key)?),
            None => None,
        };
        Ok((wrapped, wrapped_next))
    }

    pub(super) fn provider(&self) -> Result<Arc<dyn KeyProvider>, VaultError> {
        self.provider
            .read()
            .ok()
            .and_then(|p| p.clone())
            .ok_or(VaultError::Sealed)
    }

    /// What the KEK provider calls itself (for logs).
    pub(super) fn describe_provider(&self) -> String {
        self.provider()
            .map_or_else(|_| "sealed".to_owned(), |p| p.describe())
    }

    /// The tenant's keys, if it has any (none while sealed).
    pub(super) fn get(&self, tenant: &TenantId) -> Option<Arc<TenantKeys>> {
        self.tenants.read().ok()?.get(tenant).cloned()
    }

    /// The tenant's keys, for an operation on its keys: a tenant without
    /// any is [`VaultError::UnknownTenant`].
    pub(super) fn keys_of(&self, tenant: &TenantId) -> Result<Arc<TenantKeys>, VaultError> {
        match self.get(tenant) {
            Some(keys) => Ok(keys),
            None if self.is_sealed() => Err(VaultError::Sealed),
            None => Err(VaultError::UnknownTenant(tenant.clone())),
        }
    }

    /// The tenant's keys; a tenant without keys has no tokens.
    pub(super) fn require(&self, tenant: &TenantId) -> Result<Arc<TenantKeys>, VaultError> {
        match self.get(tenant) {
            Some(keys) => Ok(keys),
            None if self.is_sealed() => Err(VaultError::Sealed),
            None => Err(VaultError::TokenNotFound),
        }
    }

    pub(super) fn all(&self) -> Vec<Arc<TenantKeys>> {
        match self.tenants.read() {
            Ok(t) => t.values().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    pub(super) fn audit(&self, event: Event) {
        if let Some(audit) = &self.audit {
            audit.record(event);
        }
    }

    /// The tenant's keys, creating (and durably storing) them on first use.
    pub(super) async fn get_or_create(
        &self,
        store: &dyn Store,
        tenant: &TenantId,
    ) -> Result<Arc<TenantKeys>, VaultError> {
        if let Some(keys) = self.get(tenant) {
            return Ok(keys);
        }
        let _admin = self.admin.lock().await;
        if let Some(keys) = self.get(tenant) {
            return Ok(keys);
        }
        // A shared store may hold keys another node created.
        if store.is_shared()
            && let Some(keys) = self.refresh(store, tenant).await?
        {
            return Ok(keys);
        }
        let now = now_ms();
        let dek_label = KeyLabel {
            tenant: tenant.clone(),
            purpose: KeyPurpose::PanEncryption,
            version: 1,
        };
        let fp_label = KeyLabel {
            purpose: KeyPurpose::Fingerprint,
            ..dek_label.clone()
        };
        let dek_secret = SecretKey::generate()?;
        let fp_secret = SecretKey::generate()?;
        let (wrapped, wrapped_next) = self.wrap_new(&dek_label, &dek_secret)?;
        let dek_record = KeyRecord {
            state: KeyState::Active,
            created_ms: now,
            changed_ms: now,
            wrapped,
            wrapped_next,
        };
        let (wrapped, wrapped_next) = self.wrap_new(&fp_label, &fp_secret)?;
        let fp_record = KeyRecord {
            state: KeyState::Active,
            created_ms: now,
            changed_ms: now,
            wrapped,
            wrapped_next,
        };
        let fp_record_kept = fp_record.clone();
        let created = store
            .create_keys(
                vec![
                    (dek_label.clone(), dek_record.clone()),
                    (fp_label, fp_record),
                ],
                vec![(dek_label, 0)],
            )
            .await?;
        if !created {
            // Another node of a shared store was first: use its keys.
            return self.refresh(store, tenant).await?.ok_or_else(|| {
                VaultError::KeyState(tenant.clone(), "keys vanished while created")
            });
        }
        let mut versions = HashMap::new();
        versions.insert(
            1,
            DekSlot {
                key: Arc::new(DataKey::new(1, &dek_secret, 0)),
                record: dek_record,
            },
        );
        let keys = Arc::new(TenantKeys {
            tenant: tenant.clone(),
            deks: RwLock::new(DekSet {
                active: 1,
                versions,
                destroyed: Default::default(),
            }),
            fps: RwLock::new(FpSet {
                active: Arc::new(Fingerprinter::new(1, &fp_secret)?),
                older: Vec::new(),
                records: HashMap::from([(1, fp_record_kept)]),
                destroyed: Default::default(),
            }),
            fp_epoch: tokio::sync::RwLock::new(()),
        });
        if let Ok(mut tenants) = self.tenants.write() {
            tenants.insert(tenant.clone(), Arc::clone(&keys));
        }
        tracing::info!(tenant = %tenant, "created data and fingerprint keys for new tenant");
        self.audit(
            Event::new(EventKind::KeyCreated)
                .with_tenant(tenant.as_str())
                .with_detail("pan-encryption v1, fingerprint v1"),
        );
        Ok(keys)
    }

    /// Reads `tenant`'s key records from the store again and replaces what
    /// the keyring holds for it: keys another node of a shared store
    /// created or rotated. `None` if the store has none.
    pub(super) async fn refresh(
        &self,
        store: &dyn Store,
        tenant: &TenantId,
    ) -> Result<Option<Arc<TenantKeys>>, VaultError> {
        let stored = store.load_keys().await?;
        let mine = StoredKeys {
            keys: stored
                .keys
                .into_iter()
                .filter(|(l, _)| l.tenant == *tenant)
                .collect(),
            counters: stored
                .counters
                .into_iter()
                .filter(|(l, _)| l.tenant == *tenant)
                .collect(),
        };
        if mine.keys.is_empty() {
            return Ok(None);
        }
        let provider = self.provider()?;
        let margin = if self.counters_exact.load(Ordering::Acquire) {
            0
        } else {
            UNCLEAN_SHUTDOWN_COUNTER_MARGIN
        };
        let (mut tenants, _, _) = unwrap_all(provider.as_ref(), mine, margin)?;
        let Some(keys) = tenants.remove(tenant) else {
            return Ok(None);
        };
        if let Ok(mut map) = self.tenants.write() {
            map.insert(tenant.clone(), Arc::clone(&keys));
        }
        Ok(Some(keys))
    }
}
