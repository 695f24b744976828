//! Storage: the one interface the vault core talks to ([`Store`]), the byte
//! layouts of everything stored ([`codec`], pure and fuzzed) and the
//! backends (today [`rocksdb`], the embedded default). This is the only
//! module that touches a database; nothing it stores is plaintext card data
//! (keys are tokens and HMACs, values are ciphertext).
//!
//! # The contract every backend keeps
//!
//! - **Atomic insert-if-absent** on (tenant, fingerprint) and (tenant,
//!   token): [`Store::insert`] never overwrites. An item whose fingerprint
//!   already has a token answers [`InsertOutcome::Existing`] with it; an item
//!   whose token is taken answers [`InsertOutcome::TokenCollision`]; both
//!   hold also against earlier items of the same call and of concurrent
//!   calls.
//! - **Acknowledged means durable**: a write method returns `Ok` only after
//!   its effect survives a crash of the process and of the machine (synced
//!   WAL for RocksDB).
//! - **One commit per call**: every item of one [`Store::insert`] (and every
//!   key and counter of one [`Store::put_keys`]) is committed together;
//!   concurrent callers may share a commit (group commit).
//! - **Encryption counters only grow**: a counter written with a lower value
//!   than the stored one keeps the stored one.
//! - Point reads ([`Store::get_entry`], [`Store::get_token_for`]) see every
//!   acknowledged write.
//! - **Re-sealing compares and swaps**: [`Store::reseal`] replaces a
//!   record only if the entry still holds the record the caller read (a
//!   token deleted or re-sealed meanwhile is skipped), keeps the entry's
//!   current metadata, and commits the job's checkpoint with the records.
//! - **Sessions compare and swap**: [`Store::swap_session`] writes a
//!   collection session only if its record is still the one the caller
//!   read, so one submit completes a session however many nodes race.
//!
//! `tests/it/store_suite.rs` checks this contract once, generically; every
//! backend runs it.

pub mod codec;
#[cfg(feature = "vault")]
pub mod postgres;
#[cfg(feature = "vault")]
pub mod rocksdb;
#[cfg(feature = "vault")]
pub mod transfer;

use std::path::PathBuf;

use crate::crypto::{Fingerprint, KeyLabel};
use crate::domain::{Expiry, TenantId, Token};
use codec::{CodecError, KeyRecord, TokenEntry};

/// Why a store operation failed. Messages name the problem, never a PAN
/// (nothing the store holds is a PAN in the clear).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("storage error: {0}")]
    Backend(String),
    /// The database was written by a newer cardvault.
    #[error(
        "database at {path} has on-disk format version {found}, newer than this build supports ({supported}); run a newer cardvault"
    )]
    NewerFormat {
        /// Database location.
        path: PathBuf,
        /// Version found.
        found: u32,
        /// Newest version this build reads.
        supported: u32,
    },
    /// Stored bytes did not decode.
    #[error("corrupt data in store: {0}")]
    Corrupt(#[from] CodecError),
    /// The writer is gone (the store is closing or crashed).
    #[error("the store's writer has stopped")]
    WriterGone,
    /// A `cardvault migrate` into this store has not finished: what it
    /// holds is part of a vault, and no vault may use it yet.
    #[error(
        "{target} holds an unfinished copy (cardvault migrate was interrupted); run the same cardvault migrate again with --resume before a vault uses it"
    )]
    UnfinishedCopy {
        /// The store, as it describes itself.
        target: String,
    },
    /// Free space for the database is below the reserve; the write was
    /// refused before the database saw it.
    #[error(
        "disk nearly full: {free} bytes free, {reserve} reserved; writes refused until space is freed"
    )]
    DiskFull {
        /// Bytes available.
        free: u64,
        /// The configured reserve.
        reserve: u64,
    },
}

/// One token to insert.
#[derive(Debug)]
pub struct Insert {
    /// Owner.
    pub tenant: TenantId,
    /// The new token.
    pub token: Token,
    /// Fingerprint of the PAN, for deterministic tenants.
    pub fingerprint: Option<Fingerprint>,
    /// Metadata and sealed record.
    pub entry: TokenEntry,
    /// The data key used and its encryption count after this seal, persisted
    /// with the same commit whatever the outcome (the seal happened).
    pub counter: Option<(KeyLabel, u64)>,
    /// The caller found no token for `fingerprint` in a read that started
    /// after this mark ([`Store::read_mark`]). A backend may use it to skip
    /// re-reading the fingerprint when it knows nothing wrote it since; it
    /// must still never overwrite (the contract does not change).
    pub fingerprint_absent_at: Option<ReadMark>,
    /// The caller found no entry for `token` in a read that started after
    /// this mark ([`Store::tokens_taken`]). Like `fingerprint_absent_at`: a
    /// backend may skip its own collision read when it knows nothing wrote
    /// the token since, and must still never overwrite an entry.
    pub token_absent_at: Option<ReadMark>,
    /// The fingerprint key that computed `fingerprint`: a backend shared by
    /// several nodes refuses the item ([`InsertOutcome::StaleKey`]) once
    /// that key is no longer the active one, as it does for the data key
    /// of `counter`.
    pub fingerprint_key: Option<KeyLabel>,
}

/// A position in a store's history: every write acknowledged before the
/// mark was taken is visible to reads that start after it. Opaque to the
/// vault; only the backend that made it interprets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReadMark(pub u64);

/// What became of one [`Insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored and durable.
    Inserted,
    /// The PAN already has this token in the tenant; nothing was written.
    Existing(Token),
    /// The token is taken by another PAN; nothing was written. Draw again.
    TokenCollision,
    /// The data key that sealed the record is no longer the tenant's active
    /// key in the store (another node of a shared store rotated or retired
    /// it); nothing was written. Read the keys again and seal again.
    StaleKey,
}

impl InsertOutcome {
    /// The token the PAN of an insert whose drafted token was `drafted`
    /// has now: that one when inserted, the existing one otherwise; `None`
    /// when nothing was stored (a collision, a stale key).
    pub fn token(self, drafted: Token) -> Option<Token> {
        match self {
            InsertOutcome::Inserted => Some(drafted),
            InsertOutcome::Existing(existing) => Some(existing),
            InsertOutcome::TokenCollision | InsertOutcome::StaleKey => None,
        }
    }
}

/// One record sealed again under a newer data key ([`Store::reseal`]).
#[derive(Debug)]
pub struct Reseal {
    /// The token.
    pub token: Token,
    /// The sealed record as read: the swap happens only if it is still there.
    pub expected: Vec<u8>,
    /// The record sealed under the newer key (the expected bytes when only
    /// the fingerprint moves).
    pub record: Vec<u8>,
    /// A fingerprint-key rotation's move: the entry's fingerprint and index
    /// entry go from the first (older key's) to the second (active key's),
    /// if the index still points at this token.
    pub fingerprint: Option<(Fingerprint, Fingerprint)>,
}

/// What a re-sealing commit does with the job's checkpoint.
#[derive(Debug, Clone)]
pub enum Checkpoint {
    /// Store these bytes (opaque to the store) as the tenant's checkpoint.
    Set(Vec<u8>),
    /// The job is done: remove it.
    Clear,
}

/// Makes a completed session record for a token.
pub type CompletedRecord = std::sync::Arc<dyn Fn(&Token) -> Vec<u8> + Send + Sync>;

/// A collection session completed by the commit that stores its card's
/// token ([`Store::insert_completing`]).
#[derive(Clone)]
pub struct SessionCompletion {
    /// The session's id.
    pub id: Vec<u8>,
    /// Its record as read: the swap happens only if it is still there.
    pub expected: Vec<u8>,
    /// When the sweep may delete the completed record (ms since the epoch).
    pub sweep_at: u64,
    /// The completed record for the token the card ends up with.
    pub record: CompletedRecord,
}

impl std::fmt::Debug for SessionCompletion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCompletion")
            .field("sweep_at", &self.sweep_at)
            .finish_non_exhaustive()
    }
}

/// Everything the key store holds, read at open.
#[derive(Debug, Default)]
pub struct StoredKeys {
    /// Wrapped data keys by label.
    pub keys: Vec<(KeyLabel, KeyRecord)>,
    /// Persisted encryption counters by label.
    pub counters: Vec<(KeyLabel, u64)>,
}

/// Whether a store can take writes now, as its own probe last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Writes commit.
    Ready,
    /// No database server answers (or none is writable).
    Unreachable,
    /// A commit has not completed within the bound (a synchronous commit
    /// waiting for a standby that is gone, a stuck server).
    CommitStalled,
}

impl Readiness {
    /// The name `/readyz` and the logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Ready => "ready",
            Readiness::Unreachable => "unreachable",
            Readiness::CommitStalled => "commit_stalled",
        }
    }
}

/// The storage interface of the vault core; the module docs state the
/// contract. Implementations are shared by every request task.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Where the data lives, for logs (never a secret: no password).
    fn describe(&self) -> String;

    /// Writes a consistent copy of the store's files into `dir` (which
    /// must not exist) while it serves: every write acknowledged before the
    /// call is in it. Blocking. A store with tools of its own (PostgreSQL:
    /// `pg_basebackup`) refuses.
    fn checkpoint_into(&self, dir: &std::path::Path) -> Result<(), StoreError> {
        let _ = dir;
        Err(StoreError::Backend(format!(
            "{} is backed up with its own tools (docs/runbook.md: backups)",
            self.describe()
        )))
    }

    /// Whether other processes (vault nodes) write this store too, so keys
    /// may appear or change behind this one's back. `false` (the default):
    /// this process owns it, and its keyring is always current.
    fn is_shared(&self) -> bool {
        false
    }

    /// Whether the previous process closed this store cleanly (so the
    /// persisted encryption counters are exact).
    fn was_clean_shutdown(&self) -> bool;

    /// Whether writes commit now (`/readyz`). An embedded store is ready
    /// while it is open (its failures answer each request); a database
    /// over the network is probed.
    fn readiness(&self) -> Readiness {
        Readiness::Ready
    }

    /// The entry of `token` in `tenant`.
    async fn get_entry(
        &self,
        tenant: &TenantId,
        token: &Token,
    ) -> Result<Option<TokenEntry>, StoreError>;

    /// The current position in the store's history, taken before a read
    /// whose negative answer is handed back with an [`Insert`]. `None`
    /// (the default): the backend re-checks every fingerprint itself.
    fn read_mark(&self) -> Option<ReadMark> {
        None
    }

    /// The token already issued for a PAN fingerprint in `tenant`.
    async fn get_token_for(
        &self,
        tenant: &TenantId,
        fingerprint: &Fingerprint,
    ) -> Result<Option<Token>, StoreError>;

    /// [`Store::get_token_for`] for many fingerprints of one tenant, in
    /// input order: one batched read where the backend has one.
    async fn get_tokens_for(
        &self,
        tenant: &TenantId,
        fingerprints: &[Fingerprint],
    ) -> Result<Vec<Option<Token>>, StoreError> {
        let mut out = Vec::with_capacity(fingerprints.len());
        for fingerprint in fingerprints {
            out.push(self.get_token_for(tenant, fingerprint).await?);
        }
        Ok(out)
    }

    /// Which of `tokens` already have an entry in `tenant`, in input order:
    /// one batched read where the backend has one. Read after a
    /// [`Store::read_mark`], its "free" answers go back with the inserts
    /// ([`Insert::token_absent_at`]).
    async fn tokens_taken(
        &self,
        tenant: &TenantId,
        tokens: &[Token],
    ) -> Result<Vec<bool>, StoreError> {
        let mut out = Vec::with_capacity(tokens.len());
        for token in tokens {
            out.push(self.get_entry(tenant, token).await?.is_some());
        }
        Ok(out)
    }

    /// Every wrapped data key and encryption counter.
    async fn load_keys(&self) -> Result<StoredKeys, StoreError>;

    /// Inserts token entries (with their fingerprint index entries) in one
    /// durable commit, insert-if-absent as the module docs say. Outcomes
    /// come back in input order.
    async fn insert(&self, items: Vec<Insert>) -> Result<Vec<InsertOutcome>, StoreError>;

    /// Sets the expiry stored with `token`. Returns false if the token is gone.
    async fn update_expiry(
        &self,
        tenant: &TenantId,
        token: &Token,
        expiry: Expiry,
    ) -> Result<bool, StoreError>;

    /// Deletes `token` and its fingerprint index entry (if that still
    /// points at it). Returns false if the token did not exist.
    async fn delete(&self, tenant: &TenantId, token: &Token) -> Result<bool, StoreError>;

    /// Writes data-key records and counters in one durable commit.
    async fn put_keys(
        &self,
        keys: Vec<(KeyLabel, KeyRecord)>,
        counters: Vec<(KeyLabel, u64)>,
    ) -> Result<(), StoreError>;

    /// Writes a tenant's first key records and counters only if none of
    /// those records exists yet; `false` (nothing written) when another
    /// node created them first. A single-process backend may simply write.
    async fn create_keys(
        &self,
        keys: Vec<(KeyLabel, KeyRecord)>,
        counters: Vec<(KeyLabel, u64)>,
    ) -> Result<bool, StoreError> {
        self.put_keys(keys, counters).await.map(|()| true)
    }

    /// Up to `limit` entries of `tenant` in token order, after `after`
    /// (from the first when `None`). Entries written concurrently may or
    /// may not be seen.
    async fn scan_entries(
        &self,
        tenant: &TenantId,
        after: Option<Token>,
        limit: usize,
    ) -> Result<Vec<(Token, TokenEntry)>, StoreError>;

    /// Replaces records re-sealed under a newer data key, compare-and-swap
    /// (see the module docs), with the data keys' counters and the job's
    /// checkpoint, in one durable commit. Returns how many were replaced.
    async fn reseal(
        &self,
        tenant: &TenantId,
        items: Vec<Reseal>,
        counters: Vec<(KeyLabel, u64)>,
        checkpoint: Checkpoint,
    ) -> Result<usize, StoreError>;

    /// The re-sealing job checkpoint of `tenant`, if one is stored.
    async fn checkpoint(&self, tenant: &TenantId) -> Result<Option<Vec<u8>>, StoreError>;

    /// Tenants with a stored re-sealing checkpoint (jobs to resume).
    async fn checkpoints(&self) -> Result<Vec<TenantId>, StoreError>;

    /// Deletes every token and fingerprint index entry of `tenant`, its
    /// encryption counters and re-sealing checkpoint, and writes `keys`
    /// (its destroyed key records), in one durable commit. Returns the
    /// number of tokens the tenant had.
    async fn delete_tenant(
        &self,
        tenant: &TenantId,
        keys: Vec<(KeyLabel, KeyRecord)>,
    ) -> Result<u64, StoreError>;

    /// Expiring tokens whose time is at or before `now_ms`, earliest first,
    /// at most `limit`: (expiry time, tenant, token). From an index, so the
    /// sweep never scans the tokens.
    async fn expired(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, TenantId, Token)>, StoreError>;

    /// Deletes expired tokens in one durable commit: each token's entry and
    /// its fingerprint index entry (if that still points at it) when the
    /// entry still carries that expiry time, and the expiry index entry in
    /// any case. Returns how many tokens were deleted.
    async fn delete_expired(&self, items: Vec<(u64, TenantId, Token)>)
    -> Result<usize, StoreError>;

    /// The stored record of collection session `id`
    /// ([`codec::SessionRecord`]'s bytes).
    async fn get_session(&self, id: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Compare-and-swap of collection session `id` in one durable commit:
    /// writes only if the stored record is still `expected` (`None`: no
    /// session `id` exists). `new` is the record and the time (ms since
    /// the epoch) after which the sweep may delete it; `None` deletes.
    /// `false`: the record changed meanwhile; nothing was written.
    async fn swap_session(
        &self,
        id: &[u8],
        expected: Option<&[u8]>,
        new: Option<(u64, Vec<u8>)>,
    ) -> Result<bool, StoreError>;

    /// [`Store::insert`] of one item and the compare-and-swap of the
    /// collection session it completes, in one durable commit where the
    /// backend can: the session gets `session.record` of the item's token
    /// when it was inserted, of the PAN's token when it had one
    /// ([`InsertOutcome::Existing`]); nothing of the session is written for
    /// a collision or a stale key. Returns the item's outcome and whether
    /// the session was swapped. The default: the insert, then the swap.
    async fn insert_completing(
        &self,
        item: Insert,
        session: SessionCompletion,
    ) -> Result<(InsertOutcome, bool), StoreError> {
        let drafted = item.token;
        let outcome = self
            .insert(vec![item])
            .await?
            .pop()
            .unwrap_or(InsertOutcome::TokenCollision);
        let Some(token) = outcome.token(drafted) else {
            return Ok((outcome, false));
        };
        let swapped = self
            .swap_session(
                &session.id,
                Some(&session.expected),
                Some((session.sweep_at, (session.record)(&token))),
            )
            .await?;
        Ok((outcome, swapped))
    }

    /// Deletes up to `limit` collection sessions whose sweep time is at or
    /// before `now_ms`; returns how many.
    async fn sweep_sessions(&self, now_ms: u64, limit: usize) -> Result<usize, StoreError>;

    /// Rewrites the database's files so deleted and overwritten values are
    /// physically gone (after a crypto-shred; slow, rare).
    async fn compact(&self) -> Result<(), StoreError>;

    /// Writes the final counters and the clean-shutdown marker, then closes.
    async fn close(self: Box<Self>, counters: Vec<(KeyLabel, u64)>) -> Result<(), StoreError>;

    /// Moves buffered writes into the database's files (tests and tools;
    /// durability never depends on it).
    async fn flush(&self) -> Result<(), StoreError>;
}
