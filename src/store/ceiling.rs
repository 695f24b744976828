//! The storage ceiling: how fast this machine's RocksDB commits synced
//! WriteBatches of a given size, with nothing of the vault around it. The
//! vault's throughput is reported as a ratio to this (`cardvault load
//! ceiling`, criterion's `raw_rocksdb_synced`).

use std::path::Path;
use std::time::{Duration, Instant};

use rocksdb::{DB, DBCompressionType, Options, WriteBatch, WriteOptions};

use super::StoreError;

/// What one ceiling run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ceiling {
    /// Puts per synced batch.
    pub group: usize,
    /// Synced batches committed.
    pub batches: u64,
    /// Batches per second.
    pub batches_per_s: f64,
    /// Puts per second.
    pub puts_per_s: f64,
    /// Mean time of one synced batch, microseconds.
    pub mean_batch_us: f64,
}

/// Commits synced batches of `group` puts (24-byte keys, 96-byte values, the
/// size of a token entry) into a fresh database in `dir` for `duration`.
pub fn measure(dir: &Path, group: usize, duration: Duration) -> Result<Ceiling, StoreError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.set_compression_type(DBCompressionType::None);
    let db = DB::open(&opts, dir)?;
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    let value = [0xA5u8; 96];
    let mut key = [0u8; 24];
    let mut counter = 0u64;
    let mut batches = 0u64;
    let start = Instant::now();
    while start.elapsed() < duration {
        let mut batch = WriteBatch::default();
        for _ in 0..group.max(1) {
            counter += 1;
            key[..8].copy_from_slice(&counter.to_be_bytes());
            batch.put(key, value);
        }
        db.write_opt(batch, &sync)?;
        batches += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(Ceiling {
        group: group.max(1),
        batches,
        batches_per_s: batches as f64 / seconds,
        puts_per_s: (batches * group.max(1) as u64) as f64 / seconds,
        mean_batch_us: seconds * 1e6 / batches.max(1) as f64,
    })
}
