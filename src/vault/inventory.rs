//! The key inventory (PCI DSS 3.6.1.1): every data and fingerprint key the
//! store holds — tenant, purpose, version, state, dates, encryptions made
//! and the limit, the KEK that wraps it — and, on request, how many records
//! each data key still seals (a full scan per tenant).

use std::collections::{BTreeMap, HashMap};

use super::{Vault, VaultError};
use crate::crypto::{KeyLabel, KeyPurpose};
use crate::store::codec::KeyState;

/// One key of the inventory. Never key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key's label (tenant, purpose, version).
    pub label: KeyLabel,
    /// `active`, `decrypt-only` or `destroyed`.
    pub state: &'static str,
    /// When it was made (ms since the epoch).
    pub created_ms: u64,
    /// When its state last changed.
    pub changed_ms: u64,
    /// Encryptions made with it (data keys).
    pub encryptions: Option<u64>,
    /// Most encryptions it may make (data keys).
    pub limit: Option<u64>,
    /// Records sealed under it, when counted (data keys).
    pub records: Option<u64>,
    /// The KEK provider that wraps it (`None` once destroyed).
    pub wrapped_by: Option<String>,
    /// Whether a KEK rotation has wrapped it under the next KEK too.
    pub rotation_pending: bool,
}

impl Vault {
    /// Every stored key, sorted by tenant, purpose and version; with
    /// `count_records`, each data key's records are counted (one scan of
    /// every tenant, `batch` entries per read).
    pub async fn inventory(
        &self,
        count_records: bool,
        batch: usize,
    ) -> Result<Vec<KeyInfo>, VaultError> {
        self.unsealed()?;
        let stored = self.store.load_keys().await?;
        let stored_counters: HashMap<KeyLabel, u64> = stored.counters.into_iter().collect();
        let live: HashMap<KeyLabel, u64> = self.keys.counters().into_iter().collect();
        let kek = self.describe_kek();
        let mut records: HashMap<_, BTreeMap<u32, u64>> = HashMap::new();
        if count_records {
            for (label, _) in &stored.keys {
                if label.purpose == KeyPurpose::PanEncryption
                    && !records.contains_key(&label.tenant)
                {
                    let counts = self.count_versions(&label.tenant, batch).await?;
                    records.insert(label.tenant.clone(), counts);
                }
            }
        }
        let mut out: Vec<KeyInfo> = stored
            .keys
            .into_iter()
            .map(|(label, record)| {
                let data_key = label.purpose == KeyPurpose::PanEncryption;
                let destroyed = record.state == KeyState::Destroyed;
                let encryptions = data_key.then(|| {
                    live.get(&label)
                        .or(stored_counters.get(&label))
                        .copied()
                        .unwrap_or(0)
                });
                let count = records
                    .get(&label.tenant)
                    .map(|counts| counts.get(&label.version).copied().unwrap_or(0));
                KeyInfo {
                    state: match record.state {
                        KeyState::Active => "active",
                        KeyState::DecryptOnly => "decrypt-only",
                        KeyState::Destroyed => "destroyed",
                    },
                    created_ms: record.created_ms,
                    changed_ms: record.changed_ms,
                    encryptions,
                    limit: data_key.then_some(self.options.dek_hard_limit),
                    records: if data_key { count } else { None },
                    wrapped_by: (!destroyed).then(|| kek.clone()),
                    rotation_pending: record.wrapped_next.is_some(),
                    label,
                }
            })
            .collect();
        out.sort_by(|a, b| a.label.cmp(&b.label));
        Ok(out)
    }
}
