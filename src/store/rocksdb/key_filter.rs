//! An in-memory Bloom filter over every key of the `tokens` column family,
//! and one over `fingerprints`, so that the two lookups of a new PAN — its
//! fingerprint and its drawn token, both absent — cost one probe of a
//! filter each instead of a RocksDB filter probe in every sorted run (at
//! 25 M tokens that path was ≈ 14% of the server's samples and the growth
//! of tokenize's cost, docs/BENCHMARKS.md).
//!
//! Correctness rests on one invariant: once a filter is ready, every key
//! of its column family in the database is in it. A filter never answers
//! "absent" for a key that was written:
//!
//! - The writer thread adds the digest of every key it puts before the
//!   synced write that holds it ([`KeyFilter::insert`] in the writer's
//!   `finish`). A reader that can see that write — through RocksDB's
//!   published sequence number (a [`crate::store::ReadMark`]) or through
//!   an acknowledgement passed on — is ordered after the insert, so the
//!   bits are visible to it. A reader that cannot see the write yet may
//!   take the key as absent: the same answer RocksDB would have given it,
//!   and the writer's own checks ([`super::writer`]'s `Recent`) already
//!   cover a write that lands between a caller's read and its insert.
//! - Keys stored before the process started are added by one scan
//!   ([`build`]) that starts after the filter exists; a key is either in
//!   the scan's view or written (and so added) by the writer afterwards.
//!   Until the scan ends the filter answers "maybe" to everything, and
//!   every lookup goes to RocksDB as before.
//!
//! Deleted keys stay in the filter (a Bloom filter cannot forget): each
//! costs only a false positive, i.e. the RocksDB lookup that would have
//! happened anyway. The filters are rebuilt at every open. They grow in
//! layers, each [`GROWTH`] times the size of the last, when the newest one
//! holds as many keys as it was sized for; a lookup that misses probes
//! every layer, so a vault that grew by orders of magnitude since it opened
//! pays a few probes more until its next restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use fastbloom::AtomicBloomFilter;
use rocksdb::{DB, ReadOptions};

use super::{StoreError, cf};

/// The false-positive rate each layer is sized for. A false positive costs
/// one RocksDB lookup (the cost without the filter); at 1% the filter
/// takes ≈ 9.6 bits per key.
const FALSE_POSITIVE_RATE: f64 = 0.01;

/// Keys the first layer is sized for when the column family is (nearly)
/// empty: ≈ 300 KiB.
const MIN_LAYER_KEYS: u64 = 1 << 18;

/// Each new layer is sized for this many times the keys of the last.
const GROWTH: u64 = 4;

/// Layers a filter can grow to. The last one takes every key after it is
/// full: the false-positive rate rises, no answer becomes wrong. With
/// [`GROWTH`] 4 from [`MIN_LAYER_KEYS`], the twelfth layer is sized for
/// ≈ 10¹² keys.
const MAX_LAYERS: usize = 12;

/// Keys the scan at open adds per lock of the filter.
const SCAN_CHUNK: usize = 4096;

/// The digest of a `tokens` or `fingerprints` key: a fixed-seed hash of the
/// whole key (a token's digits are not uniformly spread, its BIN and last 4
/// are kept). Keys are a tenant and a random token or an HMAC, which a
/// caller cannot steer toward one digest. Used by the filter and by the
/// writer's record of recent writes.
pub(super) fn key_digest(key: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0).hash_one(key)
}

/// A growable, concurrent Bloom filter of key digests with a readiness
/// flag (see the module documentation).
pub(super) struct KeyFilter {
    layers: [OnceLock<AtomicBloomFilter>; MAX_LAYERS],
    /// Which layer takes new keys and how many more it is sized for.
    /// Only inserts take it (the writer per group, the scan per chunk).
    growth: Mutex<Growth>,
    ready: AtomicBool,
}

struct Growth {
    newest: usize,
    sized_for: u64,
    room: u64,
}

impl KeyFilter {
    /// A filter, not ready, whose first layer is sized for `expected` keys
    /// (at least [`MIN_LAYER_KEYS`]).
    pub(super) fn new(expected: u64) -> KeyFilter {
        let sized_for = expected.max(MIN_LAYER_KEYS);
        KeyFilter {
            layers: std::array::from_fn(|_| OnceLock::new()),
            growth: Mutex::new(Growth {
                newest: 0,
                sized_for,
                room: sized_for,
            }),
            ready: AtomicBool::new(false),
        }
    }

    /// Adds key digests (from [`key_digest`]).
    pub(super) fn insert(&self, digests: &[u64]) {
        if digests.is_empty() {
            return;
        }
        // A poisoned lock only means another insert panicked mid-way; the
        // bits it set are still valid, and the counts only size layers.
        let mut growth = self
            .growth
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut rest = digests;
        while !rest.is_empty() {
            let last_layer = growth.newest + 1 == MAX_LAYERS;
            let take = if last_layer {
                rest.len()
            } else {
                usize::try_from(growth.room).map_or(rest.len(), |room| room.min(rest.len()))
            };
            let (now, later) = rest.split_at(take);
            // A layer is made by its first insert, under this lock, before
            // any of its bits are set.
            let sized_for = growth.sized_for;
            let bloom = self.layers[growth.newest].get_or_init(|| layer(sized_for));
            for digest in now {
                bloom.insert_hash(*digest);
            }
            growth.room = growth.room.saturating_sub(take as u64);
            rest = later;
            if growth.room == 0 && !last_layer {
                growth.newest += 1;
                growth.sized_for = growth.sized_for.saturating_mul(GROWTH);
                growth.room = growth.sized_for;
            }
        }
    }

    /// Whether the key with this digest is certainly not in the database
    /// (`false` while the filter is not ready).
    pub(super) fn surely_absent(&self, digest: u64) -> bool {
        if !self.ready.load(Ordering::Acquire) {
            return false;
        }
        self.layers
            .iter()
            .map_while(OnceLock::get)
            .all(|bloom| !bloom.contains_hash(digest))
    }

    /// Marks the filter complete: called once the scan at open added every
    /// stored key.
    fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub(super) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Memory the filter's bits take.
    pub(super) fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map_while(OnceLock::get)
            .map(|bloom| bloom.num_bits() / 8)
            .sum()
    }

    /// Layers in use.
    pub(super) fn layer_count(&self) -> usize {
        self.layers.iter().map_while(OnceLock::get).count()
    }
}

fn layer(keys: u64) -> AtomicBloomFilter {
    let keys = usize::try_from(keys).unwrap_or(usize::MAX);
    AtomicBloomFilter::with_false_pos(FALSE_POSITIVE_RATE).expected_items(keys)
}

/// RocksDB's estimate of the keys in a column family (0 when unknown).
pub(super) fn estimated_keys(db: &DB, cf_name: &str) -> Result<u64, StoreError> {
    Ok(db
        .property_int_value_cf(cf(db, cf_name)?, "rocksdb.estimate-num-keys")?
        .unwrap_or(0))
}

/// Adds every key of `cf_name` to `filter` and marks it ready; returns the
/// keys added, or `None` if `stop` was raised first (the filter then stays
/// not ready). Reads bypass the block cache, so the scan does not evict
/// what requests use.
pub(super) fn build(
    db: &DB,
    cf_name: &str,
    filter: &KeyFilter,
    stop: &AtomicBool,
) -> Result<Option<u64>, StoreError> {
    let mut options = ReadOptions::default();
    options.fill_cache(false);
    options.set_readahead_size(4 << 20);
    let mut keys = db.raw_iterator_cf_opt(cf(db, cf_name)?, options);
    keys.seek_to_first();
    // How far the scan is (`cardvault_key_filter_progress_ratio`): keys
    // added over RocksDB's estimate, below 1 until the scan ends.
    let estimate = estimated_keys(db, cf_name)?.max(1) as f64;
    let progress =
        metrics::gauge!("cardvault_key_filter_progress_ratio", "filter" => cf_name.to_owned());
    progress.set(0.0);
    let mut chunk = Vec::with_capacity(SCAN_CHUNK);
    let mut added = 0u64;
    while let Some(key) = keys.key() {
        chunk.push(key_digest(key));
        if chunk.len() == SCAN_CHUNK {
            filter.insert(&chunk);
            added += chunk.len() as u64;
            chunk.clear();
            progress.set((added as f64 / estimate).min(0.99));
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
        }
        keys.next();
    }
    keys.status()?;
    filter.insert(&chunk);
    added += chunk.len() as u64;
    filter.set_ready();
    progress.set(1.0);
    Ok(Some(added))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests(range: std::ops::Range<u64>) -> Vec<u64> {
        range.map(|i| key_digest(&i.to_be_bytes())).collect()
    }

    #[test]
    fn answers_maybe_until_ready_and_never_absent_for_an_added_key() {
        let filter = KeyFilter::new(0);
        let added = digests(0..10_000);
        filter.insert(&added);
        assert!(
            added.iter().all(|d| !filter.surely_absent(*d)),
            "a filter that is not ready vouches for nothing"
        );
        let other = digests(1_000_000..1_010_000);
        assert!(other.iter().all(|d| !filter.surely_absent(*d)));
        filter.set_ready();
        assert!(added.iter().all(|d| !filter.surely_absent(*d)));
        let absent = other.iter().filter(|d| filter.surely_absent(**d)).count();
        assert!(
            absent > 9_500,
            "only {absent} of 10,000 unknown keys absent"
        );
    }

    /// Past the first layer's size new layers are added; every key stays
    /// found and the false-positive rate stays near what each layer was
    /// sized for.
    #[test]
    fn grows_in_layers_without_losing_keys() {
        let filter = KeyFilter::new(0);
        let added = digests(0..(MIN_LAYER_KEYS * 6));
        for chunk in added.chunks(1000) {
            filter.insert(chunk);
        }
        filter.set_ready();
        // 1 × MIN, then 4 × MIN: six times MIN needs a third layer.
        assert_eq!(filter.layer_count(), 3);
        assert!(added.iter().all(|d| !filter.surely_absent(*d)));
        let probes = digests(u64::MAX / 2..u64::MAX / 2 + 100_000);
        let maybe = probes.iter().filter(|d| !filter.surely_absent(**d)).count();
        // Three layers at ≤ 1% each, the newest far from full.
        assert!(maybe < 3_000, "{maybe} false positives in 100,000");
    }
}
