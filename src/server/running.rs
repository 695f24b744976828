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

/// How far below the vault's own threads the public listener's run.
const PUBLIC_NICE: i32 = 10;

/// Binds the public listener and starts it on its own runtime.
fn start_public(
    config: &crate::config::CollectConfig,
    public: impl FnOnce(String) -> Arc<collect::Public>,
    shutdown: watch::Receiver<bool>,
) -> Result<(PublicRuntime, SocketAddr, String), ServerError> {
    let tls = tls::public_server_config(config)?;
    let addr = config.listen;
    let bind_error = |source| ServerError::Bind { addr, source };
    let std_listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
    std_listener.set_nonblocking(true).map_err(bind_error)?;
    let bound = std_listener.local_addr().map_err(bind_error)?;
    let url = config.public_url_for(bound);
    let public = public(url.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .thread_name("cardvault-public")
        .on_thread_start(|| crate::hardening::lower_thread_priority(PUBLIC_NICE))
        .enable_all()
        .build()
        .map_err(bind_error)?;
    let listener = collect::PublicListener {
        public,
        acceptor: tokio_rustls::TlsAcceptor::from(tls),
    };
    let task = runtime.spawn(async move {
        match TcpListener::from_std(std_listener) {
            Ok(tcp) => listener.run(tcp, shutdown).await,
            Err(e) => tracing::error!(error = %e, "the public listener could not start"),
        }
    });
    Ok((PublicRuntime { runtime, task }, bound, url))
}

/// Binds both listeners and starts serving.
pub async fn start(
    config: &Config,
    vault: Arc<Vault>,
    custody: Arc<Custody>,
    reseals: Arc<Reseals>,
    audit: AuditLog,
) -> Result<Running, ServerError> {
    // The recorder first: loading the TLS files publishes certificate expiry.
    let metrics = metrics::handle();
    let reloadable = Reloadable::new(config)?;
    let (api_listener, api_addr) = bind(config.api.listen).await?;
    let (ops_listener, ops_addr) = bind(config.ops.listen).await?;
    let (shutdown, shutdown_rx) = watch::channel(false);
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
    let mut jobs = vec![tokio::spawn(sweeps::oracle_guard(
        Arc::clone(&guard),
        shutdown_rx.clone(),
    ))];
    for principal in config.lookup_via_compat() {
        tracing::warn!(
            principal,
            "deprecated: this principal may call /v1/lookup only through its tokenize or read role; grant it the lookup role (or set [compat] lookup_via_tokenize_or_read = false to refuse)"
        );
    }
    jobs.push(tokio::spawn(sweeps::cvcs(
        Arc::clone(&cvcs),
        shutdown_rx.clone(),
    )));
    jobs.push(tokio::spawn(sweeps::expired_tokens(
        Arc::clone(&vault),
        audit.clone(),
        shutdown_rx.clone(),
    )));
    let mut public_runtime = None;
    let mut collect_state = None;
    let mut collect_at = None;
    if let Some(collect_config) = &config.collect {
        let make = |url: String| {
            let sessions = Arc::new(crate::runtime::collect::Collect::new(
                collect_config,
                url.clone(),
                Arc::clone(&vault),
                Arc::clone(&cvcs),
                Arc::clone(&guard),
                std::time::Duration::from_secs(config.cvc.max_ttl_s.get()),
            ));
            collect_state = Some(Arc::clone(&sessions));
            Arc::new(collect::Public {
                collect: sessions,
                audit: audit.clone(),
                monitor: Arc::clone(&monitor),
                limits: collect_config.limits.clone(),
                origin: url,
            })
        };
        let (runtime, bound, url) = start_public(collect_config, make, shutdown_rx.clone())?;
        public_runtime = Some(runtime);
        collect_at = Some((bound, url));
    }
    if let Some(sessions) = &collect_state {
        jobs.push(tokio::spawn(sweeps::collect_sessions(
            Arc::clone(&vault),
            Arc::clone(sessions),
            audit.clone(),
            shutdown_rx.clone(),
        )));
    }
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
        collect: collect_state,
    });
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
    let ops_router = ops::router(Arc::clone(&ready), custody, metrics);
    let ops = tokio::spawn(ops::run(
        ops_listener,
        ops_router,
        config.ops.max_connections.get(),
        config.limits.clone(),
        shutdown_rx,
    ));
    match &collect_at {
        Some((public, url)) => {
            tracing::info!(api = %api_addr, ops = %ops_addr, public = %public, url, "cardvault listening")
        }
        None => tracing::info!(api = %api_addr, ops = %ops_addr, "cardvault listening"),
    }
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
