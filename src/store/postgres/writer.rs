//! Group commit for PostgreSQL: every insert queued while the previous
//! transaction ran goes into the next one, as multi-row statements —
//! fingerprints first (`ON CONFLICT DO NOTHING RETURNING`: the PAN's
//! existing token otherwise), then tokens (a taken token is a collision and
//! its just-written index entry is removed again), then the counters — and
//! every caller gets its outcomes once the transaction has committed. A
//! failed transaction fails every caller of its group; nothing is
//! acknowledged.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deadpool_postgres::{Pool, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::connect::pool_error;
use super::schema::pg;
use super::{Baselines, token_of};
use crate::crypto::KeyLabel;
use crate::store::codec;
use crate::store::{Insert, InsertOutcome, StoreError};

/// Inserts queued at most in one transaction.
const MAX_GROUP: usize = 1024;

// The group's statements, prepared once per pooled connection
// (`prepare_cached`): a statement given as text is parsed, planned and
// described by the server on every call, one more round trip each.

/// The group's data keys, share-locked; their states.
const LOCK_ACTIVE_KEYS: &str = "SELECT key, state FROM cardvault_keys \
     WHERE key = ANY($1::bytea[]) ORDER BY key FOR SHARE";

/// Fingerprints, first writer wins; the rows this transaction inserted.
const INSERT_FINGERPRINTS: &str = "INSERT INTO cardvault_fingerprints (tenant, fingerprint, token) \
     SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[]) \
     ON CONFLICT DO NOTHING RETURNING tenant, fingerprint, token";

/// The tokens already indexed under the fingerprints that lost.
const FINGERPRINT_HOLDERS: &str = "SELECT f.tenant, f.fingerprint, f.token \
     FROM cardvault_fingerprints f JOIN unnest($1::text[], $2::bytea[]) AS w(tenant, fp) \
     ON f.tenant = w.tenant AND f.fingerprint = w.fp";

/// Token entries, a taken token loses; the rows this transaction inserted.
const INSERT_TOKENS: &str = "INSERT INTO cardvault_tokens (tenant, token, entry, expires_ms) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::int8[]) \
     ON CONFLICT DO NOTHING RETURNING tenant, token";

/// Index entries of items whose token collided, removed again.
const UNDO_FINGERPRINTS: &str = "DELETE FROM cardvault_fingerprints f \
     USING unnest($1::text[], $2::bytea[], $3::text[]) AS d(tenant, fp, token) \
     WHERE f.tenant = d.tenant AND f.fingerprint = d.fp AND f.token = d.token";

/// One caller's inserts and where its outcomes go.
pub(super) struct Job {
    pub(super) items: Vec<Insert>,
    pub(super) reply: oneshot::Sender<Result<Vec<InsertOutcome>, StoreError>>,
}

/// The writer task: one group at a time until the store is dropped. (Two
/// groups in flight on two connections measured slower here: both upsert
/// the same counter rows, so the second waits for the first's commit —
/// docs/BENCHMARKS.md.)
pub(super) async fn run(pool: Pool, mut jobs: mpsc::Receiver<Job>, baselines: Arc<Baselines>) {
    while let Some(first) = jobs.recv().await {
        let group = super::with_queued(first, &mut jobs, MAX_GROUP);
        answer(&pool, group, &baselines).await;
    }
}

/// Commits one group (again after a deadlock or a serialization failure)
/// and answers each of its callers.
async fn answer(pool: &Pool, group: Vec<Job>, baselines: &Baselines) {
    let items: Vec<&Insert> = group.iter().flat_map(|j| j.items.iter()).collect();
    let mut result = commit(pool, &items, baselines).await;
    // Transactions of several nodes can still deadlock or fail to
    // serialize under contention; the group is simply run again.
    for _ in 0..5 {
        match &result {
            Err(StoreError::Backend(message)) if retryable(message) => {
                result = commit(pool, &items, baselines).await;
            }
            _ => break,
        }
    }
    match result {
        Ok(mut outcomes) => {
            for job in group {
                let rest = outcomes.split_off(job.items.len());
                let _ = job.reply.send(Ok(outcomes));
                outcomes = rest;
            }
        }
        Err(e) => {
            for job in group {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}

/// The (tenant, fingerprint, token) columns of `rows` of `items`, for an
/// `unnest` of `cardvault_fingerprints` rows.
fn fingerprint_columns<'a>(
    items: &[&'a Insert],
    rows: &[usize],
) -> (Vec<&'a str>, Vec<&'a [u8]>, Vec<&'a str>) {
    let mut columns = (Vec::new(), Vec::new(), Vec::new());
    for &i in rows {
        if let Some(fp) = &items[i].fingerprint {
            columns.0.push(items[i].tenant.as_str());
            columns.1.push(fp.as_bytes().as_slice());
            columns.2.push(items[i].token.as_str());
        }
    }
    columns
}

/// A deadlock (40P01) or serialization failure (40001): nothing was
/// written, and running the same transaction again is safe.
fn retryable(message: &str) -> bool {
    message.starts_with("postgres: 40P01") || message.starts_with("postgres: 40001")
}

/// Inserts `items` in one transaction: first optimistically, in one
/// statement ([`INSERT_GROUP`]); when that finds anything but a plain
/// insert of every item, step by step ([`commit_in_steps`]). One outcome
/// per item.
async fn commit(
    pool: &Pool,
    items: &[&Insert],
    baselines: &Baselines,
) -> Result<Vec<InsertOutcome>, StoreError> {
    // The seals happened whatever the outcomes: their counts go in with
    // whichever way the group is written.
    let counters: Vec<(KeyLabel, u64)> = items.iter().filter_map(|i| i.counter.clone()).collect();
    let mut client = pool.get().await.map_err(pool_error)?;
    if let Some(outcomes) = commit_at_once(&mut client, items, &counters, baselines).await? {
        return Ok(outcomes);
    }
    commit_in_steps(&mut client, items, &counters, baselines).await
}

/// The group's data keys (wrapped-key names), sorted and distinct.
fn key_names(items: &[&Insert]) -> Vec<Vec<u8>> {
    items
        .iter()
        .flat_map(|item| keys_of(item))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The wrapped-key names of the data keys an item was sealed and
/// fingerprinted with.
fn keys_of(item: &Insert) -> Vec<Vec<u8>> {
    item.counter
        .iter()
        .map(|(label, _)| label)
        .chain(item.fingerprint_key.iter())
        .map(codec::wrapped_key_key)
        .collect()
}

/// The common case in one statement — its own transaction, one round
/// trip: the keys' share lock, every fingerprint, every token and the
/// counters, as the steps write them. Committed when every key is active
/// and every fingerprint and token went in (each item `Inserted`);
/// otherwise the statement refuses itself and nothing of it stays
/// (`None`): a stale key, a PAN indexed meanwhile, a taken token or the
/// same PAN twice in the group need the steps.
const INSERT_GROUP: &str = "WITH keys AS ( \
       SELECT key, state FROM cardvault_keys WHERE key = ANY($1::bytea[]) ORDER BY key FOR SHARE \
     ), fps AS ( \
       INSERT INTO cardvault_fingerprints (tenant, fingerprint, token) \
       SELECT * FROM unnest($2::text[], $3::bytea[], $4::text[]) \
       ON CONFLICT DO NOTHING RETURNING 1 \
     ), toks AS ( \
       INSERT INTO cardvault_tokens (tenant, token, entry, expires_ms) \
       SELECT * FROM unnest($5::text[], $6::text[], $7::bytea[], $8::int8[]) \
       ON CONFLICT DO NOTHING RETURNING 1 \
     ), counted AS ( \
       INSERT INTO cardvault_counters (key, tenant, value) \
       SELECT * FROM unnest($9::bytea[], $10::text[], $11::int8[]) \
       ON CONFLICT (key) DO UPDATE SET value = cardvault_counters.value + EXCLUDED.value \
       RETURNING 1 \
     ) \
     SELECT CASE WHEN (SELECT count(*) FROM fps) = cardinality($3::bytea[]) \
                  AND (SELECT count(*) FROM toks) = cardinality($6::text[]) \
                  AND (SELECT count(*) FROM counted) = cardinality($9::bytea[]) \
                  AND NOT EXISTS (SELECT 1 FROM keys WHERE state <> 'active') \
             THEN 'inserted' ELSE cardvault_refuse_group() END";

/// The SQLSTATE `cardvault_refuse_group()` raises (schema 6).
const GROUP_REFUSED: &str = "CV001";

async fn commit_at_once(
    client: &mut deadpool_postgres::Object,
    items: &[&Insert],
    counters: &[(KeyLabel, u64)],
    baselines: &Baselines,
) -> Result<Option<Vec<InsertOutcome>>, StoreError> {
    let mut with_fp: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].fingerprint.is_some())
        .collect();
    sort_by_index_key(&mut with_fp, items);
    let mut all: Vec<usize> = (0..items.len()).collect();
    sort_by_token(&mut all, items);
    let labels = key_names(items);
    let (fp_tenants, fps, fp_tokens) = fingerprint_columns(items, &with_fp);
    let c = token_columns(items, &all);
    let increments = baselines.claim(counters);
    let (keys, tenants, deltas) = increments.columns();
    let statement = client.prepare_cached(INSERT_GROUP).await.map_err(pg)?;
    let done = client
        .query_one(
            &statement,
            &[
                &labels,
                &fp_tenants,
                &fps,
                &fp_tokens,
                &c.tenants,
                &c.tokens,
                &c.entries,
                &c.expires,
                keys,
                tenants,
                deltas,
            ],
        )
        .await;
    match done {
        Ok(_) => {
            increments.settle();
            Ok(Some(vec![InsertOutcome::Inserted; items.len()]))
        }
        Err(e) if e.code().is_some_and(|c| c.code() == GROUP_REFUSED) => Ok(None),
        Err(e) => Err(pg(e)),
    }
}

/// Sorts `rows` of `items` by index key, the order fingerprint rows are
/// written in, so concurrent transactions of several nodes lock them in
/// one order.
fn sort_by_index_key(rows: &mut [usize], items: &[&Insert]) {
    let key = |i: usize| {
        (
            items[i].tenant.as_str(),
            items[i].fingerprint.map(|f| *f.as_bytes()),
            i,
        )
    };
    rows.sort_by(|&a, &b| key(a).cmp(&key(b)));
}

/// Sorts `rows` of `items` by primary key, the order token rows are
/// written in.
fn sort_by_token(rows: &mut [usize], items: &[&Insert]) {
    let key = |i: usize| (items[i].tenant.as_str(), items[i].token.as_str(), i);
    rows.sort_by(|&a, &b| key(a).cmp(&key(b)));
}

/// The columns of `cardvault_tokens` rows for `rows` of `items`.
struct TokenColumns<'a> {
    tenants: Vec<&'a str>,
    tokens: Vec<&'a str>,
    entries: Vec<Vec<u8>>,
    expires: Vec<Option<i64>>,
}

fn token_columns<'a>(items: &[&'a Insert], rows: &[usize]) -> TokenColumns<'a> {
    TokenColumns {
        tenants: rows.iter().map(|&i| items[i].tenant.as_str()).collect(),
        tokens: rows.iter().map(|&i| items[i].token.as_str()).collect(),
        entries: rows
            .iter()
            .map(|&i| items[i].entry.encode(&items[i].token))
            .collect(),
        expires: rows
            .iter()
            .map(|&i| items[i].entry.meta.expires_ms.map(|t| t as i64))
            .collect(),
    }
}

/// Inserts `items` in one transaction, in order: the keys' state checked
/// (0), fingerprints (1), tokens (2), counters (3), each step's outcome
/// deciding what the next one writes.
async fn commit_in_steps(
    client: &mut deadpool_postgres::Object,
    items: &[&Insert],
    counters: &[(KeyLabel, u64)],
    baselines: &Baselines,
) -> Result<Vec<InsertOutcome>, StoreError> {
    let mut outcomes: Vec<Option<InsertOutcome>> = vec![None; items.len()];
    let tx = client.transaction().await.map_err(pg)?;
    // The steps read the index by the group's keys: planned for the
    // tables as they are, as every other read is (connect.rs), not by a
    // plan cached while they were small.
    tx.batch_execute("SET LOCAL plan_cache_mode = force_custom_plan")
        .await
        .map_err(pg)?;
    mark_stale_keys(&tx, items, &mut outcomes).await?;
    let fp_won = insert_fingerprints(&tx, items, &mut outcomes).await?;
    insert_tokens(&tx, items, &mut outcomes, &fp_won).await?;
    // 3. Counters.
    let increments = baselines.claim(counters);
    increments.add(&tx).await?;
    tx.commit().await.map_err(pg)?;
    increments.settle();
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or(InsertOutcome::TokenCollision))
        .collect())
}

/// Step 0: marks `StaleKey` the items sealed under a key no longer active.
async fn mark_stale_keys(
    tx: &Transaction<'_>,
    items: &[&Insert],
    outcomes: &mut [Option<InsertOutcome>],
) -> Result<(), StoreError> {
    // 0. The data keys that sealed the records must still be active: a
    // rotation committed by another node makes them stale (the vault reads
    // the keys again and seals again). The rows stay share-locked to the
    // end, so a rotation cannot commit in between.
    let labels = key_names(items);
    if !labels.is_empty() {
        let statement = tx.prepare_cached(LOCK_ACTIVE_KEYS).await.map_err(pg)?;
        let rows = tx.query(&statement, &[&labels]).await.map_err(pg)?;
        let stale: HashSet<Vec<u8>> = rows
            .iter()
            .filter(|r| r.get::<_, &str>(1) != "active")
            .map(|r| r.get::<_, Vec<u8>>(0))
            .collect();
        if !stale.is_empty() {
            for (i, item) in items.iter().enumerate() {
                if keys_of(item).iter().any(|key| stale.contains(key)) {
                    outcomes[i] = Some(InsertOutcome::StaleKey);
                }
            }
        }
    }
    Ok(())
}

/// Step 1: indexes the fingerprints of the items still in; returns the
/// items whose fingerprint this call indexed, and marks the others
/// `Existing` with the holder's token.
async fn insert_fingerprints(
    tx: &Transaction<'_>,
    items: &[&Insert],
    outcomes: &mut [Option<InsertOutcome>],
) -> Result<HashSet<usize>, StoreError> {
    // 1. Fingerprints: the first writer of each (tenant, fingerprint) wins.
    // Rows go in key order, so concurrent transactions of several nodes
    // take their locks in one order and do not deadlock.
    let mut with_fp: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].fingerprint.is_some() && outcomes[i].is_none())
        .collect();
    sort_by_index_key(&mut with_fp, items);
    let mut fp_won: HashSet<usize> = HashSet::new();
    if !with_fp.is_empty() {
        let (tenants, fps, tokens) = fingerprint_columns(items, &with_fp);
        let statement = tx.prepare_cached(INSERT_FINGERPRINTS).await.map_err(pg)?;
        let rows = tx
            .query(&statement, &[&tenants, &fps, &tokens])
            .await
            .map_err(pg)?;
        let mut won: HashSet<(String, Vec<u8>, String)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        for &i in &with_fp {
            let (tenant, fingerprint) = index_key(items[i]);
            let key = (tenant, fingerprint, items[i].token.to_string());
            // Taken out so a duplicate item of the same call loses.
            if won.remove(&key) {
                fp_won.insert(i);
            }
        }
        let lost: Vec<usize> = with_fp
            .iter()
            .copied()
            .filter(|i| !fp_won.contains(i))
            .collect();
        if !lost.is_empty() {
            let tenants: Vec<&str> = lost.iter().map(|&i| items[i].tenant.as_str()).collect();
            let fps: Vec<&[u8]> = lost
                .iter()
                .filter_map(|&i| {
                    items[i]
                        .fingerprint
                        .as_ref()
                        .map(|f| f.as_bytes().as_slice())
                })
                .collect();
            let statement = tx.prepare_cached(FINGERPRINT_HOLDERS).await.map_err(pg)?;
            let rows = tx.query(&statement, &[&tenants, &fps]).await.map_err(pg)?;
            let holders: HashMap<(String, Vec<u8>), String> = rows
                .iter()
                .map(|r| ((r.get(0), r.get(1)), r.get(2)))
                .collect();
            for &i in &lost {
                let key = index_key(items[i]);
                let holder = holders.get(&key).ok_or_else(|| {
                    StoreError::Backend("a fingerprint vanished during insert".into())
                })?;
                outcomes[i] = Some(InsertOutcome::Existing(token_of(
                    holder,
                    "fingerprint entry",
                )?));
            }
        }
    }
    Ok(fp_won)
}

/// Step 2: stores the tokens of the items still in (`Inserted`, or
/// `TokenCollision` with the fingerprint it indexed taken back).
async fn insert_tokens(
    tx: &Transaction<'_>,
    items: &[&Insert],
    outcomes: &mut [Option<InsertOutcome>],
    fp_won: &HashSet<usize>,
) -> Result<(), StoreError> {
    // 2. Tokens, for the items still in: a taken token is a collision.
    let mut candidates: Vec<usize> = (0..items.len())
        .filter(|&i| outcomes[i].is_none())
        .collect();
    sort_by_token(&mut candidates, items);
    if !candidates.is_empty() {
        let c = token_columns(items, &candidates);
        let statement = tx.prepare_cached(INSERT_TOKENS).await.map_err(pg)?;
        let rows = tx
            .query(&statement, &[&c.tenants, &c.tokens, &c.entries, &c.expires])
            .await
            .map_err(pg)?;
        let mut stored: HashSet<(String, String)> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let mut undo = Vec::new();
        for &i in &candidates {
            let key = (items[i].tenant.to_string(), items[i].token.to_string());
            if stored.remove(&key) {
                outcomes[i] = Some(InsertOutcome::Inserted);
            } else {
                outcomes[i] = Some(InsertOutcome::TokenCollision);
                if fp_won.contains(&i) {
                    undo.push(i);
                }
            }
        }
        if !undo.is_empty() {
            let (tenants, fps, tokens) = fingerprint_columns(items, &undo);
            let statement = tx.prepare_cached(UNDO_FINGERPRINTS).await.map_err(pg)?;
            tx.execute(&statement, &[&tenants, &fps, &tokens])
                .await
                .map_err(pg)?;
        }
    }
    Ok(())
}

/// The (tenant, fingerprint) pair an insert is indexed under, as the
/// `cardvault_fingerprints` rows read back hold them.
fn index_key(item: &Insert) -> (String, Vec<u8>) {
    (
        item.tenant.to_string(),
        item.fingerprint
            .map(|f| f.as_bytes().to_vec())
            .unwrap_or_default(),
    )
}
