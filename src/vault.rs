//! The vault core: tokenize, detokenize, metadata, delete and key rotation
//! over the store and the key hierarchy. No HTTP here; the server, the CLI,
//! tests and benches call it directly.
//!
//! Tokenize computes the PAN's fingerprint, returns the existing token if the
//! tenant already has one (deterministic mode), and otherwise draws a token,
//! seals the PAN under the tenant's active data key and hands the entry to the
//! store's writer, which inserts it unless a racing caller got there first
//! (then the racer's token is returned) or the token is taken (then a new one
//! is drawn). Crypto runs on the caller's task; only the check-and-write is
//! serialized.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::audit::{AuditLog, Event, EventKind};
use crate::codec::{KeyRecord, KeyState, TokenEntry, TokenMeta};
use crate::crypto::record::{self, RecordError};
use crate::crypto::{
    DataKey, Fingerprint, Fingerprinter, KeyError, KeyLabel, KeyProvider, KeyPurpose, RecordView,
    SecretKey,
};
use crate::domain::{Bin, Brand, Expiry, Last4, Pan, TenantId, Token};
use crate::random::RandomError;
use crate::store::{Insert, InsertOutcome, Store, StoreError, StoreOptions};

/// How many tokens are drawn for one PAN before giving up. A draw collides
/// only when its BIN + last-4 bucket is nearly full (≥ 6 random digits).
pub const MAX_TOKEN_DRAWS: usize = 64;

/// After an unclean shutdown, encryptions that were made but whose counter
/// update never reached disk are unknown; assume this many.
pub const UNCLEAN_SHUTDOWN_COUNTER_MARGIN: u64 = 1 << 20;

/// Whether a tenant gets the same token for the same PAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenMode {
    /// Same PAN, same token (looked up by keyed fingerprint).
    #[default]
    Deterministic,
    /// A new token on every call; no fingerprint is stored.
    Random,
}

/// Settings of the vault core.
#[derive(Debug, Clone)]
pub struct VaultOptions {
    /// Token mode of tenants not listed in `tenant_modes`.
    pub default_mode: TokenMode,
    /// Per-tenant token modes.
    pub tenant_modes: HashMap<TenantId, TokenMode>,
    /// Rotate a tenant's data key once it has made this many encryptions.
    pub dek_rotate_after: u64,
    /// Never make more than this many encryptions with one data key.
    pub dek_hard_limit: u64,
    /// Store tuning.
    pub store: StoreOptions,
    /// Where key creation and rotation are recorded (none: not audited,
    /// for tools and tests that run without a trail).
    pub audit: Option<AuditLog>,
}

impl Default for VaultOptions {
    fn default() -> VaultOptions {
        VaultOptions {
            default_mode: TokenMode::Deterministic,
            tenant_modes: HashMap::new(),
            dek_rotate_after: crate::crypto::keys::DEK_HARD_LIMIT - (1 << 24),
            dek_hard_limit: crate::crypto::keys::DEK_HARD_LIMIT,
            store: StoreOptions::default(),
            audit: None,
        }
    }
}

/// Why a vault operation failed. Messages never contain a PAN.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VaultError {
    /// No such token in this tenant.
    #[error("token not found")]
    TokenNotFound,
    /// The tenant has no keys (nothing was ever tokenized for it).
    #[error("tenant {0} has no keys")]
    UnknownTenant(TenantId),
    /// Every draw collided: the BIN + last-4 bucket is (nearly) full.
    #[error("no free token after {MAX_TOKEN_DRAWS} draws for this card number's BIN and last 4")]
    TokenSpaceExhausted,
    /// The active data key reached its encryption limit and rotation failed.
    #[error("data key {version} of tenant {tenant} reached its encryption limit")]
    KeyExhausted {
        /// Tenant.
        tenant: TenantId,
        /// Key version.
        version: u32,
    },
    /// A record names a key version the tenant does not have.
    #[error("tenant {tenant} has no data key version {version}")]
    MissingKeyVersion {
        /// Tenant.
        tenant: TenantId,
        /// Key version named by the record.
        version: u32,
    },
    /// Stored keys are inconsistent (no active key, missing fingerprint key).
    #[error("stored keys of tenant {0} are inconsistent: {1}")]
    KeyState(TenantId, &'static str),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Key wrapping or unwrapping failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A record failed to seal or open.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The OS random source failed.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// What the vault tells about a token (never the PAN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenInfo {
    /// The token.
    pub token: Token,
    /// First six digits of the PAN (16+ digit PANs only).
    pub bin: Option<Bin>,
    /// Last four digits of the PAN.
    pub last4: Last4,
    /// Card brand.
    pub brand: Brand,
    /// Expiry, when one was given.
    pub expiry: Option<Expiry>,
    /// Creation time, milliseconds since the Unix epoch (UTC).
    pub created_ms: u64,
}

impl TokenInfo {
    fn from_meta(token: Token, meta: &TokenMeta) -> TokenInfo {
        TokenInfo {
            token,
            bin: meta.bin,
            last4: meta.last4,
            brand: meta.brand,
            expiry: meta.expiry,
            created_ms: meta.created_ms,
        }
    }
}

/// A detokenized card: the PAN (masked when printed) and its expiry.
#[derive(Debug)]
pub struct Revealed {
    /// The card number.
    pub pan: Pan,
    /// Its expiry, when one was stored.
    pub expiry: Option<Expiry>,
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
}

/// A tenant's unwrapped keys.
struct TenantKeys {
    tenant: TenantId,
    deks: RwLock<DekSet>,
    fingerprinter: Fingerprinter,
}

impl TenantKeys {
    fn active(&self) -> Option<Arc<DataKey>> {
        let set = self.deks.read().ok()?;
        set.versions
            .get(&set.active)
            .map(|slot| Arc::clone(&slot.key))
    }

    fn version(&self, version: u32) -> Option<Arc<DataKey>> {
        let set = self.deks.read().ok()?;
        set.versions.get(&version).map(|slot| Arc::clone(&slot.key))
    }

    fn label(&self, purpose: KeyPurpose, version: u32) -> KeyLabel {
        KeyLabel {
            tenant: self.tenant.clone(),
            purpose,
            version,
        }
    }
}

/// The vault core. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Vault {
    store: Store,
    provider: Arc<dyn KeyProvider>,
    tenants: RwLock<HashMap<TenantId, Arc<TenantKeys>>>,
    key_admin: tokio::sync::Mutex<()>,
    options: VaultOptions,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("provider", &self.provider.describe())
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens the store in `path`, unwraps every stored data key with the KEK
    /// (failing fast if the KEK is not the one that wrapped them) and starts
    /// the writer.
    pub fn open(
        path: &Path,
        provider: Arc<dyn KeyProvider>,
        options: VaultOptions,
    ) -> Result<Vault, VaultError> {
        let store = Store::open(path, &options.store)?;
        let stored = store.load_keys()?;
        let margin = if store.was_clean_shutdown() {
            0
        } else {
            UNCLEAN_SHUTDOWN_COUNTER_MARGIN
        };
        let counters: HashMap<KeyLabel, u64> = stored.counters.into_iter().collect();
        let mut by_tenant: HashMap<TenantId, Vec<(KeyLabel, KeyRecord)>> = HashMap::new();
        for (label, record) in stored.keys {
            by_tenant
                .entry(label.tenant.clone())
                .or_default()
                .push((label, record));
        }
        let mut tenants = HashMap::new();
        for (tenant, keys) in by_tenant {
            let mut versions = HashMap::new();
            let mut active = None;
            let mut fingerprinter = None;
            for (label, record) in keys {
                let secret = provider.unwrap(&label, &record.wrapped)?;
                match label.purpose {
                    KeyPurpose::PanEncryption => {
                        let sealed = counters.get(&label).copied().unwrap_or(0);
                        let sealed = if sealed > 0 || margin > 0 {
                            sealed.saturating_add(margin)
                        } else {
                            sealed
                        };
                        if record.state == KeyState::Active
                            && active.is_none_or(|v| v < label.version)
                        {
                            active = Some(label.version);
                        }
                        let key = Arc::new(DataKey::new(label.version, &secret, sealed));
                        versions.insert(label.version, DekSlot { key, record });
                    }
                    KeyPurpose::Fingerprint => {
                        if fingerprinter
                            .as_ref()
                            .is_none_or(|f: &Fingerprinter| f.version() < label.version)
                        {
                            fingerprinter = Some(Fingerprinter::new(label.version, &secret)?);
                        }
                    }
                    KeyPurpose::AuditMac => {}
                }
            }
            let active =
                active.ok_or(VaultError::KeyState(tenant.clone(), "no active data key"))?;
            let fingerprinter =
                fingerprinter.ok_or(VaultError::KeyState(tenant.clone(), "no fingerprint key"))?;
            tracing::info!(tenant = %tenant, active_dek = active, versions = versions.len(), "loaded tenant keys");
            let keys = TenantKeys {
                tenant: tenant.clone(),
                deks: RwLock::new(DekSet { active, versions }),
                fingerprinter,
            };
            tenants.insert(tenant, Arc::new(keys));
        }
        Ok(Vault {
            store,
            provider,
            tenants: RwLock::new(tenants),
            key_admin: tokio::sync::Mutex::new(()),
            options,
        })
    }

    /// Writes exact encryption counters and the clean-shutdown marker, then
    /// closes the store.
    pub async fn close(self) -> Result<(), VaultError> {
        let counters = self.counters();
        self.store.close(counters).await?;
        Ok(())
    }

    fn counters(&self) -> Vec<(KeyLabel, u64)> {
        let tenants = match self.tenants.read() {
            Ok(t) => t.values().cloned().collect::<Vec<_>>(),
            Err(_) => return Vec::new(),
        };
        let mut out = Vec::new();
        for keys in tenants {
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

    fn mode(&self, tenant: &TenantId) -> TokenMode {
        self.options
            .tenant_modes
            .get(tenant)
            .copied()
            .unwrap_or(self.options.default_mode)
    }

    fn tenant_keys(&self, tenant: &TenantId) -> Option<Arc<TenantKeys>> {
        self.tenants.read().ok()?.get(tenant).cloned()
    }

    fn audit(&self, event: Event) {
        if let Some(audit) = &self.options.audit {
            audit.record(event);
        }
    }

    /// The tenant's keys, creating (and durably storing) them on first use.
    async fn tenant_keys_or_create(
        &self,
        tenant: &TenantId,
    ) -> Result<Arc<TenantKeys>, VaultError> {
        if let Some(keys) = self.tenant_keys(tenant) {
            return Ok(keys);
        }
        let _admin = self.key_admin.lock().await;
        if let Some(keys) = self.tenant_keys(tenant) {
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
        let dek_record = KeyRecord {
            state: KeyState::Active,
            created_ms: now,
            wrapped: self.provider.wrap(&dek_label, &dek_secret)?,
        };
        let fp_record = KeyRecord {
            state: KeyState::Active,
            created_ms: now,
            wrapped: self.provider.wrap(&fp_label, &fp_secret)?,
        };
        self.store
            .put_keys(
                vec![
                    (dek_label.clone(), dek_record.clone()),
                    (fp_label, fp_record),
                ],
                vec![(dek_label, 0)],
            )
            .await?;
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
            }),
            fingerprinter: Fingerprinter::new(1, &fp_secret)?,
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

    /// Makes a new data-key version active for `tenant`; older versions stay
    /// available for opening records. Returns the new version.
    pub async fn rotate_keys(&self, tenant: &TenantId) -> Result<u32, VaultError> {
        let keys = self
            .tenant_keys(tenant)
            .ok_or_else(|| VaultError::UnknownTenant(tenant.clone()))?;
        let _admin = self.key_admin.lock().await;
        self.rotate_locked(&keys).await
    }

    /// Rotates only if `version` is still the active key (several callers
    /// may cross the threshold at once; one rotation is enough).
    async fn rotate_if_active(&self, keys: &TenantKeys, version: u32) -> Result<(), VaultError> {
        let _admin = self.key_admin.lock().await;
        let still_active = keys
            .deks
            .read()
            .map(|set| set.active == version)
            .unwrap_or(false);
        if still_active {
            self.rotate_locked(keys).await?;
        }
        Ok(())
    }

    async fn rotate_locked(&self, keys: &TenantKeys) -> Result<u32, VaultError> {
        let (old_version, old_record, new_version) = {
            let set = keys
                .deks
                .read()
                .map_err(|_| VaultError::KeyState(keys.tenant.clone(), "key set lock poisoned"))?;
            let old = set.versions.get(&set.active).ok_or(VaultError::KeyState(
                keys.tenant.clone(),
                "no active data key",
            ))?;
            let newest = set.versions.keys().copied().max().unwrap_or(set.active);
            (set.active, old.record.clone(), newest + 1)
        };
        let new_label = keys.label(KeyPurpose::PanEncryption, new_version);
        let secret = SecretKey::generate()?;
        let new_record = KeyRecord {
            state: KeyState::Active,
            created_ms: now_ms(),
            wrapped: self.provider.wrap(&new_label, &secret)?,
        };
        let retired = KeyRecord {
            state: KeyState::DecryptOnly,
            ..old_record
        };
        self.store
            .put_keys(
                vec![
                    (new_label.clone(), new_record.clone()),
                    (
                        keys.label(KeyPurpose::PanEncryption, old_version),
                        retired.clone(),
                    ),
                ],
                vec![(new_label, 0)],
            )
            .await?;
        let mut set = keys
            .deks
            .write()
            .map_err(|_| VaultError::KeyState(keys.tenant.clone(), "key set lock poisoned"))?;
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

    /// Claims one encryption with the tenant's active key, rotating first if
    /// the key is at its hard limit, and in the background of this call once
    /// it passes the rotation threshold.
    async fn claim_key(&self, keys: &TenantKeys) -> Result<(Arc<DataKey>, u64), VaultError> {
        for _ in 0..2 {
            let dek = keys.active().ok_or(VaultError::KeyState(
                keys.tenant.clone(),
                "no active data key",
            ))?;
            if let Some(count) = dek.claim_encryption(self.options.dek_hard_limit) {
                return Ok((dek, count));
            }
            self.rotate_if_active(keys, dek.version()).await?;
        }
        let version = keys.active().map(|k| k.version()).unwrap_or(0);
        Err(VaultError::KeyExhausted {
            tenant: keys.tenant.clone(),
            version,
        })
    }

    async fn rotate_if_due(&self, keys: &TenantKeys, dek: &DataKey, count: u64) {
        if count >= self.options.dek_rotate_after
            && let Err(e) = self.rotate_if_active(keys, dek.version()).await
        {
            tracing::warn!(tenant = %keys.tenant, error = %e, "scheduled data key rotation failed");
        }
    }

    /// Prepares the insert of a fresh token for `pan`.
    async fn draft(
        &self,
        keys: &TenantKeys,
        pan: &Pan,
        expiry: Option<Expiry>,
        fingerprint: Option<Fingerprint>,
    ) -> Result<(Insert, Arc<DataKey>, u64), VaultError> {
        let token = Token::generate(pan)?;
        let (dek, count) = self.claim_key(keys).await?;
        let sealed = record::seal(&dek, &keys.tenant, &token, pan)?;
        let entry = TokenEntry {
            meta: TokenMeta {
                pan_len: pan.len() as u8,
                brand: pan.brand(),
                bin: pan.bin(),
                last4: pan.last4(),
                expiry,
                created_ms: now_ms(),
            },
            fingerprint,
            record: sealed,
        };
        let insert = Insert {
            tenant: keys.tenant.clone(),
            token,
            fingerprint,
            entry,
            counter: Some((keys.label(KeyPurpose::PanEncryption, dek.version()), count)),
        };
        Ok((insert, dek, count))
    }

    /// Answers for a token that already exists for the PAN, updating its
    /// stored expiry if a new one was given. `None` if the token vanished
    /// meanwhile (deleted concurrently): the caller draws again.
    async fn existing(
        &self,
        tenant: &TenantId,
        token: Token,
        expiry: Option<Expiry>,
    ) -> Result<Option<TokenInfo>, VaultError> {
        let Some(entry) = self.store.get_entry(tenant, &token)? else {
            return Ok(None);
        };
        let mut info = TokenInfo::from_meta(token, &entry.meta);
        if let Some(expiry) = expiry.filter(|e| entry.meta.expiry != Some(*e)) {
            if !self.store.update_expiry(tenant, &token, expiry).await? {
                return Ok(None);
            }
            info.expiry = Some(expiry);
        }
        Ok(Some(info))
    }

    /// Tokenizes one PAN for `tenant`.
    pub async fn tokenize(
        &self,
        tenant: &TenantId,
        pan: &Pan,
        expiry: Option<Expiry>,
    ) -> Result<TokenInfo, VaultError> {
        let keys = self.tenant_keys_or_create(tenant).await?;
        let fingerprint = (self.mode(tenant) == TokenMode::Deterministic)
            .then(|| keys.fingerprinter.fingerprint(pan));
        for _ in 0..MAX_TOKEN_DRAWS {
            if let Some(fp) = &fingerprint
                && let Some(token) = self.store.get_token_for(tenant, fp)?
            {
                if let Some(info) = self.existing(tenant, token, expiry).await? {
                    return Ok(info);
                }
                continue;
            }
            let (insert, dek, count) = self.draft(&keys, pan, expiry, fingerprint).await?;
            let info = TokenInfo::from_meta(insert.token, &insert.entry.meta);
            let outcome = self.store.insert(vec![insert]).await?;
            self.rotate_if_due(&keys, &dek, count).await;
            match outcome.first() {
                Some(InsertOutcome::Inserted) => {
                    metrics::counter!("cardvault_tokens_created_total").increment(1);
                    return Ok(info);
                }
                Some(InsertOutcome::Existing(token)) => {
                    if let Some(info) = self.existing(tenant, *token, expiry).await? {
                        return Ok(info);
                    }
                }
                Some(InsertOutcome::TokenCollision) | None => {}
            }
        }
        Err(VaultError::TokenSpaceExhausted)
    }

    /// Tokenizes many PANs for `tenant` with one synced write per round (a
    /// round is repeated only for the rare token collisions). Results come
    /// back in input order; one failing item does not fail the others.
    pub async fn tokenize_batch(
        &self,
        tenant: &TenantId,
        items: &[(Pan, Option<Expiry>)],
    ) -> Vec<Result<TokenInfo, VaultError>> {
        let keys = match self.tenant_keys_or_create(tenant).await {
            Ok(keys) => keys,
            Err(e) => return items.iter().map(|_| Err(e.clone())).collect(),
        };
        let deterministic = self.mode(tenant) == TokenMode::Deterministic;
        let mut results: Vec<Option<Result<TokenInfo, VaultError>>> =
            items.iter().map(|_| None).collect();
        let fingerprints: Vec<Option<Fingerprint>> = items
            .iter()
            .map(|(pan, _)| deterministic.then(|| keys.fingerprinter.fingerprint(pan)))
            .collect();
        let mut pending: Vec<usize> = (0..items.len()).collect();
        for _ in 0..MAX_TOKEN_DRAWS {
            if pending.is_empty() {
                break;
            }
            let mut inserts = Vec::with_capacity(pending.len());
            let mut inserted_for = Vec::with_capacity(pending.len());
            let mut existing = Vec::new();
            let mut last_claim = None;
            for &i in &pending {
                let (pan, expiry) = &items[i];
                if let Some(fp) = &fingerprints[i] {
                    match self.store.get_token_for(tenant, fp) {
                        Ok(Some(token)) => {
                            existing.push((i, token));
                            continue;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            results[i] = Some(Err(e.into()));
                            continue;
                        }
                    }
                }
                match self.draft(&keys, pan, *expiry, fingerprints[i]).await {
                    Ok((insert, dek, count)) => {
                        inserts.push(insert);
                        inserted_for.push(i);
                        last_claim = Some((dek, count));
                    }
                    Err(e) => results[i] = Some(Err(e)),
                }
            }
            let infos: Vec<TokenInfo> = inserts
                .iter()
                .map(|ins| TokenInfo::from_meta(ins.token, &ins.entry.meta))
                .collect();
            let outcomes = if inserts.is_empty() {
                Ok(Vec::new())
            } else {
                self.store.insert(inserts).await
            };
            if let Some((dek, count)) = last_claim {
                self.rotate_if_due(&keys, &dek, count).await;
            }
            let mut retry = Vec::new();
            match outcomes {
                Ok(outcomes) => {
                    for ((i, info), outcome) in inserted_for.into_iter().zip(infos).zip(outcomes) {
                        match outcome {
                            InsertOutcome::Inserted => {
                                metrics::counter!("cardvault_tokens_created_total").increment(1);
                                results[i] = Some(Ok(info));
                            }
                            InsertOutcome::Existing(token) => existing.push((i, token)),
                            InsertOutcome::TokenCollision => retry.push(i),
                        }
                    }
                }
                Err(e) => {
                    for i in inserted_for {
                        results[i] = Some(Err(e.clone().into()));
                    }
                }
            }
            for (i, token) in existing {
                match self.existing(tenant, token, items[i].1).await {
                    Ok(Some(info)) => results[i] = Some(Ok(info)),
                    Ok(None) => retry.push(i),
                    Err(e) => results[i] = Some(Err(e)),
                }
            }
            retry.sort_unstable();
            pending = retry;
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(VaultError::TokenSpaceExhausted)))
            .collect()
    }

    fn entry(&self, tenant: &TenantId, token: &Token) -> Result<TokenEntry, VaultError> {
        self.store
            .get_entry(tenant, token)?
            .ok_or(VaultError::TokenNotFound)
    }

    /// Returns the PAN (and expiry) behind `token` in `tenant`.
    pub async fn detokenize(
        &self,
        tenant: &TenantId,
        token: &Token,
    ) -> Result<Revealed, VaultError> {
        let keys = self.tenant_keys(tenant).ok_or(VaultError::TokenNotFound)?;
        let entry = self.entry(tenant, token)?;
        let view = RecordView::decode(&entry.record)?;
        let dek =
            keys.version(view.dek_version())
                .ok_or_else(|| VaultError::MissingKeyVersion {
                    tenant: tenant.clone(),
                    version: view.dek_version(),
                })?;
        let pan = view.open(&dek, tenant, token)?;
        Ok(Revealed {
            pan,
            expiry: entry.meta.expiry,
        })
    }

    /// Detokenizes several tokens; results in input order.
    pub async fn detokenize_batch(
        &self,
        tenant: &TenantId,
        tokens: &[Token],
    ) -> Vec<Result<Revealed, VaultError>> {
        let mut out = Vec::with_capacity(tokens.len());
        for token in tokens {
            out.push(self.detokenize(tenant, token).await);
        }
        out
    }

    /// Non-secret metadata of `token` in `tenant`.
    pub async fn metadata(
        &self,
        tenant: &TenantId,
        token: &Token,
    ) -> Result<TokenInfo, VaultError> {
        let entry = self.entry(tenant, token)?;
        Ok(TokenInfo::from_meta(*token, &entry.meta))
    }

    /// Deletes `token` (and its fingerprint index entry) from `tenant`.
    pub async fn delete(&self, tenant: &TenantId, token: &Token) -> Result<(), VaultError> {
        if self.store.delete(tenant, token).await? {
            Ok(())
        } else {
            Err(VaultError::TokenNotFound)
        }
    }

    /// Active data-key version and its encryption count, per tenant.
    pub fn key_status(&self) -> Vec<(TenantId, u32, u64)> {
        let tenants = match self.tenants.read() {
            Ok(t) => t.values().cloned().collect::<Vec<_>>(),
            Err(_) => return Vec::new(),
        };
        let mut out: Vec<_> = tenants
            .iter()
            .filter_map(|keys| {
                let dek = keys.active()?;
                Some((keys.tenant.clone(), dek.version(), dek.sealed_count()))
            })
            .collect();
        out.sort();
        out
    }

    /// Flushes memtables to SST files (tests and tools).
    pub fn flush(&self) -> Result<(), VaultError> {
        Ok(self.store.flush()?)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
