//! `cardvault backup (--dev DIR | --config FILE) --out BACKUP` and
//! `cardvault restore BACKUP (--dev NEWDIR | --config FILE)`: the engine is
//! [`crate::backup`]. A backup of a stopped vault is taken here, in
//! process; a running vault holds its directories (exit 75). A restore
//! checks the manifest, copies into new or empty directories, opens the
//! vault (its KEK must unwrap the keys), records `vault_restored` and
//! verifies the whole trail.

use std::path::PathBuf;

use clap::Args;

use super::error::{CliError, CliResult};
use super::offline::VaultLocation;
use crate::audit::{Event, EventKind, VerifyWith};
use crate::backup::{self, Manifest, Sources, Targets};

/// `backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The vault.
    #[command(flatten)]
    location: VaultLocation,
    /// The backup directory to create (must not exist).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// `restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup directory.
    backup: PathBuf,
    /// Restore a dev vault's backup into this new dev directory.
    #[arg(
        long,
        value_name = "NEWDIR",
        conflicts_with = "config",
        required_unless_present = "config"
    )]
    dev: Option<PathBuf>,
    /// Restore into the data and audit directories this config names
    /// (both new or empty); its KEK must be the backed-up vault's.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// The files of a dev directory a dev backup keeps: its config, PKI,
/// development KEK and evidence public key.
fn dev_files(dir: &std::path::Path) -> Result<Vec<(PathBuf, PathBuf)>, CliError> {
    let mut files = Vec::new();
    for name in ["cardvault.toml", "kek.key", "evidence.pub"] {
        if dir.join(name).is_file() {
            files.push((PathBuf::from("dev").join(name), dir.join(name)));
        }
    }
    let pki = dir.join("pki");
    for entry in std::fs::read_dir(&pki)
        .map_err(|e| CliError::Unreadable(format!("{}: {e}", pki.display())))?
        .flatten()
    {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            files.push((
                PathBuf::from("dev/pki").join(entry.file_name()),
                entry.path(),
            ));
        }
    }
    Ok(files)
}

/// Runs `backup`.
pub async fn run_backup(args: BackupArgs) -> CliResult {
    let dev = args.location.config.is_none();
    let extra = if dev {
        dev_files(&args.location.data_dir)?
    } else {
        Vec::new()
    };
    let opened = args.location.open()?;
    let sources = Sources {
        vault: &opened.vault,
        audit: opened.audit(),
        audit_dir: &opened.audit_dir,
        extra,
    };
    let taken = backup::take(&sources, &args.out, dev).await;
    opened.close().await?;
    let manifest = taken.map_err(|e| CliError::Unreadable(e.to_string()))?;
    let bytes: u64 = manifest.files.iter().map(|f| f.bytes).sum();
    say!(
        "backup written to {}: {} files, {} bytes, the trail to entry {} (backup_taken){}",
        args.out.display(),
        manifest.files.len(),
        bytes,
        manifest.audit_seq,
        if dev {
            "; a dev backup: it holds the development KEK"
        } else {
            "; the KEK is not in it"
        }
    );
    Ok(())
}

/// Runs `restore`.
pub async fn run_restore(args: RestoreArgs) -> CliResult {
    let manifest = Manifest::read(&args.backup).map_err(|e| CliError::Unreadable(e.to_string()))?;
    let (targets, location) = match (&args.dev, &args.config) {
        (Some(dir), _) => {
            if !manifest.dev {
                return Err(CliError::Usage(
                    "this backup is of a production vault: restore it with --config FILE (its KEK is not in the backup)".into(),
                ));
            }
            (
                Targets {
                    db: dir.join("db"),
                    audit: dir.join("audit"),
                    dev: Some(dir.clone()),
                },
                VaultLocation {
                    config: None,
                    data_dir: dir.clone(),
                },
            )
        }
        (None, Some(path)) => {
            if manifest.dev {
                return Err(CliError::Usage(
                    "this backup is of a dev vault (its keys are wrapped by a development KEK): restore it with --dev NEWDIR".into(),
                ));
            }
            let config = crate::config::Config::load(path)?;
            super::offline::refuse_postgres(&config)?;
            (
                Targets {
                    db: config.storage.data_dir.clone(),
                    audit: config.audit.dir.clone(),
                    dev: None,
                },
                VaultLocation::from_config(path),
            )
        }
        (None, None) => return Err(CliError::Usage("give --dev NEWDIR or --config FILE".into())),
    };
    backup::restore(&args.backup, &targets).map_err(|e| match e {
        backup::BackupError::NotEmpty(_) => CliError::Usage(e.to_string()),
        other => CliError::Unreadable(other.to_string()),
    })?;
    let digest =
        Manifest::digest_of(&args.backup).map_err(|e| CliError::Unreadable(e.to_string()))?;
    // Opening proves the KEK unwraps the restored keys.
    let opened = location.open()?;
    opened
        .audit()
        .record_durable(Event::new(EventKind::VaultRestored).with_detail(format!(
            "restored from the backup taken {} (manifest sha256 {digest}, trail to entry {})",
            manifest.created, manifest.audit_seq
        )))
        .await
        .map_err(|e| CliError::Failed(e.into()))?;
    let (audit_dir, provider) = (opened.audit_dir.clone(), opened.provider.clone());
    opened.close().await?;
    let with = VerifyWith {
        provider: Some(provider.as_ref()),
        allow_anchor: false,
        checkpoints: None,
    };
    let report = crate::audit::verify(&audit_dir, &with)
        .map_err(|e| CliError::Failed(e.into()))?
        .map_err(CliError::TrailBroken)?;
    say!(
        "restored {} files from the backup taken {}; the vault opens with its KEK and its audit trail verifies: {} entries (backup_taken at {}, then vault_restored)",
        manifest.files.len(),
        manifest.created,
        report.entries,
        manifest.audit_seq
    );
    Ok(())
}
