//! Point reads of concurrent requests batched: every token-entry read and
//! fingerprint lookup queued while earlier batches ran goes into one
//! query of each kind (`unnest` of the keys joined to the primary key), at
//! most [`IN_FLIGHT`] batches at a time. One request alone is read at
//! once; under load one statement serves dozens of requests, which is
//! most of what a point read costs the database and the node (the
//! profile in docs/BENCHMARKS.md: a statement per request).

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::connect::pool_error;
use super::schema::pg;
use super::token_of;
use crate::crypto::Fingerprint;
use crate::domain::{TenantId, Token};
use crate::store::StoreError;

/// Reads taken into one batch at most.
const MAX_BATCH: usize = 512;

/// Batches running at once (each on its own pooled connection).
pub(super) const IN_FLIGHT: usize = 2;

/// Token entries by (tenant, token).
const READ_ENTRIES: &str = "SELECT t.tenant, t.token, t.entry \
     FROM unnest($1::text[], $2::text[]) AS w(tenant, token) \
     JOIN cardvault_tokens t ON t.tenant = w.tenant AND t.token = w.token";

/// Index entries by (tenant, fingerprint).
const READ_FINGERPRINTS: &str = "SELECT f.tenant, f.fingerprint, f.token \
     FROM unnest($1::text[], $2::bytea[]) AS w(tenant, fp) \
     JOIN cardvault_fingerprints f ON f.tenant = w.tenant AND f.fingerprint = w.fp";

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A token-entry read of a batch: owner, token, where its answer goes.
type EntryRead = (TenantId, Token, Reply<Option<Vec<u8>>>);

/// A fingerprint lookup of a batch: owner, fingerprints, where its answer
/// goes.
type TokensRead = (TenantId, Vec<Fingerprint>, Reply<Vec<Option<Token>>>);

/// One caller's read.
pub(super) enum Read {
    /// The stored entry bytes of a token.
    Entry {
        tenant: TenantId,
        token: Token,
        reply: Reply<Option<Vec<u8>>>,
    },
    /// The tokens of fingerprints, in input order.
    Tokens {
        tenant: TenantId,
        fingerprints: Vec<Fingerprint>,
        reply: Reply<Vec<Option<Token>>>,
    },
}

/// The batching task: gathers what is queued, and runs each batch on its
/// own task once one of the [`IN_FLIGHT`] slots is free (reads queue up
/// meanwhile, and join the next batch).
pub(super) async fn run(pool: Pool, mut reads: mpsc::Receiver<Read>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(first) = reads.recv().await else {
            return;
        };
        let batch = super::with_queued(first, &mut reads, MAX_BATCH);
        let pool = pool.clone();
        tokio::spawn(async move {
            answer(&pool, batch).await;
            drop(slot);
        });
    }
}

/// Runs one batch: at most one query for entries, one for fingerprints.
async fn answer(pool: &Pool, batch: Vec<Read>) {
    let (mut entries, mut lookups): (Vec<EntryRead>, Vec<TokensRead>) = (Vec::new(), Vec::new());
    for read in batch {
        match read {
            Read::Entry {
                tenant,
                token,
                reply,
            } => entries.push((tenant, token, reply)),
            Read::Tokens {
                tenant,
                fingerprints,
                reply,
            } => lookups.push((tenant, fingerprints, reply)),
        }
    }
    let client = pool.get().await.map_err(pool_error);
    if !entries.is_empty() {
        let found = match &client {
            Ok(client) => read_entries(client, &entries).await,
            Err(e) => Err(e.clone()),
        };
        send_each(entries.into_iter().map(|(_, _, reply)| reply), found);
    }
    if !lookups.is_empty() {
        let found = match &client {
            Ok(client) => read_tokens(client, &lookups).await,
            Err(e) => Err(e.clone()),
        };
        send_each(lookups.into_iter().map(|(_, _, reply)| reply), found);
    }
}

/// Each caller its answer, or the batch's failure to every one of them.
fn send_each<T>(
    replies: impl Iterator<Item = Reply<T>>,
    answers: Result<Vec<Result<T, StoreError>>, StoreError>,
) {
    match answers {
        Ok(answers) => replies.zip(answers).for_each(|(reply, answer)| {
            let _ = reply.send(answer);
        }),
        Err(e) => replies.for_each(|reply| {
            let _ = reply.send(Err(e.clone()));
        }),
    }
}

/// The entries of the batch's tokens, in its order. A token asked for
/// twice in one batch comes back in two rows; each asker gets a copy.
async fn read_entries(
    client: &deadpool_postgres::Object,
    entries: &[EntryRead],
) -> Result<Vec<Result<Option<Vec<u8>>, StoreError>>, StoreError> {
    let tenants: Vec<&str> = entries.iter().map(|(t, _, _)| t.as_str()).collect();
    let tokens: Vec<&str> = entries.iter().map(|(_, t, _)| t.as_str()).collect();
    let rows = query(client, READ_ENTRIES, &tenants, &tokens).await?;
    let by_key: HashMap<(&str, &str), &[u8]> = rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    Ok(entries
        .iter()
        .map(|(tenant, token, _)| {
            Ok(by_key
                .get(&(tenant.as_str(), token.as_str()))
                .map(|entry| entry.to_vec()))
        })
        .collect())
}

/// The tokens of each lookup's fingerprints, in the batch's order.
async fn read_tokens(
    client: &deadpool_postgres::Object,
    lookups: &[TokensRead],
) -> Result<Vec<Result<Vec<Option<Token>>, StoreError>>, StoreError> {
    let mut tenants: Vec<&str> = Vec::new();
    let mut fps: Vec<&[u8]> = Vec::new();
    for (tenant, fingerprints, _) in lookups {
        for fp in fingerprints {
            tenants.push(tenant.as_str());
            fps.push(fp.as_bytes().as_slice());
        }
    }
    let rows = query(client, READ_FINGERPRINTS, &tenants, &fps).await?;
    let by_key: HashMap<(&str, &[u8]), &str> = rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    Ok(lookups
        .iter()
        .map(|(tenant, fingerprints, _)| {
            fingerprints
                .iter()
                .map(|fp| {
                    by_key
                        .get(&(tenant.as_str(), fp.as_bytes().as_slice()))
                        .map(|t| token_of(t, "fingerprint entry"))
                        .transpose()
                })
                .collect()
        })
        .collect())
}

/// One prepared two-array query.
async fn query<A, B>(
    client: &deadpool_postgres::Object,
    sql: &str,
    first: &A,
    second: &B,
) -> Result<Vec<tokio_postgres::Row>, StoreError>
where
    A: tokio_postgres::types::ToSql + Sync,
    B: tokio_postgres::types::ToSql + Sync,
{
    let statement = client.prepare_cached(sql).await.map_err(pg)?;
    client.query(&statement, &[first, second]).await.map_err(pg)
}
