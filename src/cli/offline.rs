//! Opening the vault in-process for the offline commands (`keys`, `demo`):
//! from a config file (production layout) or a `serve --dev` directory.
//! Only `demo` may create a development KEK; every other command refuses a
//! directory without one, so a mistyped `--data-dir` never mints a key. A
//! vault on PostgreSQL is refused with what to use instead (its node
//! directory holds no RocksDB to open, and an empty one must not be made).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use super::dev::{create_dev_kek_if_missing, dev_config};
use super::error::CliError;
use crate::audit::{AuditLog, AuditSettings};
use crate::config::{Config, KekSource};
use crate::crypto::KeyProvider;
use crate::dirlock::DirLock;
use crate::runtime::custody::{Kek, open_kek};
use crate::vault::{Vault, VaultOptions};

/// Where an offline command finds the vault.
#[derive(Debug, Args)]
pub struct VaultLocation {
    /// The vault's config file: `storage.key_file`, `storage.data_dir` and
    /// `audit.dir` are taken from it.
    #[arg(long, conflicts_with = "data_dir")]
    pub config: Option<PathBuf>,
    /// A `serve --dev` directory holding `kek.key`, `db/` and `audit/`
    /// (`--dev DIR`, as for every subcommand; `--data-dir DIR` too).
    #[arg(long = "dev", visible_alias = "data-dir", value_name = "DIR", default_value = super::dev::DEV_DIR)]
    pub data_dir: PathBuf,
}

/// The paths of one vault.
struct Layout {
    kek: KekSource,
    db: PathBuf,
    audit: AuditSettings,
}

impl Layout {
    fn dev(dir: &Path) -> Layout {
        let mut audit = AuditSettings::new(dir.join("audit"));
        audit.checkpoints.dir = Some(dir.join("checkpoints"));
        audit.public_key_file = Some(dir.join("evidence.pub"));
        Layout {
            kek: KekSource::File(dir.join("kek.key")),
            db: dir.join("db"),
            audit,
        }
    }

    /// The layout of a dev directory's own config.
    fn of_dev(config: &Path, dir: &Path) -> Result<Layout, CliError> {
        let mut config = Config::load(config)?;
        super::dev::add_dev_checkpoints(&mut config, dir);
        Layout::of(&config)
    }

    fn of(config: &Config) -> Result<Layout, CliError> {
        refuse_postgres(config)?;
        Ok(Layout {
            kek: config.kek()?,
            db: config.storage.data_dir.clone(),
            audit: config.audit.settings(),
        })
    }
}

/// Refuses a vault whose data is in PostgreSQL: the offline commands open
/// RocksDB only, and its node directory holds none (one must not be made).
pub fn refuse_postgres(config: &Config) -> Result<(), CliError> {
    if config.storage.backend == crate::config::StorageBackend::Postgres {
        return Err(CliError::Usage(
            "this vault's data is in PostgreSQL ([storage] backend = \"postgres\"); offline commands open RocksDB only — use a running node's admin API instead (keys: GET /v1/admin/keys, POST /v1/admin/keys/{tenant}/rotate, …; docs/keys.md)".into(),
        ));
    }
    Ok(())
}

/// The KEK provider of `source`, for an offline command: a vault whose KEK
/// is split among custodians cannot be opened offline.
pub fn offline_provider(source: &KekSource) -> Result<Arc<dyn KeyProvider>, CliError> {
    match open_kek(source)? {
        Kek::Ready(provider) => Ok(provider),
        Kek::Sealed(_) => Err(CliError::Usage(
            "this vault's KEK is split among custodians ([kek] provider = \"shamir\"); offline commands cannot open it — use the running, unsealed vault".into(),
        )),
    }
}

/// A vault opened in-process: its data and audit directories are locked
/// until [`OfflineVault::close`].
pub struct OfflineVault {
    /// The vault core.
    pub vault: Vault,
    audit: AuditLog,
    /// The trail's directory.
    pub audit_dir: PathBuf,
    /// The KEK (for verifying the trail).
    pub provider: Arc<dyn KeyProvider>,
    _lock: DirLock,
}

impl OfflineVault {
    /// Its audit trail.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Closes the vault (exact counters, clean-shutdown marker), then its
    /// audit trail (`audit_stop`), then releases the directories.
    pub async fn close(self) -> anyhow::Result<()> {
        self.vault.close().await.context("closing the vault")?;
        self.audit
            .close()
            .await
            .context("closing the audit trail")?;
        Ok(())
    }
}

impl VaultLocation {
    /// The vault of a config file.
    pub fn from_config(path: &Path) -> VaultLocation {
        VaultLocation {
            config: Some(path.to_path_buf()),
            data_dir: PathBuf::from(super::dev::DEV_DIR),
        }
    }

    /// Opens the existing vault (the KEK must exist). Key operations made
    /// through it are audited like the server's.
    pub fn open(&self) -> Result<OfflineVault, CliError> {
        let layout = match (&self.config, dev_config(&self.data_dir)) {
            (Some(path), _) => Layout::of(&Config::load(path)?)?,
            (None, Some(path)) => Layout::of_dev(&path, &self.data_dir)?,
            (None, None) => {
                let layout = Layout::dev(&self.data_dir);
                if !self.data_dir.join("kek.key").is_file() {
                    return Err(CliError::Usage(format!(
                        "no vault in {}: it holds no kek.key (check --data-dir, or give --config FILE; `cardvault serve --dev` creates a dev vault)",
                        self.data_dir.display()
                    )));
                }
                layout
            }
        };
        open(&layout)
    }
}

/// Opens the dev vault in `dir`, creating the directory and a development
/// KEK on first use (for `demo` only).
pub fn open_or_create_dev(dir: &Path) -> Result<OfflineVault, CliError> {
    if let Some(config) = dev_config(dir) {
        return open(&Layout::of_dev(&config, dir)?);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    create_dev_kek_if_missing(&dir.join("kek.key"))?;
    open(&Layout::dev(dir))
}

fn open(layout: &Layout) -> Result<OfflineVault, CliError> {
    // Before the trail or the database is touched: a running vault holds
    // this lock, and this command must then write nothing at all.
    let lock = DirLock::acquire(&layout.db, "data directory").map_err(anyhow::Error::from)?;
    let provider = offline_provider(&layout.kek)?;
    let audit =
        AuditLog::open(layout.audit.clone(), provider.as_ref()).map_err(anyhow::Error::from)?;
    let options = VaultOptions {
        audit: Some(audit.clone()),
        ..VaultOptions::default()
    };
    let vault =
        Vault::open(&layout.db, Arc::clone(&provider), options).map_err(anyhow::Error::from)?;
    Ok(OfflineVault {
        vault,
        audit,
        audit_dir: layout.audit.dir.clone(),
        provider,
        _lock: lock,
    })
}
