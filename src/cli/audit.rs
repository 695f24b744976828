//! `cardvault audit verify`: checks the HMAC chain of a trail with the KEK,
//! without the running vault. Exit 0 intact, 1 naming the first bad entry.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::dev::dev_config;
use super::error::{CliError, CliResult};
use super::offline::offline_provider;
use crate::config::{Config, KekSource};

/// Subcommands of `audit`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the HMAC chain of a trail (a segment file or the audit
    /// directory). Exits 0 if intact, 1 naming the first bad sequence
    /// number otherwise. Needs the KEK, not the running vault.
    Verify {
        /// A segment (`audit-NNNNNNNN.jsonl`) or the audit directory.
        path: PathBuf,
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
        config,
        dev,
        key_file,
        anchored,
        json,
    } = command;
    let config = config.or_else(|| dev.as_deref().and_then(dev_config));
    let kek = match (key_file, config, dev) {
        (Some(file), _, _) => KekSource::File(file),
        (None, Some(config), _) => Config::load(&config)?.kek()?,
        (None, None, Some(dir)) => KekSource::File(dir.join("kek.key")),
        (None, None, None) => {
            return Err(CliError::Usage(
                "audit verify needs the KEK: --config FILE, --dev DIR or --key-file FILE".into(),
            ));
        }
    };
    let provider = offline_provider(&kek)?;
    let verdict = crate::audit::verify(&path, provider.as_ref(), anchored)
        .context("reading the audit trail")?;
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
            if report.last_event.as_deref() != Some("audit_stop") {
                say!(
                    "note: the trail does not end with audit_stop: the vault is running, or stopped without closing it (crash). \
                     Entries cut from the very end leave no trace in the chain; compare with the syslog mirror."
                );
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
