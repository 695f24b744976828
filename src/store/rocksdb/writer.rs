//! The single writer thread. It takes every command queued since its last
//! commit, applies them in order to one `WriteBatch` — checking each against
//! the database and against earlier commands of the same group (an overlay)
//! — commits the batch with a synced WAL write, and only then answers each
//! sender. One thread means check-then-insert needs no locks; one write per
//! group means concurrent callers share an fsync.
//!
//! Because it is the only writer, it also knows every fingerprint and token
//! written lately ([`Recent`]): an insert whose caller already found its
//! fingerprint, or its drawn token, absent (at a RocksDB sequence number,
//! [`ReadMark`]) needs no second lookup unless a write since then touched
//! that key. Each new PAN then costs two point lookups that miss (the
//! fingerprint and the token), both made by the caller's task on any core,
//! none by this thread — the bottleneck of batch tokenization; once the
//! store's key filters are ready ([`super::key_filter`]) each of them is a
//! probe of an in-memory filter. This thread adds every key it puts to
//! those filters before the write that holds it.
//!
//! A group's token and fingerprint writes reach the `WriteBatch` sorted by
//! key ([`Group::apply_deferred`]): RocksDB's memtable skiplist reuses the
//! previous insert's position for the next key, so sorted inserts skip most
//! of the search that random keys (tokens and HMACs) pay in full — that
//! search was a third of the vault's CPU under batch tokenization.

use foldhash::{HashMap, HashMapExt as _};

use rocksdb::{DB, WriteBatch};
use tokio::sync::{mpsc, oneshot};

use super::key_filter::{KeyFilter, key_digest};
use super::{
    CF_EXPIRY, CF_FINGERPRINTS, CF_KEYS, CF_META, CF_SESSIONS, CF_TOKENS, META_CLEAN_SHUTDOWN,
    StoreError, cf, fingerprint_entry_token, session_record, session_value, synced,
};
use crate::crypto::KeyLabel;
use crate::domain::{Expiry, TenantId, Token};
use crate::store::codec::{self, KeyRecord, TokenEntry};
use crate::store::{Checkpoint, Insert, InsertOutcome, ReadMark, Reseal, SessionCompletion};

/// Where the writer sends one command's answer.
pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A request to the writer.
pub(super) enum Command {
    Insert {
        items: Vec<Insert>,
        reply: Reply<Vec<InsertOutcome>>,
    },
    UpdateExpiry {
        tenant: TenantId,
        token: Token,
        expiry: Expiry,
        reply: Reply<bool>,
    },
    Delete {
        tenant: TenantId,
        token: Token,
        reply: Reply<bool>,
    },
    PutKeys {
        keys: Vec<(KeyLabel, KeyRecord)>,
        counters: Vec<(KeyLabel, u64)>,
        reply: Reply<()>,
    },
    Reseal {
        tenant: TenantId,
        items: Vec<Reseal>,
        counters: Vec<(KeyLabel, u64)>,
        checkpoint: Checkpoint,
        reply: Reply<usize>,
    },
    DeleteTenant {
        tenant: TenantId,
        keys: Vec<(KeyLabel, KeyRecord)>,
        reply: Reply<u64>,
    },
    DeleteExpired {
        items: Vec<(u64, TenantId, Token)>,
        reply: Reply<usize>,
    },
    Close {
        counters: Vec<(KeyLabel, u64)>,
        reply: Reply<()>,
    },
    /// One insert and the session it completes, in the same group.
    InsertCompleting {
        item: Box<Insert>,
        session: SessionCompletion,
        reply: Reply<(InsertOutcome, bool)>,
    },
    /// A collection session's compare-and-swap: `value` is the stored
    /// bytes (sweep time ‖ record), `None` deletes.
    SwapSession {
        id: Vec<u8>,
        expected: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        reply: Reply<bool>,
    },
}

/// An answer held back until the group's write is synced.
enum Pending {
    Inserted(Reply<Vec<InsertOutcome>>, Vec<InsertOutcome>),
    Completed(Reply<(InsertOutcome, bool)>, (InsertOutcome, bool)),
    Flag(Reply<bool>, bool),
    Count(Reply<usize>, usize),
    Total(Reply<u64>, u64),
    Done(Reply<()>),
}

/// Writes of the current group not yet in the database: the value's index
/// in [`Group::values`], `None` for a delete.
#[derive(Default)]
struct Overlay {
    keys: Written<HashMap<Vec<u8>, Option<usize>>>,
    counters: HashMap<Vec<u8>, u64>,
    /// Collection sessions written by the group (`None`: deleted).
    sessions: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

/// Keys written since `horizon` (a sequence number), with the sequence
/// number that covers their write, each by a 64-bit digest
/// ([`key_digest`]). No allocation per entry, and two keys sharing a
/// digest only cost a real lookup. Cleared, and the horizon moved to the
/// present, when it holds `capacity` entries.
pub(super) struct Recent {
    written: HashMap<u64, u64>,
    horizon: u64,
    capacity: usize,
}

impl Recent {
    pub(super) fn new(now: u64, capacity: usize) -> Recent {
        Recent {
            written: HashMap::with_capacity(capacity.min(1 << 16)),
            horizon: now,
            capacity,
        }
    }

    /// Whether a key found absent by a read that started at `mark` is
    /// certainly still absent: every write since `mark` is known, and none
    /// of them wrote a key with its digest.
    fn still_absent(&self, digest: u64, mark: ReadMark) -> bool {
        mark.0 >= self.horizon && self.written.get(&digest).is_none_or(|seq| *seq <= mark.0)
    }

    /// Records the digests of keys committed in a write that ended at `seq`.
    fn record(&mut self, written: &[u64], seq: u64) {
        if self.written.len() + written.len() > self.capacity {
            self.written.clear();
            self.horizon = seq;
            return;
        }
        for key in written {
            self.written.insert(*key, seq);
        }
    }
}

/// A `tokens` or `fingerprints` write waiting to join the batch in key order.
struct Deferred {
    /// `CF_TOKENS` or `CF_FINGERPRINTS`.
    cf_name: &'static str,
    key: Vec<u8>,
    /// The value's index in [`Group::values`]; `None` deletes.
    value: Option<usize>,
}

struct Group<'a> {
    db: &'a DB,
    batch: WriteBatch,
    overlay: Overlay,
    /// Token and fingerprint writes not yet in `batch`, in command order.
    deferred: Vec<Deferred>,
    /// The values of the group's token and fingerprint puts, one copy
    /// each, which the overlay and the deferred writes refer to by index.
    values: Vec<Vec<u8>>,
    recent: &'a Written<Recent>,
    /// Filters over every stored key, added to before each commit.
    filters: &'a Written<KeyFilter>,
    /// Digests of the fingerprint and token keys this group put, for
    /// [`Recent::record`].
    put: Written<Vec<u64>>,
}

/// One value for each kind of key whose absence a caller may vouch for.
#[derive(Default)]
pub(super) struct Written<T> {
    pub(super) fingerprints: T,
    pub(super) tokens: T,
}

impl<T> Written<T> {
    /// The value for `CF_TOKENS` or (any other name) `CF_FINGERPRINTS`.
    pub(super) fn of(&self, cf_name: &str) -> &T {
        if cf_name == CF_TOKENS {
            &self.tokens
        } else {
            &self.fingerprints
        }
    }

    fn of_mut(&mut self, cf_name: &str) -> &mut T {
        if cf_name == CF_TOKENS {
            &mut self.tokens
        } else {
            &mut self.fingerprints
        }
    }
}

impl Group<'_> {
    fn read(&self, cf_name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(slot) = self.overlay.keys.of(cf_name).get(key) {
            return Ok(slot.map(|i| self.values[i].clone()));
        }
        // This thread added every key it committed before committing it.
        if self.filters.of(cf_name).surely_absent(key_digest(key)) {
            return Ok(None);
        }
        Ok(self.db.get_cf(cf(self.db, cf_name)?, key)?)
    }

    /// Whether `key` of `CF_TOKENS` or `CF_FINGERPRINTS`, which the caller
    /// found absent in a read after `mark`, is certainly still absent: no
    /// earlier command of this group wrote it, and no commit since `mark`
    /// did by the writer's record. `false` without a mark.
    fn vouched_absent(&self, cf_name: &str, key: &[u8], mark: Option<ReadMark>) -> bool {
        let Some(mark) = mark else {
            return false;
        };
        !self.overlay.keys.of(cf_name).contains_key(key)
            && self.recent.of(cf_name).still_absent(key_digest(key), mark)
    }

    fn put(
        &mut self,
        cf_name: &'static str,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.write(cf_name, key, Some(value))
    }

    fn delete(&mut self, cf_name: &'static str, key: Vec<u8>) -> Result<(), StoreError> {
        self.write(cf_name, key, None)
    }

    /// A put (`Some`) or delete (`None`): token and fingerprint writes are
    /// deferred (and seen by [`Group::read`] through the overlay), the
    /// rest go to the batch at once.
    fn write(
        &mut self,
        cf_name: &'static str,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        if cf_name != CF_TOKENS && cf_name != CF_FINGERPRINTS {
            let handle = cf(self.db, cf_name)?;
            match value {
                Some(value) => self.batch.put_cf(handle, &key, &value),
                None => self.batch.delete_cf(handle, &key),
            }
            return Ok(());
        }
        let slot = value.map(|value| {
            self.values.push(value);
            self.values.len() - 1
        });
        if slot.is_some() {
            self.put.of_mut(cf_name).push(key_digest(&key));
        }
        self.overlay.keys.of_mut(cf_name).insert(key.clone(), slot);
        self.deferred.push(Deferred {
            cf_name,
            key,
            value: slot,
        });
        Ok(())
    }

    /// Moves the deferred writes into the batch, sorted by column family
    /// and key. The sort is stable, so writes of one key keep their order;
    /// writes of different keys commute. Called before anything that must
    /// come after them in the batch (a tenant's range delete) and at the
    /// end of the group.
    fn apply_deferred(&mut self) -> Result<(), StoreError> {
        // Column families apart (which comes first does not matter), then
        // keys in order.
        self.deferred.sort_by(|a, b| {
            (a.cf_name == CF_TOKENS, &a.key).cmp(&(b.cf_name == CF_TOKENS, &b.key))
        });
        for write in self.deferred.drain(..) {
            let handle = cf(self.db, write.cf_name)?;
            match write.value {
                Some(i) => self.batch.put_cf(handle, &write.key, &self.values[i]),
                None => self.batch.delete_cf(handle, &write.key),
            }
        }
        Ok(())
    }

    /// A collection session's compare-and-swap ([`Store::swap_session`]):
    /// writes `value` (sweep time ‖ record; `None` deletes) only if the
    /// record stored, or written earlier in this group, is `expected`.
    ///
    /// [`Store::swap_session`]: crate::store::Store::swap_session
    fn swap_session(
        &mut self,
        id: Vec<u8>,
        expected: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
    ) -> Result<bool, StoreError> {
        let current = match self.overlay.sessions.get(&id) {
            Some(written) => written.clone(),
            None => self.db.get_cf(cf(self.db, CF_SESSIONS)?, &id)?,
        };
        let record = current.as_deref().map(session_record);
        if record != expected.as_deref() {
            return Ok(false);
        }
        self.write(CF_SESSIONS, id.clone(), value.clone())?;
        self.overlay.sessions.insert(id, value);
        Ok(true)
    }

    /// [`Store::insert_completing`]: the insert, then the session's swap
    /// with the record of the token the card ended up with.
    ///
    /// [`Store::insert_completing`]: crate::store::Store::insert_completing
    fn insert_completing(
        &mut self,
        item: Insert,
        session: SessionCompletion,
    ) -> Result<(InsertOutcome, bool), StoreError> {
        let drafted = item.token;
        let outcome = self
            .insert(vec![item])?
            .pop()
            .unwrap_or(InsertOutcome::TokenCollision);
        let Some(token) = outcome.token(drafted) else {
            return Ok((outcome, false));
        };
        let value = session_value(session.sweep_at, &(session.record)(&token));
        let swapped = self.swap_session(session.id, Some(session.expected), Some(value))?;
        Ok((outcome, swapped))
    }

    fn count(&mut self, label: &KeyLabel, sealed: u64) {
        let slot = self
            .overlay
            .counters
            .entry(codec::counter_key(label))
            .or_insert(0);
        *slot = (*slot).max(sealed);
    }

    fn insert(&mut self, items: Vec<Insert>) -> Result<Vec<InsertOutcome>, StoreError> {
        let mut outcomes = Vec::with_capacity(items.len());
        for item in items {
            let fp_key = item
                .fingerprint
                .map(|fp| codec::fingerprint_key(&item.tenant, &fp));
            if let Some((label, sealed)) = &item.counter {
                // The seal happened whatever the outcome: count it.
                self.count(label, *sealed);
            }
            if let Some(fp_key) = &fp_key
                && !self.vouched_absent(CF_FINGERPRINTS, fp_key, item.fingerprint_absent_at)
                && let Some(existing) = self.read(CF_FINGERPRINTS, fp_key)?
            {
                outcomes.push(InsertOutcome::Existing(fingerprint_entry_token(&existing)?));
                continue;
            }
            let token_key = codec::token_key(&item.tenant, &item.token);
            if !self.vouched_absent(CF_TOKENS, &token_key, item.token_absent_at)
                && self.read(CF_TOKENS, &token_key)?.is_some()
            {
                outcomes.push(InsertOutcome::TokenCollision);
                continue;
            }
            self.put(CF_TOKENS, token_key, item.entry.encode(&item.token))?;
            if let Some(at) = item.entry.meta.expires_ms {
                self.put(
                    CF_EXPIRY,
                    codec::expiry_key(at, &item.tenant, &item.token),
                    Vec::new(),
                )?;
            }
            if let Some(fp_key) = fp_key {
                self.put(CF_FINGERPRINTS, fp_key, item.token.as_bytes().to_vec())?;
            }
            outcomes.push(InsertOutcome::Inserted);
        }
        Ok(outcomes)
    }

    fn update_expiry(
        &mut self,
        tenant: &TenantId,
        token: &Token,
        expiry: Expiry,
    ) -> Result<bool, StoreError> {
        let key = codec::token_key(tenant, token);
        let Some(bytes) = self.read(CF_TOKENS, &key)? else {
            return Ok(false);
        };
        let mut entry = TokenEntry::decode(&bytes, token)?;
        entry.meta.expiry = Some(expiry);
        self.put(CF_TOKENS, key, entry.encode(token))?;
        Ok(true)
    }

    fn delete_token(&mut self, tenant: &TenantId, token: &Token) -> Result<bool, StoreError> {
        let key = codec::token_key(tenant, token);
        let Some(bytes) = self.read(CF_TOKENS, &key)? else {
            return Ok(false);
        };
        let entry = TokenEntry::decode(&bytes, token)?;
        self.delete(CF_TOKENS, key)?;
        if let Some(at) = entry.meta.expires_ms {
            self.delete(CF_EXPIRY, codec::expiry_key(at, tenant, token))?;
        }
        if let Some(fp) = entry.fingerprint {
            let fp_key = codec::fingerprint_key(tenant, &fp);
            // Remove the index entry only if it still points at this token.
            if self.read(CF_FINGERPRINTS, &fp_key)?.as_deref() == Some(token.as_bytes()) {
                self.delete(CF_FINGERPRINTS, fp_key)?;
            }
        }
        Ok(true)
    }

    /// Deletes expired tokens that still carry their expiry time, and the
    /// expiry index entries in any case.
    fn delete_expired(&mut self, items: Vec<(u64, TenantId, Token)>) -> Result<usize, StoreError> {
        let mut deleted = 0;
        for (at, tenant, token) in items {
            let key = codec::token_key(&tenant, &token);
            let still = match self.read(CF_TOKENS, &key)? {
                Some(bytes) => TokenEntry::decode(&bytes, &token)?.meta.expires_ms == Some(at),
                None => false,
            };
            if still && self.delete_token(&tenant, &token)? {
                deleted += 1;
            }
            self.delete(CF_EXPIRY, codec::expiry_key(at, &tenant, &token))?;
        }
        Ok(deleted)
    }

    /// Compare-and-swap of re-sealed records, then the checkpoint.
    fn reseal(
        &mut self,
        tenant: &TenantId,
        items: Vec<Reseal>,
        counters: Vec<(KeyLabel, u64)>,
        checkpoint: Checkpoint,
    ) -> Result<usize, StoreError> {
        for (label, sealed) in &counters {
            self.count(label, *sealed);
        }
        let mut replaced = 0;
        for item in items {
            let key = codec::token_key(tenant, &item.token);
            let Some(bytes) = self.read(CF_TOKENS, &key)? else {
                continue;
            };
            let mut entry = TokenEntry::decode(&bytes, &item.token)?;
            if entry.record != item.expected {
                continue;
            }
            entry.record = item.record;
            if let Some((old, new)) = item.fingerprint
                && entry.fingerprint == Some(old)
            {
                let old_key = codec::fingerprint_key(tenant, &old);
                if self.read(CF_FINGERPRINTS, &old_key)?.as_deref() == Some(item.token.as_bytes()) {
                    self.delete(CF_FINGERPRINTS, old_key)?;
                }
                let new_key = codec::fingerprint_key(tenant, &new);
                match self.read(CF_FINGERPRINTS, &new_key)? {
                    None => {
                        self.put(CF_FINGERPRINTS, new_key, item.token.as_bytes().to_vec())?;
                    }
                    Some(other) if other != item.token.as_bytes() => {
                        tracing::error!(tenant = %tenant, token = %item.token, "fingerprint move found another token under the new fingerprint; index left as it is");
                    }
                    Some(_) => {}
                }
                entry.fingerprint = Some(new);
            }
            self.put(CF_TOKENS, key, entry.encode(&item.token))?;
            replaced += 1;
        }
        let meta = cf(self.db, CF_META)?;
        match checkpoint {
            Checkpoint::Set(bytes) => self
                .batch
                .put_cf(meta, codec::checkpoint_key(tenant), bytes),
            Checkpoint::Clear => self.batch.delete_cf(meta, codec::checkpoint_key(tenant)),
        }
        Ok(replaced)
    }

    /// Range-deletes the tenant's tokens and fingerprints, its counters
    /// and checkpoint; writes `keys`. Counts the tokens first.
    fn delete_tenant(
        &mut self,
        tenant: &TenantId,
        keys: Vec<(KeyLabel, KeyRecord)>,
    ) -> Result<u64, StoreError> {
        let (start, end) = (
            codec::tenant_prefix(tenant),
            codec::tenant_prefix_end(tenant),
        );
        self.apply_deferred()?;
        let tokens_cf = cf(self.db, CF_TOKENS)?;
        let mut count = 0;
        for item in self.db.iterator_cf(
            tokens_cf,
            rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward),
        ) {
            let (key, _) = item?;
            if !key.starts_with(&start) {
                break;
            }
            count += 1;
        }
        self.batch.delete_range_cf(tokens_cf, &start, &end);
        self.batch
            .delete_range_cf(cf(self.db, CF_FINGERPRINTS)?, &start, &end);
        let keys_cf = cf(self.db, CF_KEYS)?;
        for (label, _) in &keys {
            if label.purpose == crate::crypto::KeyPurpose::PanEncryption {
                self.batch.delete_cf(keys_cf, codec::counter_key(label));
            }
        }
        let meta = cf(self.db, CF_META)?;
        self.batch.delete_cf(meta, codec::checkpoint_key(tenant));
        for (label, record) in keys {
            self.put(CF_KEYS, codec::wrapped_key_key(&label), record.encode())?;
        }
        Ok(count)
    }

    fn put_keys(
        &mut self,
        keys: Vec<(KeyLabel, KeyRecord)>,
        counters: Vec<(KeyLabel, u64)>,
    ) -> Result<(), StoreError> {
        for (label, record) in keys {
            self.put(CF_KEYS, codec::wrapped_key_key(&label), record.encode())?;
        }
        for (label, sealed) in counters {
            self.count(&label, sealed);
        }
        Ok(())
    }

    /// Commits the group with one synced write. Counters are written as
    /// the highest value ever committed, so a group whose claims were
    /// overtaken by a later group's never lowers a counter. Returns the
    /// digests of the fingerprints and tokens the write put (for
    /// [`Recent::record`]).
    fn finish(
        mut self,
        committed: &mut HashMap<Vec<u8>, u64>,
    ) -> Result<Written<Vec<u64>>, StoreError> {
        self.apply_deferred()?;
        let keys_cf = cf(self.db, CF_KEYS)?;
        let mut raised = Vec::with_capacity(self.overlay.counters.len());
        for (key, sealed) in self.overlay.counters.drain() {
            let floor = match committed.get(&key) {
                Some(floor) => *floor,
                None => match self.db.get_cf(keys_cf, &key)? {
                    Some(bytes) => codec::decode_counter(&bytes)?,
                    None => 0,
                },
            };
            let value = sealed.max(floor);
            self.batch.put_cf(keys_cf, &key, value.to_be_bytes());
            raised.push((key, value));
        }
        if self.batch.is_empty() {
            return Ok(Written::default());
        }
        // Before the write: no reader may see a key the filters lack.
        self.filters.fingerprints.insert(&self.put.fingerprints);
        self.filters.tokens.insert(&self.put.tokens);
        self.db.write_opt(self.batch, &synced())?;
        committed.extend(raised);
        Ok(self.put)
    }
}

/// Keeps writes away from a full disk: a group is refused while the
/// database's filesystem has less than `reserve` bytes available.
pub(super) struct SpaceGuard {
    pub(super) path: std::path::PathBuf,
    pub(super) reserve: u64,
}

impl SpaceGuard {
    fn check(&self) -> Result<(), StoreError> {
        if self.reserve == 0 {
            return Ok(());
        }
        let stat = rustix::fs::statvfs(&self.path).map_err(|e| {
            StoreError::Backend(format!("cannot stat the database filesystem: {e}"))
        })?;
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        if free < self.reserve {
            metrics::counter!("cardvault_writes_refused_disk_full_total").increment(1);
            return Err(StoreError::DiskFull {
                free,
                reserve: self.reserve,
            });
        }
        Ok(())
    }
}

/// The writer loop: runs until every sender is gone or a `Close` arrives.
pub(super) fn run(
    db: &DB,
    mut commands: mpsc::Receiver<Command>,
    max_group: usize,
    space: &SpaceGuard,
    recent_capacity: usize,
    filters: &Written<KeyFilter>,
) {
    let mut warned_full = false;
    let now = db.latest_sequence_number();
    let mut recent = Written {
        fingerprints: Recent::new(now, recent_capacity),
        tokens: Recent::new(now, recent_capacity),
    };
    // The highest counter values committed so far (this thread is the only
    // writer, so this map is the truth once a key has been written).
    let mut committed_counters = HashMap::new();
    let mut queued = Vec::with_capacity(max_group);
    while let Some(first) = commands.blocking_recv() {
        queued.push(first);
        while queued.len() < max_group {
            match commands.try_recv() {
                Ok(command) => queued.push(command),
                Err(_) => break,
            }
        }
        let mut group = Group {
            db,
            batch: WriteBatch::default(),
            overlay: Overlay::default(),
            deferred: Vec::new(),
            values: Vec::new(),
            recent: &recent,
            filters,
            put: Written::default(),
        };
        let mut pending = Vec::with_capacity(queued.len());
        let mut closing = false;
        for command in queued.drain(..) {
            match command {
                Command::Insert { items, reply } => match group.insert(items) {
                    Ok(outcomes) => pending.push(Pending::Inserted(reply, outcomes)),
                    Err(e) => drop(reply.send(Err(e))),
                },
                Command::UpdateExpiry {
                    tenant,
                    token,
                    expiry,
                    reply,
                } => match group.update_expiry(&tenant, &token, expiry) {
                    Ok(found) => pending.push(Pending::Flag(reply, found)),
                    Err(e) => drop(reply.send(Err(e))),
                },
                Command::Delete {
                    tenant,
                    token,
                    reply,
                } => match group.delete_token(&tenant, &token) {
                    Ok(found) => pending.push(Pending::Flag(reply, found)),
                    Err(e) => drop(reply.send(Err(e))),
                },
                Command::DeleteExpired { items, reply } => match group.delete_expired(items) {
                    Ok(deleted) => pending.push(Pending::Count(reply, deleted)),
                    Err(e) => drop(reply.send(Err(e))),
                },
                Command::PutKeys {
                    keys,
                    counters,
                    reply,
                } => match group.put_keys(keys, counters) {
                    Ok(()) => pending.push(Pending::Done(reply)),
                    Err(e) => drop(reply.send(Err(e))),
                },
                Command::Reseal {
                    tenant,
                    items,
                    counters,
                    checkpoint,
                    reply,
                } => match group.reseal(&tenant, items, counters, checkpoint) {
                    Ok(replaced) => pending.push(Pending::Count(reply, replaced)),
                    Err(e) => drop(reply.send(Err(e))),
                },
                Command::DeleteTenant {
                    tenant,
                    keys,
                    reply,
                } => match group.delete_tenant(&tenant, keys) {
                    Ok(count) => pending.push(Pending::Total(reply, count)),
                    Err(e) => drop(reply.send(Err(e))),
                },
                Command::InsertCompleting {
                    item,
                    session,
                    reply,
                } => match group.insert_completing(*item, session) {
                    Ok(done) => pending.push(Pending::Completed(reply, done)),
                    Err(e) => drop(reply.send(Err(e))),
                },
                Command::SwapSession {
                    id,
                    expected,
                    value,
                    reply,
                } => match group.swap_session(id, expected, value) {
                    Ok(swapped) => pending.push(Pending::Flag(reply, swapped)),
                    Err(e) => drop(reply.send(Err(e))),
                },
                Command::Close { counters, reply } => {
                    let marked = group.put_keys(Vec::new(), counters).and_then(|()| {
                        let meta = cf(db, CF_META)?;
                        group.batch.put_cf(meta, META_CLEAN_SHUTDOWN, [1u8]);
                        Ok(())
                    });
                    match marked {
                        Ok(()) => pending.push(Pending::Done(reply)),
                        Err(e) => drop(reply.send(Err(e))),
                    }
                    closing = true;
                }
            }
        }
        // The clean-shutdown marker is tiny and worth writing even then.
        let written = match space.check() {
            Err(e) if !closing => {
                if !warned_full {
                    tracing::error!(error = %e, "refusing writes: the database disk is nearly full");
                    warned_full = true;
                }
                Err(e)
            }
            _ => {
                if warned_full {
                    tracing::warn!("database disk has room again; writes resume");
                    warned_full = false;
                }
                group.finish(&mut committed_counters).map(|put| {
                    let seq = db.latest_sequence_number();
                    recent.fingerprints.record(&put.fingerprints, seq);
                    recent.tokens.record(&put.tokens, seq);
                })
            }
        };
        for answer in pending {
            // A sender that gave up waiting is no error of ours.
            let _ = match answer {
                Pending::Inserted(reply, outcomes) => {
                    reply.send(written.clone().map(|()| outcomes)).is_ok()
                }
                Pending::Flag(reply, flag) => reply.send(written.clone().map(|()| flag)).is_ok(),
                Pending::Completed(reply, done) => {
                    reply.send(written.clone().map(|()| done)).is_ok()
                }
                Pending::Count(reply, n) => reply.send(written.clone().map(|()| n)).is_ok(),
                Pending::Total(reply, n) => reply.send(written.clone().map(|()| n)).is_ok(),
                Pending::Done(reply) => reply.send(written.clone()).is_ok(),
            };
        }
        if closing {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path) -> DB {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        DB::open_cf(&opts, dir, super::super::COLUMN_FAMILIES).unwrap()
    }

    fn group<'a>(
        db: &'a DB,
        recent: &'a Written<Recent>,
        filters: &'a Written<KeyFilter>,
    ) -> Group<'a> {
        Group {
            db,
            batch: WriteBatch::default(),
            overlay: Overlay::default(),
            deferred: Vec::new(),
            values: Vec::new(),
            recent,
            filters,
            put: Written::default(),
        }
    }

    /// Sorting the deferred writes must not reorder writes of one key, nor
    /// move a write across a tenant's range delete.
    #[test]
    fn deferred_writes_keep_the_order_that_matters() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let recent = Written {
            fingerprints: Recent::new(0, 16),
            tokens: Recent::new(0, 16),
        };
        let filters = Written {
            fingerprints: KeyFilter::new(0),
            tokens: KeyFilter::new(0),
        };
        let tenant = TenantId::parse("shop").unwrap();
        let key = |token: &str| codec::token_key(&tenant, &Token::parse(token).unwrap());
        let (a, b, c) = (
            key("4111119274601112"),
            key("4111110000001113"),
            key("5500009999990004"),
        );
        let mut g = group(&db, &recent, &filters);
        // Same key: put, delete, put again — the last put wins.
        g.put(CF_TOKENS, a.clone(), b"first".to_vec()).unwrap();
        g.delete(CF_TOKENS, a.clone()).unwrap();
        g.put(CF_TOKENS, a.clone(), b"second".to_vec()).unwrap();
        // Same key: put then delete — gone.
        g.put(CF_TOKENS, b.clone(), b"gone".to_vec()).unwrap();
        g.delete(CF_TOKENS, b.clone()).unwrap();
        assert_eq!(
            g.read(CF_TOKENS, &a).unwrap().as_deref(),
            Some(&b"second"[..])
        );
        assert_eq!(g.read(CF_TOKENS, &b).unwrap(), None);
        g.finish(&mut HashMap::new()).unwrap();
        let tokens = cf(&db, CF_TOKENS).unwrap();
        assert_eq!(
            db.get_cf(tokens, &a).unwrap().as_deref(),
            Some(&b"second"[..])
        );
        assert_eq!(db.get_cf(tokens, &b).unwrap(), None);

        // A write before a tenant's range delete is deleted with it; one
        // after it stays, though it sorts before the first.
        let mut g = group(&db, &recent, &filters);
        g.put(CF_TOKENS, c.clone(), b"before".to_vec()).unwrap();
        g.delete_tenant(&tenant, Vec::new()).unwrap();
        g.put(CF_TOKENS, b.clone(), b"after".to_vec()).unwrap();
        g.finish(&mut HashMap::new()).unwrap();
        assert_eq!(db.get_cf(tokens, &a).unwrap(), None);
        assert_eq!(db.get_cf(tokens, &c).unwrap(), None);
        assert_eq!(
            db.get_cf(tokens, &b).unwrap().as_deref(),
            Some(&b"after"[..])
        );
    }
}
