//! `cardvault audit verify`: walks a trail (one segment or a directory of
//! them, oldest first), checks that sequence numbers run 1, 2, 3, … without
//! gaps and that every MAC chains to the one before, and names the first
//! sequence number where that fails. The MACs need the KEK (to unwrap the
//! audit key), not the running vault. With signed checkpoints
//! ([`super::checkpoint`]) it also proves the trail reaches the last one
//! and holds, at each checkpointed seq, the entry the checkpoint names —
//! which needs only the evidence public key: without a KEK the sequence
//! and the checkpoints are checked, the MACs between them are not.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::chain::{Chain, GENESIS, LineError, MAC_LEN};
use super::checkpoint::{CheckpointReport, Checkpoints};
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
    /// Whether the MAC chain was checked (with the KEK); without it only
    /// the sequence and the checkpoints were.
    pub chain_checked: bool,
    /// What the signed checkpoints prove, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoints: Option<CheckpointReport>,
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
    #[serde(default)]
    node: Option<String>,
}

/// What `verify` checks a trail against.
pub struct VerifyWith<'a> {
    /// The KEK that unwraps the audit key (the MAC chain); `None` checks
    /// the sequence and the checkpoints only.
    pub provider: Option<&'a dyn KeyProvider>,
    /// Accept a trail whose earlier segments were archived away: its first
    /// entry is then trusted instead of chained from the start.
    pub allow_anchor: bool,
    /// Signed checkpoints the trail must reach and agree with.
    pub checkpoints: Option<&'a Checkpoints>,
}

/// Verifies the trail at `path` (a segment or a directory).
pub fn verify(
    path: &Path,
    with: &VerifyWith<'_>,
) -> Result<Result<VerifyReport, VerifyFailure>, AuditError> {
    let allow_anchor = with.allow_anchor;
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
    let chain = match with.provider {
        Some(provider) => {
            let audit_key = key::read(&dir, key::AUDIT, provider)?.ok_or_else(|| {
                AuditError::Key(format!("no {} in {}", key::KEY_FILE, dir.display()))
            })?;
            Some(Chain::new(&audit_key.key))
        }
        None => None,
    };
    let mut report = VerifyReport {
        files: files.len(),
        entries: 0,
        first_seq: 0,
        last_seq: 0,
        last_event: None,
        anchored: false,
        chain_checked: chain.is_some(),
        checkpoints: None,
    };
    // The trail's node (from its first entry) and its checkpoints.
    let mut node: Option<Option<String>> = None;
    let mut expected_macs = std::collections::BTreeMap::new();
    let mut previous: [u8; MAC_LEN] = GENESIS;
    let mut last_place = (PathBuf::new(), 0);
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
            if node.is_none() {
                if let Some(checkpoints) = with.checkpoints {
                    expected_macs = checkpoints.of_node(head.node.as_deref());
                }
                node = Some(head.node.clone());
            }
            if let Some((mac_hex, time)) = expected_macs.get(&head.seq)
                && *mac_hex != hex::encode(mac)
            {
                return Ok(Err(VerifyFailure {
                    seq: head.seq,
                    file: file.clone(),
                    line: index + 1,
                    problem: format!(
                        "this is not the entry the checkpoint of {time} names for seq {} (its MAC differs): the trail was rewritten, or rolled back and continued",
                        head.seq
                    ),
                }));
            }
            last_place = (file.clone(), index + 1);
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
            match &chain {
                Some(chain) => match chain.open(&previous, line) {
                    Ok((_, mac)) => previous = mac,
                    Err(e) => return Ok(Err(fail(e.to_string()))),
                },
                None => previous = mac,
            }
            report.entries += 1;
            report.last_seq = head.seq;
            report.last_event = Some(head.event);
        }
    }
    if let Some(checkpoints) = with.checkpoints {
        let node = node.flatten();
        let Some((&last_seq, (_, last_time))) = expected_macs.last_key_value() else {
            return Ok(Err(VerifyFailure {
                seq: report.last_seq,
                file: last_place.0,
                line: last_place.1,
                problem: format!(
                    "none of the {} checkpoints is of this trail (node {}): nothing proves where it should end",
                    checkpoints.len(),
                    node.as_deref().unwrap_or("-")
                ),
            }));
        };
        if last_seq > report.last_seq {
            return Ok(Err(VerifyFailure {
                seq: report.last_seq + 1,
                file: last_place.0,
                line: last_place.1,
                problem: format!(
                    "the trail ends at seq {}, but the checkpoint of {last_time} proves it reached seq {last_seq}: entries were cut from its end, a segment was removed, or it was rolled back to an older copy",
                    report.last_seq
                ),
            }));
        }
        report.checkpoints = Some(CheckpointReport {
            checkpoints: expected_macs.len(),
            files: checkpoints.files,
            last_seq,
            last_time: Some(last_time.clone()),
        });
    }
    Ok(Ok(report))
}
