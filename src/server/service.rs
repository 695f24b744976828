//! The whole vault as `serve` runs it: refusals of unsafe files, the KEK
//! provider, the audit trail, the vault core and both listeners, started and
//! stopped in the right order.

use std::net::SocketAddr;
use std::sync::Arc;

use super::running::{Running, start};
use crate::audit::{AuditLog, Event, EventKind};
use crate::config::Config;
use crate::crypto::KeyFileProvider;
use crate::dirlock::DirLock;
use crate::vault::{Vault, VaultOptions};

/// The whole vault as `serve` runs it: KEK provider, audit trail, vault
/// core and both listeners, started and stopped in the right order.
pub struct Service {
    /// Where the API listens.
    pub api_addr: SocketAddr,
    /// Where the ops listener listens.
    pub ops_addr: SocketAddr,
    running: Running,
    vault: Arc<Vault>,
    audit: AuditLog,
    /// Held until the service is dropped.
    _data_lock: DirLock,
}

impl Service {
    /// Refuses private keys readable by others and directories owned by
    /// another user, opens the KEK, the audit trail (which must be writable:
    /// a vault that cannot account for reveals does not start) and the
    /// vault, then starts serving and records `vault_start`.
    pub async fn launch(config: &Config) -> anyhow::Result<Service> {
        crate::hardening::refuse_unsafe_files(
            &[
                ("TLS private key (api.key)", &config.api.key),
                ("KEK file (storage.key_file)", &config.storage.key_file),
            ],
            &[
                (
                    "data directory (storage.data_dir)",
                    &config.storage.data_dir,
                ),
                ("audit directory (audit.dir)", &config.audit.dir),
            ],
        )?;
        // First of all: one vault per data directory. A second process stops
        // here, before it touches the KEK, the trail or the database.
        let data_lock = DirLock::acquire(&config.storage.data_dir, "data directory")?;
        let provider = Arc::new(KeyFileProvider::open(&config.storage.key_file)?);
        let audit = AuditLog::open(config.audit.settings(), provider.as_ref())?;
        let mut options = VaultOptions {
            tenant_modes: config.tenant_modes(),
            audit: Some(audit.clone()),
            ..VaultOptions::default()
        };
        options.store.min_free_bytes = config.storage.min_free_bytes;
        options.store.block_cache_bytes = config.storage.block_cache_bytes.get();
        let vault = Arc::new(Vault::open(&config.storage.data_dir, provider, options)?);
        let running = start(config, Arc::clone(&vault), audit.clone()).await?;
        audit.record(Event::new(EventKind::VaultStart).with_detail(format!(
            "api {} ops {} version {}",
            running.api_addr,
            running.ops_addr,
            env!("CARGO_PKG_VERSION")
        )));
        Ok(Service {
            api_addr: running.api_addr,
            ops_addr: running.ops_addr,
            running,
            vault,
            audit,
            _data_lock: data_lock,
        })
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
        self.audit.close().await?;
        closed
    }
}
