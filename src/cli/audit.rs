//! `cardvault audit verify`: checks a trail without the running vault — its
//! HMAC chain with the KEK, and, with signed checkpoints and the evidence
//! public key, that it reaches the last checkpoint (a cut tail, a removed
//! segment or a rolled-back copy fails). Checkpoints and the public key
//! alone need no KEK. Exit 0 intact, 1 naming the first bad entry.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use super::dev::dev_config;
use super::error::{CliError, CliResult};
use super::offline::offline_provider;
use crate::audit::VerifyWith;
use crate::audit::checkpoint::Checkpoints;
use crate::config::{Config, KekSource};
use crate::crypto::PublicKey;

/// Subcommands of `audit`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check a trail (a segment file or the audit directory): its HMAC
    /// chain (needs the KEK), and that it reaches its signed checkpoints
    /// (needs the evidence public key only). Exits 0 if intact, 1 naming
    /// the first bad sequence number otherwise. Never needs the running
    /// vault.
    Verify {
        /// A segment (`audit-NNNNNNNN.jsonl`) or the audit directory.
        path: PathBuf,
        /// Signed checkpoints (a `checkpoints*.jsonl` file or a directory of
        /// them): the trail must reach the last and agree with each.
        /// Default: `DIR/checkpoints` under `--dev`, the config's
        /// `audit.checkpoint_dir` under `--config`.
        #[arg(long, value_name = "FILE|DIR")]
        checkpoints: Option<PathBuf>,
        /// The evidence public key that signed the checkpoints: 64 hex
        /// digits or a PEM file (`evidence.pub`). Pin the one the vault
        /// printed when it made it. Default: the dev directory's or the
        /// config's `evidence.pub`.
        #[arg(long, value_name = "KEY|FILE")]
        pubkey: Option<String>,
        /// Take the KEK from this config file (`[kek]` or `storage.key_file`;
        /// a key file or an HSM — a KEK split among custodians cannot
        /// verify offline).
        #[arg(long, conflicts_with_all = ["dev", "key_file"])]
        config: Option<PathBuf>,
        /// Take the KEK from a `serve --dev` directory (`DIR/kek.key`).
        #[arg(long, conflicts_with = "key_file")]
        dev: Option<PathBuf>,
        /// The KEK file.
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Accept a trail whose earlier segments were archived: its first
        /// entry is trusted instead of chained from seq 1.
        #[arg(long)]
        anchored: bool,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Runs an `audit` subcommand.
pub fn run(command: AuditCommand) -> CliResult {
    let AuditCommand::Verify {
        path,
        checkpoints,
        pubkey,
        config,
        dev,
        key_file,
        anchored,
        json,
    } = command;
    let config_path = config.or_else(|| dev.as_deref().and_then(dev_config));
    let config = config_path.as_deref().map(Config::load).transpose()?;
    let kek = match (key_file, &config, &dev) {
        (Some(file), _, _) => Some(KekSource::File(file)),
        (None, Some(config), _) => Some(config.kek()?),
        (None, None, Some(dir)) => Some(KekSource::File(dir.join("kek.key"))),
        (None, None, None) => None,
    };
    // Where the checkpoints and their key are, unless given.
    let (default_checkpoints, default_key) = match (&dev, &config) {
        (Some(dir), _) => (
            Some(dir.join("checkpoints")),
            Some(dir.join("evidence.pub")),
        ),
        (None, Some(config)) => (
            config.audit.checkpoint_dir.clone(),
            config.audit.public_key_file.clone(),
        ),
        (None, None) => (None, None),
    };
    let checkpoints_path = checkpoints.or(default_checkpoints.filter(|p| p.exists()));
    let checkpoints = match &checkpoints_path {
        Some(at) => Some(read_checkpoints(at, pubkey, default_key.as_deref())?),
        None => None,
    };
    if kek.is_none() && checkpoints.is_none() {
        return Err(CliError::Usage(
            "audit verify needs the KEK (--config FILE, --dev DIR or --key-file FILE), or signed checkpoints and their key (--checkpoints PATH --pubkey KEY), or both".into(),
        ));
    }
    let provider = kek.as_ref().map(offline_provider).transpose()?;
    let with = VerifyWith {
        provider: provider.as_deref(),
        allow_anchor: anchored,
        checkpoints: checkpoints.as_ref().map(|(c, _)| c),
    };
    let verdict = crate::audit::verify(&path, &with).context("reading the audit trail")?;
    match verdict {
        Ok(report) => {
            if json {
                say!("{}", serde_json::json!({"intact": true, "report": report}));
                return Ok(());
            }
            say!(
                "audit trail intact: {} entries (seq {}..{}) in {} file(s); last event {}{}",
                report.entries,
                report.first_seq,
                report.last_seq,
                report.files,
                report.last_event.as_deref().unwrap_or("-"),
                if report.anchored {
                    "; first entry trusted as anchor (--anchored)"
                } else {
                    ""
                }
            );
            if !report.chain_checked {
                say!(
                    "note: no KEK given, so the MACs between entries were not checked: the sequence is complete and the checkpointed entries are the ones signed; give the KEK to check every entry"
                );
            }
            match (&report.checkpoints, &checkpoints) {
                (Some(proof), Some((read, key))) => say!(
                    "checkpoints: {} signed by key {} (or keys it handed over to) agree with the trail; the newest ({}) is at seq {}{}{}",
                    proof.checkpoints,
                    key.fingerprint(),
                    proof.last_time.as_deref().unwrap_or("-"),
                    proof.last_seq,
                    if proof.last_seq < report.last_seq {
                        format!(
                            "; the {} entries after it are not yet covered",
                            report.last_seq - proof.last_seq
                        )
                    } else {
                        String::new()
                    },
                    if read.skipped > 0 {
                        format!(
                            "; {} older checkpoints, signed by keys before the pinned one, were not checked (pin the older key to check them)",
                            read.skipped
                        )
                    } else {
                        String::new()
                    }
                ),
                _ if report.last_event.as_deref() != Some("audit_stop") => say!(
                    "note: the trail does not end with audit_stop: the vault is running, or stopped without closing it (crash). \
                     Without checkpoints, entries cut from the very end leave no trace in the chain: give --checkpoints."
                ),
                _ => say!(
                    "note: no checkpoints given: the chain proves order and edits, not that nothing was cut from the end (give --checkpoints)"
                ),
            }
            Ok(())
        }
        Err(failure) => {
            if json {
                say!(
                    "{}",
                    serde_json::json!({"intact": false, "failure": failure})
                );
            }
            Err(CliError::TrailBroken(failure))
        }
    }
}

/// Reads and verifies the checkpoints at `at` with the pinned key (or the
/// vault's own `evidence.pub`, `fallback`).
fn read_checkpoints(
    at: &Path,
    pubkey: Option<String>,
    fallback: Option<&Path>,
) -> Result<(Checkpoints, PublicKey), CliError> {
    let key = match (pubkey, fallback) {
        (Some(text), _) => PublicKey::parse_or_read(&text),
        (None, Some(file)) => PublicKey::parse_or_read(&file.display().to_string()),
        (None, None) => {
            return Err(CliError::Usage(
                "--checkpoints needs the key that signed them: --pubkey KEY|FILE".into(),
            ));
        }
    }
    .map_err(|e| CliError::Usage(format!("--pubkey: {e}")))?;
    let checkpoints = Checkpoints::read(at, &key).map_err(|e| match e {
        crate::audit::checkpoint::CheckpointError::Io(why) => CliError::Unreadable(why),
        bad => CliError::Answer(format!("checkpoints refused: {bad}")),
    })?;
    Ok((checkpoints, key))
}
