//! The background sweeps `serve` runs beside the listeners, each until
//! shutdown: security codes past their time to live wiped every second,
//! expired tokens deleted every second (audited), the oracle guard's
//! idle groups forgotten every 10 s (its size published), and collection
//! sessions an hour past their expiry deleted every 10 s (audited), with
//! the card-testing rules' idle state.

use std::sync::Arc;

use tokio::sync::watch;

use super::oracle_guard::OracleGuard;
use crate::vault::cvc::CvcHold;

/// Removes expired security codes every second, so a code is gone at its
/// time to live even if nobody asks for it.
pub async fn cvcs(cvcs: Arc<CvcHold>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => { cvcs.sweep(); }
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Forgets the oracle guard's expired cards every 10 s and publishes its
/// size (`cardvault_oracle_guard_groups`, `…_cards`).
pub async fn oracle_guard(guard: Arc<OracleGuard>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let stats = guard.sweep();
                ::metrics::gauge!("cardvault_oracle_guard_groups").set(stats.groups as f64);
                ::metrics::gauge!("cardvault_oracle_guard_cards").set(stats.cards as f64);
            }
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Tokens deleted per sweep commit.
const EXPIRY_SWEEP_BATCH: usize = 1000;

/// Deletes expired tokens every second (at once again while a whole batch
/// was due), so an expiring token's record is gone soon after its time,
/// not only hidden. Each commit that deleted some is audited
/// (`tokens_expired` with the count) and counted.
pub async fn expired_tokens(
    vault: Arc<crate::vault::Vault>,
    audit: crate::audit::AuditLog,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        loop {
            match vault.sweep_expired(EXPIRY_SWEEP_BATCH).await {
                Ok(0) => break,
                Ok(deleted) => {
                    ::metrics::counter!("cardvault_tokens_expired_total").increment(deleted as u64);
                    let mut event =
                        crate::audit::Event::new(crate::audit::EventKind::TokensExpired);
                    event.count = Some(deleted as u64);
                    audit.record(event);
                    if deleted < EXPIRY_SWEEP_BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the expired-token sweep failed; retrying in a second");
                    break;
                }
            }
        }
    }
}

/// Sessions deleted per sweep commit.
const SESSION_SWEEP_BATCH: usize = 500;

/// Deletes collection sessions an hour past their expiry every 10 s (each
/// pass that deleted some is audited as `collect_sessions_swept`) and
/// forgets the card-testing rules' idle keys.
pub async fn collect_sessions(
    vault: Arc<crate::vault::Vault>,
    collect: Arc<super::collect::Collect>,
    audit: crate::audit::AuditLog,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        collect.sweep();
        match vault.sweep_sessions(SESSION_SWEEP_BATCH).await {
            Ok(0) => {}
            Ok(deleted) => {
                ::metrics::counter!("cardvault_collect_sessions_swept_total")
                    .increment(deleted as u64);
                let mut event =
                    crate::audit::Event::new(crate::audit::EventKind::CollectSessionsSwept);
                event.count = Some(deleted as u64);
                audit.record(event);
            }
            Err(e) => {
                tracing::warn!(error = %e, "the collection-session sweep failed; retrying in 10 s");
            }
        }
    }
}
