//! Binding the listeners and starting them: the API listener over the
//! route table with the observing middleware, the ops listener, and — with
//! `[collect]` — the hosted fields' public listener on its own
//! lower-priority runtime; the background sweeps; a [`Running`] handle
//! stops them in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::middleware;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::budget::BodyBudget;
use super::listener::ApiListener;
use super::monitor::Monitor;
use super::phase::Phase;
use super::reload::Reloadable;
use super::state::AppState;
use super::{collect, linger, metrics, observe, ops, ratelimit, routes, tls};
use crate::audit::AuditLog;
use crate::config::Config;
use crate::runtime::custody::Custody;
use crate::runtime::oracle_guard::OracleGuard;
use crate::runtime::reencrypt::Reseals;
use crate::runtime::sweeps;
use crate::vault::Vault;
use crate::vault::cvc::CvcHold;

/// How long a request waits for room in the body budget before 503.
const BODY_BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// TLS configuration.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The in-memory key of the security-code hold.
    #[error("cannot create the in-memory key for security codes: {0}")]
    Cvc(crate::crypto::KeyError),
    /// A proxy route's CA, certificate or key.
    #[error("config error: {0}")]
    Proxy(String),
    /// Binding a listener.
    #[error("cannot listen on {addr}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// A running server: its bound addresses and a handle to stop it.
pub struct Running {
    /// Where the API listens (the real port when the config said 0).
    pub api_addr: SocketAddr,
    /// Where the ops listener listens.
    pub ops_addr: SocketAddr,
    /// The hosted fields' public listener, when `[collect]` is configured:
    /// where it listens and its public URL.
    pub collect: Option<(SocketAddr, String)>,
    /// The public listener's own runtime and accept task.
    public: Option<PublicRuntime>,
    shutdown: watch::Sender<bool>,
    ready: Arc<AtomicBool>,
    api: JoinHandle<()>,
    ops: JoinHandle<()>,
    /// The background sweeps: they hold the vault, so shutdown waits for
    /// them before the vault is closed.
    jobs: Vec<JoinHandle<()>>,
    reloadable: Arc<Reloadable>,
}

impl Running {
    /// Replaces the TLS configuration and the principals table from
    /// `config` (a bad file changes nothing).
    pub fn reload(&self, config: &Config) -> Result<(), tls::TlsError> {
        self.reloadable.reload(config)
    }

    /// Starts draining: `/readyz` answers 503 from now on, while both
    /// listeners keep serving (a load balancer stops sending first).
    pub fn begin_drain(&self) {
        self.ready.store(false, Ordering::SeqCst);
    }

    /// Stops accepting, drains in-flight requests (up to [`DRAIN_TIMEOUT`])
    /// and returns when both listeners are closed.
    pub async fn shutdown(self) {
        self.ready.store(false, Ordering::SeqCst);
        let _ = self.shutdown.send(true);
        let _ = self.api.await;
        let _ = self.ops.await;
        if let Some(public) = self.public {
            let _ = public.task.await;
            public.runtime.shutdown_background();
        }
        for job in self.jobs {
            let _ = job.await;
        }
    }
}

/// The public listener's runtime: its worker threads run at a lower
/// priority (nice 10), so under a flood of the public port the kernel
/// gives the API's threads the CPU first.
struct PublicRuntime {
    runtime: tokio::runtime::Runtime,
    task: JoinHandle<()>,
}

/// What the hosted fields share with the rest of the vault.
struct CollectParts<'a> {
    vault: &'a Arc<Vault>,
    cvcs: &'a Arc<CvcHold>,
    guard: &'a Arc<OracleGuard>,
    audit: &'a AuditLog,
    monitor: &'a Arc<Monitor>,
}

/// The started public listener: its runtime, address, URL and sessions.
struct StartedPublic {
    runtime: PublicRuntime,
    addr: SocketAddr,
    url: String,
    sessions: Arc<crate::runtime::collect::Collect>,
}

/// With `[collect]`: the hosted fields' sessions and their public listener,
/// started on its own runtime.
fn start_collect(
    config: &Config,
    parts: CollectParts<'_>,
    shutdown: &watch::Receiver<bool>,
) -> Result<Option<StartedPublic>, ServerError> {
    let Some(collect_config) = &config.collect else {
        return Ok(None);
    };
    let (std_listener, addr) = bind_public(collect_config.listen)?;
    let url = collect_config.public_url_for(addr);
    let sessions = Arc::new(crate::runtime::collect::Collect::new(
        collect_config,
        url.clone(),
        Arc::clone(parts.vault),
        Arc::clone(parts.cvcs),
        Arc::clone(parts.guard),
        std::time::Duration::from_secs(config.cvc.max_ttl_s.get()),
    ));
    let public = Arc::new(collect::Public {
        collect: Arc::clone(&sessions),
        audit: parts.audit.clone(),
        monitor: Arc::clone(parts.monitor),
        limits: collect_config.limits.clone(),
        origin: url.clone(),
        bodies: collect::Public::body_budget(&collect_config.limits),
    });
    let runtime = run_public(collect_config, std_listener, public, shutdown.clone())?;
    Ok(Some(StartedPublic {
        runtime,
        addr,
        url,
        sessions,
    }))
}

/// How far below the vault's own threads the public listener's run.
const PUBLIC_NICE: i32 = 10;

/// Binds the public listener's address (a std listener: its runtime is
/// not built yet); the address really bound.
fn bind_public(addr: SocketAddr) -> Result<(std::net::TcpListener, SocketAddr), ServerError> {
    let bind_error = |source| ServerError::Bind { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    Ok((listener, bound))
}

/// Starts the public listener on `listener`, on its own runtime.
fn run_public(
    config: &crate::config::CollectConfig,
    listener: std::net::TcpListener,
    public: Arc<collect::Public>,
    shutdown: watch::Receiver<bool>,
) -> Result<PublicRuntime, ServerError> {
    let tls = tls::public_server_config(config)?;
    let addr = config.listen;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .thread_name("cardvault-public")
        .on_thread_start(|| crate::hardening::lower_thread_priority(PUBLIC_NICE))
        .enable_all()
        .build()
        .map_err(|source| ServerError::Bind { addr, source })?;
    let public_listener = collect::PublicListener {
        handshakes: collect::PublicListener::handshake_rate(&public.limits),
        public,
        acceptor: tokio_rustls::TlsAcceptor::from(tls),
    };
    let task = runtime.spawn(async move {
        match TcpListener::from_std(listener) {
            Ok(tcp) => public_listener.run(tcp, shutdown).await,
            Err(e) => tracing::error!(error = %e, "the public listener could not start"),
        }
    });
    Ok(PublicRuntime { runtime, task })
}

/// Binds both listeners and starts serving.
pub async fn start(
    config: &Config,
    vault: Arc<Vault>,
    custody: Arc<Custody>,
    reseals: Arc<Reseals>,
    audit: AuditLog,
    ops: OpsListener,
) -> Result<Running, ServerError> {
    // The recorder is up (the ops listener installed it) before loading the
    // TLS files publishes certificate expiry.
    let reloadable = Reloadable::new(config)?;
    let (api_listener, api_addr) = bind(config.api.listen).await?;
    let OpsListener {
        addr: ops_addr,
        phase,
        task: ops,
        shutdown,
    } = ops;
    let shutdown_rx = shutdown.subscribe();
    let ready = Arc::new(AtomicBool::new(true));
    let monitor = Arc::new(Monitor::new(config, audit.clone()));
    let cvcs = Arc::new(CvcHold::new(config.cvc.max_held.get()).map_err(ServerError::Cvc)?);
    let guard = Arc::new(OracleGuard::new(
        &config.oracle_guard,
        config
            .tenants
            .iter()
            .map(|(name, t)| (name.clone(), t.oracle_guard)),
    ));
    warn_deprecated(config);
    let public = start_collect(
        config,
        CollectParts {
            vault: &vault,
            cvcs: &cvcs,
            guard: &guard,
            audit: &audit,
            monitor: &monitor,
        },
        &shutdown_rx,
    )?;
    let jobs = spawn_sweeps(
        &vault,
        &cvcs,
        &guard,
        public.as_ref().map(|p| &p.sessions),
        &audit,
        &shutdown_rx,
    );
    let state = Arc::new(AppState {
        vault,
        custody: Arc::clone(&custody),
        reseals,
        approvals: crate::runtime::approvals::Approvals::new(std::time::Duration::from_secs(
            config.keys.approval_ttl_s.get(),
        )),
        proxy: crate::runtime::upstream::build_routes(&config.proxy).map_err(ServerError::Proxy)?,
        exports: crate::runtime::approvals::GrantedExports::new(std::time::Duration::from_secs(
            config.keys.approval_ttl_s.get(),
        )),
        keys: config.keys,
        limits: config.limits.clone(),
        audit: audit.clone(),
        principals: Arc::clone(&reloadable),
        monitor: Arc::clone(&monitor),
        rates: ratelimit::RateLimits::new(&config.limits),
        bodies: BodyBudget::new(config.limits.body_budget_bytes.get(), BODY_BUDGET_WAIT),
        cvcs,
        cvc_max_ttl: std::time::Duration::from_secs(config.cvc.max_ttl_s.get()),
        guard: Arc::clone(&guard),
        lookup_compat: config.compat.lookup_via_tokenize_or_read,
        collect: public.as_ref().map(|p| Arc::clone(&p.sessions)),
        watched: crate::runtime::watched::WatchedPages::default(),
        backup_dir: (config.storage.backend == crate::config::StorageBackend::Rocksdb)
            .then(|| (config.storage.backup_dir(), config.storage.min_free_bytes)),
        backup_running: tokio::sync::Mutex::new(()),
    });
    let vault = Arc::clone(&state.vault);
    let router = routes::router(state)
        .layer(middleware::from_fn(observe::observe))
        .layer(middleware::from_fn(linger::linger));
    let listener = ApiListener {
        reloadable: Arc::clone(&reloadable),
        limits: config.limits.clone(),
        router,
        audit,
        monitor,
    };
    let api = tokio::spawn(listener.run(api_listener, shutdown_rx.clone()));
    phase.serve(Arc::clone(&ready), custody, vault);
    let (collect_at, public_runtime) = listening(api_addr, ops_addr, public);
    Ok(Running {
        api_addr,
        ops_addr,
        collect: collect_at,
        public: public_runtime,
        shutdown,
        ready,
        api,
        ops,
        jobs,
        reloadable,
    })
}

/// Logs where the vault listens; the public listener's address and URL,
/// and its runtime, apart.
fn listening(
    api: SocketAddr,
    ops: SocketAddr,
    public: Option<StartedPublic>,
) -> (Option<(SocketAddr, String)>, Option<PublicRuntime>) {
    match public {
        Some(p) => {
            tracing::info!(api = %api, ops = %ops, public = %p.addr, url = %p.url, "cardvault listening");
            (Some((p.addr, p.url)), Some(p.runtime))
        }
        None => {
            tracing::info!(api = %api, ops = %ops, "cardvault listening");
            (None, None)
        }
    }
}

/// The background sweeps (runtime/sweeps.rs), each until shutdown.
fn spawn_sweeps(
    vault: &Arc<Vault>,
    cvcs: &Arc<CvcHold>,
    guard: &Arc<OracleGuard>,
    sessions: Option<&Arc<crate::runtime::collect::Collect>>,
    audit: &AuditLog,
    shutdown: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut jobs = vec![
        tokio::spawn(sweeps::oracle_guard(Arc::clone(guard), shutdown.clone())),
        tokio::spawn(sweeps::cvcs(Arc::clone(cvcs), shutdown.clone())),
        tokio::spawn(sweeps::expired_tokens(
            Arc::clone(vault),
            audit.clone(),
            shutdown.clone(),
        )),
    ];
    if let Some(sessions) = sessions {
        jobs.push(tokio::spawn(sweeps::collect_sessions(
            Arc::clone(vault),
            Arc::clone(sessions),
            audit.clone(),
            shutdown.clone(),
        )));
    }
    jobs
}

/// Warns at start about each deprecated behaviour the config keeps.
fn warn_deprecated(config: &Config) {
    for principal in config.lookup_via_compat() {
        tracing::warn!(
            principal,
            "deprecated: this principal may call /v1/lookup only through its tokenize or read role; grant it the lookup role (or set [compat] lookup_via_tokenize_or_read = false to refuse)"
        );
    }
}

/// The ops listener, started before the vault opens (it reports the start:
/// [`Phase`]); [`start`] takes it over. Dropped, it stops.
pub struct OpsListener {
    /// Where it listens.
    pub addr: SocketAddr,
    phase: Arc<Phase>,
    task: JoinHandle<()>,
    /// Stops every listener (the others subscribe to it).
    shutdown: watch::Sender<bool>,
}

impl OpsListener {
    /// Binds `[ops] listen` and serves the ops routes at once, reporting
    /// a vault that is starting.
    pub async fn start(config: &Config) -> Result<OpsListener, ServerError> {
        let metrics = metrics::handle();
        let (listener, addr) = bind(config.ops.listen).await?;
        let disk = (config.storage.backend == crate::config::StorageBackend::Rocksdb).then(|| {
            (
                config.storage.data_dir.clone(),
                config.storage.min_free_bytes,
            )
        });
        let phase = Phase::starting(disk);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(ops::run(
            listener,
            ops::router(Arc::clone(&phase), metrics),
            config.ops.max_connections.get(),
            config.limits.clone(),
            shutdown_rx,
        ));
        Ok(OpsListener {
            addr,
            phase,
            task,
            shutdown,
        })
    }

    /// The start has reached step `index` of [`super::phase::STEPS`].
    pub fn step(&self, index: usize) {
        self.phase.step(index);
    }
}

/// Binds `addr`; returns the listener and the address it really got (the
/// port when `addr` asked for 0).
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    let bound = async {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        Ok((listener, local))
    };
    bound
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}
