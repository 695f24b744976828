//! What every API handler shares: the vault core, the limits, the audit
//! trail, the alert monitor, the rate limits and the body budget.

use std::sync::Arc;

use super::budget::BodyBudget;
use super::custody::Custody;
use super::monitor::Monitor;
use super::ratelimit::RateLimits;
use super::reload::Reloadable;
use super::reseal::Reseals;
use crate::audit::AuditLog;
use crate::config::LimitsConfig;
use crate::vault::Vault;
use crate::vault::cvc::CvcHold;

/// The handlers' shared state.
pub struct AppState {
    /// The vault core.
    pub vault: Arc<Vault>,
    /// Key custody: the seal state and the custodians' shares.
    pub custody: Arc<Custody>,
    /// Re-encryption jobs.
    pub reseals: Arc<Reseals>,
    /// Destructive requests waiting for a second admin.
    pub approvals: super::approvals::Approvals,
    /// The reveal proxy's routes.
    pub proxy: std::collections::HashMap<String, super::upstream::ProxyUpstream>,
    /// Exports a second admin approved, until the admin who asked fetches them.
    pub exports: super::approvals::GrantedExports,
    /// Key lifecycle settings.
    pub keys: crate::config::KeysConfig,
    /// Body and batch limits.
    pub limits: LimitsConfig,
    /// The audit trail.
    pub audit: AuditLog,
    /// The principals table in force (replaced by a reload).
    pub principals: Arc<Reloadable>,
    /// Alert rules and blocks.
    pub monitor: Arc<Monitor>,
    /// Per-principal rate limits.
    pub rates: RateLimits,
    /// Request bodies held in memory, all requests together.
    pub bodies: BodyBudget,
    /// Card security codes held in memory only.
    pub cvcs: Arc<CvcHold>,
    /// Longest time a security code may be held.
    pub cvc_max_ttl: std::time::Duration,
}
