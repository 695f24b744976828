//! The `cardvault` command line: a thin layer of subcommands over the
//! library, one file per subcommand. Every subcommand returns a
//! [`CliError`], which decides the exit status: 64 (`EX_USAGE`) for usage
//! and config errors, 1 for everything else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

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

mod audit;
mod backup;
mod client;
mod collect;
mod copy_secrets;
mod custody;
mod demo;
mod dev;
mod error;
mod evidence;
mod keys;
mod keys_online;
mod load;
mod log;
mod migrate;
mod offline;
mod pki;
mod portable;
mod running;
mod scan;
mod serve;
mod tls_watch;
mod tokenize_file;
mod version;
mod watch;

pub use error::{CliError, EXIT_USAGE};

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
        command: pki::PkiCommand,
    },
    /// Key management.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Tokenize and detokenize the public test cards on a local vault
    /// (embedded RocksDB, a dev KEK created on first run).
    Demo {
        /// Directory for the dev KEK and the database (`--dev DIR`, as for
        /// every subcommand; `--data-dir DIR` too).
        #[arg(long = "dev", visible_alias = "data-dir", value_name = "DIR", default_value = dev::DEV_DIR)]
        data_dir: PathBuf,
        /// Run against the vault of this config file instead (its KEK must
        /// exist; the test cards land in tenant `default`).
        #[arg(long, conflicts_with = "data_dir")]
        config: Option<PathBuf>,
    },
    /// Client: tokenize PANs read from standard input (mTLS; CARDVAULT_ADDR,
    /// CARDVAULT_CACERT, CARDVAULT_CERT, CARDVAULT_KEY, or --dev DIR).
    #[command(flatten)]
    Client(client::ClientCommand),
    /// Custody: hand in a KEK share (`unseal`), or seal the vault.
    #[command(flatten)]
    Custody(custody::CustodyCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `cardvault man > cardvault.1`.
    Man,
    /// What this build is; with `--check --db DIR`, whether any of its
    /// crates has a known advisory: yes (exit 0) or no (exit 1).
    Version(version::VersionArgs),
    /// Find card numbers (and cardvault tokens) in files, directories and
    /// `.gz` dumps: exit 0 clean, 1 PANs found, 2 a path could not be read.
    Scan(scan::ScanArgs),
    /// Back up a stopped vault: its store (a RocksDB checkpoint), its audit
    /// trail and wrapped keys, with a manifest of checksums (never a
    /// production KEK).
    Backup(backup::BackupArgs),
    /// Restore a backup into new or empty directories, then open the vault
    /// with its KEK and verify the whole trail.
    Restore(backup::RestoreArgs),
    /// A signed PCI DSS evidence bundle from the (stopped) vault's config,
    /// keys, audit trail and files; `evidence verify DIR` checks one.
    Evidence(evidence::EvidenceArgs),
    /// Replace the card numbers of a CSV column, a JSON Lines field or a
    /// text file with tokens from a running vault (resumable).
    TokenizeFile(tokenize_file::TokenizeFileArgs),
    /// Import tokens made by another vault, keeping them (NDJSON of
    /// token, PAN, expiry; age-encrypted with --identity). Role admin.
    Import(portable::ImportArgs),
    /// Export a tenant's tokens and PANs, encrypted to an age recipient by
    /// the vault, once a second admin approves. Role admin.
    Export(portable::ExportArgs),
    /// Approve another admin's pending request (a tenant shred or export;
    /// sealing or a KEK rotation under `[keys.dual_control]`).
    Approve(portable::ApproveArgs),
    /// Hosted card fields: `collect snippet` prints the checkout page's
    /// script tag with its integrity hash.
    Collect {
        #[command(subcommand)]
        command: collect::CollectCommand,
    },
    /// Watch the payment page (PCI DSS 6.4.3, 11.6.1): `watch baseline`
    /// takes its inventory in headless Chromium, `watch check` compares a
    /// fresh one with the approved baseline (exit 0 same, 1 changed, 2
    /// cannot check).
    Watch {
        #[command(subcommand)]
        command: watch::WatchCommand,
    },
    /// Copy a mounted secret's files into a directory as files the vault
    /// owns (mode 0600); with --every, again whenever they change (a
    /// Kubernetes init container or sidecar).
    CopySecrets(copy_secrets::CopySecretsArgs),
    /// Copy a stopped vault's data between RocksDB and PostgreSQL as it is
    /// stored (resumable with --resume), then check counts and a sample.
    Migrate(Box<migrate::MigrateArgs>),
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
    let args: Vec<String> = std::env::args().collect();
    if let Some(conf) = dev::softhsm_env_from_args(&args) {
        set_softhsm_env(&conf);
    }
    log::init();
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
            ExitCode::from(e.exit_status())
        }
    }
}

/// Points SoftHSM2 at a dev directory's token store.
#[allow(unsafe_code)]
fn set_softhsm_env(conf: &std::path::Path) {
    // SAFETY: called from `main` right after argument parsing, before the
    // logger, the async runtime or any other thread exists; no thread can
    // read or write the environment concurrently with this write.
    unsafe { std::env::set_var("SOFTHSM2_CONF", conf) };
}

async fn run(cli: Cli) -> error::CliResult {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Load(args) => load::run(*args).await,
        Command::Pki { command } => pki::run(command),
        Command::Keys { command } => keys::run(command).await,
        Command::Audit { command } => audit::run(command),
        Command::Scan(args) => scan::run(args).await,
        Command::Evidence(args) => evidence::run(args).await,
        Command::Backup(args) => backup::run_backup(args).await,
        Command::CopySecrets(args) => copy_secrets::run(args).await,
        Command::Restore(args) => backup::run_restore(args).await,
        Command::TokenizeFile(args) => tokenize_file::run(args).await,
        Command::Import(args) => portable::import(args).await,
        Command::Export(args) => portable::export(args).await,
        Command::Approve(args) => portable::approve(args).await,
        Command::Collect { command } => collect::run(command),
        Command::Migrate(args) => migrate::run(*args).await,
        Command::Watch { command } => watch::run(command).await,
        Command::Demo { data_dir, config } => demo::run(&data_dir, config.as_deref()).await,
        Command::Client(command) => client::run(command).await,
        Command::Custody(command) => custody::run(command).await,
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "cardvault", &mut out);
            say_raw!("{}", String::from_utf8_lossy(&out));
            Ok(())
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .map_err(|e| CliError::Failed(e.into()))?;
            say_raw!("{}", String::from_utf8_lossy(&out));
            Ok(())
        }
        Command::Version(args) => version::run(args),
    }
}
