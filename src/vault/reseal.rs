//! Re-encryption after a data-key rotation, as steps a job runner drives:
//! a batch of a tenant's records, in token order after a cursor, each
//! opened with the older key it names and sealed again with the active one,
//! written back compare-and-swap through the single writer together with
//! the job's checkpoint (so a restart resumes after the last committed
//! batch, and no record is ever unreadable: until the swap commits the old
//! record and its key are in place). Once a pass is done and a count finds
//! no record under the older versions, those keys are destroyed. No
//! scheduling here: `server::reseal` paces and runs the steps.

use std::collections::BTreeMap;

use super::{Vault, VaultError};
use crate::crypto::{KeyLabel, KeyPurpose, RecordView, record};
use crate::domain::{TenantId, Token};
use crate::store::{Checkpoint, Reseal};

/// Format byte of a stored checkpoint.
const CHECKPOINT_V1: u8 = 1;

/// Where a re-encryption job of one tenant stands, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResealCursor {
    /// Records under versions older than this are re-sealed.
    pub target: u32,
    /// The last token of the last committed batch (`None`: from the start).
    pub after: Option<Token>,
}

impl ResealCursor {
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![CHECKPOINT_V1];
        out.extend_from_slice(&self.target.to_be_bytes());
        if let Some(token) = &self.after {
            out.extend_from_slice(token.as_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<ResealCursor> {
        let (&format, rest) = bytes.split_first()?;
        if format != CHECKPOINT_V1 || rest.len() < 4 {
            return None;
        }
        let (target, token) = rest.split_at(4);
        let target = u32::from_be_bytes(target.try_into().ok()?);
        let after = if token.is_empty() {
            None
        } else {
            Some(Token::parse_bytes(token).ok()?)
        };
        Some(ResealCursor { target, after })
    }
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResealStep {
    /// Entries read.
    pub scanned: usize,
    /// Records sealed again and swapped in.
    pub resealed: usize,
    /// Records that could not be opened (logged; they stay as they were).
    pub failed: usize,
    /// Where the next step starts; `None` when the pass is complete.
    pub next: Option<ResealCursor>,
}

/// Records of a tenant per data-key version (one full scan).
pub type VersionCounts = BTreeMap<u32, u64>;

impl Vault {
    /// The tenant's active data-key version (`None`: no keys yet).
    pub fn active_version(&self, tenant: &TenantId) -> Result<Option<u32>, VaultError> {
        self.unsealed()?;
        Ok(self.keys.get(tenant).and_then(|k| k.active_version()))
    }

    /// The stored checkpoint of the tenant's re-encryption job, if any.
    pub async fn reseal_checkpoint(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<ResealCursor>, VaultError> {
        Ok(self
            .store
            .checkpoint(tenant)
            .await?
            .and_then(|bytes| ResealCursor::decode(&bytes)))
    }

    /// Tenants whose re-encryption job was interrupted (to resume).
    pub async fn reseal_pending(&self) -> Result<Vec<TenantId>, VaultError> {
        Ok(self.store.checkpoints().await?)
    }

    /// Counts the tenant's records per data-key version, `batch` entries
    /// per read.
    pub async fn count_versions(
        &self,
        tenant: &TenantId,
        batch: usize,
    ) -> Result<VersionCounts, VaultError> {
        let mut counts = VersionCounts::new();
        let mut after = None;
        loop {
            let entries = self.store.scan_entries(tenant, after, batch).await?;
            for (_, entry) in &entries {
                let version = RecordView::decode(&entry.record)?.dek_version();
                *counts.entry(version).or_default() += 1;
            }
            match entries.last() {
                Some((token, _)) if entries.len() == batch => after = Some(*token),
                _ => return Ok(counts),
            }
        }
    }

    /// One step of re-encryption: up to `batch` entries after
    /// `cursor.after`; each sealed under a version older than
    /// `cursor.target` is opened and sealed with the active key, then all
    /// are swapped in with the checkpoint (cleared when the pass ends).
    pub async fn reseal_step(
        &self,
        tenant: &TenantId,
        cursor: &ResealCursor,
        batch: usize,
    ) -> Result<ResealStep, VaultError> {
        self.unsealed()?;
        let keys = self.keys.require(tenant)?;
        let entries = self.store.scan_entries(tenant, cursor.after, batch).await?;
        // During a fingerprint-key rotation every fingerprinted record is
        // opened, to move its index entry to the active key's fingerprint.
        let (fingerprinter, older) = keys.fingerprinters();
        let moving = !older.is_empty();
        let mut items = Vec::new();
        let mut counters: BTreeMap<u32, u64> = BTreeMap::new();
        let mut failed = 0;
        for (token, entry) in &entries {
            let view = RecordView::decode(&entry.record)?;
            let reseal = view.dek_version() < cursor.target;
            let fingerprinted = moving && entry.fingerprint.is_some();
            if !reseal && !fingerprinted {
                continue;
            }
            let opened = keys
                .opener(view.dek_version())
                .and_then(|dek| Ok(view.open(&dek, tenant, token)?));
            let pan = match opened {
                Ok(pan) => pan,
                Err(e) => {
                    failed += 1;
                    tracing::error!(tenant = %tenant, token = %token, error = %e, "re-encryption cannot open a record; it stays as it is");
                    continue;
                }
            };
            let fingerprint = match entry.fingerprint {
                Some(old) if fingerprinted => {
                    let new = fingerprinter.fingerprint(&pan);
                    (new != old).then_some((old, new))
                }
                _ => None,
            };
            if !reseal && fingerprint.is_none() {
                continue;
            }
            let record = if reseal {
                let (dek, count) = self.keys.claim(self.store.as_ref(), &keys).await?;
                let slot = counters.entry(dek.version()).or_default();
                *slot = (*slot).max(count);
                record::seal(&dek, tenant, token, &pan)?
            } else {
                entry.record.clone()
            };
            items.push(Reseal {
                token: *token,
                expected: entry.record.clone(),
                record,
                fingerprint,
            });
        }
        let done = entries.len() < batch;
        let next = (!done).then(|| ResealCursor {
            target: cursor.target,
            after: entries.last().map(|(token, _)| *token),
        });
        let checkpoint = match &next {
            Some(next) => Checkpoint::Set(next.encode()),
            None => Checkpoint::Clear,
        };
        let counters: Vec<(KeyLabel, u64)> = counters
            .into_iter()
            .map(|(version, count)| (keys.label(KeyPurpose::PanEncryption, version), count))
            .collect();
        let resealed = self
            .store
            .reseal(tenant, items, counters, checkpoint)
            .await?;
        Ok(ResealStep {
            scanned: entries.len(),
            resealed,
            failed,
            next,
        })
    }

    /// Starts (or restarts) a pass: stores the checkpoint of a job that
    /// re-seals everything older than the active version, and returns it.
    pub async fn reseal_begin(&self, tenant: &TenantId) -> Result<ResealCursor, VaultError> {
        let target = self
            .active_version(tenant)?
            .ok_or_else(|| VaultError::UnknownTenant(tenant.clone()))?;
        let cursor = ResealCursor {
            target,
            after: None,
        };
        self.store
            .reseal(
                tenant,
                Vec::new(),
                Vec::new(),
                Checkpoint::Set(cursor.encode()),
            )
            .await?;
        Ok(cursor)
    }

    /// After a pass: counts again, and destroys every data-key version
    /// older than `target` that no record is sealed under any more; when
    /// the pass moved every fingerprint (`fingerprints_moved`), the older
    /// fingerprint keys too. Returns what was destroyed (data-key versions,
    /// fingerprint versions) and the records still under older data keys.
    pub async fn reseal_retire(
        &self,
        tenant: &TenantId,
        target: u32,
        fingerprints_moved: bool,
        batch: usize,
    ) -> Result<(Vec<u32>, Vec<u32>, u64), VaultError> {
        let keys = self.keys.require(tenant)?;
        let fingerprints = if fingerprints_moved {
            self.keys
                .destroy_older_fingerprints(self.store.as_ref(), &keys)
                .await?
        } else {
            Vec::new()
        };
        let counts = self.count_versions(tenant, batch).await?;
        let left: u64 = counts.range(..target).map(|(_, n)| n).sum();
        if left > 0 {
            return Ok((Vec::new(), fingerprints, left));
        }
        let destroyed = self
            .keys
            .destroy_below(self.store.as_ref(), &keys, target)
            .await?;
        Ok((destroyed, fingerprints, 0))
    }

    /// Whether the tenant's fingerprint-key rotation waits for a pass.
    pub fn fingerprint_rotation_pending(&self, tenant: &TenantId) -> bool {
        self.keys
            .get(tenant)
            .is_some_and(|k| k.fingerprint_rotation_pending())
    }

    /// Makes a new fingerprint-key version active for `tenant` (lookups
    /// still try the older one until a re-encryption pass has moved every
    /// index entry, then it is destroyed). Returns the new version.
    pub async fn rotate_fingerprint_key(&self, tenant: &TenantId) -> Result<u32, VaultError> {
        self.keys
            .rotate_fingerprint(self.store.as_ref(), tenant)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_refuse_garbage() {
        for cursor in [
            ResealCursor {
                target: 7,
                after: None,
            },
            ResealCursor {
                target: 2,
                after: Some(Token::parse("4111110000001112").unwrap()),
            },
        ] {
            assert_eq!(ResealCursor::decode(&cursor.encode()), Some(cursor));
        }
        assert_eq!(ResealCursor::decode(b""), None);
        assert_eq!(ResealCursor::decode(&[2, 0, 0, 0, 1]), None);
        assert_eq!(ResealCursor::decode(&[1, 0, 0, 0, 1, b'x']), None);
    }
}
