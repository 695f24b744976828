//! `[proxy.routes."NAME"]`: the reveal proxy's upstreams. A payment
//! connector posts its request to `/v1/proxy/NAME` with tokens where the
//! card numbers go; the vault replaces the tokens at the `reveal` JSON
//! Pointers with PANs (and puts a held security code at `cvc_at`) and
//! forwards the request to `upstream` over TLS, trusting `ca_file` and
//! presenting `client_cert`/`client_key` when given.

use std::collections::BTreeMap;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The `[proxy]` section.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Routes by name (`POST /v1/proxy/{name}`).
    #[serde(default)]
    pub routes: BTreeMap<String, ProxyRoute>,
}

/// One upstream.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyRoute {
    /// Where requests go: `https://HOST[:PORT]/PATH`.
    pub upstream: String,
    /// CA bundle the upstream's certificate must chain to.
    pub ca_file: PathBuf,
    /// Client certificate presented to the upstream (with `client_key`).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// Its private key.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Principals that may use the route (they need role `detokenize`).
    pub allowed_principals: Vec<String>,
    /// JSON Pointers (RFC 6901) to the fields whose tokens become PANs.
    pub reveal: Vec<String>,
    /// A JSON Pointer where the security code held for the first revealed
    /// token is put (`POST /v1/tokens/{token}/cvc`), if one is held.
    #[serde(default)]
    pub cvc_at: Option<String>,
    /// Longest wait for the upstream: connect, send and answer.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: NonZeroU64,
    /// Largest upstream answer passed back.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: NonZeroUsize,
    /// Request headers forwarded besides `content-type` (lower case).
    #[serde(default = "default_forward_headers")]
    pub forward_headers: Vec<String>,
}

fn default_timeout_ms() -> NonZeroU64 {
    NonZeroU64::new(10_000).unwrap_or(NonZeroU64::MIN)
}

fn default_max_response_bytes() -> NonZeroUsize {
    NonZeroUsize::new(1 << 20).unwrap_or(NonZeroUsize::MIN)
}

fn default_forward_headers() -> Vec<String> {
    vec!["accept".into(), "idempotency-key".into()]
}

/// Headers never forwarded whatever the allow-list says: they describe the
/// vault's connection, or carry credentials meant for the vault.
const NEVER_FORWARDED: [&str; 8] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "authorization",
    "cookie",
    "te",
    "upgrade",
];

impl ProxyRoute {
    /// Checks one route: a safe name, an https upstream, pointers, the
    /// certificate pair, the header allow-list.
    pub fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let field = |f: &str| format!("proxy.routes.{name}.{f}");
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(ConfigError::new(
                format!("proxy.routes.{name}"),
                "a route name is 1-64 letters, digits, '-', '_' or '.'",
            ));
        }
        let uri: hyper::Uri = self
            .upstream
            .parse()
            .map_err(|_| ConfigError::new(field("upstream"), "not a URL"))?;
        if uri.scheme_str() != Some("https") || uri.host().is_none() {
            return Err(ConfigError::new(
                field("upstream"),
                "must be https://HOST[:PORT]/PATH",
            ));
        }
        if self.reveal.is_empty() {
            return Err(ConfigError::new(
                field("reveal"),
                "name at least one JSON Pointer",
            ));
        }
        for pointer in self.reveal.iter().chain(self.cvc_at.iter()) {
            if !pointer.starts_with('/') {
                return Err(ConfigError::new(
                    field("reveal"),
                    format!("{pointer:?} is not a JSON Pointer (it starts with '/')"),
                ));
            }
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(ConfigError::new(
                field("client_cert"),
                "give client_cert and client_key together",
            ));
        }
        if self.allowed_principals.is_empty() {
            return Err(ConfigError::new(
                field("allowed_principals"),
                "name at least one principal",
            ));
        }
        if let Some(h) = self
            .forward_headers
            .iter()
            .find(|h| NEVER_FORWARDED.contains(&h.to_ascii_lowercase().as_str()))
        {
            return Err(ConfigError::new(
                field("forward_headers"),
                format!("{h:?} is never forwarded"),
            ));
        }
        Ok(())
    }
}
