//! `cardvault evidence (--config FILE | --dev DIR) --out DIR`: a signed
//! bundle for a PCI DSS v4.0.1 assessor, built from the vault's own
//! configuration, key store, audit trail and files — facts, not promises —
//! as `evidence.json` and a readable `evidence.md`, signed in
//! `signature.json` ([`crate::evidence`]) with the vault's evidence key.
//! `cardvault evidence verify DIR --pubkey KEY` detects any edit: exit 0
//! intact and signed by the pinned key, 1 changed or signed by another
//! key, 2 unreadable, 3 unchanged but no key pinned.
//!
//! A stopped vault is read in-process. A running one (it holds its data
//! directory) is read through its admin API as an admin (`--target`, and
//! the dev directory's admin certificate or `--cacert/--cert/--key`; exit
//! 75 without them), and its API listener's TLS is probed live. Either
//! way the trail is read and verified first, as a snapshot; the run's own
//! events (opening the store, listing the keys) come after it and are not
//! in the bundle, whose `created` time follows its last event. The bundle
//! holds no PAN and no key material: the data and audit directories are
//! scanned for card numbers and only the counts go in.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::dev::dev_config;
use super::error::{CliError, CliResult};
use super::offline::{VaultLocation, offline_provider};
use crate::config::Config;
use crate::evidence::{self, EvidenceError, Signer};

/// Arguments of `evidence`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvidenceArgs {
    /// `verify`: check a bundle instead of making one.
    #[command(subcommand)]
    command: Option<EvidenceCommand>,
    /// The vault (stopped).
    #[command(flatten)]
    location: VaultLocation,
    /// Directory to write the bundle into (created; must be empty).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// A RustSec advisory database for the 6.3.3 answer (default: the
    /// config's `[supply_chain] advisory_db`).
    #[arg(long, value_name = "DIR")]
    advisory_db: Option<PathBuf>,
    /// A running vault, read through the admin API with its TLS probed
    /// live.
    #[command(flatten)]
    running: super::running::RunningVault,
}

/// What a bundle is made of, read from a stopped or a running vault.
struct Gathered {
    snapshot: evidence::Snapshot,
    inventory: Vec<serde_json::Value>,
    inventory_source: String,
    kek: String,
    tls_probe: Option<serde_json::Value>,
}

/// Subcommands of `evidence`.
#[derive(Debug, Subcommand)]
enum EvidenceCommand {
    /// Verify a bundle: the signature and every file. Exit 0 intact and
    /// signed by the pinned key, 1 changed (naming what) or signed by
    /// another key, 2 unreadable, 3 unchanged but no key pinned.
    Verify {
        /// The bundle directory.
        dir: PathBuf,
        /// The signer's public key to pin: 64 hex digits or a PEM file
        /// (`evidence.pub`), as the vault printed when it made it.
        #[arg(long, visible_alias = "public-key", value_name = "KEY|FILE", conflicts_with_all = ["config", "dev"])]
        pubkey: Option<String>,
        /// Pin the key of the vault of this config file.
        #[arg(long, conflicts_with = "dev")]
        config: Option<PathBuf>,
        /// Pin the key of this `serve --dev` directory's vault.
        #[arg(long)]
        dev: Option<PathBuf>,
    },
}

/// Runs `evidence` or `evidence verify`.
pub async fn run(args: EvidenceArgs) -> CliResult {
    match args.command {
        Some(EvidenceCommand::Verify {
            dir,
            pubkey,
            config,
            dev,
        }) => verify(&dir, pubkey, config, dev),
        None => {
            let out = args
                .out
                .clone()
                .ok_or_else(|| CliError::Usage("evidence needs --out DIR".into()))?;
            collect(&args, &out).await
        }
    }
}

/// The config of the vault at `location` (a dev directory's own file).
fn config_of(location: &VaultLocation) -> Result<Config, CliError> {
    let path = location
        .config
        .clone()
        .or_else(|| dev_config(&location.data_dir))
        .ok_or_else(|| {
            CliError::Usage(format!(
                "no vault config: give --config FILE, or --dev DIR of a `serve --dev` directory ({} has no cardvault.toml)",
                location.data_dir.display()
            ))
        })?;
    let mut config = Config::load(&path)?;
    // What `serve --dev` runs: its hosted card fields too.
    if location.config.is_none() {
        super::dev::add_dev_collect(&mut config, None);
        super::dev::add_dev_checkpoints(&mut config, &location.data_dir);
    }
    Ok(config)
}

/// The signer of the vault whose config this is: its evidence key,
/// unwrapped by `provider` (its KEK).
fn signer_of(
    config: &Config,
    provider: &dyn crate::crypto::KeyProvider,
) -> Result<Signer, CliError> {
    use crate::audit::key;
    let evidence = key::read(&config.audit.dir, key::EVIDENCE, provider)
        .context("reading the evidence key")?
        .ok_or_else(|| {
            CliError::Unreadable(format!(
                "no {} in {}: the vault has not run since evidence keys exist; start it once",
                key::EVIDENCE.file,
                config.audit.dir.display()
            ))
        })?;
    Signer::from_seed(&evidence.key).map_err(|e| CliError::Failed(e.into()))
}

/// The evidence public key (hex) of the vault whose config this is,
/// through its KEK.
fn vault_public_key(config: &Config) -> Result<String, CliError> {
    let provider = offline_provider(&config.kek()?)?;
    Ok(signer_of(config, provider.as_ref())?.public_key())
}

fn verify(
    dir: &Path,
    pubkey: Option<String>,
    config: Option<PathBuf>,
    dev: Option<PathBuf>,
) -> CliResult {
    let pinned = match (pubkey, config, dev) {
        (Some(key), ..) => Some(
            crate::crypto::PublicKey::parse_or_read(&key)
                .map_err(|e| CliError::Usage(format!("--pubkey: {e}")))?
                .hex(),
        ),
        (None, Some(config), _) => Some(vault_public_key(&Config::load(&config)?)?),
        (None, None, Some(dir)) => Some(vault_public_key(&config_of(&VaultLocation {
            config: None,
            data_dir: dir,
        })?)?),
        (None, None, None) => None,
    };
    match evidence::verify_dir(dir, pinned.as_deref()) {
        Ok(manifest) if pinned.is_some() => {
            say!(
                "evidence bundle intact: {} files signed {} by key {} (the expected key)",
                manifest.files.len(),
                manifest.created,
                manifest.key_id,
            );
            Ok(())
        }
        // Anyone can sign a bundle with a key of their own: without a pin
        // the files match their signature, and nothing says whose it is.
        Ok(manifest) => Err(CliError::Unpinned(format!(
            "the {} files match their signature, made {} by key {} — but no key was pinned, so nothing shows who signed: give --pubkey (evidence.pub, or the key the vault printed), --config or --dev",
            manifest.files.len(),
            manifest.created,
            manifest.key_id,
        ))),
        Err(EvidenceError::Io(why)) => Err(CliError::Unreadable(why)),
        Err(e) => Err(CliError::Answer(e.to_string())),
    }
}

/// Makes a bundle of the stopped vault at `args.location` into `out`.
async fn collect(args: &EvidenceArgs, out: &Path) -> CliResult {
    if out.exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(CliError::Usage(format!(
            "--out {} exists and is not empty",
            out.display()
        )));
    }
    let config = config_of(&args.location)?;
    super::offline::refuse_postgres(&config)?;
    let provider = offline_provider(&config.kek()?)?;
    let gathered =
        match crate::dirlock::DirLock::acquire(&config.storage.data_dir, "data directory") {
            // Stopped: the trail first, before this run writes to it.
            Ok(lock) => {
                let snapshot = evidence::snapshot(&config, provider.clone(), false)
                    .map_err(CliError::Failed)?;
                drop(lock);
                from_stopped(args, &config, snapshot).await?
            }
            Err(held @ crate::dirlock::LockError::Held { .. }) => {
                from_running(args, &config, provider.clone(), held).await?
            }
            Err(e) => return Err(CliError::Locked(e)),
        };
    // A vault that never made an evidence key has one now.
    let signer = signer_of(&config, provider.as_ref())?;
    // Never before the last event the bundle reports.
    let created = crate::clock::rfc3339(crate::clock::now_ms());
    let parse = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    };
    let created = match gathered.snapshot.last_event_time() {
        Some(last) if parse(last) > parse(&created) => last.to_owned(),
        _ => created,
    };
    let inputs = evidence::Inputs {
        snapshot: gathered.snapshot,
        config,
        inventory: gathered.inventory,
        inventory_source: gathered.inventory_source,
        kek: gathered.kek,
        tls_probe: gathered.tls_probe,
        dev_pki: args
            .location
            .config
            .is_none()
            .then(|| args.location.data_dir.join("pki")),
        development: args.location.config.is_none(),
        advisory_db: args.advisory_db.clone(),
        build: super::version::facts(),
    };
    let bundle = evidence::collect(&inputs, &created).map_err(CliError::Failed)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json_text = serde_json::to_string_pretty(&bundle).context("encoding the bundle")?;
    std::fs::write(out.join("evidence.json"), json_text + "\n").context("writing evidence.json")?;
    std::fs::write(out.join("evidence.md"), evidence::render_markdown(&bundle))
        .context("writing evidence.md")?;
    let manifest = signer
        .sign_dir(out, &created)
        .map_err(|e| CliError::Failed(e.into()))?;
    say!(
        "evidence bundle written to {} ({} files), signed by key {} (public key {}, fingerprint {})",
        out.display(),
        manifest.files.len() + 1,
        manifest.key_id,
        manifest.public_key,
        signer.fingerprint()
    );
    Ok(())
}

/// The stopped vault's keys, read in-process (after the snapshot).
async fn from_stopped(
    args: &EvidenceArgs,
    config: &Config,
    snapshot: evidence::Snapshot,
) -> Result<Gathered, CliError> {
    let offline = args.location.open()?;
    let inventory = offline
        .vault
        .inventory(true, 4096)
        .await
        .context("reading the key inventory")?
        .into_iter()
        .map(|k| {
            serde_json::to_value(crate::runtime::inventory::InventoryEntry::of(
                k,
                &config.keys,
            ))
            .unwrap_or_default()
        })
        .collect();
    let kek = offline.vault.describe_kek();
    offline.close().await?;
    Ok(Gathered {
        snapshot,
        inventory,
        inventory_source: "measured: the key store, opened in-process (the vault was stopped)"
            .into(),
        kek,
        tls_probe: None,
    })
}

/// The running vault: its trail copied and verified first, then its keys
/// through the admin API and its TLS probed, as an admin (exit 75 when no
/// admin identity is at hand: the bundle is not made under a running
/// vault without one).
async fn from_running(
    args: &EvidenceArgs,
    config: &Config,
    provider: std::sync::Arc<dyn crate::crypto::KeyProvider>,
    held: crate::dirlock::LockError,
) -> Result<Gathered, CliError> {
    let Some((mut conn, (ca, cert, key), addr)) = args.running.connect(&args.location).await?
    else {
        return Err(CliError::Locked(held));
    };
    let snapshot = evidence::snapshot(config, provider.clone(), true).map_err(CliError::Failed)?;
    let reply = conn
        .get("/v1/admin/keys?records=true")
        .await
        .context("GET /v1/admin/keys")?;
    if reply.status != hyper::StatusCode::OK {
        return Err(CliError::Answer(format!(
            "the vault refused the key inventory ({}): the identity must be an admin with scope = \"global\"",
            reply.status
        )));
    }
    let inventory = reply.json()["keys"].as_array().cloned().unwrap_or_default();
    drop(conn);
    let probe_identity = evidence::ProbeIdentity::from_files(&ca, &cert, &key)?;
    let tls_probe = evidence::probe_tls(addr, &probe_identity, &config.api.cert).await;
    Ok(Gathered {
        snapshot,
        inventory,
        inventory_source: format!(
            "measured: GET /v1/admin/keys?records=true of the running vault at {addr}"
        ),
        kek: provider.describe(),
        tls_probe: Some(tls_probe),
    })
}
