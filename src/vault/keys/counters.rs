//! Encryption counters: claims against the active data key (each encryption
//! counted, rotating at the threshold, refusing at the hard limit), the
//! counters written at shutdown or seal, and the margin an unclean
//! shutdown adds.

use super::*;

/// After an unclean shutdown, encryptions that were made but whose counter
/// update never reached disk are unknown; assume this many.
pub const UNCLEAN_SHUTDOWN_COUNTER_MARGIN: u64 = 1 << 20;

/// When data keys rotate.
#[derive(Debug, Clone, Copy)]
pub struct RotationPolicy {
    /// Rotate once the active key has made this many encryptions.
    pub(in crate::vault) rotate_after: u64,
    /// Never make more than this many encryptions with one key.
    pub(in crate::vault) hard_limit: u64,
}

impl Keyring {
    /// Claims one encryption with the tenant's active key, rotating first if
    /// the key is at its hard limit. Returns the key and its count after
    /// this claim.
    pub(in crate::vault) async fn claim(
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
    pub(in crate::vault) async fn rotate_if_due(
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
    pub(in crate::vault) fn counters(&self) -> Vec<(KeyLabel, u64)> {
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
    pub(in crate::vault) fn status(&self) -> Vec<(TenantId, u32, u64)> {
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
