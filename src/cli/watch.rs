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

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

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
    /// Approve a baseline as an admin (global scope): the vault records
    /// the file's SHA-256 with your justification (`page_baseline_approved`),
    /// which the evidence bundle pairs with the baseline the watcher uses.
    Approve {
        #[command(flatten)]
        endpoint: super::client::Endpoint,
        /// The baseline file (every script justified).
        #[arg(long, value_name = "FILE")]
        baseline: PathBuf,
        /// The page's name in `watch.toml`.
        #[arg(long)]
        page: String,
        /// Why this page may run these scripts (1-200 characters).
        #[arg(long)]
        justification: String,
        /// Where to keep the vault's signed approval (default: the
        /// baseline's path with `.approval.json` added, where `watch run`
        /// looks for it).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
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
    /// No browser: fetch the page and its scripts over plain HTTP(S) and
    /// read the markup. Blind to scripts inserted at run time (how
    /// skimmers arrive), and says so; not for `watch run`.
    #[arg(long, conflicts_with = "webdriver")]
    http_only: bool,
    /// Trust anchors for https pages with `--http-only`.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/ssl/certs/ca-certificates.crt"
    )]
    trust: PathBuf,
    /// Use this running chromedriver (`http://127.0.0.1:PORT`, run as a
    /// user of its own) instead of starting one (`watch run`: overrides
    /// `[watch] webdriver`).
    #[arg(long, value_name = "URL")]
    webdriver: Option<String>,
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
            webdriver: self.webdriver.clone(),
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

/// One check: the inventory, or exit 2 naming why not. An http-only
/// check first says (on stderr) what it cannot see.
async fn check(url: &str, browser: &BrowserArgs) -> Result<watch::Inventory, CliError> {
    let settings = browser.settings();
    let found = if browser.http_only {
        eprintln!("{}", watch::BLIND_SPOTS);
        watch::check_page_http_only(url, &settings.budget, &browser.trust).await
    } else {
        watch::check_page(url, &settings).await
    };
    found.map_err(|e| match e {
        WatchError::Browser(_) | WatchError::Page(_) => CliError::Unreadable(e.to_string()),
    })
}

/// Writes `signed` into the approvals file `path` (created 0644): it
/// replaces any approval of another version of the baseline and any by the
/// same evidence key; the watcher sends them all and each vault node
/// accepts the one its own key signed.
fn keep_approval(path: &std::path::Path, signed: crate::peer::report::SignedApproval) -> CliResult {
    let mut kept: Vec<_> = watch::read_approvals(path)
        .into_iter()
        .filter(|a| a.baseline_sha256 == signed.baseline_sha256 && a.key != signed.key)
        .take(crate::peer::report::MAX_APPROVALS - 1)
        .collect();
    kept.push(signed);
    let text = serde_json::to_string_pretty(&kept).unwrap_or_default();
    std::fs::write(path, text + "\n")
        .map_err(|e| CliError::Unreadable(format!("{}: {e}", path.display())))?;
    say!(
        "signed approval kept in {} (the watcher sends it with each report)",
        path.display()
    );
    Ok(())
}

/// Runs a `watch` subcommand.
pub async fn run(command: WatchCommand) -> CliResult {
    match command {
        WatchCommand::Approve {
            endpoint,
            baseline,
            page,
            justification,
            out,
        } => {
            // Only a baseline `check` would accept is approved, by the
            // digest of the very bytes read.
            let approved =
                watch::read_baseline(&baseline).map_err(|e| CliError::Unreadable(e.to_string()))?;
            let body = serde_json::json!({
                "page": page,
                "baseline_sha256": approved.sha256,
                "justification": justification,
            });
            let mut conn = endpoint.connect_as("admin").await?;
            let reply = conn
                .post_json("/v1/admin/watch/approvals", &body)
                .await
                .map_err(|e| {
                    CliError::Unreadable(format!("POST /v1/admin/watch/approvals: {e}"))
                })?;
            if !super::client::print(&reply) {
                return Err(CliError::Answer("the vault refused the approval".into()));
            }
            let signed: crate::peer::report::SignedApproval =
                serde_json::from_value(reply.json()["approval"].clone()).map_err(|_| {
                    CliError::Answer("the vault's answer carries no signed approval".into())
                })?;
            keep_approval(
                &out.unwrap_or_else(|| watch::approval_path(&baseline)),
                signed,
            )
        }
        WatchCommand::Run {
            config,
            once,
            browser,
        } => {
            if browser.http_only {
                return Err(CliError::Usage(
                    "watch run needs a browser (PCI DSS 11.6.1 is about what the consumer's browser receives); --http-only is for watch check and watch baseline".into(),
                ));
            }
            let config = watch::read_run_config(&config).map_err(CliError::Usage)?;
            let mut settings = browser.settings();
            settings.webdriver = settings
                .webdriver
                .or_else(|| config.webdriver().map(str::to_owned));
            watch::browser_kept_from_key(&config, &settings)
                .await
                .map_err(CliError::Usage)?;
            let (checked, changed, failed) = watch::run_pages(&config, once, &settings).await;
            say!(
                "{checked} page(s) checked: {changed} changed, {failed} not checked or not reported"
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
            let differences = if browser.http_only {
                watch::compare_static(&approved, &found)
            } else {
                watch::compare(&approved, &found)
            };
            if json {
                say!(
                    "{}",
                    serde_json::json!({
                        "page": found.url,
                        "matches": differences.is_empty(),
                        "http_only": browser.http_only,
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
