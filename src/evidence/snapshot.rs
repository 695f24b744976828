//! The audit trail as the bundle reports it, fixed before the bundle's own
//! run writes to it: the signed checkpoints are read first, then the trail
//! (of a running vault: a copy, cut back to its last complete entry), then
//! it is verified — its chain with the KEK and its checkpoints with the
//! vault's evidence key. The bundle's `created` time follows the last
//! event of this snapshot.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::facts::{self, TrailFacts};
use crate::audit::checkpoint::Checkpoints;
use crate::config::Config;
use crate::crypto::KeyProvider;

/// The trail read and verified once.
pub struct Snapshot {
    pub(super) trail: TrailFacts,
    pub(super) audit: Value,
}

impl Snapshot {
    /// The time of the last event in the snapshot (RFC 3339), if any.
    pub fn last_event_time(&self) -> Option<&str> {
        self.trail.last.as_deref()
    }
}

/// Copies the segments and key files of `dir` into a scratch directory,
/// each segment cut back to its last complete line (a running writer may
/// be mid-write).
fn copy_trail(dir: &Path) -> anyhow::Result<crate::scratch::ScratchDir> {
    let copy = crate::scratch::ScratchDir::new("cardvault-trail").context("a scratch directory")?;
    for name in [
        crate::audit::key::AUDIT.file,
        crate::audit::key::EVIDENCE.file,
    ] {
        let from = dir.join(name);
        if from.exists() {
            std::fs::copy(&from, copy.path().join(name))
                .with_context(|| format!("copying {}", from.display()))?;
        }
    }
    for (_, segment) in crate::audit::segments(dir)? {
        let bytes =
            std::fs::read(&segment).with_context(|| format!("reading {}", segment.display()))?;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let name = segment.file_name().unwrap_or_default();
        std::fs::write(copy.path().join(name), &bytes[..complete])
            .with_context(|| format!("copying {}", segment.display()))?;
    }
    Ok(copy)
}

/// Reads and verifies the trail of the vault of `config`: in place when
/// it is stopped, a copy when `live` (it is running and writing).
pub fn snapshot(
    config: &Config,
    provider: Arc<dyn KeyProvider>,
    live: bool,
) -> anyhow::Result<Snapshot> {
    let dir = &config.audit.dir;
    let key = crate::audit::key::read(dir, crate::audit::key::EVIDENCE, provider.as_ref())
        .context("reading the evidence key")?
        .map(|k| crate::crypto::SigningKey::from_seed(&k.key))
        .transpose()
        .map_err(|e| anyhow::anyhow!("the evidence key: {e}"))?;
    // The checkpoints before the trail: every one then names an entry
    // already on disk, so a trail still growing never looks cut.
    let checkpoint_dir = config.audit.checkpoint_dir.as_ref().filter(|d| d.is_dir());
    let checkpoints = match (checkpoint_dir, &key) {
        (Some(at), Some(key)) => Some(Checkpoints::read(at, &key.public())),
        _ => None,
    };
    let (checkpoints, checkpoint_problem) = match checkpoints {
        Some(Ok(found)) if !found.is_empty() => (Some(found), None),
        Some(Ok(_)) | None => (None, None),
        Some(Err(e)) => (None, Some(e.to_string())),
    };
    let copy = live.then(|| copy_trail(dir)).transpose()?;
    let read_from = copy.as_ref().map_or(dir.as_path(), |c| c.path());
    let trail = facts::read_trail(read_from)?;
    let with = crate::audit::VerifyWith {
        provider: Some(provider.as_ref()),
        allow_anchor: true,
        checkpoints: checkpoints.as_ref(),
    };
    let verdict = crate::audit::verify(read_from, &with).context("verifying the audit trail")?;
    let checked_against = match (&checkpoints, &checkpoint_problem) {
        (Some(c), _) => {
            json!({"checkpoints": c.len(), "directory": checkpoint_dir.map(|d| d.display().to_string())})
        }
        (None, Some(problem)) => json!({"checkpoints": 0, "refused": problem}),
        (None, None) => {
            json!({"checkpoints": 0, "note": "no signed checkpoints configured or found: entries cut from the end of the trail would leave no trace"})
        }
    };
    let source = if live {
        "measured: audit verify over a copy of the running vault's trail, taken before this run's own requests"
    } else {
        "measured: audit verify over the trail as found, before this run opened the vault"
    };
    let audit = match &verdict {
        Ok(report) if checkpoint_problem.is_none() => {
            json!({"intact": true, "source": source, "report": report, "checkpoints": checked_against})
        }
        Ok(report) => {
            json!({"intact": false, "source": source, "report": report, "checkpoints": checked_against})
        }
        Err(failure) => {
            json!({"intact": false, "source": source, "failure": failure, "checkpoints": checked_against})
        }
    };
    Ok(Snapshot { trail, audit })
}
