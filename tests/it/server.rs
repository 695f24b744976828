//! The mTLS service end to end: a real server on 127.0.0.1 port 0 with a PKI
//! generated in a temp dir, real RocksDB, real rustls on both sides.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use crate::common::harness::{Harness, ops_get};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cardvault::client::ClientTls;
use cardvault::pki::{self, Ca, Validity};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

const PAN: &str = "4111111111111111";
const CANARY: &str = "4929123456781236";

async fn try_request(tls: &ClientTls, addr: SocketAddr) -> Result<StatusCode, String> {
    let mut conn = tls.connect(addr).await.map_err(|e| e.to_string())?;
    let reply = conn
        .post_json("/v1/tokenize", &json!({ "pan": PAN }))
        .await
        .map_err(|e| e.to_string())?;
    Ok(reply.status)
}

fn write_pair(dir: &Path, name: &str, issued: &pki::Issued) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    pki::write_file(&cert, &issued.cert_pem, false).unwrap();
    pki::write_file(&key, &issued.key_pem, true).unwrap();
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_without_a_valid_client_certificate_are_refused() {
    let revoked_dir = tempfile::tempdir().unwrap();
    // A CRL revoking one client of the test CA, configured on the server.
    let pending = Harness::new();
    let ca = Ca::load(&pending.pki()).unwrap();
    let revoked = ca.issue_client("payments", Validity::days(30)).unwrap();
    let (revoked_cert, revoked_key) = write_pair(revoked_dir.path(), "revoked", &revoked);
    let expired = ca.issue_client("payments", Validity::expired()).unwrap();
    let (expired_cert, expired_key) = write_pair(revoked_dir.path(), "expired", &expired);
    let crl_path = pending.pki().join("crl.pem");
    std::fs::write(
        &crl_path,
        ca.crl(std::slice::from_ref(&revoked.serial)).unwrap(),
    )
    .unwrap();
    let mut config = pending.config.clone();
    config.api.crls = vec![crl_path];
    let harness = Harness {
        dir: pending.dir,
        config,
    };
    let running = harness.start().await;
    let addr = running.api_addr;
    let ca_pem = harness.pki().join("ca.pem");

    // The good one works.
    assert_eq!(
        try_request(&harness.tls("payments"), addr).await,
        Ok(StatusCode::OK)
    );
    // No client certificate.
    let anonymous = ClientTls::from_files(&ca_pem, None, false).unwrap();
    assert!(try_request(&anonymous, addr).await.is_err());
    // A certificate from another CA.
    let other = Ca::generate("other CA").unwrap();
    let foreign = other.issue_client("payments", Validity::days(30)).unwrap();
    let (fc, fk) = write_pair(revoked_dir.path(), "foreign", &foreign);
    let foreign = ClientTls::from_files(&ca_pem, Some((&fc, &fk)), false).unwrap();
    assert!(try_request(&foreign, addr).await.is_err());
    // Expired.
    let expired =
        ClientTls::from_files(&ca_pem, Some((&expired_cert, &expired_key)), false).unwrap();
    assert!(try_request(&expired, addr).await.is_err());
    // Revoked by the CRL.
    let revoked =
        ClientTls::from_files(&ca_pem, Some((&revoked_cert, &revoked_key)), false).unwrap();
    assert!(try_request(&revoked, addr).await.is_err());
    // TLS 1.2 is refused by default.
    let pki = harness.pki();
    let tls12 = ClientTls::from_files(
        &ca_pem,
        Some((&pki.join("payments.pem"), &pki.join("payments-key.pem"))),
        true,
    )
    .unwrap();
    assert!(try_request(&tls12, addr).await.is_err());
    // ...and the good one still works: the acceptor was not disturbed.
    assert_eq!(
        try_request(&harness.tls("payments"), addr).await,
        Ok(StatusCode::OK)
    );

    let (_, metrics) = ops_get(running.ops_addr, "/metrics").await;
    for reason in [
        "no_client_certificate",
        "unknown_issuer",
        "expired",
        "revoked",
    ] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "no handshake failure metric for {reason}:\n{metrics}"
        );
    }
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_does_not_hold_the_acceptor() {
    let harness =
        Harness::with(|c| c.limits.handshake_timeout_ms = std::num::NonZeroU64::new(300).unwrap());
    let running = harness.start().await;
    // Open connections that never speak TLS.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(
            tokio::net::TcpStream::connect(running.api_addr)
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        try_request(&harness.tls("cart"), running.api_addr).await,
        Ok(StatusCode::OK)
    );
    // After the handshake timeout the server has closed them.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let mut buf = [0u8; 1];
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(2), silent[0].read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "silent connection still open: {read:?}"
    );
    drop(silent);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_who_may_do_what() {
    let harness = Harness::new();
    let running = harness.start().await;
    let addr = running.api_addr;
    let mut cart = harness.connect("cart", addr).await;
    let mut payments = harness.connect("payments", addr).await;
    let mut admin = harness.connect("admin", addr).await;
    let mut stranger = harness.connect("stranger", addr).await;

    let reply = cart
        .post_json("/v1/tokenize", &json!({ "pan": PAN, "expiry": "12/29" }))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    let token = body["token"].as_str().unwrap().to_string();
    assert_eq!(body["bin"], "411111");
    assert_eq!(body["last4"], "1111");
    assert_eq!(body["brand"], "visa");
    assert_eq!(token.len(), 16);
    assert!(reply.request_id.is_some());

    let reply = cart
        .post_json("/v1/detokenize", &json!({ "token": token }))
        .await
        .unwrap();
    common::assert_api_error(&reply, StatusCode::FORBIDDEN, "forbidden", "forbidden");

    let reply = payments
        .post_json("/v1/detokenize", &json!({ "token": token }))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({ "pan": PAN, "expiry": "12/29" }));

    let reply = cart.get(&format!("/v1/tokens/{token}")).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let meta = reply.json();
    assert_eq!(meta["token"], token.as_str());
    assert_eq!(meta["expiry"], "12/29");
    assert!(meta["created_at"].as_str().unwrap().ends_with('Z'));

    let reply = cart
        .send(Method::DELETE, &format!("/v1/tokens/{token}"), None)
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    // A principal the config does not know: 403 on everything, even unknown paths.
    for path in ["/v1/tokenize", "/nowhere"] {
        let reply = stranger
            .post_json(path, &json!({ "pan": PAN }))
            .await
            .unwrap();
        common::assert_api_error(&reply, StatusCode::FORBIDDEN, "forbidden", path);
    }

    let reply = admin
        .send(Method::DELETE, &format!("/v1/tokens/{token}"), None)
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = payments
        .post_json("/v1/detokenize", &json!({ "token": token }))
        .await
        .unwrap();
    common::assert_api_error(
        &reply,
        StatusCode::NOT_FOUND,
        "token_not_found",
        "token_not_found",
    );
    drop((cart, payments, admin, stranger));
    running.stop().await.unwrap();
}

/// One row of the error-code table: (what, as whom, method, path, body,
/// expected status, expected code).
type ErrorCase = (
    &'static str,
    &'static str,
    Method,
    String,
    Option<(&'static str, Vec<u8>)>,
    StatusCode,
    &'static str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_code_is_produced_and_no_error_echoes_the_pan() {
    // A small body limit, so the oversized body below fits in the socket
    // buffers and the client finishes writing before the 413 arrives.
    let harness = Harness::with(|c| {
        c.limits.max_batch = std::num::NonZeroUsize::new(100).unwrap();
        c.limits.body_limit_bytes = std::num::NonZeroUsize::new(4096).unwrap();
    });
    let running = harness.start().await;
    let addr = running.api_addr;
    let mut payments = harness.connect("payments", addr).await;
    let mut cart = harness.connect("cart", addr).await;
    let bad_luhn = "4929123456781232"; // the canary with a wrong check digit
    let json_body = |value: Value| Some(("application/json", serde_json::to_vec(&value).unwrap()));
    let huge = format!(
        "{{\"pan\": \"{CANARY}\", \"pad\": \"{}\"}}",
        "0".repeat(8 << 10)
    );
    let pans: Vec<&str> = std::iter::repeat_n(CANARY, 101).collect();
    let mut cases: Vec<ErrorCase> = vec![
        (
            "broken JSON around a PAN (serde would quote it)",
            "payments",
            Method::POST,
            "/v1/tokenize".into(),
            Some((
                "application/json",
                format!("{{\"pan\": \"{CANARY}\",,}}").into_bytes(),
            )),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "unknown field",
            "payments",
            Method::POST,
            "/v1/tokenize".into(),
            json_body(json!({ "pan": CANARY, "name": "x" })),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "wrong type holding the PAN",
            "payments",
            Method::POST,
            "/v1/tokenize".into(),
            json_body(json!({ "pan": CANARY.parse::<u64>().unwrap() })),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "Luhn failure",
            "payments",
            Method::POST,
            "/v1/tokenize".into(),
            json_body(json!({ "pan": bad_luhn })),
            StatusCode::BAD_REQUEST,
            "invalid_pan",
        ),
        (
            "stray character",
            "payments",
            Method::POST,
            "/v1/tokenize".into(),
            json_body(json!({ "pan": format!("{CANARY}x") })),
            StatusCode::BAD_REQUEST,
            "invalid_pan",
        ),
        (
            "a PAN where a token belongs, in a body",
            "payments",
            Method::POST,
            "/v1/detokenize".into(),
            json_body(json!({ "token": CANARY })),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "a PAN where a token belongs, in a path",
            "payments",
            Method::GET,
            format!("/v1/tokens/{CANARY}"),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "role missing",
            "cart",
            Method::POST,
            "/v1/detokenize".into(),
            json_body(json!({ "token": "4111111111111112" })),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "unknown token, detokenize",
            "payments",
            Method::POST,
            "/v1/detokenize".into(),
            json_body(json!({ "token": "4111111111111112" })),
            StatusCode::NOT_FOUND,
            "token_not_found",
        ),
        (
            "unknown token, metadata",
            "payments",
            Method::GET,
            "/v1/tokens/4111111111111112".into(),
            None,
            StatusCode::NOT_FOUND,
            "token_not_found",
        ),
        (
            "8 KiB body with the canary inside",
            "payments",
            Method::POST,
            "/v1/tokenize".into(),
            Some(("application/json", huge.into_bytes())),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "not JSON",
            "payments",
            Method::POST,
            "/v1/tokenize".into(),
            Some((
                "text/plain",
                format!("{{\"pan\": \"{CANARY}\"}}").into_bytes(),
            )),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "batch over the limit",
            "payments",
            Method::POST,
            "/v1/tokenize/batch".into(),
            json_body(json!({ "pans": pans })),
            StatusCode::BAD_REQUEST,
            "batch_too_large",
        ),
        (
            "no such route",
            "payments",
            Method::GET,
            "/v1/nothing".into(),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "wrong method",
            "payments",
            Method::GET,
            "/v1/tokenize".into(),
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    // Sensitive authentication data is refused, not stored.
    for field in ["cvv", "cvc", "track2", "pin"] {
        cases.push((
            "sensitive authentication data",
            "payments",
            Method::POST,
            "/v1/tokenize".into(),
            json_body(json!({ "pan": CANARY, field: "123" })),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ));
    }
    let mut replies = Vec::new();
    for (what, who, method, path, body, status, code) in cases {
        let conn = if who == "cart" {
            &mut cart
        } else {
            &mut payments
        };
        let reply = conn.send(method, &path, body).await.unwrap();
        common::assert_api_error(&reply, status, code, what);
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // A 413 closes its HTTP/1 connection (`server/linger.rs`).
            *conn = harness.connect(who, addr).await;
        }
        if what == "sensitive authentication data" {
            let message = reply.json()["error"]["message"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(message.contains("never accepted"), "{message}");
        }
        replies.push(reply);
    }

    for reply in &replies {
        let text = String::from_utf8_lossy(&reply.body);
        assert!(
            !text.contains(CANARY) && !text.contains(bad_luhn),
            "error echoes the PAN: {text}"
        );
        assert!(
            !text.contains("49291234"),
            "error echoes part of the PAN: {text}"
        );
    }
    drop((payments, cart));
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_when_a_request_outlives_its_timeout() {
    let harness =
        Harness::with(|c| c.limits.request_timeout_ms = std::num::NonZeroU64::new(1).unwrap());
    let running = harness.start().await;
    let mut payments = harness.connect("payments", running.api_addr).await;
    let pans: Vec<String> = (0..10_000u64)
        .map(|i| common::synthetic_pan(i).expose_str().to_string())
        .collect();
    let reply = payments
        .post_json("/v1/tokenize/batch", &json!({ "pans": pans }))
        .await
        .unwrap();
    common::assert_api_error(
        &reply,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "unavailable",
    );
    drop(payments);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_keep_order_and_isolate_bad_items() {
    let harness = Harness::new();
    let running = harness.start().await;
    let mut payments = harness.connect("payments", running.api_addr).await;
    let reply = payments
        .post_json(
            "/v1/tokenize/batch",
            &json!({ "pans": [PAN, "4111111111111112", "378282246310005", PAN] }),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let results = reply.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 4);
    assert_eq!(results[1]["error"]["code"], "invalid_pan");
    assert_eq!(results[0]["token"], results[3]["token"]);
    assert_eq!(results[2]["brand"], "amex");
    assert_eq!(results[2]["bin"], Value::Null);
    let tokens = json!([
        results[0]["token"],
        "4111111111111112",
        results[2]["token"],
        "12"
    ]);
    let reply = payments
        .post_json("/v1/detokenize/batch", &json!({ "tokens": tokens }))
        .await
        .unwrap();
    let results = reply.json()["results"].as_array().unwrap().clone();
    assert_eq!(results[0]["pan"], PAN);
    assert_eq!(results[1]["error"]["code"], "token_not_found");
    assert_eq!(results[2]["pan"], "378282246310005");
    assert_eq!(results[3]["error"]["code"], "invalid_request");
    drop(payments);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_survive_a_server_restart_and_ops_endpoints_work() {
    let harness = Harness::new();
    let running = harness.start().await;
    let (status, _) = ops_get(running.ops_addr, "/healthz").await;
    assert_eq!(status, 200);
    let (status, _) = ops_get(running.ops_addr, "/readyz").await;
    assert_eq!(status, 200);
    let mut payments = harness.connect("payments", running.api_addr).await;
    let token = payments
        .post_json("/v1/tokenize", &json!({ "pan": CANARY }))
        .await
        .unwrap()
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    payments
        .post_json("/v1/detokenize", &json!({ "token": token }))
        .await
        .unwrap();
    let (status, metrics) = ops_get(running.ops_addr, "/metrics").await;
    assert_eq!(status, 200);
    // The state gauges, from the first scrape.
    for (gauge, value) in [
        ("cardvault_ready", "1"),
        ("cardvault_sealed", "0"),
        ("cardvault_starting", "0"),
        ("cardvault_start_progress_ratio", "1"),
    ] {
        assert!(
            metrics.lines().any(|l| l == format!("{gauge} {value}")),
            "{gauge} {value}: {metrics}"
        );
    }
    assert!(metrics.contains("cardvault_store_free_bytes "), "{metrics}");
    assert!(
        metrics.contains("cardvault_store_reserve_bytes "),
        "{metrics}"
    );
    assert!(metrics.contains("cardvault_requests_total"), "{metrics}");
    assert!(metrics.contains("route=\"/v1/tokenize\""), "{metrics}");
    assert!(
        metrics.contains("cardvault_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cardvault_detokenizations_total{principal=\"payments\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cardvault_tokens_created_total"),
        "{metrics}"
    );
    assert!(
        !metrics.contains(CANARY) && !metrics.contains(&token),
        "metrics hold card data"
    );
    drop(payments);
    running.stop().await.unwrap();

    let running = harness.start().await;
    // The keys' cryptoperiods, checked at start (not an interval later).
    let started = std::time::Instant::now();
    loop {
        let (_, metrics) = ops_get(running.ops_addr, "/metrics").await;
        if metrics.contains("cardvault_key_cryptoperiod_remaining_seconds{") {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "no cryptoperiod gauge after a restart: {metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut payments = harness.connect("payments", running.api_addr).await;
    let reply = payments
        .post_json("/v1/detokenize", &json!({ "token": token }))
        .await
        .unwrap();
    assert_eq!(reply.json()["pan"], CANARY);
    drop(payments);
    running.stop().await.unwrap();
    assert!(common::files_containing(harness.dir.path(), CANARY.as_bytes()).is_empty());
}

/// Metrics follow Prometheus' conventions: every series has HELP and TYPE,
/// the counters without labels exist before their first event, and
/// `promtool check metrics` accepts the page (promtool from Debian's
/// `prometheus`, which `.ci/run` installs; elsewhere that part is skipped
/// with a note).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_prometheus_conventions() {
    let harness = Harness::new();
    let running = harness.start().await;
    let (status, metrics) = ops_get(running.ops_addr, "/metrics").await;
    assert_eq!(status, 200);
    let body = metrics
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "cardvault_rate_limited_total",
        "cardvault_writes_refused_disk_full_total",
        "cardvault_body_budget_refused_total",
        "cardvault_audit_write_failures_total",
        "cardvault_connections_active",
    ] {
        assert!(
            body.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} missing before its first event: {body}"
        );
    }
    let typed: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(typed.len() >= 10, "{body}");
    for name in typed {
        assert!(
            body.lines()
                .any(|l| l.starts_with(&format!("# HELP {name} "))),
            "{name} has no HELP"
        );
    }
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(body.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(_) => eprintln!("promtool not installed: `promtool check metrics` skipped"),
    }
    running.stop().await.unwrap();
}

/// docs/openapi.json describes exactly the routes the server has, every
/// error code it can return, and the fields its responses carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_matches_the_server() {
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    let harness = Harness::new();
    let running = harness.start().await;
    let mut admin = harness.connect("admin", running.api_addr).await;
    let mut documented = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
            let concrete = path
                .replace("{token}", "4111111111111112")
                .replace("{tenant}", "default")
                .replace("{route}", "nowhere")
                .replace("{id}", "000000000000000000000000");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let reply = admin
                .send(
                    method,
                    &concrete,
                    Some(("application/json", b"{}".to_vec())),
                )
                .await
                .unwrap();
            let code = reply.json()["error"]["code"].clone();
            assert!(
                code != "not_found" && code != "method_not_allowed",
                "{path} is documented but not served"
            );
        }
    }
    documented.sort();
    let served = [
        "DELETE /v1/admin/keys/{tenant}/reencrypt",
        "DELETE /v1/admin/tenants/{tenant}",
        "DELETE /v1/tokens/{token}",
        "GET /v1/admin/alerts",
        "GET /v1/admin/approvals",
        "GET /v1/admin/exports/{id}",
        "GET /v1/admin/keys",
        "GET /v1/admin/keys/{tenant}/reencrypt",
        "GET /v1/collect/sessions/{id}",
        "GET /v1/tokens/{token}",
        "POST /v1/admin/alerts/clear",
        "POST /v1/admin/approvals/{id}",
        "POST /v1/admin/backup",
        "POST /v1/admin/evidence-key/rotate",
        "POST /v1/admin/import",
        "POST /v1/admin/kek/rotate",
        "POST /v1/admin/keys/{tenant}/reencrypt",
        "POST /v1/admin/keys/{tenant}/rotate",
        "POST /v1/admin/seal",
        "POST /v1/admin/tenants/{tenant}/export",
        "POST /v1/admin/unseal",
        "POST /v1/admin/watch/approvals",
        "POST /v1/admin/watch/reports",
        "POST /v1/collect/sessions",
        "POST /v1/detokenize",
        "POST /v1/detokenize/batch",
        "POST /v1/lookup",
        "POST /v1/proxy/{route}",
        "POST /v1/tokenize",
        "POST /v1/tokenize/batch",
        "POST /v1/tokens/{token}/cvc",
    ];
    assert_eq!(documented, served);
    let codes: Vec<&str> = spec["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for e in cardvault::server::ApiError::EVERY_KIND {
        assert!(codes.contains(&e.code()), "{} is not documented", e.code());
    }
    assert_eq!(codes.len(), cardvault::server::ApiError::EVERY_KIND.len());
    // Response fields: what the server sends is what the schema names.
    let mut payments = harness.connect("payments", running.api_addr).await;
    let info = payments
        .post_json(
            "/v1/tokenize",
            // A PAN not tokenized before, with a time to live: every field.
            &json!({ "pan": "4012888888881881", "ttl_s": 3600 }),
        )
        .await
        .unwrap()
        .json();
    let mut sent: Vec<&String> = info.as_object().unwrap().keys().collect();
    sent.sort();
    let mut schema: Vec<&String> = spec["components"]["schemas"]["TokenInfo"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    schema.sort();
    assert_eq!(sent, schema);
    drop((admin, payments));
    running.stop().await.unwrap();
}

/// Per-principal token buckets: a spent bucket answers 429 `rate_limited`
/// with `Retry-After`, batches cost their item count, and one principal's
/// bucket does not drain another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_per_principal_and_answer_429() {
    let harness = Harness::with(|c| {
        c.limits.max_batch = std::num::NonZeroUsize::new(3).unwrap();
        c.limits.tokenize_rate = cardvault::config::RateLimit::new(1, 3);
    });
    let running = harness.start().await;
    let mut cart = harness.connect("cart", running.api_addr).await;
    let mut payments = harness.connect("payments", running.api_addr).await;
    let reply = cart
        .post_json("/v1/tokenize/batch", &json!({ "pans": [PAN, PAN] }))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let reply = cart
        .post_json("/v1/tokenize", &json!({ "pan": PAN }))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let reply = cart
        .post_json("/v1/tokenize", &json!({ "pan": CANARY }))
        .await
        .unwrap();
    common::assert_api_error(
        &reply,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "rate_limited",
    );
    assert!(
        reply.retry_after.is_some_and(|s| (1..=2).contains(&s)),
        "{reply:?}"
    );
    assert!(!String::from_utf8_lossy(&reply.body).contains(CANARY));
    let (_, metrics) = ops_get(running.ops_addr, "/metrics").await;
    assert!(
        metrics.contains("cardvault_rate_limited_total 1"),
        "{metrics}"
    );
    // Another principal has its own bucket.
    let reply = payments
        .post_json("/v1/tokenize", &json!({ "pan": PAN }))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    drop((cart, payments));
    running.stop().await.unwrap();
}

/// Why the harness's service refuses to start (panics if it starts).
async fn launch_error(harness: &Harness) -> String {
    cardvault::server::Service::launch(&harness.config)
        .await
        .err()
        .expect("the service refused to start")
        .to_string()
}

/// The vault refuses to start on a TLS private key others can read and on a
/// data directory owned by another user, naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_on_unsafe_files() {
    use std::os::unix::fs::PermissionsExt;
    let harness = Harness::new();
    let key = harness.config.api.key.clone();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = launch_error(&harness).await;
    assert!(
        err.contains("TLS private key") && err.contains("644"),
        "{err}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let data = harness.config.storage.data_dir.clone();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = launch_error(&harness).await;
    assert!(
        err.contains("data directory") && err.contains("777"),
        "{err}"
    );
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    // Owned by someone else (needs root to arrange).
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
        let err = launch_error(&harness).await;
        assert!(err.contains("owned by uid 65534"), "{err}");
        std::os::unix::fs::chown(&data, Some(0), Some(0)).unwrap();
    }
    let running = harness.start().await;
    running.stop().await.unwrap();
}

/// Dev server certificates live under Mozilla "modern"'s 90 days and are
/// renewed from the dev CA when due (or missing); a fresh one is left alone.
#[test]
fn dev_server_certificates_are_short_lived_and_renewed() {
    let dir = tempfile::tempdir().unwrap();
    pki::init(dir.path()).unwrap();
    let days_left = |path: &Path| {
        let pem = std::fs::read(path).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let cert = pem.parse_x509().unwrap();
        cert.validity().time_to_expiration().unwrap().whole_days()
    };
    let server = dir.path().join("server.pem");
    assert!((88..=89).contains(&days_left(&server)));
    assert!(!pki::renew_server_if_due(dir.path()).unwrap());
    std::fs::remove_file(&server).unwrap();
    assert!(pki::renew_server_if_due(dir.path()).unwrap());
    assert!((88..=89).contains(&days_left(&server)));
}

/// `POST /v1/lookup` finds the token a PAN already has and never creates
/// one; it needs `tokenize` or `read`, stays within the tenant, and is
/// audited as `lookup`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_finds_without_creating() {
    let harness = Harness::new();
    let audit_dir = harness.config.audit.dir.clone();
    let running = harness.start().await;
    let mut cart = harness.connect("cart", running.api_addr).await;
    let unknown = json!({ "pan": "5555555555554444" });
    let reply = cart.post_json("/v1/lookup", &unknown).await.unwrap();
    common::assert_api_error(
        &reply,
        StatusCode::NOT_FOUND,
        "token_not_found",
        "lookup before",
    );
    let token = common::tokenize(&mut cart, CANARY).await;
    let reply = cart
        .post_json("/v1/lookup", &json!({ "pan": CANARY }))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["token"], token.as_str());
    assert_eq!(reply.json()["last4"], &CANARY[CANARY.len() - 4..]);
    // Still not found: the first lookup created nothing.
    let reply = cart.post_json("/v1/lookup", &unknown).await.unwrap();
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    // A principal with neither role is refused.
    let mut stranger = harness.connect("stranger", running.api_addr).await;
    let reply = stranger.post_json("/v1/lookup", &unknown).await.unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    drop((cart, stranger));
    running.stop().await.unwrap();
    let all = common::entries(&audit_dir);
    let lookups = common::of_kind(&all, "lookup");
    assert_eq!(lookups.len(), 3, "{lookups:?}");
    assert_eq!(lookups[1]["token"], token.as_str());
    assert!(common::files_containing(&audit_dir, CANARY.as_bytes()).is_empty());
}

/// Security codes are held in memory only: delivered once by a detokenize
/// with `include_cvc`, `null` after that, wiped at their time to live by the
/// sweeper, refused when malformed or over the cap, lost on restart, and
/// never written to the data directory or the audit trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_codes_are_held_in_memory_and_delivered_once() {
    const CODE: &str = "8642";
    let harness = Harness::with(|c| c.cvc.max_held = std::num::NonZeroUsize::new(2).unwrap());
    let running = harness.start().await;
    let mut cart = harness.connect("cart", running.api_addr).await;
    let mut payments = harness.connect("payments", running.api_addr).await;
    let token = common::tokenize(&mut cart, CANARY).await;
    let path = format!("/v1/tokens/{token}/cvc");
    let reply = cart
        .post_json(&path, &json!({ "cvc": CODE, "ttl_s": 600 }))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reveal = json!({ "token": token, "include_cvc": true });
    let reply = payments.post_json("/v1/detokenize", &reveal).await.unwrap();
    assert_eq!(reply.json()["cvc"], CODE);
    assert_eq!(reply.json()["pan"], CANARY);
    let reply = payments.post_json("/v1/detokenize", &reveal).await.unwrap();
    assert_eq!(reply.json()["cvc"], serde_json::Value::Null);
    let plain = payments
        .post_json("/v1/detokenize", &json!({ "token": token }))
        .await
        .unwrap();
    assert!(plain.json().get("cvc").is_none());
    // Malformed, too long a hold, another tenant's role, an unknown token.
    for (body, code) in [
        (json!({ "cvc": "12" }), "invalid_request"),
        (json!({ "cvc": "1a3" }), "invalid_request"),
        (json!({ "cvc": "123", "ttl_s": 7200 }), "invalid_request"),
    ] {
        let reply = cart.post_json(&path, &body).await.unwrap();
        common::assert_api_error(&reply, StatusCode::BAD_REQUEST, code, "bad cvc request");
    }
    let reply = payments
        .post_json("/v1/tokens/4111110000001112/cvc", &json!({ "cvc": "123" }))
        .await
        .unwrap();
    common::assert_api_error(
        &reply,
        StatusCode::NOT_FOUND,
        "token_not_found",
        "unknown token",
    );
    // Expiry by the sweeper, not by a read.
    cart.post_json(&path, &json!({ "cvc": CODE, "ttl_s": 1 }))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (_, metrics) = ops_get(running.ops_addr, "/metrics").await;
    assert!(metrics.contains("cardvault_cvc_held 0"), "{metrics}");
    let reply = payments.post_json("/v1/detokenize", &reveal).await.unwrap();
    assert_eq!(reply.json()["cvc"], serde_json::Value::Null);
    // The cap.
    let second = common::tokenize(&mut cart, "5555555555554444").await;
    let third = common::tokenize(&mut cart, "4012888888881881").await;
    for t in [&token, &second] {
        let reply = cart
            .post_json(&format!("/v1/tokens/{t}/cvc"), &json!({ "cvc": CODE }))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
    }
    let reply = cart
        .post_json(&format!("/v1/tokens/{third}/cvc"), &json!({ "cvc": CODE }))
        .await
        .unwrap();
    common::assert_api_error(
        &reply,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "cap",
    );
    drop((cart, payments));
    running.stop().await.unwrap();
    // A restart holds nothing.
    let running = harness.start().await;
    let mut payments = harness.connect("payments", running.api_addr).await;
    let reply = payments.post_json("/v1/detokenize", &reveal).await.unwrap();
    assert_eq!(reply.json()["cvc"], serde_json::Value::Null);
    drop(payments);
    running.stop().await.unwrap();
    let needle = format!("\"{CODE}\"");
    assert!(common::files_containing(harness.dir.path(), needle.as_bytes()).is_empty());
    let held = common::of_kind(&common::entries(&harness.config.audit.dir), "cvc_held").len();
    assert!(held >= 3, "{held}");
}

/// The ops port answers from the start of `serve`, before the store is
/// open: a vault whose database accepts connections and never answers (a
/// hung PostgreSQL) is seen *starting* — `/healthz` 200 with the step it is
/// on, `/readyz` 503, `cardvault_starting 1` — not as a port that refuses
/// connections until an orchestrator kills it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_hung_on_its_database_is_seen_starting() {
    // A database that takes connections and never says a word.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let db = hung.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        let mut kept = Vec::new();
        for conn in hung.incoming().take(8) {
            kept.push(conn);
        }
        kept
    });
    let ops = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // systemd's notify socket, played by the test: the start asks for more
    // time while it waits.
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut child = common::cardvault()
        .env("NOTIFY_SOCKET", &notify_path)
        .args(["serve", "--dev", "--data-dir"])
        .arg(dir.path().join("dev"))
        .args(["--listen", "127.0.0.1:0", "--ops-listen", &ops.to_string()])
        .env("CARDVAULT_STORAGE__BACKEND", "postgres")
        .env(
            "CARDVAULT_STORAGE__URL",
            format!("postgres://cardvault@{db}/cardvault?sslmode=disable"),
        )
        .env("CARDVAULT_STORAGE__COMMIT_BOUND_MS", "600000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let health = loop {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the ops port never answered"
        );
        if std::net::TcpStream::connect(ops).is_ok() {
            let (status, body) = ops_get(ops, "/healthz").await;
            if body.contains("opening the store") {
                assert_eq!(status, 200, "{body}");
                break body;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(health.contains(r#""state":"starting""#), "{health}");
    assert!(health.contains(r#""progress":0.5"#), "{health}");
    let (status, ready) = ops_get(ops, "/readyz").await;
    assert_eq!(status, 503, "{ready}");
    let (_, metrics) = ops_get(ops, "/metrics").await;
    for line in [
        "cardvault_starting 1",
        "cardvault_start_progress_ratio 0.5",
        "cardvault_ready 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}: {metrics}");
    }
    let mut datagram = [0u8; 256];
    let len = notify.recv(&mut datagram).unwrap();
    let said = String::from_utf8_lossy(&datagram[..len]);
    assert!(said.contains("EXTEND_TIMEOUT_USEC=30000000"), "{said}");
    assert!(!said.contains("READY=1"), "{said}");
    let _ = child.kill();
    let _ = child.wait();
    drop(held);
}
