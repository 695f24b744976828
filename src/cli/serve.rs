//! `cardvault serve`: with `--config FILE`, or `--dev` which creates (once)
//! and reuses a self-contained development setup — PKI, KEK, config and
//! database under one directory — and prints curl commands that work as
//! printed.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;

use super::dev::{self, DEV_DIR, DevKek};
use super::error::CliResult;
use crate::config::{Config, KekSource};

/// systemd Type=notify: while the vault starts, asks every 10 s for 30 s
/// more (`EXTEND_TIMEOUT_USEC`), so a long start — a large store's first
/// open after a format upgrade, a slow HSM, a database that answers late —
/// is not killed at `TimeoutStartSec`; at most an hour, after which
/// systemd's own timeout applies (and `CardvaultStartingTooLong` has
/// fired). A no-op without `NOTIFY_SOCKET`.
async fn extend_start_timeout() {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);
    for _ in 0..360 {
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::ExtendTimeoutUsec(30_000_000),
            sd_notify::NotifyState::Status("starting"),
        ]);
        tokio::time::sleep(EVERY).await;
    }
}

/// Descriptors kept beyond the connection caps for RocksDB's files, the
/// audit segments and everything else the process opens.
const OPEN_FILES_RESERVE: u64 = 512;

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (TOML). Overrides: CARDVAULT_<SECTION>__<FIELD>.
    #[arg(long, conflicts_with = "dev", required_unless_present = "dev")]
    config: Option<PathBuf>,
    /// Development mode: create and reuse DIR/{pki, kek.key, cardvault.toml,
    /// db, audit} (default ./cardvault-dev), as every subcommand's `--dev DIR`.
    #[arg(
        long,
        value_name = "DIR",
        num_args = 0..=1,
        default_missing_value = DEV_DIR
    )]
    dev: Option<PathBuf>,
    /// The dev directory, the older spelling (`--dev --data-dir DIR`).
    #[arg(long, requires = "dev")]
    data_dir: Option<PathBuf>,
    /// With `--dev`, where a new dev directory keeps its KEK: `file`
    /// (`DIR/kek.key`, the default), `pkcs11` (a SoftHSM2 token in the
    /// directory) or `shamir` (three custodian shares, any two unseal; the
    /// vault starts sealed and prints the unseal commands).
    #[arg(long, value_enum, requires = "dev")]
    kek: Option<DevKek>,
    /// Override `api.listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Override `ops.listen`.
    #[arg(long)]
    ops_listen: Option<SocketAddr>,
    /// Override `collect.listen`, the hosted card fields' public listener
    /// (`--dev` enables it on 127.0.0.1:8444 with the dev certificate, or
    /// on a free port when `--listen` asks for port 0).
    #[arg(long)]
    collect_listen: Option<SocketAddr>,
}

/// Runs the server until SIGTERM or SIGINT, then drains and closes.
pub async fn run(args: ServeArgs) -> CliResult {
    // clap requires exactly one of --config and --dev.
    let (config_path, dev_dir) = match (&args.config, args.data_dir.or(args.dev)) {
        (Some(path), _) => (path.clone(), None),
        (None, dir) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(DEV_DIR));
            let dir = std::path::absolute(&dir).unwrap_or(dir);
            (dev::prepare_dev(&dir, args.kek)?, Some(dir))
        }
    };
    let mut config = Config::load(&config_path)?;
    super::log::set_format(config.log.format);
    if let Some(listen) = args.listen {
        config.api.listen = listen;
    }
    if let Some(listen) = args.ops_listen {
        config.ops.listen = listen;
    }
    // The dev setup takes cards in a browser too (`--listen ADDR:0`, as
    // tests and benches use, moves the public listener to a free port).
    if let Some(dir) = &dev_dir {
        dev::add_dev_collect(&mut config, args.listen);
        dev::add_dev_checkpoints(&mut config, dir);
    }
    if let Some(listen) = args.collect_listen {
        match &mut config.collect {
            Some(collect) => collect.listen = listen,
            None => {
                return Err(super::error::CliError::Usage(
                    "--collect-listen needs a [collect] section in the config (or --dev)".into(),
                ));
            }
        }
    }
    let hardening = crate::hardening::harden_process(dev_dir.is_some());
    crate::server::record_memory_lock(hardening.memory == crate::hardening::MemoryLock::Locked);
    // Descriptors for both listeners' caps, plus a reserve for the
    // database's files, the audit trail and the PKI.
    crate::hardening::raise_open_files_limit(
        (config.limits.max_connections.get()
            + config.ops.max_connections.get()
            + config
                .collect
                .as_ref()
                .map_or(0, |c| c.limits.max_connections.get())) as u64
            + OPEN_FILES_RESERVE,
    );
    let mut signals = StopSignals::install();
    let extend = tokio::spawn(extend_start_timeout());
    let service = crate::server::Service::launch(&config).await;
    extend.abort();
    let service = service?;
    say!(
        "cardvault is serving: API https://{} (mTLS), ops http://{}",
        service.api_addr,
        service.ops_addr
    );
    if let Some((addr, url)) = &service.collect {
        say!("hosted card fields: {url} (public listener on {addr})");
    }
    if let Some(dir) = dev_dir {
        say!("\n{}", dev_banner(&dir, &config));
        if service.is_sealed() {
            say!("{}", unseal_commands(&dir, service.api_addr));
        }
        say!("{}", curl_commands(&dir, service.api_addr));
    }
    // systemd Type=notify: ready now (a no-op without NOTIFY_SOCKET).
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot notify systemd that the vault is ready");
    }
    // SIGHUP (or, with `[api] tls_check_s`, changed TLS files) reloads
    // certificates, CRLs and principals; SIGTERM/SIGINT stop.
    let mut tls_files = super::tls_watch::TlsFiles::new(&config.api);
    // The API settings in force: the last config a reload took.
    let mut api = config.api.clone();
    loop {
        let signal = tokio::select! {
            signal = signals.wait() => signal,
            () = tls_files.changed() => {
                tracing::info!("the API's TLS files changed: reloading");
                Signal::Reload
            }
        };
        if signal == Signal::Stop {
            break;
        }
        if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading, now]);
        }
        match Config::load(&config_path) {
            Ok(new) => {
                if service.reload(Ok(&new)) {
                    api = new.api;
                }
            }
            Err(e) => {
                service.reload(Err(&e));
            }
        };
        tls_files.reloaded(&api);
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    service.begin_drain();
    if !config.ops.drain_delay.is_zero() {
        tracing::info!(
            delay_ms = config.ops.drain_delay.as_millis() as u64,
            "shutting down: /readyz answers 503 while load balancers stop sending"
        );
        tokio::time::sleep(config.ops.drain_delay).await;
    }
    tracing::info!("shutting down: draining requests");
    service.stop().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Watches SIGTERM, SIGINT and SIGHUP from before the vault reports that
/// it is serving, so a supervisor that stops it right after that line is
/// never met by the default action (an abrupt exit without draining).
struct StopSignals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// SIGTERM or SIGINT.
    Stop,
    /// SIGHUP.
    Reload,
}

impl StopSignals {
    fn install() -> StopSignals {
        use tokio::signal::unix::{SignalKind, signal};
        let watch = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, signal = name, "cannot watch signal");
                None
            }
        };
        StopSignals {
            term: watch(SignalKind::terminate(), "SIGTERM"),
            int: watch(SignalKind::interrupt(), "SIGINT"),
            hup: watch(SignalKind::hangup(), "SIGHUP"),
        }
    }

    async fn wait(&mut self) -> Signal {
        tokio::select! {
            _ = next(self.term.as_mut()) => Signal::Stop,
            _ = next(self.int.as_mut()) => Signal::Stop,
            _ = next(self.hup.as_mut()) => Signal::Reload,
        }
    }
}

/// The next delivery of `signal`; never, for a signal that is not watched.
async fn next(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// What `serve --dev` says about itself: not for production, where its
/// data, trail and KEK live, and who may do what.
fn dev_banner(dir: &Path, config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "==> DEV MODE — not for production (cardvault {})",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(out, "    data:   {}", config.storage.data_dir.display());
    let _ = writeln!(out, "    audit:  {}", config.audit.dir.display());
    let _ = match config.kek() {
        Ok(KekSource::File(path)) => writeln!(
            out,
            "    KEK:    {} (a key file beside the data: dev only)",
            path.display()
        ),
        Ok(KekSource::Pkcs11 {
            token_label,
            key_label,
            ..
        }) => writeln!(
            out,
            "    KEK:    key {key_label:?} in SoftHSM2 token {token_label:?} ({})",
            dev::softhsm_conf(dir).display()
        ),
        Ok(KekSource::Shamir(_)) => writeln!(
            out,
            "    KEK:    split among custodian-1..3 (any two unseal; shares in {})",
            dir.join("custodians").display()
        ),
        Err(e) => writeln!(out, "    KEK:    {e}"),
    };
    // Written when the trail opened (a sealed vault writes it at unseal).
    if let Some(public) = &config.audit.public_key_file
        && let Ok(key) = crate::crypto::PublicKey::parse_or_read(&public.display().to_string())
    {
        let _ = writeln!(
            out,
            "    evidence key: {} (fingerprint {}; pin it to verify checkpoints and bundles)",
            public.display(),
            key.fingerprint()
        );
    }
    if let Some(checkpoints) = &config.audit.checkpoint_dir {
        let _ = writeln!(out, "    checkpoints:  {}", checkpoints.display());
    }
    let _ = writeln!(out, "    PKI:    {}", dir.join("pki").display());
    let _ = writeln!(out, "    principals (client certificate → tenant: roles):");
    for (name, p) in &config.principals {
        let roles: Vec<&str> = p.roles.iter().map(|r| r.as_str()).collect();
        let _ = writeln!(out, "      {name} → {}: {}", p.tenant, roles.join(", "));
    }
    out
}

/// Copy-paste curl commands for a dev setup in `dir` listening on `api`.
fn curl_commands(dir: &Path, api: SocketAddr) -> String {
    let pki = dir.join("pki");
    let host = if api.ip().is_loopback() || api.ip().is_unspecified() {
        "localhost".to_string()
    } else {
        api.ip().to_string()
    };
    let base = format!("https://{host}:{}", api.port());
    let client = |name: &str| {
        format!(
            "curl -sS --cacert {ca} --cert {cert} --key {key} -H 'content-type: application/json'",
            ca = pki.join("ca.pem").display(),
            cert = pki.join(format!("{name}.pem")).display(),
            key = pki.join(format!("{name}-key.pem")).display(),
        )
    };
    let mut out = String::new();
    let _ = writeln!(out, "# tokenize (as cart):");
    let _ = writeln!(
        out,
        "{} -d '{{\"pan\":\"4111111111111111\"}}' {base}/v1/tokenize",
        client("cart")
    );
    let _ = writeln!(out, "# tokenize, then detokenize the token (as payments):");
    let _ = writeln!(
        out,
        "TOKEN=$({} -d '{{\"pan\":\"4111111111111111\"}}' {base}/v1/tokenize | sed -E 's/.*\"token\":\"([0-9]+)\".*/\\1/') && {} -d \"{{\\\"token\\\":\\\"$TOKEN\\\"}}\" {base}/v1/detokenize",
        client("payments"),
        client("payments"),
    );
    out
}

/// The exact commands that unseal the dev vault in `dir` listening on `api`.
fn unseal_commands(dir: &Path, api: std::net::SocketAddr) -> String {
    let mut out = String::from("# the vault is SEALED; any two custodians unseal it:\n");
    for name in &dev::DEV_CUSTODIANS[..dev::DEV_THRESHOLD as usize] {
        let _ = writeln!(
            out,
            "cardvault unseal --dev {} --target https://{api} --share {}",
            dir.display(),
            dir.join("custodians")
                .join(format!("{name}.share"))
                .display()
        );
    }
    out
}
