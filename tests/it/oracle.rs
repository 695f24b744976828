//! The oracle attack (issue 37): a principal holding `tokenize` or
//! `lookup` but not `detokenize` tries to turn a token back into its card
//! by testing candidates that share the token's BIN and last 4. The guard
//! must refuse before the matching candidate is reached, create no token
//! for refused candidates, audit the refusal and raise an alert naming the
//! principal and the group — never a PAN. Real server, real mTLS, real
//! RocksDB; the refused candidates are checked against the database
//! afterwards with the vault opened directly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use cardvault::config::{GuardOverrides, PrincipalConfig, Role, TenantConfig};
use cardvault::crypto::KeyFileProvider;
use cardvault::domain::{TenantId, TokenProfile};
use cardvault::{Pan, Vault, VaultOptions};
use hyper::StatusCode;
use serde_json::{Value, json};

use crate::common::harness::{Harness, ops_get};
use crate::common::{self, assert_api_error, entries, luhn_complete, of_kind};

/// The victim's card: BIN 411111, last 4 7395, 16 digits.
const BIN: &str = "411111";
const LAST4: &str = "7395";

/// Every Luhn-valid 16-digit number with [`BIN`] and [`LAST4`], in the
/// order an attacker would try them (middle digits counting up); the first
/// `n`.
fn candidates(n: usize) -> Vec<String> {
    (0..1_000_000u32)
        .map(|middle| format!("{BIN}{middle:06}{LAST4}"))
        .filter(|s| cardvault::domain::luhn::passes(s.as_bytes()))
        .take(n)
        .collect()
}

/// The victim sits at position 40,000 of the attacker's list.
const VICTIM_AT: usize = 40_000;

fn pki_issue(harness: &Harness, name: &str) {
    cardvault::pki::issue(&harness.pki(), name).unwrap();
}

fn principal(roles: &[Role]) -> PrincipalConfig {
    PrincipalConfig {
        tenant: TenantId::parse("default").unwrap(),
        roles: roles.to_vec(),
        detokenize_hours_utc: None,
        scope: Default::default(),
        require_reason: false,
    }
}

/// After the service stopped: whether `pan` has a token in `default`.
async fn has_token(vault: &Vault, pan: &str) -> bool {
    let pan = Pan::parse(pan).unwrap();
    vault
        .lookup(&TenantId::parse("default").unwrap(), &pan)
        .await
        .is_ok()
}

fn open_vault(harness: &Harness) -> Vault {
    let provider = KeyFileProvider::open(&harness.dir.path().join("kek.key")).unwrap();
    Vault::open(
        &harness.config.storage.data_dir,
        Arc::new(provider),
        VaultOptions::default(),
    )
    .unwrap()
}

/// The refusals and alerts of the trail: every refusal names the code and
/// the group, the alert names the principal and the group, and no entry
/// holds any candidate's digits.
fn assert_audited(harness: &Harness, principal: &str, tier: &str, pans: &[String]) {
    let all = entries(&harness.config.audit.dir);
    let refused: Vec<&Value> = all
        .iter()
        .filter(|e| e["code"] == "enumeration_suspected")
        .collect();
    assert!(!refused.is_empty(), "no refusal in the trail");
    let group = format!("BIN {BIN} last 4 {LAST4}, 16 digits");
    for e in &refused {
        let detail = e["detail"].as_str().unwrap();
        assert!(detail.contains(&group), "{e}");
        assert_eq!(e["outcome"], "error", "{e}");
    }
    let alerts: Vec<&Value> = of_kind(&all, "alert")
        .into_iter()
        .filter(|e| {
            e["detail"]
                .as_str()
                .unwrap()
                .starts_with("card_enumeration")
        })
        .collect();
    assert!(
        alerts.iter().any(|a| a["principal"] == principal
            && a["detail"].as_str().unwrap().contains(&group)
            && a["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("{tier} tier"))),
        "no alert for {principal} ({tier} tier): {alerts:?}"
    );
    let trail: String = all.iter().map(Value::to_string).collect();
    for pan in pans {
        assert!(!trail.contains(pan.as_str()), "a candidate is in the trail");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_enumeration_is_refused_before_it_reaches_the_victim() {
    let harness = Harness::new();
    let service = harness.start().await;
    let list = candidates(VICTIM_AT + 1);
    let victim = list[VICTIM_AT].clone();
    let mut payments = harness.connect("payments", service.api_addr).await;
    let victim_token = common::tokenize(&mut payments, &victim).await;
    assert!(victim_token.starts_with(BIN) && victim_token.ends_with(LAST4));

    // As in the report: batches of 10,000 candidates, up to the victim.
    // The first is refused whole, and so is every later one (refused
    // cards are not counted, so they never eat into the window either).
    let mut cart = harness.connect("cart", service.api_addr).await;
    for chunk in list[..VICTIM_AT].chunks(10_000) {
        let reply = cart
            .post_json("/v1/tokenize/batch", &json!({ "pans": chunk }))
            .await
            .unwrap();
        assert_api_error(
            &reply,
            StatusCode::TOO_MANY_REQUESTS,
            "enumeration_suspected",
            "a batch of one group",
        );
        assert!(reply.retry_after.is_some_and(|s| (1..=3600).contains(&s)));
        assert!(!String::from_utf8_lossy(&reply.body).contains(&victim));
    }
    // Then an attacker under the threshold: 20 at a time. At most 32
    // distinct candidates ever pass; the victim is not among them.
    let mut accepted = Vec::new();
    for chunk in list.chunks(20).take(4) {
        let reply = cart
            .post_json("/v1/tokenize/batch", &json!({ "pans": chunk }))
            .await
            .unwrap();
        if reply.status == StatusCode::OK {
            for item in reply.json()["results"].as_array().unwrap() {
                let token = item["token"].as_str().unwrap();
                assert_ne!(token, victim_token);
                accepted.push(token.to_owned());
            }
        } else {
            assert_api_error(
                &reply,
                StatusCode::TOO_MANY_REQUESTS,
                "enumeration_suspected",
                "over the threshold",
            );
        }
    }
    assert!(accepted.len() <= 32, "{} passed", accepted.len());
    // The rest of the vault is unaffected: another group, another card.
    common::tokenize(&mut cart, "5105105105105100").await;
    drop((cart, payments));
    service.stop().await.unwrap();

    assert_audited(&harness, "cart", "principal", &list);
    // No token was made for any refused candidate.
    let vault = open_vault(&harness);
    let made: usize = {
        let mut n = 0;
        for pan in &list[..VICTIM_AT] {
            if has_token(&vault, pan).await {
                n += 1;
            }
        }
        n
    };
    assert_eq!(made, accepted.len());
    assert!(has_token(&vault, &victim).await);
    vault.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_tokenize_and_lookup_are_refused_the_same_way() {
    let harness = Harness::new();
    let service = harness.start().await;
    let list = candidates(VICTIM_AT + 1);
    let victim = &list[VICTIM_AT];
    let mut payments = harness.connect("payments", service.api_addr).await;
    common::tokenize(&mut payments, victim).await;

    for (route, principal) in [("/v1/tokenize", "cart"), ("/v1/lookup", "cart")] {
        // Both routes count in the cart's one window for this group: the
        // lookups of the 32 cards it tokenized pass (found), the next is
        // refused.
        let mut conn = harness.connect(principal, service.api_addr).await;
        let mut refused_at = None;
        for (i, pan) in list.iter().take(40).enumerate() {
            let reply = conn.post_json(route, &json!({ "pan": pan })).await.unwrap();
            if reply.status == StatusCode::TOO_MANY_REQUESTS {
                assert_api_error(
                    &reply,
                    StatusCode::TOO_MANY_REQUESTS,
                    "enumeration_suspected",
                    route,
                );
                refused_at.get_or_insert(i);
            } else {
                assert!(refused_at.is_none(), "{route}: passed after a refusal");
                assert!(
                    reply.status == StatusCode::OK || reply.status == StatusCode::NOT_FOUND,
                    "{route}: {}",
                    reply.status
                );
            }
        }
        assert_eq!(refused_at, Some(32), "{route}");
    }
    // A card the cart already presented still passes (a returning
    // customer), through both routes.
    let mut cart = harness.connect("cart", service.api_addr).await;
    common::tokenize(&mut cart, &list[3]).await;
    let reply = cart
        .post_json("/v1/lookup", &json!({ "pan": list[3] }))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    drop((cart, payments));
    service.stop().await.unwrap();
    assert_audited(&harness, "cart", "principal", &list);
    let vault = open_vault(&harness);
    for pan in &list[32..VICTIM_AT] {
        assert!(
            !has_token(&vault, pan).await,
            "a refused candidate got a token"
        );
    }
    vault.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enumeration_spread_over_three_principals_trips_the_tenant_guard() {
    let harness = Harness::with(|config| {
        for name in ["cart1", "cart2", "cart3"] {
            config
                .principals
                .insert(name.into(), principal(&[Role::Tokenize]));
        }
    });
    for name in ["cart1", "cart2", "cart3"] {
        pki_issue(&harness, name);
    }
    let service = harness.start().await;
    let list = candidates(VICTIM_AT + 1);
    let mut payments = harness.connect("payments", service.api_addr).await;
    common::tokenize(&mut payments, &list[VICTIM_AT]).await;
    let mut conns = Vec::new();
    for name in ["cart1", "cart2", "cart3"] {
        conns.push(harness.connect(name, service.api_addr).await);
    }
    // 10 cards per principal and round: each stays under its own 32 for
    // three rounds; the tenant's 64 (the victim's card included) is
    // crossed in the third, and nothing passes after it.
    let mut passed = 0;
    let mut refusals = 0;
    for (round, chunk) in list.chunks(30).take(6).enumerate() {
        for (conn, part) in conns.iter_mut().zip(chunk.chunks(10)) {
            let reply = conn
                .post_json("/v1/tokenize/batch", &json!({ "pans": part }))
                .await
                .unwrap();
            if reply.status == StatusCode::OK {
                passed += part.len();
            } else {
                assert_api_error(
                    &reply,
                    StatusCode::TOO_MANY_REQUESTS,
                    "enumeration_suspected",
                    "spread",
                );
                refusals += 1;
            }
        }
        assert!(passed <= 64, "round {round}: {passed} passed");
    }
    assert_eq!(passed, 60);
    assert_eq!(refusals, 12);
    drop((conns, payments));
    service.stop().await.unwrap();
    let all = entries(&harness.config.audit.dir);
    assert!(
        of_kind(&all, "alert")
            .iter()
            .any(|a| a["detail"].as_str().unwrap().contains("tenant tier")),
        "no tenant-tier alert"
    );
    assert_audited(&harness, "cart1", "tenant", &list);
}

/// Realistic traffic never trips the guard: new cards, repeated cards, a
/// burst of 10,000 distinct cards in one batch, several cards sharing a
/// BIN with different last 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legitimate_traffic_passes_untouched() {
    let harness = Harness::new();
    let service = harness.start().await;
    let mut cart = harness.connect("cart", service.api_addr).await;
    let mut generator = cardvault::load::PanGenerator::new(37);
    let burst: Vec<String> = (0..10_000).map(|_| generator.next_pan()).collect();
    let reply = cart
        .post_json("/v1/tokenize/batch", &json!({ "pans": burst }))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.json()["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["token"].is_string())
    );
    // The same cards again, one at a time for a slice of them (returning
    // customers), and lookups of them.
    for pan in burst.iter().step_by(97) {
        common::tokenize(&mut cart, pan).await;
        let reply = cart
            .post_json("/v1/lookup", &json!({ "pan": pan }))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    // Forty cards of one BIN, each with its own last 4.
    for i in 0..40u32 {
        let pan = luhn_complete(&format!("411111{:05}{:04}", i * 7, i * 37 % 10_000));
        common::tokenize(&mut cart, &pan).await;
    }
    drop(cart);
    service.stop().await.unwrap();
    let all = entries(&harness.config.audit.dir);
    assert!(all.iter().all(|e| e["code"] != "enumeration_suspected"));
    assert!(
        of_kind(&all, "alert").is_empty(),
        "{:?}",
        of_kind(&all, "alert")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_on_enumeration_stops_the_principal_until_an_admin_clears_it() {
    let harness = Harness::with(|config| config.alerts.block_on_enumeration = true);
    let service = harness.start().await;
    let list = candidates(40);
    let mut cart = harness.connect("cart", service.api_addr).await;
    let reply = cart
        .post_json("/v1/tokenize/batch", &json!({ "pans": list }))
        .await
        .unwrap();
    assert_api_error(
        &reply,
        StatusCode::TOO_MANY_REQUESTS,
        "enumeration_suspected",
        "batch",
    );
    // Blocked now, even for a card of another group.
    let reply = cart
        .post_json("/v1/tokenize", &json!({ "pan": "5105105105105100" }))
        .await
        .unwrap();
    assert_api_error(&reply, StatusCode::FORBIDDEN, "forbidden", "blocked");
    let mut admin = harness.connect("admin", service.api_addr).await;
    let blocks = admin.get("/v1/admin/alerts").await.unwrap().json();
    assert_eq!(blocks["blocked"], json!(["cart"]));
    let reply = admin
        .post_json("/v1/admin/alerts/clear", &json!({ "principal": "cart" }))
        .await
        .unwrap();
    assert_eq!(reply.json()["was_blocked"], true);
    common::tokenize(&mut cart, "5105105105105100").await;
    let (_, metrics) = ops_get(service.ops_addr, "/metrics").await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("cardvault_alerts_total{rule=\"card_enumeration\"}")
                && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
    drop((cart, admin));
    service.stop().await.unwrap();
}

/// The guard's state lives in memory, as the rate limits' does: a restart
/// starts every window afresh (docs/service.md says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_starts_the_windows_afresh_as_documented() {
    let harness = Harness::new();
    let list = candidates(70);
    let service = harness.start().await;
    let mut cart = harness.connect("cart", service.api_addr).await;
    let reply = cart
        .post_json("/v1/tokenize/batch", &json!({ "pans": list[..32] }))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let reply = cart
        .post_json("/v1/tokenize", &json!({ "pan": list[32] }))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    drop(cart);
    service.stop().await.unwrap();
    let service = harness.start().await;
    let mut cart = harness.connect("cart", service.api_addr).await;
    common::tokenize(&mut cart, &list[32]).await;
    drop(cart);
    service.stop().await.unwrap();
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/service.md"),
    )
    .unwrap();
    assert!(docs.contains("a restart starts every window afresh"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_is_its_own_role_once_the_compat_switch_is_off() {
    let harness = Harness::with(|config| {
        config.compat.lookup_via_tokenize_or_read = false;
        config
            .principals
            .insert("reader".into(), principal(&[Role::Tokenize, Role::Read]));
    });
    pki_issue(&harness, "reader");
    let service = harness.start().await;
    let mut cart = harness.connect("cart", service.api_addr).await;
    common::tokenize(&mut cart, "5105105105105100").await;
    let reply = cart
        .post_json("/v1/lookup", &json!({ "pan": "5105105105105100" }))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK, "cart holds lookup");
    let mut reader = harness.connect("reader", service.api_addr).await;
    let reply = reader
        .post_json("/v1/lookup", &json!({ "pan": "5105105105105100" }))
        .await
        .unwrap();
    assert_api_error(&reply, StatusCode::FORBIDDEN, "forbidden", "no lookup role");
    drop((cart, reader));
    service.stop().await.unwrap();

    // With the switch at its default, the older config keeps working and
    // the start names the principals that rely on it.
    let older = Harness::with(|config| {
        config
            .principals
            .insert("reader".into(), principal(&[Role::Tokenize, Role::Read]));
    });
    assert_eq!(
        older.config.lookup_via_compat(),
        ["admin", "payments", "reader"]
    );
    pki_issue(&older, "reader");
    let service = older.start().await;
    let mut reader = older.connect("reader", service.api_addr).await;
    let reply = reader
        .post_json("/v1/lookup", &json!({ "pan": "5105105105105100" }))
        .await
        .unwrap();
    assert_api_error(
        &reply,
        StatusCode::NOT_FOUND,
        "token_not_found",
        "compat lookup",
    );
    drop(reader);
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last4_tenant_keeps_no_bin_and_its_groups_are_last4_wide() {
    let harness = Harness::with(|config| {
        config.tenants.insert(
            TenantId::parse("default").unwrap(),
            TenantConfig {
                token_profile: TokenProfile::Last4,
                oracle_guard: GuardOverrides {
                    last4_principal_max: std::num::NonZeroU32::new(3),
                    ..GuardOverrides::default()
                },
                ..TenantConfig::default()
            },
        );
    });
    let service = harness.start().await;
    let mut cart = harness.connect("cart", service.api_addr).await;
    let reply = cart
        .post_json("/v1/tokenize", &json!({ "pan": "4111111111111111" }))
        .await
        .unwrap();
    let body = reply.json();
    assert_eq!(body["bin"], Value::Null, "{body}");
    let token = body["token"].as_str().unwrap();
    assert!(token.ends_with("1111"));
    let meta = cart
        .get(&format!("/v1/tokens/{token}"))
        .await
        .unwrap()
        .json();
    assert_eq!(meta["bin"], Value::Null, "{meta}");
    // Cards of three other BINs with the same last 4: one group here.
    for (i, bin) in ["522222", "601100", "353011"].iter().enumerate() {
        let pan = (0..1000)
            .map(|m| luhn_complete(&format!("{bin}{m:06}111")))
            .find(|p| p.ends_with("1111"))
            .unwrap();
        let reply = cart
            .post_json("/v1/tokenize", &json!({ "pan": pan }))
            .await
            .unwrap();
        let expected = if i < 2 {
            StatusCode::OK
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(reply.status, expected, "card {i}");
    }
    drop(cart);
    service.stop().await.unwrap();
    let all = entries(&harness.config.audit.dir);
    assert!(all.iter().any(|e| {
        e["detail"]
            .as_str()
            .is_some_and(|d| d.contains("last 4 1111, 16 digits") && !d.contains("BIN"))
    }));
}
