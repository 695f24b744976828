//! The RocksDB backend of [`Store`], the embedded default: the only module
//! that touches RocksDB (docs/ARCHITECTURE.md, "Storage").
//!
//! Column families: `tokens` (tenant ‖ token → [`TokenEntry`]), `fingerprints`
//! (tenant ‖ HMAC(PAN) → token), `keys` (wrapped data keys and their
//! encryption counters), `meta` (on-disk format version, clean-shutdown
//! marker), `expiry` (expiring tokens by time) and `sessions` (collection
//! session id → sweep time ‖ record). Reads go straight to RocksDB from any thread. Every write goes
//! through one writer thread fed by a channel ([`writer`]): it makes
//! check-then-insert atomic without locks, and it commits whatever queued up
//! while the previous sync ran as one synced `WriteBatch` (group commit). A
//! write is acknowledged only after its batch is in a synced WAL.

pub mod ceiling;
mod key_filter;
mod open;
mod sessions;
mod transfer;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use rocksdb::{DB, IteratorMode, WriteBatch, WriteOptions};
use tokio::sync::{mpsc, oneshot};

use super::codec::{self, CodecError, KeyRecord, KeysEntry, TokenEntry};
use super::{
    Checkpoint, Insert, InsertOutcome, ReadMark, Reseal, SessionCompletion, Store, StoreError,
    StoredKeys,
};
use crate::crypto::{Fingerprint, KeyLabel};
use crate::domain::{Expiry, TenantId, Token};

use key_filter::{KeyFilter, key_digest};
pub use open::StoreOptions;
use sessions::{session_record, session_value};
use writer::{Command, Written};

/// The on-disk format this build writes. A database with a newer one is
/// refused; an older one is raised to it at open. 2: key records of format
/// 3 (change time, a second wrapping during a KEK rotation, destroyed
/// versions) and re-sealing checkpoints — a build of format 1 must not
/// open such a database. 3: expiring tokens (an entry flag and the
/// `expiry` column family). 4: 128-bit fingerprints in the index keys and
/// token entries of format 2 ([`codec::ENTRY_FORMAT_V2`]); opening an older
/// database rewrites its index keys ([`shorten_fingerprint_keys`]), and its
/// format-1 entries read as they are until rewritten.
pub const FORMAT_VERSION: u32 = 4;

/// The oldest format whose builds can read and write a database of this
/// build's format, recorded in it (`format_readable_by`): a rollback to
/// such a build opens the database unchanged. A format change that only
/// adds (a column family, a meta key, an entry flag old builds ignore)
/// keeps the previous value, so one release can always be rolled back;
/// one that changes what old builds read raises it. docs/upgrade.md.
pub const FORMAT_READABLE_BY: u32 = 4;

/// The first format with 128-bit fingerprint keys.
const FORMAT_SHORT_FINGERPRINTS: u32 = 4;

const CF_TOKENS: &str = "tokens";
const CF_FINGERPRINTS: &str = "fingerprints";
const CF_KEYS: &str = "keys";
const CF_META: &str = "meta";
/// Expiring tokens by expiry time (`codec::expiry_key`), for the sweep.
const CF_EXPIRY: &str = "expiry";
/// Collection sessions by id: sweep time (u64 BE) ‖ the session record.
const CF_SESSIONS: &str = "sessions";
const COLUMN_FAMILIES: [&str; 6] = [
    CF_TOKENS,
    CF_FINGERPRINTS,
    CF_KEYS,
    CF_META,
    CF_EXPIRY,
    CF_SESSIONS,
];

const META_FORMAT_VERSION: &[u8] = b"format_version";
const META_READABLE_BY: &[u8] = b"format_readable_by";
const META_CLEAN_SHUTDOWN: &[u8] = b"clean_shutdown";

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> StoreError {
        StoreError::Backend(e.into_string())
    }
}

/// An open RocksDB store with its writer thread.
pub struct RocksStore {
    path: PathBuf,
    db: Arc<DB>,
    commands: mpsc::Sender<Command>,
    writer: Option<JoinHandle<()>>,
    /// In-memory filters over the `fingerprints` and `tokens` keys
    /// ([`key_filter`]): a lookup of a key never written skips RocksDB.
    filters: Arc<Written<KeyFilter>>,
    /// The threads (one per column family) that add the stored keys to
    /// `filters` at open, and their stop flag (raised when the store
    /// closes first).
    filter_scans: Vec<JoinHandle<()>>,
    stop_filter_scan: Arc<AtomicBool>,
    was_clean: bool,
    /// When the session sweep must next walk the `sessions` column family.
    sessions_due: sessions::SweepSchedule,
}

impl RocksStore {
    /// Whether both key filters hold every stored key (the scan at open
    /// ended), so lookups of keys never written skip RocksDB.
    pub fn key_filters_ready(&self) -> bool {
        self.filters.fingerprints.is_ready() && self.filters.tokens.is_ready()
    }

    /// Point reads of `keys` in `cf_name`, one batched lookup for more
    /// than one key, each value found passed through `decode`; answers in
    /// input order. RocksDB's batched lookup wants its keys sorted: an
    /// index is sorted, read, and the answers put back.
    /// Keys the column family's key filter rules out are answered `None`
    /// without a read.
    fn read_many<T>(
        &self,
        cf_name: &str,
        keys: &[Vec<u8>],
        decode: impl Fn(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<Option<T>>, StoreError> {
        if let [key] = keys {
            return Ok(vec![self.read_one(cf_name, key, decode)?]);
        }
        let filter = self.filters.of(cf_name);
        let handle = cf(&self.db, cf_name)?;
        let mut order: Vec<usize> = (0..keys.len())
            .filter(|&i| !filter.surely_absent(key_digest(&keys[i])))
            .collect();
        order.sort_unstable_by(|&a, &b| keys[a].cmp(&keys[b]));
        let values = self
            .db
            .batched_multi_get_cf(handle, order.iter().map(|&i| &keys[i]), true);
        let mut out: Vec<Option<T>> = keys.iter().map(|_| None).collect();
        for (&i, value) in order.iter().zip(values) {
            if let Some(bytes) = value? {
                out[i] = Some(decode(&bytes)?);
            }
        }
        Ok(out)
    }

    /// One point read of `key` in `cf_name` (`CF_TOKENS` or
    /// `CF_FINGERPRINTS`), the value found passed through `decode`; a key
    /// the column family's key filter rules out is `None` without a read.
    fn read_one<T>(
        &self,
        cf_name: &str,
        key: &[u8],
        decode: impl Fn(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        if self.filters.of(cf_name).surely_absent(key_digest(key)) {
            return Ok(None);
        }
        let value = self.db.get_pinned_cf(cf(&self.db, cf_name)?, key)?;
        value.map(|bytes| decode(&bytes)).transpose()
    }

    /// Reads every wrapped data key and counter (synchronously, for
    /// opening a vault outside an async context).
    pub fn read_keys(&self) -> Result<StoredKeys, StoreError> {
        let mut stored = StoredKeys::default();
        for item in self
            .db
            .iterator_cf(cf(&self.db, CF_KEYS)?, IteratorMode::Start)
        {
            let (key, value) = item?;
            match codec::decode_keys_key(&key)? {
                KeysEntry::Wrapped(label) => stored.keys.push((label, KeyRecord::decode(&value)?)),
                KeysEntry::Counter(label) => stored
                    .counters
                    .push((label, codec::decode_counter(&value)?)),
            }
        }
        Ok(stored)
    }

    /// Writes key records in one synced batch, synchronously — for opening
    /// a vault outside an async context, before any other write can race
    /// it (the records a finished or abandoned KEK rotation leaves).
    pub fn write_keys_now(&self, keys: &[(KeyLabel, KeyRecord)]) -> Result<(), StoreError> {
        let keys_cf = cf(&self.db, CF_KEYS)?;
        let mut batch = WriteBatch::default();
        for (label, record) in keys {
            batch.put_cf(keys_cf, codec::wrapped_key_key(label), record.encode());
        }
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    /// Sends a command to the writer and waits for its answer, which comes
    /// only after the group holding it is synced.
    async fn ask<T>(
        &self,
        command: impl FnOnce(writer::Reply<T>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        outcome.await.map_err(|_| StoreError::WriterGone)?
    }
}

#[async_trait::async_trait]
impl Store for RocksStore {
    fn describe(&self) -> String {
        format!("rocksdb at {}", self.path.display())
    }

    /// RocksDB's checkpoint: the live files hard-linked (copied across
    /// file systems), the memtables flushed first, a consistent point.
    fn checkpoint_into(&self, dir: &std::path::Path) -> Result<(), StoreError> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }

    fn was_clean_shutdown(&self) -> bool {
        self.was_clean
    }

    async fn get_entry(
        &self,
        tenant: &TenantId,
        token: &Token,
    ) -> Result<Option<TokenEntry>, StoreError> {
        let key = codec::token_key(tenant, token);
        match self.db.get_pinned_cf(cf(&self.db, CF_TOKENS)?, key)? {
            Some(bytes) => Ok(Some(TokenEntry::decode(&bytes, token)?)),
            None => Ok(None),
        }
    }

    fn read_mark(&self) -> Option<ReadMark> {
        Some(ReadMark(self.db.latest_sequence_number()))
    }

    async fn get_token_for(
        &self,
        tenant: &TenantId,
        fingerprint: &Fingerprint,
    ) -> Result<Option<Token>, StoreError> {
        let key = codec::fingerprint_key(tenant, fingerprint);
        self.read_one(CF_FINGERPRINTS, &key, fingerprint_entry_token)
    }

    async fn get_tokens_for(
        &self,
        tenant: &TenantId,
        fingerprints: &[Fingerprint],
    ) -> Result<Vec<Option<Token>>, StoreError> {
        let keys: Vec<Vec<u8>> = fingerprints
            .iter()
            .map(|fp| codec::fingerprint_key(tenant, fp))
            .collect();
        self.read_many(CF_FINGERPRINTS, &keys, fingerprint_entry_token)
    }

    async fn tokens_taken(
        &self,
        tenant: &TenantId,
        tokens: &[Token],
    ) -> Result<Vec<bool>, StoreError> {
        let keys: Vec<Vec<u8>> = tokens
            .iter()
            .map(|token| codec::token_key(tenant, token))
            .collect();
        let found = self.read_many(CF_TOKENS, &keys, |_| Ok(()))?;
        Ok(found.iter().map(Option::is_some).collect())
    }

    async fn load_keys(&self) -> Result<StoredKeys, StoreError> {
        self.read_keys()
    }

    async fn insert(&self, items: Vec<Insert>) -> Result<Vec<InsertOutcome>, StoreError> {
        self.ask(|reply| Command::Insert { items, reply }).await
    }

    async fn update_expiry(
        &self,
        tenant: &TenantId,
        token: &Token,
        expiry: Expiry,
    ) -> Result<bool, StoreError> {
        self.ask(|reply| Command::UpdateExpiry {
            tenant: tenant.clone(),
            token: *token,
            expiry,
            reply,
        })
        .await
    }

    async fn delete(&self, tenant: &TenantId, token: &Token) -> Result<bool, StoreError> {
        self.ask(|reply| Command::Delete {
            tenant: tenant.clone(),
            token: *token,
            reply,
        })
        .await
    }

    async fn put_keys(
        &self,
        keys: Vec<(KeyLabel, KeyRecord)>,
        counters: Vec<(KeyLabel, u64)>,
    ) -> Result<(), StoreError> {
        self.ask(|reply| Command::PutKeys {
            keys,
            counters,
            reply,
        })
        .await
    }

    async fn scan_entries(
        &self,
        tenant: &TenantId,
        after: Option<Token>,
        limit: usize,
    ) -> Result<Vec<(Token, TokenEntry)>, StoreError> {
        // An iteration of thousands of entries would hold a runtime worker
        // for milliseconds (on 2 cores, half the request capacity): it runs
        // on the blocking pool instead.
        let db = Arc::clone(&self.db);
        let prefix = codec::tenant_prefix(tenant);
        let start = match &after {
            Some(token) => codec::token_key(tenant, token),
            None => prefix.clone(),
        };
        tokio::task::spawn_blocking(move || scan(&db, &prefix, &start, after, limit))
            .await
            .map_err(|e| StoreError::Backend(format!("scan task failed: {e}")))?
    }

    async fn reseal(
        &self,
        tenant: &TenantId,
        items: Vec<Reseal>,
        counters: Vec<(KeyLabel, u64)>,
        checkpoint: Checkpoint,
    ) -> Result<usize, StoreError> {
        self.ask(|reply| Command::Reseal {
            tenant: tenant.clone(),
            items,
            counters,
            checkpoint,
            reply,
        })
        .await
    }

    async fn checkpoint(&self, tenant: &TenantId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db
            .get_cf(cf(&self.db, CF_META)?, codec::checkpoint_key(tenant))?)
    }

    async fn checkpoints(&self) -> Result<Vec<TenantId>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(cf(&self.db, CF_META)?, IteratorMode::Start)
        {
            let (key, _) = item?;
            if let Some(tenant) = codec::decode_checkpoint_key(&key) {
                out.push(tenant);
            }
        }
        Ok(out)
    }

    async fn expired(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, TenantId, Token)>, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for item in db.iterator_cf(cf(&db, CF_EXPIRY)?, IteratorMode::Start) {
                let (key, _) = item?;
                let (at, tenant, token) = codec::decode_expiry_key(&key)?;
                if at > now_ms || out.len() >= limit {
                    break;
                }
                out.push((at, tenant, token));
            }
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("expiry scan task failed: {e}")))?
    }

    async fn delete_expired(
        &self,
        items: Vec<(u64, TenantId, Token)>,
    ) -> Result<usize, StoreError> {
        self.ask(|reply| Command::DeleteExpired { items, reply })
            .await
    }

    async fn delete_tenant(
        &self,
        tenant: &TenantId,
        keys: Vec<(KeyLabel, KeyRecord)>,
    ) -> Result<u64, StoreError> {
        self.ask(|reply| Command::DeleteTenant {
            tenant: tenant.clone(),
            keys,
            reply,
        })
        .await
    }

    async fn get_session(&self, id: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.session(id)
    }

    async fn swap_session(
        &self,
        id: &[u8],
        expected: Option<&[u8]>,
        new: Option<(u64, Vec<u8>)>,
    ) -> Result<bool, StoreError> {
        self.swap(id, expected, new).await
    }

    async fn insert_completing(
        &self,
        item: Insert,
        session: SessionCompletion,
    ) -> Result<(InsertOutcome, bool), StoreError> {
        self.insert_and_complete(item, session).await
    }

    async fn sweep_sessions(&self, now_ms: u64, limit: usize) -> Result<usize, StoreError> {
        self.sweep(now_ms, limit).await
    }

    async fn compact(&self) -> Result<(), StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            for name in COLUMN_FAMILIES {
                let handle = cf(&db, name)?;
                db.flush_cf(handle)?;
                let mut options = rocksdb::CompactOptions::default();
                options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
                db.compact_range_cf_opt(handle, None::<&[u8]>, None::<&[u8]>, &options);
            }
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Backend(format!("compaction task failed: {e}")))?
    }

    async fn close(mut self: Box<Self>, counters: Vec<(KeyLabel, u64)>) -> Result<(), StoreError> {
        let result = self.ask(|reply| Command::Close { counters, reply }).await;
        self.stop_filter_scan.store(true, Ordering::Relaxed);
        let threads: Vec<JoinHandle<()>> = self
            .writer
            .take()
            .into_iter()
            .chain(self.filter_scans.drain(..))
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
        result
    }

    async fn flush(&self) -> Result<(), StoreError> {
        for name in COLUMN_FAMILIES {
            self.db.flush_cf(cf(&self.db, name)?)?;
        }
        Ok(())
    }
}

impl Drop for RocksStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer's loop once it has committed
        // what is queued; wait for it so the database closes after it.
        let (closed, _) = mpsc::channel(1);
        self.commands = closed;
        self.stop_filter_scan.store(true, Ordering::Relaxed);
        let writer = self.writer.take();
        for thread in writer.into_iter().chain(self.filter_scans.drain(..)) {
            let _ = thread.join();
        }
    }
}

/// Up to `limit` entries under `prefix` from `start`, skipping `after`.
fn scan(
    db: &DB,
    prefix: &[u8],
    start: &[u8],
    after: Option<Token>,
    limit: usize,
) -> Result<Vec<(Token, TokenEntry)>, StoreError> {
    let mut out = Vec::with_capacity(limit.min(4096));
    let iter = db.iterator_cf(
        cf(db, CF_TOKENS)?,
        IteratorMode::From(start, rocksdb::Direction::Forward),
    );
    for item in iter {
        let (key, value) = item?;
        let Some(digits) = key.strip_prefix(prefix) else {
            break;
        };
        let token = Token::parse_bytes(digits).map_err(|_| {
            StoreError::Corrupt(CodecError::InvalidField {
                what: "token key",
                field: "token",
            })
        })?;
        if after.as_ref() == Some(&token) {
            continue;
        }
        let entry = TokenEntry::decode(&value, &token)?;
        out.push((token, entry));
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// The token a `fingerprints` entry holds.
fn fingerprint_entry_token(bytes: &[u8]) -> Result<Token, StoreError> {
    Token::parse_bytes(bytes).map_err(|_| {
        StoreError::Corrupt(CodecError::InvalidField {
            what: "fingerprint entry",
            field: "token",
        })
    })
}

fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, StoreError> {
    db.cf_handle(name)
        .ok_or_else(|| StoreError::Backend(format!("column family {name} is missing")))
}

fn synced() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    opts
}
