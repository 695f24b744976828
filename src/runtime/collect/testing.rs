//! The card-testing guard of the hosted fields: a fraudster with a list of
//! stolen numbers and a shop's page would submit them one after another to
//! learn which pass. Four rules, each in memory on this node: submits per
//! IP address per minute and per session (token buckets, `governor`),
//! sessions a tenant may create per minute, and a velocity rule — the same
//! card through more than N sessions within an hour raises an alert (a
//! real shopper retries once or twice). Plus an optional BIN block list.
//! Bounded: the buckets forget idle keys at each sweep; the velocity map
//! holds at most [`MAX_CARDS`] cards and forgets cards idle for an hour.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::config::CollectLimits;
use crate::domain::Pan;

/// Most cards the velocity rule tracks.
const MAX_CARDS: usize = 262_144;

/// The velocity rule's window.
const VELOCITY_WINDOW: Duration = Duration::from_secs(3600);

type Buckets<K> = RateLimiter<K, HashMapStateStore<K>, DefaultClock>;

/// A card seen in sessions: which (by hash) and when, oldest first.
#[derive(Default)]
struct Seen {
    sessions: Vec<(u64, Instant)>,
    alerted: bool,
}

/// What the velocity rule says about a submitted card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Velocity {
    /// Distinct sessions this card went through within the hour.
    pub sessions: usize,
    /// Over the limit for the first time in this window: raise the alert.
    pub alert: bool,
}

/// The rules' state.
pub struct CardTesting {
    per_ip: Buckets<IpAddr>,
    per_session: Buckets<[u8; 16]>,
    per_tenant: Buckets<String>,
    velocity_limit: usize,
    cards: Mutex<HashMap<u64, Seen>>,
    /// SipHash under keys drawn at start: card hashes nobody can predict.
    hasher: std::collections::hash_map::RandomState,
    blocked_bins: Vec<String>,
    clock: DefaultClock,
}

fn per_minute(n: NonZeroU32) -> Quota {
    Quota::per_minute(n).allow_burst(n)
}

impl CardTesting {
    /// The rules with `limits` and `blocked_bins`.
    pub fn new(limits: &CollectLimits, blocked_bins: &[String]) -> CardTesting {
        let session_refill = Duration::from_secs(3600) / limits.submits_per_session.get();
        let per_session = Quota::with_period(session_refill)
            .unwrap_or_else(|| Quota::per_hour(limits.submits_per_session))
            .allow_burst(limits.submits_per_session);
        CardTesting {
            per_ip: RateLimiter::hashmap(per_minute(limits.submits_per_ip_per_minute)),
            per_session: RateLimiter::hashmap(per_session),
            per_tenant: RateLimiter::hashmap(per_minute(limits.sessions_per_tenant_per_minute)),
            velocity_limit: limits.sessions_per_card_per_hour.get() as usize,
            cards: Mutex::new(HashMap::new()),
            hasher: std::collections::hash_map::RandomState::new(),
            blocked_bins: blocked_bins.to_vec(),
            clock: DefaultClock::default(),
        }
    }

    /// Seconds until `not_until` allows again (at least 1).
    fn retry_after(&self, not_until: governor::NotUntil<<DefaultClock as Clock>::Instant>) -> u32 {
        let wait = not_until.wait_time_from(self.clock.now());
        u32::try_from(wait.as_secs() + 1).unwrap_or(u32::MAX)
    }

    /// One submit from `ip`: `Err(seconds)` when its bucket is spent.
    pub fn submit_from(&self, ip: IpAddr) -> Result<(), u32> {
        self.per_ip
            .check_key(&ip)
            .map_err(|not_until| self.retry_after(not_until))
    }

    /// One submit to session `id`: `Err(seconds)` when its bucket is spent.
    pub fn submit_to(&self, id: &[u8]) -> Result<(), u32> {
        let key: [u8; 16] = id.try_into().unwrap_or_default();
        self.per_session
            .check_key(&key)
            .map_err(|not_until| self.retry_after(not_until))
    }

    /// One session created by `tenant`: `Err(seconds)` when spent.
    pub fn create_for(&self, tenant: &str) -> Result<(), u32> {
        self.per_tenant
            .check_key(&tenant.to_owned())
            .map_err(|not_until| self.retry_after(not_until))
    }

    /// Whether `pan` starts with a blocked prefix.
    pub fn blocked(&self, pan: &Pan) -> bool {
        let digits = pan.expose_digits();
        self.blocked_bins
            .iter()
            .any(|bin| digits.starts_with(bin.as_bytes()))
    }

    /// Records `pan` submitted through session `id` and applies the
    /// velocity rule.
    pub fn card_seen(&self, pan: &Pan, id: &[u8]) -> Velocity {
        let card = self.hasher.hash_one(pan.expose_digits());
        let session = self.hasher.hash_one(id);
        let now = Instant::now();
        let mut cards = self.cards.lock().unwrap_or_else(|p| p.into_inner());
        if cards.len() >= MAX_CARDS && !cards.contains_key(&card) {
            forget_idle(&mut cards, now);
            if cards.len() >= MAX_CARDS {
                tracing::warn!(
                    cards = cards.len(),
                    "card-testing velocity map full; forgetting every card"
                );
                cards.clear();
            }
        }
        let seen = cards.entry(card).or_default();
        seen.sessions
            .retain(|(_, at)| now.duration_since(*at) < VELOCITY_WINDOW);
        if !seen.sessions.iter().any(|(s, _)| *s == session) {
            seen.sessions.push((session, now));
        }
        let sessions = seen.sessions.len();
        let over = sessions > self.velocity_limit;
        let alert = over && !seen.alerted;
        seen.alerted = over;
        Velocity { sessions, alert }
    }

    /// Forgets idle keys and cards (every few seconds, from the sweep).
    pub fn sweep(&self) {
        self.per_ip.retain_recent();
        self.per_session.retain_recent();
        self.per_tenant.retain_recent();
        self.per_ip.shrink_to_fit();
        self.per_session.shrink_to_fit();
        let mut cards = self.cards.lock().unwrap_or_else(|p| p.into_inner());
        forget_idle(&mut cards, Instant::now());
    }
}

/// Drops cards whose last session is older than the velocity window.
fn forget_idle(cards: &mut HashMap<u64, Seen>, now: Instant) {
    cards.retain(|_, seen| {
        seen.sessions
            .last()
            .is_some_and(|(_, at)| now.duration_since(*at) < VELOCITY_WINDOW)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> CollectLimits {
        CollectLimits {
            submits_per_ip_per_minute: NonZeroU32::new(3).unwrap(),
            submits_per_session: NonZeroU32::new(2).unwrap(),
            sessions_per_tenant_per_minute: NonZeroU32::new(2).unwrap(),
            sessions_per_card_per_hour: NonZeroU32::new(2).unwrap(),
            ..CollectLimits::default()
        }
    }

    #[test]
    fn buckets_refuse_past_their_size_per_key() {
        let t = CardTesting::new(&limits(), &[]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            t.submit_from(a).unwrap();
        }
        assert!(t.submit_from(a).unwrap_err() >= 1);
        t.submit_from(b).unwrap();
        t.submit_to(&[1; 16]).unwrap();
        t.submit_to(&[1; 16]).unwrap();
        assert!(t.submit_to(&[1; 16]).is_err());
        t.submit_to(&[2; 16]).unwrap();
        t.create_for("shop").unwrap();
        t.create_for("shop").unwrap();
        assert!(t.create_for("shop").is_err());
        t.create_for("other").unwrap();
    }

    #[test]
    fn the_same_card_through_many_sessions_alerts_once() {
        let t = CardTesting::new(&limits(), &[]);
        let pan = Pan::parse("4111111111111111").unwrap();
        let other = Pan::parse("5555555555554444").unwrap();
        assert!(!t.card_seen(&pan, &[1; 16]).alert);
        assert!(!t.card_seen(&pan, &[1; 16]).alert, "a retry in one session");
        assert!(!t.card_seen(&pan, &[2; 16]).alert);
        let third = t.card_seen(&pan, &[3; 16]);
        assert!(third.alert);
        assert_eq!(third.sessions, 3);
        assert!(!t.card_seen(&pan, &[4; 16]).alert, "alerts once");
        assert!(!t.card_seen(&other, &[5; 16]).alert);
    }

    #[test]
    fn blocked_prefixes_match_the_start_only() {
        let t = CardTesting::new(&limits(), &["411111".into()]);
        assert!(t.blocked(&Pan::parse("4111111111111111").unwrap()));
        assert!(!t.blocked(&Pan::parse("5555555555554444").unwrap()));
    }
}
