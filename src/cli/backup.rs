//! `cardvault backup (--dev DIR | --config FILE) --out BACKUP` and
//! `cardvault restore BACKUP (--dev NEWDIR | --config FILE)`: the engine is
//! [`crate::runtime::backup`]. A backup of a stopped vault is taken here, in
//! process; a running vault (it holds its directories) is asked to take it
//! itself (`POST /v1/admin/backup`, as an admin: `--target`), which it
//! writes into its `[storage] backup_dir`, and the backup is then moved to
//! `--out` (without `--target`, exit 75). A restore
//! checks the manifest, copies into new or empty directories, opens the
//! vault (its KEK must unwrap the keys), records `vault_restored` and
//! verifies the whole trail.

use std::path::PathBuf;

use clap::Args;

use super::error::{CliError, CliResult};
use super::offline::VaultLocation;
use crate::audit::{Event, EventKind, VerifyWith};
use crate::runtime::backup::{self, Manifest, Sources, Targets};

/// `backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The vault.
    #[command(flatten)]
    location: VaultLocation,
    /// The backup directory to create (must not exist).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// A running vault: asked through its admin API.
    #[command(flatten)]
    running: super::running::RunningVault,
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
    if args.out.exists() {
        return Err(CliError::Usage(format!(
            "{} exists: a backup is written into a new directory",
            args.out.display()
        )));
    }
    let dev = args.location.config.is_none();
    let extra = if dev {
        dev_files(&args.location.data_dir)?
    } else {
        Vec::new()
    };
    let manifest = match args.location.open() {
        Ok(opened) => {
            let sources = Sources {
                vault: &opened.vault,
                audit: opened.audit(),
                audit_dir: &opened.audit_dir,
                extra,
            };
            let taken = backup::take(&sources, &args.out, dev).await;
            opened.close().await?;
            taken.map_err(|e| CliError::Unreadable(e.to_string()))?
        }
        Err(CliError::Locked(held)) => from_running(&args, extra, dev, held).await?,
        Err(e) => return Err(e),
    };
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

/// The running vault takes the backup into its `backup_dir`; the dev
/// files are added (and listed in its manifest) and it moves to `--out`.
async fn from_running(
    args: &BackupArgs,
    extra: Vec<(PathBuf, PathBuf)>,
    dev: bool,
    held: crate::dirlock::LockError,
) -> Result<Manifest, CliError> {
    let Some((mut conn, _, _)) = args.running.connect(&args.location).await? else {
        return Err(CliError::Locked(held));
    };
    // A plain name from the time (letters between its digit runs: the
    // vault refuses a name that could hold a card number).
    let name = format!(
        "cli-{}",
        crate::clock::rfc3339(crate::clock::now_ms())
            .to_lowercase()
            .replace([':', '.'], "-")
    );
    let reply = conn
        .post_json("/v1/admin/backup", &serde_json::json!({ "name": name }))
        .await
        .map_err(|e| CliError::Unreadable(format!("POST /v1/admin/backup: {e}")))?;
    let answer = reply.json();
    if reply.status != hyper::StatusCode::OK {
        return Err(CliError::Answer(format!(
            "the vault refused the backup ({}): {}",
            reply.status, answer["error"]["message"]
        )));
    }
    let taken = PathBuf::from(answer["path"].as_str().unwrap_or_default());
    let manifest = if dev {
        backup::add_dev_files(&taken, &extra)
    } else {
        Manifest::read(&taken).map_err(backup::BackupError::from)
    }
    .map_err(|e| CliError::Unreadable(e.to_string()))?;
    std::fs::rename(&taken, &args.out).map_err(|e| {
        CliError::Unreadable(format!(
            "moving {} to {}: {e} (it stays in the vault's backup_dir)",
            taken.display(),
            args.out.display()
        ))
    })?;
    Ok(manifest)
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
