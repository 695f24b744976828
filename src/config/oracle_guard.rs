//! The `[oracle_guard]` section: how many distinct cards of one token
//! group (BIN, last 4, length — or last 4 and length where tokens keep no
//! BIN) a principal, and a tenant as a whole, may present within the
//! window before tokenize, lookup, import and the hosted-field submit
//! refuse that group (docs/service.md, "The oracle guard"). Per-tenant
//! overrides live in `[tenants."NAME".oracle_guard]`.

use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};

use serde::{Deserialize, Serialize};

/// The guard's settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OracleGuardConfig {
    /// Off only for benchmarks that compare with and without it.
    pub enabled: bool,
    /// The sliding window, in seconds (60 to 86400; default one hour).
    pub window_secs: NonZeroU64,
    /// One principal (or one hosted-field session), groups that carry a BIN.
    pub principal_max: NonZeroU32,
    /// All principals and sessions of one tenant, groups that carry a BIN.
    pub tenant_max: NonZeroU32,
    /// One principal, groups of tokens that keep only the last 4.
    pub last4_principal_max: NonZeroU32,
    /// One tenant, groups of tokens that keep only the last 4.
    pub last4_tenant_max: NonZeroU32,
    /// Most (scope, group) entries tracked, both tiers together; beyond it
    /// idle groups, then the groups with the fewest cards, are forgotten.
    pub max_groups: NonZeroUsize,
    /// Most card hashes tracked, both tiers together.
    pub max_cards: NonZeroUsize,
}

/// Distinct cards allowed per group and window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardThresholds {
    /// One principal (or one hosted-field session), groups that carry a BIN.
    pub principal_max: NonZeroU32,
    /// All principals and sessions of one tenant, groups that carry a BIN.
    pub tenant_max: NonZeroU32,
    /// One principal, groups of tokens that keep only the last 4.
    pub last4_principal_max: NonZeroU32,
    /// One tenant, groups of tokens that keep only the last 4.
    pub last4_tenant_max: NonZeroU32,
}

/// A tenant's overrides of [`GuardThresholds`]; an absent field keeps the
/// vault-wide value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuardOverrides {
    /// See [`GuardThresholds::principal_max`].
    pub principal_max: Option<NonZeroU32>,
    /// See [`GuardThresholds::tenant_max`].
    pub tenant_max: Option<NonZeroU32>,
    /// See [`GuardThresholds::last4_principal_max`].
    pub last4_principal_max: Option<NonZeroU32>,
    /// See [`GuardThresholds::last4_tenant_max`].
    pub last4_tenant_max: Option<NonZeroU32>,
}

impl GuardThresholds {
    /// These thresholds with `overrides` applied.
    pub fn with(self, overrides: &GuardOverrides) -> GuardThresholds {
        GuardThresholds {
            principal_max: overrides.principal_max.unwrap_or(self.principal_max),
            tenant_max: overrides.tenant_max.unwrap_or(self.tenant_max),
            last4_principal_max: overrides
                .last4_principal_max
                .unwrap_or(self.last4_principal_max),
            last4_tenant_max: overrides.last4_tenant_max.unwrap_or(self.last4_tenant_max),
        }
    }
}

impl Default for GuardThresholds {
    /// 32 / 64 for BIN groups: a principal presenting 100,000 distinct
    /// cards an hour, 5 % of them from one BIN, sees 0.5 cards per BIN +
    /// last-4 group on average and rarely more than 6; even two million an
    /// hour stay under 32 in every group. Last-4 groups hold every BIN at
    /// once (10,000 per length), so 256 / 512 — while their candidate space
    /// is 10^7 to 10^14 numbers, not 10^5.
    fn default() -> GuardThresholds {
        let n = |v| NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN);
        GuardThresholds {
            principal_max: n(32),
            tenant_max: n(64),
            last4_principal_max: n(256),
            last4_tenant_max: n(512),
        }
    }
}

impl OracleGuardConfig {
    /// The vault-wide thresholds.
    pub fn thresholds(&self) -> GuardThresholds {
        GuardThresholds {
            principal_max: self.principal_max,
            tenant_max: self.tenant_max,
            last4_principal_max: self.last4_principal_max,
            last4_tenant_max: self.last4_tenant_max,
        }
    }
}

impl Default for OracleGuardConfig {
    fn default() -> OracleGuardConfig {
        let t = GuardThresholds::default();
        OracleGuardConfig {
            enabled: true,
            window_secs: NonZeroU64::new(3600).unwrap_or(NonZeroU64::MIN),
            principal_max: t.principal_max,
            tenant_max: t.tenant_max,
            last4_principal_max: t.last4_principal_max,
            last4_tenant_max: t.last4_tenant_max,
            max_groups: NonZeroUsize::new(1 << 18).unwrap_or(NonZeroUsize::MIN),
            max_cards: NonZeroUsize::new(1 << 20).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_with_one_field_keeps_every_other_default() {
        let config: OracleGuardConfig =
            parse("enabled = false\nprincipal_max = 8\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(!config.enabled);
        assert_eq!(config.thresholds().principal_max.get(), 8);
        assert_eq!(config.thresholds().tenant_max.get(), 64);
        assert_eq!(config.window_secs.get(), 3600);
        assert!(
            parse("principal_maxx = 8\n").is_err(),
            "an unknown field is refused"
        );
    }

    fn parse(text: &str) -> Result<OracleGuardConfig, Box<figment::Error>> {
        use figment::providers::{Format, Toml};
        figment::Figment::new()
            .merge(Toml::string(text))
            .extract()
            .map_err(Box::new)
    }
}
