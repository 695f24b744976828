//! `cardvault load verify`: detokenizes every entry of an ack log (batches of
//! 1,000) and counts tokens that are gone (lost) or reveal another PAN
//! (mismatched); with `--retokenize`, tokenizes every logged PAN again and
//! counts those given another token. Used after crash and failover tests:
//! all must be 0.

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
    /// Those by the vault's error code (`malformed` for a bad line).
    pub error_codes: std::collections::BTreeMap<String, u64>,
    /// `--retokenize`: PANs tokenized again.
    pub retokenized: u64,
    /// `--retokenize`: PANs given a token other than the logged one.
    pub second_tokens: u64,
}

impl VerifyReport {
    /// Counts an entry that could not be checked, by `code`.
    fn unreadable(&mut self, code: &str) {
        self.errors += 1;
        *self.error_codes.entry(code.to_owned()).or_default() += 1;
    }
}

/// Verifies the ack log at `path` against the vault (and, with
/// `retokenize`, that each logged PAN still has its logged token).
pub async fn verify(target: &TargetArgs, path: &Path, retokenize: bool) -> Result<VerifyReport> {
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
            _ => report.unreadable("malformed"),
        }
    }
    let mut conn = tls
        .connect(addr)
        .await
        .with_context(|| format!("cannot reach the vault at {}", target.target))?;
    for chunk in entries.chunks(1000) {
        let tokens: Vec<&str> = chunk.iter().map(|(_, t)| t.as_str()).collect();
        let results = batch(
            &mut conn,
            "/v1/detokenize/batch",
            "tokens",
            tokens,
            "the vault refused verification (does the certificate hold the detokenize role?)",
        )
        .await?;
        for ((pan, _), result) in chunk.iter().zip(&results) {
            match (result["pan"].as_str(), result["error"]["code"].as_str()) {
                (Some(revealed), _) if revealed == pan => report.verified += 1,
                (Some(_), _) => report.mismatched += 1,
                (None, Some("token_not_found")) => report.lost += 1,
                (None, code) => report.unreadable(code.unwrap_or("no_code")),
            }
        }
        if retokenize {
            let pans: Vec<&str> = chunk.iter().map(|(p, _)| p.as_str()).collect();
            let results = batch(
                &mut conn,
                "/v1/tokenize/batch",
                "pans",
                pans,
                "the vault refused to tokenize again",
            )
            .await?;
            for ((_, token), result) in chunk.iter().zip(&results) {
                report.retokenized += 1;
                if result["token"].as_str() != Some(token.as_str()) {
                    report.second_tokens += 1;
                }
            }
        }
    }
    Ok(report)
}

/// Posts `items` as `{field: items}` to the batch route `path`: one result
/// per item (`null` past the end of a short answer).
async fn batch(
    conn: &mut crate::client::Connection,
    path: &str,
    field: &str,
    items: Vec<&str>,
    refused: &str,
) -> Result<Vec<Value>> {
    let count = items.len();
    let mut body = serde_json::Map::new();
    body.insert(field.to_owned(), json!(items));
    let reply = conn
        .post_json(path, &Value::Object(body))
        .await
        .with_context(|| format!("{path} failed"))?;
    if reply.status != hyper::StatusCode::OK {
        bail!(
            "{refused}: HTTP {} {}",
            reply.status.as_u16(),
            reply.json()["error"]["code"].as_str().unwrap_or("")
        );
    }
    let mut results = reply.json()["results"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    results.resize(count, Value::Null);
    Ok(results)
}
