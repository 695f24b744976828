//! Key lifecycle: data-key and fingerprint-key rotation (a new version
//! active, the older ones decrypt-only), destruction of versions no record
//! needs any more, and a tenant's crypto-shred.

use super::*;

impl Keyring {
    /// Makes a new data-key version active for `tenant`; older versions
    /// stay to open existing records. Returns the new version.
    pub(in crate::vault) async fn rotate(
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
    pub(super) async fn rotate_if_active(
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

    pub(super) async fn rotate_locked(
        &self,
        store: &dyn Store,
        keys: &TenantKeys,
    ) -> Result<u32, VaultError> {
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
    pub(super) async fn commit_destroyed(
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
    pub(in crate::vault) async fn destroy_below(
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
    pub(super) async fn commit_successor(
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
    pub(in crate::vault) async fn rotate_fingerprint(
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
    pub(in crate::vault) async fn destroy_older_fingerprints(
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
    pub(in crate::vault) async fn shred(
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
}
