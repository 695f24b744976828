//! `cardvault load verify`: detokenizes every entry of an ack log (batches of
//! 1,000) and counts tokens that are gone (lost) or reveal another PAN
//! (mismatched). Used after crash tests: both must be 0.

use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};

use super::TargetArgs;

/// What verification found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Entries in the ack log.
    pub entries: u64,
    /// Entries whose token revealed the logged PAN.
    pub verified: u64,
    /// Tokens the vault no longer knows.
    pub lost: u64,
    /// Tokens that revealed a different PAN.
    pub mismatched: u64,
    /// Entries that could not be checked (malformed lines, other errors).
    pub errors: u64,
}

/// Verifies the ack log at `path` against the vault.
pub async fn verify(target: &TargetArgs, path: &Path) -> Result<VerifyReport> {
    let (tls, addr) = target.connect_info().await?;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open ack log {}", path.display()))?;
    let mut entries = Vec::new();
    let mut report = VerifyReport::default();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        report.entries += 1;
        let value: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        match (value["pan"].as_str(), value["token"].as_str()) {
            (Some(pan), Some(token)) => entries.push((pan.to_owned(), token.to_owned())),
            _ => report.errors += 1,
        }
    }
    let mut conn = tls
        .connect(addr)
        .await
        .with_context(|| format!("cannot reach the vault at {}", target.target))?;
    for chunk in entries.chunks(1000) {
        let tokens: Vec<&str> = chunk.iter().map(|(_, t)| t.as_str()).collect();
        let reply = conn
            .post_json("/v1/detokenize/batch", &json!({ "tokens": tokens }))
            .await
            .context("detokenize batch failed")?;
        if reply.status != hyper::StatusCode::OK {
            bail!(
                "the vault refused verification: HTTP {} {} (does the certificate hold the detokenize role?)",
                reply.status.as_u16(),
                reply.json()["error"]["code"].as_str().unwrap_or("")
            );
        }
        let results = reply.json()["results"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for ((pan, _), result) in chunk
            .iter()
            .zip(results.iter().chain(std::iter::repeat(&Value::Null)))
        {
            match (result["pan"].as_str(), result["error"]["code"].as_str()) {
                (Some(revealed), _) if revealed == pan => report.verified += 1,
                (Some(_), _) => report.mismatched += 1,
                (None, Some("token_not_found")) => report.lost += 1,
                _ => report.errors += 1,
            }
        }
    }
    Ok(report)
}
