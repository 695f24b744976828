//! The PostgreSQL backend: stateless vault nodes over one replicated
//! database. tokio-postgres with a deadpool pool (both maintained, async,
//! no OpenSSL: TLS to the database is rustls through
//! tokio-postgres-rustls, which always verifies the server's certificate
//! and name — `sslmode=verify-full` behaviour whatever the URL says).
//!
//! The contract of [`crate::store`] maps onto SQL as follows:
//! - insert-if-absent: primary keys on (tenant, token) and (tenant,
//!   fingerprint), `INSERT … ON CONFLICT DO NOTHING … RETURNING`, so the
//!   same PAN tokenized concurrently on two nodes gets one token;
//! - group commit: concurrent inserts on one node share one transaction of
//!   multi-row statements ([`writer`]);
//! - acknowledged means committed (`synchronous_commit` is left on; with a
//!   synchronous standby it means on two machines);
//! - encryption counters are per-node increments summed by the database, so
//!   nodes sharing a data key never undercount its encryptions.
//!
//! A node on PostgreSQL opens no RocksDB. The URL's password never reaches a
//! log, an error or [`Store::describe`].

mod connect;
mod counters;
mod marker;
mod probe;
mod reads;
mod schema;
mod sessions;
mod transfer;
mod writer;

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use super::codec::{self, KeyRecord, KeysEntry, TokenEntry};
use super::{Checkpoint, Insert, InsertOutcome, Reseal, Store, StoreError, StoredKeys};
use crate::crypto::{Fingerprint, KeyLabel};
use crate::domain::{Expiry, TenantId, Token};
pub use connect::PgSettings;
use counters::Baselines;
use schema::pg;
pub use schema::{SCHEMA_READABLE_BY, SCHEMA_VERSION};

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
    describe: String,
    inserts: mpsc::Sender<writer::Job>,
    /// Point reads, batched ([`reads`]).
    reads: mpsc::Sender<reads::Read>,
    baselines: Arc<Baselines>,
    /// The readiness probe's latest verdict, and the probe (stopped with
    /// the store).
    verdict: Arc<probe::Verdict>,
    probe: tokio::task::JoinHandle<()>,
    /// The node's own directory (its clean-shutdown marker), and whether
    /// its previous run closed cleanly.
    node_dir: Option<std::path::PathBuf>,
    clean: bool,
}

/// `first` and whatever else is queued on `rx` now, at most `max` in all:
/// one group of writes or one batch of reads.
fn with_queued<T>(first: T, rx: &mut mpsc::Receiver<T>, max: usize) -> Vec<T> {
    let mut batch = vec![first];
    while batch.len() < max {
        match rx.try_recv() {
            Ok(more) => batch.push(more),
            Err(_) => break,
        }
    }
    batch
}

impl PgStore {
    /// Queues a point read for the next batch and waits for its answer.
    async fn read<T>(
        &self,
        read: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> reads::Read,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.reads
            .send(read(reply))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.probe.abort();
    }
}

/// A key state as the `state` column holds it.
pub(crate) fn state_name(state: codec::KeyState) -> &'static str {
    match state {
        codec::KeyState::Active => "active",
        codec::KeyState::DecryptOnly => "decrypt-only",
        codec::KeyState::Destroyed => "destroyed",
    }
}

fn bad_token(what: &'static str) -> StoreError {
    StoreError::Corrupt(codec::CodecError::InvalidField {
        what,
        field: "token",
    })
}

fn token_of(text: &str, what: &'static str) -> Result<Token, StoreError> {
    Token::parse(text).map_err(|_| bad_token(what))
}

#[async_trait::async_trait]
impl Store for PgStore {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn is_shared(&self) -> bool {
        true
    }

    /// Counters are summed per-node increments committed with each group,
    /// so only what a node encrypted after its last commit can be missing:
    /// after its crash (no marker in its directory), never after a clean
    /// close. Without a node directory: assumed unclean (the safe side).
    fn was_clean_shutdown(&self) -> bool {
        self.clean
    }

    fn readiness(&self) -> crate::store::Readiness {
        self.verdict.get()
    }

    async fn get_entry(
        &self,
        tenant: &TenantId,
        token: &Token,
    ) -> Result<Option<TokenEntry>, StoreError> {
        let bytes = self
            .read(|reply| reads::Read::Entry {
                tenant: tenant.clone(),
                token: *token,
                reply,
            })
            .await?;
        bytes
            .map(|b| TokenEntry::decode(&b, token).map_err(StoreError::from))
            .transpose()
    }

    async fn get_token_for(
        &self,
        tenant: &TenantId,
        fingerprint: &Fingerprint,
    ) -> Result<Option<Token>, StoreError> {
        Ok(self
            .get_tokens_for(tenant, std::slice::from_ref(fingerprint))
            .await?
            .pop()
            .flatten())
    }

    async fn get_tokens_for(
        &self,
        tenant: &TenantId,
        fingerprints: &[Fingerprint],
    ) -> Result<Vec<Option<Token>>, StoreError> {
        self.read(|reply| reads::Read::Tokens {
            tenant: tenant.clone(),
            fingerprints: fingerprints.to_vec(),
            reply,
        })
        .await
    }

    async fn load_keys(&self) -> Result<StoredKeys, StoreError> {
        let client = self.client().await?;
        let mut stored = StoredKeys::default();
        for row in client
            .query("SELECT key, record FROM cardvault_keys", &[])
            .await
            .map_err(pg)?
        {
            if let KeysEntry::Wrapped(label) = codec::decode_keys_key(row.get(0))? {
                stored
                    .keys
                    .push((label, KeyRecord::decode(row.get::<_, &[u8]>(1))?));
            }
        }
        let mut seen = Vec::new();
        for row in client
            .query("SELECT key, value FROM cardvault_counters", &[])
            .await
            .map_err(pg)?
        {
            let key: &[u8] = row.get(0);
            let value = row.get::<_, i64>(1).max(0) as u64;
            if let KeysEntry::Counter(label) = codec::decode_keys_key(key)? {
                stored.counters.push((label, value));
                seen.push((key.to_vec(), value));
            }
        }
        // What is stored now is this node's starting point: only what it
        // seals from here on is added.
        self.baselines.raise(seen);
        Ok(stored)
    }

    async fn insert(&self, items: Vec<Insert>) -> Result<Vec<InsertOutcome>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inserts
            .send(writer::Job { items, reply })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    async fn update_expiry(
        &self,
        tenant: &TenantId,
        token: &Token,
        expiry: Expiry,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let Some(row) = tx
            .query_opt(
                "SELECT entry FROM cardvault_tokens WHERE tenant = $1 AND token = $2 FOR UPDATE",
                &[&tenant.as_str(), &token.as_str()],
            )
            .await
            .map_err(pg)?
        else {
            return Ok(false);
        };
        let mut entry = TokenEntry::decode(row.get::<_, &[u8]>(0), token)?;
        entry.meta.expiry = Some(expiry);
        tx.execute(
            "UPDATE cardvault_tokens SET entry = $3 WHERE tenant = $1 AND token = $2",
            &[&tenant.as_str(), &token.as_str(), &entry.encode(token)],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(true)
    }

    async fn delete(&self, tenant: &TenantId, token: &Token) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let deleted = delete_token(&tx, tenant, token, None).await?;
        tx.commit().await.map_err(pg)?;
        Ok(deleted)
    }

    async fn put_keys(
        &self,
        keys: Vec<(KeyLabel, KeyRecord)>,
        counters: Vec<(KeyLabel, u64)>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        for (label, record) in &keys {
            tx.execute(
                "INSERT INTO cardvault_keys (key, tenant, record, state) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (key) DO UPDATE SET record = EXCLUDED.record, state = EXCLUDED.state",
                &[
                    &codec::wrapped_key_key(label),
                    &label.tenant.as_str(),
                    &record.encode(),
                    &state_name(record.state),
                ],
            )
            .await
            .map_err(pg)?;
        }
        let increments = self.baselines.claim(&counters);
        increments.add(&tx).await?;
        tx.commit().await.map_err(pg)?;
        increments.settle();
        Ok(())
    }

    async fn create_keys(
        &self,
        keys: Vec<(KeyLabel, KeyRecord)>,
        counters: Vec<(KeyLabel, u64)>,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        for (label, record) in &keys {
            let written = tx
                .execute(
                    "INSERT INTO cardvault_keys (key, tenant, record, state) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (key) DO NOTHING",
                    &[
                        &codec::wrapped_key_key(label),
                        &label.tenant.as_str(),
                        &record.encode(),
                        &state_name(record.state),
                    ],
                )
                .await
                .map_err(pg)?;
            if written == 0 {
                // Another node made this tenant's keys first: keep theirs.
                tx.rollback().await.map_err(pg)?;
                return Ok(false);
            }
        }
        let increments = self.baselines.claim(&counters);
        increments.add(&tx).await?;
        tx.commit().await.map_err(pg)?;
        increments.settle();
        Ok(true)
    }

    async fn scan_entries(
        &self,
        tenant: &TenantId,
        after: Option<Token>,
        limit: usize,
    ) -> Result<Vec<(Token, TokenEntry)>, StoreError> {
        let client = self.client().await?;
        let after = after.map(|t| t.to_string()).unwrap_or_default();
        let rows = client
            .query(
                "SELECT token, entry FROM cardvault_tokens WHERE tenant = $1 AND token > $2 \
                 ORDER BY token LIMIT $3",
                &[&tenant.as_str(), &after, &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                let token = token_of(r.get(0), "token entry")?;
                let entry = TokenEntry::decode(r.get::<_, &[u8]>(1), &token)?;
                Ok((token, entry))
            })
            .collect()
    }

    async fn reseal(
        &self,
        tenant: &TenantId,
        items: Vec<Reseal>,
        counters: Vec<(KeyLabel, u64)>,
        checkpoint: Checkpoint,
    ) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let mut replaced = 0;
        for item in items {
            let Some(row) = tx
                .query_opt(
                    "SELECT entry FROM cardvault_tokens WHERE tenant = $1 AND token = $2 FOR UPDATE",
                    &[&tenant.as_str(), &item.token.as_str()],
                )
                .await
                .map_err(pg)?
            else {
                continue;
            };
            let mut entry = TokenEntry::decode(row.get::<_, &[u8]>(0), &item.token)?;
            if entry.record != item.expected {
                continue;
            }
            entry.record = item.record;
            if let Some((old, new)) = item.fingerprint
                && entry.fingerprint == Some(old)
            {
                tx.execute(
                    "DELETE FROM cardvault_fingerprints WHERE tenant = $1 AND fingerprint = $2 AND token = $3",
                    &[&tenant.as_str(), &old.as_bytes().as_slice(), &item.token.as_str()],
                )
                .await
                .map_err(pg)?;
                tx.execute(
                    "INSERT INTO cardvault_fingerprints (tenant, fingerprint, token) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                    &[&tenant.as_str(), &new.as_bytes().as_slice(), &item.token.as_str()],
                )
                .await
                .map_err(pg)?;
                entry.fingerprint = Some(new);
            }
            tx.execute(
                "UPDATE cardvault_tokens SET entry = $3 WHERE tenant = $1 AND token = $2",
                &[
                    &tenant.as_str(),
                    &item.token.as_str(),
                    &entry.encode(&item.token),
                ],
            )
            .await
            .map_err(pg)?;
            replaced += 1;
        }
        let increments = self.baselines.claim(&counters);
        increments.add(&tx).await?;
        match checkpoint {
            Checkpoint::Set(bytes) => tx
                .execute(
                    "INSERT INTO cardvault_checkpoints (tenant, data) VALUES ($1, $2) \
                     ON CONFLICT (tenant) DO UPDATE SET data = EXCLUDED.data",
                    &[&tenant.as_str(), &bytes],
                )
                .await
                .map_err(pg)?,
            Checkpoint::Clear => tx
                .execute(
                    "DELETE FROM cardvault_checkpoints WHERE tenant = $1",
                    &[&tenant.as_str()],
                )
                .await
                .map_err(pg)?,
        };
        tx.commit().await.map_err(pg)?;
        increments.settle();
        Ok(replaced)
    }

    async fn checkpoint(&self, tenant: &TenantId) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT data FROM cardvault_checkpoints WHERE tenant = $1",
                &[&tenant.as_str()],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
    }

    async fn checkpoints(&self) -> Result<Vec<TenantId>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT tenant FROM cardvault_checkpoints", &[])
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .filter_map(|r| TenantId::parse(r.get::<_, &str>(0)).ok())
            .collect())
    }

    async fn delete_tenant(
        &self,
        tenant: &TenantId,
        keys: Vec<(KeyLabel, KeyRecord)>,
    ) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let t = tenant.as_str();
        let count = tx
            .execute("DELETE FROM cardvault_tokens WHERE tenant = $1", &[&t])
            .await
            .map_err(pg)?;
        for statement in [
            "DELETE FROM cardvault_fingerprints WHERE tenant = $1",
            "DELETE FROM cardvault_counters WHERE tenant = $1",
            "DELETE FROM cardvault_checkpoints WHERE tenant = $1",
        ] {
            tx.execute(statement, &[&t]).await.map_err(pg)?;
        }
        for (label, record) in &keys {
            tx.execute(
                "INSERT INTO cardvault_keys (key, tenant, record, state) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (key) DO UPDATE SET record = EXCLUDED.record, state = EXCLUDED.state",
                &[
                    &codec::wrapped_key_key(label),
                    &t,
                    &record.encode(),
                    &state_name(record.state),
                ],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(count)
    }

    async fn expired(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, TenantId, Token)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT expires_ms, tenant, token FROM cardvault_tokens \
                 WHERE expires_ms IS NOT NULL AND expires_ms <= $1 ORDER BY expires_ms LIMIT $2",
                &[&(now_ms.min(i64::MAX as u64) as i64), &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                let tenant = TenantId::parse(r.get::<_, &str>(1)).map_err(|_| {
                    StoreError::Corrupt(codec::CodecError::InvalidField {
                        what: "token entry",
                        field: "tenant",
                    })
                })?;
                Ok((
                    r.get::<_, i64>(0) as u64,
                    tenant,
                    token_of(r.get(2), "token entry")?,
                ))
            })
            .collect()
    }

    async fn delete_expired(
        &self,
        items: Vec<(u64, TenantId, Token)>,
    ) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let mut deleted = 0;
        for (at, tenant, token) in &items {
            if delete_token(&tx, tenant, token, Some(*at)).await? {
                deleted += 1;
            }
        }
        tx.commit().await.map_err(pg)?;
        Ok(deleted)
    }

    async fn get_session(&self, id: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.session(id).await
    }

    async fn swap_session(
        &self,
        id: &[u8],
        expected: Option<&[u8]>,
        new: Option<(u64, Vec<u8>)>,
    ) -> Result<bool, StoreError> {
        self.swap(id, expected, new).await
    }

    async fn sweep_sessions(&self, now_ms: u64, limit: usize) -> Result<usize, StoreError> {
        self.sweep(now_ms, limit).await
    }

    async fn compact(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .batch_execute("VACUUM (FULL) cardvault_tokens, cardvault_fingerprints")
            .await
            .map_err(pg)
    }

    async fn close(self: Box<Self>, counters: Vec<(KeyLabel, u64)>) -> Result<(), StoreError> {
        self.put_keys(Vec::new(), counters).await?;
        self.pool.close();
        match &self.node_dir {
            Some(dir) => marker::put(dir),
            None => Ok(()),
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Deletes `token` and its fingerprint index entry (if it still points at
/// the token) in `tx`; with `expires_ms`, only if the entry still expires
/// then. Whether it was there.
async fn delete_token(
    tx: &deadpool_postgres::Transaction<'_>,
    tenant: &TenantId,
    token: &Token,
    expires_ms: Option<u64>,
) -> Result<bool, StoreError> {
    let row = match expires_ms {
        None => tx
            .query_opt(
                "DELETE FROM cardvault_tokens WHERE tenant = $1 AND token = $2 RETURNING entry",
                &[&tenant.as_str(), &token.as_str()],
            )
            .await
            .map_err(pg)?,
        Some(at) => tx
            .query_opt(
                "DELETE FROM cardvault_tokens WHERE tenant = $1 AND token = $2 AND expires_ms = $3 \
                 RETURNING entry",
                &[&tenant.as_str(), &token.as_str(), &(at as i64)],
            )
            .await
            .map_err(pg)?,
    };
    let Some(row) = row else {
        return Ok(false);
    };
    let entry = TokenEntry::decode(row.get::<_, &[u8]>(0), token)?;
    if let Some(fp) = entry.fingerprint {
        tx.execute(
            "DELETE FROM cardvault_fingerprints WHERE tenant = $1 AND fingerprint = $2 AND token = $3",
            &[&tenant.as_str(), &fp.as_bytes().as_slice(), &token.as_str()],
        )
        .await
        .map_err(pg)?;
    }
    Ok(true)
}
