//! A scan's results and its reports: every finding with its file, line
//! and offset (never the digits: BIN, last 4 and a masked value), counts per
//! file, unreadable paths; the walk that gathers them; and the two
//! machine-readable forms, one JSON object and a SARIF 2.1.0 log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::Kind;
use super::source::Located;
use super::walk::{self, FileOutcome, Skip, WalkOptions};

/// One finding as reported.
pub struct Reported {
    /// The file it is in.
    pub file: String,
    /// Where in it, and what (never the digits).
    pub at: Located,
    /// For tokens: the token's digits (not secret), to confirm.
    pub token: Option<String>,
    /// Whether the vault knows the token (`None`: not asked).
    pub confirmed: Option<bool>,
}

/// Counts per file with something to say.
#[derive(Default)]
pub struct FileSummary {
    /// Bytes scanned.
    pub bytes: u64,
    /// Card numbers found.
    pub pans: u64,
    /// Token-shaped values found.
    pub tokens: u64,
    /// Whether the size limit cut the scan short.
    pub truncated: bool,
}

/// What a scan found and what it could not read.
#[derive(Default)]
pub struct Scan {
    /// Every finding, in walk order.
    pub findings: Vec<Reported>,
    /// Files with findings (or cut short), by name.
    pub files: BTreeMap<String, FileSummary>,
    /// Paths that could not be scanned completely, with why.
    pub errors: Vec<(String, String)>,
    /// Files scanned.
    pub scanned: u64,
    /// Bytes scanned.
    pub bytes: u64,
    /// Binary files skipped.
    pub skipped_binary: u64,
    /// Files over the size limit skipped.
    pub skipped_large: u64,
}

impl Scan {
    /// PANs found.
    pub fn pans(&self) -> u64 {
        self.files.values().map(|f| f.pans).sum()
    }

    /// Tokens found.
    pub fn tokens(&self) -> u64 {
        self.files.values().map(|f| f.tokens).sum()
    }
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Walks `paths` and scans every file (blocking), with a spinner on a
/// terminal. A bad `--exclude` pattern is the one error.
pub fn scan_all(paths: &[PathBuf], options: &WalkOptions) -> Result<Scan, String> {
    let excludes = walk::exclude_set(&options.exclude)?;
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
        paths,
        &excludes,
        |path| {
            let name = display(path);
            let mut summary = FileSummary::default();
            let mut found = Vec::new();
            let outcome = walk::scan_file(path, options, |at| {
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
                                options.max_file_size
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
pub fn report_json(scan: &Scan) -> Value {
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
pub fn report_sarif(scan: &Scan) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sarif_uris_are_encoded() {
        assert_eq!(
            sarif_uri("./dumps/old orders.csv"),
            "dumps/old%20orders.csv"
        );
    }
}
