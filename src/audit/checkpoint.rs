//! Signed checkpoints of the trail (PCI DSS 10.3.2–10.3.4): every N events
//! or T seconds, and when the trail closes, the writer signs "node N's
//! trail reached seq S with chain MAC M at time T" with the evidence key
//! and sends it where the vault's operator cannot quietly take it back —
//! a checkpoint directory (mounted from another host, or another owner's
//! spool) and the syslog mirror. An HMAC chain proves order and edits, not
//! completeness at the end; a checkpoint does: a trail cut after it, rolled
//! back to an older copy, or missing a segment no longer holds the entry
//! the checkpoint names ([`Checkpoints::check`], `audit verify
//! --checkpoints`). Verifying needs the public key only, not the KEK.
//!
//! One checkpoint is one JSON line `{"signed": TEXT, "signature": HEX}`:
//! `TEXT` is the checkpoint's exact JSON and `HEX` its Ed25519 signature,
//! so `jq -j .signed` and `openssl pkeyutl -verify -rawin` check it without
//! cardvault (docs/evidence.md).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::crypto::{PublicKey, SigningKey};

/// Largest checkpoint file read (a checkpoint a minute for ten years is
/// about 1.3 GB; rotate the sink's files long before).
const MAX_FILE_BYTES: u64 = 256 << 20;

/// Longest checkpoint line read.
const MAX_LINE_BYTES: usize = 4096;

/// What one checkpoint states.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Format (1).
    pub format: u32,
    /// The node whose trail this is (none on a single RocksDB vault).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The last entry's sequence number.
    pub seq: u64,
    /// The last entry's chain MAC, hex (as its line ends).
    pub mac: String,
    /// The last entry's event.
    pub event: String,
    /// When the checkpoint was made (RFC 3339, UTC).
    pub ts: String,
    /// Fingerprint of the signing key (SHA-256 of its DER, hex).
    pub key: String,
    /// A handover: the evidence key was rotated, and this checkpoint,
    /// signed by the old key, names the new public key (hex) that signs
    /// from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_key: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    signed: String,
    signature: String,
}

/// The name of `node`'s checkpoint file for the UTC day of `ms` inside a
/// checkpoint directory: one file a day, so each stays small (at most
/// about 330 bytes × 86,400 s × rate / `every_events`) and their names
/// sort in time.
pub fn file_name(node: Option<&str>, ms: u64) -> String {
    let day = crate::clock::rfc3339(ms)
        .get(..10)
        .unwrap_or("0000-00-00")
        .replace('-', "");
    match node {
        Some(node) => format!("checkpoints-{node}-{day}.jsonl"),
        None => format!("checkpoints-{day}.jsonl"),
    }
}

/// When and where the writer makes checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointSettings {
    /// The directory the checkpoint file is appended to (created 0700).
    pub dir: Option<PathBuf>,
    /// A checkpoint once this many entries were written since the last.
    pub every_events: u64,
    /// A checkpoint once this long has passed since the last (if any entry
    /// was written).
    pub interval: Duration,
}

impl Default for CheckpointSettings {
    /// No directory; every 10,000 events or 60 seconds.
    fn default() -> CheckpointSettings {
        CheckpointSettings {
            dir: None,
            every_events: 10_000,
            interval: Duration::from_secs(60),
        }
    }
}

/// A statement signed by the evidence key.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The Ed25519 signature (64 bytes).
    pub signature: Vec<u8>,
    /// The signing key's fingerprint.
    pub key: String,
}

/// The writer's side: decides when a checkpoint is due and makes it.
pub struct Checkpointer {
    settings: CheckpointSettings,
    node: Option<String>,
    key: SigningKey,
    fingerprint: String,
    last_seq: u64,
    last_at: Instant,
    warned: bool,
}

impl Checkpointer {
    /// Checkpoints for `node`'s trail, signed by `key`; `seq` is where
    /// the trail stands now (nothing before it is due).
    pub fn new(
        settings: CheckpointSettings,
        node: Option<String>,
        key: SigningKey,
        seq: u64,
    ) -> Checkpointer {
        Checkpointer {
            fingerprint: key.public().fingerprint(),
            settings,
            node,
            key,
            last_seq: seq,
            last_at: Instant::now(),
            warned: false,
        }
    }

    /// Whether the trail at `seq` is due a checkpoint (`closing`: always,
    /// if anything was written since the last).
    pub fn due(&self, seq: u64, closing: bool) -> bool {
        seq > self.last_seq
            && (closing
                || seq - self.last_seq >= self.settings.every_events
                || self.last_at.elapsed() >= self.settings.interval)
    }

    /// Signs the checkpoint of the synced entry `seq` (`mac`, `event`) and
    /// writes it to the directory; returns its line for the mirror. A
    /// directory that cannot be written is logged and counted, never a
    /// failure of the trail. `next_key` makes it a handover to that key.
    pub fn make(
        &mut self,
        seq: u64,
        mac: &[u8],
        event: &str,
        next_key: Option<&PublicKey>,
    ) -> Vec<u8> {
        let now = crate::clock::now_ms();
        let checkpoint = Checkpoint {
            format: 1,
            node: self.node.clone(),
            seq,
            mac: hex::encode(mac),
            event: event.to_owned(),
            ts: crate::clock::rfc3339(now),
            key: self.fingerprint.clone(),
            next_key: next_key.map(PublicKey::hex),
        };
        // Plain strings and numbers: serializing cannot fail.
        let signed = serde_json::to_string(&checkpoint).unwrap_or_default();
        let signature = hex::encode(self.key.sign(signed.as_bytes()));
        let mut line = serde_json::to_vec(&Line { signed, signature }).unwrap_or_default();
        line.push(b'\n');
        self.last_seq = seq;
        self.last_at = Instant::now();
        if let Some(dir) = &self.settings.dir {
            match append(dir, &file_name(self.node.as_deref(), now), &line) {
                Ok(()) => {
                    metrics::counter!("cardvault_audit_checkpoints_total").increment(1);
                    if self.warned {
                        tracing::info!(dir = %dir.display(), "audit checkpoints written again");
                        self.warned = false;
                    }
                }
                Err(e) => {
                    metrics::counter!("cardvault_audit_checkpoint_failures_total").increment(1);
                    if !self.warned {
                        tracing::error!(dir = %dir.display(), error = %e, "cannot write an audit checkpoint; the trail goes on, its end is unproven until this is fixed");
                        self.warned = true;
                    }
                }
            }
        }
        line
    }
}

impl Checkpointer {
    /// The signing key's fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The signing key's public half.
    pub fn public(&self) -> PublicKey {
        self.key.public()
    }

    /// `statement` signed by the current key (not a checkpoint: an
    /// admin's approval the vault checks later).
    pub fn sign(&self, statement: &[u8]) -> Signed {
        Signed {
            signature: self.key.sign(statement),
            key: self.fingerprint.clone(),
        }
    }

    /// Signs with `key` from now on (after a handover).
    pub fn switch_key(&mut self, key: SigningKey) {
        self.fingerprint = key.public().fingerprint();
        self.key = key;
    }
}

/// Appends `line` to `DIR/NAME` (created 0640, the directory 0700) and
/// syncs it.
fn append(dir: &Path, name: &str, line: &[u8]) -> std::io::Result<()> {
    if !dir.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut file = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(dir.join(name))?;
    file.write_all(line)?;
    file.sync_data()
}

/// Why checkpoints could not be read, or what they disprove.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file could not be read.
    #[error("{0}")]
    Io(String),
    /// A line is not a checkpoint or its signature does not verify.
    #[error("{file} line {line}: {problem}")]
    Bad {
        /// The file.
        file: String,
        /// Line from 1.
        line: usize,
        /// What is wrong.
        problem: String,
    },
}

/// The checkpoints of one or more nodes, each verified.
#[derive(Debug, Default)]
pub struct Checkpoints {
    /// (node, seq) → (MAC hex, time): every checkpoint read.
    by_entry: BTreeMap<(Option<String>, u64), (String, String)>,
    /// Files read.
    pub files: usize,
    /// Checkpoints signed by keys older than the pinned one, before any the
    /// pinned key vouches for: not checked (pin the older key to check
    /// them).
    pub skipped: usize,
}

/// What the checkpoints prove about a trail.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointReport {
    /// Checkpoints read and verified.
    pub checkpoints: usize,
    /// Files they came from.
    pub files: usize,
    /// The newest checkpoint of this trail: its seq and time.
    pub last_seq: u64,
    /// When it was made.
    pub last_time: Option<String>,
}

impl Checkpoints {
    /// Reads every checkpoint in `path` (a file, or every
    /// `checkpoints*.jsonl` of a directory) and verifies each signature
    /// with the pinned `key` — or a key a verified handover named (an
    /// evidence-key rotation). A line that is not a checkpoint, or is
    /// signed by a key not trusted that way, fails, naming the file and
    /// line; only lines of older keys before the first trusted one are
    /// skipped (and counted). Files are read in name order (a directory's
    /// daily files in time order), trust carrying from one to the next.
    pub fn read(path: &Path, key: &PublicKey) -> Result<Checkpoints, CheckpointError> {
        let io = |p: &Path, e: std::io::Error| CheckpointError::Io(format!("{}: {e}", p.display()));
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut files = Vec::new();
            for entry in fs::read_dir(path).map_err(|e| io(path, e))? {
                let entry = entry.map_err(|e| io(path, e))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with("checkpoints") && name.ends_with(".jsonl") {
                    files.push(entry.path());
                }
            }
            files.sort();
            files
        } else {
            vec![path.to_path_buf()]
        };
        if files.is_empty() {
            return Err(CheckpointError::Io(format!(
                "{}: no checkpoints*.jsonl here",
                path.display()
            )));
        }
        let mut found = Checkpoints {
            files: files.len(),
            ..Checkpoints::default()
        };
        // Trust starts with the pinned key and grows with each handover.
        let mut trusted: BTreeMap<String, PublicKey> = BTreeMap::new();
        trusted.insert(key.fingerprint(), key.clone());
        let mut vouched = false;
        for file in &files {
            let meta = fs::metadata(file).map_err(|e| io(file, e))?;
            if meta.len() > MAX_FILE_BYTES {
                return Err(CheckpointError::Io(format!(
                    "{}: larger than {} MiB; split it",
                    file.display(),
                    MAX_FILE_BYTES >> 20
                )));
            }
            let bytes = fs::read(file).map_err(|e| io(file, e))?;
            for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
                if line.is_empty() {
                    continue;
                }
                let bad = |problem: &str| CheckpointError::Bad {
                    file: file.display().to_string(),
                    line: index + 1,
                    problem: problem.to_owned(),
                };
                if line.len() > MAX_LINE_BYTES {
                    return Err(bad("longer than a checkpoint can be"));
                }
                let parsed: Line =
                    serde_json::from_slice(line).map_err(|_| bad("not a checkpoint line"))?;
                let signature =
                    hex::decode(&parsed.signature).map_err(|_| bad("the signature is not hex"))?;
                let checkpoint: Checkpoint = serde_json::from_str(&parsed.signed)
                    .map_err(|_| bad("the signed text is not a checkpoint"))?;
                if checkpoint.format != 1 {
                    return Err(bad("unknown checkpoint format"));
                }
                let Some(signer) = trusted.get(&checkpoint.key) else {
                    if !vouched {
                        found.skipped += 1;
                        continue;
                    }
                    return Err(bad(
                        "signed by a key neither pinned nor handed over to by a checkpoint of the pinned key",
                    ));
                };
                if !signer.verifies(parsed.signed.as_bytes(), &signature) {
                    return Err(bad(
                        "the signature does not verify with the pinned key (edited, or signed by another key)",
                    ));
                }
                vouched = true;
                if let Some(next) = &checkpoint.next_key {
                    let next = PublicKey::parse(next)
                        .map_err(|_| bad("the handover names no valid public key"))?;
                    trusted.insert(next.fingerprint(), next);
                }
                found.by_entry.insert(
                    (checkpoint.node, checkpoint.seq),
                    (checkpoint.mac, checkpoint.ts),
                );
            }
        }
        Ok(found)
    }

    /// The checkpoints of `node`'s trail, oldest first: seq → (MAC, time).
    pub fn of_node(&self, node: Option<&str>) -> BTreeMap<u64, (String, String)> {
        self.by_entry
            .iter()
            .filter(|((n, _), _)| n.as_deref() == node)
            .map(|((_, seq), v)| (*seq, v.clone()))
            .collect()
    }

    /// How many checkpoints were read.
    pub fn len(&self) -> usize {
        self.by_entry.len()
    }

    /// Whether none were read.
    pub fn is_empty(&self) -> bool {
        self.by_entry.is_empty()
    }
}
