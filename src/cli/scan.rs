//! `cardvault scan PATH...`: finds card numbers (and cardvault tokens) in
//! files and directories and reports where they are — file, line, byte
//! offset, brand and a masked value, never the number — as text, one JSON
//! object (`--json`) or SARIF 2.1.0 (`--sarif`, for code-scanning UIs).
//! With `--dev DIR` or `--ca/--cert/--key`, token-shaped values are
//! confirmed against a running vault (metadata reads; role `read`).
//! Exit 0 when no PAN was found, 1 when one was, 2 when a file could not
//! be read (and no PAN was found): usable as a CI gate.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use serde_json::{Value, json};

use super::error::{CliError, CliResult};
use crate::load::TargetArgs;
use crate::scan::Kind;
use crate::scan::source::Located;
use crate::scan::walk::{self, FileOutcome, Skip, WalkOptions};

/// Arguments of `scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Files and directories to scan (directories recursively; symbolic
    /// links are not followed).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Print one JSON object: `findings`, `files`, `errors`, `summary`.
    #[arg(long, conflicts_with = "sarif")]
    json: bool,
    /// Print a SARIF 2.1.0 log.
    #[arg(long)]
    sarif: bool,
    /// Skip paths (or file names) matching this glob; repeatable.
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Skip files larger than this (bytes, or with K, M, G); a `.gz`
    /// file's content stops here and the file is reported as truncated.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    max_file_size: u64,
    /// Scan files that look binary too (by default they are skipped and
    /// counted).
    #[arg(long)]
    include_binary: bool,
    /// A running vault to confirm tokens against (`--dev DIR` or
    /// `--ca/--cert/--key`); without it tokens are reported unconfirmed.
    #[command(flatten)]
    vault: TargetArgs,
}

/// `1G`, `512M`, `64K`, `1000`: a size in bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, scale) = match text.char_indices().last() {
        Some((i, 'K' | 'k')) => (&text[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&text[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&text[..i], 1 << 30),
        _ => (text, 1),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{text:?} is not a size (bytes, or a number with K, M or G)"))
}

/// One finding as reported.
struct Reported {
    file: String,
    at: Located,
    /// For tokens: the token's digits (not secret), to confirm.
    token: Option<String>,
    confirmed: Option<bool>,
}

/// Counts per file with something to say.
#[derive(Default)]
struct FileSummary {
    bytes: u64,
    pans: u64,
    tokens: u64,
    truncated: bool,
}

#[derive(Default)]
struct Scan {
    findings: Vec<Reported>,
    files: BTreeMap<String, FileSummary>,
    errors: Vec<(String, String)>,
    scanned: u64,
    bytes: u64,
    skipped_binary: u64,
    skipped_large: u64,
}

impl Scan {
    fn pans(&self) -> u64 {
        self.files.values().map(|f| f.pans).sum()
    }

    fn tokens(&self) -> u64 {
        self.files.values().map(|f| f.tokens).sum()
    }
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Walks and scans every file (blocking).
fn scan_all(args: &ScanArgs) -> Result<Scan, CliError> {
    let excludes = walk::exclude_set(&args.exclude).map_err(CliError::Usage)?;
    let options = WalkOptions {
        max_file_size: args.max_file_size,
        include_binary: args.include_binary,
        exclude: args.exclude.clone(),
    };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed} {msg} ({binary_bytes} at {binary_bytes_per_sec})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let mut scan = Scan::default();
    let mut failures = Vec::new();
    walk::walk(
        &args.paths,
        &excludes,
        |path| {
            let name = display(path);
            let mut summary = FileSummary::default();
            let mut found = Vec::new();
            let outcome = walk::scan_file(path, &options, |at| {
                match at.finding.kind {
                    Kind::Pan => summary.pans += 1,
                    Kind::Token => summary.tokens += 1,
                }
                found.push(at);
            });
            match outcome {
                FileOutcome::Scanned(done) => {
                    scan.scanned += 1;
                    scan.bytes += done.bytes;
                    bar.inc(done.bytes);
                    summary.bytes = done.bytes;
                    summary.truncated = done.truncated;
                    if done.truncated {
                        scan.errors.push((
                            name.clone(),
                            format!(
                                "content larger than --max-file-size ({}); the rest was not scanned",
                                args.max_file_size
                            ),
                        ));
                    }
                }
                FileOutcome::Skipped(Skip::Binary) => scan.skipped_binary += 1,
                FileOutcome::Skipped(Skip::TooLarge) => scan.skipped_large += 1,
                FileOutcome::Failed(why) => scan.errors.push((name.clone(), why)),
            }
            scan.findings.extend(found.into_iter().map(|at| Reported {
                file: name.clone(),
                token: at.token.map(|t| t.to_string()),
                at,
                confirmed: None,
            }));
            if summary.pans + summary.tokens > 0 || summary.truncated {
                scan.files.insert(name, summary);
            }
            bar.set_message(format!("{} files", scan.scanned));
        },
        |path, why| failures.push((display(path), why)),
    );
    bar.finish_and_clear();
    scan.errors.extend(failures);
    Ok(scan)
}

/// Confirms token findings against the vault: `GET /v1/tokens/{token}` on
/// one connection, each distinct token once.
async fn confirm(scan: &mut Scan, vault: &TargetArgs) -> Result<(), CliError> {
    let (tls, addr) = vault.connect_info().await?;
    let mut conn = tls
        .connect(addr)
        .await
        .with_context(|| format!("cannot reach the vault at {}", vault.target))?;
    let mut known: HashMap<String, bool> = HashMap::new();
    for reported in &mut scan.findings {
        let Some(token) = &reported.token else {
            continue;
        };
        if let Some(&answer) = known.get(token) {
            reported.confirmed = Some(answer);
            continue;
        }
        let parsed = crate::domain::Token::parse(token)
            .map_err(|e| anyhow::anyhow!("a token finding did not parse: {e}"))?;
        let mut tries = 0;
        let answer = loop {
            let reply = conn
                .get(&format!("/v1/tokens/{parsed}"))
                .await
                .context("GET /v1/tokens/{token}")?;
            match reply.status.as_u16() {
                200 => break true,
                404 => break false,
                429 if tries < 20 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                status => {
                    return Err(anyhow::anyhow!(
                        "the vault answered {status} to a token lookup: {}",
                        String::from_utf8_lossy(&reply.body).trim()
                    )
                    .into());
                }
            }
        };
        known.insert(token.clone(), answer);
        reported.confirmed = Some(answer);
    }
    Ok(())
}

fn finding_json(r: &Reported) -> Value {
    let f = &r.at.finding;
    json!({
        "file": r.file,
        "line": r.at.line,
        "offset": r.at.offset,
        "length": r.at.length,
        "kind": f.kind.as_str(),
        "brand": f.brand.as_str(),
        "bin": f.bin.map(|b| b.to_string()),
        "last4": f.last4.to_string(),
        "masked": f.masked(),
        "digits": f.digits,
        "confirmed": r.confirmed,
    })
}

fn summary_json(scan: &Scan) -> Value {
    json!({
        "files_scanned": scan.scanned,
        "bytes_scanned": scan.bytes,
        "skipped_binary": scan.skipped_binary,
        "skipped_too_large": scan.skipped_large,
        "errors": scan.errors.len(),
        "pans": scan.pans(),
        "tokens": scan.tokens(),
        "files_with_pans": scan.files.values().filter(|f| f.pans > 0).count(),
    })
}

/// The whole report as one JSON object.
fn report_json(scan: &Scan) -> Value {
    json!({
        "findings": scan.findings.iter().map(finding_json).collect::<Vec<_>>(),
        "files": scan.files.iter().map(|(file, s)| json!({
            "file": file, "bytes": s.bytes, "pans": s.pans, "tokens": s.tokens,
            "truncated": s.truncated,
        })).collect::<Vec<_>>(),
        "errors": scan.errors.iter().map(|(file, error)| json!({"file": file, "error": error}))
            .collect::<Vec<_>>(),
        "summary": summary_json(scan),
    })
}

/// A relative file URI for SARIF (each byte outside the unreserved set and
/// `/` percent-encoded).
fn sarif_uri(file: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(file.trim_start_matches("./"), KEEP).to_string()
}

/// The report as a SARIF 2.1.0 log.
fn report_sarif(scan: &Scan) -> Value {
    let results: Vec<Value> = scan
        .findings
        .iter()
        .map(|r| {
            let f = &r.at.finding;
            let (rule, index, level, what) = match f.kind {
                Kind::Pan => ("CV1001", 0, "error", "card number"),
                Kind::Token => ("CV1002", 1, "note", "cardvault token"),
            };
            json!({
                "ruleId": rule,
                "ruleIndex": index,
                "level": level,
                "message": { "text": format!("{} {what} {}", f.brand, f.masked()) },
                "locations": [{ "physicalLocation": {
                    "artifactLocation": { "uri": sarif_uri(&r.file) },
                    "region": { "startLine": r.at.line, "byteOffset": r.at.offset,
                                "byteLength": r.at.length },
                }}],
            })
        })
        .collect();
    let notifications: Vec<Value> = scan
        .errors
        .iter()
        .map(|(file, error)| {
            json!({
                "level": "error",
                "message": { "text": format!("{file}: {error}") },
                "locations": [{ "physicalLocation": {
                    "artifactLocation": { "uri": sarif_uri(file) } } }],
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "cardvault scan",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/cardvault/cardvault/blob/main/docs/scope-reduction.md",
                "rules": [
                    { "id": "CV1001", "name": "CardNumberInClear",
                      "shortDescription": { "text": "A card number (PAN) stored in clear text" },
                      "fullDescription": { "text": "Digits in a card brand's IIN range, of a length it issues, passing the Luhn check. Replace it with a token (cardvault tokenize-file) or delete it." },
                      "defaultConfiguration": { "level": "error" } },
                    { "id": "CV1002", "name": "CardvaultToken",
                      "shortDescription": { "text": "A cardvault token (not card data)" },
                      "fullDescription": { "text": "Shaped like a cardvault token: BIN and last 4 of a real range, failing the Luhn check." },
                      "defaultConfiguration": { "level": "note" } },
                ],
            }},
            "invocations": [{
                "executionSuccessful": scan.errors.is_empty(),
                "toolExecutionNotifications": notifications,
            }],
            "results": results,
        }],
    })
}

fn print_text(scan: &Scan) {
    for r in &scan.findings {
        let f = &r.at.finding;
        let confirmed = match r.confirmed {
            Some(true) => " (known to the vault)",
            Some(false) => " (unknown to the vault)",
            None => "",
        };
        let kind = match f.kind {
            Kind::Pan => "PAN",
            Kind::Token => "token",
        };
        say!(
            "{}:{}:{}: {kind} {} {}{confirmed}",
            r.file,
            r.at.line,
            r.at.offset,
            f.brand,
            f.masked()
        );
    }
    for (file, s) in &scan.files {
        say!(
            "{file}: {} PANs, {} tokens{}",
            s.pans,
            s.tokens,
            if s.truncated { " (truncated)" } else { "" }
        );
    }
    for (file, error) in &scan.errors {
        eprintln!("scan: {file}: {error}");
    }
    say!(
        "scanned {} files ({} bytes); skipped {} binary and {} larger than --max-file-size; {} unreadable",
        scan.scanned,
        scan.bytes,
        scan.skipped_binary,
        scan.skipped_large,
        scan.errors.len()
    );
    say!(
        "found {} PANs in {} files and {} tokens",
        scan.pans(),
        scan.files.values().filter(|f| f.pans > 0).count(),
        scan.tokens()
    );
}

/// Runs `scan`.
pub async fn run(args: ScanArgs) -> CliResult {
    let confirm_tokens = args.vault.dev.is_some() || args.vault.cert.is_some();
    if confirm_tokens {
        args.vault.validate()?;
    }
    let (args, scan) = tokio::task::spawn_blocking(move || {
        let scan = scan_all(&args);
        (args, scan)
    })
    .await
    .context("the scan thread stopped")?;
    let mut scan = scan?;
    if confirm_tokens {
        confirm(&mut scan, &args.vault).await?;
    }
    if args.json {
        say!("{}", report_json(&scan));
    } else if args.sarif {
        say!("{}", report_sarif(&scan));
    } else {
        print_text(&scan);
    }
    if scan.pans() > 0 {
        Err(CliError::Answer(format!(
            "{} card numbers found in clear text",
            scan.pans()
        )))
    } else if !scan.errors.is_empty() {
        Err(CliError::Unreadable(format!(
            "{} paths could not be scanned completely",
            scan.errors.len()
        )))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn sarif_uris_are_encoded() {
        assert_eq!(
            sarif_uri("./dumps/old orders.csv"),
            "dumps/old%20orders.csv"
        );
    }
}
