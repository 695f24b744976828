//! Expiring tokens on the real service: `ttl_s` on tokenize (single and
//! batch) shows as `expires_at`; once past it every route answers 404
//! `token_not_found`, a deterministic tenant gives the PAN a new token, and
//! the sweep deletes the record from RocksDB (checked on the store itself
//! after the service stops), audited as `tokens_expired`. A PAN with a
//! live permanent token keeps it; a bad `ttl_s` is refused.

use std::time::{Duration, Instant};

use cardvault::store::Store as _;
use cardvault::{TenantId, Token};
use hyper::StatusCode;
use serde_json::json;

use crate::common::harness::Harness;
use crate::common::{self, assert_api_error, luhn_complete};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_gone_from_every_route_and_from_disk() {
    let harness = Harness::new();
    let service = harness.start().await;
    let api = service.api_addr;
    let mut cart = harness.connect("cart", api).await;
    let mut payments = harness.connect("payments", api).await;
    let mut admin = harness.connect("admin", api).await;
    let pans: Vec<String> = (0..3)
        .map(|i| luhn_complete(&format!("45{i:013}")))
        .collect();

    let one = cart
        .post_json("/v1/tokenize", &json!({"pan": pans[0], "ttl_s": 1}))
        .await
        .unwrap();
    assert_eq!(one.status, 200);
    let first = one.json();
    assert!(
        first["expires_at"].as_str().unwrap().ends_with('Z'),
        "{first}"
    );
    let batch = cart
        .post_json(
            "/v1/tokenize/batch",
            &json!({"pans": [pans[1], pans[2]], "ttl_s": 1}),
        )
        .await
        .unwrap()
        .json();
    let mut tokens = vec![first["token"].as_str().unwrap().to_owned()];
    for r in batch["results"].as_array().unwrap() {
        assert!(r["expires_at"].is_string(), "{r}");
        tokens.push(r["token"].as_str().unwrap().to_owned());
    }
    let meta = cart
        .get(&format!("/v1/tokens/{}", tokens[0]))
        .await
        .unwrap()
        .json();
    assert_eq!(meta["expires_at"], first["expires_at"]);
    let live = payments
        .post_json("/v1/detokenize", &json!({"token": tokens[0]}))
        .await
        .unwrap();
    assert_eq!(live.json()["pan"], pans[0].as_str());

    // A permanent token stays as it is when a TTL is asked later.
    let keep = luhn_complete("450000000099999");
    let permanent = common::tokenize(&mut cart, &keep).await;
    let again = cart
        .post_json("/v1/tokenize", &json!({"pan": keep, "ttl_s": 1}))
        .await
        .unwrap()
        .json();
    assert_eq!(again["token"], permanent.as_str());
    assert!(again.get("expires_at").is_none());

    for bad in [json!(0), json!(400_000_000u64), json!(-1), json!("60")] {
        let reply = cart
            .post_json("/v1/tokenize", &json!({"pan": pans[0], "ttl_s": bad}))
            .await
            .unwrap();
        assert_api_error(
            &reply,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "bad ttl_s",
        );
    }

    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let t = &tokens[0];
    let reply = payments
        .post_json("/v1/detokenize", &json!({"token": t}))
        .await
        .unwrap();
    assert_api_error(
        &reply,
        StatusCode::NOT_FOUND,
        "token_not_found",
        "detokenize",
    );
    let reply = cart.get(&format!("/v1/tokens/{t}")).await.unwrap();
    assert_api_error(&reply, StatusCode::NOT_FOUND, "token_not_found", "metadata");
    let reply = cart
        .post_json(&format!("/v1/tokens/{t}/cvc"), &json!({"cvc": "123"}))
        .await
        .unwrap();
    assert_api_error(&reply, StatusCode::NOT_FOUND, "token_not_found", "cvc");
    let reply = admin
        .send(hyper::Method::DELETE, &format!("/v1/tokens/{t}"), None)
        .await
        .unwrap();
    assert_api_error(&reply, StatusCode::NOT_FOUND, "token_not_found", "delete");
    let reply = payments
        .post_json("/v1/detokenize/batch", &json!({"tokens": [tokens[1]]}))
        .await
        .unwrap();
    assert_eq!(
        reply.json()["results"][0]["error"]["code"],
        "token_not_found"
    );

    // The PAN gets a new token (deterministic tenant).
    let fresh = common::tokenize(&mut cart, &pans[1]).await;
    assert_ne!(fresh, tokens[1]);
    let reply = cart
        .post_json("/v1/lookup", &json!({"pan": pans[2]}))
        .await
        .unwrap();
    assert_api_error(&reply, StatusCode::NOT_FOUND, "token_not_found", "lookup");

    // The sweep deletes what is left: tokens[0], and tokens[2] (with
    // tokens[1] unless the fresh tokenize above deleted it when it noticed
    // it). Tokens of one batch expire in the same millisecond, so two swept
    // (this trail's own `tokens_expired` counts, not the process-wide
    // metric other tests add to) means all are gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let swept: u64 = common::of_kind(
            &common::entries(&harness.config.audit.dir),
            "tokens_expired",
        )
        .iter()
        .filter_map(|e| e["count"].as_u64())
        .sum();
        if swept >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no sweep after 20 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop((cart, payments, admin));
    service.stop().await.unwrap();

    let store = cardvault::store::rocksdb::RocksStore::open(
        &harness.config.storage.data_dir,
        &Default::default(),
    )
    .unwrap();
    let tenant = TenantId::parse("default").unwrap();
    for t in &tokens {
        let token = Token::parse(t).unwrap();
        assert!(
            store.get_entry(&tenant, &token).await.unwrap().is_none(),
            "{t} still stored"
        );
    }
    assert!(store.expired(u64::MAX, 10).await.unwrap().is_empty());
    let kept = Token::parse(&permanent).unwrap();
    assert!(store.get_entry(&tenant, &kept).await.unwrap().is_some());
    Box::new(store).close(Vec::new()).await.unwrap();
    let trail = common::entries(&harness.config.audit.dir);
    let swept = common::of_kind(&trail, "tokens_expired");
    assert!(!swept.is_empty());
}
