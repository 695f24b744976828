//! The `[api]` and `[ops]` sections: where the mTLS API and the ops
//! listener bind, the API's TLS files and CRLs, the ops listener's own cap
//! and drain delay.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// Every this many seconds, read `cert`, `key`, `client_ca` and `crls`
    /// and reload as on SIGHUP once they have changed and then stayed the
    /// same for one more check (a certificate renewed by cert-manager, a
    /// key copied by `cardvault copy-secrets`). 0, the default: on SIGHUP
    /// only.
    #[serde(default)]
    pub tls_check_s: u64,
}

/// The ops listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OpsConfig {
    /// Address to listen on (keep it on loopback or a management network).
    #[serde(default = "default_ops_listen")]
    pub listen: SocketAddr,
    /// Concurrent connections on the ops listener (its own cap: a flood of
    /// scrapers or idle sockets cannot take the API's slots or file
    /// descriptors).
    #[serde(default = "default_ops_max_connections")]
    pub max_connections: std::num::NonZeroUsize,
    /// On SIGTERM, how long `/readyz` answers 503 while the API keeps
    /// serving, before the listeners close (`drain_delay_ms`; 0 closes at
    /// once). Give load balancers their health-check interval or more.
    #[serde(default, rename = "drain_delay_ms", with = "millis")]
    pub drain_delay: std::time::Duration,
}

/// A duration written as whole milliseconds.
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

fn default_ops_max_connections() -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(32).unwrap_or(std::num::NonZeroUsize::MIN)
}

impl Default for OpsConfig {
    fn default() -> OpsConfig {
        OpsConfig {
            listen: default_ops_listen(),
            max_connections: default_ops_max_connections(),
            drain_delay: std::time::Duration::ZERO,
        }
    }
}

fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}

fn default_ops_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}
