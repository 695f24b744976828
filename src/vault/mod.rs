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
//! serialized. A single tokenize is a batch of one: the draw, collision and
//! race logic exists once. Keys live in the [`keyring`].

pub(crate) mod cvc;
mod error;
mod import;
mod inventory;
mod keys;
mod reseal;
pub(crate) mod sessions;
mod shred;
mod tokenize;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::audit::AuditLog;
use crate::crypto::record;
use crate::crypto::{DataKey, Fingerprint, KeyLabel, KeyProvider, KeyPurpose, RecordView};
use crate::domain::{Bin, Brand, Expiry, Last4, Pan, TenantId, Token, TokenProfile};
use crate::store::codec::{KeyRecord, TokenEntry, TokenMeta};
use crate::store::rocksdb::{RocksStore, StoreOptions};
use crate::store::{Insert, InsertOutcome, ReadMark, Store, StoredKeys};
pub use error::VaultError;
pub use import::ImportOutcome;
pub use inventory::KeyInfo;
pub use keys::UNCLEAN_SHUTDOWN_COUNTER_MARGIN;
use keys::{Keyring, RotationPolicy, TenantKeys};
pub use reseal::{ResealCursor, ResealStep, VersionCounts};
pub use shred::Shredded;

/// How many tokens are drawn for one PAN before giving up. A draw collides
/// only when its BIN + last-4 bucket is nearly full (≥ 6 random digits).
pub const MAX_TOKEN_DRAWS: usize = 64;

/// Whether a tenant gets the same token for the same PAN (config:
/// `token_mode = "deterministic" | "random"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
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
    /// Per-tenant token profiles (which PAN digits a token keeps); a
    /// tenant not listed gets [`TokenProfile::BinLast4`].
    pub tenant_profiles: HashMap<TenantId, TokenProfile>,
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
            tenant_profiles: HashMap::new(),
            dek_rotate_after: crate::crypto::hierarchy::DEK_HARD_LIMIT - (1 << 24),
            dek_hard_limit: crate::crypto::hierarchy::DEK_HARD_LIMIT,
            store: StoreOptions::default(),
            audit: None,
        }
    }
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
    /// When the token expires (ms since the epoch), for expiring tokens.
    pub expires_ms: Option<u64>,
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
            expires_ms: meta.expires_ms,
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

/// The vault core. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Vault {
    store: Box<dyn Store>,
    keys: Keyring,
    options: VaultOptions,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("store", &self.store.describe())
            .field("provider", &self.keys.describe_provider())
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens the embedded RocksDB store in `path` and the vault over it
    /// (see [`Vault::with_store`]).
    pub fn open(
        path: &Path,
        provider: Arc<dyn KeyProvider>,
        options: VaultOptions,
    ) -> Result<Vault, VaultError> {
        let store = RocksStore::open(path, &options.store)?;
        store.refuse_unfinished_copy()?;
        let stored = store.read_keys()?;
        let keys = Vault::keyring(&store, stored, provider, &options)?;
        store.write_keys_now(&keys.1)?;
        Ok(Vault {
            store: Box::new(store),
            keys: keys.0,
            options,
        })
    }

    /// Opens the vault over any [`Store`]: reads and unwraps every stored
    /// key with the KEK, failing fast if the KEK is not the one that
    /// wrapped them.
    pub async fn with_store(
        store: Box<dyn Store>,
        provider: Arc<dyn KeyProvider>,
        options: VaultOptions,
    ) -> Result<Vault, VaultError> {
        let stored = store.load_keys().await?;
        let (keys, converged) = Vault::keyring(store.as_ref(), stored, provider, &options)?;
        if !converged.is_empty() {
            store.put_keys(converged, Vec::new()).await?;
        }
        Ok(Vault {
            store,
            keys,
            options,
        })
    }

    #[allow(clippy::type_complexity)]
    fn keyring(
        store: &dyn Store,
        stored: StoredKeys,
        provider: Arc<dyn KeyProvider>,
        options: &VaultOptions,
    ) -> Result<(Keyring, Vec<(KeyLabel, KeyRecord)>), VaultError> {
        Keyring::load(
            provider,
            stored,
            store.was_clean_shutdown(),
            rotation_policy(options),
            options.audit.clone(),
        )
    }

    /// Opens the embedded RocksDB store in `path` with a sealed keyring:
    /// every operation answers [`VaultError::Sealed`] until
    /// [`Vault::unseal`] is given the KEK provider.
    pub fn open_sealed(path: &Path, options: VaultOptions) -> Result<Vault, VaultError> {
        let store = RocksStore::open(path, &options.store)?;
        store.refuse_unfinished_copy()?;
        let keys = Keyring::sealed(
            store.was_clean_shutdown(),
            rotation_policy(&options),
            options.audit.clone(),
        );
        Ok(Vault {
            store: Box::new(store),
            keys,
            options,
        })
    }

    /// Writes a consistent copy of the store's files into `dir` (which
    /// must not exist) while the vault serves (a backup). Blocking.
    pub fn checkpoint_store(&self, dir: &std::path::Path) -> Result<(), VaultError> {
        self.store.checkpoint_into(dir).map_err(VaultError::from)
    }

    /// Whether the store takes writes now (`/readyz`).
    pub fn store_readiness(&self) -> crate::store::Readiness {
        self.store.readiness()
    }

    /// [`Vault::open_sealed`] over any [`Store`].
    pub fn with_store_sealed(store: Box<dyn Store>, options: VaultOptions) -> Vault {
        let keys = Keyring::sealed(
            store.was_clean_shutdown(),
            rotation_policy(&options),
            options.audit.clone(),
        );
        Vault {
            store,
            keys,
            options,
        }
    }

    /// The KEK provider as it describes itself (`key file …`, `PKCS#11 token
    /// … key …`, `custodian shares (set …)`), or `sealed`. Never key material.
    pub fn describe_kek(&self) -> String {
        self.keys.describe_provider()
    }

    /// Whether the vault is sealed (no KEK, no keys in memory).
    pub fn is_sealed(&self) -> bool {
        self.keys.is_sealed()
    }

    fn unsealed(&self) -> Result<(), VaultError> {
        if self.keys.is_sealed() {
            Err(VaultError::Sealed)
        } else {
            Ok(())
        }
    }

    /// Unwraps every stored key with `provider` and starts serving. If the
    /// provider's KEK did not wrap the stored keys, the vault stays sealed.
    pub async fn unseal(&self, provider: Arc<dyn KeyProvider>) -> Result<(), VaultError> {
        let stored = self.store.load_keys().await?;
        let converged = self.keys.unseal(provider, stored)?;
        if !converged.is_empty() {
            self.store.put_keys(converged, Vec::new()).await?;
        }
        Ok(())
    }

    /// Starts a KEK rotation to `next`: every stored key is wrapped under
    /// it as well (one durable commit) and new keys are wrapped under both.
    /// The vault keeps serving throughout; the rotation finishes when the
    /// vault next opens on `next` (config or shares changed), and is
    /// rolled back if it opens on the current KEK again. Returns the
    /// number of key records rewrapped.
    pub async fn rotate_kek(&self, next: Arc<dyn KeyProvider>) -> Result<usize, VaultError> {
        self.unsealed()?;
        self.keys.rotate_kek(self.store.as_ref(), next).await
    }

    /// Rotates the evidence key (checkpoints and bundles are signed by a
    /// new one after a handover signed by the old).
    pub async fn rotate_evidence_key(&self) -> Result<crate::audit::EvidenceHandover, VaultError> {
        self.unsealed()?;
        self.keys.rotate_evidence_key().await
    }

    /// Seals: writes the exact encryption counters, then drops the KEK
    /// provider and every unwrapped key. Already sealed: nothing happens.
    pub async fn seal(&self) -> Result<(), VaultError> {
        if self.keys.is_sealed() {
            return Ok(());
        }
        let counters = self.keys.seal();
        self.store.put_keys(Vec::new(), counters).await?;
        self.keys.counters_persisted();
        Ok(())
    }

    /// Writes exact encryption counters and the clean-shutdown marker, then
    /// closes the store. A vault that was never unsealed in this process
    /// closes without the marker: its stored counters were never checked,
    /// so after an earlier crash the margin must still apply next time.
    pub async fn close(self) -> Result<(), VaultError> {
        if !self.keys.ever_unsealed() {
            drop(self.store);
            return Ok(());
        }
        let counters = self.keys.counters();
        self.store.close(counters).await?;
        Ok(())
    }

    fn mode(&self, tenant: &TenantId) -> TokenMode {
        self.options
            .tenant_modes
            .get(tenant)
            .copied()
            .unwrap_or(self.options.default_mode)
    }

    /// Which PAN digits `tenant`'s tokens keep.
    pub fn profile(&self, tenant: &TenantId) -> TokenProfile {
        self.options
            .tenant_profiles
            .get(tenant)
            .copied()
            .unwrap_or_default()
    }

    /// Makes a new data-key version active for `tenant`; older versions stay
    /// available for opening records. Returns the new version.
    pub async fn rotate_keys(&self, tenant: &TenantId) -> Result<u32, VaultError> {
        self.keys.rotate(self.store.as_ref(), tenant).await
    }

    /// Tokenizes many PANs for `tenant` with one synced write per round (a
    /// round is repeated only for the rare token collisions). Results come
    /// back in input order; one failing item does not fail the others.
    pub async fn tokenize_batch(
        &self,
        tenant: &TenantId,
        items: &[(Pan, Option<Expiry>)],
    ) -> Vec<Result<TokenInfo, VaultError>> {
        let items: Vec<(&Pan, Option<Expiry>)> = items.iter().map(|(p, e)| (p, *e)).collect();
        self.tokenize_items(tenant, &items, None).await
    }

    /// The tenant's keys; on a shared store, keys another node created
    /// since this one read them are read now. A tenant without keys has no
    /// tokens.
    async fn known_keys(&self, tenant: &TenantId) -> Result<Arc<TenantKeys>, VaultError> {
        match self.keys.require(tenant) {
            Err(VaultError::TokenNotFound) if self.store.is_shared() => self
                .keys
                .refresh(self.store.as_ref(), tenant)
                .await?
                .ok_or(VaultError::TokenNotFound),
            other => other,
        }
    }

    /// The live entry of `token`: an expired one is not found.
    async fn entry(&self, tenant: &TenantId, token: &Token) -> Result<TokenEntry, VaultError> {
        self.store
            .get_entry(tenant, token)
            .await?
            .filter(|entry| !entry.meta.expired_at(now_ms()))
            .ok_or(VaultError::TokenNotFound)
    }

    /// Deletes up to `limit` expired tokens (record, index entries) in one
    /// commit; how many were deleted. The sweep calls it until it returns
    /// less than `limit`.
    pub async fn sweep_expired(&self, limit: usize) -> Result<usize, VaultError> {
        let due = self.store.expired(now_ms(), limit).await?;
        if due.is_empty() {
            return Ok(0);
        }
        Ok(self.store.delete_expired(due).await?)
    }

    /// Returns the PAN (and expiry) behind `token` in `tenant`.
    pub async fn detokenize(
        &self,
        tenant: &TenantId,
        token: &Token,
    ) -> Result<Revealed, VaultError> {
        let keys = self.known_keys(tenant).await?;
        let entry = self.entry(tenant, token).await?;
        let view = RecordView::decode(&entry.record)?;
        let dek = match keys.opener(view.dek_version()) {
            Ok(dek) => dek,
            // A version this node has not seen: another node of a shared
            // store rotated. Read the keys again, once.
            Err(VaultError::MissingKeyVersion { .. }) if self.store.is_shared() => self
                .keys
                .refresh(self.store.as_ref(), tenant)
                .await?
                .ok_or(VaultError::TokenNotFound)?
                .opener(view.dek_version())?,
            Err(e) => return Err(e),
        };
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
        self.unsealed()?;
        let entry = self.entry(tenant, token).await?;
        Ok(TokenInfo::from_meta(*token, &entry.meta))
    }

    /// Deletes `token` (and its fingerprint index entry) from `tenant`.
    pub async fn delete(&self, tenant: &TenantId, token: &Token) -> Result<(), VaultError> {
        self.unsealed()?;
        self.entry(tenant, token).await?;
        if self.store.delete(tenant, token).await? {
            Ok(())
        } else {
            Err(VaultError::TokenNotFound)
        }
    }

    /// Active data-key version and its encryption count, per tenant.
    pub fn key_status(&self) -> Vec<(TenantId, u32, u64)> {
        self.keys.status()
    }

    /// Moves buffered writes into the store's files (tests and tools).
    pub async fn flush(&self) -> Result<(), VaultError> {
        Ok(self.store.flush().await?)
    }
}

fn rotation_policy(options: &VaultOptions) -> RotationPolicy {
    RotationPolicy {
        rotate_after: options.dek_rotate_after,
        hard_limit: options.dek_hard_limit,
    }
}

/// Now, in milliseconds since the Unix epoch (UTC).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
