//! The `cardvault` command line: a thin layer of subcommands over the library.
//! Usage errors exit with status 64 (`EX_USAGE`); runtime failures with 1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::audit::{AuditLog, AuditSettings};
use crate::crypto::KeyFileProvider;
use crate::domain::{Pan, TenantId};
use crate::vault::{Vault, VaultOptions};

/// `println!` that never panics: a reader that went away (`| head`) must
/// not turn into an "internal error" report.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `print!` counterpart of [`say!`].
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

mod serve;

/// Exit status for command-line usage errors (sysexits.h `EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;

/// Card-data tokenization vault.
#[derive(Debug, Parser)]
#[command(name = "cardvault", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the vault: the mTLS API and the ops listener.
    Serve(serve::ServeArgs),
    /// Drive a running vault over mTLS and report latency (or `load verify`).
    Load(Box<crate::load::LoadArgs>),
    /// Development / test PKI.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Key management.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Tokenize and detokenize the public test cards on a local vault
    /// (embedded RocksDB, a dev KEK created on first run).
    Demo {
        /// Directory for the dev KEK and the database.
        #[arg(long, default_value = "./cardvault-dev")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Create a CA, a server certificate (localhost, 127.0.0.1, ::1) and
    /// client certificates for cart, payments and admin in DIR.
    Init {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a client certificate NAME.pem / NAME-key.pem (principal = NAME)
    /// signed by the CA in DIR.
    Issue {
        /// Client (principal) name.
        name: String,
        /// Directory holding ca.pem and ca-key.pem.
        #[arg(long, default_value = "./cardvault-dev/pki")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the HMAC chain of a trail (a segment file or the audit
    /// directory). Exits 0 if intact, 1 naming the first bad sequence
    /// number otherwise. Needs the KEK, not the running vault.
    Verify {
        /// A segment (`audit-NNNNNNNN.jsonl`) or the audit directory.
        path: PathBuf,
        /// Take the KEK path from this config file (`storage.key_file`).
        #[arg(long, conflicts_with_all = ["dev", "key_file"])]
        config: Option<PathBuf>,
        /// Take the KEK from a `serve --dev` directory (`DIR/kek.key`).
        #[arg(long, conflicts_with = "key_file")]
        dev: Option<PathBuf>,
        /// The KEK file.
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Accept a trail whose earlier segments were archived: its first
        /// entry is trusted instead of chained from seq 1.
        #[arg(long)]
        anchored: bool,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a new KEK file: 32 random bytes, mode 0600. Never overwrites.
    Init {
        /// Path of the new key file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Rotate a tenant's data key: a new version seals from now on, older
    /// versions still open existing records.
    Rotate {
        /// Directory holding `kek.key` and `db/` (as made by `demo`).
        #[arg(long, default_value = "./cardvault-dev")]
        data_dir: PathBuf,
        /// Tenant whose data key to rotate.
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Show each tenant's active data-key version and its encryption count.
    Status {
        /// Directory holding `kek.key` and `db/`.
        #[arg(long, default_value = "./cardvault-dev")]
        data_dir: PathBuf,
    },
}

/// Runs the command line; returns the process exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return if usage {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging();
    crate::hardening::install_panic_hook();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<crate::config::ConfigError>().is_some()
                || e.downcast_ref::<crate::load::UsageError>().is_some()
            {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Load(args) => load(*args).await,
        Command::Pki { command } => match command {
            PkiCommand::Init { out } => {
                crate::pki::init(&out)?;
                say!("created dev PKI in {}", out.display());
                Ok(())
            }
            PkiCommand::Issue { name, dir } => {
                crate::pki::issue(&dir, &name)?;
                say!("issued {}/{name}.pem and {name}-key.pem", dir.display());
                Ok(())
            }
        },
        Command::Keys { command } => match command {
            KeysCommand::Init { out } => {
                KeyFileProvider::create(&out)?;
                say!("created KEK {} (mode 0600)", out.display());
                Ok(())
            }
            KeysCommand::Rotate { data_dir, tenant } => {
                let tenant = TenantId::parse(&tenant).context("--tenant")?;
                let (vault, audit) = open_dev_vault(&data_dir)?;
                let version = vault.rotate_keys(&tenant).await;
                vault.close().await?;
                audit.close().await?;
                say!(
                    "tenant {tenant}: data key version {} is now active",
                    version?
                );
                Ok(())
            }
            KeysCommand::Status { data_dir } => {
                let (vault, audit) = open_dev_vault(&data_dir)?;
                for (tenant, version, sealed) in vault.key_status() {
                    say!("tenant {tenant}: active data key v{version}, {sealed} encryptions");
                }
                vault.close().await?;
                audit.close().await?;
                Ok(())
            }
        },
        Command::Audit { command } => match command {
            AuditCommand::Verify {
                path,
                config,
                dev,
                key_file,
                anchored,
                json,
            } => audit_verify(&path, config, dev, key_file, anchored, json),
        },
        Command::Demo { data_dir } => demo(&data_dir).await,
    }
}

/// Why `audit verify` found the trail broken (exit status 1, not 64).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TrailBroken(crate::audit::VerifyFailure);

fn audit_verify(
    path: &Path,
    config: Option<PathBuf>,
    dev: Option<PathBuf>,
    key_file: Option<PathBuf>,
    anchored: bool,
    json: bool,
) -> Result<()> {
    let kek = match (key_file, config, dev) {
        (Some(file), _, _) => file,
        (None, Some(config), _) => crate::config::Config::load(&config)?.storage.key_file,
        (None, None, Some(dir)) => dir.join("kek.key"),
        (None, None, None) => {
            return Err(crate::load::UsageError(
                "audit verify needs the KEK: --config FILE, --dev DIR or --key-file FILE".into(),
            )
            .into());
        }
    };
    let provider = KeyFileProvider::open(&kek)?;
    match crate::audit::verify(path, &provider, anchored)? {
        Ok(report) => {
            if json {
                say!("{}", serde_json::json!({"intact": true, "report": report}));
            } else {
                say!(
                    "audit trail intact: {} entries (seq {}..{}) in {} file(s); last event {}{}",
                    report.entries,
                    report.first_seq,
                    report.last_seq,
                    report.files,
                    report.last_event.as_deref().unwrap_or("-"),
                    if report.anchored {
                        "; first entry trusted as anchor (--anchored)"
                    } else {
                        ""
                    }
                );
                if report.last_event.as_deref() != Some("audit_stop") {
                    say!(
                        "note: the trail does not end with audit_stop: the vault is running, or stopped without closing it (crash). \
                         Entries cut from the very end leave no trace in the chain; compare with the syslog mirror."
                    );
                }
            }
            Ok(())
        }
        Err(failure) => {
            if json {
                say!(
                    "{}",
                    serde_json::json!({"intact": false, "failure": failure})
                );
            }
            Err(TrailBroken(failure).into())
        }
    }
}

async fn load(args: crate::load::LoadArgs) -> Result<()> {
    if let Some(crate::load::LoadCommand::Verify {
        target,
        ack_log,
        json,
    }) = &args.command
    {
        let report = crate::load::verify(target, ack_log).await?;
        if *json {
            say!("{}", serde_json::to_string(&report)?);
        } else {
            say!(
                "ack log {}: {} entries, {} verified, {} lost, {} mismatched, {} unreadable",
                ack_log.display(),
                report.entries,
                report.verified,
                report.lost,
                report.mismatched,
                report.errors
            );
        }
        anyhow::ensure!(
            report.lost == 0 && report.mismatched == 0 && report.errors == 0,
            "acknowledged tokens were lost or changed"
        );
        return Ok(());
    }
    if let Some(crate::load::LoadCommand::Ceiling {
        dir,
        groups,
        duration,
    }) = &args.command
    {
        for (i, group) in groups.iter().enumerate() {
            let scratch = dir.join(format!("ceiling-{i}-{group}"));
            std::fs::create_dir_all(&scratch)?;
            let (scratch2, group, duration) = (scratch.clone(), *group, *duration);
            let ceiling = tokio::task::spawn_blocking(move || {
                crate::store::ceiling::measure(&scratch2, group, duration)
            })
            .await??;
            std::fs::remove_dir_all(&scratch)?;
            say!("{}", serde_json::to_string(&ceiling)?);
        }
        return Ok(());
    }
    let json = args.json;
    let report = crate::load::run(args).await?;
    if json {
        say!("{}", serde_json::to_string(&report)?);
    } else {
        say_raw!("{report}");
    }
    anyhow::ensure!(report.ops > 0, "no request succeeded");
    Ok(())
}

/// Opens the vault in `DIR/db` with the KEK `DIR/kek.key` and the audit
/// trail `DIR/audit` (the `serve --dev` layout), creating them on first use.
/// Key operations made through it are audited like the server's.
fn open_dev_vault(data_dir: &Path) -> Result<(Vault, AuditLog)> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let kek_path = data_dir.join("kek.key");
    if !kek_path.exists() {
        KeyFileProvider::create(&kek_path)?;
        tracing::info!(path = %kek_path.display(), "created development KEK");
    }
    let provider = Arc::new(KeyFileProvider::open(&kek_path)?);
    let audit = AuditLog::open(
        AuditSettings::new(data_dir.join("audit")),
        provider.as_ref(),
    )?;
    let options = VaultOptions {
        audit: Some(audit.clone()),
        ..VaultOptions::default()
    };
    let vault = Vault::open(&data_dir.join("db"), provider, options)?;
    Ok((vault, audit))
}

/// Public test card numbers (they pass Luhn; none is a real account).
const DEMO_CARDS: [&str; 8] = [
    "4111111111111111",
    "5555555555554444",
    "2223000048400011",
    "378282246310005",
    "6011111111111117",
    "3530111333300000",
    "30569309025904",
    "6200000000000005",
];

async fn demo(data_dir: &Path) -> Result<()> {
    let (vault, audit) = open_dev_vault(data_dir)?;
    let tenant = TenantId::parse("default")?;
    say!("cardvault demo — data in {}", data_dir.display());
    say!(
        "{:<11} {:<20} {:<20} {:<7} detokenized",
        "brand",
        "card (masked)",
        "token",
        "bin"
    );
    let mut all_ok = true;
    for card in DEMO_CARDS {
        let pan = Pan::parse(card)?;
        let info = vault.tokenize(&tenant, &pan, None).await?;
        let again = vault.tokenize(&tenant, &pan, None).await?;
        let revealed = vault.detokenize(&tenant, &info.token).await?;
        let ok = revealed.pan == pan && again.token == info.token;
        all_ok &= ok;
        say!(
            "{:<11} {:<20} {:<20} {:<7} {}",
            info.brand.as_str(),
            pan.to_string(),
            info.token.as_str(),
            info.bin
                .map(|b| b.to_string())
                .unwrap_or_else(|| "-".into()),
            if ok { "matches" } else { "MISMATCH" }
        );
    }
    for (tenant, version, sealed) in vault.key_status() {
        say!("tenant {tenant}: data key v{version}, {sealed} encryptions");
    }
    vault.close().await?;
    audit.close().await?;
    anyhow::ensure!(all_ok, "a card did not round-trip");
    say!("every card tokenized, re-tokenized to the same token, and detokenized to itself");
    Ok(())
}
