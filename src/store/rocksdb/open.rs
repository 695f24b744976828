//! Opening the RocksDB store: the database and column-family options
//! (why each is set is said where it is set), the on-disk format check and
//! upgrade, the clean-shutdown marker, the key filters and the threads that
//! fill them, and the writer thread.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, BlockBasedTablePinningTier, Cache,
    ColumnFamilyDescriptor, DB, DBCompressionType, IteratorMode, Options, WriteBatch,
};
use tokio::sync::mpsc;

use super::key_filter::{self, KeyFilter};
use super::writer::{self, Command, Written};
use super::{
    CF_FINGERPRINTS, CF_META, CF_TOKENS, COLUMN_FAMILIES, FORMAT_READABLE_BY,
    FORMAT_SHORT_FINGERPRINTS, FORMAT_VERSION, META_CLEAN_SHUTDOWN, META_FORMAT_VERSION,
    META_READABLE_BY, RocksStore, cf, synced,
};
use crate::store::StoreError;
use crate::store::codec::{self, CodecError};

/// WAL size past which the memtables that pin the oldest WAL file are
/// flushed.
const MAX_TOTAL_WAL_BYTES: u64 = 256 << 20;

/// Tuning for the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most commands committed in one group (one synced write).
    pub max_group: usize,
    /// Commands that may wait for the writer before senders wait too.
    pub queue_depth: usize,
    /// Block cache shared by all column families. Index and filter
    /// partitions live in it at high priority (half the cache is reserved
    /// for them), data blocks in the rest.
    pub block_cache_bytes: usize,
    /// Memtable size of each column family: the writer's skiplist inserts
    /// and every lookup's memtable probe get dearer as it grows; flushes
    /// and L0 files get more frequent as it shrinks.
    pub write_buffer_bytes: usize,
    /// Refuse writes while the database's filesystem has less free space
    /// than this. RocksDB does not recover from a WAL write that hit a full
    /// disk without a reopen, so the vault stops writing before that; the
    /// reserve also leaves room for memtable flushes and compaction.
    pub min_free_bytes: u64,
    /// How many recently written fingerprints, and as many tokens, the
    /// writer remembers, so an insert the caller already checked needs no
    /// second lookup (see `writer`). About 100 bytes each.
    pub recent_writes: usize,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            max_group: 1024,
            queue_depth: 4096,
            block_cache_bytes: 256 << 20,
            write_buffer_bytes: 64 << 20,
            min_free_bytes: 128 << 20,
            recent_writes: 1 << 18,
        }
    }
}

/// A filter thread: adds the stored keys of `cf_name` to its filter,
/// then ready; logs what it took. A failed scan leaves the filter not
/// ready (every lookup reads RocksDB, as without one).
fn fill_filter(db: &DB, cf_name: &str, filter: &KeyFilter, stop: &AtomicBool) {
    let started = std::time::Instant::now();
    match key_filter::build(db, cf_name, filter, stop) {
        Ok(Some(keys)) => {
            tracing::info!(
                column_family = cf_name,
                keys,
                seconds = started.elapsed().as_secs_f64(),
                bytes = filter.bytes(),
                layers = filter.layer_count(),
                "key filter ready"
            );
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(column_family = cf_name, error = %e, "key filter scan failed; lookups read the database");
        }
    }
}

/// Rewrites the `fingerprints` keys of a database older than format 4 from
/// 256-bit to 128-bit fingerprints (their first 16 bytes), in synced
/// batches that each put the new keys and delete the old ones. A run cut
/// short leaves a mix that a rerun finishes: keys already short are
/// skipped, and the format marker moves only afterwards.
fn shorten_fingerprint_keys(db: &DB, path: &Path) -> Result<(), StoreError> {
    const BATCH: usize = 16 * 1024;
    let handle = cf(db, CF_FINGERPRINTS)?;
    let sync = synced();
    let mut batch = WriteBatch::default();
    let (mut pending, mut moved) = (0usize, 0u64);
    for item in db.iterator_cf(handle, IteratorMode::Start) {
        let (key, token) = item?;
        let Some(short) = codec::shortened_fingerprint_key(&key) else {
            continue;
        };
        batch.put_cf(handle, short, token);
        batch.delete_cf(handle, key);
        pending += 1;
        if pending == BATCH {
            db.write_opt(std::mem::take(&mut batch), &sync)?;
            moved += pending as u64;
            pending = 0;
            tracing::info!(moved, path = %path.display(), "shortening fingerprint index keys");
        }
    }
    if pending > 0 {
        db.write_opt(batch, &sync)?;
        moved += pending as u64;
    }
    if moved > 0 {
        tracing::info!(moved, path = %path.display(), "fingerprint index keys now hold 128-bit fingerprints");
    }
    Ok(())
}

impl RocksStore {
    /// Opens (creating if needed) the database in `path` and starts the writer.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<RocksStore, StoreError> {
        let (db_opts, descriptors) = db_options(options);
        // Column families a newer build added (an additive format change)
        // are opened with default options and left alone: RocksDB refuses
        // to open a database without all of them, and a rollback must.
        let mut descriptors = Vec::from(descriptors);
        for name in DB::list_cf(&db_opts, path).unwrap_or_default() {
            if name != rocksdb::DEFAULT_COLUMN_FAMILY_NAME
                && !COLUMN_FAMILIES.contains(&name.as_str())
            {
                tracing::info!(column_family = %name, "a column family of a newer build: opened, not used");
                descriptors.push(ColumnFamilyDescriptor::new(name, Options::default()));
            }
        }
        let db = Arc::new(DB::open_cf_descriptors(&db_opts, path, descriptors)?);
        check_format(&db, path)?;
        let was_clean = take_clean_marker(&db)?;
        // The filters exist before the writer starts and before the scan
        // opens its iterator: every key is either in the scan's view or
        // added by the writer (see `key_filter`).
        let sized = |cf_name| -> Result<KeyFilter, StoreError> {
            let estimate = key_filter::estimated_keys(&db, cf_name)?;
            Ok(KeyFilter::new(estimate.saturating_add(estimate / 4)))
        };
        let filters = Arc::new(Written {
            fingerprints: sized(CF_FINGERPRINTS)?,
            tokens: sized(CF_TOKENS)?,
        });
        let (commands, writer) = start_writer(&db, &filters, path, options)?;
        let stop_filter_scan = Arc::new(AtomicBool::new(false));
        let filter_scans = start_filter_scans(&db, &filters, &stop_filter_scan)?;
        Ok(RocksStore {
            path: path.to_path_buf(),
            db,
            commands,
            writer: Some(writer),
            filters,
            filter_scans,
            stop_filter_scan,
            was_clean,
            sessions_due: Default::default(),
        })
    }
}

/// The database's options and its column families'.
fn db_options(
    options: &StoreOptions,
) -> (Options, [ColumnFamilyDescriptor; COLUMN_FAMILIES.len()]) {
    let mut db_opts = Options::default();
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    db_opts.set_compression_type(DBCompressionType::None);
    db_opts.set_paranoid_checks(true);
    // The keys and meta column families are written rarely; without a
    // cap on the WAL their unflushed memtables pin every WAL file since
    // (12 files seen at 2.8 M tokens). Past this size RocksDB flushes
    // them and the old WAL files go.
    db_opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
    // Compaction and flushes share the two cores with the request path;
    // write back SST data in steps instead of in one burst at the end.
    db_opts.set_max_background_jobs(2);
    db_opts.set_bytes_per_sync(1 << 20);
    // Point lookups dominate (fingerprint and token existence checks,
    // most of them for keys that do not exist): bloom filters let a
    // negative lookup skip SST files. Index and filters are partitioned
    // into small blocks kept in the cache at high priority, with the top
    // level pinned: one whole-file filter block of a large SST is
    // hundreds of KB, and re-reading and re-checksumming it on every
    // lookup once it was evicted made tokenize 5-7x slower by 3 M tokens.
    let cache = Cache::new_lru_cache(options.block_cache_bytes);
    let descriptors = COLUMN_FAMILIES.map(|name| {
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        table.set_optimize_filters_for_memory(true);
        table.set_block_cache(&cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_cache_index_and_filter_blocks_with_high_priority(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_pin_top_level_index_and_filter(true);
        // Pinned partitions are reached through the table reader's own
        // map, not a block-cache lookup: at 7 M tokens the cache's hash
        // table, LRU list and shard mutex cost ≈ 4 µs per tokenize,
        // spent again on every level. They stay charged to the cache
        // (≈ 6 bytes per stored token).
        table.set_partition_pinning_tier(BlockBasedTablePinningTier::All);
        let mut cf_opts = Options::default();
        cf_opts.set_block_based_table_factory(&table);
        cf_opts.set_write_buffer_size(options.write_buffer_bytes);
        // The same for the memtable: profiling showed tokenize spending
        // ~40% of its time walking the memtable skiplist for keys that
        // are not there.
        cf_opts.set_memtable_whole_key_filtering(true);
        cf_opts.set_memtable_prefix_bloom_ratio(0.1);
        // No bloom filter in the last level, where most keys live: a
        // lookup of a key that exists (detokenize, a known PAN) skips a
        // probe that would only say "maybe", and ~90% of the filter
        // memory goes back to the block cache. Lookups of keys that do
        // not exist are answered by the store's key filter first.
        if name == CF_TOKENS || name == CF_FINGERPRINTS {
            cf_opts.set_optimize_filters_for_hits(true);
        }
        // Values are ciphertext and HMACs: compression gains nothing, and
        // uncompressed files keep the leak scans meaningful.
        cf_opts.set_compression_type(DBCompressionType::None);
        ColumnFamilyDescriptor::new(name, cf_opts)
    });
    (db_opts, descriptors)
}

/// Records this build's format version, and the oldest format that can
/// read it, in `meta`, synced.
fn stamp_format(
    db: &DB,
    meta: &rocksdb::ColumnFamily,
    sync: &rocksdb::WriteOptions,
) -> Result<(), StoreError> {
    let mut batch = WriteBatch::default();
    batch.put_cf(
        meta,
        META_FORMAT_VERSION,
        u64::from(FORMAT_VERSION).to_be_bytes(),
    );
    batch.put_cf(
        meta,
        META_READABLE_BY,
        u64::from(FORMAT_READABLE_BY).to_be_bytes(),
    );
    Ok(db.write_opt(batch, sync)?)
}

/// A version number stored in `meta`.
fn meta_version(
    db: &DB,
    meta: &rocksdb::ColumnFamily,
    key: &[u8],
) -> Result<Option<u32>, StoreError> {
    db.get_cf(meta, key)?
        .map(|bytes| {
            codec::decode_counter(&bytes)
                .ok()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or(StoreError::Corrupt(CodecError::InvalidField {
                    what: "meta",
                    field: "format version",
                }))
        })
        .transpose()
}

/// Opens a database of this build's format or an older one (raising it to
/// this build's format, rewriting what must be rewritten first), and a
/// newer one that says this build can still read it (`format_readable_by`:
/// a rollback; it is left as it is); refuses any other newer one. Stamps a
/// new one.
fn check_format(db: &DB, path: &Path) -> Result<(), StoreError> {
    let meta = cf(db, CF_META)?;
    let sync = synced();
    let Some(found) = meta_version(db, meta, META_FORMAT_VERSION)? else {
        return stamp_format(db, meta, &sync);
    };
    if found > FORMAT_VERSION {
        // Before format markers had a reader floor, each format was its own.
        let readable_by = meta_version(db, meta, META_READABLE_BY)?.unwrap_or(found);
        if readable_by > FORMAT_VERSION {
            return Err(StoreError::NewerFormat {
                path: path.to_owned(),
                found,
                supported: FORMAT_VERSION,
            });
        }
        tracing::warn!(
            found,
            readable_by,
            this = FORMAT_VERSION,
            path = %path.display(),
            "the database was written by a newer build that keeps it readable by this one (a rollback): opened as it is"
        );
        return Ok(());
    }
    if found < FORMAT_VERSION {
        if found < FORMAT_SHORT_FINGERPRINTS {
            shorten_fingerprint_keys(db, path)?;
        }
        // Everything else reads as is; the marker moves.
        stamp_format(db, meta, &sync)?;
        tracing::info!(from = found, to = FORMAT_VERSION, path = %path.display(), "raised the database's format version");
    } else if meta_version(db, meta, META_READABLE_BY)?.is_none() {
        stamp_format(db, meta, &sync)?;
    }
    Ok(())
}

/// Whether the last shutdown was clean, removing the marker (a crash from
/// here on leaves none).
fn take_clean_marker(db: &DB) -> Result<bool, StoreError> {
    let meta = cf(db, CF_META)?;
    let sync = synced();
    let was_clean = db.get_cf(meta, META_CLEAN_SHUTDOWN)?.is_some();
    if was_clean {
        let mut batch = WriteBatch::default();
        batch.delete_cf(meta, META_CLEAN_SHUTDOWN);
        db.write_opt(batch, &sync)?;
    }
    Ok(was_clean)
}

/// The writer thread and the channel that feeds it.
fn start_writer(
    db: &Arc<DB>,
    filters: &Arc<Written<KeyFilter>>,
    path: &Path,
    options: &StoreOptions,
) -> Result<(mpsc::Sender<Command>, JoinHandle<()>), StoreError> {
    let (commands, receiver) = mpsc::channel(options.queue_depth.max(1));
    let writer_db = Arc::clone(db);
    let writer_filters = Arc::clone(filters);
    let max_group = options.max_group.max(1);
    let recent_capacity = options.recent_writes;
    let space = writer::SpaceGuard {
        path: path.to_path_buf(),
        reserve: options.min_free_bytes,
    };
    let writer = std::thread::Builder::new()
        .name("cardvault-writer".into())
        .spawn(move || {
            writer::run(
                &writer_db,
                receiver,
                max_group,
                &space,
                recent_capacity,
                &writer_filters,
            );
        })
        .map_err(|e| StoreError::Backend(format!("cannot start writer thread: {e}")))?;
    Ok((commands, writer))
}

/// One thread per filtered column family, adding the stored keys.
fn start_filter_scans(
    db: &Arc<DB>,
    filters: &Arc<Written<KeyFilter>>,
    stop: &Arc<AtomicBool>,
) -> Result<Vec<JoinHandle<()>>, StoreError> {
    let mut filter_scans = Vec::with_capacity(2);
    for cf_name in [CF_FINGERPRINTS, CF_TOKENS] {
        let (scan_db, scan_filters, scan_stop) =
            (Arc::clone(db), Arc::clone(filters), Arc::clone(stop));
        let scan = std::thread::Builder::new()
            .name("cardvault-filter".into())
            .spawn(move || fill_filter(&scan_db, cf_name, scan_filters.of(cf_name), &scan_stop))
            .map_err(|e| StoreError::Backend(format!("cannot start filter thread: {e}")))?;
        filter_scans.push(scan);
    }
    Ok(filter_scans)
}
