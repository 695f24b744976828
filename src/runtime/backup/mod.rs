//! Backups of a RocksDB vault (`cardvault backup`, `cardvault restore`):
//! a consistent copy taken while the vault serves, restored elsewhere and
//! proved whole.
//!
//! A backup is a directory: `db/` (RocksDB's checkpoint: every write
//! acknowledged before it began), `audit/` (the trail up to at least the
//! synced `backup_taken` entry recorded right after the checkpoint, each
//! segment cut at its last complete line, and the audit and evidence keys
//! as stored — wrapped by the KEK), for a dev vault `dev/` (its config,
//! PKI and development KEK), and `manifest.json` ([`manifest`]): every
//! file's size and SHA-256. **The KEK of a production vault is never in
//! it**: a restore needs the KEK the config names, which unwraps the keys
//! or refuses.

pub mod manifest;

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::audit::{AuditLog, Event, EventKind};
use crate::vault::Vault;

pub use manifest::{Manifest, ManifestError};

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A file or directory could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        message: String,
    },
    /// The store could not be checkpointed.
    #[error("the store: {0}")]
    Store(String),
    /// The trail could not record the backup.
    #[error("the audit trail: {0}")]
    Audit(String),
    /// The backup does not match its manifest.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A restore target already holds something.
    #[error("{0} is not empty: a restore writes only into new or empty directories")]
    NotEmpty(String),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> BackupError + '_ {
    move |e| BackupError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// What a backup copies besides the store.
pub struct Sources<'a> {
    /// The vault (its store is checkpointed).
    pub vault: &'a Vault,
    /// Its trail (records `backup_taken`, synced, before it is copied).
    pub audit: &'a AuditLog,
    /// The trail's directory.
    pub audit_dir: &'a Path,
    /// Files copied as they are: (path in the backup, source).
    pub extra: Vec<(PathBuf, PathBuf)>,
}

/// Takes a backup into `out` (which must not exist; made 0700): the
/// store's checkpoint, then the trail after a synced `backup_taken` entry,
/// the `extra` files, and the manifest (`dev`: whether it holds a dev
/// vault's config and KEK).
pub async fn take(sources: &Sources<'_>, out: &Path, dev: bool) -> Result<Manifest, BackupError> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(out)
        .map_err(io(out))?;
    let db = out.join("db");
    // Blocking (a flush and the links): off the runtime's other tasks.
    tokio::task::block_in_place(|| sources.vault.checkpoint_store(&db))
        .map_err(|e| BackupError::Store(e.to_string()))?;
    let seq = sources
        .audit
        .record_durable(
            Event::new(EventKind::BackupTaken).with_detail(format!("backup {}", out.display())),
        )
        .await
        .map_err(|e| BackupError::Audit(e.to_string()))?;
    copy_trail(sources.audit_dir, &out.join("audit"))?;
    add_files(out, &sources.extra)?;
    let manifest = Manifest::of_dir(out, seq, dev)?;
    manifest.write(out)?;
    Ok(manifest)
}

/// Adds a dev vault's `extra` files (path in the backup, source) to the
/// backup `out` a running vault took, and lists them in its manifest,
/// which then says it is a dev backup (its other files are not hashed
/// again).
pub fn add_dev_files(out: &Path, extra: &[(PathBuf, PathBuf)]) -> Result<Manifest, BackupError> {
    let mut manifest = Manifest::read(out)?;
    add_files(out, extra)?;
    let added: Vec<&Path> = extra.iter().map(|(inside, _)| inside.as_path()).collect();
    manifest.add(out, &added)?;
    manifest.dev = true;
    let path = out.join(manifest::FILE);
    fs::remove_file(&path).map_err(io(&path))?;
    manifest.write(out)?;
    Ok(manifest)
}

/// Copies `extra` (path in the backup, source) into the backup `out`.
fn add_files(out: &Path, extra: &[(PathBuf, PathBuf)]) -> Result<(), BackupError> {
    for (inside, source) in extra {
        let to = out.join(inside);
        make_parent(&to)?;
        copy_private(source, &to)?;
    }
    Ok(())
}

/// Makes `path`'s parent directories (0700).
fn make_parent(path: &Path) -> Result<(), BackupError> {
    match path.parent() {
        Some(parent) => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io(parent)),
        None => Ok(()),
    }
}

/// Copies the trail in `from` into `to`: the wrapped keys whole, each
/// segment up to its last complete line (the writer may be appending);
/// the directory's lock file is not copied.
fn copy_trail(from: &Path, to: &Path) -> Result<(), BackupError> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(to)
        .map_err(io(to))?;
    for entry in fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let source = entry.path();
        if !entry.file_type().map_err(io(&source))?.is_file() || name == "cardvault.lock" {
            continue;
        }
        let mut bytes = fs::read(&source).map_err(io(&source))?;
        if name.ends_with(".jsonl") {
            let end = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            bytes.truncate(end);
        }
        write_private(&to.join(&name), &bytes)?;
    }
    Ok(())
}

/// Writes `bytes` to a new file `path`, mode 0600, synced.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    crate::private_file::write_new(path, bytes).map_err(io(path))
}

/// Copies the file `from` to a new file `to`, mode 0600, synced, without
/// holding it in memory (a store file may be large).
fn copy_private(from: &Path, to: &Path) -> Result<(), BackupError> {
    let mut source = fs::File::open(from).map_err(io(from))?;
    let mut file = crate::private_file::create(to).map_err(io(to))?;
    std::io::copy(&mut source, &mut file).map_err(io(to))?;
    file.sync_all().map_err(io(to))
}

/// Where a restore puts each part of a backup.
pub struct Targets {
    /// The store (`[storage] data_dir`).
    pub db: PathBuf,
    /// The trail (`[audit] dir`).
    pub audit: PathBuf,
    /// A dev directory for the backup's `dev/` files (config, PKI, KEK),
    /// or none for a production restore (the backup's dev files are then
    /// refused: they belong to a dev vault).
    pub dev: Option<PathBuf>,
}

/// Checks `backup` against its manifest, then copies it into `targets`
/// (each new or empty); returns the manifest. The vault is not opened
/// here: the caller opens it (proving the KEK unwraps its keys), records
/// `vault_restored` and verifies the trail.
pub fn restore(backup: &Path, targets: &Targets) -> Result<Manifest, BackupError> {
    let manifest = Manifest::read(backup)?;
    manifest.check(backup)?;
    for dir in [
        Some(&targets.db),
        Some(&targets.audit),
        targets.dev.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        let empty = match fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(io(dir)(e)),
        };
        if !empty {
            return Err(BackupError::NotEmpty(dir.display().to_string()));
        }
    }
    for file in &manifest.files {
        let relative = Path::new(&file.path);
        let to = match relative.strip_prefix("db") {
            Ok(rest) => targets.db.join(rest),
            Err(_) => match (relative.strip_prefix("audit"), &targets.dev) {
                (Ok(rest), _) => targets.audit.join(rest),
                (Err(_), Some(dev)) => dev.join(relative.strip_prefix("dev").unwrap_or(relative)),
                (Err(_), None) => continue,
            },
        };
        make_parent(&to)?;
        copy_private(&backup.join(relative), &to)?;
    }
    Ok(manifest)
}
