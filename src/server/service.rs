//! The whole vault as `serve` runs it: refusals of unsafe files, the KEK
//! provider, the audit trail, the vault core and both listeners, started and
//! stopped in the right order.

use std::net::SocketAddr;
use std::sync::Arc;

use super::running::{OpsListener, Running, start};
use crate::audit::{AuditLog, Event, EventKind, PendingAudit};
use crate::config::{Config, KekSource};
use crate::dirlock::DirLock;
use crate::runtime::custody::{Custody, Kek, open_kek};
use crate::runtime::reencrypt::Reseals;
use crate::vault::{Vault, VaultOptions};

/// The whole vault as `serve` runs it: KEK provider, audit trail, vault
/// core and both listeners, started and stopped in the right order.
pub struct Service {
    /// Where the API listens.
    pub api_addr: SocketAddr,
    /// Where the ops listener listens.
    pub ops_addr: SocketAddr,
    /// The hosted fields' public listener (`[collect]`): its address and
    /// public URL.
    pub collect: Option<(SocketAddr, String)>,
    running: Running,
    vault: Arc<Vault>,
    custody: Arc<Custody>,
    reseals: Arc<Reseals>,
    /// The cryptoperiod watcher and its stop switch.
    watcher: (
        tokio::sync::watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    ),
    audit: AuditLog,
    /// Held until the service is dropped.
    _data_lock: DirLock,
}

/// Checks this build against the advisory database `db`: publishes
/// `cardvault_known_vulnerabilities` and raises the `known_vulnerabilities`
/// alert when it is above 0.
fn check_supply_chain(db: &std::path::Path, audit: &AuditLog) {
    let found = crate::supply_chain::dependencies()
        .and_then(|deps| crate::supply_chain::known_vulnerabilities(db, &deps));
    match found {
        Ok(found) => {
            metrics::gauge!("cardvault_known_vulnerabilities").set(found.len() as f64);
            if found.is_empty() {
                tracing::info!(db = %db.display(), "no known advisory affects this build");
                return;
            }
            let ids: Vec<&str> = found.iter().map(|f| f.id.as_str()).collect();
            tracing::warn!(alert = "known_vulnerabilities", advisories = ?ids, "alert: known advisories affect this build");
            metrics::counter!("cardvault_alerts_total", "rule" => "known_vulnerabilities")
                .increment(1);
            let mut event = Event::new(EventKind::Alert).with_detail(format!(
                "known_vulnerabilities: {}",
                found
                    .iter()
                    .map(|f| format!("{} ({} {})", f.id, f.package, f.version))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            event.count = Some(found.len() as u64);
            audit.record(event);
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot check this build against the advisory database")
        }
    }
}

impl Service {
    /// Refuses private keys readable by others and directories owned by
    /// another user, opens the KEK, the audit trail (which must be writable:
    /// a vault that cannot account for reveals does not start) and the
    /// vault, then starts serving and records `vault_start`.
    pub async fn launch(config: &Config) -> anyhow::Result<Service> {
        let source = config.kek()?;
        refuse_unsafe_files(config, &source)?;
        // First of all: one vault per data directory. A second process stops
        // here, before it touches the KEK, the trail or the database.
        let data_lock = DirLock::acquire(&config.storage.data_dir, "data directory")?;
        // Then the ops port, so that a long start is seen as one.
        let ops = OpsListener::start(config).await?;
        ops.step(0);
        let kek = open_kek(&source)?;
        ops.step(1);
        let (audit, pending) = AuditLog::prepare(config.node_audit_settings())?;
        let options = vault_options(config, &audit);
        ops.step(2);
        let (vault, custody) = open_vault(config, kek, &source, pending, options).await?;
        let custody = Arc::new(custody);
        let reseals = Reseals::new(Arc::clone(&vault), audit.clone(), config.keys);
        ops.step(3);
        let running = start(
            config,
            Arc::clone(&vault),
            Arc::clone(&custody),
            Arc::clone(&reseals),
            audit.clone(),
            ops,
        )
        .await?;
        let (stop_watch, watch_rx) = tokio::sync::watch::channel(false);
        let watcher = crate::runtime::cryptoperiod::spawn(
            Arc::clone(&vault),
            Arc::clone(&reseals),
            audit.clone(),
            config.keys,
            watch_rx,
        );
        resume_when_unsealed(Arc::clone(&reseals), Arc::clone(&vault));
        announce(&audit, &running);
        if let Some(db) = config.supply_chain.advisory_db.clone() {
            let audit = audit.clone();
            tokio::task::spawn_blocking(move || check_supply_chain(&db, &audit));
        }
        Ok(Service {
            api_addr: running.api_addr,
            ops_addr: running.ops_addr,
            collect: running.collect.clone(),
            running,
            vault,
            custody,
            reseals,
            watcher: (stop_watch, watcher),
            audit,
            _data_lock: data_lock,
        })
    }

    /// Reloads the TLS configuration (server certificate and key, client
    /// CA, CRLs) and the principals table from `config`, or keeps the old
    /// ones when `config` is `Err` or a file in it is bad. Logged, counted
    /// (`cardvault_reloads_total{outcome}`) and audited
    /// (`config_reloaded`). Other settings need a restart.
    pub fn reload(&self, config: Result<&Config, &dyn std::fmt::Display>) -> bool {
        let result = match config {
            Ok(config) => self.running.reload(config).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let mut event = Event::new(EventKind::ConfigReloaded);
        let ok = match result {
            Ok(()) => {
                tracing::info!("reloaded the TLS configuration and the principals");
                metrics::counter!("cardvault_reloads_total", "outcome" => "ok").increment(1);
                event.detail = Some("tls and principals".to_owned());
                true
            }
            Err(why) => {
                tracing::error!(error = %why, "reload failed; the previous configuration stays in force");
                metrics::counter!("cardvault_reloads_total", "outcome" => "failed").increment(1);
                event.outcome = crate::audit::Outcome::Error;
                event.detail = Some(why);
                false
            }
        };
        self.audit.record(event);
        ok
    }

    /// Whether the vault is sealed (waiting for custodians' shares).
    pub fn is_sealed(&self) -> bool {
        self.vault.is_sealed()
    }

    /// Turns `/readyz` to 503 while everything keeps serving; `stop`
    /// follows after the drain delay.
    pub fn begin_drain(&self) {
        self.running.begin_drain();
    }

    /// Drains and stops the listeners, closes the vault (exact counters),
    /// records `vault_stop` and closes the audit trail.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.running.shutdown().await;
        let _ = self.watcher.0.send(true);
        let _ = self.watcher.1.await;
        self.reseals.stop().await;
        drop(self.reseals);
        let audit_started = self.custody.audit_started();
        drop(self.custody);
        let closed = match Arc::try_unwrap(self.vault) {
            Ok(vault) => vault.close().await.map_err(anyhow::Error::from),
            Err(_) => {
                tracing::warn!(
                    "vault still referenced at shutdown; closing without final counters"
                );
                Ok(())
            }
        };
        self.audit.record(Event::new(EventKind::VaultStop));
        if audit_started {
            self.audit.close().await?;
        } else {
            tracing::warn!(
                "stopping a vault that was never unsealed: its queued audit events (unseal attempts) are in this log only"
            );
        }
        closed
    }
}

/// Refuses private keys readable by others and directories owned by another
/// user.
fn refuse_unsafe_files(config: &Config, source: &KekSource) -> anyhow::Result<()> {
    let mut secrets = vec![("TLS private key (api.key)", config.api.key.as_path())];
    match source {
        KekSource::File(path) => secrets.push(("KEK file (storage.key_file)", path)),
        KekSource::Pkcs11 { pin_file, .. } => {
            secrets.push(("HSM PIN file (kek.pin_file)", pin_file))
        }
        KekSource::Shamir(_) => {}
    }
    crate::hardening::refuse_unsafe_files(
        &secrets,
        &[
            (
                "data directory (storage.data_dir)",
                &config.storage.data_dir,
            ),
            ("audit directory (audit.dir)", &config.audit.dir),
        ],
    )?;
    Ok(())
}

/// The vault's options from `config`, recording to `audit`.
fn vault_options(config: &Config, audit: &AuditLog) -> VaultOptions {
    let mut options = VaultOptions {
        tenant_modes: config.tenant_modes(),
        tenant_profiles: config.tenant_profiles(),
        audit: Some(audit.clone()),
        ..VaultOptions::default()
    };
    options.store.min_free_bytes = config.storage.min_free_bytes;
    options.store.block_cache_bytes = config.storage.block_cache_bytes.get();
    options.store.write_buffer_bytes = config.storage.write_buffer_bytes.get();
    options
}

/// Opens the store (RocksDB here, or the shared PostgreSQL) and the vault
/// on it: unsealed with a ready KEK, sealed until custodians unseal it
/// otherwise.
async fn open_vault(
    config: &Config,
    kek: Kek,
    source: &KekSource,
    pending: PendingAudit,
    options: VaultOptions,
) -> anyhow::Result<(Arc<Vault>, Custody)> {
    // A node on PostgreSQL opens no RocksDB; its data directory keeps
    // only its lock and custody files.
    let shared: Option<Box<dyn crate::store::Store>> = match config.storage.backend {
        crate::config::StorageBackend::Rocksdb => None,
        crate::config::StorageBackend::Postgres => {
            let store =
                crate::store::postgres::PgStore::connect(&config.storage.postgres()?).await?;
            let describe = crate::store::Store::describe(&store);
            crate::store::transfer::refuse_unfinished(&store, describe).await?;
            Some(Box::new(store))
        }
    };
    Ok(match kek {
        Kek::Ready(provider) => {
            pending.start(provider.as_ref()).map_err(|(_, e)| e)?;
            let vault = Arc::new(match shared {
                Some(store) => Vault::with_store(store, provider, options).await?,
                None => Vault::open(&config.storage.data_dir, provider, options)?,
            });
            let custody =
                Custody::fixed(Arc::clone(&vault), source.clone(), &config.storage.data_dir);
            (vault, custody)
        }
        Kek::Sealed(set_file) => {
            let vault = Arc::new(match shared {
                Some(store) => Vault::with_store_sealed(store, options),
                None => Vault::open_sealed(&config.storage.data_dir, options)?,
            });
            let custody = Custody::sealed(Arc::clone(&vault), pending, source.clone(), set_file)?;
            tracing::warn!(
                "vault sealed: the KEK is split among custodians; it serves once enough of them run `cardvault unseal`"
            );
            (vault, custody)
        }
    })
}

/// Resumes interrupted re-encryption jobs once the keys are in memory.
fn resume_when_unsealed(reseals: Arc<Reseals>, vault: Arc<Vault>) {
    tokio::spawn(async move {
        while vault.is_sealed() {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        reseals.resume_all().await;
    });
}

/// Records `vault_start` and logs the start.
fn announce(audit: &AuditLog, running: &Running) {
    let public = running
        .collect
        .as_ref()
        .map(|(addr, _)| format!(" public {addr}"))
        .unwrap_or_default();
    audit.record(Event::new(EventKind::VaultStart).with_detail(format!(
        "api {} ops {}{public} version {} commit {}",
        running.api_addr,
        running.ops_addr,
        env!("CARGO_PKG_VERSION"),
        env!("CARDVAULT_GIT_COMMIT")
    )));
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        commit = env!("CARDVAULT_GIT_COMMIT"),
        "cardvault started"
    );
}
