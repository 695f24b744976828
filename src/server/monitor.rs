//! Monitoring rules that make an attack visible when it starts (docs/audit.md,
//! "Monitoring and alerts"): detokenization bursts per principal, detokenization outside a
//! principal's configured UTC hours, bursts of metadata reads and deletes
//! per principal, and bursts of failed TLS handshakes from one address. A rule that fires logs a `warn` line with a stable
//! `alert` field, counts `cardvault_alerts_total{rule}` and writes an
//! `alert` audit event; with `block_detokenize_on_alert`, the principal's
//! detokenizations are refused until an admin clears the block.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::audit::{AuditLog, Event, EventKind};
use crate::config::{AlertsConfig, BurstRule, Config};

use super::identity::{Caller, Principal};

/// Rule names, as they appear in logs, metrics and audit events.
pub mod rule {
    /// Too many detokenized items by one principal in the window.
    pub const DETOKENIZE_BURST: &str = "detokenize_burst";
    /// A detokenization outside the principal's configured hours.
    pub const DETOKENIZE_OUTSIDE_HOURS: &str = "detokenize_outside_hours";
    /// Too many failed handshakes from one address in the window.
    pub const HANDSHAKE_FAILURE_BURST: &str = "handshake_failure_burst";
    /// Too many metadata reads and deletes by one principal in the window.
    pub const METADATA_BURST: &str = "metadata_burst";
    /// The oracle guard refused a group: too many distinct cards with one
    /// BIN and last 4 from one principal (or one tenant) in its window.
    pub const CARD_ENUMERATION: &str = "card_enumeration";
    /// The hosted fields' velocity rule: the same card submitted through
    /// more collection sessions within an hour than
    /// `collect.limits.sessions_per_card_per_hour`.
    pub const CARD_TESTING: &str = "card_testing";
}

/// Most distinct addresses tracked for handshake failures; beyond this,
/// idle entries are pruned first and new addresses are not tracked.
const MAX_TRACKED_ADDRESSES: usize = 65_536;

/// Counts in one-second buckets over a sliding window.
#[derive(Default)]
struct Window {
    buckets: VecDeque<(u64, u64)>,
    total: u64,
    alerting: bool,
}

impl Window {
    /// Adds `n` at second `now`; returns the total over the last `span` seconds.
    fn add(&mut self, now: u64, span: u64, n: u64) -> u64 {
        while let Some(&(second, count)) = self.buckets.front() {
            if second + span > now {
                break;
            }
            self.total -= count;
            self.buckets.pop_front();
        }
        match self.buckets.back_mut() {
            Some((second, count)) if *second == now => *count += n,
            _ => self.buckets.push_back((now, n)),
        }
        self.total += n;
        self.total
    }

    fn idle(&self, now: u64, span: u64) -> bool {
        self.buckets
            .back()
            .is_none_or(|(second, _)| second + span <= now)
    }
}

/// Per-key windows for one burst rule. Fires once per burst: again only
/// after the count has fallen back to the limit.
struct BurstTracker<K> {
    rule: BurstRule,
    windows: HashMap<K, Window>,
}

impl<K: Eq + Hash + Clone> BurstTracker<K> {
    fn new(rule: BurstRule) -> Self {
        BurstTracker {
            rule,
            windows: HashMap::new(),
        }
    }

    /// Adds `n` for `key`; returns the window's total if this crossed the limit.
    fn add(&mut self, key: &K, now: u64, n: u64) -> Option<u64> {
        let span = self.rule.window_secs.get();
        if !self.windows.contains_key(key) && self.windows.len() >= MAX_TRACKED_ADDRESSES {
            self.windows.retain(|_, w| !w.idle(now, span));
            if self.windows.len() >= MAX_TRACKED_ADDRESSES {
                return None;
            }
        }
        let window = self.windows.entry(key.clone()).or_default();
        let total = window.add(now, span, n);
        if total > self.rule.max.get() {
            let first = !window.alerting;
            window.alerting = true;
            first.then_some(total)
        } else {
            window.alerting = false;
            None
        }
    }

    fn reset(&mut self, key: &K) {
        self.windows.remove(key);
    }
}

/// The rules and their state.
pub struct Monitor {
    config: AlertsConfig,
    audit: AuditLog,
    started: Instant,
    detokenize: Mutex<BurstTracker<String>>,
    handshakes: Mutex<BurstTracker<IpAddr>>,
    metadata: Mutex<BurstTracker<String>>,
    blocked: Mutex<BTreeSet<String>>,
    /// Principals whose tokenizations, lookups and imports are refused
    /// (`block_on_enumeration`).
    tokenize_blocked: Mutex<BTreeSet<String>>,
}

/// A detokenization the monitor refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked;

impl Monitor {
    /// Rules from the config; alerts go to `audit`. Who a principal is
    /// (tenant, detokenize hours) comes from the caller's access, so the
    /// rules follow a reload of the principals table.
    pub fn new(config: &Config, audit: AuditLog) -> Monitor {
        Monitor {
            config: config.alerts.clone(),
            audit,
            started: Instant::now(),
            detokenize: Mutex::new(BurstTracker::new(config.alerts.detokenize_burst)),
            handshakes: Mutex::new(BurstTracker::new(config.alerts.handshake_failure_burst)),
            metadata: Mutex::new(BurstTracker::new(config.alerts.metadata_burst)),
            blocked: Mutex::new(BTreeSet::new()),
            tokenize_blocked: Mutex::new(BTreeSet::new()),
        }
    }

    fn second(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    fn is_blocked(&self, principal: &str) -> bool {
        self.blocked
            .lock()
            .map(|b| b.contains(principal))
            .unwrap_or(true)
    }

    /// Called before `items` tokens are detokenized for `caller`. Fires the
    /// detokenize rules; refuses when the principal is blocked (or becomes
    /// blocked by this call).
    pub fn check_detokenize(&self, caller: &Caller, items: u64) -> Result<(), Blocked> {
        let principal = caller.principal.as_str();
        if self.is_blocked(principal) {
            return Err(Blocked);
        }
        let mut fired = Vec::new();
        if let Some(hours) = caller.access.as_ref().and_then(|a| a.detokenize_hours) {
            let now = time::OffsetDateTime::now_utc();
            let minute = u16::from(now.hour()) * 60 + u16::from(now.minute());
            if !hours.contains(minute) {
                fired.push((rule::DETOKENIZE_OUTSIDE_HOURS, items));
            }
        }
        let crossed = self
            .detokenize
            .lock()
            .ok()
            .and_then(|mut t| t.add(&principal.to_owned(), self.second(), items));
        if let Some(total) = crossed {
            fired.push((rule::DETOKENIZE_BURST, total));
        }
        if fired.is_empty() {
            return Ok(());
        }
        let block = self.config.block_detokenize_on_alert;
        for (name, count) in fired {
            tracing::warn!(alert = name, principal, peer = %caller.peer, count, blocked = block, "alert: detokenization rule fired");
            metrics::counter!("cardvault_alerts_total", "rule" => name).increment(1);
            let mut event = caller.event(EventKind::Alert).with_detail(if block {
                format!("{name}; detokenization blocked until an admin clears it")
            } else {
                name.to_owned()
            });
            event.count = Some(count);
            self.audit.record(event);
        }
        if block {
            if let Ok(mut blocked) = self.blocked.lock() {
                blocked.insert(principal.to_owned());
            }
            return Err(Blocked);
        }
        Ok(())
    }

    /// Refuses `caller`'s tokenizations, lookups and imports while an
    /// enumeration alert blocks it.
    pub fn check_tokenize(&self, caller: &Caller) -> Result<(), Blocked> {
        let blocked = self
            .tokenize_blocked
            .lock()
            .map(|b| b.contains(caller.principal.as_str()))
            .unwrap_or(true);
        if blocked { Err(Blocked) } else { Ok(()) }
    }

    /// Called when the oracle guard refuses `caller` on `group` (`tier`'s
    /// count, `limit` distinct cards). The first refusal of a group in its
    /// window fires the `card_enumeration` alert (never a PAN: the group is
    /// the BIN, last 4 and length a token shows anyway).
    pub fn enumeration(&self, caller: &Caller, group: &str, tier: &str, limit: u32, first: bool) {
        if !first {
            return;
        }
        let name = rule::CARD_ENUMERATION;
        let principal = caller.principal.as_str();
        let block = self.config.block_on_enumeration;
        tracing::warn!(alert = name, principal, peer = %caller.peer, group, tier, limit, blocked = block, "alert: distinct cards of one token group over the oracle guard's threshold");
        metrics::counter!("cardvault_alerts_total", "rule" => name).increment(1);
        let mut event = caller.event(EventKind::Alert).with_detail(format!(
            "{name}: {group} ({tier} tier, more than {limit} distinct cards in the window){}",
            if block {
                "; tokenize, lookup and import blocked until an admin clears it"
            } else {
                ""
            }
        ));
        event.count = Some(u64::from(limit));
        self.audit.record(event);
        if block && let Ok(mut blocked) = self.tokenize_blocked.lock() {
            blocked.insert(principal.to_owned());
        }
    }

    /// Called when the hosted fields' velocity rule fires for a card
    /// submitted from `peer` through session `session` of `tenant` (the
    /// card's `sessions` within the hour; never the card).
    pub fn card_testing(&self, tenant: &str, session: &str, peer: IpAddr, sessions: usize) {
        let name = rule::CARD_TESTING;
        tracing::warn!(alert = name, tenant, session, %peer, sessions, "alert: the same card submitted through many collection sessions");
        metrics::counter!("cardvault_alerts_total", "rule" => name).increment(1);
        let mut event = Event::new(EventKind::Alert)
            .with_tenant(tenant)
            .with_detail(format!(
                "{name}: one card through {sessions} collection sessions within an hour"
            ));
        event.peer = Some(peer.to_string());
        event.session = Some(session.to_owned());
        event.count = Some(sessions as u64);
        self.audit.record(event);
    }

    /// Called for every metadata read and delete: fires the metadata burst
    /// rule (an alert; reads are not blocked).
    pub fn metadata_access(&self, caller: &Caller) {
        let principal = caller.principal.as_str();
        let crossed = self
            .metadata
            .lock()
            .ok()
            .and_then(|mut t| t.add(&principal.to_owned(), self.second(), 1));
        if let Some(total) = crossed {
            let name = rule::METADATA_BURST;
            tracing::warn!(alert = name, principal, peer = %caller.peer, count = total, "alert: burst of metadata reads and deletes");
            metrics::counter!("cardvault_alerts_total", "rule" => name).increment(1);
            let mut event = caller.event(EventKind::Alert).with_detail(name);
            event.count = Some(total);
            self.audit.record(event);
        }
    }

    /// Called for every failed TLS handshake.
    pub fn handshake_failed(&self, peer: IpAddr) {
        let crossed = self
            .handshakes
            .lock()
            .ok()
            .and_then(|mut t| t.add(&peer, self.second(), 1));
        if let Some(total) = crossed {
            let name = rule::HANDSHAKE_FAILURE_BURST;
            tracing::warn!(alert = name, %peer, count = total, "alert: burst of failed TLS handshakes");
            metrics::counter!("cardvault_alerts_total", "rule" => name).increment(1);
            let mut event = Event::new(EventKind::Alert).with_detail(name);
            event.peer = Some(peer.to_string());
            event.count = Some(total);
            self.audit.record(event);
        }
    }

    /// Principals whose detokenizations are blocked, among those `visible`
    /// accepts.
    pub fn blocked(&self, visible: impl Fn(&str) -> bool) -> Vec<String> {
        let mut blocked = self.blocked.lock().map(|b| b.clone()).unwrap_or_default();
        if let Ok(more) = self.tokenize_blocked.lock() {
            blocked.extend(more.iter().cloned());
        }
        blocked.into_iter().filter(|p| visible(p)).collect()
    }

    /// Lifts the block on `principal` (and restarts its burst window);
    /// returns whether it was blocked. The admin's request records
    /// `alert_cleared`.
    pub fn clear(&self, principal: &str, admin: &Principal) -> bool {
        let was_blocked = self
            .blocked
            .lock()
            .map(|mut b| b.remove(principal))
            .unwrap_or(false);
        let was_blocked = self
            .tokenize_blocked
            .lock()
            .map(|mut b| b.remove(principal))
            .unwrap_or(false)
            || was_blocked;
        if let Ok(mut t) = self.detokenize.lock() {
            t.reset(&principal.to_owned());
        }
        tracing::warn!(principal, admin = %admin, was_blocked, "alert block cleared");
        was_blocked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_slides_by_seconds() {
        let mut w = Window::default();
        assert_eq!(w.add(0, 10, 5), 5);
        assert_eq!(w.add(9, 10, 1), 6);
        assert_eq!(w.add(10, 10, 1), 2);
        assert_eq!(w.add(30, 10, 1), 1);
        assert!(w.idle(40, 10));
    }

    #[test]
    fn burst_fires_once_until_it_subsides() {
        let mut t = BurstTracker::new(BurstRule::new(3, 10));
        let key = "p".to_owned();
        assert_eq!(t.add(&key, 0, 3), None);
        assert_eq!(t.add(&key, 1, 1), Some(4));
        assert_eq!(t.add(&key, 2, 1), None);
        assert_eq!(t.add(&key, 20, 1), None);
        assert_eq!(t.add(&key, 20, 5), Some(6));
    }
}
