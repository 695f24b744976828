//! Where the vault is in its life, as the ops listener reports it from the
//! moment its port opens — before the KEK, the trail and the store are
//! open — so that an orchestrator sees a vault that is *starting* (which
//! step, how far) rather than one that does not answer: `starting`, then
//! `serving` (or `draining`). The gauges that describe the vault's state
//! are set from here on every scrape, so each is present from the first:
//! `cardvault_starting`, `cardvault_start_progress_ratio`,
//! `cardvault_ready`, `cardvault_sealed`, and for a RocksDB store
//! `cardvault_store_free_bytes` and `cardvault_store_reserve_bytes`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::runtime::custody::{Custody, SealStatus};
use crate::store::Readiness;
use crate::vault::Vault;

/// The steps of a start, in order.
pub const STEPS: [&str; 4] = [
    "opening the KEK",
    "opening the audit trail",
    "opening the store",
    "starting the listeners",
];

/// The parts a serving vault reports on.
struct Serving {
    ready: Arc<AtomicBool>,
    custody: Arc<Custody>,
    vault: Arc<Vault>,
}

/// The vault's phase: starting (at a step) until [`Phase::serve`].
pub struct Phase {
    step: AtomicUsize,
    serving: OnceLock<Serving>,
    /// The RocksDB data directory and its reserve (none for PostgreSQL).
    disk: Option<(PathBuf, u64)>,
}

/// What the ops routes answer, read at once.
pub struct Status {
    /// `starting`, `serving` or `draining`.
    pub state: &'static str,
    /// Whether `/readyz` answers 200.
    pub ready: bool,
    /// Whether the vault is sealed (false while starting: not yet known).
    pub sealed: bool,
    /// The body of `/healthz` and `/readyz`.
    pub body: serde_json::Value,
}

impl Phase {
    /// A vault starting, at its first step; `disk` is the RocksDB data
    /// directory and its reserve, if it has one.
    pub fn starting(disk: Option<(PathBuf, u64)>) -> Arc<Phase> {
        Arc::new(Phase {
            step: AtomicUsize::new(0),
            serving: OnceLock::new(),
            disk,
        })
    }

    /// The start has reached step `index` of [`STEPS`].
    pub fn step(&self, index: usize) {
        self.step
            .store(index.min(STEPS.len() - 1), Ordering::SeqCst);
        tracing::info!(step = STEPS[index.min(STEPS.len() - 1)], "starting");
    }

    /// The vault serves: from now on its readiness, seal and store are
    /// reported.
    pub fn serve(&self, ready: Arc<AtomicBool>, custody: Arc<Custody>, vault: Arc<Vault>) {
        let _ = self.serving.set(Serving {
            ready,
            custody,
            vault,
        });
    }

    /// The state now, with `/healthz`'s body: `{"state", "storage",
    /// "sealed", "shares_received", "threshold", "version"}` once serving,
    /// `{"state": "starting", "step", "progress", "version"}` before.
    pub fn status(&self) -> Status {
        let Some(serving) = self.serving.get() else {
            let step = self.step.load(Ordering::SeqCst);
            return Status {
                state: "starting",
                ready: false,
                sealed: false,
                body: serde_json::json!({
                    "state": "starting",
                    "step": STEPS[step],
                    "progress": self.progress(),
                    "version": env!("CARGO_PKG_VERSION"),
                }),
            };
        };
        let live = serving.ready.load(Ordering::SeqCst);
        let storage = serving.vault.store_readiness();
        let seal: SealStatus = serving.custody.status();
        let state = if live { "serving" } else { "draining" };
        Status {
            state,
            ready: live && !seal.sealed && storage == Readiness::Ready,
            sealed: seal.sealed,
            body: serde_json::json!({
                "state": state,
                "storage": storage.as_str(),
                "sealed": seal.sealed,
                "shares_received": seal.shares_received,
                "threshold": seal.threshold,
                "version": env!("CARGO_PKG_VERSION"),
            }),
        }
    }

    /// Steps done out of all, 0 to 1 (1 once serving).
    fn progress(&self) -> f64 {
        if self.serving.get().is_some() {
            return 1.0;
        }
        self.step.load(Ordering::SeqCst) as f64 / STEPS.len() as f64
    }

    /// Sets the state gauges (called on every scrape).
    pub fn publish(&self) {
        let status = self.status();
        let flag = |on: bool| if on { 1.0 } else { 0.0 };
        metrics::gauge!("cardvault_starting").set(flag(status.state == "starting"));
        metrics::gauge!("cardvault_start_progress_ratio").set(self.progress());
        metrics::gauge!("cardvault_ready").set(flag(status.ready));
        metrics::gauge!("cardvault_sealed").set(flag(status.sealed));
        if let Some((dir, reserve)) = &self.disk
            && let Ok(stat) = rustix::fs::statvfs(dir)
        {
            metrics::gauge!("cardvault_store_free_bytes")
                .set(stat.f_bavail.saturating_mul(stat.f_frsize) as f64);
            metrics::gauge!("cardvault_store_reserve_bytes").set(*reserve as f64);
        }
    }
}
