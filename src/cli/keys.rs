//! `cardvault keys`: create a KEK (a key file, a key inside a PKCS#11
//! token, or custodian shares of a KEK that is then forgotten), rotate a
//! tenant's data key, show key status. `rotate` and `status` open the vault
//! in-process, so the server must be stopped (RocksDB allows one process).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};

use super::error::{CliError, CliResult};
use super::offline::VaultLocation;
use crate::config::{Config, KekSource};
use crate::crypto::KeyFileProvider;
use crate::crypto::pkcs11::{Pkcs11Provider, Pkcs11Settings};
use crate::domain::TenantId;

/// How `keys init --pkcs11` finds the token: `[kek]` of a config file, or flags.
#[derive(Debug, Args)]
pub struct Pkcs11Flags {
    /// Take `module`, `token_label`, `pin_file`, `key_label` from this
    /// config's `[kek]` section.
    #[arg(long, requires = "pkcs11")]
    config: Option<PathBuf>,
    /// The PKCS#11 module.
    #[arg(long, requires = "pkcs11", conflicts_with = "config")]
    module: Option<PathBuf>,
    /// The token's label.
    #[arg(long, requires = "pkcs11", conflicts_with = "config")]
    token_label: Option<String>,
    /// File holding the user PIN (mode 0600).
    #[arg(long, requires = "pkcs11", conflicts_with = "config")]
    pin_file: Option<PathBuf>,
    /// Label of the new key.
    #[arg(long, requires = "pkcs11", conflicts_with = "config")]
    key_label: Option<String>,
}

/// Subcommands of `keys`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a new KEK: a key file (`--out FILE`: 32 random bytes, mode
    /// 0600), an AES-256 key inside a PKCS#11 token (`--pkcs11`: sensitive,
    /// never extractable), or custodian shares (`--shares N --threshold M
    /// --out-dir DIR`: the KEK is split and forgotten). Never overwrites.
    Init {
        /// Path of the new key file.
        #[arg(long, required_unless_present_any = ["pkcs11", "shares"], conflicts_with_all = ["pkcs11", "shares"])]
        out: Option<PathBuf>,
        /// Make the KEK inside a PKCS#11 token.
        #[arg(long, conflicts_with = "shares")]
        pkcs11: bool,
        #[command(flatten)]
        token: Pkcs11Flags,
        /// Split a new KEK into this many custodian shares.
        #[arg(long, requires_all = ["threshold", "out_dir"])]
        shares: Option<u8>,
        /// Shares needed to rebuild the KEK (at least 2).
        #[arg(long, requires = "shares")]
        threshold: Option<u8>,
        /// Directory for the share files (created 0700; one
        /// `CUSTODIAN.share` per custodian, mode 0600).
        #[arg(long, requires = "shares")]
        out_dir: Option<PathBuf>,
        /// Custodian names, comma-separated (default custodian-1..N).
        #[arg(long, value_delimiter = ',', requires = "shares")]
        custodians: Vec<String>,
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
    /// Rotate the running vault's KEK online: every data key, fingerprint
    /// key and the audit key are wrapped under the new KEK too (one durable
    /// commit) while it keeps serving; the rotation finishes when the vault
    /// next opens on the new KEK (docs/keys.md).
    RotateKek(super::keys_online::RotateKekArgs),
    /// Rotate the running vault's evidence key: a new Ed25519 key signs
    /// checkpoints and bundles after a handover checkpoint signed by the
    /// old one; `evidence.pub` is rewritten (pin the new fingerprint).
    RotateEvidenceKey(super::keys_online::RotateEvidenceKeyArgs),
    /// Seal every record of a tenant under older data keys again with the
    /// active one, on the running vault, and destroy the emptied keys;
    /// follows the job with a progress bar. Resumes after a restart.
    Reencrypt(super::keys_online::ReencryptArgs),
    /// List every key of the running vault: purpose, tenant, version,
    /// state, dates, encryptions and limit, records, the KEK that wraps it.
    Inventory(super::keys_online::InventoryArgs),
    /// Show each tenant's active data-key version and its encryption count.
    Status {
        #[command(flatten)]
        vault: VaultLocation,
    },
}

/// Runs a `keys` subcommand.
pub async fn run(command: KeysCommand) -> CliResult {
    match command {
        KeysCommand::Init {
            out,
            pkcs11,
            token,
            shares,
            threshold,
            out_dir,
            custodians,
        } => match (out, pkcs11, shares, threshold, out_dir) {
            (Some(out), ..) => {
                KeyFileProvider::create(&out).context("creating the KEK file")?;
                say!("created KEK {} (mode 0600)", out.display());
            }
            (None, true, ..) => {
                let settings = token.settings()?;
                Pkcs11Provider::create_key(&settings)?;
                say!(
                    "created KEK {:?} inside PKCS#11 token {:?} (AES-256, sensitive, not extractable)",
                    settings.key_label,
                    settings.token_label
                );
            }
            (None, false, Some(count), Some(threshold), Some(dir)) => {
                let names = custodian_names(count, custodians)?;
                let set = write_shares(&dir, threshold, &names)?;
                say!(
                    "split a new KEK into {count} shares (any {threshold} rebuild it), set {}, in {}; the KEK itself was not kept",
                    set,
                    dir.display()
                );
                for name in &names {
                    say!("  {}", dir.join(format!("{name}.share")).display());
                }
                say!("hand one file to each custodian, then delete it here");
            }
            _ => {
                return Err(CliError::Usage(
                    "keys init needs --out FILE, --pkcs11, or --shares N --threshold M --out-dir DIR".into(),
                ));
            }
        },
        KeysCommand::Rotate { vault, tenant } => {
            let tenant =
                TenantId::parse(&tenant).map_err(|e| CliError::Usage(format!("--tenant: {e}")))?;
            let offline = vault.open()?;
            let version = offline.vault.rotate_keys(&tenant).await;
            offline.close().await?;
            let version = version.context("rotating the data key")?;
            say!("tenant {tenant}: data key version {version} is now active");
        }
        KeysCommand::RotateKek(args) => super::keys_online::rotate_kek(args).await?,
        KeysCommand::RotateEvidenceKey(args) => {
            super::keys_online::rotate_evidence_key(args).await?;
        }
        KeysCommand::Reencrypt(args) => super::keys_online::reencrypt(args).await?,
        KeysCommand::Inventory(args) => super::keys_online::inventory(args).await?,
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

impl Pkcs11Flags {
    fn settings(self) -> Result<Pkcs11Settings, CliError> {
        if let Some(path) = self.config {
            return match Config::load(&path)?.kek()? {
                KekSource::Pkcs11 {
                    module,
                    token_label,
                    pin_file,
                    key_label,
                } => Ok(Pkcs11Settings {
                    module,
                    token_label,
                    pin_file,
                    key_label,
                }),
                _ => Err(CliError::Usage(format!(
                    "{}: [kek] provider is not \"pkcs11\"",
                    path.display()
                ))),
            };
        }
        match (self.module, self.token_label, self.pin_file, self.key_label) {
            (Some(module), Some(token_label), Some(pin_file), Some(key_label)) => Ok(Pkcs11Settings {
                module,
                token_label,
                pin_file,
                key_label,
            }),
            _ => Err(CliError::Usage(
                "--pkcs11 needs --config FILE, or --module, --token-label, --pin-file and --key-label"
                    .into(),
            )),
        }
    }
}

fn custodian_names(count: u8, given: Vec<String>) -> Result<Vec<String>, CliError> {
    if given.is_empty() {
        return Ok((1..=count).map(|i| format!("custodian-{i}")).collect());
    }
    if given.len() != count as usize {
        return Err(CliError::Usage(format!(
            "--custodians names {} custodians, --shares says {count}",
            given.len()
        )));
    }
    let mut unique = given.clone();
    unique.sort();
    unique.dedup();
    if unique.len() != given.len() {
        return Err(CliError::Usage("--custodians names someone twice".into()));
    }
    Ok(given)
}

/// Generates a KEK, splits it, writes one share file per custodian (mode
/// 0600, never overwriting) and drops the KEK. Returns the set id.
pub fn write_shares(dir: &Path, threshold: u8, names: &[String]) -> Result<String, CliError> {
    let (set, kek) = crate::runtime::custody::write_shares(dir, threshold, names)
        .map_err(|e| CliError::Usage(format!("{e:#}")))?;
    drop(kek);
    Ok(set.id_hex())
}
