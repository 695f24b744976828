//! `cardvault watch`: the payment page checked in a real browser (PCI DSS
//! 6.4.3 and 11.6.1). `watch baseline URL --out FILE` writes the page's
//! inventory as a baseline to justify and approve; `watch check [URL]
//! --baseline FILE [--json]` compares one fresh check with it: exit 0
//! when it matches, 1 naming every difference, 2 when the page (or the
//! baseline) cannot be checked; `watch run --config watch.toml` checks
//! each configured page at its interval and reports every result to the
//! vault over mTLS as the `watcher` role (`POST /v1/admin/watch/reports`).
//! A process of its own: it holds no key of the vault and reads none of
//! its files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Deserialize;

use super::error::{CliError, CliResult};
use crate::watch::{self, BrowserSettings, Budget, WatchError};

/// Subcommands of `watch`.
#[derive(Debug, Subcommand)]
pub enum WatchCommand {
    /// Check the page once and write its inventory as a baseline: every
    /// script then needs a `justification` (6.4.3) before `check` takes it.
    Baseline {
        /// The payment page (http or https).
        url: String,
        /// The baseline file to write (never overwritten).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The origin the vault's card frame comes from (the origin of its
        /// `frame_url`): `check` then also reports the frame missing.
        #[arg(long, value_name = "ORIGIN")]
        collect_origin: Option<String>,
        #[command(flatten)]
        browser: BrowserArgs,
    },
    /// Check every page of `watch.toml` at its interval and report each
    /// result to the vault (role `watcher`); `--once` checks each once and
    /// exits 0 all matched, 1 some changed, 2 some not checked or not
    /// reported.
    Run {
        /// The watcher's config (`[watch]` vault, ca, cert, key and
        /// `[[watch.page]]` name, baseline, url, interval_s).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Check each page once, then exit.
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        browser: BrowserArgs,
    },
    /// Check the page once against its baseline: exit 0 same, 1 every
    /// difference named, 2 the page or the baseline cannot be checked.
    Check {
        /// The page (default: the baseline's).
        url: Option<String>,
        /// The approved baseline.
        #[arg(long, value_name = "FILE")]
        baseline: PathBuf,
        /// Print one JSON object (differences and the inventory).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        browser: BrowserArgs,
    },
}

/// `watch.toml`: where the vault is, who the watcher is, which pages.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunFile {
    watch: RunConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunConfig {
    /// The vault's API, `https://HOST:PORT`.
    vault: String,
    /// The CA that signed the vault's certificate.
    ca: PathBuf,
    /// The watcher's client certificate (a principal with role `watcher`).
    cert: PathBuf,
    /// Its private key.
    key: PathBuf,
    /// The pages.
    #[serde(rename = "page")]
    pages: Vec<PageConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageConfig {
    /// Its name in reports, metrics and the trail (a-z, 0-9, `.`, `_`, `-`).
    name: String,
    /// Its approved baseline (read again before each check, so an approved
    /// change takes effect at the next one).
    baseline: PathBuf,
    /// The page (default: the baseline's).
    #[serde(default)]
    url: Option<String>,
    /// How often to check it, seconds (default an hour; at most a week).
    #[serde(default = "default_interval")]
    interval_s: u64,
}

fn default_interval() -> u64 {
    3600
}

/// Reads `watch.toml`: relative paths against its directory; intervals
/// between a minute and a week (PCI DSS 11.6.1: weekly at least).
fn read_run_config(path: &Path) -> Result<RunConfig, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    let file: RunFile =
        toml::from_str(&text).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    let mut config = file.watch;
    let base = path.parent().unwrap_or(Path::new("."));
    for p in [&mut config.ca, &mut config.cert, &mut config.key] {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for page in &mut config.pages {
        if page.baseline.is_relative() {
            page.baseline = base.join(&page.baseline);
        }
        if !(60..=crate::peer::report::MAX_INTERVAL_S).contains(&page.interval_s) {
            return Err(CliError::Usage(format!(
                "page {}: interval_s must be between 60 and 604800 (PCI DSS 11.6.1 asks for at least weekly)",
                page.name
            )));
        }
        if !names.insert(page.name.clone()) {
            return Err(CliError::Usage(format!(
                "page {} is named twice",
                page.name
            )));
        }
    }
    if config.pages.is_empty() {
        return Err(CliError::Usage("no [[watch.page]] to watch".into()));
    }
    Ok(config)
}

/// The browser and the bounds of one check.
#[derive(Debug, Args)]
pub struct BrowserArgs {
    /// The chromedriver binary.
    #[arg(long, default_value = "chromedriver", value_name = "PATH")]
    chromedriver: PathBuf,
    /// The Chromium binary (default: Debian's).
    #[arg(long, value_name = "PATH")]
    chromium: Option<PathBuf>,
    /// Longest the page may take to load, seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    load_timeout_s: u64,
    /// How long after load to wait for scripts inserted late, milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    settle_ms: u64,
    /// Largest the page and its resources may be together, MiB.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1024))]
    max_mib: u64,
}

impl BrowserArgs {
    fn settings(&self) -> BrowserSettings {
        BrowserSettings {
            chromedriver: self.chromedriver.clone(),
            chromium: self.chromium.clone(),
            budget: Budget {
                load: Duration::from_secs(self.load_timeout_s),
                settle: Duration::from_millis(self.settle_ms),
                max_bytes: self.max_mib << 20,
                ..Budget::default()
            },
        }
    }
}

/// A page URL the watcher will load: http or https only.
fn page_url(url: &str) -> Result<String, CliError> {
    match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {
            Ok(parsed.to_string())
        }
        _ => Err(CliError::Usage(
            "the page must be an http:// or https:// URL".into(),
        )),
    }
}

/// One check: the inventory, or exit 2 naming why not.
async fn check(url: &str, browser: &BrowserArgs) -> Result<watch::Inventory, CliError> {
    watch::check_page(url, &browser.settings())
        .await
        .map_err(|e| match e {
            WatchError::Browser(_) | WatchError::Page(_) => CliError::Unreadable(e.to_string()),
        })
}

/// Runs a `watch` subcommand.
pub async fn run(command: WatchCommand) -> CliResult {
    match command {
        WatchCommand::Run {
            config,
            once,
            browser,
        } => run_pages(&read_run_config(&config)?, once, &browser).await,
        WatchCommand::Baseline {
            url,
            out,
            collect_origin,
            browser,
        } => {
            let url = page_url(&url)?;
            if out.exists() {
                return Err(CliError::Usage(format!(
                    "{} exists: a baseline is never overwritten (approve changes by editing it)",
                    out.display()
                )));
            }
            let collect_origin = collect_origin
                .map(|o| page_url(&o).map(|u| crate::watch::origin_of(&u)))
                .transpose()?;
            let inventory = check(&url, &browser).await?;
            let created = crate::clock::rfc3339(crate::clock::now_ms());
            let text = watch::render_baseline(&inventory, collect_origin.as_deref(), &created);
            std::fs::write(&out, text)
                .map_err(|e| CliError::Unreadable(format!("{}: {e}", out.display())))?;
            say!(
                "baseline of {} written to {}: {} scripts, {} inline scripts, {} frames, {} forms, {} security headers; write a justification for every script before checking against it",
                inventory.url,
                out.display(),
                inventory.scripts.len(),
                inventory.inline_scripts.len(),
                inventory.frames.len(),
                inventory.forms.len(),
                inventory.headers.len()
            );
            Ok(())
        }
        WatchCommand::Check {
            url,
            baseline,
            json,
            browser,
        } => {
            let approved =
                watch::read_baseline(&baseline).map_err(|e| CliError::Unreadable(e.to_string()))?;
            let url = page_url(url.as_deref().unwrap_or(&approved.page))?;
            let found = check(&url, &browser).await?;
            let differences = watch::compare(&approved, &found);
            if json {
                say!(
                    "{}",
                    serde_json::json!({
                        "page": found.url,
                        "matches": differences.is_empty(),
                        "differences": differences,
                        "inventory": found,
                        "justifications": approved.justifications,
                    })
                );
            } else if differences.is_empty() {
                say!(
                    "page {} matches its baseline: {} scripts, {} inline scripts, {} frames, {} forms, {} security headers",
                    found.url,
                    found.scripts.len(),
                    found.inline_scripts.len(),
                    found.frames.len(),
                    found.forms.len(),
                    found.headers.len()
                );
            } else {
                say!("page {} differs from its baseline:", found.url);
                for d in &differences {
                    say!("  {}: {}", d.kind, d.detail);
                }
            }
            if differences.is_empty() {
                Ok(())
            } else {
                Err(CliError::Answer(format!(
                    "{} difference(s) from the approved page",
                    differences.len()
                )))
            }
        }
    }
}

/// What one page's check came to.
enum Verdict {
    Matched,
    Changed,
    NotChecked,
}

/// Checks `page` once and builds its report.
async fn check_one(page: &PageConfig, browser: &BrowserArgs) -> (serde_json::Value, Verdict) {
    let approved = match watch::read_baseline(&page.baseline) {
        Ok(b) => b,
        Err(e) => {
            let url = page.url.clone().unwrap_or_default();
            return (unchecked(page, &url, &e.to_string()), Verdict::NotChecked);
        }
    };
    let url = page.url.clone().unwrap_or_else(|| approved.page.clone());
    match check(&url, browser).await {
        Err(e) => (unchecked(page, &url, &e.to_string()), Verdict::NotChecked),
        Ok(found) => {
            let differences = watch::compare(&approved, &found);
            let outcome = if differences.is_empty() {
                Verdict::Matched
            } else {
                Verdict::Changed
            };
            let report = serde_json::json!({
                "page": page.name,
                "url": url,
                "interval_s": page.interval_s,
                "outcome": if differences.is_empty() { "matches" } else { "changed" },
                "differences": differences
                    .iter()
                    .take(crate::peer::report::MAX_DIFFERENCES)
                    .map(|d| serde_json::json!({"kind": d.kind, "subject": d.subject.chars().take(2048).collect::<String>()}))
                    .collect::<Vec<_>>(),
            });
            (report, outcome)
        }
    }
}

fn unchecked(page: &PageConfig, url: &str, why: &str) -> serde_json::Value {
    let reason: String = why.chars().filter(|c| !c.is_control()).take(480).collect();
    serde_json::json!({
        "page": page.name,
        "url": if url.is_empty() { "https://unknown.invalid/" } else { url },
        "interval_s": page.interval_s,
        "outcome": "unchecked",
        "reason": reason,
    })
}

/// Sends `report` to the vault as the watcher.
async fn send(config: &RunConfig, report: &serde_json::Value) -> anyhow::Result<()> {
    let tls =
        crate::client::ClientTls::from_files(&config.ca, Some((&config.cert, &config.key)), false)
            .context("loading the watcher's certificate")?;
    let hostport = config
        .vault
        .strip_prefix("https://")
        .map(|rest| rest.trim_end_matches('/'))
        .context("[watch] vault must look like https://HOST:PORT")?;
    let addr = tokio::net::lookup_host(hostport)
        .await
        .with_context(|| format!("resolving {hostport}"))?
        .next()
        .with_context(|| format!("{hostport} resolves to no address"))?;
    let mut conn = tls.connect(addr).await.context("connecting to the vault")?;
    let reply = conn
        .post_json("/v1/admin/watch/reports", report)
        .await
        .context("POST /v1/admin/watch/reports")?;
    anyhow::ensure!(
        reply.status == hyper::StatusCode::OK,
        "the vault refused the report: {} {}",
        reply.status,
        reply.json()["error"]["code"]
    );
    Ok(())
}

/// Checks each page at its interval (or once) and reports every result.
async fn run_pages(config: &RunConfig, once: bool, browser: &BrowserArgs) -> CliResult {
    let start = tokio::time::Instant::now();
    let mut due: Vec<tokio::time::Instant> = vec![start; config.pages.len()];
    let (mut changed, mut failed) = (0usize, 0usize);
    let mut done = vec![false; config.pages.len()];
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    // The page due soonest (with --once, among those not yet checked).
    let next = |due: &[tokio::time::Instant], done: &[bool]| {
        due.iter()
            .enumerate()
            .filter(|(i, _)| !(once && done[*i]))
            .min_by_key(|(_, at)| **at)
            .map(|(i, at)| (i, *at))
    };
    while let Some((i, at)) = next(&due, &done) {
        tokio::select! {
            () = tokio::time::sleep_until(at) => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
        let page = &config.pages[i];
        let (report, result) = check_one(page, browser).await;
        match result {
            Verdict::Matched => tracing::info!(page = %page.name, "page matches its baseline"),
            Verdict::Changed => {
                changed += 1;
                tracing::warn!(page = %page.name, "page differs from its baseline");
            }
            Verdict::NotChecked => {
                failed += 1;
                tracing::warn!(page = %page.name, "page could not be checked");
            }
        }
        if let Err(e) = send(config, &report).await {
            failed += 1;
            tracing::error!(page = %page.name, error = %e, "report not delivered to the vault");
        }
        done[i] = true;
        due[i] = tokio::time::Instant::now() + Duration::from_secs(page.interval_s);
    }
    say!(
        "{} page(s) checked: {} changed, {} not checked or not reported",
        done.iter().filter(|d| **d).count(),
        changed,
        failed
    );
    match (failed, changed) {
        (0, 0) => Ok(()),
        (0, _) => Err(CliError::Answer(format!(
            "{changed} page(s) differ from their baselines"
        ))),
        _ => Err(CliError::Unreadable(format!(
            "{failed} page check(s) not done or not reported"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_reads_and_bad_intervals_are_refused() {
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config/watch.example.toml");
        let config = read_run_config(&example).unwrap();
        assert_eq!(config.pages.len(), 1);
        assert_eq!(config.pages[0].interval_s, 3600);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watch.toml");
        let text = std::fs::read_to_string(&example).unwrap();
        std::fs::write(
            &path,
            text.replace("interval_s = 3600", "interval_s = 1209600"),
        )
        .unwrap();
        let err = read_run_config(&path).unwrap_err().to_string();
        assert!(err.contains("at least weekly"), "{err}");
    }
}
