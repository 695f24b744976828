//! The keyring: the KEK provider and every tenant's unwrapped keys. It loads
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

/// After an unclean shutdown, encryptions that were made but whose counter
/// update never reached disk are unknown; assume this many.
pub const UNCLEAN_SHUTDOWN_COUNTER_MARGIN: u64 = 1 << 20;

/// When data keys rotate.
#[derive(Debug, Clone, Copy)]
pub(super) struct RotationPolicy {
    /// Rotate once the active key has made this many encryptions.
    pub(super) rotate_after: u64,
    /// Never make more than this many encryptions with one key.
    pub(super) hard_limit: u64,
}

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

    fn active(&self) -> Option<Arc<DataKey>> {
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

    fn poisoned(&self) -> VaultError {
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

    /// Unwraps every stored key with `provider` and opens the keyring. On
    /// any failure (a KEK that did not wrap these keys) it stays sealed.
    /// Returns the key records to write back when a KEK rotation was in
    /// progress: promoted to this KEK when it was the rotation's target,
    /// rolled back when it was the one rotated from.
    pub(super) fn unseal(
        &self,
        provider: Arc<dyn KeyProvider>,
        stored: StoredKeys,
    ) -> Result<Vec<(KeyLabel, KeyRecord)>, VaultError> {
        let margin = if self.counters_exact.load(Ordering::Acquire) {
            0
        } else {
            UNCLEAN_SHUTDOWN_COUNTER_MARGIN
        };
        let (tenants, converged, finished) = unwrap_all(provider.as_ref(), stored, margin)?;
        if !converged.is_empty() {
            self.audit(Event::new(EventKind::KekRotated).with_detail(if finished {
                format!(
                    "finished: {} keys now wrapped under {} only",
                    converged.len(),
                    provider.describe()
                )
            } else {
                format!(
                    "rolled back: the vault opened on {}, the KEK the rotation started from; {} keys keep only that wrapping",
                    provider.describe(),
                    converged.len()
                )
            }));
        }
        let mut slot = self.provider.write().map_err(|_| VaultError::Sealed)?;
        let mut map = self.tenants.write().map_err(|_| VaultError::Sealed)?;
        *map = tenants;
        *slot = Some(provider);
        if let Ok(mut next) = self.next.write() {
            *next = None;
        }
        // Counters in memory now carry the margin; a later seal writes them.
        self.ever_unsealed.store(true, Ordering::Release);
        self.sealed.store(false, Ordering::Release);
        Ok(converged)
    }

    /// Seals: returns every data key's counter (for the caller to persist)
    /// and drops the provider and every unwrapped key. Requests already
    /// holding a tenant's keys finish with them.
    pub(super) fn seal(&self) -> Vec<(KeyLabel, u64)> {
        self.sealed.store(true, Ordering::Release);
        let counters = self.counters();
        if let Ok(mut map) = self.tenants.write() {
            map.clear();
        }
        if let Ok(mut slot) = self.provider.write() {
            *slot = None;
        }
        if let Ok(mut next) = self.next.write() {
            *next = None;
        }
        counters
    }

    /// Records that the counters a seal returned reached the disk.
    pub(super) fn counters_persisted(&self) {
        self.counters_exact.store(true, Ordering::Release);
    }

    /// Passes a provider call's result through, auditing the device going
    /// away (`hsm_unavailable`) and coming back (`hsm_recovered`) once each.
    fn device<T>(&self, result: Result<T, KeyError>) -> Result<T, KeyError> {
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
    fn wrap_new(
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

    fn provider(&self) -> Result<Arc<dyn KeyProvider>, VaultError> {
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
    fn keys_of(&self, tenant: &TenantId) -> Result<Arc<TenantKeys>, VaultError> {
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

    fn all(&self) -> Vec<Arc<TenantKeys>> {
        match self.tenants.read() {
            Ok(t) => t.values().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    fn audit(&self, event: Event) {
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

    /// Makes a new data-key version active for `tenant`; older versions
    /// stay to open existing records. Returns the new version.
    pub(super) async fn rotate(
        &self,
        store: &dyn Store,
        tenant: &TenantId,
    ) -> Result<u32, VaultError> {
        let keys = self.keys_of(tenant)?;
        let _admin = self.admin.lock().await;
        self.rotate_locked(store, &keys).await
    }

    /// Rotates only if `version` is still the active key (several callers
    /// may cross the threshold at once; one rotation is enough).
    async fn rotate_if_active(
        &self,
        store: &dyn Store,
        keys: &TenantKeys,
        version: u32,
    ) -> Result<(), VaultError> {
        let _admin = self.admin.lock().await;
        let still_active = keys
            .deks
            .read()
            .map(|set| set.active == version)
            .unwrap_or(false);
        if still_active {
            self.rotate_locked(store, keys).await?;
        }
        Ok(())
    }

    async fn rotate_locked(&self, store: &dyn Store, keys: &TenantKeys) -> Result<u32, VaultError> {
        let (old_version, old_record, new_version) = {
            let set = keys.deks.read().map_err(|_| keys.poisoned())?;
            let old = set.versions.get(&set.active).ok_or(VaultError::KeyState(
                keys.tenant.clone(),
                "no active data key",
            ))?;
            let newest = set
                .versions
                .keys()
                .chain(&set.destroyed)
                .copied()
                .max()
                .unwrap_or(set.active);
            (set.active, old.record.clone(), newest + 1)
        };
        let new_label = keys.label(KeyPurpose::PanEncryption, new_version);
        let (secret, new_record, retired) = self
            .commit_successor(
                store,
                new_label.clone(),
                keys.label(KeyPurpose::PanEncryption, old_version),
                old_record,
                vec![(new_label, 0)],
            )
            .await?;
        let mut set = keys.deks.write().map_err(|_| keys.poisoned())?;
        set.versions.insert(
            new_version,
            DekSlot {
                key: Arc::new(DataKey::new(new_version, &secret, 0)),
                record: new_record,
            },
        );
        if let Some(old) = set.versions.get_mut(&old_version) {
            old.record = retired;
        }
        set.active = new_version;
        tracing::info!(tenant = %keys.tenant, from = old_version, to = new_version, "rotated data key");
        self.audit(
            Event::new(EventKind::KeyRotated)
                .with_tenant(keys.tenant.as_str())
                .with_detail(format!("pan-encryption v{old_version} -> v{new_version}")),
        );
        Ok(new_version)
    }

    /// Writes `doomed` (versions of the tenant's `purpose` keys) back
    /// destroyed, in one commit, and audits each (`why` it could go).
    /// Returns the versions, sorted.
    async fn commit_destroyed(
        &self,
        store: &dyn Store,
        keys: &TenantKeys,
        purpose: KeyPurpose,
        doomed: Vec<(u32, KeyRecord)>,
        why: &str,
    ) -> Result<Vec<u32>, VaultError> {
        let now = now_ms();
        let records: Vec<(KeyLabel, KeyRecord)> = doomed
            .iter()
            .map(|(v, record)| (keys.label(purpose, *v), record.destroyed(now)))
            .collect();
        store.put_keys(records, Vec::new()).await?;
        let mut versions: Vec<u32> = doomed.into_iter().map(|(v, _)| v).collect();
        versions.sort_unstable();
        for v in &versions {
            tracing::info!(tenant = %keys.tenant, purpose = purpose.as_str(), version = v, "destroyed a key");
            self.audit(
                Event::new(EventKind::KeyDestroyed)
                    .with_tenant(keys.tenant.as_str())
                    .with_detail(format!(
                        "{} v{v}: {why}; wrapped key erased",
                        purpose.as_str()
                    )),
            );
        }
        Ok(versions)
    }

    /// Destroys the tenant's decrypt-only data keys older than `below`
    /// (the caller has checked that no record is sealed under them): the
    /// stored record keeps its label and dates for the inventory, marked
    /// destroyed, with no key bytes; the unwrapped key is dropped (wiped).
    /// Returns the versions destroyed.
    pub(super) async fn destroy_below(
        &self,
        store: &dyn Store,
        keys: &TenantKeys,
        below: u32,
    ) -> Result<Vec<u32>, VaultError> {
        let _admin = self.admin.lock().await;
        let doomed: Vec<(u32, KeyRecord)> = {
            let set = keys.deks.read().map_err(|_| keys.poisoned())?;
            set.versions
                .iter()
                .filter(|(v, _)| **v < below && **v != set.active)
                .map(|(v, slot)| (*v, slot.record.clone()))
                .collect()
        };
        if doomed.is_empty() {
            return Ok(Vec::new());
        }
        let versions = self
            .commit_destroyed(
                store,
                keys,
                KeyPurpose::PanEncryption,
                doomed,
                "no record left under it",
            )
            .await?;
        {
            let mut set = keys.deks.write().map_err(|_| keys.poisoned())?;
            for v in &versions {
                set.versions.remove(v);
                set.destroyed.insert(*v);
            }
        }
        Ok(versions)
    }

    /// Draws the key that follows `old_label`, wraps it (under the next KEK
    /// too while a KEK rotation is pending) and commits it active as
    /// `new_label`, with the old one retired to decrypt-only, in one write.
    /// Returns the new secret, its record and the retired record.
    async fn commit_successor(
        &self,
        store: &dyn Store,
        new_label: KeyLabel,
        old_label: KeyLabel,
        old_record: KeyRecord,
        counters: Vec<(KeyLabel, u64)>,
    ) -> Result<(SecretKey, KeyRecord, KeyRecord), VaultError> {
        let secret = SecretKey::generate()?;
        let (wrapped, wrapped_next) = self.wrap_new(&new_label, &secret)?;
        let now = now_ms();
        let new_record = KeyRecord {
            state: KeyState::Active,
            created_ms: now,
            changed_ms: now,
            wrapped,
            wrapped_next,
        };
        let retired = KeyRecord {
            state: KeyState::DecryptOnly,
            changed_ms: now,
            ..old_record
        };
        store
            .put_keys(
                vec![
                    (new_label, new_record.clone()),
                    (old_label, retired.clone()),
                ],
                counters,
            )
            .await?;
        Ok((secret, new_record, retired))
    }

    /// Makes a new fingerprint-key version active for `tenant`; older ones
    /// stay for lookups until a re-encryption pass has moved every index
    /// entry. Waits for in-flight deterministic tokenizations (the epoch
    /// lock) so none inserts a fingerprint of the old key after the swap.
    pub(super) async fn rotate_fingerprint(
        &self,
        store: &dyn Store,
        tenant: &TenantId,
    ) -> Result<u32, VaultError> {
        let keys = self.keys_of(tenant)?;
        let _admin = self.admin.lock().await;
        let _epoch = keys.fp_epoch.write().await;
        let (old_version, old_record, new_version) = {
            let set = keys.fps.read().map_err(|_| keys.poisoned())?;
            let old = set.active.version();
            let newest = set
                .records
                .keys()
                .chain(&set.destroyed)
                .copied()
                .max()
                .unwrap_or(old);
            let record = set.records.get(&old).cloned().ok_or(VaultError::KeyState(
                tenant.clone(),
                "no fingerprint key record",
            ))?;
            (old, record, newest + 1)
        };
        let (secret, new_record, retired) = self
            .commit_successor(
                store,
                keys.label(KeyPurpose::Fingerprint, new_version),
                keys.label(KeyPurpose::Fingerprint, old_version),
                old_record,
                Vec::new(),
            )
            .await?;
        let fingerprinter = Arc::new(Fingerprinter::new(new_version, &secret)?);
        {
            let mut set = keys.fps.write().map_err(|_| keys.poisoned())?;
            let old = std::mem::replace(&mut set.active, fingerprinter);
            set.older.insert(0, old);
            set.records.insert(new_version, new_record);
            set.records.insert(old_version, retired);
        }
        tracing::info!(tenant = %tenant, from = old_version, to = new_version, "rotated the fingerprint key");
        self.audit(
            Event::new(EventKind::KeyRotated)
                .with_tenant(tenant.as_str())
                .with_detail(format!("fingerprint v{old_version} -> v{new_version}")),
        );
        Ok(new_version)
    }

    /// Destroys the tenant's older fingerprint keys (the caller's pass
    /// moved every index entry to the active one). Returns their versions.
    pub(super) async fn destroy_older_fingerprints(
        &self,
        store: &dyn Store,
        keys: &TenantKeys,
    ) -> Result<Vec<u32>, VaultError> {
        let _admin = self.admin.lock().await;
        let doomed: Vec<(u32, KeyRecord)> = {
            let set = keys.fps.read().map_err(|_| keys.poisoned())?;
            set.older
                .iter()
                .filter_map(|f| {
                    set.records
                        .get(&f.version())
                        .map(|r| (f.version(), r.clone()))
                })
                .collect()
        };
        if doomed.is_empty() {
            return Ok(Vec::new());
        }
        let versions = self
            .commit_destroyed(
                store,
                keys,
                KeyPurpose::Fingerprint,
                doomed,
                "every index entry moved to the active key",
            )
            .await?;
        {
            let mut set = keys.fps.write().map_err(|_| keys.poisoned())?;
            set.older.retain(|f| !versions.contains(&f.version()));
            for v in &versions {
                set.records.remove(v);
                set.destroyed.insert(*v);
            }
        }
        Ok(versions)
    }

    /// Crypto-shreds a tenant's keys in memory: the tenant is forgotten
    /// (its unwrapped keys dropped and wiped once no request holds them).
    /// Returns its stored key records marked destroyed, for the caller to
    /// commit with the deletion of its records.
    pub(super) async fn shred(
        &self,
        store: &dyn Store,
        tenant: &TenantId,
    ) -> Result<Vec<(KeyLabel, KeyRecord)>, VaultError> {
        let _admin = self.admin.lock().await;
        let now = now_ms();
        let doomed: Vec<(KeyLabel, KeyRecord)> = store
            .load_keys()
            .await?
            .keys
            .into_iter()
            .filter(|(label, _)| label.tenant == *tenant)
            .map(|(label, record)| {
                let destroyed = record.destroyed(now);
                (label, destroyed)
            })
            .collect();
        if doomed.is_empty() {
            return Err(VaultError::UnknownTenant(tenant.clone()));
        }
        if let Ok(mut tenants) = self.tenants.write() {
            tenants.remove(tenant);
        }
        Ok(doomed)
    }

    /// Phase one of a KEK rotation: every stored key record is wrapped under
    /// `next` as well, in one durable commit (all or none), and keys made
    /// from now on are wrapped under both. The rotation finishes when the
    /// vault next opens on `next` (it then drops the old wrapping); opened
    /// on the current KEK again, it is rolled back. Returns the number of
    /// key records rewrapped.
    pub(super) async fn rotate_kek(
        &self,
        store: &dyn Store,
        next: Arc<dyn KeyProvider>,
    ) -> Result<usize, VaultError> {
        let _admin = self.admin.lock().await;
        let current = self.provider()?;
        let stored = store.load_keys().await?;
        let mut rewrapped = Vec::with_capacity(stored.keys.len());
        for (label, mut record) in stored.keys {
            if record.state == KeyState::Destroyed {
                continue;
            }
            let secret = self.device(current.unwrap(&label, &record.wrapped))?;
            record.wrapped_next = Some(next.wrap(&label, &secret)?);
            rewrapped.push((label, record));
        }
        let count = rewrapped.len();
        // The audit key first: if the keys' commit never happens, the next
        // open rolls the audit key back with them.
        if let Some(audit) = &self.audit {
            audit
                .rewrap_key(current.as_ref(), next.as_ref())
                .map_err(|e| KeyError::Provider(format!("audit key: {e}")))?;
        }
        store.put_keys(rewrapped.clone(), Vec::new()).await?;
        for (label, record) in rewrapped {
            let Some(keys) = self.get(&label.tenant) else {
                continue;
            };
            match label.purpose {
                KeyPurpose::PanEncryption => {
                    if let Ok(mut set) = keys.deks.write()
                        && let Some(slot) = set.versions.get_mut(&label.version)
                    {
                        slot.record = record;
                    }
                }
                KeyPurpose::Fingerprint => {
                    if let Ok(mut set) = keys.fps.write()
                        && let Some(slot) = set.records.get_mut(&label.version)
                    {
                        *slot = record;
                    }
                }
                KeyPurpose::AuditMac => {}
            }
        }
        if let Ok(mut slot) = self.next.write() {
            *slot = Some(Arc::clone(&next));
        }
        tracing::info!(keys = count, to = %next.describe(), "every key is wrapped under the next KEK too");
        Ok(count)
    }

    /// Claims one encryption with the tenant's active key, rotating first if
    /// the key is at its hard limit. Returns the key and its count after
    /// this claim.
    pub(super) async fn claim(
        &self,
        store: &dyn Store,
        keys: &TenantKeys,
    ) -> Result<(Arc<DataKey>, u64), VaultError> {
        for _ in 0..2 {
            let dek = keys.active().ok_or(VaultError::KeyState(
                keys.tenant.clone(),
                "no active data key",
            ))?;
            if let Some(count) = dek.claim_encryption(self.policy.hard_limit) {
                return Ok((dek, count));
            }
            self.rotate_if_active(store, keys, dek.version()).await?;
        }
        let version = keys.active().map(|k| k.version()).unwrap_or(0);
        Err(VaultError::KeyExhausted {
            tenant: keys.tenant.clone(),
            version,
        })
    }

    /// Rotates once a claim's count has passed the rotation threshold; a
    /// failure is logged (the hard limit still protects the key).
    pub(super) async fn rotate_if_due(
        &self,
        store: &dyn Store,
        keys: &TenantKeys,
        dek: &DataKey,
        count: u64,
    ) {
        if count >= self.policy.rotate_after
            && let Err(e) = self.rotate_if_active(store, keys, dek.version()).await
        {
            tracing::warn!(tenant = %keys.tenant, error = %e, "scheduled data key rotation failed");
        }
    }

    /// Every data key's encryption count, for persisting at close.
    pub(super) fn counters(&self) -> Vec<(KeyLabel, u64)> {
        let mut out = Vec::new();
        for keys in self.all() {
            if let Ok(set) = keys.deks.read() {
                for (version, slot) in &set.versions {
                    out.push((
                        keys.label(KeyPurpose::PanEncryption, *version),
                        slot.key.sealed_count(),
                    ));
                }
            }
        }
        out
    }

    /// Active data-key version and its encryption count, per tenant, sorted.
    pub(super) fn status(&self) -> Vec<(TenantId, u32, u64)> {
        let mut out: Vec<_> = self
            .all()
            .iter()
            .filter_map(|keys| {
                let dek = keys.active()?;
                Some((keys.tenant.clone(), dek.version(), dek.sealed_count()))
            })
            .collect();
        out.sort();
        out
    }
}

/// Which wrapping of a key record `provider` opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenedBy {
    /// `wrapped`: the KEK the record names first.
    Current,
    /// `wrapped_next`: the target of a KEK rotation in progress.
    Next,
}

/// Unwraps a key record with `provider`: its own wrapping, or the next
/// KEK's when a rotation is in progress and the provider is that KEK.
fn open_record(
    provider: &dyn KeyProvider,
    label: &KeyLabel,
    record: &KeyRecord,
) -> Result<(SecretKey, OpenedBy), VaultError> {
    match provider.unwrap(label, &record.wrapped) {
        Ok(secret) => Ok((secret, OpenedBy::Current)),
        Err(e @ (KeyError::Unwrap(_) | KeyError::OtherProvider(..))) => {
            match &record.wrapped_next {
                Some(next) => Ok((provider.unwrap(label, next)?, OpenedBy::Next)),
                None => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The records a rotation in progress leaves to write back, once every
/// record opened: promoted (the provider is the rotation's target) or
/// rolled back (the provider is the KEK rotated from). Mixed answers mean
/// stored keys under two unrelated KEKs: refused.
fn converge(
    opened: Vec<(KeyLabel, KeyRecord, OpenedBy)>,
) -> Result<(Vec<(KeyLabel, KeyRecord)>, bool), VaultError> {
    let by_next = opened
        .iter()
        .filter(|(_, _, by)| *by == OpenedBy::Next)
        .count();
    if by_next > 0 && by_next < opened.len() {
        return Err(VaultError::Key(KeyError::Unwrap(format!(
            "{by_next} of {} stored keys; they are wrapped under two different KEKs",
            opened.len()
        ))));
    }
    let mut out = Vec::new();
    for (label, mut record, by) in opened {
        match (by, record.wrapped_next.take()) {
            (OpenedBy::Next, Some(next)) => {
                record.wrapped = next;
                out.push((label, record));
            }
            (OpenedBy::Current, Some(_)) => out.push((label, record)),
            (_, None) => {}
        }
    }
    if !out.is_empty() {
        if by_next > 0 {
            tracing::info!(
                keys = out.len(),
                "KEK rotation finished: the keys are wrapped under this KEK only"
            );
        } else {
            tracing::warn!(
                keys = out.len(),
                "a KEK rotation was not finished (the vault opened on the KEK it rotated from): rolled back; rotate again"
            );
        }
    }
    Ok((out, by_next > 0))
}

/// Unwraps every stored key with `provider`, tenant by tenant, raising each
/// data key's counter by `margin` (after an unclean shutdown). Also returns
/// what a KEK rotation in progress leaves to write back ([`converge`]).
#[allow(clippy::type_complexity)]
fn unwrap_all(
    provider: &dyn KeyProvider,
    stored: StoredKeys,
    margin: u64,
) -> Result<
    (
        HashMap<TenantId, Arc<TenantKeys>>,
        Vec<(KeyLabel, KeyRecord)>,
        bool,
    ),
    VaultError,
> {
    let counters: HashMap<KeyLabel, u64> = stored.counters.into_iter().collect();
    let mut opened = Vec::with_capacity(stored.keys.len());
    let mut secrets = Vec::with_capacity(stored.keys.len());
    let mut destroyed: HashMap<TenantId, std::collections::BTreeSet<u32>> = HashMap::new();
    let mut fp_destroyed: HashMap<TenantId, std::collections::BTreeSet<u32>> = HashMap::new();
    for (label, record) in stored.keys {
        if record.state == KeyState::Destroyed {
            let set = match label.purpose {
                KeyPurpose::PanEncryption => &mut destroyed,
                _ => &mut fp_destroyed,
            };
            set.entry(label.tenant.clone())
                .or_default()
                .insert(label.version);
            continue;
        }
        let (secret, by) = open_record(provider, &label, &record)?;
        secrets.push(secret);
        opened.push((label, record, by));
    }
    let (converged, finished) = converge(opened.clone())?;
    let fixed: HashMap<KeyLabel, KeyRecord> = converged.iter().cloned().collect();
    let mut by_tenant: HashMap<TenantId, Vec<(KeyLabel, KeyRecord, SecretKey)>> = HashMap::new();
    for ((label, record, _), secret) in opened.into_iter().zip(secrets) {
        let record = fixed.get(&label).cloned().unwrap_or(record);
        by_tenant
            .entry(label.tenant.clone())
            .or_default()
            .push((label, record, secret));
    }
    let mut tenants = HashMap::new();
    for (tenant, keys) in by_tenant {
        let mut versions = HashMap::new();
        let mut active = None;
        let mut fingerprinters: Vec<(Arc<Fingerprinter>, KeyRecord)> = Vec::new();
        for (label, record, secret) in keys {
            match label.purpose {
                KeyPurpose::PanEncryption => {
                    let sealed = counters.get(&label).copied().unwrap_or(0);
                    let sealed = if sealed > 0 || margin > 0 {
                        sealed.saturating_add(margin)
                    } else {
                        sealed
                    };
                    if record.state == KeyState::Active && active.is_none_or(|v| v < label.version)
                    {
                        active = Some(label.version);
                    }
                    let key = Arc::new(DataKey::new(label.version, &secret, sealed));
                    versions.insert(label.version, DekSlot { key, record });
                }
                KeyPurpose::Fingerprint => {
                    fingerprinters.push((
                        Arc::new(Fingerprinter::new(label.version, &secret)?),
                        record,
                    ));
                }
                KeyPurpose::AuditMac => {}
            }
        }
        let active = active.ok_or(VaultError::KeyState(tenant.clone(), "no active data key"))?;
        // The newest fingerprint key fingerprints; older ones are looked up.
        fingerprinters.sort_by_key(|(f, _)| std::cmp::Reverse(f.version()));
        let records: HashMap<u32, KeyRecord> = fingerprinters
            .iter()
            .map(|(f, r)| (f.version(), r.clone()))
            .collect();
        let mut fingerprinters = fingerprinters.into_iter().map(|(f, _)| f);
        let fp_active = fingerprinters
            .next()
            .ok_or(VaultError::KeyState(tenant.clone(), "no fingerprint key"))?;
        let fp_older: Vec<Arc<Fingerprinter>> = fingerprinters.collect();
        tracing::info!(tenant = %tenant, active_dek = active, versions = versions.len(), "loaded tenant keys");
        let destroyed = destroyed.remove(&tenant).unwrap_or_default();
        let fp_destroyed = fp_destroyed.remove(&tenant).unwrap_or_default();
        let keys = TenantKeys {
            tenant: tenant.clone(),
            deks: RwLock::new(DekSet {
                active,
                versions,
                destroyed,
            }),
            fps: RwLock::new(FpSet {
                active: fp_active,
                older: fp_older,
                records,
                destroyed: fp_destroyed,
            }),
            fp_epoch: tokio::sync::RwLock::new(()),
        };
        tenants.insert(tenant, Arc::new(keys));
    }
    Ok((tenants, converged, finished))
}
