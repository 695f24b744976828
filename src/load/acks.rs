//! The ack log: one JSON line per acknowledged token, written by a blocking
//! task as answers come in and synced at the end (`load verify` reads it
//! back after a crash test), and read back as the tokens a later run
//! detokenizes.

use std::io::Write;

use anyhow::{Context, Result, bail};
use tokio::sync::mpsc;

use super::run::POOL_LIMIT;

/// The ack log's sender and the blocking task writing it.
pub(super) type AckLog = (
    Option<mpsc::UnboundedSender<String>>,
    Option<tokio::task::JoinHandle<Result<()>>>,
);

/// The ack log's sender and writer, if asked for.
pub(super) fn ack_log(path: Option<&std::path::Path>) -> Result<AckLog> {
    let Some(path) = path else {
        return Ok((None, None));
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open ack log {}", path.display()))?;
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    Ok((
        Some(tx),
        Some(tokio::task::spawn_blocking(move || write_acks(file, rx))),
    ))
}

/// Writes the lines it receives, flushing whenever it is idle, then syncs.
fn write_acks(file: std::fs::File, mut rx: mpsc::UnboundedReceiver<String>) -> Result<()> {
    let mut out = std::io::BufWriter::new(file);
    while let Some(line) = rx.blocking_recv() {
        writeln!(out, "{line}")?;
        // Keep what is acknowledged on disk promptly: flush when idle.
        if rx.is_empty() {
            out.flush()?;
        }
    }
    out.flush()?;
    out.get_ref().sync_all()?;
    Ok(())
}

/// The tokens of an ack log, at most [`POOL_LIMIT`] of them, evenly spaced.
pub(super) fn tokens_from(path: &std::path::Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let all: Vec<String> = text
        .lines()
        .filter_map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            value["token"].as_str().map(str::to_owned)
        })
        .collect();
    if all.is_empty() {
        bail!("{} holds no tokens", path.display());
    }
    let stride = all.len().div_ceil(POOL_LIMIT);
    Ok(all.into_iter().step_by(stride).collect())
}
