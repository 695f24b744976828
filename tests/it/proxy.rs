//! The reveal proxy against a real HTTPS upstream on loopback (rustls,
//! started here, recording what it receives): the PAN and a held security
//! code arrive upstream, the connector gets the upstream's answer and no
//! PAN unless the upstream sent one; an unknown route is 404, a principal
//! the route does not allow 403, a missing or foreign token 4xx with
//! nothing sent; a refused upstream certificate 502 `upstream_tls`, a slow
//! upstream 504 `upstream_timeout`, an unreachable one or an answer over
//! the route's `max_response_bytes` 502 `upstream_failed`; every reveal is
//! in the audit trail.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use cardvault::config::{PrincipalConfig, ProxyRoute, Role};
use cardvault::domain::TenantId;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

use crate::common::harness::Harness;
use crate::common::{self, assert_api_error};

/// What the upstream received: path, headers, body.
type Received = Arc<Mutex<Vec<(String, Vec<(String, String)>, Vec<u8>)>>>;

/// A real HTTPS server on 127.0.0.1 with `pki`'s server certificate:
/// `/authorize` answers `{"approved": true}`, `/echo` sends the body back,
/// `/slow` answers after 3 s.
async fn upstream(pki: &std::path::Path) -> (SocketAddr, Received) {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.join("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.join("server-key.pem")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received: Received = Arc::default();
    let log = Arc::clone(&received);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let log = Arc::clone(&log);
                        async move {
                            let path = req.uri().path().to_owned();
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                                .collect();
                            let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
                            log.lock()
                                .unwrap()
                                .push((path.clone(), headers, body.clone()));
                            let answer = match path.as_str() {
                                "/echo" => body,
                                "/slow" => {
                                    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                                    b"{}".to_vec()
                                }
                                _ => br#"{"approved":true,"auth_code":"A1B2C3"}"#.to_vec(),
                            };
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .status(201)
                                    .header("content-type", "application/json")
                                    .header("x-upstream-secret", "not forwarded")
                                    .body(Full::new(Bytes::from(answer)))
                                    .unwrap(),
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, received)
}

fn principal(tenant: &str, roles: Vec<Role>) -> PrincipalConfig {
    PrincipalConfig {
        tenant: TenantId::parse(tenant).unwrap(),
        roles,
        detokenize_hours_utc: None,
        scope: Default::default(),
        require_reason: false,
    }
}

fn route(upstream: String, ca: std::path::PathBuf) -> ProxyRoute {
    ProxyRoute {
        upstream,
        ca_file: ca,
        client_cert: None,
        client_key: None,
        allowed_principals: vec!["payments".into()],
        reveal: vec!["/card/number".into()],
        cvc_at: Some("/card/cvc".into()),
        timeout_ms: std::num::NonZeroU64::new(5_000).unwrap(),
        max_response_bytes: std::num::NonZeroUsize::new(64 << 10).unwrap(),
        forward_headers: vec!["accept".into(), "idempotency-key".into()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_reveals_to_the_upstream_only() {
    // The upstream's certificate comes from its own PKI; routes trust it,
    // except `wrong_ca`, which trusts the vault's.
    let upstream_pki = tempfile::tempdir().unwrap();
    cardvault::pki::init(upstream_pki.path()).unwrap();
    let (addr, received) = upstream(upstream_pki.path()).await;
    let ca = upstream_pki.path().join("ca.pem");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let harness = Harness::with(|c| {
        let r = &mut c.proxy.routes;
        r.insert(
            "acquirer".into(),
            route(format!("https://{addr}/authorize"), ca.clone()),
        );
        r.insert(
            "echo".into(),
            route(format!("https://{addr}/echo"), ca.clone()),
        );
        let mut slow = route(format!("https://{addr}/slow"), ca.clone());
        slow.timeout_ms = std::num::NonZeroU64::new(300).unwrap();
        r.insert("slow".into(), slow);
        r.insert(
            "down".into(),
            route(format!("https://{closed}/x"), ca.clone()),
        );
        // The upstream's answer (about 40 bytes) is over this route's bound.
        let mut small = route(format!("https://{addr}/authorize"), ca.clone());
        small.max_response_bytes = std::num::NonZeroUsize::new(16).unwrap();
        r.insert("small".into(), small);
        let vault_ca = c.api.client_ca.clone();
        r.insert(
            "wrong_ca".into(),
            route(format!("https://{addr}/authorize"), vault_ca),
        );
        c.principals.insert(
            "payments2".into(),
            principal("default", vec![Role::Detokenize]),
        );
        c.principals.insert(
            "payments-b".into(),
            principal("b", vec![Role::Tokenize, Role::Detokenize]),
        );
    });
    for name in ["payments2", "payments-b"] {
        cardvault::pki::issue(&harness.pki(), name).unwrap();
    }
    let service = harness.start().await;
    let api = service.api_addr;
    let mut cart = harness.connect("cart", api).await;
    let pan = "4929361425631237";
    let token = common::tokenize(&mut cart, pan).await;
    let held = cart
        .post_json(&format!("/v1/tokens/{token}/cvc"), &json!({"cvc": "737"}))
        .await
        .unwrap();
    assert_eq!(held.status, 204, "{}", String::from_utf8_lossy(&held.body));

    let mut payments = harness.connect("payments", api).await;
    let request = json!({
        "amount": 1299, "currency": "EUR",
        "card": {"number": token, "expiry": "12/27", "holder": "J Doe"},
    });
    let reply = payments
        .send(
            hyper::Method::POST,
            "/v1/proxy/acquirer",
            Some(("application/json", serde_json::to_vec(&request).unwrap())),
        )
        .await
        .unwrap();
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["auth_code"], "A1B2C3");
    assert!(!String::from_utf8_lossy(&reply.body).contains(pan));
    {
        let log = received.lock().unwrap();
        assert_eq!(log.len(), 1);
        let (path, headers, body) = &log[0];
        assert_eq!(path, "/authorize");
        let got: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(got["card"]["number"], pan, "the PAN arrives upstream");
        assert_eq!(got["card"]["cvc"], "737", "the held code arrives upstream");
        assert_eq!(got["amount"], 1299);
        assert_eq!(got["card"]["holder"], "J Doe");
        assert!(headers.contains(&("content-type".into(), "application/json".into())));
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "host" && v == &addr.to_string())
        );
    }

    // The upstream's answer is passed through: here it echoes the PAN.
    let reply = payments
        .post_json("/v1/proxy/echo", &json!({"card": {"number": token}}))
        .await
        .unwrap();
    assert_eq!(reply.status, 201);
    assert_eq!(reply.json()["card"]["number"], pan);
    assert!(
        reply.json()["card"].get("cvc").is_none(),
        "the code was taken once"
    );

    let sent = received.lock().unwrap().len();
    // Unknown route, disallowed principal, missing field, foreign token:
    // refused before anything goes upstream.
    let reply = payments
        .post_json("/v1/proxy/nowhere", &request)
        .await
        .unwrap();
    assert_api_error(
        &reply,
        hyper::StatusCode::NOT_FOUND,
        "not_found",
        "unknown route",
    );
    let mut payments2 = harness.connect("payments2", api).await;
    let reply = payments2
        .post_json("/v1/proxy/acquirer", &request)
        .await
        .unwrap();
    assert_api_error(
        &reply,
        hyper::StatusCode::FORBIDDEN,
        "forbidden",
        "principal not allowed",
    );
    let mut payments_b = harness.connect("payments-b", api).await;
    let foreign = common::tokenize(&mut payments_b, "5555555555554444").await;
    for (body, status, code, what) in [
        (
            json!({"card": {"holder": "x"}}),
            hyper::StatusCode::BAD_REQUEST,
            "invalid_request",
            "missing token",
        ),
        (
            json!({"card": {"number": pan}}),
            hyper::StatusCode::BAD_REQUEST,
            "invalid_request",
            "a PAN as a token",
        ),
        (
            json!({"card": {"number": "4111119270641111"}}),
            hyper::StatusCode::NOT_FOUND,
            "token_not_found",
            "unknown token",
        ),
        (
            json!({"card": {"number": foreign}}),
            hyper::StatusCode::NOT_FOUND,
            "token_not_found",
            "another tenant's token",
        ),
    ] {
        let reply = payments
            .post_json("/v1/proxy/acquirer", &body)
            .await
            .unwrap();
        assert_api_error(&reply, status, code, what);
    }
    assert_eq!(
        received.lock().unwrap().len(),
        sent,
        "nothing was sent upstream"
    );

    // Upstream failures, each with its code.
    for (route, status, code) in [
        ("wrong_ca", hyper::StatusCode::BAD_GATEWAY, "upstream_tls"),
        (
            "slow",
            hyper::StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
        ),
        ("down", hyper::StatusCode::BAD_GATEWAY, "upstream_failed"),
        ("small", hyper::StatusCode::BAD_GATEWAY, "upstream_failed"),
    ] {
        let reply = payments
            .post_json(&format!("/v1/proxy/{route}"), &request)
            .await
            .unwrap();
        assert_api_error(&reply, status, code, route);
    }

    service.stop().await.unwrap();
    let trail = common::entries(&harness.config.audit.dir);
    let reveals = common::of_kind(&trail, "proxy_reveal");
    assert!(reveals.len() >= 5, "{reveals:?}");
    assert!(reveals.iter().any(|e| {
        e["tokens"][0] == token.as_str()
            && e["detail"].as_str().unwrap().contains("route acquirer")
            && e["detail"]
                .as_str()
                .unwrap()
                .contains("security code delivered")
    }));
    let responses = common::of_kind(&trail, "proxy_response");
    assert!(
        responses
            .iter()
            .any(|e| e["detail"].as_str().unwrap().contains("status 201"))
    );
    assert!(responses.iter().any(|e| e["code"] == "upstream_timeout"));
    let denied = common::of_kind(&trail, "access_denied");
    assert!(denied.iter().any(|e| e["principal"] == "payments2"));
    let text = std::fs::read_dir(&harness.config.audit.dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect::<String>();
    assert!(!text.contains(pan) && !text.contains("737\""));
}
