//! `cardvault scan PATH...`: finds card numbers (and cardvault tokens) in
//! files and directories and reports where they are — file, line, byte
//! offset, brand and a masked value, never the number — as text, one JSON
//! object (`--json`) or SARIF 2.1.0 (`--sarif`, for code-scanning UIs).
//! With `--dev DIR` or `--ca/--cert/--key`, token-shaped values are
//! confirmed against a running vault (metadata reads; role `read`).
//! Exit 0 when no PAN was found, 1 when one was, 2 when a file could not
//! be read (and no PAN was found): usable as a CI gate.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::error::{CliError, CliResult};
use crate::load::TargetArgs;
use crate::scan::Kind;
use crate::scan::report::{Scan, report_json, report_sarif, scan_all};
use crate::scan::walk::WalkOptions;

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
    let options = WalkOptions {
        max_file_size: args.max_file_size,
        include_binary: args.include_binary,
        exclude: args.exclude.clone(),
    };
    let paths = args.paths.clone();
    let scan = tokio::task::spawn_blocking(move || scan_all(&paths, &options))
        .await
        .context("the scan thread stopped")?;
    let mut scan = scan.map_err(CliError::Usage)?;
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
}
