//! Reaching the database: the settings, the URL turned into a pool (its
//! password never printed: [`describe`] names hosts, database and user
//! only), rustls for TLS to the server, migrations on the first connection,
//! and the insert writer started beside the pool.

use std::str::FromStr as _;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use super::counters::Baselines;
use super::schema::{self, pg};
use super::{PgStore, marker, probe, reads, writer};
use crate::store::StoreError;
use std::path::PathBuf;

/// Where and how to reach the database.
pub struct PgSettings {
    /// libpq-style URL or key=value string (multi-host with
    /// `target_session_attrs=read-write` follows a failover). Secret: it may
    /// hold the password.
    pub url: SecretString,
    /// Connections per node.
    pub pool_size: usize,
    /// CA bundle for TLS to the database; required unless the URL says
    /// `sslmode=disable`.
    pub ca_file: Option<PathBuf>,
    /// A file holding the password (for a URL without one): owned by this
    /// user, mode 0600, read when connecting.
    pub password_file: Option<PathBuf>,
    /// A node whose probe commit has not completed within this long is not
    /// ready (`/readyz` 503); also the connect timeout per host when the
    /// URL sets none.
    pub commit_bound: std::time::Duration,
    /// The node's own directory, for its clean-shutdown marker (a crash
    /// costs key budget, a clean restart none); `None`: every start is
    /// taken as after a crash.
    pub node_dir: Option<PathBuf>,
}

/// The session setting that plans every execution of a prepared statement
/// for its parameters, as an unprepared statement is.
const CUSTOM_PLANS: &str = "-c plan_cache_mode=force_custom_plan";

impl PgStore {
    /// Connects (the pool opens connections on demand; one is opened now to
    /// check the URL and apply migrations) and starts the insert writer.
    pub async fn connect(settings: &PgSettings) -> Result<PgStore, StoreError> {
        // tokio-postgres knows disable/prefer/require; rustls always
        // verifies, so verify-full and verify-ca mean require here.
        let url = Zeroizing::new(
            settings
                .url
                .expose_secret()
                .replace("sslmode=verify-full", "sslmode=require")
                .replace("sslmode=verify-ca", "sslmode=require"),
        );
        let mut config = tokio_postgres::Config::from_str(&url).map_err(|_| {
            StoreError::Backend("storage.url is not a PostgreSQL connection string".into())
        })?;
        if let Some(path) = &settings.password_file {
            if config.get_password().is_some() {
                return Err(StoreError::Backend(
                    "storage.url holds a password and storage.password_file is set: keep one"
                        .into(),
                ));
            }
            let password = crate::hardening::read_secret_text(path, 1024).map_err(|why| {
                StoreError::Backend(format!("storage.password_file {}: {why}", path.display()))
            })?;
            config.password(password.as_bytes());
        }
        // Statements are prepared once per connection (`prepare_cached`);
        // the server still plans each execution for the table as it is.
        // PostgreSQL's default may switch a statement to a generic plan
        // after five executions, made from the statistics of that moment:
        // on a table analyzed while small that plan scans the whole tenant
        // and is kept as the table grows (auto_explain showed it; tokenize
        // fell 3-5x in benches/postgres.sh). Per-execution planning gives
        // back about half of what preparing gains on reads; plans that
        // follow the table are worth it (docs/BENCHMARKS.md, ninth sitting).
        // A host that does not answer (a partition, a machine gone) must
        // not hold a connection attempt for the kernel's minutes.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(settings.commit_bound);
        }
        // The writer's own connection keeps PostgreSQL's plan caching: its
        // statements insert from arrays, one plan whatever the tables
        // hold, and planning the group's statement at every commit is
        // work on the one path every tokenize waits for.
        let writer_config = config.clone();
        let options = match config.get_options() {
            Some(given) => format!("{given} {CUSTOM_PLANS}"),
            None => CUSTOM_PLANS.to_owned(),
        };
        config.options(&options);
        let describe = describe(&config);
        let pool = pool(&config, settings.ca_file.as_deref(), settings.pool_size)?;
        let mut client = pool.get().await.map_err(pool_error)?;
        schema::migrate(&mut client, &describe).await?;
        drop(client);
        // Taken once the database is reached: a start that fails before
        // leaves the marker for the next.
        let clean = match &settings.node_dir {
            Some(dir) => marker::take(dir)?,
            None => false,
        };
        let baselines = Arc::new(Baselines::default());
        let (inserts, jobs) = mpsc::channel(1024);
        let writer_pool = self::pool(&writer_config, settings.ca_file.as_deref(), 1)?;
        tokio::spawn(writer::run(writer_pool, jobs, Arc::clone(&baselines)));
        let (reads, queued) = mpsc::channel(4096);
        tokio::spawn(reads::run(pool.clone(), queued));
        let verdict = Arc::new(probe::Verdict::default());
        let probe = tokio::spawn(probe::run(
            self::pool(&config, settings.ca_file.as_deref(), 1)?,
            Arc::clone(&verdict),
            settings.commit_bound,
        ));
        Ok(PgStore {
            pool,
            describe,
            inserts,
            reads,
            baselines,
            verdict,
            probe,
            node_dir: settings.node_dir.clone(),
            clean,
        })
    }

    pub(super) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }
}

/// A pool of at most `size` connections made by `config`, over TLS with
/// `ca` unless the URL says `sslmode=disable`.
fn pool(
    config: &tokio_postgres::Config,
    ca: Option<&std::path::Path>,
    size: usize,
) -> Result<Pool, StoreError> {
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let config = config.clone();
    let manager = match (ca, config.get_ssl_mode()) {
        (Some(ca), _) => Manager::from_config(config, tls(ca)?, manager_config),
        (None, tokio_postgres::config::SslMode::Disable) => {
            Manager::from_config(config, tokio_postgres::NoTls, manager_config)
        }
        (None, _) => {
            return Err(StoreError::Backend(
                "storage.ca_file is required for TLS to PostgreSQL (or sslmode=disable in storage.url)"
                    .into(),
            ));
        }
    };
    Pool::builder(manager)
        .max_size(size.max(1))
        .build()
        .map_err(|e| StoreError::Backend(format!("postgres pool: {e}")))
}

/// Hosts, ports, database and user — never the password.
pub(super) fn describe(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            tokio_postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
            tokio_postgres::config::Host::Unix(p) => format!("{}:{port}", p.display()),
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

fn tls(ca: &std::path::Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let problem = |e: &dyn std::fmt::Display| {
        StoreError::Backend(format!("storage.ca_file {}: {e}", ca.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| problem(&e))? {
        roots
            .add(cert.map_err(|e| problem(&e))?)
            .map_err(|e| problem(&e))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .map_err(|e| problem(&e))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

pub(super) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg(e),
        other => StoreError::Backend(format!("postgres pool: {other}")),
    }
}
