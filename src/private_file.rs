//! Files only their owner may read or write (mode 0600): created new,
//! written and synced, or replaced atomically — a synced `NAME.tmp` beside
//! the file renamed over it, then the directory synced. Keys, secrets'
//! copies, backups, checkpoints of long jobs.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// A new file `path` (never an existing one), mode 0600 whatever the
/// umask.
pub fn create(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Writes `bytes` to a new file `path`, mode 0600, synced.
pub fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Replaces `path` with `bytes` atomically: `path` + `.tmp` (a leftover
/// from a crash is removed first) written new and synced, renamed over
/// `path`, the directory synced. A reader sees the old content or the
/// new, never part of either.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let _ = std::fs::remove_file(&temporary);
    write_new(&temporary, bytes)?;
    std::fs::rename(&temporary, path)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}
