//! A node's clean-shutdown marker on PostgreSQL: a file in the node's own
//! directory, written after its last counters are committed at a clean
//! close and taken (removed, durably) at the next start. Only a node that
//! crashed finds none, so only a crash makes its keyring add the unknown-
//! encryptions margin to the shared counters; a clean restart burns no key
//! budget, and a database failover restarts no node.

use std::path::{Path, PathBuf};

use crate::store::StoreError;

/// The marker's file name in the node's directory.
const MARKER: &str = "counters-clean";

fn marker(dir: &Path) -> PathBuf {
    dir.join(MARKER)
}

fn io_error(what: &str, dir: &Path, e: &std::io::Error) -> StoreError {
    StoreError::Backend(format!("{what} in {}: {e}", dir.display()))
}

/// Whether the node's previous run closed cleanly; removes the marker (and
/// syncs the directory) so a crash of this run is seen at the next start.
pub(super) fn take(dir: &Path) -> Result<bool, StoreError> {
    match std::fs::remove_file(marker(dir)) {
        Ok(()) => {
            sync_dir(dir).map_err(|e| io_error("syncing the node directory", dir, &e))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error("taking the clean-shutdown marker", dir, &e)),
    }
}

/// Writes the marker durably (after the last counters are committed).
pub(super) fn put(dir: &Path) -> Result<(), StoreError> {
    let path = marker(dir);
    let file = std::fs::File::create(&path)
        .map_err(|e| io_error("writing the clean-shutdown marker", dir, &e))?;
    file.sync_all()
        .map_err(|e| io_error("syncing the clean-shutdown marker", dir, &e))?;
    sync_dir(dir).map_err(|e| io_error("syncing the node directory", dir, &e))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
