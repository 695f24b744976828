//! Encryption counters on a shared database: each node adds its own
//! increments (one statement per commit), so nodes sharing a data key never
//! undercount its encryptions; a node's baselines remember what it already
//! added.

use std::collections::HashMap;
use std::sync::Mutex;

use super::schema::pg;
use crate::crypto::KeyLabel;
use crate::store::StoreError;
use crate::store::codec;

/// Counter increments to add in one statement, and this node's new
/// baselines once they are committed.
pub(crate) struct Increments {
    keys: Vec<Vec<u8>>,
    tenants: Vec<String>,
    deltas: Vec<i64>,
    pub(super) next: Vec<(Vec<u8>, u64)>,
}

impl Increments {
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
}

/// Per-node increments of the encryption counters: what this node has
/// written of each (the database holds the sum over nodes).
#[derive(Default)]
pub(crate) struct Baselines(Mutex<HashMap<Vec<u8>, u64>>);

impl Baselines {
    /// Turns absolute counts (this node's view) into increments; applied
    /// with [`Baselines::commit`] once the write is durable.
    pub(crate) fn deltas(&self, counters: &[(KeyLabel, u64)]) -> Increments {
        let seen = self.0.lock().map(|m| m.clone()).unwrap_or_default();
        // Sorted by key: concurrent transactions lock counter rows in one order.
        let mut highest: std::collections::BTreeMap<Vec<u8>, (String, u64)> = Default::default();
        for (label, value) in counters {
            let key = codec::counter_key(label);
            let slot = highest.entry(key).or_insert((label.tenant.to_string(), 0));
            slot.1 = slot.1.max(*value);
        }
        let (mut keys, mut tenants, mut deltas, mut next) = (vec![], vec![], vec![], vec![]);
        for (key, (tenant, value)) in highest {
            let base = seen.get(&key).copied().unwrap_or(0);
            if value > base {
                keys.push(key.clone());
                tenants.push(tenant);
                deltas.push((value - base) as i64);
                next.push((key, value));
            }
        }
        Increments {
            keys,
            tenants,
            deltas,
            next,
        }
    }

    pub(crate) fn commit(&self, next: Vec<(Vec<u8>, u64)>) {
        if let Ok(mut m) = self.0.lock() {
            for (key, value) in next {
                let slot = m.entry(key).or_insert(0);
                *slot = (*slot).max(value);
            }
        }
    }
}

/// The counters upsert: an increment per node.
pub(super) const ADD_COUNTERS: &str = "INSERT INTO cardvault_counters (key, tenant, value) \
     SELECT * FROM unnest($1::bytea[], $2::text[], $3::int8[]) \
     ON CONFLICT (key) DO UPDATE SET value = cardvault_counters.value + EXCLUDED.value";
