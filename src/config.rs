//! The typed configuration of `cardvault serve`: one TOML file, overridable
//! by environment variables of the form `CARDVAULT_<SECTION>__<FIELD>` (for
//! example `CARDVAULT_API__LISTEN=0.0.0.0:8443`). Relative paths are resolved
//! against the config file's directory. Validation errors name the field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

use crate::domain::TenantId;
use crate::vault::TokenMode;

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

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `POST /v1/tokenize`, `POST /v1/tokenize/batch`.
    Tokenize,
    /// `POST /v1/detokenize`, `POST /v1/detokenize/batch`.
    Detokenize,
    /// `GET /v1/tokens/{token}`.
    Read,
    /// `DELETE /v1/tokens/{token}`.
    Delete,
    /// Administrative operations (key rotation, alert clearing).
    Admin,
}

impl Role {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Tokenize => "tokenize",
            Role::Detokenize => "detokenize",
            Role::Read => "read",
            Role::Delete => "delete",
            Role::Admin => "admin",
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
    /// Database and KEK.
    pub storage: StorageConfig,
    /// Limits and timeouts.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Client principals (certificate identity) → tenant and roles.
    #[serde(default)]
    pub principals: BTreeMap<String, PrincipalConfig>,
    /// Per-tenant settings.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
    /// The audit trail.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Monitoring rules.
    #[serde(default)]
    pub alerts: AlertsConfig,
}

/// The audit trail.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Directory of the trail (segments and the wrapped audit key).
    pub dir: PathBuf,
    /// Start a new segment at this size.
    pub max_file_bytes: u64,
    /// Start a new segment at this age.
    pub rotate_secs: u64,
    /// Longest wait before a non-durable entry is synced.
    pub sync_interval_ms: u64,
    /// Mirror each entry to syslog (RFC 5424) over TCP: `host:port`.
    pub syslog_tcp: Option<String>,
    /// Mirror each entry to a Unix datagram syslog socket (`/dev/log`).
    pub syslog_unix: Option<PathBuf>,
}

impl Default for AuditConfig {
    /// The writer's own defaults, so there is one place that sets them.
    fn default() -> AuditConfig {
        let writer = crate::audit::AuditSettings::new(PathBuf::from("audit"));
        AuditConfig {
            dir: writer.dir,
            max_file_bytes: writer.max_file_bytes,
            rotate_secs: writer.rotate_after.as_secs(),
            sync_interval_ms: u64::try_from(writer.sync_interval.as_millis()).unwrap_or(u64::MAX),
            syslog_tcp: None,
            syslog_unix: None,
        }
    }
}

impl AuditConfig {
    /// The writer's settings.
    pub fn settings(&self) -> crate::audit::AuditSettings {
        use crate::audit::syslog::SyslogTarget;
        let mut settings = crate::audit::AuditSettings::new(self.dir.clone());
        settings.max_file_bytes = self.max_file_bytes;
        settings.rotate_after = std::time::Duration::from_secs(self.rotate_secs);
        settings.sync_interval = std::time::Duration::from_millis(self.sync_interval_ms);
        settings.syslog = match (&self.syslog_tcp, &self.syslog_unix) {
            (Some(addr), _) => Some(SyslogTarget::Tcp(addr.clone())),
            (None, Some(path)) => Some(SyslogTarget::Unix(path.clone())),
            (None, None) => None,
        };
        settings
    }
}

/// Monitoring rules. A rule that fires logs a `warn` line with an `alert`
/// field, counts `cardvault_alerts_total{rule}` and writes an `alert`
/// audit event.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// More than `max` detokenized items by one principal within `window_secs`.
    pub detokenize_burst: BurstRule,
    /// More than `max` failed TLS handshakes from one IP address within `window_secs`.
    pub handshake_failure_burst: BurstRule,
    /// After a detokenize alert (burst or outside hours), refuse that
    /// principal's detokenizations until an admin clears it.
    pub block_detokenize_on_alert: bool,
}

impl Default for AlertsConfig {
    fn default() -> AlertsConfig {
        AlertsConfig {
            detokenize_burst: BurstRule {
                max: 10_000,
                window_secs: 60,
            },
            handshake_failure_burst: BurstRule {
                max: 50,
                window_secs: 60,
            },
            block_detokenize_on_alert: false,
        }
    }
}

/// "More than `max` within `window_secs`".
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BurstRule {
    /// Most events allowed in the window.
    pub max: u64,
    /// Window length (default 60).
    #[serde(default = "default_window_secs")]
    pub window_secs: u64,
}

fn default_window_secs() -> u64 {
    60
}

/// The API listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on.
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    /// Server certificate chain, PEM.
    pub cert: PathBuf,
    /// Server private key, PEM (must not be readable by group/others).
    pub key: PathBuf,
    /// CA bundle that client certificates must chain to, PEM.
    pub client_ca: PathBuf,
    /// Certificate revocation lists, PEM.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// Also accept TLS 1.2 (TLS 1.3 only by default).
    #[serde(default)]
    pub allow_tls12: bool,
}

/// The ops listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OpsConfig {
    /// Address to listen on (keep it on loopback or a management network).
    #[serde(default = "default_ops_listen")]
    pub listen: SocketAddr,
}

impl Default for OpsConfig {
    fn default() -> OpsConfig {
        OpsConfig {
            listen: default_ops_listen(),
        }
    }
}

/// Storage.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// RocksDB directory.
    pub data_dir: PathBuf,
    /// KEK file (32 bytes, mode 0600).
    pub key_file: PathBuf,
    /// Refuse writes (503) while the data directory's filesystem has less
    /// free space than this, so RocksDB never meets a full disk.
    #[serde(default = "default_min_free_bytes")]
    pub min_free_bytes: u64,
}

fn default_min_free_bytes() -> u64 {
    crate::store::StoreOptions::default().min_free_bytes
}

/// Limits and timeouts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Concurrent connections accepted on the API listener.
    pub max_connections: usize,
    /// Time allowed for a TLS handshake.
    pub handshake_timeout_ms: u64,
    /// Time allowed for reading request headers.
    pub header_timeout_ms: u64,
    /// Time allowed for a whole request.
    pub request_timeout_ms: u64,
    /// Largest body of a single-item request.
    pub body_limit_bytes: usize,
    /// Largest body of a batch request.
    pub batch_body_limit_bytes: usize,
    /// Most items in one batch.
    pub max_batch: usize,
    /// Per-principal token bucket for tokenization, in items (a batch of N
    /// costs N).
    pub tokenize_rate: RateLimit,
    /// Per-principal token bucket for detokenization, in items.
    pub detokenize_rate: RateLimit,
}

/// A token bucket: `per_second` sustained, up to `burst` at once.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained items per second.
    pub per_second: u32,
    /// Bucket size (at least the largest batch).
    pub burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_connections: 1024,
            handshake_timeout_ms: 5_000,
            header_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            body_limit_bytes: 1 << 20,
            batch_body_limit_bytes: 8 << 20,
            max_batch: 10_000,
            tokenize_rate: RateLimit {
                per_second: 100_000,
                burst: 200_000,
            },
            detokenize_rate: RateLimit {
                per_second: 50_000,
                burst: 100_000,
            },
        }
    }
}

/// One principal's access.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    /// The tenant it acts in.
    pub tenant: String,
    /// What it may do.
    pub roles: Vec<Role>,
    /// UTC hours in which it is expected to detokenize, `"HH:MM-HH:MM"`
    /// (may wrap midnight); a detokenization outside them raises an alert.
    #[serde(default)]
    pub detokenize_hours_utc: Option<String>,
}

/// A daily window of UTC minutes, `[start, end)`, possibly wrapping midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoursUtc {
    start: u16,
    end: u16,
}

impl HoursUtc {
    /// Parses `"HH:MM-HH:MM"`.
    pub fn parse(text: &str) -> Option<HoursUtc> {
        let minutes = |hm: &str| {
            let (h, m) = hm.trim().split_once(':')?;
            let (h, m) = (h.parse::<u16>().ok()?, m.parse::<u16>().ok()?);
            (h < 24 && m < 60 && hm.trim().len() == 5).then_some(h * 60 + m)
        };
        let (start, end) = text.split_once('-')?;
        let (start, end) = (minutes(start)?, minutes(end)?);
        (start != end).then_some(HoursUtc { start, end })
    }

    /// Whether `minute_of_day` (0..1440, UTC) falls inside.
    pub fn contains(&self, minute_of_day: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute_of_day)
        } else {
            minute_of_day >= self.start || minute_of_day < self.end
        }
    }
}

/// One tenant's settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// `deterministic` (default) or `random`.
    #[serde(default)]
    pub token_mode: TokenModeConfig,
}

/// Token mode as written in the config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenModeConfig {
    /// Same PAN, same token.
    #[default]
    Deterministic,
    /// New token per call.
    Random,
}

impl From<TokenModeConfig> for TokenMode {
    fn from(mode: TokenModeConfig) -> TokenMode {
        match mode {
            TokenModeConfig::Deterministic => TokenMode::Deterministic,
            TokenModeConfig::Random => TokenMode::Random,
        }
    }
}

fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}

fn default_ops_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
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
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
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
        fix(&mut self.storage.key_file);
        fix(&mut self.audit.dir);
    }

    /// Checks what types cannot: files exist, names parse, limits are sane.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let file = |field: &str, p: &Path| {
            if p.is_file() {
                Ok(())
            } else {
                Err(ConfigError::new(
                    field,
                    format!("file not found: {}", p.display()),
                ))
            }
        };
        file("api.cert", &self.api.cert)?;
        file("api.key", &self.api.key)?;
        file("api.client_ca", &self.api.client_ca)?;
        for (i, crl) in self.api.crls.iter().enumerate() {
            file(&format!("api.crls[{i}]"), crl)?;
        }
        file("storage.key_file", &self.storage.key_file)?;
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
            TenantId::parse(&p.tenant).map_err(|e| {
                ConfigError::new(format!("principals.{name}.tenant"), e.to_string())
            })?;
            if p.roles.is_empty() {
                return Err(ConfigError::new(
                    format!("principals.{name}.roles"),
                    "no roles",
                ));
            }
            if let Some(hours) = &p.detokenize_hours_utc
                && HoursUtc::parse(hours).is_none()
            {
                return Err(ConfigError::new(
                    format!("principals.{name}.detokenize_hours_utc"),
                    "must be \"HH:MM-HH:MM\" (UTC, start and end differ)",
                ));
            }
        }
        for name in self.tenants.keys() {
            TenantId::parse(name)
                .map_err(|e| ConfigError::new(format!("tenants.{name}"), e.to_string()))?;
        }
        let l = &self.limits;
        let positive = [
            ("limits.max_connections", l.max_connections as u64),
            ("limits.handshake_timeout_ms", l.handshake_timeout_ms),
            ("limits.header_timeout_ms", l.header_timeout_ms),
            ("limits.request_timeout_ms", l.request_timeout_ms),
            ("limits.body_limit_bytes", l.body_limit_bytes as u64),
            (
                "limits.batch_body_limit_bytes",
                l.batch_body_limit_bytes as u64,
            ),
            ("limits.max_batch", l.max_batch as u64),
            (
                "limits.tokenize_rate.per_second",
                u64::from(l.tokenize_rate.per_second),
            ),
            (
                "limits.tokenize_rate.burst",
                u64::from(l.tokenize_rate.burst),
            ),
            (
                "limits.detokenize_rate.per_second",
                u64::from(l.detokenize_rate.per_second),
            ),
            (
                "limits.detokenize_rate.burst",
                u64::from(l.detokenize_rate.burst),
            ),
            ("audit.max_file_bytes", self.audit.max_file_bytes),
            ("audit.rotate_secs", self.audit.rotate_secs),
            ("audit.sync_interval_ms", self.audit.sync_interval_ms),
            (
                "alerts.detokenize_burst.max",
                self.alerts.detokenize_burst.max,
            ),
            (
                "alerts.detokenize_burst.window_secs",
                self.alerts.detokenize_burst.window_secs,
            ),
            (
                "alerts.handshake_failure_burst.max",
                self.alerts.handshake_failure_burst.max,
            ),
            (
                "alerts.handshake_failure_burst.window_secs",
                self.alerts.handshake_failure_burst.window_secs,
            ),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(field, "must be greater than 0"));
            }
        }
        for (field, rate) in [
            ("limits.tokenize_rate.burst", l.tokenize_rate),
            ("limits.detokenize_rate.burst", l.detokenize_rate),
        ] {
            if (rate.burst as usize) < l.max_batch {
                return Err(ConfigError::new(
                    field,
                    "must be at least limits.max_batch, or a full batch could never pass",
                ));
            }
        }
        Ok(())
    }

    /// Token modes per tenant, for the vault.
    pub fn tenant_modes(&self) -> std::collections::HashMap<TenantId, TokenMode> {
        self.tenants
            .iter()
            .filter_map(|(name, t)| Some((TenantId::parse(name).ok()?, t.token_mode.into())))
            .collect()
    }
}
