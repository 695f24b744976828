//! The oracle guard (docs/service.md, "The oracle guard"): a deterministic
//! tenant answers the same token for the same card, so a caller holding a
//! token and the `tokenize` or `lookup` role could test candidate card
//! numbers until one comes back with that token. A token keeps the BIN and
//! last 4, which leaves 10^5 Luhn-valid candidates for a 16-digit card.
//!
//! The guard counts, per token group — what a token shows of its card:
//! (BIN, last 4, length), or (last 4, length) where tokens keep no BIN —
//! the distinct cards each principal (and each tenant as a whole) has
//! presented within a sliding window. A request that would take a group
//! past its threshold is refused whole before any token is looked up or
//! created, and the cards it carried are not counted. Real checkout
//! traffic presents a handful of cards per group and hour; an enumeration
//! needs tens of thousands.
//!
//! Memory is bounded: at most `max_groups` groups and `max_cards` card
//! hashes (both tiers), in shards. When a shard is full it forgets idle
//! groups first, then the groups holding the fewest cards — so to make
//! the guard forget a group holding `c` cards an attacker must first fill
//! every other slot with groups of at least `c` cards (`c` × the shard's
//! capacity distinct cards, each a token created under its name), and the
//! forced eviction is logged and counted. Cards are kept as 64-bit SipHash
//! values under a key drawn at start, never as digits. State lives in
//! memory: a restart starts every window afresh, as the rate limits do.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::config::{GuardThresholds, OracleGuardConfig};
use crate::domain::{Pan, TenantId, TokenProfile};

/// Shards of the guard's state, each behind its own lock.
const SHARDS: usize = 16;

/// Which count a refusal came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// One principal (or one hosted-field session).
    Principal,
    /// Every principal and session of one tenant together.
    Tenant,
}

impl Tier {
    /// Lower-case name, as in metrics labels and audit details.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Principal => "principal",
            Tier::Tenant => "tenant",
        }
    }
}

/// What a token shows of its card: the BIN (where the tenant's tokens keep
/// it), the last 4 and the length. Not secret (PCI DSS allows showing the
/// first six and last four digits), and never the PAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CardGroup {
    bin: Option<[u8; 6]>,
    last4: [u8; 4],
    len: u8,
}

impl CardGroup {
    /// The group of `pan` under `profile`.
    pub fn of(pan: &Pan, profile: TokenProfile) -> CardGroup {
        let digits = pan.expose_digits();
        let mut last4 = [0u8; 4];
        last4.copy_from_slice(&digits[digits.len() - 4..]);
        let bin = profile.keeps_bin(digits.len()).then(|| {
            let mut bin = [0u8; 6];
            bin.copy_from_slice(&digits[..6]);
            bin
        });
        CardGroup {
            bin,
            last4,
            len: digits.len() as u8,
        }
    }

    /// Whether the group carries a BIN (its tokens keep one).
    pub fn has_bin(&self) -> bool {
        self.bin.is_some()
    }
}

impl fmt::Display for CardGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = |digits: &[u8]| digits.iter().map(|d| char::from(*d)).collect::<String>();
        if let Some(bin) = &self.bin {
            write!(f, "BIN {} ", text(bin))?;
        }
        write!(f, "last 4 {}, {} digits", text(&self.last4), self.len)
    }
}

/// A refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The count that would have been exceeded.
    pub tier: Tier,
    /// The group.
    pub group: CardGroup,
    /// That count's threshold (distinct cards per window).
    pub limit: u32,
    /// Seconds until the group's oldest card leaves the window.
    pub retry_after_s: u32,
    /// The first refusal of this group in its window: raise the alert.
    pub alert: bool,
}

/// How full the guard is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardStats {
    /// Groups tracked.
    pub groups: usize,
    /// Card hashes tracked.
    pub cards: usize,
}

/// One group's cards in the window: (card hash, second last seen), the
/// first inline, and when the group was last touched and last alerted —
/// all in the map's own slot, so a sweep over the groups never follows a
/// pointer.
#[derive(Default)]
struct Group {
    seen: smallvec::SmallVec<[(u64, u32); 1]>,
    last_seen: u32,
    alerted_at: Option<u32>,
}

impl Group {
    /// Forgets cards last seen a window ago or earlier; how many.
    fn prune(&mut self, now: u32, window: u32) -> usize {
        let before = self.seen.len();
        self.seen.retain(|&mut (_, at)| at + window > now);
        before - self.seen.len()
    }

    fn contains(&self, card: u64) -> bool {
        self.seen.iter().any(|&(h, _)| h == card)
    }

    fn retry_after(&self, now: u32, window: u32) -> u32 {
        let oldest = self.seen.iter().map(|&(_, at)| at).min().unwrap_or(now);
        (oldest + window).saturating_sub(now).max(1)
    }

    /// Nothing in the window and no alert to remember.
    fn idle(&self, now: u32, window: u32) -> bool {
        self.last_seen + window <= now && self.alerted_at.is_none_or(|at| at + window <= now)
    }
}

/// Groups forgotten to make room.
#[derive(Debug, Clone, Copy, Default)]
struct Evicted {
    idle: usize,
    active: usize,
    most_cards: usize,
}

struct Shard {
    groups: HashMap<u64, Group, foldhash::fast::RandomState>,
    cards: usize,
    max_groups: usize,
    max_cards: usize,
}

impl Shard {
    /// Removes the groups `doomed` picks (never one `keep` names); how many.
    fn remove(&mut self, keep: &impl Fn(u64) -> bool, doomed: impl Fn(&Group) -> bool) -> usize {
        let before = self.groups.len();
        let mut freed = 0;
        self.groups.retain(|key, group| {
            if keep(*key) || !doomed(group) {
                true
            } else {
                freed += group.seen.len();
                false
            }
        });
        self.cards -= freed;
        before - self.groups.len()
    }

    /// Forgets idle groups (except those `keep` names); how many.
    fn forget_idle(&mut self, now: u32, window: u32, keep: &impl Fn(u64) -> bool) -> usize {
        self.remove(keep, |group| group.idle(now, window))
    }

    /// Makes room for `groups` more groups and `cards` more cards: idle
    /// groups go first, then those holding the fewest cards (never a key
    /// `keep` names), down to three quarters of the capacity, so a full
    /// shard is swept once per quarter of its size, not per insert.
    fn make_room(
        &mut self,
        now: u32,
        window: u32,
        groups: usize,
        cards: usize,
        keep: &impl Fn(u64) -> bool,
    ) -> Evicted {
        let mut evicted = Evicted::default();
        if self.groups.len() + groups <= self.max_groups && self.cards + cards <= self.max_cards {
            return evicted;
        }
        evicted.idle = self.forget_idle(now, window, keep);
        let group_target = (self.max_groups - self.max_groups / 4).saturating_sub(groups);
        let card_target = (self.max_cards - self.max_cards / 4).saturating_sub(cards);
        if self.groups.len() <= group_target && self.cards <= card_target {
            return evicted;
        }
        // Groups by card count (a group holds at most a threshold's worth,
        // so a short table), then the smallest count `c` such that
        // forgetting every group holding at most `c` cards gets under both
        // targets.
        let mut histogram: Vec<usize> = Vec::new();
        for (key, group) in &self.groups {
            if !keep(*key) {
                let n = group.seen.len();
                if histogram.len() <= n {
                    histogram.resize(n + 1, 0);
                }
                histogram[n] += 1;
            }
        }
        let (mut groups_left, mut cards_left) = (self.groups.len(), self.cards);
        let mut cut = 0;
        for (count, n) in histogram.iter().enumerate() {
            if groups_left <= group_target && cards_left <= card_target {
                break;
            }
            groups_left -= n;
            cards_left -= n * count;
            cut = count;
        }
        evicted.active = self.remove(keep, |group| group.seen.len() <= cut);
        evicted.most_cards = cut;
        evicted
    }
}

/// One card of a request in one tier.
#[derive(Clone, Copy)]
struct Candidate {
    key: u64,
    card: u64,
    tier: Tier,
    group: CardGroup,
}

/// What one check counted so far, to keep or take back.
#[derive(Default)]
struct Tally {
    refusal: Option<Refusal>,
    /// (locked slot, group key, card) of every card the request added.
    added: Vec<(usize, u64, u64)>,
    /// (locked slot, group key) of every group the request made.
    made: Vec<(usize, u64)>,
}

impl Tally {
    /// Keeps the counts (no refusal), or takes back every card added and
    /// every group made, and returns the refusal.
    fn settle(self, locked: &mut [(usize, MutexGuard<'_, Shard>)]) -> Result<(), Refusal> {
        let Some(refusal) = self.refusal else {
            for (slot, _, _) in &self.added {
                locked[*slot].1.cards += 1;
            }
            return Ok(());
        };
        for (slot, key, card) in self.added {
            if let Some(group) = locked[slot].1.groups.get_mut(&key) {
                group.seen.retain(|&mut (h, _)| h != card);
            }
        }
        for (slot, key) in self.made {
            let shard = &mut locked[slot].1;
            if shard
                .groups
                .get(&key)
                .is_some_and(|g| g.seen.is_empty() && g.alerted_at.is_none())
            {
                shard.groups.remove(&key);
            }
        }
        Err(refusal)
    }
}

/// The guard: counts per (principal, group) and (tenant, group).
pub struct OracleGuard {
    enabled: bool,
    window: u32,
    defaults: GuardThresholds,
    tenants: HashMap<TenantId, GuardThresholds>,
    /// SipHash-1-3 under keys drawn from the OS at start: card hashes and
    /// group keys an attacker cannot predict or aim collisions at.
    hasher: std::collections::hash_map::RandomState,
    shards: Box<[Mutex<Shard>]>,
    started: Instant,
}

impl OracleGuard {
    /// A guard with `config`'s settings and each tenant's overrides.
    pub fn new(
        config: &OracleGuardConfig,
        overrides: impl IntoIterator<Item = (TenantId, crate::config::GuardOverrides)>,
    ) -> OracleGuard {
        let per = |n: usize| n.div_ceil(SHARDS).max(8);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    groups: HashMap::default(),
                    cards: 0,
                    max_groups: per(config.max_groups.get()),
                    max_cards: per(config.max_cards.get()),
                })
            })
            .collect();
        OracleGuard {
            enabled: config.enabled,
            window: u32::try_from(config.window_secs.get()).unwrap_or(u32::MAX),
            defaults: config.thresholds(),
            tenants: overrides
                .into_iter()
                .map(|(tenant, o)| (tenant, config.thresholds().with(&o)))
                .collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            shards,
            started: Instant::now(),
        }
    }

    fn now(&self) -> u32 {
        u32::try_from(self.started.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    fn limit(&self, tenant: &TenantId, tier: Tier, group: &CardGroup) -> u32 {
        let t = self.tenants.get(tenant).unwrap_or(&self.defaults);
        match (tier, group.has_bin()) {
            (Tier::Principal, true) => t.principal_max.get(),
            (Tier::Tenant, true) => t.tenant_max.get(),
            (Tier::Principal, false) => t.last4_principal_max.get(),
            (Tier::Tenant, false) => t.last4_tenant_max.get(),
        }
    }

    fn shard_of(key: u64) -> usize {
        (key >> 56) as usize % SHARDS
    }

    /// Checks the cards `pans` that `scope` (a principal, or a hosted-field
    /// session) presents in `tenant`, whose tokens follow `profile`. Either
    /// every card is counted and the request may go on, or nothing is
    /// counted and the first group over its threshold is returned.
    pub fn check(
        &self,
        tenant: &TenantId,
        scope: &str,
        profile: TokenProfile,
        pans: &[&Pan],
    ) -> Result<(), Refusal> {
        if !self.enabled || pans.is_empty() {
            return Ok(());
        }
        let now = self.now();
        let candidates = self.candidates(tenant, scope, profile, pans);
        let mut locked = self.lock_shards(&candidates);
        // Counted optimistically, one map lookup per group: the common
        // case passes. A refusal then takes back every card this request
        // added (and every group it made), so a refused request counts
        // nothing.
        let mut tally = Tally::default();
        let mut rest = &candidates[..];
        for (slot, (index, guard)) in locked.iter_mut().enumerate() {
            let shard: &mut Shard = guard;
            let split = rest
                .iter()
                .position(|c| Self::shard_of(c.key) != *index)
                .unwrap_or(rest.len());
            let (mine, others) = rest.split_at(split);
            rest = others;
            let runs = mine.chunk_by(|a, b| a.key == b.key).count();
            let keep = |key: u64| mine.binary_search_by_key(&key, |c| c.key).is_ok();
            report_eviction(shard.make_room(now, self.window, runs, mine.len(), &keep));
            for run in mine.chunk_by(|a, b| a.key == b.key) {
                self.count_group(tenant, now, shard, slot, run, &mut tally);
            }
        }
        tally.settle(&mut locked)
    }

    /// Each card of `pans` once per tier, keyed by its group, sorted by
    /// shard, group and card, without repeats.
    fn candidates(
        &self,
        tenant: &TenantId,
        scope: &str,
        profile: TokenProfile,
        pans: &[&Pan],
    ) -> Vec<Candidate> {
        // The scope's part of each key is hashed once per request; each
        // card then costs one short hash per tier and one for its digits.
        let seeds = [
            (
                Tier::Principal,
                self.hasher
                    .hash_one((Tier::Principal, tenant.as_str(), scope)),
            ),
            (
                Tier::Tenant,
                self.hasher.hash_one((Tier::Tenant, tenant.as_str())),
            ),
        ];
        let mut candidates = Vec::with_capacity(pans.len() * 2);
        for pan in pans {
            let group = CardGroup::of(pan, profile);
            let card = self.hasher.hash_one(pan.expose_digits());
            let mut bytes = [0u8; 20];
            bytes[8..14].copy_from_slice(group.bin.as_ref().unwrap_or(&[0xFF; 6]));
            bytes[14..18].copy_from_slice(&group.last4);
            bytes[18] = group.len;
            for (tier, seed) in seeds {
                bytes[..8].copy_from_slice(&seed.to_le_bytes());
                candidates.push(Candidate {
                    key: self.hasher.hash_one(bytes),
                    card,
                    tier,
                    group,
                });
            }
        }
        candidates.sort_unstable_by_key(|c| (Self::shard_of(c.key), c.key, c.card));
        candidates.dedup_by_key(|c| (c.key, c.card));
        candidates
    }

    /// Locks every shard the (sorted) candidates touch, in index order, so
    /// two requests never deadlock.
    fn lock_shards(&self, candidates: &[Candidate]) -> Vec<(usize, MutexGuard<'_, Shard>)> {
        let mut locked: Vec<(usize, MutexGuard<'_, Shard>)> = Vec::new();
        for c in candidates {
            let index = Self::shard_of(c.key);
            if locked.last().is_none_or(|(i, _)| *i != index) {
                let guard = self.shards[index]
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                locked.push((index, guard));
            }
        }
        locked
    }

    /// Counts one group's cards of this request (`run`, one key) in
    /// `shard`, the `slot`-th locked one, or notes the refusal.
    fn count_group(
        &self,
        tenant: &TenantId,
        now: u32,
        shard: &mut Shard,
        slot: usize,
        run: &[Candidate],
        tally: &mut Tally,
    ) {
        let first = run[0];
        let limit = self.limit(tenant, first.tier, &first.group);
        let mut fresh = false;
        let group = shard.groups.entry(first.key).or_insert_with(|| {
            fresh = true;
            Group::default()
        });
        shard.cards -= group.prune(now, self.window);
        let new = run.iter().filter(|c| !group.contains(c.card)).count();
        if group.seen.len() + new > limit as usize {
            let alert = group.alerted_at.is_none_or(|at| at + self.window <= now);
            if alert {
                group.alerted_at = Some(now);
            }
            let this = Refusal {
                tier: first.tier,
                group: first.group,
                limit,
                retry_after_s: group.retry_after(now, self.window),
                alert,
            };
            // Report the principal's own count before the tenant's.
            if tally
                .refusal
                .is_none_or(|r| r.tier == Tier::Tenant && this.tier == Tier::Principal)
            {
                tally.refusal = Some(this);
            }
        } else {
            group.last_seen = now;
            for c in run {
                match group.seen.iter_mut().find(|(h, _)| *h == c.card) {
                    Some(seen) => seen.1 = now,
                    None => {
                        group.seen.push((c.card, now));
                        tally.added.push((slot, c.key, c.card));
                    }
                }
            }
        }
        if fresh {
            tally.made.push((slot, first.key));
        }
    }

    /// Forgets idle groups (a periodic sweep, so memory falls back when
    /// traffic does); returns the state's size.
    pub fn sweep(&self) -> GuardStats {
        let now = self.now();
        let mut stats = GuardStats::default();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.forget_idle(now, self.window, &|_| false);
            stats.groups += shard.groups.len();
            stats.cards += shard.cards;
        }
        stats
    }

    /// Whether the guard checks anything.
    pub fn enabled(&self) -> bool {
        self.enabled
    }
}

/// At most one "guard full" warning a minute (the metric counts them all).
fn warn_now() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = crate::clock::now_ms() / 1000;
    let last = LAST.load(Ordering::Relaxed);
    now >= last + 60
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

fn report_eviction(evicted: Evicted) {
    if evicted.idle > 0 {
        metrics::counter!("cardvault_oracle_guard_evicted_groups_total", "state" => "idle")
            .increment(evicted.idle as u64);
    }
    if evicted.active > 0 {
        metrics::counter!("cardvault_oracle_guard_evicted_groups_total", "state" => "active")
            .increment(evicted.active as u64);
        if evicted.most_cards >= 2 && warn_now() {
            tracing::warn!(
                alert = "oracle_guard_full",
                groups = evicted.active,
                most_cards = evicted.most_cards,
                "the oracle guard is full: it forgot active groups holding up to this many cards"
            );
        }
    }
}

#[cfg(test)]
mod tests;
