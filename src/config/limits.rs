//! The `[limits]` section: connections, timeouts, body and batch sizes and
//! per-principal rate limits. Every number is non-zero by type, so a 0 in
//! the file is refused at load, naming the field.

use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};

use serde::{Deserialize, Serialize};

/// Limits and timeouts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Concurrent connections accepted on the API listener.
    pub max_connections: NonZeroUsize,
    /// Concurrent API connections one principal may hold.
    pub max_connections_per_principal: NonZeroUsize,
    /// Concurrent API connections that principals with no role (not in the
    /// config, or configured without roles) may hold, all of them together:
    /// they can do nothing but be refused, so they get a small share.
    pub max_connections_roleless: NonZeroUsize,
    /// A connection with no request in flight for this long is closed
    /// (before its first request and between requests, HTTP/1 and HTTP/2).
    pub idle_timeout_ms: NonZeroU64,
    /// HTTP/2 keep-alive: a PING after this much silence; a peer that does
    /// not answer within the same time is dropped.
    pub http2_keepalive_ms: NonZeroU64,
    /// Time allowed for a TLS handshake.
    pub handshake_timeout_ms: NonZeroU64,
    /// Time allowed for reading request headers.
    pub header_timeout_ms: NonZeroU64,
    /// Time allowed for a whole request.
    pub request_timeout_ms: NonZeroU64,
    /// Largest body of a single-item request.
    pub body_limit_bytes: NonZeroUsize,
    /// Largest body of a batch request.
    pub batch_body_limit_bytes: NonZeroUsize,
    /// Most items in one batch.
    pub max_batch: NonZeroUsize,
    /// Request bodies held in memory at once, all connections together
    /// (at least `batch_body_limit_bytes`); a request that finds it spent
    /// waits up to 2 s, then gets 503 `unavailable`.
    pub body_budget_bytes: NonZeroUsize,
    /// Per-principal token bucket for tokenization, in items (a batch of N
    /// costs N).
    pub tokenize_rate: RateLimit,
    /// Per-principal token bucket for detokenization, in items.
    pub detokenize_rate: RateLimit,
    /// Per-principal token bucket for metadata reads and deletes.
    pub metadata_rate: RateLimit,
}

/// A token bucket: `per_second` sustained, up to `burst` at once.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained items per second.
    pub per_second: NonZeroU32,
    /// Bucket size (at least the largest batch).
    pub burst: NonZeroU32,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_connections: size(1024),
            max_connections_per_principal: size(512),
            max_connections_roleless: size(16),
            idle_timeout_ms: millis(30_000),
            http2_keepalive_ms: millis(20_000),
            handshake_timeout_ms: millis(5_000),
            header_timeout_ms: millis(10_000),
            request_timeout_ms: millis(30_000),
            body_limit_bytes: size(1 << 20),
            batch_body_limit_bytes: size(8 << 20),
            max_batch: size(10_000),
            body_budget_bytes: size(32 << 20),
            tokenize_rate: RateLimit::new(100_000, 200_000),
            detokenize_rate: RateLimit::new(50_000, 100_000),
            metadata_rate: RateLimit::new(5_000, 10_000),
        }
    }
}

impl RateLimit {
    /// `per_second` sustained, `burst` at once (a 0 becomes 1).
    pub fn new(per_second: u32, burst: u32) -> RateLimit {
        let nz = |n| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        RateLimit {
            per_second: nz(per_second),
            burst: nz(burst),
        }
    }
}

fn size(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

fn millis(n: u64) -> NonZeroU64 {
    NonZeroU64::new(n).unwrap_or(NonZeroU64::MIN)
}
