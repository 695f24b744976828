//! The `[collect]` section: the public listener of the hosted card fields
//! (docs/collect.md) — where it binds, the URL shoppers' browsers reach it
//! at, its server certificate (no client certificate), its own connection,
//! header, body, idle and request bounds, and the card-testing guard's
//! limits. Absent: no public listener (`serve --dev` adds one).

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The hosted card fields' public listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CollectConfig {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The URL shoppers' browsers reach the listener at (scheme, host and
    /// port only: `https://pay.shop.example`); frame URLs start with it.
    /// Absent: `https://localhost:PORT` for a loopback address, else
    /// `https://ADDR:PORT`, with the port really bound.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Server certificate chain, PEM (a public CA's, in production).
    pub cert_file: PathBuf,
    /// Its private key, PEM.
    pub key_file: PathBuf,
    /// Accept `http://127.0.0.1`, `http://localhost` and `http://[::1]`
    /// page origins besides `https://` ones (`serve --dev` sets it).
    #[serde(default)]
    pub allow_loopback_http: bool,
    /// Bounds of the listener and the card-testing guard
    /// (`[collect.limits]`).
    #[serde(default)]
    pub limits: CollectLimits,
    /// Card number prefixes (4 to 8 digits) whose cards are refused
    /// (`card_refused`, audited and counted).
    #[serde(default)]
    pub blocked_bins: Vec<String>,
}

/// The public listener's bounds and the card-testing guard's limits, every
/// number non-zero by type.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectLimits {
    /// Concurrent connections on the public listener (its own slots: a
    /// flood here takes none of the mTLS API's).
    pub max_connections: NonZeroUsize,
    /// Concurrent connections from one IP address.
    pub max_connections_per_ip: NonZeroUsize,
    /// Time allowed for a TLS handshake (waiting for the handshake rate
    /// included).
    pub handshake_timeout_ms: NonZeroU64,
    /// TLS handshakes per second the listener starts at most (the burst is
    /// the same): the CPU a flood of new connections can take is bounded;
    /// a connection beyond it waits, within the handshake timeout, then is
    /// closed.
    pub handshakes_per_second: NonZeroU32,
    /// Time allowed for the first request's head after the handshake.
    pub header_timeout_ms: NonZeroU64,
    /// A connection with no request in flight this long is closed.
    pub idle_timeout_ms: NonZeroU64,
    /// Time allowed for a whole request.
    pub request_timeout_ms: NonZeroU64,
    /// Largest submit body.
    pub max_body_bytes: NonZeroUsize,
    /// Submits one IP address may make per minute (every session).
    pub submits_per_ip_per_minute: NonZeroU32,
    /// Submits one session may take in all (refused or not).
    pub submits_per_session: NonZeroU32,
    /// Sessions one tenant may create per minute.
    pub sessions_per_tenant_per_minute: NonZeroU32,
    /// The velocity alert: the same card submitted through more than this
    /// many sessions within an hour raises `card_testing`.
    pub sessions_per_card_per_hour: NonZeroU32,
    /// `Strict-Transport-Security: max-age` on every answer.
    pub hsts_max_age_s: NonZeroU64,
}

impl Default for CollectLimits {
    fn default() -> CollectLimits {
        let n = |v: u32| NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN);
        let z = |v: usize| NonZeroUsize::new(v).unwrap_or(NonZeroUsize::MIN);
        let ms = |v: u64| NonZeroU64::new(v).unwrap_or(NonZeroU64::MIN);
        CollectLimits {
            max_connections: z(1024),
            max_connections_per_ip: z(64),
            handshake_timeout_ms: ms(5_000),
            handshakes_per_second: n(1000),
            header_timeout_ms: ms(5_000),
            idle_timeout_ms: ms(30_000),
            request_timeout_ms: ms(10_000),
            max_body_bytes: z(4096),
            submits_per_ip_per_minute: n(30),
            submits_per_session: n(10),
            sessions_per_tenant_per_minute: n(600),
            sessions_per_card_per_hour: n(3),
            hsts_max_age_s: ms(31_536_000),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8444))
}

impl CollectConfig {
    /// The listener `serve --dev` adds: the dev server certificate, loopback
    /// page origins over plain HTTP allowed.
    pub fn dev(cert_file: PathBuf, key_file: PathBuf) -> CollectConfig {
        CollectConfig {
            listen: default_listen(),
            public_url: None,
            cert_file,
            key_file,
            allow_loopback_http: true,
            limits: CollectLimits::default(),
            blocked_bins: Vec::new(),
        }
    }

    /// The public URL for a listener bound at `bound`: the configured one,
    /// else derived from the address (see [`CollectConfig::public_url`]).
    pub fn public_url_for(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None if bound.ip().is_loopback() => format!("https://localhost:{}", bound.port()),
            None => format!("https://{bound}"),
        }
    }

    /// What types cannot check: an `https://` public URL with a host and
    /// nothing after it, and block-list entries of 4 to 8 digits.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(url) = &self.public_url {
            let rest = url.trim_end_matches('/').strip_prefix("https://");
            let ok = rest.is_some_and(|host| {
                !host.is_empty()
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            });
            if !ok {
                return Err((
                    "collect.public_url",
                    "must be https://HOST[:PORT] with nothing after it".into(),
                ));
            }
        }
        for bin in &self.blocked_bins {
            if !(4..=8).contains(&bin.len()) || !bin.bytes().all(|b| b.is_ascii_digit()) {
                return Err((
                    "collect.blocked_bins",
                    "each entry must be 4 to 8 digits".into(),
                ));
            }
        }
        Ok(())
    }
}
