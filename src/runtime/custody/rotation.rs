//! The online KEK rotation: the next KEK opened — a key file, a key in the
//! token, or a fresh split whose share files are written and pinned first —
//! then every key wrapped under it too ([`Vault::rotate_kek`]).

use super::*;

/// The KEK a rotation moves to: opened, with the config that names it and
/// the share files written for it.
struct NextKek {
    provider: Arc<dyn KeyProvider>,
    config: String,
    share_files: Vec<PathBuf>,
}

/// A KEK the request named that cannot be opened or made.
fn bad_target(e: anyhow::Error) -> CustodyError {
    CustodyError::BadTarget(format!("{e:#}"))
}

/// A key file, by absolute path.
fn next_key_file(key_file: &str) -> Result<NextKek, CustodyError> {
    if !Path::new(key_file).is_absolute() {
        return Err(CustodyError::BadTarget(
            "key_file must be an absolute path".into(),
        ));
    }
    let provider = KeyFileProvider::open(Path::new(key_file)).map_err(|e| bad_target(e.into()))?;
    Ok(NextKek {
        provider: Arc::new(provider),
        config: format!("[kek] provider = \"file\", key_file = {key_file:?}"),
        share_files: Vec::new(),
    })
}

impl Custody {
    /// Rotates the KEK online: opens the next KEK named by `request` (for
    /// shares: splits a fresh KEK and writes the share files first), then
    /// wraps every key and the audit key under it too
    /// ([`Vault::rotate_kek`]). The vault serves throughout. The rotation
    /// finishes when the vault next opens on the new KEK (a restart with
    /// the config naming it, or an unseal with the new shares).
    pub async fn rotate_kek(&self, request: RotateKekRequest) -> Result<Rotated, CustodyError> {
        let _one = self.rotating.lock().await;
        if self.vault.is_sealed() {
            return Err(CustodyError::Failed("the vault is sealed".into()));
        }
        let next = match request {
            RotateKekRequest::File { key_file } => next_key_file(&key_file)?,
            RotateKekRequest::Pkcs11 {
                key_label,
                module,
                token_label,
                pin_file,
            } => self.next_hsm_key(key_label, module, token_label, pin_file)?,
            RotateKekRequest::Shamir {
                shares,
                threshold,
                out_dir,
                custodians,
            } => self.next_split(shares, threshold, &out_dir, custodians)?,
        };
        let from = self.vault.describe_kek();
        let keys = self
            .vault
            .rotate_kek(Arc::clone(&next.provider))
            .await
            .map_err(|e| CustodyError::Failed(e.to_string()))?;
        Ok(Rotated {
            keys,
            from,
            to: next.provider.describe(),
            finish: format!(
                "point the config at the new KEK ({}) and restart, or seal and unseal with the new shares; until then the vault wraps every new key under both KEKs",
                next.config
            ),
            share_files: next
                .share_files
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        })
    }

    /// A key in a PKCS#11 token; module, token and PIN file default to the
    /// current `[kek]`'s.
    fn next_hsm_key(
        &self,
        key_label: String,
        module: Option<String>,
        token_label: Option<String>,
        pin_file: Option<String>,
    ) -> Result<NextKek, CustodyError> {
        let current = match &self.source {
            KekSource::Pkcs11 {
                module,
                token_label,
                pin_file,
                ..
            } => Some((module.clone(), token_label.clone(), pin_file.clone())),
            _ => None,
        };
        let missing = || {
            CustodyError::BadTarget(
                "give module, token_label and pin_file (the current KEK is not in a token)".into(),
            )
        };
        let settings = Pkcs11Settings {
            module: module
                .map(PathBuf::from)
                .or(current.as_ref().map(|c| c.0.clone()))
                .ok_or_else(missing)?,
            token_label: token_label
                .or(current.as_ref().map(|c| c.1.clone()))
                .ok_or_else(missing)?,
            pin_file: pin_file
                .map(PathBuf::from)
                .or(current.as_ref().map(|c| c.2.clone()))
                .ok_or_else(missing)?,
            key_label,
        };
        let provider = Pkcs11Provider::open(&settings).map_err(|e| bad_target(e.into()))?;
        let config = format!(
            "[kek] provider = \"pkcs11\", module = {:?}, token_label = {:?}, pin_file = {:?}, key_label = {:?}",
            settings.module.display().to_string(),
            settings.token_label,
            settings.pin_file.display().to_string(),
            settings.key_label
        );
        Ok(NextKek {
            provider: Arc::new(provider),
            config,
            share_files: Vec::new(),
        })
    }

    /// A fresh split: the share files are written, and the new set pinned
    /// as the next one, before anything is rewrapped — after a crash,
    /// either set's custodians unseal.
    fn next_split(
        &self,
        shares: u8,
        threshold: u8,
        out_dir: &str,
        custodians: Vec<String>,
    ) -> Result<NextKek, CustodyError> {
        let names: Vec<String> = if custodians.is_empty() {
            (1..=shares).map(|i| format!("custodian-{i}")).collect()
        } else {
            custodians
        };
        if names.len() != shares as usize {
            return Err(CustodyError::BadTarget(
                "custodians must name one custodian per share".into(),
            ));
        }
        let dir = PathBuf::from(out_dir);
        // A path from a request: absolute, and a directory of its own that
        // the vault creates for this split, so no request can drop share
        // files into an existing one.
        if !dir.is_absolute() || dir.parent().is_none() {
            return Err(CustodyError::BadTarget(
                "out_dir must be an absolute path below /".into(),
            ));
        }
        if dir.symlink_metadata().is_ok() {
            return Err(CustodyError::BadTarget(
                "out_dir must not exist yet: the vault creates it (mode 0700) for this split"
                    .into(),
            ));
        }
        let (set, provider) = write_shares(&dir, threshold, &names).map_err(bad_target)?;
        self.pin_next_set(&set)?;
        let config = format!(
            "[kek] provider = \"shamir\" (set {}, {} of {}; set file {})",
            set.id_hex(),
            set.threshold,
            set.count,
            self.set_file.display()
        );
        Ok(NextKek {
            provider: Arc::new(provider),
            config,
            share_files: names
                .iter()
                .map(|n| dir.join(format!("{n}.share")))
                .collect(),
        })
    }

    /// Records `set` in the set file as the next set (or the current one,
    /// for a vault whose KEK was not split before).
    fn pin_next_set(&self, set: &ShareSet) -> Result<(), CustodyError> {
        let mut pinned = match &self.shares {
            Some(shares) => shares
                .lock()
                .map(|s| s.pinned.clone())
                .map_err(|_| CustodyError::Failed("custody lock poisoned".into()))?,
            None => Pinned::default(),
        };
        if pinned.current.is_some() {
            pinned.next = Some(set.clone());
        } else {
            pinned.current = Some(set.clone());
        }
        write_set_file(&self.set_file, &pinned).map_err(|e| {
            CustodyError::Failed(format!("kek set file {}: {e}", self.set_file.display()))
        })?;
        if let Some(shares) = &self.shares
            && let Ok(mut held) = shares.lock()
        {
            held.combiner = Combiner::new(pinned.accepted());
            held.pinned = pinned;
        }
        Ok(())
    }
}
