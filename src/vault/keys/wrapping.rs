//! The KEK side of the keyring: unwrapping every stored key at open or
//! unseal (and converging a KEK rotation that a restart finished or
//! abandoned), sealing, and the online KEK rotation (every key wrapped
//! under the next KEK too, in one commit).

use super::*;

impl Keyring {
    /// Unwraps every stored key with `provider` and opens the keyring. On
    /// any failure (a KEK that did not wrap these keys) it stays sealed.
    /// Returns the key records to write back when a KEK rotation was in
    /// progress: promoted to this KEK when it was the rotation's target,
    /// rolled back when it was the one rotated from.
    pub(in crate::vault) fn unseal(
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
    pub(in crate::vault) fn seal(&self) -> Vec<(KeyLabel, u64)> {
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
    pub(in crate::vault) fn counters_persisted(&self) {
        self.counters_exact.store(true, Ordering::Release);
    }

    /// Phase one of a KEK rotation: every stored key record is wrapped under
    /// `next` as well, in one durable commit (all or none), and keys made
    /// from now on are wrapped under both. The rotation finishes when the
    /// vault next opens on `next` (it then drops the old wrapping); opened
    /// on the current KEK again, it is rolled back. Returns the number of
    /// key records rewrapped.
    pub(in crate::vault) async fn rotate_kek(
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
                KeyPurpose::AuditMac | KeyPurpose::EvidenceSigning => {}
            }
        }
        if let Ok(mut slot) = self.next.write() {
            *slot = Some(Arc::clone(&next));
        }
        tracing::info!(keys = count, to = %next.describe(), "every key is wrapped under the next KEK too");
        Ok(count)
    }

    /// Rotates the evidence key: a new one, wrapped under the KEK (and the
    /// next KEK too while a KEK rotation is under way), handed over to by
    /// the trail's writer ([`crate::audit::AuditLog::rotate_evidence_key`]).
    pub(in crate::vault) async fn rotate_evidence_key(
        &self,
    ) -> Result<crate::audit::EvidenceHandover, VaultError> {
        let _admin = self.admin.lock().await;
        let current = self.provider()?;
        let next = self.next.read().ok().and_then(|n| n.clone());
        let audit = self
            .audit
            .as_ref()
            .ok_or_else(|| KeyError::Provider("no audit trail, so no evidence key".into()))?;
        Ok(audit
            .rotate_evidence_key(current.as_ref(), next.as_deref())
            .await
            .map_err(|e| KeyError::Provider(format!("evidence key: {e}")))?)
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
pub(super) fn unwrap_all(
    provider: &dyn KeyProvider,
    stored: StoredKeys,
    margin: u64,
) -> Result<Unwrapped, VaultError> {
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
        let destroyed = Destroyed {
            data: destroyed.remove(&tenant).unwrap_or_default(),
            fingerprint: fp_destroyed.remove(&tenant).unwrap_or_default(),
        };
        let keys = tenant_keys(&tenant, keys, &counters, margin, destroyed)?;
        tenants.insert(tenant, Arc::new(keys));
    }
    Ok((tenants, converged, finished))
}

/// Every tenant's keys, the records a KEK rotation in progress leaves to
/// write back, and whether that rotation is finished.
type Unwrapped = (
    HashMap<TenantId, Arc<TenantKeys>>,
    Vec<(KeyLabel, KeyRecord)>,
    bool,
);

/// The versions of a tenant's destroyed keys.
struct Destroyed {
    data: std::collections::BTreeSet<u32>,
    fingerprint: std::collections::BTreeSet<u32>,
}

/// One tenant's key ring from its unwrapped keys: data keys with their
/// counters raised by `margin` (if ever used), the newest fingerprint key
/// active and older ones kept for lookups.
fn tenant_keys(
    tenant: &TenantId,
    keys: Vec<(KeyLabel, KeyRecord, SecretKey)>,
    counters: &HashMap<KeyLabel, u64>,
    margin: u64,
    destroyed: Destroyed,
) -> Result<TenantKeys, VaultError> {
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
                if record.state == KeyState::Active && active.is_none_or(|v| v < label.version) {
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
            KeyPurpose::AuditMac | KeyPurpose::EvidenceSigning => {}
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
    Ok(TenantKeys {
        tenant: tenant.clone(),
        deks: RwLock::new(DekSet {
            active,
            versions,
            destroyed: destroyed.data,
        }),
        fps: RwLock::new(FpSet {
            active: fp_active,
            older: fp_older,
            records,
            destroyed: destroyed.fingerprint,
        }),
        fp_epoch: tokio::sync::RwLock::new(()),
    })
}
