//! A vault node on a real PostgreSQL 15 whose database fails under it:
//! a commit that cannot complete (a synchronous standby that is not
//! there) and the server stopped and started again. `/readyz` answers 503
//! with the reason while writes cannot commit — so a load balancer drains
//! the node — and 200 again by itself; requests meanwhile get 503
//! `unavailable`, and the node serves again without a restart, every token
//! acknowledged before still there.

use std::time::{Duration, Instant};

use cardvault::config::{DatabaseUrl, StorageBackend};
use serde_json::json;

use crate::common::harness::{Harness, ops_json};
use crate::common::postgres::Postgres;
use crate::common::{luhn_complete, tokenize};

/// `/readyz`: status and the `storage` field.
async fn readyz(addr: std::net::SocketAddr) -> (u16, String) {
    let (status, value) = ops_json(addr, "/readyz").await;
    (status, value["storage"].as_str().unwrap_or("").to_owned())
}

/// Polls `/readyz` until it answers `status` (at most 30 s).
async fn await_readyz(addr: std::net::SocketAddr, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (now, storage) = readyz(addr).await;
        if now == status {
            return storage;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {now} ({storage}), expected {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A harness whose vault stores in `pg`, adjusted by `adjust`.
fn on(pg: &Postgres, adjust: impl FnOnce(&mut cardvault::config::Config)) -> Harness {
    let url = pg.url();
    Harness::with(|c| {
        c.storage.backend = StorageBackend::Postgres;
        c.storage.url = Some(DatabaseUrl(url.into()));
        adjust(c);
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_whether_the_database_takes_writes() {
    let pg = Postgres::start();
    let harness = on(&pg, |c| {
        c.storage.commit_bound_ms = std::num::NonZeroU64::new(1000).unwrap();
        c.limits.request_timeout_ms = std::num::NonZeroU64::new(3000).unwrap();
    });
    let node = cardvault::server::Service::launch(&harness.config)
        .await
        .unwrap();
    assert_eq!(readyz(node.ops_addr).await, (200, "ready".to_owned()));
    let mut cart = harness.connect("cart", node.api_addr).await;
    let pan = luhn_complete("411111000012345");
    let token = tokenize(&mut cart, &pan).await;

    // Every commit now waits for a standby that does not exist.
    let admin = pg.client().await;
    for statement in [
        "ALTER SYSTEM SET synchronous_standby_names = 'ghost'",
        "SELECT pg_reload_conf()",
    ] {
        admin.batch_execute(statement).await.unwrap();
    }
    assert_eq!(await_readyz(node.ops_addr, 503).await, "commit_stalled");
    // A write meanwhile is not acknowledged (the request times out: 503).
    let other = luhn_complete("411111000054321");
    let reply = cart
        .post_json("/v1/tokenize", &json!({"pan": other}))
        .await
        .unwrap();
    assert_eq!(
        reply.status,
        503,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    for statement in [
        "ALTER SYSTEM RESET synchronous_standby_names",
        "SELECT pg_reload_conf()",
    ] {
        admin.batch_execute(statement).await.unwrap();
    }
    assert_eq!(await_readyz(node.ops_addr, 200).await, "ready");
    drop(admin);

    // The server stopped: 503 `unavailable`, /readyz 503 "unreachable".
    pg.stop();
    assert_eq!(await_readyz(node.ops_addr, 503).await, "unreachable");
    let mut cart = harness.connect("cart", node.api_addr).await;
    let reply = cart
        .post_json("/v1/tokenize", &json!({"pan": pan}))
        .await
        .unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json()["error"]["code"], "unavailable");

    // Started again: the node serves without a restart, the token is there,
    // and the PAN still has its one token.
    pg.start_again();
    assert_eq!(await_readyz(node.ops_addr, 200).await, "ready");
    assert_eq!(tokenize(&mut cart, &pan).await, token);
    let mut payments = harness.connect("payments", node.api_addr).await;
    let reply = payments
        .post_json("/v1/detokenize", &json!({"token": token}))
        .await
        .unwrap();
    assert_eq!(reply.json()["pan"], pan.as_str());
    node.stop().await.unwrap();
}

/// The sum of the data-key encryption counters in the database.
async fn encryptions(pg: &Postgres) -> i64 {
    pg.client()
        .await
        .query_one(
            "SELECT COALESCE(SUM(value), 0)::int8 FROM cardvault_counters WHERE tenant <> ''",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Launches a node, tokenizes `n` fresh PANs (from `first`), stops it
/// cleanly.
async fn run_node(harness: &Harness, first: u64, n: u64) {
    let node = cardvault::server::Service::launch(&harness.config)
        .await
        .unwrap();
    let mut cart = harness.connect("cart", node.api_addr).await;
    for i in first..first + n {
        tokenize(&mut cart, &luhn_complete(&format!("5500{i:011}"))).await;
    }
    node.stop().await.unwrap();
}

/// Key budget a node's restarts burn: a clean restart none (its counters
/// were committed with every write, and its directory says it closed
/// cleanly), a crash at most the margin — never one per start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_restart_burns_no_key_budget_and_a_crash_the_margin_once() {
    let pg = Postgres::start();
    let harness = on(&pg, |_| {});
    run_node(&harness, 0, 5).await;
    assert_eq!(encryptions(&pg).await, 5);
    run_node(&harness, 100, 5).await;
    run_node(&harness, 200, 5).await;
    assert_eq!(encryptions(&pg).await, 15, "clean restarts burned budget");

    // A crash leaves no marker: the next start adds the margin, once.
    let marker = harness.config.storage.data_dir.join("counters-clean");
    std::fs::remove_file(&marker).unwrap();
    run_node(&harness, 300, 5).await;
    let margin = cardvault::vault::UNCLEAN_SHUTDOWN_COUNTER_MARGIN as i64;
    assert_eq!(encryptions(&pg).await, 20 + margin);
    run_node(&harness, 400, 5).await;
    assert_eq!(encryptions(&pg).await, 25 + margin);
}
