//! Key custody as the service runs it: opening the configured KEK provider
//! (`[kek]`: a key file, a PKCS#11 HSM, or custodian shares), and — for
//! shares — the sealed state: collecting shares handed in over the admin
//! API until the threshold, rebuilding and checking the KEK, unwrapping the
//! vault's keys and starting the audit trail's writer with it, and sealing
//! again on demand. The share set's public description (set id, threshold,
//! check value) is pinned in a small file beside the data on the first
//! unseal, so shares of any other split are refused from then on.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::audit::PendingAudit;
use crate::config::KekSource;
use crate::crypto::pkcs11::{Pkcs11Provider, Pkcs11Settings};
use crate::crypto::shares::{Combiner, KekShare, Progress, ShareError, ShareSet, SharedKek};
use crate::crypto::{KeyFileProvider, KeyProvider};
use crate::vault::Vault;

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
    /// Writing the set file or sealing failed.
    #[error("{0}")]
    Failed(String),
}

/// The set file's contents: public facts only.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetFile {
    format: String,
    set: String,
    threshold: u8,
    shares: u8,
    check: String,
}

const SET_FORMAT: &str = "cardvault-kek-set-v1";

fn read_set_file(path: &Path) -> anyhow::Result<Option<ShareSet>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::anyhow!("kek set file {}: {e}", path.display())),
    };
    let bad = || anyhow::anyhow!("kek set file {} is malformed", path.display());
    let file: SetFile = serde_json::from_str(&text).map_err(|_| bad())?;
    if file.format != SET_FORMAT {
        return Err(bad());
    }
    let mut id = [0u8; 8];
    let mut check = [0u8; 32];
    hex::decode_to_slice(&file.set, &mut id).map_err(|_| bad())?;
    hex::decode_to_slice(&file.check, &mut check).map_err(|_| bad())?;
    Ok(Some(ShareSet {
        id,
        threshold: file.threshold,
        count: file.shares,
        check,
    }))
}

fn write_set_file(path: &Path, set: &ShareSet) -> std::io::Result<()> {
    let file = SetFile {
        format: SET_FORMAT.to_owned(),
        set: set.id_hex(),
        threshold: set.threshold,
        shares: set.count,
        check: hex::encode(set.check),
    };
    let text = serde_json::to_string_pretty(&file).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n")?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The shares side of custody.
struct Shares {
    set_file: PathBuf,
    pinned: bool,
    combiner: Combiner,
    /// The audit trail's writer, until the first unseal starts it.
    pending_audit: Option<PendingAudit>,
}

/// Key custody of the running vault.
pub struct Custody {
    vault: Arc<Vault>,
    /// `None` for providers that are always unsealed.
    shares: Option<Mutex<Shares>>,
}

impl Custody {
    /// Custody of a vault whose KEK is always at hand (file, HSM).
    pub fn fixed(vault: Arc<Vault>) -> Custody {
        Custody {
            vault,
            shares: None,
        }
    }

    /// Custody of a sealed vault whose KEK is split among custodians; the
    /// audit trail's writer starts at the first unseal.
    pub fn sealed(
        vault: Arc<Vault>,
        pending_audit: PendingAudit,
        set_file: PathBuf,
    ) -> anyhow::Result<Custody> {
        let pinned = read_set_file(&set_file)?;
        Ok(Custody {
            vault,
            shares: Some(Mutex::new(Shares {
                set_file,
                pinned: pinned.is_some(),
                combiner: Combiner::new(pinned),
                pending_audit: Some(pending_audit),
            })),
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
            Progress::Need { .. } => {
                return Ok(Offered {
                    status: self.status(),
                    detail,
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
        if !held.pinned {
            write_set_file(&held.set_file, set).map_err(|e| {
                CustodyError::Failed(format!("kek set file {}: {e}", held.set_file.display()))
            })?;
            held.pinned = true;
            held.combiner = Combiner::new(Some(set.clone()));
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
