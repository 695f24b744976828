//! Hostile clients against the real server on loopback (issue 18): idle
//! connections on both protocols, principals without roles filling the
//! connection cap, the body budget and oversized batches, admins reaching
//! into other tenants, a certificate name that would forge a log line, the
//! ops listener's cap and timeouts, and requests cut off by the request
//! timeout. Every loop is bounded in count and time.

use std::num::{NonZeroU64, NonZeroUsize};
use std::time::{Duration, Instant};

use cardvault::config::{AdminScope, BurstRule, Config, PrincipalConfig, Role};
use cardvault::pki::{Ca, Validity};
use cardvault::{TenantId, server::Service};
use hyper::StatusCode;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::common::harness::{Harness, counter, ops_get};
use crate::common::{self, assert_api_error, entries, of_kind};

fn ms(n: u64) -> NonZeroU64 {
    NonZeroU64::new(n).unwrap()
}

fn count(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

/// The value of an unlabelled series in Prometheus text (0 if absent).
/// Reads until the peer closes (or fails); how long that took. Panics if
/// the peer keeps the connection open past `limit`.
async fn closed_within(stream: &mut (impl AsyncRead + Unpin), limit: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), stream.read(&mut buf))
            .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("connection still open after {limit:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_before_and_between_requests() {
    let harness = Harness::with(|c| c.limits.idle_timeout_ms = ms(400));
    let service = harness.start().await;
    let tls = harness.tls("cart");

    // Handshake, then silence.
    let mut silent = tls.connect_raw(service.api_addr).await.unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(10)).await;
    assert!(
        took >= Duration::from_millis(300),
        "closed too early: {took:?}"
    );

    // Half a request line, then silence.
    let mut partial = tls.connect_raw(service.api_addr).await.unwrap();
    partial.write_all(b"POS").await.unwrap();
    closed_within(&mut partial, Duration::from_secs(10)).await;

    // Only the HTTP/2 preface and an empty SETTINGS frame.
    let mut h2 = tls.connect_raw(service.api_addr).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    closed_within(&mut h2, Duration::from_secs(10)).await;

    // One request, then idle: the next request finds the connection gone.
    let mut conn = harness.connect("cart", service.api_addr).await;
    common::tokenize(&mut conn, "4929123456781236").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        conn.post_json("/v1/tokenize", &json!({ "pan": "4929123456781236" }))
            .await
            .is_err(),
        "an idle keep-alive connection stayed open"
    );
    let (_, metrics) = ops_get(service.ops_addr, "/metrics").await;
    assert!(
        counter(&metrics, "cardvault_connections_idle_closed_total") >= 3.0,
        "{metrics}"
    );
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_without_roles_cannot_fill_the_connection_cap() {
    let harness = Harness::with(|c| {
        c.limits.max_connections = count(8);
        c.limits.max_connections_per_principal = count(8);
        c.limits.max_connections_roleless = count(2);
    });
    let audit_dir = harness.config.audit.dir.clone();
    let service = harness.start().await;
    let stranger = harness.tls("stranger");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = stranger.connect_raw(service.api_addr).await.unwrap();
        // One answered request: the server has finished the handshake and
        // holds the share for this connection (under load, the next
        // connection must not overtake it).
        conn.write_all(b"GET /v1/tokens/x HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(30), conn.read_exact(&mut head))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&head, b"HTTP/1.1 403");
        held.push(conn);
    }
    // The third gets its handshake, then is closed at once.
    for _ in 0..4 {
        let mut refused = stranger.connect_raw(service.api_addr).await.unwrap();
        let took = closed_within(&mut refused, Duration::from_secs(5)).await;
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
    // payments still gets in.
    let mut payments = harness.connect("payments", service.api_addr).await;
    common::tokenize(&mut payments, "4929123456781236").await;
    drop((held, payments));
    service.stop().await.unwrap();
    let all = entries(&audit_dir);
    let refused = of_kind(&all, "connection_refused");
    assert_eq!(refused.len(), 4, "{refused:?}");
    assert_eq!(refused[0]["principal"], "stranger");
    assert_eq!(refused[0]["outcome"], "denied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_share_one_budget_and_batches_stop_at_the_limit() {
    let harness = Harness::with(|c| {
        c.limits.batch_body_limit_bytes = count(64 << 10);
        c.limits.body_budget_bytes = count(128 << 10);
        c.limits.request_timeout_ms = ms(8_000);
    });
    let service = harness.start().await;
    let tls = harness.tls("cart");
    // Two connections announce 60 KiB batch bodies and send part of them:
    // together they hold the whole budget.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut raw = tls.connect_raw(service.api_addr).await.unwrap();
        raw.write_all(
            b"POST /v1/tokenize/batch HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 65536\r\n\r\n{\"pans\": [",
        )
        .await
        .unwrap();
        holders.push(raw);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A third body finds no room: 503 after a short wait, with a request id.
    let mut conn = harness.connect("cart", service.api_addr).await;
    let reply = conn
        .post_json("/v1/tokenize", &json!({ "pan": "4929123456781236" }))
        .await
        .unwrap();
    assert_api_error(
        &reply,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "budget spent",
    );
    assert!(reply.request_id.is_some());
    // The holders go away; the budget is whole again.
    drop(holders);
    tokio::time::sleep(Duration::from_millis(300)).await;
    common::tokenize(&mut conn, "4929123456781236").await;
    // A batch of many empty strings stops at max_batch + 1, not at the end
    // of the body.
    let max = harness.config.limits.max_batch.get();
    let many = format!("{{\"pans\": [{}\"\"]}}", "\"\",".repeat(max + 5));
    let reply = conn
        .send(
            hyper::Method::POST,
            "/v1/tokenize/batch",
            Some(("application/json", many.into_bytes())),
        )
        .await
        .unwrap();
    assert_api_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "batch_too_large",
        "too many items",
    );
    let (_, metrics) = ops_get(service.ops_addr, "/metrics").await;
    assert!(
        metrics.contains("cardvault_body_budget_refused_total"),
        "{metrics}"
    );
    drop(conn);
    service.stop().await.unwrap();
}

/// A second tenant with its own admin, and an operator with global reach.
fn two_tenants(c: &mut Config) {
    c.alerts.detokenize_burst = BurstRule::new(1, 600);
    c.alerts.block_detokenize_on_alert = true;
    for (name, scope) in [
        ("admin-b", AdminScope::Tenant),
        ("operator", AdminScope::Global),
    ] {
        c.principals.insert(
            name.to_owned(),
            PrincipalConfig {
                tenant: TenantId::parse(if name == "operator" { "ops" } else { "b" }).unwrap(),
                roles: vec![Role::Admin],
                detokenize_hours_utc: None,
                scope,
                require_reason: false,
            },
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_act_only_within_their_tenant_unless_global() {
    let harness = Harness::with(two_tenants);
    for name in ["admin-b", "operator"] {
        cardvault::pki::issue(&harness.pki(), name).unwrap();
    }
    let service = harness.start().await;
    let mut payments = harness.connect("payments", service.api_addr).await;
    let token = common::tokenize(&mut payments, "4929123456781236").await;
    for _ in 0..2 {
        payments
            .post_json("/v1/detokenize", &json!({ "token": token }))
            .await
            .unwrap();
    }
    let mut admin_b = harness.connect("admin-b", service.api_addr).await;
    let reply = admin_b.get("/v1/admin/alerts").await.unwrap();
    assert_eq!(
        reply.json(),
        json!({ "blocked": [] }),
        "tenant b sees tenant default's block"
    );
    // Another tenant's principal is answered exactly like a name that does
    // not exist.
    let other = admin_b
        .post_json(
            "/v1/admin/alerts/clear",
            &json!({ "principal": "payments" }),
        )
        .await
        .unwrap();
    let unknown = admin_b
        .post_json("/v1/admin/alerts/clear", &json!({ "principal": "nobody" }))
        .await
        .unwrap();
    assert_eq!(
        (other.status, other.json()),
        (unknown.status, unknown.json())
    );
    assert_eq!(other.status, StatusCode::BAD_REQUEST);
    // The tenant's own admin and the global operator see and lift it.
    let mut admin = harness.connect("admin", service.api_addr).await;
    let reply = admin.get("/v1/admin/alerts").await.unwrap();
    assert_eq!(reply.json(), json!({ "blocked": ["payments"] }));
    let mut operator = harness.connect("operator", service.api_addr).await;
    let reply = operator.get("/v1/admin/alerts").await.unwrap();
    assert_eq!(reply.json(), json!({ "blocked": ["payments"] }));
    let reply = operator
        .post_json(
            "/v1/admin/alerts/clear",
            &json!({ "principal": "payments" }),
        )
        .await
        .unwrap();
    assert_eq!(reply.json()["was_blocked"], true);
    drop((payments, admin_b, admin, operator));
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_with_a_newline_is_refused_and_forges_no_log_line() {
    let harness = Harness::new();
    let audit_dir = harness.config.audit.dir.clone();
    // A certificate from the trusted CA whose CN carries a forged log line.
    let ca = Ca::load(&harness.pki()).unwrap();
    let forged = ca
        .issue_client(
            "cart\nINJECTED-LOG-LINE principal=payments granted=all",
            Validity::days(30),
        )
        .unwrap();
    let (cert, key) = (
        harness.dir.path().join("forged.pem"),
        harness.dir.path().join("forged-key.pem"),
    );
    cardvault::pki::write_file(&cert, &forged.cert_pem, false).unwrap();
    cardvault::pki::write_file(&key, &forged.key_pem, true).unwrap();
    let service = harness.start().await;
    let tls = cardvault::client::ClientTls::from_files(
        &harness.pki().join("ca.pem"),
        Some((&cert, &key)),
        false,
    )
    .unwrap();
    let refused = match tls.connect(service.api_addr).await {
        Ok(mut conn) => conn
            .post_json("/v1/tokenize", &json!({ "pan": "4929123456781236" }))
            .await
            .is_err(),
        Err(_) => true,
    };
    assert!(refused, "a principal with a newline was served");
    service.stop().await.unwrap();
    let all = entries(&audit_dir);
    let failed = of_kind(&all, "tls_handshake_failed");
    assert!(
        failed
            .iter()
            .any(|e| e["detail"] == "principal_unsafe_characters"),
        "{failed:?}"
    );
    let trail = std::fs::read_dir(&audit_dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect::<String>();
    assert!(
        !trail.contains("INJECTED-LOG-LINE"),
        "the name reached the trail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_listener_has_its_own_cap_and_timeouts() {
    let harness = Harness::with(|c| {
        c.ops.max_connections = count(4);
        c.limits.idle_timeout_ms = ms(500);
        c.limits.header_timeout_ms = ms(500);
    });
    let service = harness.start().await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(
            tokio::net::TcpStream::connect(service.ops_addr)
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Past the cap: closed at once, and the API is untouched.
    let mut extra = tokio::net::TcpStream::connect(service.ops_addr)
        .await
        .unwrap();
    let took = closed_within(&mut extra, Duration::from_secs(5)).await;
    assert!(took < Duration::from_millis(400), "{took:?}");
    let mut cart = harness.connect("cart", service.api_addr).await;
    common::tokenize(&mut cart, "4929123456781236").await;
    // Idle and half-sent connections are closed by the timeouts.
    idle[0].write_all(b"GET /metr").await.unwrap();
    for conn in &mut idle {
        closed_within(conn, Duration::from_secs(10)).await;
    }
    let (status, _) = ops_get(service.ops_addr, "/healthz").await;
    assert_eq!(status, 200);
    drop(cart);
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_request_is_answered_logged_and_audited() {
    let harness = Harness::with(|c| c.limits.request_timeout_ms = ms(500));
    let audit_dir = harness.config.audit.dir.clone();
    let service: Service = harness.start().await;
    let mut raw = harness
        .tls("cart")
        .connect_raw(service.api_addr)
        .await
        .unwrap();
    // The body is shorter than announced.
    raw.write_all(
        b"POST /v1/tokenize HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"pan\": \"49",
    )
    .await
    .unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&response).contains("\r\n\r\n{") {
        let n = tokio::time::timeout_at(deadline.into(), raw.read(&mut buf))
            .await
            .expect("no answer to a timed-out request")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        response.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&response).to_lowercase();
    assert!(text.starts_with("http/1.1 503"), "{text}");
    let request_id = text
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("x-request-id on the 503")
        .trim()
        .to_owned();
    drop(raw);
    service.stop().await.unwrap();
    let all = entries(&audit_dir);
    let timed_out = of_kind(&all, "request_timeout");
    assert_eq!(timed_out.len(), 1, "{timed_out:?}");
    assert_eq!(timed_out[0]["principal"], "cart");
    assert_eq!(timed_out[0]["request_id"], request_id.as_str());
    assert_eq!(timed_out[0]["detail"], "/v1/tokenize");
    assert_eq!(timed_out[0]["code"], "unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_principal_key_matches_only_its_kind_of_name() {
    let harness = Harness::with(|c| {
        for key in ["uri:uri-only", "cn:cn-only"] {
            c.principals.insert(
                key.to_owned(),
                PrincipalConfig {
                    tenant: TenantId::parse("default").unwrap(),
                    roles: vec![Role::Tokenize],
                    detokenize_hours_utc: None,
                    scope: AdminScope::Tenant,
                    require_reason: false,
                },
            );
        }
    });
    // Both certificates carry their name as the subject CN only.
    for name in ["uri-only", "cn-only"] {
        cardvault::pki::issue(&harness.pki(), name).unwrap();
    }
    let service = harness.start().await;
    let pan = json!({ "pan": "4929123456781236" });
    let mut cn = harness.connect("cn-only", service.api_addr).await;
    assert_eq!(
        cn.post_json("/v1/tokenize", &pan).await.unwrap().status,
        StatusCode::OK
    );
    let mut uri = harness.connect("uri-only", service.api_addr).await;
    let reply = uri.post_json("/v1/tokenize", &pan).await.unwrap();
    assert_api_error(
        &reply,
        StatusCode::FORBIDDEN,
        "forbidden",
        "a CN against a uri: key",
    );
    drop((cn, uri));
    service.stop().await.unwrap();
}

/// Resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

/// 24 connections each push an 8 MiB batch body minus its last byte at a
/// real `serve --dev` (default limits: 8 MiB batch bodies, a 32 MiB
/// budget). Without the budget the server held connections × body limit;
/// with it, what it holds stays near the budget. Prints RSS before, at the
/// peak and after (the figures in docs/guarantees.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_half_sent_bodies_stays_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let server = common::DevServer::start(&data);
    let pid = server.child.id();
    let mut warm = server.connect("cart").await;
    common::tokenize(&mut warm, "4929123456781236").await;
    let before = rss_mib(pid);
    let body_len = 8usize << 20;
    let mut body = b"{\"pans\": [".to_vec();
    while body.len() < body_len - 1 {
        body.extend_from_slice(b"\"\",");
    }
    body.truncate(body_len - 1);
    let body = std::sync::Arc::new(body);
    let tls = server.tls("cart");
    let addr = server.addr();
    let mut senders = Vec::new();
    for _ in 0..24 {
        let (tls, body) = (tls.clone(), std::sync::Arc::clone(&body));
        senders.push(tokio::spawn(async move {
            let Ok(mut raw) = tls.connect_raw(addr).await else { return };
            let head = format!(
                "POST /v1/tokenize/batch HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {body_len}\r\n\r\n"
            );
            let send = async {
                raw.write_all(head.as_bytes()).await?;
                raw.write_all(&body).await?;
                raw.flush().await
            };
            let _ = tokio::time::timeout(Duration::from_secs(30), send).await;
            // Hold the half-sent request open a while, as an attacker would.
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(raw);
        }));
    }
    let mut peak = before;
    let deadline = Instant::now() + Duration::from_secs(45);
    while senders.iter().any(|s| !s.is_finished()) && Instant::now() < deadline {
        peak = peak.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for s in senders {
        s.abort();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_mib(pid);
    // The vault still serves.
    let mut conn = server.connect("cart").await;
    common::tokenize(&mut conn, "4929123456781244").await;
    eprintln!(
        "RSS MiB: before {before:.0}, peak {peak:.0} (+{:.0}), after {after:.0} (+{:.0}); 24 × 8 MiB half-sent bodies, budget 32 MiB",
        peak - before,
        after - before
    );
    assert!(
        peak - before < 96.0,
        "RSS grew by {:.0} MiB under 24 × 8 MiB bodies with a 32 MiB budget",
        peak - before
    );
    drop((warm, conn));
    assert!(server.stop().success());
}

/// The header timeout runs from the end of the handshake to the first
/// complete request head, on HTTP/1 and HTTP/2: a connection that sends
/// nothing, or only the HTTP/2 preface and SETTINGS, is closed after
/// `header_timeout_ms`, not after the much longer idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_timeout_starts_at_the_handshake() {
    let harness = Harness::with(|c| {
        c.limits.header_timeout_ms = ms(1500);
        c.limits.idle_timeout_ms = ms(30_000);
    });
    let service = harness.start().await;
    let tls = harness.tls("cart");
    // Each connection's time runs from its own handshake (the client's end
    // of it: the server's starts a little later, never earlier).
    let since_silent = Instant::now();
    let mut silent = tls.connect_raw(service.api_addr).await.unwrap();
    let since_h2 = Instant::now();
    let mut h2 = tls.connect_raw(service.api_addr).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    for (what, stream, since) in [
        ("silent", &mut silent, since_silent),
        ("h2 preface", &mut h2, since_h2),
    ] {
        closed_within(stream, Duration::from_secs(10)).await;
        let took = since.elapsed();
        assert!(
            took >= Duration::from_millis(1400) && took < Duration::from_secs(8),
            "{what}: closed {took:?} after its handshake"
        );
    }
    // A client that sends its request in time is served. (Between
    // requests on HTTP/1, hyper runs the header timer from the end of the
    // previous response, so a keep-alive connection lasts at most the
    // header timeout there.)
    let mut conn = harness.connect("cart", service.api_addr).await;
    common::tokenize(&mut conn, "4929123456781236").await;
    common::tokenize(&mut conn, "4929123456781236").await;
    let (_, metrics) = ops_get(service.ops_addr, "/metrics").await;
    assert!(
        counter(&metrics, "cardvault_connections_header_timeout_total") >= 2.0,
        "{metrics}"
    );
    drop(conn);
    service.stop().await.unwrap();
}

/// HTTP/1.1 clients that send their whole body before reading (Python's
/// `http.client`, curl without `Expect`) read the early 413 (which carries
/// `Connection: close`) and 403 (after which the connection stays usable,
/// its body discarded), and a client reusing its connection object after
/// such an answer is not hurt: 10 bodies of 1-4 MiB, 10 large bodies
/// to a route the caller may not use, then 200 rounds of a refused 20 KB
/// body followed by a tokenize on the same connection object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_clients_read_early_answers_to_bodies_they_are_still_sending() {
    let harness = Harness::new();
    let service = harness.start().await;
    let pki = harness.pki();
    let script = r#"
import http.client, json, ssl, sys
pki, port = sys.argv[1], int(sys.argv[2])
ctx = ssl.create_default_context(cafile=f"{pki}/ca.pem")
ctx.load_cert_chain(f"{pki}/cart.pem", f"{pki}/cart-key.pem")
def conn():
    return http.client.HTTPSConnection("localhost", port, context=ctx, timeout=20)
def post(c, path, body):
    c.request("POST", path, body=body, headers={"content-type": "application/json"})
    r = c.getresponse()
    data = r.read()
    return r.status, r.getheader("connection"), data
seen = {"413": 0, "403": 0, "reused_ok": 0}
for i in range(10):
    size = (1 + i % 4) << 20
    body = b'{"pan": "' + b"1" * size + b'"}'
    status, connection, data = post(conn(), "/v1/tokenize", body)
    assert status == 413 and connection == "close", (status, connection, data[:200])
    assert json.loads(data)["error"]["code"] == "payload_too_large"
    seen["413"] += 1
for i in range(10):
    body = b'{"token": "' + b"2" * (2 << 20) + b'"}'
    status, connection, data = post(conn(), "/v1/detokenize", body)
    assert status == 403, (status, connection, data[:200])
    seen["403"] += 1
c = conn()
for i in range(200):
    status, _, _ = post(c, "/v1/detokenize", b'{"token": "' + b"3" * 20000 + b'"}')
    assert status == 403, status
    status, _, data = post(c, "/v1/tokenize", b'{"pan": "4929123456781236"}')
    assert status == 200, (i, status, data)
    seen["reused_ok"] += 1
print(json.dumps(seen))
"#;
    let mut python = std::process::Command::new("python3");
    python
        .arg("-c")
        .arg(script)
        .arg(&pki)
        .arg(service.api_addr.port().to_string());
    let out = output(python).await;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen, json!({"413": 10, "403": 10, "reused_ok": 200}));

    // curl over HTTP/1.1, the body sent at once (no Expect: 100-continue).
    let body = harness.dir.path().join("big.json");
    std::fs::write(&body, format!("{{\"pan\": \"{}\"}}", "1".repeat(3 << 20))).unwrap();
    for _ in 0..5 {
        let mut curl = std::process::Command::new("curl");
        curl.args([
            "-sS",
            "--http1.1",
            "-H",
            "Expect:",
            "-H",
            "content-type: application/json",
        ])
        .arg("--cacert")
        .arg(pki.join("ca.pem"))
        .arg("--cert")
        .arg(pki.join("cart.pem"))
        .arg("--key")
        .arg(pki.join("cart-key.pem"))
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!(
            "https://localhost:{}/v1/tokenize",
            service.api_addr.port()
        ));
        let out = output(curl).await;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "413",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    service.stop().await.unwrap();
}

/// Runs `command` off the async workers; its output.
async fn output(mut command: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}
