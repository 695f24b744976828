//! The typed configuration of `cardvault serve`: one TOML file, overridable
//! by environment variables of the form `CARDVAULT_<SECTION>__<FIELD>` (for
//! example `CARDVAULT_API__LISTEN=0.0.0.0:8443`). Relative paths are resolved
//! against the config file's directory. Validation errors name the field.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

use crate::domain::TenantId;
use crate::vault::TokenMode;

mod access;
mod alerts;
mod collect;
pub mod dev;
mod kek;
mod limits;
mod listeners;
mod oracle_guard;
mod proxy;
mod storage;

pub use access::{AdminScope, HoursUtc, PrincipalConfig, Role, TenantConfig};
pub use alerts::{AlertsConfig, BurstRule};
pub use collect::{CollectConfig, CollectLimits};
pub use kek::{KekConfig, KekSource};
pub use limits::{LimitsConfig, RateLimit};
pub use listeners::{ApiConfig, OpsConfig};
pub use oracle_guard::{GuardOverrides, GuardThresholds, OracleGuardConfig};
pub use proxy::{ProxyConfig, ProxyRoute};
pub use storage::{DatabaseUrl, StorageBackend, StorageConfig};

/// A configuration problem, naming the field.
#[derive(Debug, thiserror::Error)]
#[error("config error: {field}: {problem}")]
pub struct ConfigError {
    /// Dotted path of the field (`api.cert`), or the file.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The mTLS API listener.
    pub api: ApiConfig,
    /// The plain-HTTP ops listener.
    #[serde(default)]
    pub ops: OpsConfig,
    /// Database (and the KEK file, for the file provider).
    pub storage: StorageConfig,
    /// Where the KEK lives; absent means a key file (`storage.key_file`).
    #[serde(default)]
    pub kek: Option<KekConfig>,
    /// Limits and timeouts.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Client principals (certificate identity) → tenant and roles.
    #[serde(default)]
    pub principals: BTreeMap<String, PrincipalConfig>,
    /// Per-tenant settings.
    #[serde(default)]
    pub tenants: BTreeMap<TenantId, TenantConfig>,
    /// The audit trail.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Monitoring rules.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// The guard against turning tokens back into PANs through tokenize
    /// and lookup.
    #[serde(default)]
    pub oracle_guard: OracleGuardConfig,
    /// Behaviour kept for older configs, each with a deprecation warning.
    #[serde(default)]
    pub compat: CompatConfig,
    /// Log output.
    #[serde(default)]
    pub log: LogConfig,
    /// Card security codes held in memory.
    #[serde(default)]
    pub cvc: CvcConfig,
    /// Key lifecycle (re-encryption pace).
    #[serde(default)]
    pub keys: KeysConfig,
    /// Known-vulnerability checks of this build.
    #[serde(default)]
    pub supply_chain: SupplyChainConfig,
    /// The reveal proxy's upstreams.
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// The hosted card fields' public listener (absent: none).
    #[serde(default)]
    pub collect: Option<CollectConfig>,
    /// Who holds each of the vault's own keys, by name — declared, for the
    /// evidence bundle's key inventory (3.6.1.1): `kek`, `audit-mac`,
    /// `evidence-signing`, `tls-server`, `ca`.
    #[serde(default)]
    pub custodians: BTreeMap<String, Vec<String>>,
}

/// The `[compat]` section: behaviour kept for configs written before a
/// change, each logged as deprecated at start.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompatConfig {
    /// Principals holding `tokenize` or `read` may call `/v1/lookup`
    /// without the `lookup` role (the behaviour before the role existed).
    /// Default true, so older configs keep working; set false to require
    /// the role.
    pub lookup_via_tokenize_or_read: bool,
}

impl Default for CompatConfig {
    fn default() -> CompatConfig {
        CompatConfig {
            lookup_via_tokenize_or_read: true,
        }
    }
}

impl Config {
    /// Principals that reach `/v1/lookup` only through the deprecated
    /// `[compat] lookup_via_tokenize_or_read` (they hold `tokenize` or
    /// `read` but not `lookup`): the start warns about each.
    pub fn lookup_via_compat(&self) -> Vec<&str> {
        if !self.compat.lookup_via_tokenize_or_read {
            return Vec::new();
        }
        self.principals
            .iter()
            .filter(|(_, p)| {
                !p.roles.contains(&Role::Lookup)
                    && (p.roles.contains(&Role::Tokenize) || p.roles.contains(&Role::Read))
            })
            .map(|(name, _)| name.as_str())
            .collect()
    }
}

/// The `[supply_chain]` section.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupplyChainConfig {
    /// A RustSec advisory database snapshot: at start the vault checks its
    /// own build against it (`cardvault_known_vulnerabilities`, and the
    /// `known_vulnerabilities` alert above 0).
    #[serde(default)]
    pub advisory_db: Option<PathBuf>,
}

/// The `[cvc]` section: card security codes held in memory only
/// (`POST /v1/tokens/{token}/cvc`), never persisted.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CvcConfig {
    /// Most codes held at once; past it, 503 `unavailable`.
    pub max_held: std::num::NonZeroUsize,
    /// Longest time a code may be held, seconds (at most 3600).
    pub max_ttl_s: std::num::NonZeroU64,
}

impl Default for CvcConfig {
    fn default() -> CvcConfig {
        CvcConfig {
            max_held: std::num::NonZeroUsize::new(100_000).unwrap_or(std::num::NonZeroUsize::MIN),
            max_ttl_s: std::num::NonZeroU64::new(3600).unwrap_or(std::num::NonZeroU64::MIN),
        }
    }
}

/// The `[keys]` section: key lifecycle settings.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Records a re-encryption job seals again per second, at most.
    pub reencrypt_items_per_s: std::num::NonZeroU32,
    /// Records per re-encryption step (one scan and one commit).
    pub reencrypt_batch: std::num::NonZeroUsize,
    /// Seconds a destructive request (a tenant's crypto-shred) waits for a
    /// second admin's approval; at most 600.
    pub approval_ttl_s: std::num::NonZeroU64,
    /// A data key's cryptoperiod, seconds since it became active: then it
    /// is rotated and its tenant re-encrypted. 0: never (not advised).
    pub dek_cryptoperiod_s: u64,
    /// A fingerprint key's cryptoperiod, seconds: watched and alerted on
    /// (not rotated automatically yet). 0: not watched.
    pub fingerprint_cryptoperiod_s: u64,
    /// The `cryptoperiod_ending` alert fires this many seconds before a
    /// key's period ends.
    pub cryptoperiod_warning_s: u64,
    /// How often the cryptoperiods are checked, seconds.
    pub cryptoperiod_check_s: std::num::NonZeroU64,
    /// Which vault-wide key operations wait for a second admin.
    pub dual_control: DualControl,
}

/// `[keys.dual_control]`: the vault-wide key operations one admin asks for
/// and a different global admin must approve (`POST
/// /v1/admin/approvals/{id}`) before they happen — PCI DSS 3.6.1.2 / 3.7.6
/// split knowledge and dual control. On unless turned off.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DualControl {
    /// `POST /v1/admin/kek/rotate`.
    pub kek_rotation: bool,
    /// `POST /v1/admin/seal`.
    pub seal: bool,
    /// `POST /v1/admin/evidence-key/rotate`.
    pub evidence_key_rotation: bool,
}

impl Default for DualControl {
    fn default() -> DualControl {
        DualControl {
            kek_rotation: true,
            seal: true,
            evidence_key_rotation: true,
        }
    }
}

/// The names `[custodians]` may use: the vault's own keys.
pub const CUSTODIED_KEYS: [&str; 5] = ["kek", "audit-mac", "evidence-signing", "tls-server", "ca"];

impl Default for KeysConfig {
    fn default() -> KeysConfig {
        KeysConfig {
            reencrypt_items_per_s: std::num::NonZeroU32::new(2000)
                .unwrap_or(std::num::NonZeroU32::MIN),
            reencrypt_batch: std::num::NonZeroUsize::new(256)
                .unwrap_or(std::num::NonZeroUsize::MIN),
            approval_ttl_s: std::num::NonZeroU64::new(600).unwrap_or(std::num::NonZeroU64::MIN),
            dek_cryptoperiod_s: 365 * 86_400,
            fingerprint_cryptoperiod_s: 2 * 365 * 86_400,
            cryptoperiod_warning_s: 30 * 86_400,
            cryptoperiod_check_s: std::num::NonZeroU64::new(3600)
                .unwrap_or(std::num::NonZeroU64::MIN),
            dual_control: DualControl::default(),
        }
    }
}

/// The time a code is held when the request names none, seconds.
pub const CVC_DEFAULT_TTL_S: u64 = 900;

/// The `[log]` section.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json` (one JSON object per line, same fields).
    #[serde(default)]
    pub format: LogFormat,
}

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

impl LogFormat {
    /// The format named by `CARDVAULT_LOG__FORMAT`, if set and valid (the
    /// logger starts before the config is read; a bad value is refused
    /// when the config is loaded, naming `log.format`).
    pub fn from_env() -> Option<LogFormat> {
        match std::env::var("CARDVAULT_LOG__FORMAT").ok()?.as_str() {
            "json" => Some(LogFormat::Json),
            "text" => Some(LogFormat::Text),
            _ => None,
        }
    }
}

/// The audit trail.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Directory of the trail (segments and the wrapped audit key).
    pub dir: PathBuf,
    /// Start a new segment at this size.
    pub max_file_bytes: NonZeroU64,
    /// Start a new segment at this age.
    pub rotate_secs: NonZeroU64,
    /// Longest wait before a non-durable entry is synced.
    pub sync_interval_ms: NonZeroU64,
    /// Mirror each entry to syslog (RFC 5424) over plain TCP: `host:port`.
    pub syslog_tcp: Option<String>,
    /// Mirror each entry (and each checkpoint) to syslog over TLS (RFC
    /// 5425): `host:port`, `host` as the collector's certificate names it.
    pub syslog_tls: Option<String>,
    /// With `syslog_tls`: the CA file the collector's certificate chains to.
    pub syslog_ca_file: Option<PathBuf>,
    /// With `syslog_tls`: the vault's client certificate for the collector.
    pub syslog_client_cert: Option<PathBuf>,
    /// With `syslog_tls`: that certificate's private key.
    pub syslog_client_key: Option<PathBuf>,
    /// Mirror each entry to a Unix datagram syslog socket (`/dev/log`).
    pub syslog_unix: Option<PathBuf>,
    /// This node's id in every entry and segment name (1–32 letters, digits,
    /// `-`, `_`, `.`). On PostgreSQL the default is the host name and a
    /// hash of `storage.data_dir`; on RocksDB there is none.
    pub node_id: Option<String>,
    /// Append signed checkpoints of the trail to this directory — best one
    /// the vault's operator cannot rewrite alone (another host's mount,
    /// another owner's spool). The syslog mirror gets them too.
    pub checkpoint_dir: Option<PathBuf>,
    /// A checkpoint at least every this many entries.
    pub checkpoint_every_events: NonZeroU64,
    /// A checkpoint at least this often while entries are written.
    pub checkpoint_interval_s: NonZeroU64,
    /// Where the evidence key's public half is written as PEM (default:
    /// `evidence.pub` beside this config file).
    pub public_key_file: Option<PathBuf>,
}

impl Default for AuditConfig {
    /// The writer's own defaults, so there is one place that sets them.
    fn default() -> AuditConfig {
        let writer = crate::audit::AuditSettings::new(PathBuf::from("audit"));
        let nz = |n: u64| NonZeroU64::new(n).unwrap_or(NonZeroU64::MIN);
        AuditConfig {
            dir: writer.dir,
            max_file_bytes: nz(writer.max_file_bytes),
            rotate_secs: nz(writer.rotate_after.as_secs()),
            sync_interval_ms: nz(
                u64::try_from(writer.sync_interval.as_millis()).unwrap_or(u64::MAX)
            ),
            syslog_tcp: None,
            syslog_tls: None,
            syslog_ca_file: None,
            syslog_client_cert: None,
            syslog_client_key: None,
            syslog_unix: None,
            node_id: None,
            checkpoint_dir: writer.checkpoints.dir,
            checkpoint_every_events: nz(writer.checkpoints.every_events),
            checkpoint_interval_s: nz(writer.checkpoints.interval.as_secs()),
            public_key_file: None,
        }
    }
}

impl AuditConfig {
    /// The writer's settings.
    pub fn settings(&self) -> crate::audit::AuditSettings {
        use crate::audit::syslog::SyslogTarget;
        let mut settings = crate::audit::AuditSettings::new(self.dir.clone());
        settings.max_file_bytes = self.max_file_bytes.get();
        settings.rotate_after = std::time::Duration::from_secs(self.rotate_secs.get());
        settings.sync_interval = std::time::Duration::from_millis(self.sync_interval_ms.get());
        settings.syslog = match (&self.syslog_tls, &self.syslog_tcp, &self.syslog_unix) {
            (Some(addr), ..) => Some(SyslogTarget::Tls(crate::audit::syslog::SyslogTls {
                addr: addr.clone(),
                ca_file: self.syslog_ca_file.clone().unwrap_or_default(),
                client: self
                    .syslog_client_cert
                    .clone()
                    .zip(self.syslog_client_key.clone()),
            })),
            (None, Some(addr), _) => Some(SyslogTarget::Tcp(addr.clone())),
            (None, None, Some(path)) => Some(SyslogTarget::Unix(path.clone())),
            (None, None, None) => None,
        };
        settings.node = self.node_id.clone();
        settings.checkpoints = crate::audit::checkpoint::CheckpointSettings {
            dir: self.checkpoint_dir.clone(),
            every_events: self.checkpoint_every_events.get(),
            interval: std::time::Duration::from_secs(self.checkpoint_interval_s.get()),
        };
        settings.public_key_file = self.public_key_file.clone();
        settings
    }
}

impl Config {
    /// Reads `path`, applies `CARDVAULT_<SECTION>__<FIELD>` overrides,
    /// resolves relative paths and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::new(
                path.display().to_string(),
                "no such config file",
            ));
        }
        let figment = Figment::new().merge(Toml::file(path)).merge(
            Env::prefixed("CARDVAULT_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        let mut config: Config = figment.extract().map_err(|e| {
            let field = e.path.join(".");
            let field = if field.is_empty() {
                path.display().to_string()
            } else {
                field
            };
            ConfigError::new(field, e.kind.to_string())
        })?;
        // Absolute, so every path in the config is (`kek()` relies on it):
        // a relative `--config dev/cardvault.toml` once made `/dev/kek.key`.
        let base = path.parent().unwrap_or(Path::new("."));
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        config.resolve_paths(&base);
        config.validate()?;
        Ok(config)
    }

    /// Makes every relative path absolute against `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.api.cert);
        fix(&mut self.api.key);
        fix(&mut self.api.client_ca);
        self.api.crls.iter_mut().for_each(fix);
        fix(&mut self.storage.data_dir);
        self.storage.ca_file.iter_mut().for_each(fix);
        self.storage.key_file.iter_mut().for_each(fix);
        match &mut self.kek {
            Some(KekConfig::File { key_file }) => key_file.iter_mut().for_each(fix),
            Some(KekConfig::Pkcs11 {
                module, pin_file, ..
            }) => {
                fix(module);
                fix(pin_file);
            }
            Some(KekConfig::Shamir { set_file }) => set_file.iter_mut().for_each(fix),
            None => {}
        }
        fix(&mut self.audit.dir);
        self.audit.checkpoint_dir.iter_mut().for_each(fix);
        self.audit.syslog_ca_file.iter_mut().for_each(fix);
        self.audit.syslog_client_cert.iter_mut().for_each(fix);
        self.audit.syslog_client_key.iter_mut().for_each(fix);
        match &mut self.audit.public_key_file {
            Some(path) => fix(path),
            None => self.audit.public_key_file = Some(base.join("evidence.pub")),
        }
        self.supply_chain.advisory_db.iter_mut().for_each(fix);
        for route in self.proxy.routes.values_mut() {
            fix(&mut route.ca_file);
            route.client_cert.iter_mut().for_each(fix);
            route.client_key.iter_mut().for_each(fix);
        }
        if let Some(collect) = &mut self.collect {
            fix(&mut collect.cert_file);
            fix(&mut collect.key_file);
        }
    }

    /// Checks what types cannot: files exist, principals have roles, rate
    /// bursts fit a full batch. (Names, tenants, hours, modes and non-zero
    /// numbers are typed: they were checked when the file was read.)
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_tls_and_kek_files()?;
        self.validate_principals()?;
        self.validate_limits()?;
        self.validate_node_id()?;
        self.validate_collect()?;
        self.validate_custodians()?;
        self.validate_syslog()?;
        self.validate_backends()
    }

    /// A TLS syslog mirror names its CA (and a client key with a client
    /// certificate); one mirror at a time.
    fn validate_syslog(&self) -> Result<(), ConfigError> {
        let audit = &self.audit;
        if audit.syslog_tls.is_some() && audit.syslog_tcp.is_some() {
            return Err(ConfigError::new(
                "audit.syslog_tls",
                "give syslog_tls or syslog_tcp, not both",
            ));
        }
        if audit.syslog_tls.is_none() {
            return Ok(());
        }
        let Some(ca) = &audit.syslog_ca_file else {
            return Err(ConfigError::new(
                "audit.syslog_ca_file",
                "missing: syslog_tls needs the CA file the collector's certificate chains to",
            ));
        };
        existing_file("audit.syslog_ca_file", ca)?;
        match (&audit.syslog_client_cert, &audit.syslog_client_key) {
            (Some(cert), Some(key)) => {
                existing_file("audit.syslog_client_cert", cert)?;
                existing_file("audit.syslog_client_key", key)
            }
            (None, None) => Ok(()),
            _ => Err(ConfigError::new(
                "audit.syslog_client_cert",
                "give syslog_client_cert and syslog_client_key together",
            )),
        }
    }

    /// `[custodians]` names only the vault's own keys.
    fn validate_custodians(&self) -> Result<(), ConfigError> {
        match self
            .custodians
            .keys()
            .find(|k| !CUSTODIED_KEYS.contains(&k.as_str()))
        {
            Some(unknown) => Err(ConfigError::new(
                format!("custodians.{unknown}"),
                format!(
                    "not one of the vault's keys ({})",
                    CUSTODIED_KEYS.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    /// The public listener's files, URL and block list.
    fn validate_collect(&self) -> Result<(), ConfigError> {
        let Some(collect) = &self.collect else {
            return Ok(());
        };
        existing_file("collect.cert_file", &collect.cert_file)?;
        existing_file("collect.key_file", &collect.key_file)?;
        collect
            .validate()
            .map_err(|(field, problem)| ConfigError::new(field, problem))
    }

    /// The API's certificate, key, client CA and CRLs, and the KEK's files.
    fn validate_tls_and_kek_files(&self) -> Result<(), ConfigError> {
        existing_file("api.cert", &self.api.cert)?;
        existing_file("api.key", &self.api.key)?;
        existing_file("api.client_ca", &self.api.client_ca)?;
        for (i, crl) in self.api.crls.iter().enumerate() {
            existing_file(&format!("api.crls[{i}]"), crl)?;
        }
        match self.kek()? {
            KekSource::File(path) => existing_file("storage.key_file", &path)?,
            KekSource::Pkcs11 {
                module, pin_file, ..
            } => {
                existing_file("kek.module", &module)?;
                existing_file("kek.pin_file", &pin_file)?;
            }
            KekSource::Shamir(_) => {}
        }
        Ok(())
    }

    /// At least one principal, each named and holding a role.
    fn validate_principals(&self) -> Result<(), ConfigError> {
        if self.principals.is_empty() {
            return Err(ConfigError::new(
                "principals",
                "no principals configured; every request would be refused",
            ));
        }
        for (name, p) in &self.principals {
            if name.is_empty() {
                return Err(ConfigError::new("principals", "empty principal name"));
            }
            if p.roles.is_empty() {
                return Err(ConfigError::new(
                    format!("principals.{name}.roles"),
                    "no roles",
                ));
            }
        }
        Ok(())
    }

    /// Limits that must fit one another, and the bounded durations.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        for (field, rate) in [
            ("limits.tokenize_rate.burst", l.tokenize_rate),
            ("limits.detokenize_rate.burst", l.detokenize_rate),
        ] {
            if (rate.burst.get() as usize) < l.max_batch.get() {
                return Err(ConfigError::new(
                    field,
                    "must be at least limits.max_batch, or a full batch could never pass",
                ));
            }
        }
        if !(60..=86_400).contains(&self.oracle_guard.window_secs.get()) {
            return Err(ConfigError::new(
                "oracle_guard.window_secs",
                "60 to 86400 seconds",
            ));
        }
        if self.keys.approval_ttl_s.get() > 600 {
            return Err(ConfigError::new(
                "keys.approval_ttl_s",
                "at most 600: a second admin confirms within ten minutes or the request lapses",
            ));
        }
        if self.cvc.max_ttl_s.get() > 3600 {
            return Err(ConfigError::new(
                "cvc.max_ttl_s",
                "at most 3600: a security code is held until the first authorization, no longer",
            ));
        }
        if l.body_budget_bytes < l.batch_body_limit_bytes {
            return Err(ConfigError::new(
                "limits.body_budget_bytes",
                "must be at least limits.batch_body_limit_bytes, or a full batch could never be read",
            ));
        }
        if l.max_connections_per_principal > l.max_connections {
            return Err(ConfigError::new(
                "limits.max_connections_per_principal",
                "must not exceed limits.max_connections",
            ));
        }
        Ok(())
    }

    /// The audit node id: 1-32 letters, digits, '-', '_' or '.'.
    fn validate_node_id(&self) -> Result<(), ConfigError> {
        if let Some(node) = &self.audit.node_id
            && (node.is_empty()
                || node.len() > 32
                || !node
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
        {
            return Err(ConfigError::new(
                "audit.node_id",
                "1-32 letters, digits, '-', '_' or '.'",
            ));
        }
        Ok(())
    }

    /// The PostgreSQL settings and the proxy routes, with their files.
    fn validate_backends(&self) -> Result<(), ConfigError> {
        if self.storage.backend == StorageBackend::Postgres {
            self.storage.postgres()?;
            if let Some(ca) = &self.storage.ca_file {
                existing_file("storage.ca_file", ca)?;
            }
        }
        for (name, route) in &self.proxy.routes {
            route.validate(name)?;
            existing_file(&format!("proxy.routes.{name}.ca_file"), &route.ca_file)?;
            if let (Some(cert), Some(key)) = (&route.client_cert, &route.client_key) {
                existing_file(&format!("proxy.routes.{name}.client_cert"), cert)?;
                existing_file(&format!("proxy.routes.{name}.client_key"), key)?;
            }
        }
        Ok(())
    }

    /// Where the KEK lives, with `[kek]` and `storage.key_file` joined
    /// (paths are absolute once [`Config::load`] resolved them).
    pub fn kek(&self) -> Result<KekSource, ConfigError> {
        kek::resolve(
            self.kek.as_ref(),
            self.storage.key_file.as_deref(),
            &self.storage.data_dir,
            Path::new("/"),
        )
    }

    /// The audit settings a node runs with: on PostgreSQL, a node id even
    /// when `audit.node_id` is not set — the host name and a short hash of
    /// the node's data directory, so two nodes on one host differ.
    pub fn node_audit_settings(&self) -> crate::audit::AuditSettings {
        use sha2::Digest as _;
        let mut settings = self.audit.settings();
        if settings.node.is_none() && self.storage.backend == StorageBackend::Postgres {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .take(20)
                .collect::<String>();
            let hash = sha2::Sha256::digest(self.storage.data_dir.as_os_str().as_encoded_bytes());
            let host = if host.is_empty() { "node".into() } else { host };
            settings.node = Some(format!("{host}-{}", hex::encode(&hash[..3])));
        }
        settings
    }

    /// Token profiles per tenant, for the vault.
    pub fn tenant_profiles(
        &self,
    ) -> std::collections::HashMap<TenantId, crate::domain::TokenProfile> {
        self.tenants
            .iter()
            .map(|(name, t)| (name.clone(), t.token_profile))
            .collect()
    }

    /// Token modes per tenant, for the vault.
    pub fn tenant_modes(&self) -> std::collections::HashMap<TenantId, TokenMode> {
        self.tenants
            .iter()
            .map(|(name, t)| (name.clone(), t.token_mode))
            .collect()
    }
}

/// Err naming `field` unless `p` is a file.
fn existing_file(field: &str, p: &Path) -> Result<(), ConfigError> {
    if p.is_file() {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("file not found: {}", p.display()),
        ))
    }
}
