//! Hosted card fields over the wire (issue 31), without a browser: a cart
//! creates a session over mTLS, a "shopper" fetches the frame from the
//! public listener and submits a card with the frame's nonce and the
//! headers a browser sends, the cart reads the token, payments
//! detokenizes it. Then every refusal: wrong origin, wrong nonce, second
//! submit, expiry, the lock, the card-testing rules, malformed sessions,
//! and the public listener's hostile-client bounds. Real server, real TLS,
//! real RocksDB. (The browser tests are in `collect_browser.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use cardvault::client::{ClientTls, Connection};
use cardvault::config::{CollectConfig, CollectLimits, Config, PrincipalConfig, Role};
use cardvault::domain::TenantId;
use cardvault::server::Service;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{HeaderMap, Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::common::harness::Harness;
use crate::common::{entries, of_kind};

/// The canary card of these tests (a Visa test number).
pub const CANARY: &str = "4111111111111111";

/// The checkout page's origin.
pub const SHOP: &str = "http://127.0.0.1:8080";

/// A harness whose config has a public listener on a free port (dev-like:
/// loopback page origins allowed), with `adjust` applied to its limits.
pub fn harness_with(adjust: impl FnOnce(&mut CollectLimits, &mut Config)) -> Harness {
    Harness::with(|config| {
        let mut collect = CollectConfig::dev(config.api.cert.clone(), config.api.key.clone());
        collect.listen = "127.0.0.1:0".parse().unwrap();
        adjust(&mut collect.limits, config);
        config.collect = Some(collect);
    })
}

/// A browser-like client of the public listener (no client certificate).
pub struct Shopper {
    tls: ClientTls,
    pub addr: SocketAddr,
    /// `https://localhost:PORT`.
    pub origin: String,
}

/// One answer of the public listener.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
    /// The error code of a JSON error answer.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Shopper {
    pub fn new(harness: &Harness, service: &Service) -> Shopper {
        let (addr, origin) = service.collect.clone().unwrap();
        let tls = ClientTls::from_files(&harness.pki().join("ca.pem"), None, false).unwrap();
        Shopper { tls, addr, origin }
    }

    /// One request on a fresh connection.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Answer {
        let stream = self.tls.connect_raw(self.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    /// The frame of `session`; returns the answer and the frame's nonce.
    pub async fn frame(&self, session: &str) -> (Answer, String) {
        let answer = self
            .request(
                Method::GET,
                &format!("/collect/v1/frame/{session}"),
                &[],
                None,
            )
            .await;
        let text = answer.text();
        let nonce = text
            .split("data-nonce=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_owned();
        (answer, nonce)
    }

    /// A submit as the frame sends it.
    pub async fn submit(&self, session: &str, body: Value) -> Answer {
        let origin = self.origin.clone();
        self.request(
            Method::POST,
            &format!("/collect/v1/sessions/{session}/submit"),
            &[
                ("origin", &origin),
                ("sec-fetch-site", "same-origin"),
                ("content-type", "application/json"),
            ],
            Some(serde_json::to_vec(&body).unwrap()),
        )
        .await
    }

    /// Frame, then submit `pan` with expiry 12/30 and code 123.
    pub async fn pay(&self, session: &str, pan: &str) -> Answer {
        let (_, nonce) = self.frame(session).await;
        self.submit(
            session,
            json!({"nonce": nonce, "number": pan, "expiry": "12/30", "code": "123"}),
        )
        .await
    }
}

/// `POST /v1/collect/sessions` as `conn`; the reply's JSON and status.
pub async fn create(conn: &mut Connection, body: Value) -> (StatusCode, Value) {
    let reply = conn.post_json("/v1/collect/sessions", &body).await.unwrap();
    (reply.status, reply.json())
}

/// A session for [`SHOP`] with `extra` fields; its id.
pub async fn new_session(conn: &mut Connection, extra: Value) -> String {
    let mut body = json!({"origin": SHOP});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (status, created) = create(conn, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["session"].as_str().unwrap().to_owned()
}

async fn result(conn: &mut Connection, session: &str) -> (StatusCode, Value) {
    let reply = conn
        .get(&format!("/v1/collect/sessions/{session}"))
        .await
        .unwrap();
    (reply.status, reply.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_takes_one_card_and_the_cart_reads_its_token() {
    let harness = harness_with(|_, _| {});
    let service = harness.start().await;
    let shopper = Shopper::new(&harness, &service);
    let mut cart = harness.connect("cart", service.api_addr).await;
    let (status, created) = create(
        &mut cart,
        json!({"origin": SHOP, "ttl_s": 600, "cvc": "required", "reference": "order-1042"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let session = created["session"].as_str().unwrap().to_owned();
    assert_eq!(session.len(), 22, "128 bits in base64url");
    assert_eq!(
        created["frame_url"],
        format!("{}/collect/v1/frame/{session}", shopper.origin)
    );
    assert!(created["expires_at"].as_str().unwrap().ends_with('Z'));
    let (_, pending) = result(&mut cart, &session).await;
    assert_eq!(pending["state"], "pending");
    assert!(pending.get("token").is_none());

    let (frame, nonce) = shopper.frame(&session).await;
    assert_eq!(frame.status, StatusCode::OK);
    assert_eq!(nonce.len(), 22);
    let csp = frame.header("content-security-policy");
    for part in [
        "default-src 'none'",
        "connect-src 'self'",
        "form-action 'none'",
        "base-uri 'none'",
        &format!("frame-ancestors {SHOP}"),
    ] {
        assert!(csp.contains(part), "CSP lacks {part}: {csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains('*'),
        "{csp}"
    );
    assert!(csp.contains("script-src 'nonce-") && csp.contains("style-src 'nonce-"));
    assert_eq!(frame.header("x-content-type-options"), "nosniff");
    assert_eq!(frame.header("referrer-policy"), "no-referrer");
    assert_eq!(frame.header("cache-control"), "no-store");
    assert!(
        frame
            .header("strict-transport-security")
            .starts_with("max-age=")
    );
    assert!(frame.header("permissions-policy").contains("camera=()"));
    let html = frame.text();
    for attr in ["cc-number", "cc-exp", "cc-csc"] {
        assert!(html.contains(&format!("autocomplete=\"{attr}\"")), "{attr}");
    }
    assert!(html.contains("<label for=\"number\">") && html.contains("inputmode=\"numeric\""));
    assert!(html.contains("<button type=\"submit\""));

    let paid = shopper
        .submit(
            &session,
            json!({"nonce": nonce, "number": CANARY, "expiry": "12/30", "code": "123"}),
        )
        .await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.text());
    assert_eq!(paid.header("cache-control"), "no-store");
    let token = paid.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(paid.json()["last4"], "1111");
    assert_eq!(paid.json()["brand"], "visa");
    assert!(!paid.text().contains(CANARY));

    let (status, done) = result(&mut cart, &session).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(done["state"], "completed");
    assert_eq!(done["token"], token.as_str());
    assert_eq!(done["reference"], "order-1042");
    assert_eq!(
        (done["exp_month"].clone(), done["exp_year"].clone()),
        (json!(12), json!(2030))
    );
    assert_eq!(done["cvc_held"], true);

    let mut payments = harness.connect("payments", service.api_addr).await;
    let revealed = payments
        .post_json(
            "/v1/detokenize",
            &json!({"token": token, "include_cvc": true}),
        )
        .await
        .unwrap()
        .json();
    assert_eq!(revealed["pan"], CANARY);
    assert_eq!(revealed["cvc"], "123");

    // One completion: the same card again, or another, is 409.
    let again = shopper.pay(&session, "5555555555554444").await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.code(), "session_completed");
    // The frame of a completed session says so and has no form.
    let (closed, closed_nonce) = shopper.frame(&session).await;
    assert!(closed.text().contains("data-state=\"session_completed\""));
    assert!(!closed.text().contains("<form") && closed_nonce.is_empty());

    // Another tenant's principal cannot read it; a mangled id is 404.
    let mut stranger = harness.connect("stranger", service.api_addr).await;
    let (status, _) = result(&mut stranger, &session).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = result(&mut cart, "not-a-session").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::NOT_FOUND, json!("session_not_found"))
    );
    service.stop().await.unwrap();

    let trail = entries(&harness.config.audit.dir);
    let created = of_kind(&trail, "collect_session_created");
    assert_eq!(created[0]["session"], session.as_str());
    assert_eq!(created[0]["principal"], "cart");
    assert!(!of_kind(&trail, "collect_frame_served").is_empty());
    let submitted = of_kind(&trail, "collect_submitted");
    assert_eq!(submitted.len(), 1);
    assert_eq!(submitted[0]["token"], token.as_str());
    assert!(
        of_kind(&trail, "collect_result_read")
            .iter()
            .any(|e| e["token"] == token.as_str())
    );
    let refused = of_kind(&trail, "collect_refused");
    assert!(refused.iter().any(|e| e["detail"] == "session_completed"));
    let raw: String = cardvault::audit::segments(&harness.config.audit.dir)
        .unwrap()
        .into_iter()
        .map(|(_, p)| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(!raw.contains(CANARY), "the PAN reached the audit trail");
    assert!(
        crate::common::files_containing(&harness.config.storage.data_dir, CANARY.as_bytes())
            .is_empty(),
        "the PAN is on disk in plaintext"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submits_only_from_the_frame_with_its_nonce() {
    let harness = harness_with(|_, _| {});
    let service = harness.start().await;
    let shopper = Shopper::new(&harness, &service);
    let mut cart = harness.connect("cart", service.api_addr).await;
    let session = new_session(&mut cart, json!({"cvc": "none"})).await;
    let (_, nonce) = shopper.frame(&session).await;
    let path = format!("/collect/v1/sessions/{session}/submit");
    let card =
        serde_json::to_vec(&json!({"nonce": nonce, "number": CANARY, "expiry": "12/30"})).unwrap();
    let origin = shopper.origin.clone();
    for headers in [
        vec![("content-type", "application/json")],
        vec![
            ("origin", SHOP),
            ("sec-fetch-site", "same-origin"),
            ("content-type", "application/json"),
        ],
        vec![
            ("origin", origin.as_str()),
            ("sec-fetch-site", "cross-site"),
            ("content-type", "application/json"),
        ],
        vec![
            ("origin", origin.as_str()),
            ("content-type", "application/json"),
        ],
        vec![
            ("origin", "null"),
            ("sec-fetch-site", "same-origin"),
            ("content-type", "application/json"),
        ],
    ] {
        let answer = shopper
            .request(Method::POST, &path, &headers, Some(card.clone()))
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{headers:?}");
        assert_eq!(answer.code(), "forbidden");
    }
    // Media type, size and shape.
    let frame_headers = [
        ("origin", origin.as_str()),
        ("sec-fetch-site", "same-origin"),
    ];
    let mut text = frame_headers.to_vec();
    text.push(("content-type", "text/plain"));
    let answer = shopper
        .request(Method::POST, &path, &text, Some(card.clone()))
        .await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let mut json_headers = frame_headers.to_vec();
    json_headers.push(("content-type", "application/json"));
    let big = vec![b' '; 5000];
    let answer = shopper
        .request(Method::POST, &path, &json_headers, Some(big))
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    let answer = shopper
        .submit(
            &session,
            json!({"nonce": nonce, "number": CANARY, "expiry": "12/30", "pan": CANARY}),
        )
        .await;
    assert_eq!(answer.code(), "invalid_request");
    assert!(!answer.text().contains(CANARY));
    // A nonce that is not the frame's, then the nonce of a frame that a
    // newer frame replaced.
    let wrong = shopper
        .submit(
            &session,
            json!({"nonce": "AAAAAAAAAAAAAAAAAAAAAA", "number": CANARY, "expiry": "12/30"}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let (_, newer) = shopper.frame(&session).await;
    assert_ne!(newer, nonce);
    let stale = shopper
        .submit(
            &session,
            json!({"nonce": nonce, "number": CANARY, "expiry": "12/30"}),
        )
        .await;
    assert_eq!(stale.status, StatusCode::FORBIDDEN);
    // A code where the session takes none is refused; then the frame's
    // own submit goes through.
    let coded = shopper
        .submit(
            &session,
            json!({"nonce": newer, "number": CANARY, "expiry": "12/30", "code": "123"}),
        )
        .await;
    assert_eq!(coded.status, StatusCode::BAD_REQUEST);
    let ok = shopper
        .submit(
            &session,
            json!({"nonce": newer, "number": CANARY, "expiry": "12/30"}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    let (_, done) = result(&mut cart, &session).await;
    assert_eq!(done["cvc_held"], false);
    // Nothing of the mTLS API is on the public port.
    for path in [
        "/v1/tokenize",
        "/v1/collect/sessions",
        "/healthz",
        "/metrics",
    ] {
        let answer = shopper.request(Method::GET, path, &[], None).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
    }
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_locks_after_five_refusals_and_expires_on_time() {
    let harness = harness_with(|_, _| {});
    let service = harness.start().await;
    let shopper = Shopper::new(&harness, &service);
    let mut cart = harness.connect("cart", service.api_addr).await;
    let session = new_session(&mut cart, json!({})).await;
    for bad in [
        "4111111111111112",
        "411111",
        "4111111111111111x",
        "0000",
        "4111111111111113",
    ] {
        let answer = shopper.pay(&session, bad).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(answer.code(), "invalid_pan");
        assert!(!answer.text().contains(bad));
    }
    let locked = shopper.pay(&session, CANARY).await;
    assert_eq!(
        (locked.status.as_u16(), locked.code().as_str()),
        (423, "session_locked")
    );
    let (_, state) = result(&mut cart, &session).await;
    assert_eq!(state["state"], "locked");
    assert!(state.get("token").is_none());

    let short = new_session(&mut cart, json!({"ttl_s": 1})).await;
    let (_, nonce) = shopper.frame(&short).await;
    // Bounded: the session expires after one second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let late = shopper
        .submit(
            &short,
            json!({"nonce": nonce, "number": CANARY, "expiry": "12/30", "code": "123"}),
        )
        .await;
    assert_eq!(
        (late.status, late.code().as_str()),
        (StatusCode::GONE, "session_expired")
    );
    let (_, state) = result(&mut cart, &short).await;
    assert_eq!(state["state"], "expired");
    let (frame, _) = shopper.frame(&short).await;
    assert!(frame.text().contains("data-state=\"session_expired\""));
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_checked_when_created() {
    let harness = harness_with(|limits, config| {
        limits.sessions_per_tenant_per_minute = std::num::NonZeroU32::new(12).unwrap();
        config.principals.insert(
            "othershop".into(),
            PrincipalConfig {
                tenant: TenantId::parse("other").unwrap(),
                roles: vec![Role::Tokenize, Role::Read],
                detokenize_hours_utc: None,
                scope: Default::default(),
                require_reason: false,
            },
        );
        cardvault::pki::issue(config.api.cert.parent().unwrap(), "othershop").unwrap();
    });
    let service = harness.start().await;
    let mut cart = harness.connect("cart", service.api_addr).await;
    for (body, why) in [
        (
            json!({"origin": "http://shop.example"}),
            "plain http off loopback",
        ),
        (json!({"origin": "https://shop.example/checkout"}), "a path"),
        (json!({"origin": "*"}), "a wildcard"),
        (
            json!({"origin": "https://shop.example", "ttl_s": 0}),
            "ttl 0",
        ),
        (
            json!({"origin": "https://shop.example", "ttl_s": 3601}),
            "ttl over an hour",
        ),
        (
            json!({"origin": "https://shop.example", "cvc": "maybe"}),
            "cvc policy",
        ),
        (
            json!({"origin": "https://shop.example", "reference": CANARY}),
            "a PAN as reference",
        ),
        (
            json!({"origin": "https://shop.example", "reference": "x".repeat(65)}),
            "a long reference",
        ),
        (
            json!({"origin": "https://shop.example", "extra": 1}),
            "an unknown field",
        ),
        (json!({}), "no origin"),
    ] {
        let (status, answer) = create(&mut cart, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {answer}");
        assert!(!answer.to_string().contains(CANARY));
    }
    let (status, _) = create(&mut cart, json!({"origin": "https://shop.example"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let mut admin = harness.connect("admin", service.api_addr).await;
    let (status, _) = create(&mut admin, json!({"origin": "https://shop.example"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "admin has no tokenize role");
    // Another tenant's cart cannot read this tenant's session.
    let ours = new_session(&mut cart, json!({})).await;
    let mut other = harness.connect("othershop", service.api_addr).await;
    let (status, _) = result(&mut other, &ours).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The tenant's creation limit (12 a minute, 2 used).
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(create(&mut cart, json!({"origin": SHOP})).await.0);
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        10
    );
    assert_eq!(statuses.last(), Some(&StatusCode::TOO_MANY_REQUESTS));
    // The other tenant has its own.
    let (status, _) = create(&mut other, json!({"origin": SHOP})).await;
    assert_eq!(status, StatusCode::CREATED);
    service.stop().await.unwrap();
    let raw: String = cardvault::audit::segments(&harness.config.audit.dir)
        .unwrap()
        .into_iter()
        .map(|(_, p)| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(!raw.contains(CANARY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_testing_is_refused_counted_and_alerted() {
    let harness = harness_with(|limits, _| {
        limits.submits_per_ip_per_minute = std::num::NonZeroU32::new(12).unwrap();
        limits.sessions_per_card_per_hour = std::num::NonZeroU32::new(3).unwrap();
    });
    let mut config = harness.config.clone();
    if let Some(c) = config.collect.as_mut() {
        c.blocked_bins = vec!["555555".into()];
    }
    let service = Service::launch(&config).await.unwrap();
    let shopper = Shopper::new(&harness, &service);
    let mut cart = harness.connect("cart", service.api_addr).await;
    // A blocked BIN.
    let s = new_session(&mut cart, json!({})).await;
    let blocked = shopper.pay(&s, "5555555555554444").await;
    assert_eq!(
        (blocked.status.as_u16(), blocked.code().as_str()),
        (422, "card_refused")
    );
    // The same card through four sessions: the fourth raises card_testing.
    for _ in 0..4 {
        let s = new_session(&mut cart, json!({})).await;
        assert_eq!(shopper.pay(&s, CANARY).await.status, StatusCode::OK);
    }
    // The IP's bucket: 12 a minute, 5 used; the 8th more is refused.
    let mut statuses = Vec::new();
    for i in 0..8 {
        let s = new_session(&mut cart, json!({})).await;
        let card = crate::common::synthetic_pan(7_000 + i);
        statuses.push(shopper.pay(&s, card.expose_str()).await);
    }
    let last = statuses.last().unwrap();
    assert_eq!(
        (last.status, last.code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert!(last.header("retry-after").parse::<u32>().unwrap() >= 1);
    let metrics = crate::common::harness::ops_get(service.ops_addr, "/metrics")
        .await
        .1;
    assert!(
        metrics.contains("cardvault_collect_refusals_total{reason=\"card_refused\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("cardvault_collect_refusals_total{reason=\"ip_submits\"}"));
    assert!(
        metrics.contains("cardvault_alerts_total{rule=\"card_testing\"}"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("alert"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    service.stop().await.unwrap();
    let trail = entries(&harness.config.audit.dir);
    let alerts: Vec<_> = of_kind(&trail, "alert")
        .into_iter()
        .filter(|e| {
            e["detail"]
                .as_str()
                .unwrap_or_default()
                .starts_with("card_testing")
        })
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["count"], 4);
    assert!(
        of_kind(&trail, "collect_refused")
            .iter()
            .any(|e| e["detail"] == "card_refused")
    );
    assert!(
        of_kind(&trail, "collect_refused")
            .iter()
            .any(|e| e["detail"] == "ip_submits")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_port_bounds_hostile_clients_and_the_api_keeps_serving() {
    let harness = harness_with(|limits, _| {
        limits.max_connections_per_ip = std::num::NonZeroUsize::new(4).unwrap();
        limits.header_timeout_ms = std::num::NonZeroU64::new(300).unwrap();
        limits.handshake_timeout_ms = std::num::NonZeroU64::new(300).unwrap();
    });
    let service = harness.start().await;
    let shopper = Shopper::new(&harness, &service);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Four idle TLS connections hold the IP's share; the fifth TCP
    // connection is closed at once, before any handshake.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(shopper.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fifth = tokio::net::TcpStream::connect(shopper.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), fifth.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the fifth connection was not closed"
    );
    // The held ones never handshake: closed after the handshake timeout.
    for mut stream in held {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "a silent connection was kept"
        );
    }
    // A TLS connection that sends half a request head is closed after the
    // header timeout.
    let mut tls = ClientTls::from_files(&harness.pki().join("ca.pem"), None, false)
        .unwrap()
        .connect_raw(shopper.addr)
        .await
        .unwrap();
    tls.write_all(b"GET /collect/v1/frame.js HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "a half request head was kept open");
    // An oversized header block is refused, not buffered.
    let huge = "x".repeat(16 * 1024);
    let answer = shopper
        .request(
            Method::GET,
            "/collect/v1/frame.js",
            &[("x-fill", huge.as_str())],
            None,
        )
        .await;
    assert_eq!(answer.status.as_u16(), 431);
    // The mTLS API serves throughout.
    let mut cart = harness.connect("cart", service.api_addr).await;
    let token = crate::common::tokenize(&mut cart, "4012888888881881").await;
    assert_eq!(token.len(), 16);
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_beyond_the_handshake_rate_wait_then_are_closed() {
    let harness = harness_with(|limits, _| {
        limits.handshakes_per_second = std::num::NonZeroU32::new(1).unwrap();
        limits.handshake_timeout_ms = std::num::NonZeroU64::new(1500).unwrap();
    });
    let service = harness.start().await;
    let shopper = Shopper::new(&harness, &service);
    let tls = ClientTls::from_files(&harness.pki().join("ca.pem"), None, false).unwrap();
    // Six at once against one handshake a second (burst one) and 1.5 s to
    // wait: one or two get through, the others are closed unshaken.
    let attempts: Vec<_> = (0..6)
        .map(|_| {
            let tls = tls.clone();
            let addr = shopper.addr;
            tokio::spawn(async move { tls.connect_raw(addr).await.is_ok() })
        })
        .collect();
    let mut shaken = 0;
    for attempt in attempts {
        if attempt.await.unwrap() {
            shaken += 1;
        }
    }
    assert!(
        (1..=3).contains(&shaken),
        "{shaken} of 6 handshakes completed"
    );
    let (_, metrics) = crate::common::harness::ops_get(service.ops_addr, "/metrics").await;
    let refused = crate::common::harness::counter(
        &metrics,
        "cardvault_connections_refused_total{listener=\"collect\",reason=\"handshake_rate\"}",
    );
    assert!(refused >= 3.0, "refused for the rate: {refused}");
    // The mTLS API serves throughout.
    let mut cart = harness.connect("cart", service.api_addr).await;
    let token = crate::common::tokenize(&mut cart, "4012888888881881").await;
    assert_eq!(token.len(), 16);
    service.stop().await.unwrap();
}
