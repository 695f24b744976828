//! Key lifecycle on a real vault: data-key rotation over the admin API,
//! the re-encryption job under load with a kill -9 in the middle (it
//! resumes from its checkpoint, nothing acknowledged is lost, the old key
//! is destroyed at the end), and the key inventory read against the store.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::Value;

use crate::common::{DevServer, cardvault, entries, of_kind};

/// A dev server re-encrypting slowly (so a kill lands mid-job).
fn slow_server(dir: &Path) -> DevServer {
    DevServer::start_with(
        dir,
        &[
            ("CARDVAULT_KEYS__REENCRYPT_ITEMS_PER_S", "1500"),
            ("CARDVAULT_KEYS__REENCRYPT_BATCH", "100"),
        ],
    )
}

fn tokenize_load(server: &DevServer, acks: &Path, duration: &str) -> std::process::Child {
    server.spawn_load(&[
        "--op",
        "tokenize",
        "--concurrency",
        "8",
        "--duration",
        duration,
        "--warmup",
        "0s",
        "--ack-log",
        acks.to_str().unwrap(),
    ])
}

async fn admin(server: &DevServer, method: Method, path: &str) -> (u16, Value) {
    let mut conn = server.connect("admin").await;
    let body = (method == Method::POST).then(|| ("application/json", b"{}".to_vec()));
    let reply = conn.send(method, path, body).await.unwrap();
    (reply.status.as_u16(), reply.json())
}

/// Polls the job's status until it is done (at most 90 s).
async fn until_done(server: &DevServer) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (code, status) = admin(server, Method::GET, "/v1/admin/keys/default/reencrypt").await;
        if code == 200 && status["state"] == "done" {
            return status;
        }
        assert!(
            code == 200 || code == 400,
            "status answered {code}: {status}"
        );
        assert!(
            Instant::now() < deadline,
            "re-encryption did not finish: {status}"
        );
        assert_ne!(status["state"], "failed", "{status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reencryption_resumes_after_kill_9_loses_nothing_and_destroys_the_old_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let acks = tmp.path().join("acks.jsonl");
    let server = slow_server(&dir);
    let load = tokenize_load(&server, &acks, "2s")
        .wait_with_output()
        .unwrap();
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    let (code, rotated) = admin(&server, Method::POST, "/v1/admin/keys/default/rotate").await;
    assert_eq!(
        (code, rotated["version"].clone()),
        (200, 2.into()),
        "{rotated}"
    );
    // A cart may not rotate; another tenant's name is refused.
    let mut cart = server.connect("cart").await;
    let reply = cart
        .send(Method::POST, "/v1/admin/keys/default/rotate", None)
        .await
        .unwrap();
    assert_eq!(reply.status.as_u16(), 403);
    drop(cart);
    let (code, started) = admin(&server, Method::POST, "/v1/admin/keys/default/reencrypt").await;
    assert_eq!(code, 202, "{started}");
    assert_eq!(started["target_version"], 2);
    // Let it commit some batches, then kill -9 in the middle of the job.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, status) = admin(&server, Method::GET, "/v1/admin/keys/default/reencrypt").await;
        if status["done"].as_u64().unwrap_or(0) >= 500 {
            assert_eq!(status["state"], "running", "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Paused, it stops after its batch and keeps its place; started again,
    // it continues from the checkpoint.
    let (code, paused) = admin(&server, Method::DELETE, "/v1/admin/keys/default/reencrypt").await;
    assert_eq!(
        (code, paused["state"].clone()),
        (200, "stopped".into()),
        "{paused}"
    );
    let (code, continued) = admin(&server, Method::POST, "/v1/admin/keys/default/reencrypt").await;
    assert_eq!(code, 202, "{continued}");
    assert!(
        continued["total"].as_u64().unwrap_or(u64::MAX) <= started["total"].as_u64().unwrap_or(0)
            || continued["state"] == "counting",
        "{continued}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill_9();

    // Restarted, the job resumes by itself from its checkpoint while
    // tokenize load keeps being served.
    let server = slow_server(&dir);
    let during = tmp.path().join("during.jsonl");
    let load = tokenize_load(&server, &during, "2s");
    let status = until_done(&server).await;
    let load = load.wait_with_output().unwrap();
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    assert_eq!(
        status["destroyed_versions"],
        serde_json::json!([1]),
        "{status}"
    );
    assert_eq!(status["remaining"], 0, "{status}");
    for log in [&acks, &during] {
        let verified = server.verify_acks(log);
        assert!(verified["verified"].as_u64().unwrap() > 100, "{verified}");
        assert_eq!(
            (verified["lost"].clone(), verified["mismatched"].clone()),
            (0.into(), 0.into()),
            "{verified}"
        );
    }
    // The inventory, counted: v1 destroyed with no record and no wrapping,
    // v2 active holding every record.
    let (code, inventory) = admin(&server, Method::GET, "/v1/admin/keys?records=true").await;
    assert_eq!(code, 200, "{inventory}");
    let keys = inventory["keys"].as_array().unwrap();
    let key = |purpose: &str, version: u64| {
        keys.iter()
            .find(|k| k["purpose"] == purpose && k["version"] == version)
            .unwrap_or_else(|| panic!("no {purpose} v{version} in {inventory}"))
    };
    let v1 = key("pan-encryption", 1);
    assert_eq!(v1["state"], "destroyed", "{v1}");
    assert_eq!(v1["records"], 0);
    assert!(v1.get("wrapped_by").is_none(), "{v1}");
    let v2 = key("pan-encryption", 2);
    assert_eq!(v2["state"], "active");
    assert!(
        v2["cryptoperiod_ends_at"]
            .as_str()
            .is_some_and(|t| t > v2["changed_at"].as_str().unwrap()),
        "{v2}"
    );
    assert!(v1.get("cryptoperiod_ends_at").is_none(), "{v1}");
    let acknowledged: u64 = [&acks, &during]
        .iter()
        .map(|log| std::fs::read_to_string(log).unwrap().lines().count() as u64)
        .sum();
    assert!(v2["records"].as_u64().unwrap() >= acknowledged / 2, "{v2}");
    assert!(v2["encryptions"].as_u64().unwrap() >= v2["records"].as_u64().unwrap());
    assert_eq!(key("fingerprint", 1)["state"], "active");
    let (code, _) = admin(&server, Method::GET, "/v1/admin/keys?everything=1").await;
    assert_eq!(code, 400);
    // The CLI prints the same inventory.
    let out = cardvault()
        .args(["keys", "inventory", "--dev"])
        .arg(&dir)
        .args(["--addr", &server.api])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("destroyed") && table.contains("pan-encryption"),
        "{table}"
    );
    assert!(server.stop().success());
    // A restart reads the destroyed key's record, and the trail tells the
    // story: started, resumed, finished, destroyed.
    let server = slow_server(&dir);
    let verified = server.verify_acks(&acks);
    assert_eq!(verified["lost"], 0);
    assert!(server.stop().success());
    let trail = entries(&dir.join("audit"));
    let details: Vec<String> = of_kind(&trail, "reencrypt")
        .iter()
        .filter_map(|e| e["detail"].as_str().map(str::to_owned))
        .collect();
    for phrase in [
        "started",
        "resumed from its checkpoint",
        "finished",
        "paused",
    ] {
        assert!(
            details.iter().any(|d| d.starts_with(phrase)),
            "{phrase}: {details:?}"
        );
    }
    assert_eq!(of_kind(&trail, "key_destroyed").len(), 1);
}

/// Asks for tenant default's crypto-shred; the pending approval's id.
async fn ask_shred(conn: &mut cardvault::client::Connection) -> String {
    let reply = conn
        .send(Method::DELETE, "/v1/admin/tenants/default", None)
        .await
        .unwrap();
    assert_eq!(reply.status.as_u16(), 202, "{:?}", reply.json());
    reply.json()["id"].as_str().unwrap().to_owned()
}

/// A second admin of tenant default, a tenant `b` with its own cart and
/// admin, and approvals that lapse after 3 s.
fn shred_setup(c: &mut cardvault::config::Config) {
    use cardvault::config::{AdminScope, PrincipalConfig, Role};
    use cardvault::domain::TenantId;
    for (name, tenant, role) in [
        ("admin2", "default", Role::Admin),
        ("admin-b", "b", Role::Admin),
        ("cart-b", "b", Role::Tokenize),
    ] {
        c.principals.insert(
            name.to_owned(),
            PrincipalConfig {
                tenant: TenantId::parse(tenant).unwrap(),
                roles: vec![role],
                detokenize_hours_utc: None,
                scope: AdminScope::Tenant,
                require_reason: false,
            },
        );
    }
    c.keys.approval_ttl_s = std::num::NonZeroU64::new(3).unwrap();
}

/// The wrapped bytes of every stored key of `tenant` (read with the vault
/// stopped).
fn wrapped_keys(db: &Path, tenant: &str) -> Vec<Vec<u8>> {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(false);
    let raw = rocksdb::DB::open_cf_for_read_only(
        &opts,
        db,
        ["tokens", "fingerprints", "keys", "meta"],
        false,
    )
    .unwrap();
    let keys = raw.cf_handle("keys").unwrap();
    let mut out = Vec::new();
    for item in raw.iterator_cf(keys, rocksdb::IteratorMode::Start) {
        let (key, value) = item.unwrap();
        if let Ok(cardvault::store::codec::KeysEntry::Wrapped(label)) =
            cardvault::store::codec::decode_keys_key(&key)
            && label.tenant.as_str() == tenant
        {
            let record = cardvault::store::codec::KeyRecord::decode(&value).unwrap();
            if !record.wrapped.is_empty() {
                out.push(record.wrapped);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_is_crypto_shredded_only_with_a_second_admin() {
    use crate::common::harness::Harness;
    use serde_json::json;
    let harness = Harness::with(shred_setup);
    for name in ["admin2", "admin-b", "cart-b"] {
        cardvault::pki::issue(&harness.pki(), name).unwrap();
    }
    let service = harness.start().await;
    let mut payments = harness.connect("payments", service.api_addr).await;
    let mut tokens = Vec::new();
    for i in 0..40u64 {
        let pan = crate::common::luhn_complete(&format!("41111100{i:07}"));
        tokens.push(crate::common::tokenize(&mut payments, &pan).await);
    }
    let mut cart_b = harness.connect("cart-b", service.api_addr).await;
    let token_b = crate::common::tokenize(&mut cart_b, "4929123456781236").await;
    drop((payments, cart_b));
    service.stop().await.unwrap();
    let db = harness.config.storage.data_dir.clone();
    let wrapped = wrapped_keys(&db, "default");
    assert_eq!(wrapped.len(), 2, "one data key and one fingerprint key");
    assert!(!wrapped_keys(&db, "b").is_empty());

    let service = harness.start().await;
    let addr = service.api_addr;
    let mut admin = harness.connect("admin", addr).await;
    let mut admin2 = harness.connect("admin2", addr).await;
    let mut admin_b = harness.connect("admin-b", addr).await;
    let mut payments = harness.connect("payments", addr).await;
    // Only admins ask; a request lapses after its lifetime.
    let reply = payments
        .send(Method::DELETE, "/v1/admin/tenants/default", None)
        .await
        .unwrap();
    assert_eq!(reply.status.as_u16(), 403);
    let lapsed = ask_shred(&mut admin).await;
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let reply = admin2
        .send(Method::POST, &format!("/v1/admin/approvals/{lapsed}"), None)
        .await
        .unwrap();
    assert_eq!(reply.status.as_u16(), 400, "{:?}", reply.json());
    // The asker cannot approve, nor can an admin of another tenant.
    let id = ask_shred(&mut admin).await;
    let path = format!("/v1/admin/approvals/{id}");
    for conn in [&mut admin, &mut admin_b] {
        let reply = conn.send(Method::POST, &path, None).await.unwrap();
        assert_eq!(reply.status.as_u16(), 403, "{:?}", reply.json());
    }
    let listed = admin2.get("/v1/admin/approvals").await.unwrap().json();
    assert_eq!(listed["approvals"][0]["id"], id.as_str(), "{listed}");
    assert_eq!(listed["approvals"][0]["action"], "shred_tenant");
    // The second admin of the tenant carries it out, once.
    let done = admin2.send(Method::POST, &path, None).await.unwrap();
    assert_eq!(done.status.as_u16(), 200, "{:?}", done.json());
    let done = done.json();
    assert_eq!(done["records_deleted"], 40, "{done}");
    assert_eq!(done["keys_destroyed"], 2);
    assert_eq!(
        (done["requested_by"].clone(), done["approved_by"].clone()),
        (json!("admin"), json!("admin2"))
    );
    let again = admin2.send(Method::POST, &path, None).await.unwrap();
    assert_eq!(again.status.as_u16(), 400);
    // Every token of the tenant is gone; the other tenant is untouched.
    for token in &tokens[..5] {
        let reply = payments
            .post_json("/v1/detokenize", &json!({ "token": token }))
            .await
            .unwrap();
        assert_eq!(reply.status.as_u16(), 404, "{:?}", reply.json());
    }
    let mut cart_b = harness.connect("cart-b", addr).await;
    let reply = cart_b.get(&format!("/v1/tokens/{token_b}")).await.unwrap();
    assert_eq!(
        reply.status.as_u16(),
        403,
        "cart-b has no read role: {:?}",
        reply.json()
    );
    let inventory = admin_b.get("/v1/admin/keys").await.unwrap().json();
    assert!(
        inventory["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["tenant"] == "b" && k["state"] == "active"),
        "{inventory}"
    );
    let inventory = admin.get("/v1/admin/keys").await.unwrap().json();
    let default_keys: Vec<&Value> = inventory["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["tenant"] == "default")
        .collect();
    assert_eq!(default_keys.len(), 2);
    assert!(
        default_keys.iter().all(|k| k["state"] == "destroyed"),
        "{inventory}"
    );
    drop((admin, admin2, admin_b, payments, cart_b));
    service.stop().await.unwrap();
    // After the compaction, no wrapped key of the tenant is in any file.
    for bytes in &wrapped {
        let holders = crate::common::files_containing(&db, bytes);
        assert!(holders.is_empty(), "wrapped key bytes still in {holders:?}");
    }
    assert!(!wrapped_keys(&db, "b").is_empty());
    let trail = entries(&harness.config.audit.dir);
    let shredded: Vec<&Value> = of_kind(&trail, "tenant_shredded")
        .into_iter()
        .filter(|e| e["outcome"] == "success")
        .collect();
    assert_eq!(shredded.len(), 1, "{shredded:?}");
    assert_eq!(shredded[0]["principal"], "admin2");
    assert!(
        shredded[0]["detail"]
            .as_str()
            .unwrap()
            .contains("requested by admin")
    );
    assert!(of_kind(&trail, "access_denied").iter().any(|e| {
        e["principal"] == "admin"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("cannot approve"))
    }));
    assert!(of_kind(&trail, "approval_requested").len() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_key_past_its_cryptoperiod_is_rotated_and_retired() {
    use serde_json::json;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let server = DevServer::start_with(
        &dir,
        &[
            ("CARDVAULT_KEYS__DEK_CRYPTOPERIOD_S", "4"),
            ("CARDVAULT_KEYS__CRYPTOPERIOD_WARNING_S", "3"),
            ("CARDVAULT_KEYS__CRYPTOPERIOD_CHECK_S", "1"),
        ],
    );
    let mut payments = server.connect("payments").await;
    let token = crate::common::tokenize(&mut payments, "4111111111111111").await;
    // Within a bounded wait: the alert, the rotation, the re-encryption and
    // the old version's destruction, all by themselves.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (_, inventory) = admin(&server, Method::GET, "/v1/admin/keys").await;
        let v1_destroyed = inventory["keys"].as_array().is_some_and(|keys| {
            keys.iter().any(|k| {
                k["purpose"] == "pan-encryption" && k["version"] == 1 && k["state"] == "destroyed"
            })
        });
        if v1_destroyed {
            break;
        }
        assert!(Instant::now() < deadline, "v1 not retired: {inventory}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let reply = payments
        .post_json("/v1/detokenize", &json!({ "token": token }))
        .await
        .unwrap();
    assert_eq!(reply.json()["pan"], "4111111111111111");
    let (_, metrics) = crate::common::harness::ops_get(server.ops_addr(), "/metrics").await;
    assert!(
        metrics.contains("cardvault_key_cryptoperiod_remaining_seconds{tenant=\"default\",purpose=\"pan-encryption\"}")
            || metrics.contains("cardvault_key_cryptoperiod_remaining_seconds{purpose=\"pan-encryption\",tenant=\"default\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("cardvault_alerts_total{rule=\"cryptoperiod_ending\"} 0"),
        "{metrics}"
    );
    drop(payments);
    assert!(server.stop().success());
    let trail = entries(&dir.join("audit"));
    assert!(of_kind(&trail, "alert").iter().any(|e| {
        e["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("cryptoperiod_ending"))
    }));
    assert!(!of_kind(&trail, "key_rotated").is_empty());
    assert!(!of_kind(&trail, "key_destroyed").is_empty());
}

/// Tokenizes `pans` over one connection; the tokens in order.
async fn tokenize_all(server: &DevServer, pans: &[String]) -> Vec<String> {
    let mut conn = server.connect("payments").await;
    let mut out = Vec::with_capacity(pans.len());
    for pan in pans {
        out.push(crate::common::tokenize(&mut conn, pan).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fingerprint_key_rotation_keeps_every_pan_on_its_token() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let server = Arc::new(DevServer::start_with(
        &dir,
        &[
            ("CARDVAULT_KEYS__REENCRYPT_ITEMS_PER_S", "400"),
            ("CARDVAULT_KEYS__REENCRYPT_BATCH", "50"),
        ],
    ));
    let pans: Vec<String> = (0..300u64)
        .map(|i| crate::common::luhn_complete(&format!("45320015{i:07}")))
        .collect();
    let tokens = tokenize_all(&server, &pans).await;
    // Tokenizations racing the rotation itself, then the rotation.
    let racing = {
        let server = Arc::clone(&server);
        let pans = pans[..100].to_vec();
        tokio::spawn(async move { tokenize_all(&server, &pans).await })
    };
    let (code, rotated) = admin(
        &server,
        Method::POST,
        "/v1/admin/keys/default/rotate?purpose=fingerprint",
    )
    .await;
    assert_eq!(code, 200, "{rotated}");
    assert_eq!(
        (rotated["purpose"].clone(), rotated["version"].clone()),
        ("fingerprint".into(), 2.into())
    );
    assert_eq!(racing.await.unwrap(), tokens[..100]);
    // Before any re-encryption: found through the older key's fingerprint.
    assert_eq!(
        tokenize_all(&server, &pans[100..150]).await,
        tokens[100..150]
    );
    // During the pass, tokenizations of the same PANs (and new ones) race it.
    let (code, started) = admin(&server, Method::POST, "/v1/admin/keys/default/reencrypt").await;
    assert_eq!(code, 202, "{started}");
    let during = {
        let server = Arc::clone(&server);
        let pans = pans.clone();
        tokio::spawn(async move {
            let mut rounds = Vec::new();
            for _ in 0..2 {
                rounds.push(tokenize_all(&server, &pans).await);
            }
            rounds
        })
    };
    let status = until_done(&server).await;
    for round in during.await.unwrap() {
        assert_eq!(round, tokens, "a PAN changed token during the pass");
    }
    assert!(status["done"].as_u64().unwrap() >= 300, "{status}");
    let (_, inventory) = admin(&server, Method::GET, "/v1/admin/keys").await;
    let state = |version: u64| {
        inventory["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["purpose"] == "fingerprint" && k["version"] == version)
            .map(|k| k["state"].clone())
    };
    assert_eq!(state(1), Some("destroyed".into()), "{inventory}");
    assert_eq!(state(2), Some("active".into()), "{inventory}");
    assert_eq!(tokenize_all(&server, &pans).await, tokens);
    let server = Arc::try_unwrap(server).ok().unwrap();
    assert!(server.stop().success());
    // Restarted (the old fingerprint key destroyed): still the same tokens.
    let server = DevServer::start(&dir);
    assert_eq!(tokenize_all(&server, &pans[..50]).await, tokens[..50]);
    let mut conn = server.connect("cart").await;
    let reply = conn
        .post_json("/v1/lookup", &serde_json::json!({ "pan": pans[7] }))
        .await
        .unwrap();
    assert_eq!(reply.json()["token"], tokens[7].as_str());
    drop(conn);
    assert!(server.stop().success());
    let trail = entries(&dir.join("audit"));
    assert!(of_kind(&trail, "key_destroyed").iter().any(|e| {
        e["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("fingerprint v1"))
    }));
}
