//! The oracle guard's unit tests: thresholds, whole-batch refusals, the
//! tenant tier, last-4 groups, overrides, bounded memory.

use super::*;
use crate::config::GuardOverrides;
use std::num::NonZeroU32;

fn pan(body: &str) -> Pan {
    let s = (b'0'..=b'9')
        .map(|d| format!("{body}{}", char::from(d)))
        .find(|s| crate::domain::luhn::passes(s.as_bytes()))
        .unwrap_or_default();
    Pan::parse(&s).unwrap_or_else(|_| panic!("test PAN"))
}

/// The `i`-th card of group BIN 411111, last 4 1111 … (middle digits
/// vary, the check digit is the fourth of the last four).
fn same_group(i: u32) -> Pan {
    // 411111 + 6 middle digits + "111" + check: last 4 differ by the
    // check digit; fix it by searching middles with check digit 1.
    let mut found = 0;
    for middle in 0..1_000_000u32 {
        let p = pan(&format!("411111{middle:06}111"));
        if p.expose_digits()[15] == b'1' {
            if found == i {
                return p;
            }
            found += 1;
        }
    }
    panic!("not enough cards")
}

fn guard(principal_max: u32, tenant_max: u32) -> OracleGuard {
    let config = OracleGuardConfig {
        principal_max: NonZeroU32::new(principal_max).unwrap_or(NonZeroU32::MIN),
        tenant_max: NonZeroU32::new(tenant_max).unwrap_or(NonZeroU32::MIN),
        ..OracleGuardConfig::default()
    };
    OracleGuard::new(&config, Vec::<(TenantId, GuardOverrides)>::new())
}

fn tenant() -> TenantId {
    TenantId::parse("default").unwrap_or_else(|_| panic!("tenant"))
}

#[test]
fn the_threshold_refuses_the_next_distinct_card_and_counts_nothing_refused() {
    let g = guard(3, 100);
    let t = tenant();
    let cards: Vec<Pan> = (0..5).map(same_group).collect();
    for card in &cards[..3] {
        assert!(g.check(&t, "cart", TokenProfile::BinLast4, &[card]).is_ok());
    }
    let refused = g
        .check(&t, "cart", TokenProfile::BinLast4, &[&cards[3]])
        .unwrap_err();
    assert_eq!(refused.tier, Tier::Principal);
    assert_eq!(refused.limit, 3);
    assert!(refused.alert);
    assert_eq!(
        refused.group.to_string(),
        "BIN 411111 last 4 1111, 16 digits"
    );
    // Again: refused, no second alert.
    assert!(
        !g.check(&t, "cart", TokenProfile::BinLast4, &[&cards[4]])
            .unwrap_err()
            .alert
    );
    // A card already counted passes (a customer's second order).
    assert!(
        g.check(&t, "cart", TokenProfile::BinLast4, &[&cards[1]])
            .is_ok()
    );
    // Another principal has its own count.
    assert!(
        g.check(&t, "other", TokenProfile::BinLast4, &[&cards[3]])
            .is_ok()
    );
    // Another group is untouched.
    let other = pan("411111000000222");
    assert!(
        g.check(&t, "cart", TokenProfile::BinLast4, &[&other])
            .is_ok()
    );
}

#[test]
fn a_batch_over_the_threshold_is_refused_whole() {
    let g = guard(4, 100);
    let t = tenant();
    let cards: Vec<Pan> = (0..5).map(same_group).collect();
    let other = pan("510510510510510");
    let mut batch: Vec<&Pan> = cards.iter().collect();
    batch.push(&other);
    assert!(g.check(&t, "cart", TokenProfile::BinLast4, &batch).is_err());
    // Nothing was counted: four of the five now pass.
    let four: Vec<&Pan> = cards[..4].iter().collect();
    assert!(g.check(&t, "cart", TokenProfile::BinLast4, &four).is_ok());
    // Duplicates within a batch count once.
    let again = [&cards[0], &cards[0], &cards[1]];
    assert!(g.check(&t, "cart", TokenProfile::BinLast4, &again).is_ok());
}

#[test]
fn the_tenant_tier_sees_an_enumeration_spread_over_principals() {
    let g = guard(4, 6);
    let t = tenant();
    let cards: Vec<Pan> = (0..9).map(same_group).collect();
    let mut refused = None;
    for (i, card) in cards.iter().enumerate() {
        let scope = ["a", "b", "c"][i % 3];
        if let Err(r) = g.check(&t, scope, TokenProfile::BinLast4, &[card]) {
            refused = Some((i, r));
            break;
        }
    }
    let (at, refusal) = refused.unwrap_or_else(|| panic!("never refused"));
    assert_eq!(at, 6);
    assert_eq!(refusal.tier, Tier::Tenant);
}

#[test]
fn last4_groups_ignore_the_bin_and_have_their_own_threshold() {
    let config = OracleGuardConfig {
        last4_principal_max: NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN),
        ..OracleGuardConfig::default()
    };
    let g = OracleGuard::new(&config, Vec::<(TenantId, GuardOverrides)>::new());
    let t = tenant();
    // Three 16-digit cards of different BINs, same last 4 (check digit
    // chosen by varying the middle).
    let mut cards = Vec::new();
    for bin in ["411111", "522222", "601100"] {
        let p = (0..1000)
            .map(|m| pan(&format!("{bin}{m:06}555")))
            .find(|p| p.expose_digits()[15] == b'5')
            .unwrap_or_else(|| panic!("card"));
        cards.push(p);
    }
    for card in &cards[..2] {
        assert!(g.check(&t, "cart", TokenProfile::Last4, &[card]).is_ok());
    }
    let refusal = g
        .check(&t, "cart", TokenProfile::Last4, &[&cards[2]])
        .unwrap_err();
    assert!(!refusal.group.has_bin());
    assert_eq!(refusal.group.to_string(), "last 4 5555, 16 digits");
    // Under the default profile the same cards are three groups.
    for card in &cards {
        assert!(
            g.check(&t, "other", TokenProfile::BinLast4, &[card])
                .is_ok()
        );
    }
}

#[test]
fn tenant_overrides_apply() {
    let config = OracleGuardConfig::default();
    let big = GuardOverrides {
        principal_max: NonZeroU32::new(1000),
        tenant_max: NonZeroU32::new(1000),
        ..GuardOverrides::default()
    };
    let t = tenant();
    let g = OracleGuard::new(&config, vec![(t.clone(), big)]);
    let cards: Vec<Pan> = (0..40).map(same_group).collect();
    let all: Vec<&Pan> = cards.iter().collect();
    assert!(g.check(&t, "cart", TokenProfile::BinLast4, &all).is_ok());
}

#[test]
fn memory_stays_bounded_and_a_busy_group_outlives_single_card_ones() {
    let mut config = OracleGuardConfig {
        max_groups: std::num::NonZeroUsize::new(16 * 64).unwrap_or(std::num::NonZeroUsize::MIN),
        ..OracleGuardConfig::default()
    };
    config.principal_max = NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN);
    config.tenant_max = NonZeroU32::new(1000).unwrap_or(NonZeroU32::MIN);
    let g = OracleGuard::new(&config, Vec::<(TenantId, GuardOverrides)>::new());
    let t = tenant();
    let cards: Vec<Pan> = (0..6).map(same_group).collect();
    for card in &cards[..5] {
        assert!(
            g.check(&t, "attacker", TokenProfile::BinLast4, &[card])
                .is_ok()
        );
    }
    // 20,000 one-card groups from another principal: far more than fit.
    for i in 0..20_000u64 {
        // A BIN of its own each: one card per group in both tiers.
        let p = pan(&format!("5{i:05}000000000"));
        assert!(g.check(&t, "filler", TokenProfile::BinLast4, &[&p]).is_ok());
    }
    let stats = g.sweep();
    assert!(stats.groups <= 16 * 64 + 16, "{stats:?}");
    // The attacker's group (five cards) was never the one forgotten.
    assert!(
        g.check(&t, "attacker", TokenProfile::BinLast4, &[&cards[5]])
            .is_err()
    );
}

#[test]
fn a_disabled_guard_counts_nothing() {
    let config = OracleGuardConfig {
        enabled: false,
        ..OracleGuardConfig::default()
    };
    let g = OracleGuard::new(&config, Vec::<(TenantId, GuardOverrides)>::new());
    let cards: Vec<Pan> = (0..40).map(same_group).collect();
    let all: Vec<&Pan> = cards.iter().collect();
    assert!(
        g.check(&tenant(), "cart", TokenProfile::BinLast4, &all)
            .is_ok()
    );
    assert_eq!(g.sweep(), GuardStats::default());
}
