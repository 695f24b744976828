//! Encryption counters on a shared database: each node adds its own
//! increments (one statement per commit), so nodes sharing a data key never
//! undercount its encryptions. A node's ledger remembers what it has
//! claimed: a transaction claims the increments above the claims before
//! it — so two transactions in flight at once never add the same
//! encryptions twice — and a claim whose transaction did not commit is
//! refunded into the next one, so none is ever left out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::schema::pg;
use crate::crypto::KeyLabel;
use crate::store::StoreError;
use crate::store::codec;

/// What this node has claimed of each counter, and claims to add again.
#[derive(Default)]
struct Ledger {
    claimed: HashMap<Vec<u8>, u64>,
    refunds: BTreeMap<Vec<u8>, (String, u64)>,
}

/// Per-node increments of the encryption counters (the database holds
/// the sum over nodes).
#[derive(Default)]
pub(crate) struct Baselines(Mutex<Ledger>);

/// Counter increments claimed for one transaction: added with
/// [`Increments::add`]; unless [`Increments::settle`]d once the
/// transaction committed, dropping them refunds the claim.
pub(crate) struct Increments<'a> {
    ledger: &'a Baselines,
    keys: Vec<Vec<u8>>,
    tenants: Vec<String>,
    deltas: Vec<i64>,
    settled: bool,
}

impl Baselines {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // A poisoned lock only means a panic elsewhere mid-update; the
        // numbers are each consistent.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Claims what absolute counts (this node's view) add above this
    /// node's claims, with any refunded claims.
    pub(crate) fn claim(&self, counters: &[(KeyLabel, u64)]) -> Increments<'_> {
        let mut highest: BTreeMap<Vec<u8>, (String, u64)> = BTreeMap::new();
        for (label, value) in counters {
            let slot = highest
                .entry(codec::counter_key(label))
                .or_insert((label.tenant.to_string(), 0));
            slot.1 = slot.1.max(*value);
        }
        let mut ledger = self.ledger();
        let mut owed: BTreeMap<Vec<u8>, (String, u64)> = std::mem::take(&mut ledger.refunds);
        for (key, (tenant, value)) in highest {
            let base = ledger.claimed.entry(key.clone()).or_insert(0);
            if value > *base {
                owed.entry(key).or_insert((tenant, 0)).1 += value - *base;
                *base = value;
            }
        }
        drop(ledger);
        // Sorted by key: concurrent transactions lock counter rows in one order.
        let (mut keys, mut tenants, mut deltas) = (vec![], vec![], vec![]);
        for (key, (tenant, delta)) in owed {
            keys.push(key);
            tenants.push(tenant);
            deltas.push(delta.min(i64::MAX as u64) as i64);
        }
        Increments {
            ledger: self,
            keys,
            tenants,
            deltas,
            settled: false,
        }
    }

    /// Counts already in the database (read at open): this node adds only
    /// what it seals from here on.
    pub(crate) fn raise(&self, seen: Vec<(Vec<u8>, u64)>) {
        let mut ledger = self.ledger();
        for (key, value) in seen {
            let slot = ledger.claimed.entry(key).or_insert(0);
            *slot = (*slot).max(value);
        }
    }
}

impl Increments<'_> {
    /// Adds them in `tx` (nothing to do when empty).
    pub(super) async fn add(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<(), StoreError> {
        if !self.keys.is_empty() {
            let statement = tx.prepare_cached(ADD_COUNTERS).await.map_err(pg)?;
            tx.execute(&statement, &[&self.keys, &self.tenants, &self.deltas])
                .await
                .map_err(pg)?;
        }
        Ok(())
    }

    /// The key, tenant and increment columns, for a statement of its own.
    pub(super) fn columns(&self) -> (&Vec<Vec<u8>>, &Vec<String>, &Vec<i64>) {
        (&self.keys, &self.tenants, &self.deltas)
    }

    /// The transaction that added them committed.
    pub(super) fn settle(mut self) {
        self.settled = true;
    }
}

impl Drop for Increments<'_> {
    fn drop(&mut self) {
        if self.settled || self.keys.is_empty() {
            return;
        }
        let mut ledger = self.ledger.ledger();
        for ((key, tenant), delta) in self
            .keys
            .drain(..)
            .zip(self.tenants.drain(..))
            .zip(self.deltas.drain(..))
        {
            ledger.refunds.entry(key).or_insert((tenant, 0)).1 += delta as u64;
        }
    }
}

/// The counters upsert: an increment per node.
pub(super) const ADD_COUNTERS: &str = "INSERT INTO cardvault_counters (key, tenant, value) \
     SELECT * FROM unnest($1::bytea[], $2::text[], $3::int8[]) \
     ON CONFLICT (key) DO UPDATE SET value = cardvault_counters.value + EXCLUDED.value";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyPurpose;
    use crate::domain::TenantId;

    fn dek(version: u32) -> KeyLabel {
        KeyLabel {
            tenant: TenantId::parse("shop").unwrap(),
            purpose: KeyPurpose::PanEncryption,
            version,
        }
    }

    #[test]
    fn two_claims_in_flight_split_the_encryptions_between_them() {
        let ledger = Baselines::default();
        ledger.raise(vec![(codec::counter_key(&dek(1)), 100)]);
        let first = ledger.claim(&[(dek(1), 130)]);
        let second = ledger.claim(&[(dek(1), 150), (dek(1), 140)]);
        assert_eq!(first.deltas, vec![30]);
        assert_eq!(second.deltas, vec![20]);
        // A claim below what is claimed adds nothing.
        assert!(ledger.claim(&[(dek(1), 120)]).keys.is_empty());
        first.settle();
        second.settle();
    }

    #[test]
    fn a_claim_that_did_not_commit_goes_into_the_next() {
        let ledger = Baselines::default();
        drop(ledger.claim(&[(dek(1), 10), (dek(2), 5)]));
        let next = ledger.claim(&[(dek(1), 12)]);
        assert_eq!(next.keys.len(), 2);
        assert_eq!(next.deltas, vec![12, 5]);
        next.settle();
        assert!(ledger.claim(&[(dek(1), 12)]).keys.is_empty());
    }
}
