//! One process per directory: an exclusive advisory lock (`flock`) on
//! `DIR/cardvault.lock`, taken before anything in the directory is written
//! and held until the owner drops it (or dies: the kernel releases a
//! `flock` when its last descriptor closes, kill -9 included). The file
//! holds the owner's PID, so a refused second process can say who runs.
//!
//! The data directory and the audit directory each get one: a second
//! `serve`, `keys` or `demo` against a running vault stops here, before it
//! could append an `audit_start` line into the trail the running vault is
//! writing (which broke the chain).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// Name of the lock file inside a locked directory.
pub const LOCK_FILE: &str = "cardvault.lock";

/// Why a directory could not be locked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "the vault is running ({what} {dir} is locked by {holder}); stop it first, or point this command at another directory"
    )]
    Held {
        /// Which directory (for example "data directory").
        what: &'static str,
        /// The directory.
        dir: PathBuf,
        /// "PID n", or "another process" when the file names none.
        holder: String,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock {what} {dir}: {message}")]
    Io {
        /// Which directory.
        what: &'static str,
        /// The directory.
        dir: PathBuf,
        /// What the OS said.
        message: String,
    },
}

/// An exclusive lock on a directory, released on drop.
#[derive(Debug)]
pub struct DirLock {
    file: File,
}

impl DirLock {
    /// Creates `dir` (mode 0700) if missing and locks it, or reports who
    /// holds it. Never waits. `what` names the directory in messages.
    pub fn acquire(dir: &Path, what: &'static str) -> Result<DirLock, LockError> {
        let io = |e: std::io::Error| LockError::Io {
            what,
            dir: dir.to_path_buf(),
            message: e.to_string(),
        };
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) => format!("PID {pid}"),
                    Err(_) => "another process".to_owned(),
                };
                return Err(LockError::Held {
                    what,
                    dir: dir.to_path_buf(),
                    holder,
                });
            }
            Err(e) => return Err(io(e.into())),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DirLock { file })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Closing the file releases the lock as well; unlocking first makes
        // the release independent of other descriptors of the same file.
        let _ = flock(&self.file, FlockOperation::Unlock);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let first = DirLock::acquire(&path, "data directory").unwrap();
        // flock locks belong to the open file description: a second open in
        // the same process conflicts like a second process would.
        let err = DirLock::acquire(&path, "data directory").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("PID {}", std::process::id())),
            "{text}"
        );
        assert!(matches!(err, LockError::Held { .. }));
        drop(first);
        DirLock::acquire(&path, "data directory").unwrap();
    }
}
