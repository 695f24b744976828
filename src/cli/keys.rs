//! `cardvault keys`: create a KEK file, rotate a tenant's data key, show
//! key status. `rotate` and `status` open the vault in-process, so the
//! server must be stopped (RocksDB allows one process).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::error::{CliError, CliResult};
use super::offline::VaultLocation;
use crate::crypto::KeyFileProvider;
use crate::domain::TenantId;

/// Subcommands of `keys`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a new KEK file: 32 random bytes, mode 0600. Never overwrites.
    Init {
        /// Path of the new key file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Rotate a tenant's data key: a new version seals from now on, older
    /// versions still open existing records.
    Rotate {
        #[command(flatten)]
        vault: VaultLocation,
        /// Tenant whose data key to rotate.
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Show each tenant's active data-key version and its encryption count.
    Status {
        #[command(flatten)]
        vault: VaultLocation,
    },
}

/// Runs a `keys` subcommand.
pub async fn run(command: KeysCommand) -> CliResult {
    match command {
        KeysCommand::Init { out } => {
            KeyFileProvider::create(&out).context("creating the KEK file")?;
            say!("created KEK {} (mode 0600)", out.display());
        }
        KeysCommand::Rotate { vault, tenant } => {
            let tenant =
                TenantId::parse(&tenant).map_err(|e| CliError::Usage(format!("--tenant: {e}")))?;
            let offline = vault.open()?;
            let version = offline.vault.rotate_keys(&tenant).await;
            offline.close().await?;
            let version = version.context("rotating the data key")?;
            say!("tenant {tenant}: data key version {version} is now active");
        }
        KeysCommand::Status { vault } => {
            let offline = vault.open()?;
            for (tenant, version, sealed) in offline.vault.key_status() {
                say!("tenant {tenant}: active data key v{version}, {sealed} encryptions");
            }
            offline.close().await?;
        }
    }
    Ok(())
}
