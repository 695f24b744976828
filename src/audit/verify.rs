//! `cardvault audit verify`: walks a trail (one segment or a directory of
//! them, oldest first), checks that sequence numbers run 1, 2, 3, … without
//! gaps and that every MAC chains to the one before, and names the first
//! sequence number where that fails. Needs the KEK (to unwrap the audit
//! key), not the running vault.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::chain::{Chain, GENESIS, LineError, MAC_LEN};
use super::{AuditError, key, segments};
use crate::crypto::KeyProvider;

/// An intact trail.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Segments read.
    pub files: usize,
    /// Entries verified.
    pub entries: u64,
    /// Sequence number of the first entry (1 unless `anchored`).
    pub first_seq: u64,
    /// Sequence number of the last entry.
    pub last_seq: u64,
    /// The last entry's event (`audit_stop` after a clean stop).
    pub last_event: Option<String>,
    /// The first entry was taken on trust because earlier segments are not
    /// in the path (archived); everything after it is verified.
    pub anchored: bool,
}

/// Where and why the chain breaks.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyFailure {
    /// The first sequence number that does not verify: the number the
    /// entry at that position should have had.
    pub seq: u64,
    /// Segment file.
    pub file: PathBuf,
    /// Line within it, from 1.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

impl std::fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "audit trail broken at seq {} ({} line {}): {}",
            self.seq,
            self.file.display(),
            self.line,
            self.problem
        )
    }
}

#[derive(Deserialize)]
struct Head {
    seq: u64,
    event: String,
}

/// Verifies the trail at `path` (a segment or a directory). `allow_anchor`
/// accepts a trail whose earlier segments were archived away: its first
/// entry is then trusted instead of chained from the start.
pub fn verify(
    path: &Path,
    provider: &dyn KeyProvider,
    allow_anchor: bool,
) -> Result<Result<VerifyReport, VerifyFailure>, AuditError> {
    let (dir, files) = if path.is_dir() {
        (
            path.to_path_buf(),
            segments(path)?.into_iter().map(|(_, p)| p).collect(),
        )
    } else {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        (dir, vec![path.to_path_buf()])
    };
    if files.is_empty() {
        return Err(AuditError::Io {
            path: path.display().to_string(),
            message: "no audit segments (audit-NNNNNNNN.jsonl) here".into(),
        });
    }
    let audit_key = key::read(&dir, provider)?
        .ok_or_else(|| AuditError::Key(format!("no {} in {}", key::KEY_FILE, dir.display())))?;
    let chain = Chain::new(&audit_key.key);
    let mut report = VerifyReport {
        files: files.len(),
        entries: 0,
        first_seq: 0,
        last_seq: 0,
        last_event: None,
        anchored: false,
    };
    let mut previous: [u8; MAC_LEN] = GENESIS;
    for file in &files {
        let bytes = fs::read(file).map_err(|e| AuditError::io(file, e))?;
        let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        // A complete segment ends in a newline, which leaves one empty piece.
        if lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        for (index, line) in lines.iter().enumerate() {
            let expected = report.last_seq + 1;
            let fail = |problem: String| VerifyFailure {
                seq: expected,
                file: file.clone(),
                line: index + 1,
                problem,
            };
            let (body, mac) = match super::chain::split(line) {
                Ok(parts) => parts,
                Err(LineError::NoMac) => {
                    return Ok(Err(fail(
                        "entry is incomplete (file cut short or edited) or is not an audit entry"
                            .into(),
                    )));
                }
                Err(e) => return Ok(Err(fail(e.to_string()))),
            };
            let Ok(head) = serde_json::from_slice::<Head>(&body) else {
                return Ok(Err(fail(
                    "entry is not valid JSON with seq and event".into(),
                )));
            };
            if report.entries == 0 {
                if head.seq != 1 && !allow_anchor {
                    return Ok(Err(fail(format!(
                        "trail starts at seq {} instead of 1: earlier entries or segments are missing (use --anchored for an archived trail)",
                        head.seq
                    ))));
                }
                if head.seq != 1 {
                    report.anchored = true;
                    report.first_seq = head.seq;
                    report.last_seq = head.seq;
                    report.entries = 1;
                    report.last_event = Some(head.event);
                    previous = mac;
                    continue;
                }
                report.first_seq = 1;
            }
            if head.seq != expected {
                return Ok(Err(fail(format!(
                    "found seq {} where seq {expected} belongs: entries were removed, inserted or reordered",
                    head.seq
                ))));
            }
            match chain.open(&previous, line) {
                Ok((_, mac)) => previous = mac,
                Err(e) => return Ok(Err(fail(e.to_string()))),
            }
            report.entries += 1;
            report.last_seq = head.seq;
            report.last_event = Some(head.event);
        }
    }
    Ok(Ok(report))
}
