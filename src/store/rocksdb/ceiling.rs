//! The storage ceiling: how fast this machine's RocksDB commits synced
//! WriteBatches of a given size, with nothing of the vault around it. The
//! vault's throughput is reported as a ratio to this (`cardvault load
//! ceiling`, criterion's `raw_rocksdb_synced`), and both use
//! [`CeilingDb`] so they measure the same writes.

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

/// A scratch database that commits synced batches of token-entry-sized puts
/// (24-byte keys, 96-byte values).
pub struct CeilingDb {
    db: DB,
    sync: WriteOptions,
    key: [u8; 24],
    counter: u64,
}

impl CeilingDb {
    /// Opens (creating) a scratch database in `dir`.
    pub fn open(dir: &Path) -> Result<CeilingDb, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(DBCompressionType::None);
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        Ok(CeilingDb {
            db: DB::open(&opts, dir)?,
            sync,
            key: [0u8; 24],
            counter: 0,
        })
    }

    /// Commits one synced batch of `group` new puts.
    pub fn commit(&mut self, group: usize) -> Result<(), StoreError> {
        const VALUE: [u8; 96] = [0xA5; 96];
        let mut batch = WriteBatch::default();
        for _ in 0..group {
            self.counter += 1;
            self.key[..8].copy_from_slice(&self.counter.to_be_bytes());
            batch.put(self.key, VALUE);
        }
        self.db.write_opt(batch, &self.sync)?;
        Ok(())
    }
}

/// Commits synced batches of `group` puts into a fresh database in `dir`
/// for `duration`.
pub fn measure(dir: &Path, group: usize, duration: Duration) -> Result<Ceiling, StoreError> {
    let group = group.max(1);
    let mut db = CeilingDb::open(dir)?;
    let mut batches = 0u64;
    let start = Instant::now();
    while start.elapsed() < duration {
        db.commit(group)?;
        batches += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(Ceiling {
        group,
        batches,
        batches_per_s: batches as f64 / seconds,
        puts_per_s: (batches * group as u64) as f64 / seconds,
        mean_batch_us: seconds * 1e6 / batches.max(1) as f64,
    })
}
