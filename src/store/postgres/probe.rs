//! The readiness probe: every second, on its own connection (so a busy
//! pool never delays it), a logical-decoding message is written and
//! committed on the primary — refused by a standby, and a commit that
//! waits for the synchronous standby like every insert's. A probe that fails
//! marks the store unreachable; one that has not finished within the
//! commit bound marks it stalled; `/readyz` answers 503 until a probe
//! succeeds again, so a load balancer drains a node whose writes cannot
//! commit and sends it traffic again by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;

use crate::store::Readiness;

/// How often the probe runs.
const EVERY: Duration = Duration::from_secs(1);

/// The probe's latest verdict, shared with the store.
#[derive(Default)]
pub(super) struct Verdict(AtomicU8);

impl Verdict {
    pub(super) fn get(&self) -> Readiness {
        decode(self.0.load(Ordering::Relaxed))
    }

    /// Sets the verdict; the previous one.
    fn set(&self, readiness: Readiness) -> Readiness {
        let code = match readiness {
            Readiness::Ready => 0,
            Readiness::Unreachable => 1,
            Readiness::CommitStalled => 2,
        };
        decode(self.0.swap(code, Ordering::Relaxed))
    }
}

/// The readiness a stored code stands for.
fn decode(code: u8) -> Readiness {
    match code {
        0 => Readiness::Ready,
        1 => Readiness::Unreachable,
        _ => Readiness::CommitStalled,
    }
}

/// Probes through `pool` (one connection of its own) until the task is
/// aborted; a probe not done within `bound` counts as a stalled commit.
pub(super) async fn run(pool: Pool, verdict: Arc<Verdict>, bound: Duration) {
    loop {
        let now = match tokio::time::timeout(bound, once(&pool)).await {
            Ok(Ok(())) => Readiness::Ready,
            Ok(Err(readiness)) => readiness,
            Err(_) => Readiness::CommitStalled,
        };
        let before = verdict.set(now);
        metrics::gauge!("cardvault_store_ready").set(if now == Readiness::Ready {
            1.0
        } else {
            0.0
        });
        if before != now {
            if now == Readiness::Ready {
                tracing::info!(was = before.as_str(), "the database takes writes again");
            } else {
                tracing::warn!(
                    state = now.as_str(),
                    bound_ms = bound.as_millis() as u64,
                    "the database does not take writes: /readyz answers 503"
                );
            }
        }
        tokio::time::sleep(EVERY).await;
    }
}

/// One probe: a WAL record written and committed — refused by a server
/// in recovery (a standby), and, like every insert's commit, waiting for
/// the synchronous standby. (A transaction that only takes an id writes
/// no WAL of its own, so its commit never waits: it proves nothing.)
async fn once(pool: &Pool) -> Result<(), Readiness> {
    let client = pool.get().await.map_err(|_| Readiness::Unreachable)?;
    match client
        .execute(
            "SELECT pg_logical_emit_message(true, 'cardvault', 'readiness probe')",
            &[],
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(_) => {
            // A server that went read-only (demoted) or a broken
            // connection: the next probe connects afresh, to whichever
            // server is writable.
            let _ = deadpool_postgres::Object::take(client);
            Err(Readiness::Unreachable)
        }
    }
}
