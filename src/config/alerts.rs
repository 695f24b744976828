//! The `[alerts]` section: the monitoring rules' thresholds.

use std::num::NonZeroU64;

use serde::{Deserialize, Serialize};

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
    /// More than `max` metadata reads and deletes by one principal within
    /// `window_secs` (a `read` principal walking a BIN + last-4 bucket).
    pub metadata_burst: BurstRule,
    /// After a detokenize alert (burst or outside hours), refuse that
    /// principal's detokenizations until an admin clears it.
    pub block_detokenize_on_alert: bool,
    /// After the oracle guard refuses a principal (`card_enumeration`),
    /// refuse that principal's tokenizations, lookups and imports until an
    /// admin clears it.
    pub block_on_enumeration: bool,
}

impl Default for AlertsConfig {
    fn default() -> AlertsConfig {
        AlertsConfig {
            detokenize_burst: BurstRule::new(10_000, 60),
            handshake_failure_burst: BurstRule::new(50, 60),
            metadata_burst: BurstRule::new(20_000, 60),
            block_detokenize_on_alert: false,
            block_on_enumeration: false,
        }
    }
}

/// "More than `max` within `window_secs`".
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BurstRule {
    /// Most events allowed in the window.
    pub max: NonZeroU64,
    /// Window length (default 60).
    #[serde(default = "default_window_secs")]
    pub window_secs: NonZeroU64,
}

impl BurstRule {
    /// More than `max` within `window_secs` (a 0 becomes 1).
    pub fn new(max: u64, window_secs: u64) -> BurstRule {
        let nz = |n| NonZeroU64::new(n).unwrap_or(NonZeroU64::MIN);
        BurstRule {
            max: nz(max),
            window_secs: nz(window_secs),
        }
    }
}

fn default_window_secs() -> NonZeroU64 {
    BurstRule::new(1, 60).window_secs
}
