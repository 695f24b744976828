//! `cardvault watch run`: each page of `watch.toml` checked at its interval
//! (a minute to a week: PCI DSS 11.6.1 asks for weekly at least) against
//! its baseline — read again before every check, so an approved change
//! takes effect at the next one — and every result reported to the vault
//! over mTLS as the `watcher` role (`POST /v1/admin/watch/reports`).
//! Until SIGTERM or SIGINT, or once per page with `--once`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;

use super::browser::{BrowserSettings, check_page};

/// `watch.toml`: where the vault is, who the watcher is, which pages.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunFile {
    watch: RunConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The vault's API, `https://HOST:PORT`.
    vault: String,
    /// The CA that signed the vault's certificate.
    ca: PathBuf,
    /// The watcher's client certificate (a principal with role `watcher`).
    cert: PathBuf,
    /// Its private key.
    key: PathBuf,
    /// The chromedriver to check with (`http://127.0.0.1:PORT`), run as a
    /// user of its own so that the browser cannot read `key`
    /// (deploy/systemd/cardvault-watch-browser.service). Required.
    #[serde(default)]
    webdriver: Option<String>,
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
    /// The admins' signed approvals of the baseline (default: the
    /// baseline's path with `.approval.json` added, as `watch approve`
    /// writes it).
    #[serde(default)]
    approval: Option<PathBuf>,
}

/// Where `watch approve` keeps the signed approvals of `baseline`.
pub fn approval_path(baseline: &Path) -> PathBuf {
    let mut name = baseline.as_os_str().to_owned();
    name.push(".approval.json");
    PathBuf::from(name)
}

/// The signed approvals in `path` (none when it is missing or unreadable:
/// the vault then reports the baseline unapproved).
pub fn read_approvals(path: &Path) -> Vec<crate::peer::report::SignedApproval> {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Vec<_>>(&bytes).ok())
        .unwrap_or_default()
}

fn default_interval() -> u64 {
    3600
}

/// Reads `watch.toml`: relative paths against its directory; intervals
/// between a minute and a week (PCI DSS 11.6.1: weekly at least). The
/// error says what is wrong.
pub fn read_run_config(path: &Path) -> Result<RunConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: RunFile = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
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
        page.approval = Some(match page.approval.take() {
            Some(p) if p.is_relative() => base.join(p),
            Some(p) => p,
            None => approval_path(&page.baseline),
        });
        if !(60..=crate::peer::report::MAX_INTERVAL_S).contains(&page.interval_s) {
            return Err(format!(
                "page {}: interval_s must be between 60 and 604800 (PCI DSS 11.6.1 asks for at least weekly)",
                page.name
            ));
        }
        if !names.insert(page.name.clone()) {
            return Err(format!("page {} is named twice", page.name));
        }
    }
    if config.pages.is_empty() {
        return Err("no [[watch.page]] to watch".into());
    }
    Ok(config)
}

impl RunConfig {
    /// The configured chromedriver.
    pub fn webdriver(&self) -> Option<&str> {
        self.webdriver.as_deref()
    }
}

/// Refuses to run unless the browser is kept from the watcher's key: a
/// chromedriver of its own is configured, and a browser it starts cannot
/// read the key file. The error says what to do.
pub async fn browser_kept_from_key(
    config: &RunConfig,
    browser: &BrowserSettings,
) -> Result<(), String> {
    if browser.webdriver.is_none() {
        return Err(format!(
            "[watch] webdriver is not set: a browser started by the watcher would run as its user and could read its key {}; run chromedriver as a user of its own (deploy/systemd/cardvault-watch-browser.service) and name it",
            config.key.display()
        ));
    }
    match super::browser::browser_reads(&config.key, browser).await {
        Ok(false) => {
            tracing::info!(key = %config.key.display(), "the browser cannot read the watcher's key");
            Ok(())
        }
        Ok(true) => Err(format!(
            "the browser behind {} can read the watcher's key {}: run chromedriver as a user of its own, one that cannot read that file",
            browser.webdriver.as_deref().unwrap_or(""),
            config.key.display()
        )),
        Err(e) => Err(format!(
            "cannot check that the browser is kept from the key: {e}"
        )),
    }
}

/// What one page's check came to.
enum Verdict {
    Matched,
    Changed,
    NotChecked,
}

/// The baseline as reported: its file's SHA-256 and every approved
/// script with its justification.
fn reported_baseline(approved: &super::baseline::Baseline) -> serde_json::Value {
    let why = |key: &str| {
        approved
            .justifications
            .get(key)
            .cloned()
            .unwrap_or_default()
    };
    let inventory = &approved.inventory;
    let scripts: Vec<serde_json::Value> = inventory
        .scripts
        .iter()
        .map(|s| serde_json::json!({"script": s.url, "sha384": s.sha384, "justification": why(&s.url)}))
        .chain(inventory.inline_scripts.iter().map(|s| {
            serde_json::json!({"script": "inline", "sha384": s.sha384, "justification": why(&s.sha384)})
        }))
        .take(crate::peer::report::MAX_DIFFERENCES)
        .collect();
    serde_json::json!({"sha256": approved.sha256, "scripts": scripts})
}

/// Checks `page` once and builds its report — with the baseline when its
/// digest is not the one `sent` last (returned, to be remembered once the
/// report is delivered).
async fn check_one(
    page: &PageConfig,
    browser: &BrowserSettings,
    sent: Option<&str>,
) -> (serde_json::Value, Verdict, Option<String>) {
    let approved = match super::baseline::read(&page.baseline) {
        Ok(b) => b,
        Err(e) => {
            let url = page.url.clone().unwrap_or_default();
            return (
                unchecked(page, &url, &e.to_string()),
                Verdict::NotChecked,
                None,
            );
        }
    };
    let url = page.url.clone().unwrap_or_else(|| approved.page.clone());
    match check_page(&url, browser).await {
        Err(e) => (
            unchecked(page, &url, &e.to_string()),
            Verdict::NotChecked,
            None,
        ),
        Ok(found) => {
            let differences = super::diff::compare(&approved, &found);
            let outcome = if differences.is_empty() {
                Verdict::Matched
            } else {
                Verdict::Changed
            };
            let mut report = serde_json::json!({
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
            let digest = &approved.sha256;
            report["baseline_sha256"] = digest.as_str().into();
            let approvals: Vec<_> = page
                .approval
                .as_deref()
                .map(read_approvals)
                .unwrap_or_default()
                .into_iter()
                .filter(|a| &a.baseline_sha256 == digest)
                .take(crate::peer::report::MAX_APPROVALS)
                .collect();
            report["approvals"] = serde_json::json!(approvals);
            let new = (Some(digest.as_str()) != sent).then(|| digest.clone());
            if new.is_some() {
                report["baseline"] = reported_baseline(&approved);
            }
            (report, outcome, new)
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

/// Sends `report` to the vault as the watcher; the vault's answer.
async fn send(config: &RunConfig, report: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let tls =
        crate::client::ClientTls::from_files(&config.ca, Some((&config.cert, &config.key)), false)
            .context("loading the watcher's certificate")?;
    let addr = crate::client::resolve_https(&config.vault)
        .await
        .with_context(|| format!("[watch] vault {}", config.vault))?;
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
    Ok(reply.json())
}

/// Resolves at SIGTERM (never, when it could not be listened for).
async fn terminated(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Checks each page at its interval (or each once) and reports every
/// result; returns (pages checked, changed, not checked or not reported).
pub async fn run_pages(
    config: &RunConfig,
    once: bool,
    browser: &BrowserSettings,
) -> (usize, usize, usize) {
    let start = tokio::time::Instant::now();
    let mut due: Vec<tokio::time::Instant> = vec![start; config.pages.len()];
    let (mut changed, mut failed) = (0usize, 0usize);
    let mut done = vec![false; config.pages.len()];
    // Each page's baseline digest as last reported (sent again on change).
    let mut sent: Vec<Option<String>> = vec![None; config.pages.len()];
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
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
            () = terminated(terminate.as_mut()) => break,
        }
        let page = &config.pages[i];
        let (report, result, new_baseline) = check_one(page, browser, sent[i].as_deref()).await;
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
        match send(config, &report).await {
            Ok(answer) => {
                if new_baseline.is_some() {
                    sent[i] = new_baseline;
                }
                if answer["baseline_approved"] == false {
                    tracing::warn!(page = %page.name, "no admin's approval of this baseline reached the vault (cardvault watch approve); the vault alerts on it");
                }
            }
            Err(e) => {
                failed += 1;
                tracing::error!(page = %page.name, error = %e, "report not delivered to the vault");
            }
        }
        done[i] = true;
        due[i] = tokio::time::Instant::now() + Duration::from_secs(page.interval_s);
    }
    (done.iter().filter(|d| **d).count(), changed, failed)
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
        let err = read_run_config(&path).unwrap_err();
        assert!(err.contains("at least weekly"), "{err}");
    }
}
