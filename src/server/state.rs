//! What every API handler shares: the vault core, the limits, the audit
//! trail, the alert monitor, the rate limits and the body budget.

use std::sync::Arc;

use super::budget::BodyBudget;
use super::error::ApiError;
use super::identity::Caller;
use super::monitor::Monitor;
use super::ratelimit::RateLimits;
use super::reload::Reloadable;
use crate::audit::{AuditLog, Event};
use crate::config::LimitsConfig;
use crate::domain::{Pan, TenantId};
use crate::runtime::custody::Custody;
use crate::runtime::reencrypt::Reseals;
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
    pub approvals: crate::runtime::approvals::Approvals,
    /// The reveal proxy's routes.
    pub proxy: std::collections::HashMap<String, crate::runtime::upstream::ProxyUpstream>,
    /// Exports a second admin approved, until the admin who asked fetches them.
    pub exports: crate::runtime::approvals::GrantedExports,
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
    /// Distinct cards per token group, per principal and tenant.
    pub guard: Arc<crate::runtime::oracle_guard::OracleGuard>,
    /// `[compat] lookup_via_tokenize_or_read`.
    pub lookup_compat: bool,
    /// The hosted card fields, when `[collect]` is configured.
    pub collect: Option<Arc<crate::runtime::collect::Collect>>,
    /// The payment pages a watcher reports on.
    pub watched: crate::runtime::watched::WatchedPages,
    /// Where `POST /v1/admin/backup` writes (none: a PostgreSQL store),
    /// and the free space it must leave there (`[storage] min_free_bytes`).
    pub backup_dir: Option<(std::path::PathBuf, u64)>,
    /// Held while a backup is taken: one at a time.
    pub backup_running: tokio::sync::Mutex<()>,
}

impl AppState {
    /// The oracle guard's admission of `pans`, presented by `caller` in
    /// `tenant`, before any token is looked up or created: refused while
    /// an enumeration alert blocks the caller (403), or when a token group
    /// would go over its threshold (429 `enumeration_suspected`, the group
    /// and tier in `event`'s detail, the alert on its first refusal).
    pub fn admit_cards(
        &self,
        caller: &Caller,
        tenant: &TenantId,
        pans: &[&Pan],
        event: &mut Event,
    ) -> Result<(), ApiError> {
        if self.monitor.check_tokenize(caller).is_err() {
            event.detail =
                Some("blocked by a card_enumeration alert until an admin clears it".into());
            return Err(ApiError::Forbidden);
        }
        let profile = self.vault.profile(tenant);
        self.guard
            .check(tenant, caller.principal.as_str(), profile, pans)
            .map_err(|refusal| {
                let group = refusal.group.to_string();
                let tier = refusal.tier.as_str();
                metrics::counter!("cardvault_oracle_guard_refusals_total", "tier" => tier)
                    .increment(1);
                event.detail = Some(format!(
                    "card_enumeration: {group} ({tier} tier, more than {} distinct cards in the window)",
                    refusal.limit
                ));
                self.monitor
                    .enumeration(caller, &group, tier, refusal.limit, refusal.alert);
                ApiError::EnumerationSuspected(refusal.retry_after_s)
            })
    }
}
