//! Key custody as the service runs it: opening the configured KEK provider
//! (`[kek]`: a key file, a PKCS#11 HSM, or custodian shares), and — for
//! shares — the sealed state: collecting shares handed in over the admin
//! API until the threshold, rebuilding and checking the KEK, unwrapping the
//! vault's keys and starting the audit trail's writer with it, and sealing
//! again on demand. The share set's public description (set id, threshold,
//! check value) is pinned in a small file beside the data on the first
//! unseal, so shares of any other split are refused from then on. And the
//! online KEK rotation: the next KEK opened (a key file, a key label in the
//! token, or a fresh split whose share files are written first), then every
//! key wrapped under it too (`Vault::rotate_kek`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::audit::PendingAudit;
use crate::config::KekSource;
use crate::crypto::pkcs11::{Pkcs11Provider, Pkcs11Settings};
use crate::crypto::shares::{Combiner, KekShare, Progress, ShareError, ShareSet, SharedKek};
use crate::crypto::{KeyFileProvider, KeyProvider};
use crate::peer::body::RotateKekRequest;
use crate::vault::Vault;

mod rotation;
mod set_file;

pub use set_file::write_shares;
use set_file::{Pinned, read_set_file, write_set_file};

/// The KEK provider a config names, opened.
pub enum Kek {
    /// Ready to wrap and unwrap (a key file, an HSM).
    Ready(Arc<dyn KeyProvider>),
    /// Custodian shares: the vault starts sealed; the set is pinned in
    /// this file once known.
    Sealed(PathBuf),
}

/// Opens the provider of `source`. The HSM is logged into here; a wrong
/// PIN, a missing module, token or key fails naming the `[kek]` field.
pub fn open_kek(source: &KekSource) -> anyhow::Result<Kek> {
    Ok(match source {
        KekSource::File(path) => Kek::Ready(Arc::new(KeyFileProvider::open(path)?)),
        KekSource::Pkcs11 {
            module,
            token_label,
            pin_file,
            key_label,
        } => Kek::Ready(Arc::new(Pkcs11Provider::open(&Pkcs11Settings {
            module: module.clone(),
            token_label: token_label.clone(),
            pin_file: pin_file.clone(),
            key_label: key_label.clone(),
        })?)),
        KekSource::Shamir(set_file) => Kek::Sealed(set_file.clone()),
    })
}

/// Where the seal stands, as `/readyz` and the unseal route tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SealStatus {
    /// Whether the vault is sealed.
    pub sealed: bool,
    /// Shares held now (0 when not collecting).
    pub shares_received: u8,
    /// Shares needed, once the set is known.
    pub threshold: Option<u8>,
}

/// What a share handed in did.
#[derive(Debug)]
pub struct Offered {
    /// The seal status after it.
    pub status: SealStatus,
    /// What to audit about the share: its set and index.
    pub detail: String,
    /// Set when this share completed the unseal: what to audit as `unsealed`.
    pub unsealed: Option<String>,
}

/// What a KEK rotation did.
#[derive(Debug, Serialize)]
pub struct Rotated {
    /// Key records wrapped under the new KEK too.
    pub keys: usize,
    /// The KEK rotated from, as its provider describes it.
    pub from: String,
    /// The new KEK, as its provider describes it.
    pub to: String,
    /// How to finish the rotation.
    pub finish: String,
    /// The new share files (a rotation to shares).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub share_files: Vec<String>,
}

/// Why an unseal or seal request failed. Never carries share bytes.
#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    /// This vault's KEK is not split among custodians.
    #[error(
        "this vault's KEK provider cannot be sealed or unsealed (only [kek] provider = \"shamir\" can)"
    )]
    NotSealable,
    /// The vault is unsealed already.
    #[error("the vault is not sealed")]
    NotSealed,
    /// The share was refused.
    #[error(transparent)]
    Share(#[from] ShareError),
    /// The rebuilt KEK does not open this vault's keys or audit key.
    #[error("the rebuilt KEK does not open this vault: {0}")]
    WrongKek(String),
    /// The KEK to rotate to cannot be opened or made.
    #[error("the new KEK: {0}")]
    BadTarget(String),
    /// Writing the set file or sealing failed.
    #[error("{0}")]
    Failed(String),
}

const SET_FORMAT: &str = "cardvault-kek-set-v1";

/// The shares side of custody.
struct Shares {
    pinned: Pinned,
    combiner: Combiner,
    /// The audit trail's writer, until the first unseal starts it.
    pending_audit: Option<PendingAudit>,
}

/// Key custody of the running vault.
pub struct Custody {
    vault: Arc<Vault>,
    /// The `[kek]` the vault opened with (the defaults of a rotation).
    source: KekSource,
    /// Where a share set is pinned (`[kek] set_file`, or the data
    /// directory's `kek-shares.json` when rotating to shares).
    set_file: PathBuf,
    /// `None` for providers that are always unsealed.
    shares: Option<Mutex<Shares>>,
    /// One rotation at a time.
    rotating: tokio::sync::Mutex<()>,
}

impl Custody {
    /// Custody of a vault whose KEK is always at hand (file, HSM).
    pub fn fixed(vault: Arc<Vault>, source: KekSource, data_dir: &Path) -> Custody {
        Custody {
            vault,
            source,
            set_file: data_dir.join("kek-shares.json"),
            shares: None,
            rotating: tokio::sync::Mutex::new(()),
        }
    }

    /// Custody of a sealed vault whose KEK is split among custodians; the
    /// audit trail's writer starts at the first unseal.
    pub fn sealed(
        vault: Arc<Vault>,
        pending_audit: PendingAudit,
        source: KekSource,
        set_file: PathBuf,
    ) -> anyhow::Result<Custody> {
        let pinned = read_set_file(&set_file)?;
        Ok(Custody {
            vault,
            source,
            set_file,
            shares: Some(Mutex::new(Shares {
                combiner: Combiner::new(pinned.accepted()),
                pinned,
                pending_audit: Some(pending_audit),
            })),
            rotating: tokio::sync::Mutex::new(()),
        })
    }

    /// Where the seal stands.
    pub fn status(&self) -> SealStatus {
        let sealed = self.vault.is_sealed();
        let (shares_received, threshold) = match &self.shares {
            Some(shares) => match shares.lock() {
                Ok(s) => (
                    s.combiner.received(),
                    s.combiner.set().map(|set| set.threshold),
                ),
                Err(_) => (0, None),
            },
            None => (0, None),
        };
        SealStatus {
            sealed,
            shares_received: if sealed { shares_received } else { 0 },
            threshold,
        }
    }

    /// Takes one custodian's share (the share file's text). At the
    /// threshold it rebuilds the KEK, unwraps the vault's keys, starts the
    /// audit writer if it waits and pins the set. The caller audits the
    /// share (`Offered::detail`) and then, if it unsealed, `unsealed`.
    pub async fn offer(&self, text: &str) -> Result<Offered, CustodyError> {
        let Some(shares) = &self.shares else {
            return Err(CustodyError::NotSealable);
        };
        if !self.vault.is_sealed() {
            return Err(CustodyError::NotSealed);
        }
        let share = KekShare::parse(text)?;
        let index = share.index;
        let set = share.set.clone();
        let progress = shares
            .lock()
            .map_err(|_| CustodyError::Failed("custody lock poisoned".into()))?
            .combiner
            .offer(share)?;
        let detail = format!("set {} share {index} of {}", set.id_hex(), set.count);
        let key = match progress {
            Progress::Need {
                received,
                threshold,
            } => {
                return Ok(Offered {
                    status: self.status(),
                    detail: format!("{detail} ({received} of {threshold} needed held)"),
                    unsealed: None,
                });
            }
            Progress::Complete(key) => key,
        };
        let provider: Arc<dyn KeyProvider> = Arc::new(SharedKek::new(&key, set.clone()));
        drop(key);
        self.open_with(shares, &provider, &set).await?;
        tracing::info!(set = %set.id_hex(), "vault unsealed");
        Ok(Offered {
            status: self.status(),
            detail,
            unsealed: Some(format!(
                "KEK rebuilt from {} shares of set {}",
                set.threshold,
                set.id_hex()
            )),
        })
    }

    async fn open_with(
        &self,
        shares: &Mutex<Shares>,
        provider: &Arc<dyn KeyProvider>,
        set: &ShareSet,
    ) -> Result<(), CustodyError> {
        // The keys first: a KEK that did not wrap them leaves the vault sealed.
        self.vault
            .unseal(Arc::clone(provider))
            .await
            .map_err(|e| CustodyError::WrongKek(e.to_string()))?;
        let started = self.start_audit_and_pin(shares, provider.as_ref(), set);
        if let Err(e) = &started
            && matches!(e, CustodyError::WrongKek(_))
        {
            let _ = self.vault.seal().await;
        }
        started
    }

    /// After the keys unwrapped: starts the waiting audit writer (a KEK
    /// that does not open the audit key is refused) and pins the set.
    fn start_audit_and_pin(
        &self,
        shares: &Mutex<Shares>,
        provider: &dyn KeyProvider,
        set: &ShareSet,
    ) -> Result<(), CustodyError> {
        let mut held = shares
            .lock()
            .map_err(|_| CustodyError::Failed("custody lock poisoned".into()))?;
        if let Some(pending) = held.pending_audit.take()
            && let Err((pending, e)) = pending.start(provider)
        {
            held.pending_audit = Some(pending);
            return Err(CustodyError::WrongKek(e.to_string()));
        }
        // The set that opened the keys is the set from now on: pinned on
        // the first unseal; a rotation's target set finishes the rotation;
        // the set rotated from rolls it back.
        let pinned = Pinned {
            current: Some(set.clone()),
            next: None,
        };
        if held.pinned != pinned {
            write_set_file(&self.set_file, &pinned).map_err(|e| {
                CustodyError::Failed(format!("kek set file {}: {e}", self.set_file.display()))
            })?;
            held.combiner = Combiner::new(pinned.accepted());
            held.pinned = pinned;
        }
        Ok(())
    }

    /// Seals the vault: exact counters written, the KEK and every key
    /// dropped; custodians must unseal again.
    pub async fn seal(&self) -> Result<SealStatus, CustodyError> {
        let Some(shares) = &self.shares else {
            return Err(CustodyError::NotSealable);
        };
        self.vault
            .seal()
            .await
            .map_err(|e| CustodyError::Failed(e.to_string()))?;
        if let Ok(mut held) = shares.lock() {
            held.combiner.clear();
        }
        tracing::warn!("vault sealed; custodians must unseal it");
        Ok(self.status())
    }

    /// Whether the audit trail is written (false while a sealed vault
    /// waits for its first unseal: events queue in memory).
    pub fn audit_started(&self) -> bool {
        match &self.shares {
            Some(shares) => shares.lock().is_ok_and(|s| s.pending_audit.is_none()),
            None => true,
        }
    }
}
