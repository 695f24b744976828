//! `cardvault migrate`: moves a stopped vault's data between RocksDB and
//! PostgreSQL exactly as it is stored ([`crate::store::transfer`]):
//! resumable after a kill (`--resume`), a progress bar with rate and ETA,
//! then a count check per table and a sample of tokens detokenized through
//! the target (its PAN looked up again gives the same token back). The
//! sample needs the KEK; the copy does not.
//!
//! Database URLs hold passwords: they are taken from the environment
//! (`CARDVAULT_FROM_URL`, `CARDVAULT_TO_URL`) as readily as from the
//! command line, and never printed.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;

use super::error::CliError;
use super::offline::offline_provider;
use crate::config::{Config, KekSource};
use crate::dirlock::DirLock;
use crate::domain::{TenantId, Token};
use crate::store::codec::TokenEntry;
use crate::store::postgres::{PgSettings, PgStore};
use crate::store::rocksdb::{RocksStore, StoreOptions};
use crate::store::transfer::{self, Row, Table, Transfer};
use crate::store::{Store, StoreError};
use crate::vault::{Vault, VaultError, VaultOptions};

/// `cardvault migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Copy from this RocksDB database (`[storage] data_dir`, or a
    /// `serve --dev` directory). The vault must be stopped.
    #[arg(long, value_name = "DIR")]
    from_data_dir: Option<PathBuf>,
    /// Copy from this PostgreSQL database (libpq URL). Every node must be
    /// stopped. Prefer the environment: a command line is visible to
    /// every local user.
    #[arg(
        long,
        value_name = "URL",
        env = "CARDVAULT_FROM_URL",
        hide_env_values = true
    )]
    from_url: Option<String>,
    /// Copy into this PostgreSQL database (libpq URL; the environment is
    /// the safer place for it).
    #[arg(
        long,
        value_name = "URL",
        env = "CARDVAULT_TO_URL",
        hide_env_values = true
    )]
    to_url: Option<String>,
    /// Copy into this RocksDB directory (created if missing).
    #[arg(long, value_name = "DIR")]
    to_data_dir: Option<PathBuf>,
    /// The vault's config file: its KEK opens the copied keys for the
    /// sample check; its `storage.ca_file` verifies the database.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The KEK file for the sample check (instead of --config).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    kek_file: Option<PathBuf>,
    /// CA bundle for TLS to PostgreSQL (default: the config's
    /// `storage.ca_file`).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Go on with an interrupted copy (a non-empty target is refused
    /// without it).
    #[arg(long)]
    resume: bool,
    /// Tokens detokenized through the target at the end (0: none, and no
    /// KEK needed).
    #[arg(long, default_value_t = 200, value_name = "N")]
    sample: usize,
    /// Rows per commit.
    #[arg(long, default_value_t = 2000, value_name = "ROWS")]
    page: usize,
}

/// Both faces of an open store.
trait Backend: Store + Transfer {}
impl<T: Store + Transfer> Backend for T {}

/// One side of the copy, open (a RocksDB directory stays locked).
struct Side {
    store: Box<dyn Backend>,
    _lock: Option<DirLock>,
}

/// A token picked for the check at the end.
struct Picked {
    tenant: TenantId,
    token: Token,
    fingerprinted: bool,
}

/// What the copy needs to know before it starts.
struct Plan {
    kek: Option<KekSource>,
    ca_file: Option<PathBuf>,
}

/// Runs `cardvault migrate`.
pub async fn run(args: MigrateArgs) -> Result<(), CliError> {
    let plan = plan(&args)?;
    let (source, target) = match (
        &args.from_data_dir,
        &args.from_url,
        &args.to_url,
        &args.to_data_dir,
    ) {
        (Some(dir), None, Some(url), None) => (
            open_rocks(&rocks_dir(dir), false)?,
            open_pg(url, &plan)
                .await
                .context("opening the target (--to-url)")?,
        ),
        (None, Some(url), None, Some(dir)) => {
            let source = open_pg(url, &plan)
                .await
                .context("opening the source (--from-url)")?;
            (source, open_rocks(dir, true)?)
        }
        _ => {
            return Err(CliError::Usage(
                "give one direction: --from-data-dir DIR --to-url URL, or --from-url URL --to-data-dir DIR (CARDVAULT_FROM_URL / CARDVAULT_TO_URL count as --from-url / --to-url)".into(),
            ));
        }
    };
    let before = transfer::tally(source.store.as_ref(), target.store.as_ref())
        .await
        .context("counting rows")?;
    let held: u64 = before.iter().map(|t| t.target).sum();
    if held > 0 && !args.resume {
        return Err(CliError::Usage(format!(
            "the target already holds {held} rows ({}); give --resume to go on with an interrupted copy into it",
            target.store.describe()
        )));
    }
    say!(
        "copying {} -> {}",
        source.store.describe(),
        target.store.describe()
    );
    let total: u64 = before.iter().map(|t| t.source).sum();
    let tokens = before
        .iter()
        .find(|t| t.table == Table::Tokens)
        .map_or(0, |t| t.source);
    let stride = (tokens / args.sample.max(1) as u64).max(1);
    let mut progress = Progress::new(total, held.min(total));
    let mut picked = Vec::new();
    let mut seen = 0u64;
    transfer::copy(
        source.store.as_ref(),
        target.store.as_ref(),
        args.page,
        |table, rows| {
            progress.advance(table, rows.len() as u64);
            for row in rows.iter().filter(|r| matches!(r, Row::Token { .. })) {
                // Only a picked row's entry is decoded.
                if seen.is_multiple_of(stride) && picked.len() < args.sample {
                    picked.extend(pick(row));
                }
                seen += 1;
            }
        },
    )
    .await
    .context("copying")?;
    progress.finish();
    if picked.len() < args.sample && held > 0 {
        // A resumed copy saw only the rows after its cursor: the rest of
        // the sample comes from the target's first tokens.
        let need = args.sample - picked.len();
        if let Some(page) = target
            .store
            .export(Table::Tokens, None, need)
            .await
            .context("reading the target's tokens")?
        {
            picked.extend(page.rows.iter().filter_map(pick));
        }
    }
    let after = transfer::tally(source.store.as_ref(), target.store.as_ref())
        .await
        .context("counting rows")?;
    let mut differ = Vec::new();
    for t in &after {
        say!(
            "{:<13} source {:>12}  target {:>12}  {}",
            t.table.name(),
            t.source,
            t.target,
            if t.source == t.target { "ok" } else { "DIFFER" }
        );
        if t.source != t.target {
            differ.push(t.table.name());
        }
    }
    close_source(source).await?;
    if !differ.is_empty() {
        return Err(CliError::Answer(format!(
            "the counts differ in {} (was the source written during the copy, or did the target hold other rows?)",
            differ.join(", ")
        )));
    }
    check_sample(target, &plan, picked).await
}

/// A token row as a candidate for the sample.
fn pick(row: &Row) -> Option<Picked> {
    match row {
        Row::Token {
            tenant,
            token,
            entry,
        } => Some(Picked {
            tenant: tenant.clone(),
            token: *token,
            fingerprinted: TokenEntry::decode(entry, token).is_ok_and(|e| e.fingerprint.is_some()),
        }),
        _ => None,
    }
}

/// Closes the source as it was found: opening took its clean-shutdown
/// marker, and closing puts one back — only right if one was there.
async fn close_source(source: Side) -> Result<(), CliError> {
    let Side { store, _lock } = source;
    if store.was_clean_shutdown() {
        let store: Box<dyn Store> = store;
        store
            .close(Vec::new())
            .await
            .context("closing the source")?;
    }
    Ok(())
}

/// The KEK and CA the flags and the config name.
fn plan(args: &MigrateArgs) -> Result<Plan, CliError> {
    let config = args.config.as_deref().map(Config::load).transpose()?;
    let dev_kek = args
        .from_data_dir
        .as_deref()
        .map(|dir| dir.join("kek.key"))
        .filter(|kek| kek.is_file());
    let kek = match (&config, &args.kek_file) {
        (Some(config), _) => Some(config.kek()?),
        (None, Some(file)) => Some(KekSource::File(file.clone())),
        (None, None) => dev_kek.map(KekSource::File),
    };
    if kek.is_none() && args.sample > 0 {
        return Err(CliError::Usage(
            "the sample check at the end needs the KEK: give --config FILE or --kek-file FILE (or a serve --dev directory as --from-data-dir), or --sample 0".into(),
        ));
    }
    let ca_file = args
        .ca_file
        .clone()
        .or_else(|| config.and_then(|c| c.storage.ca_file.clone()));
    Ok(Plan { kek, ca_file })
}

/// The database of a `serve --dev` directory (`DIR/db`), else `DIR`.
fn rocks_dir(dir: &Path) -> PathBuf {
    if dir.join("kek.key").is_file() && dir.join("db").is_dir() {
        dir.join("db")
    } else {
        dir.to_path_buf()
    }
}

fn open_rocks(dir: &Path, create: bool) -> Result<Side, CliError> {
    if create {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    } else if !dir.join("CURRENT").is_file() {
        return Err(CliError::Usage(format!(
            "no RocksDB database in {} (give the vault's [storage] data_dir, or a serve --dev directory)",
            dir.display()
        )));
    }
    let lock = DirLock::acquire(dir, "data directory").map_err(anyhow::Error::from)?;
    let store = RocksStore::open(dir, &StoreOptions::default()).map_err(anyhow::Error::from)?;
    Ok(Side {
        store: Box::new(store),
        _lock: Some(lock),
    })
}

async fn open_pg(url: &str, plan: &Plan) -> anyhow::Result<Side> {
    let settings = PgSettings {
        url: url.to_owned().into(),
        pool_size: 2,
        ca_file: plan.ca_file.clone(),
        password_file: None,
        commit_bound: std::time::Duration::from_secs(10),
        node_dir: None,
    };
    let store = PgStore::connect(&settings).await?;
    Ok(Side {
        store: Box::new(store),
        _lock: None,
    })
}

/// Progress: a bar with rate and ETA on a terminal, otherwise a line on
/// standard error at most once a second (logs, jobs).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    /// Rows in the target when this run started (a resumed copy's).
    held: u64,
    done: u64,
    started: Instant,
    printed: Instant,
}

impl Progress {
    fn new(total: u64, at: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} rows {msg} {per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_position(at);
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            total,
            held: at,
            done: at,
            started: now,
            printed: now,
        }
    }

    fn advance(&mut self, table: Table, rows: u64) {
        self.done += rows;
        if let Some(bar) = &self.bar {
            bar.inc(rows);
            bar.set_message(table.name());
            return;
        }
        if self.printed.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.printed = Instant::now();
        let copied = self.done - self.held;
        let rate = copied as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        let eta = self.total.saturating_sub(self.done) as f64 / rate.max(1.0);
        eprintln!(
            "migrate: {} {}/{} rows, {rate:.0} rows/s, ETA {eta:.0} s",
            table.name(),
            self.done,
            self.total
        );
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Opens the vault over the target and detokenizes the picked tokens;
/// each PAN of a deterministic tenant must look up to its token again.
/// Then closes it (its counters written, RocksDB's clean marker set).
async fn check_sample(target: Side, plan: &Plan, picked: Vec<Picked>) -> Result<(), CliError> {
    let Some(kek) = plan.kek.as_ref().filter(|_| !picked.is_empty()) else {
        say!("sample check: skipped");
        return Ok(());
    };
    let provider: Arc<dyn crate::crypto::KeyProvider> = offline_provider(kek)?;
    let Side { store, _lock } = target;
    let store: Box<dyn Store> = store;
    let vault = Vault::with_store(store, provider, VaultOptions::default())
        .await
        .context("opening the copied keys with the KEK")?;
    let mut failed = 0usize;
    for p in &picked {
        if let Err(e) = check_one(&vault, p).await {
            failed += 1;
            tracing::warn!(tenant = %p.tenant, error = %e, "a sampled token did not check out");
        }
    }
    vault.close().await.context("closing the target")?;
    say!(
        "sample check: {} of {} tokens detokenized through the target{}",
        picked.len() - failed,
        picked.len(),
        if failed == 0 {
            ", each PAN's lookup gave its token back"
        } else {
            ""
        }
    );
    if failed > 0 {
        return Err(CliError::Answer(format!(
            "{failed} sampled tokens did not check out through the target"
        )));
    }
    Ok(())
}

async fn check_one(vault: &Vault, picked: &Picked) -> Result<(), VaultError> {
    let revealed = vault.detokenize(&picked.tenant, &picked.token).await?;
    if picked.fingerprinted {
        let found = vault.lookup(&picked.tenant, &revealed.pan).await?;
        if found.token != picked.token {
            return Err(VaultError::Store(StoreError::Backend(
                "the PAN's lookup gave another token".into(),
            )));
        }
    }
    Ok(())
}
