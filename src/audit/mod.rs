//! The audit trail (docs/audit.md, PCI DSS 10.2–10.3): every security-relevant
//! event becomes one JSON line in `DIR/audit-NNNNNNNN.jsonl`, numbered and
//! chained by HMAC-SHA-256 under the audit key ([`key`]), so
//! `cardvault audit verify` ([`verify`]) finds any edit, deletion, insertion
//! or reordering. One writer thread appends and group-syncs
//! ([`writer`]); callers either queue an event ([`AuditLog::record`]) or
//! wait until it is on disk ([`AuditLog::record_durable`]), which is what
//! detokenization does before it returns a PAN.

//!
//! Only [`chain`] (the line format) builds without the `vault` feature, so
//! the fuzz targets can reach it.

pub mod chain;
#[cfg(feature = "vault")]
pub(crate) mod checkpoint;
#[cfg(feature = "vault")]
pub(crate) mod event;
#[cfg(feature = "vault")]
pub(crate) mod key;
#[cfg(feature = "vault")]
pub(crate) mod syslog;
#[cfg(feature = "vault")]
pub(crate) mod verify;
#[cfg(feature = "vault")]
pub(crate) mod writer;

use std::path::{Path, PathBuf};

#[cfg(feature = "vault")]
pub use checkpoint::Signed;
#[cfg(feature = "vault")]
pub use event::{Event, EventKind, Outcome};
#[cfg(feature = "vault")]
pub use verify::{VerifyFailure, VerifyReport, VerifyWith, verify};
#[cfg(feature = "vault")]
pub use writer::{AuditLog, AuditSettings, EvidenceHandover, PendingAudit};

/// Why the audit trail could not be opened, written or read. Carries paths
/// and OS messages only, never event contents.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// A file operation failed.
    #[error("audit trail {path}: {message}")]
    Io {
        /// File or directory.
        path: String,
        /// What the OS said.
        message: String,
    },
    /// The audit key is missing, unreadable or does not unwrap.
    #[error("audit key: {0}")]
    Key(String),
    /// The trail has been closed.
    #[error("the audit trail is closed")]
    Closed,
    /// Another process owns the audit directory.
    #[error(transparent)]
    Locked(#[from] crate::dirlock::LockError),
}

impl AuditError {
    pub(crate) fn io(path: &Path, e: std::io::Error) -> AuditError {
        AuditError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }
}

/// Name of segment `index`: `audit-NNNNNNNN.jsonl`, or
/// `audit-NODE-NNNNNNNN.jsonl` for a node of a shared store.
pub fn segment_name(node: Option<&str>, index: u64) -> String {
    match node {
        Some(node) => format!("audit-{node}-{index:08}.jsonl"),
        None => format!("audit-{index:08}.jsonl"),
    }
}

/// The segments in `dir`, oldest first, with their indexes.
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, AuditError> {
    let entries = std::fs::read_dir(dir).map_err(|e| AuditError::io(dir, e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| AuditError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // `audit-NNNNNNNN.jsonl` or `audit-NODE-NNNNNNNN.jsonl`.
        let index = name
            .strip_prefix("audit-")
            .and_then(|rest| rest.strip_suffix(".jsonl"))
            .and_then(|rest| rest.get(rest.len().checked_sub(8)?..))
            .filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u64>().ok());
        if let Some(index) = index {
            found.push((index, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}
