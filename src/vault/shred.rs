//! Crypto-shredding a tenant: its keys destroyed and its records deleted
//! in one commit, then the database compacted so the old bytes are gone
//! from its files. Who may ask, and the second admin's approval, are the
//! server's (`server::tenants`).

use super::{Vault, VaultError};
use crate::domain::TenantId;

/// What a crypto-shred removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shredded {
    /// Tokens (records) deleted.
    pub records: u64,
    /// Keys destroyed (data keys of every version and fingerprint keys).
    pub keys: usize,
}

impl Vault {
    /// Crypto-shreds `tenant`: its data and fingerprint keys are destroyed
    /// (stored records keep their labels, marked destroyed, with no bytes)
    /// and every token and fingerprint entry of the tenant deleted, in one
    /// commit; then the database is compacted so the old values are gone
    /// from its files. Every token of the tenant answers not found after.
    pub async fn shred_tenant(&self, tenant: &TenantId) -> Result<Shredded, VaultError> {
        self.unsealed()?;
        let keys = self.keys.shred(self.store.as_ref(), tenant).await?;
        let count = keys.len();
        let records = self.store.delete_tenant(tenant, keys).await?;
        self.store.compact().await?;
        tracing::warn!(tenant = %tenant, records, keys = count, "tenant crypto-shredded");
        Ok(Shredded {
            records,
            keys: count,
        })
    }
}
