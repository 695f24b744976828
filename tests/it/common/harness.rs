//! The in-process server harness shared by the service and audit tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use cardvault::client::{ClientTls, Connection};
use cardvault::config::{
    AlertsConfig, ApiConfig, AuditConfig, Config, LimitsConfig, OpsConfig, StorageConfig,
};
use cardvault::crypto::KeyFileProvider;
use cardvault::pki;
use cardvault::server::Service;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server config over a fresh temp dir: dev PKI (plus a `stranger`
/// client the config does not know), KEK, database and audit trail; the
/// principals cart, payments and admin as in `serve --dev`.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub config: Config,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with(|_| {})
    }

    pub fn with(adjust: impl FnOnce(&mut Config)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("pki");
        pki::init(&pki_dir).unwrap();
        pki::issue(&pki_dir, "stranger").unwrap();
        KeyFileProvider::create(&dir.path().join("kek.key")).unwrap();
        let principals = cardvault::config::dev::dev_principals();
        let mut config = Config {
            api: ApiConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                cert: pki_dir.join("server.pem"),
                key: pki_dir.join("server-key.pem"),
                client_ca: pki_dir.join("ca.pem"),
                crls: Vec::new(),
                allow_tls12: false,
                tls_check_s: 0,
            },
            ops: OpsConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                ..OpsConfig::default()
            },
            kek: None,
            storage: StorageConfig {
                backend: Default::default(),
                url: None,
                pool_size: std::num::NonZeroUsize::new(4).unwrap(),
                ca_file: None,
                password_file: None,
                commit_bound_ms: std::num::NonZeroU64::new(5000).unwrap(),
                data_dir: dir.path().join("db"),
                backup_dir: None,
                key_file: Some(dir.path().join("kek.key")),
                min_free_bytes: 1 << 20,
                block_cache_bytes: std::num::NonZeroUsize::new(8 << 20).unwrap(),
                write_buffer_bytes: std::num::NonZeroUsize::new(8 << 20).unwrap(),
            },
            limits: LimitsConfig::default(),
            principals,
            tenants: BTreeMap::new(),
            audit: AuditConfig {
                dir: dir.path().join("audit"),
                ..AuditConfig::default()
            },
            alerts: AlertsConfig::default(),
            oracle_guard: Default::default(),
            compat: Default::default(),
            log: Default::default(),
            cvc: Default::default(),
            // As the dev config: one admin, so no second one for sealing
            // and KEK rotation (tests of dual control turn it on).
            keys: cardvault::config::KeysConfig {
                dual_control: cardvault::config::DualControl {
                    kek_rotation: false,
                    seal: false,
                    evidence_key_rotation: false,
                },
                ..Default::default()
            },
            supply_chain: Default::default(),
            proxy: Default::default(),
            collect: None,
            custodians: BTreeMap::new(),
        };
        adjust(&mut config);
        config.validate().unwrap();
        Harness { dir, config }
    }

    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    pub async fn start(&self) -> Service {
        Service::launch(&self.config).await.unwrap()
    }

    pub fn tls(&self, name: &str) -> ClientTls {
        let pki = self.pki();
        ClientTls::from_files(
            &pki.join("ca.pem"),
            Some((
                &pki.join(format!("{name}.pem")),
                &pki.join(format!("{name}-key.pem")),
            )),
            false,
        )
        .unwrap()
    }

    pub async fn connect(&self, name: &str, addr: SocketAddr) -> Connection {
        self.tls(name).connect(addr).await.unwrap()
    }
}

/// GET over plain HTTP from the ops listener: status and body.
pub async fn ops_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, text)
}

/// GET of a JSON page from the ops listener (`/healthz`, `/readyz`):
/// status and the parsed body.
pub async fn ops_json(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let (status, text) = ops_get(addr, path).await;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap())
}

/// The value of the series `name` (with its labels, as rendered) in a
/// `/metrics` page; 0 when absent.
pub fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}
