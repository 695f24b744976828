//! Re-encryption jobs as the service runs them: at most one per tenant, a
//! background task that counts the records under older data keys, drives
//! `Vault::reseal_step` batch after batch at `[keys] reencrypt_items_per_s`,
//! then lets the vault destroy the emptied versions. Progress is kept for
//! `GET /v1/admin/keys/{tenant}/reencrypt` and the metrics
//! `cardvault_reencrypt_remaining{tenant}` and `_done_total{tenant}`. A job
//! interrupted by a stop or a crash resumes from its stored checkpoint at
//! the next start; `stop` lets running steps finish and waits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit::{AuditLog, Event, EventKind, Outcome};
use crate::config::KeysConfig;
use crate::domain::TenantId;
use crate::vault::{ResealCursor, Vault, VaultError};

/// Entries per read when counting records per version.
const COUNT_BATCH: usize = 4096;

/// Where a job stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Counting the records under older versions.
    Counting,
    /// Sealing records again.
    Running,
    /// The pass is done; counting again before destroying old versions.
    Retiring,
    /// Finished.
    Done,
    /// Stopped with the service or paused; resumes at the next start (of
    /// the service, or of the job).
    Stopped,
    /// Failed; `error` says why. Start it again to retry.
    Failed,
}

/// A job's progress, as the status route answers it.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    /// The tenant.
    pub tenant: String,
    /// Where it stands.
    pub state: JobState,
    /// Records under versions older than this are sealed again.
    pub target_version: u32,
    /// Records under older versions when the job (or its resumption) began.
    pub total: u64,
    /// Records sealed again so far.
    pub done: u64,
    /// Records still under older versions (estimate while running).
    pub remaining: u64,
    /// Records that could not be opened (they stay as they were).
    pub failed: u64,
    /// Records sealed again per second so far.
    pub rate_per_s: f64,
    /// Versions destroyed at the end.
    pub destroyed_versions: Vec<u32>,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct Job {
    tenant: TenantId,
    target: u32,
    started: Instant,
    started_ms: u64,
    total: AtomicU64,
    done: AtomicU64,
    remaining: AtomicU64,
    failed: AtomicU64,
    /// Set by a pause: the job stops after its current step.
    paused: std::sync::atomic::AtomicBool,
    state: Mutex<(JobState, Option<String>, Vec<u32>)>,
}

impl Job {
    fn set(&self, state: JobState) {
        if let Ok(mut s) = self.state.lock() {
            s.0 = state;
        }
    }

    fn is_active(&self) -> bool {
        self.state.lock().is_ok_and(|s| {
            matches!(
                s.0,
                JobState::Counting | JobState::Running | JobState::Retiring
            )
        })
    }

    fn status(&self) -> JobStatus {
        let (state, error, destroyed) = self.state.lock().map(|s| s.clone()).unwrap_or((
            JobState::Failed,
            Some("state lock poisoned".into()),
            Vec::new(),
        ));
        let done = self.done.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        JobStatus {
            tenant: self.tenant.to_string(),
            state,
            target_version: self.target,
            total: self.total.load(Ordering::Relaxed),
            done,
            remaining: self.remaining.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            rate_per_s: if secs > 0.0 { done as f64 / secs } else { 0.0 },
            destroyed_versions: destroyed,
            started_ms: self.started_ms,
            error,
        }
    }
}

/// Every tenant's re-encryption job.
pub struct Reseals {
    vault: Arc<Vault>,
    audit: AuditLog,
    settings: KeysConfig,
    jobs: Mutex<HashMap<TenantId, Arc<Job>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
}

impl Reseals {
    /// No jobs yet.
    pub fn new(vault: Arc<Vault>, audit: AuditLog, settings: KeysConfig) -> Arc<Reseals> {
        Arc::new(Reseals {
            vault,
            audit,
            settings,
            jobs: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            stop: watch::channel(false).0,
        })
    }

    /// Starts a job for `tenant` (re-seal everything older than its active
    /// version), or answers the one already running. A paused job whose
    /// target is still the active version continues from its checkpoint.
    pub async fn start(self: &Arc<Self>, tenant: &TenantId) -> Result<JobStatus, VaultError> {
        if let Some(job) = self.job(tenant).filter(|j| j.is_active()) {
            return Ok(job.status());
        }
        let active = self.vault.active_version(tenant)?;
        if let Some(cursor) = self.vault.reseal_checkpoint(tenant).await?
            && Some(cursor.target) == active
        {
            return Ok(self.spawn(tenant, cursor, "resumed from its checkpoint"));
        }
        let cursor = self.vault.reseal_begin(tenant).await?;
        Ok(self.spawn(tenant, cursor, "started"))
    }

    /// Pauses the tenant's running job after its current step; it keeps
    /// its checkpoint, and `start` (or a restart) continues it.
    pub async fn pause(&self, tenant: &TenantId) -> Option<JobStatus> {
        let job = self.job(tenant)?;
        job.paused.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(30);
        while job.is_active() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(job.status())
    }

    /// Resumes every job a stop or a crash interrupted (at service start).
    pub async fn resume_all(self: &Arc<Self>) {
        let pending = match self.vault.reseal_pending().await {
            Ok(pending) => pending,
            Err(e) => {
                tracing::error!(error = %e, "cannot read re-encryption checkpoints");
                return;
            }
        };
        for tenant in pending {
            match self.vault.reseal_checkpoint(&tenant).await {
                Ok(Some(cursor)) => {
                    tracing::info!(tenant = %tenant, "resuming re-encryption from its checkpoint");
                    self.spawn(&tenant, cursor, "resumed from its checkpoint");
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(tenant = %tenant, error = %e, "bad re-encryption checkpoint")
                }
            }
        }
    }

    /// The tenant's job, running or last run.
    pub fn status(&self, tenant: &TenantId) -> Option<JobStatus> {
        self.job(tenant).map(|job| job.status())
    }

    /// Stops every job after its current step (each keeps its checkpoint)
    /// and waits for them.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let tasks: Vec<JoinHandle<()>> = match self.tasks.lock() {
            Ok(mut tasks) => tasks.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for task in tasks {
            let _ = task.await;
        }
    }

    fn job(&self, tenant: &TenantId) -> Option<Arc<Job>> {
        self.jobs.lock().ok()?.get(tenant).cloned()
    }

    fn spawn(self: &Arc<Self>, tenant: &TenantId, cursor: ResealCursor, how: &str) -> JobStatus {
        let job = Arc::new(Job {
            tenant: tenant.clone(),
            target: cursor.target,
            started: Instant::now(),
            started_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            remaining: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            paused: std::sync::atomic::AtomicBool::new(false),
            state: Mutex::new((JobState::Counting, None, Vec::new())),
        });
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.insert(tenant.clone(), Arc::clone(&job));
        }
        self.record(
            &job,
            Outcome::Success,
            format!(
                "{how}: re-sealing every record older than data key v{}",
                cursor.target
            ),
        );
        let this = Arc::clone(self);
        let running = Arc::clone(&job);
        let task = tokio::spawn(async move {
            let outcome = this.run(&running, cursor).await;
            match outcome {
                Ok(true) => {}
                Ok(false) => running.set(JobState::Stopped),
                Err(e) => {
                    tracing::error!(tenant = %running.tenant, error = %e, "re-encryption failed");
                    if let Ok(mut s) = running.state.lock() {
                        s.0 = JobState::Failed;
                        s.1 = Some(e.to_string());
                    }
                    this.record(&running, Outcome::Error, format!("failed: {e}"));
                }
            }
        });
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
        job.status()
    }

    /// Runs the job to its end (`Ok(true)`) or to a stop (`Ok(false)`).
    async fn run(&self, job: &Job, mut cursor: ResealCursor) -> Result<bool, VaultError> {
        let tenant = job.tenant.as_str().to_owned();
        let counts = self.vault.count_versions(&job.tenant, COUNT_BATCH).await?;
        // A fingerprint-key rotation touches every record; a data-key one
        // only those under older versions.
        let moving = self.vault.fingerprint_rotation_pending(&job.tenant);
        let older: u64 = if moving {
            counts.values().sum()
        } else {
            counts.range(..job.target).map(|(_, n)| n).sum()
        };
        job.total.store(older, Ordering::Relaxed);
        job.remaining.store(older, Ordering::Relaxed);
        metrics::gauge!("cardvault_reencrypt_remaining", "tenant" => tenant.clone())
            .set(older as f64);
        job.set(JobState::Running);
        let rate = f64::from(self.settings.reencrypt_items_per_s.get());
        let batch = self.settings.reencrypt_batch.get();
        let mut stop = self.stop.subscribe();
        loop {
            if *stop.borrow() || job.paused.load(Ordering::Relaxed) {
                return Ok(false);
            }
            let began = Instant::now();
            let step = self.vault.reseal_step(&job.tenant, &cursor, batch).await?;
            let resealed = step.resealed as u64;
            job.done.fetch_add(resealed, Ordering::Relaxed);
            job.failed.fetch_add(step.failed as u64, Ordering::Relaxed);
            // This task is the only writer of `remaining`.
            let remaining = job
                .remaining
                .load(Ordering::Relaxed)
                .saturating_sub(resealed);
            job.remaining.store(remaining, Ordering::Relaxed);
            metrics::counter!("cardvault_reencrypt_done_total", "tenant" => tenant.clone())
                .increment(resealed);
            metrics::gauge!("cardvault_reencrypt_remaining", "tenant" => tenant.clone())
                .set(remaining as f64);
            match step.next {
                Some(next) => cursor = next,
                None => break,
            }
            let pace = Duration::from_secs_f64(step.resealed as f64 / rate);
            if let Some(wait) = pace.checked_sub(began.elapsed()) {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
            }
        }
        job.set(JobState::Retiring);
        let moved = moving && job.failed.load(Ordering::Relaxed) == 0;
        let (destroyed, fingerprints, left) = self
            .vault
            .reseal_retire(&job.tenant, job.target, moved, COUNT_BATCH)
            .await?;
        job.remaining.store(left, Ordering::Relaxed);
        metrics::gauge!("cardvault_reencrypt_remaining", "tenant" => tenant).set(left as f64);
        if let Ok(mut s) = job.state.lock() {
            s.0 = JobState::Done;
            s.2 = destroyed.clone();
        }
        let versions: Vec<String> = destroyed
            .iter()
            .map(|v| format!("v{v}"))
            .chain(fingerprints.iter().map(|v| format!("fingerprint v{v}")))
            .collect();
        self.record(
            job,
            Outcome::Success,
            format!(
                "finished: {} records sealed under v{}+; {}",
                job.done.load(Ordering::Relaxed),
                job.target,
                if left > 0 {
                    format!("{left} records still under older keys (unreadable ones are logged); nothing destroyed")
                } else if versions.is_empty() {
                    "no older key to destroy".to_owned()
                } else {
                    format!("destroyed {}", versions.join(", "))
                }
            ),
        );
        tracing::info!(tenant = %job.tenant, done = job.done.load(Ordering::Relaxed), destroyed = ?destroyed, "re-encryption finished");
        Ok(true)
    }

    fn record(&self, job: &Job, outcome: Outcome, detail: String) {
        let mut event = Event::new(EventKind::Reencrypt)
            .with_tenant(job.tenant.as_str())
            .with_detail(detail);
        event.outcome = outcome;
        event.count = Some(job.done.load(Ordering::Relaxed));
        self.audit.record(event);
    }
}
