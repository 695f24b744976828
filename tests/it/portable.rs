//! Portable tokens between two real vaults: vault A's tenant is exported
//! under dual control (the requester cannot approve, another admin cannot
//! fetch), encrypted by the vault to an age recipient, written by
//! `cardvault export`; `cardvault import --identity` reads it into vault B
//! without a plaintext file, and every token detokenizes to the same PAN
//! in B; tokenizing one of those PANs in B returns the imported token; a
//! re-run is idempotent; bad lines are refused by line number.

use std::io::Read as _;
use std::str::FromStr as _;

use secrecy::ExposeSecret as _;

use cardvault::client::Connection;
use cardvault::config::{PrincipalConfig, Role};
use cardvault::domain::TenantId;
use hyper::Method;
use serde_json::{Value, json};

use crate::common::harness::Harness;
use crate::common::{self, luhn_complete};

fn two_admins(config: &mut cardvault::config::Config) {
    config.principals.insert(
        "admin2".into(),
        PrincipalConfig {
            tenant: TenantId::parse("default").unwrap(),
            roles: vec![Role::Admin],
            detokenize_hours_utc: None,
            scope: Default::default(),
            require_reason: false,
        },
    );
}

fn harness() -> Harness {
    let h = Harness::with(two_admins);
    cardvault::pki::issue(&h.pki(), "admin2").unwrap();
    h
}

fn cli_as(h: &Harness, name: &str, addr: std::net::SocketAddr) -> Vec<String> {
    let pki = h.pki();
    vec![
        "--addr".into(),
        format!("https://{addr}"),
        "--cacert".into(),
        pki.join("ca.pem").display().to_string(),
        "--cert".into(),
        pki.join(format!("{name}.pem")).display().to_string(),
        "--key".into(),
        pki.join(format!("{name}-key.pem")).display().to_string(),
    ]
}

async fn detokenize(conn: &mut Connection, token: &str) -> (u16, Value) {
    let reply = conn
        .post_json("/v1/detokenize", &json!({ "token": token }))
        .await
        .unwrap();
    (reply.status.as_u16(), reply.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_move_between_vaults_under_dual_control_and_stay_the_same() {
    // Vault A with 40 tokens, some with an expiry.
    let a = harness();
    let service_a = a.start().await;
    let addr_a = service_a.api_addr;
    let mut cart = a.connect("cart", addr_a).await;
    let mut pairs = Vec::new();
    for i in 0..40 {
        let pan = luhn_complete(&format!("52{i:013}"));
        let mut body = json!({ "pan": pan });
        if i % 3 == 0 {
            body["expiry"] = json!("11/29");
        }
        let reply = cart.post_json("/v1/tokenize", &body).await.unwrap();
        assert_eq!(reply.status, 200);
        pairs.push((reply.json()["token"].as_str().unwrap().to_owned(), pan));
    }

    // The export waits for a second admin; the requester cannot approve it
    // and a third party cannot fetch it.
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("default.ndjson.age");
    let export = common::cardvault()
        .arg("export")
        .args(cli_as(&a, "admin", addr_a))
        .args([
            "--tenant",
            "default",
            "--recipient",
            &recipient,
            "--wait",
            "60s",
        ])
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut admin = a.connect("admin", addr_a).await;
    let mut admin2 = a.connect("admin2", addr_a).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let id = loop {
        let listed = admin2.get("/v1/admin/approvals").await.unwrap().json();
        if let Some(p) = listed["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["action"] == "export_tenant")
        {
            assert_eq!(p["recipient"], recipient.as_str());
            break p["id"].as_str().unwrap().to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no export request");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let own = admin
        .send(Method::POST, &format!("/v1/admin/approvals/{id}"), None)
        .await
        .unwrap();
    assert_eq!(own.status, 403, "the requester approving itself");
    let early = admin2
        .get(&format!("/v1/admin/exports/{id}"))
        .await
        .unwrap();
    assert_eq!(early.status, 403, "another admin fetching");
    let approve = common::cardvault()
        .arg("approve")
        .args(cli_as(&a, "admin2", addr_a))
        .arg(&id)
        .output()
        .unwrap();
    assert!(
        approve.status.success(),
        "{}",
        String::from_utf8_lossy(&approve.stdout)
    );
    let approved: Value = serde_json::from_slice(&approve.stdout).unwrap();
    assert_eq!(approved["approved_by"], "admin2");
    let done = tokio::task::spawn_blocking(move || export.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let again = admin.get(&format!("/v1/admin/exports/{id}")).await.unwrap();
    assert_eq!(again.status, 400, "an export is fetched once");

    // Nothing in clear: the file is age ciphertext holding the pairs.
    let bytes = std::fs::read(&out).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1"));
    for (_, pan) in &pairs {
        assert!(!bytes.windows(pan.len()).any(|w| w == pan.as_bytes()));
    }
    let decryptor = age::Decryptor::new(&bytes[..]).unwrap();
    let mut plain = String::new();
    decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .unwrap()
        .read_to_string(&mut plain)
        .unwrap();
    let lines: Vec<Value> = plain
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), pairs.len());
    assert!(lines.iter().any(|l| l["expiry"] == "11/29"));
    service_a.stop().await.unwrap();
    let trail_a = common::entries(&a.config.audit.dir);
    // Every fetch is audited; the one that carried data has its count.
    let exports = common::of_kind(&trail_a, "export");
    let exported: Vec<_> = exports.iter().filter(|e| e["count"].is_u64()).collect();
    assert_eq!(exported.len(), 1, "{exports:?}");
    assert!(exported[0]["detail"].as_str().unwrap().contains("sha256"));
    assert_eq!(exported[0]["count"], 40);
    assert_eq!(common::of_kind(&trail_a, "export_approved").len(), 1);

    // Vault B imports the ciphertext directly.
    let b = harness();
    let service_b = b.start().await;
    let addr_b = service_b.api_addr;
    let key_file = tmp.path().join("identity.txt");
    std::fs::write(
        &key_file,
        format!("{}\n", identity.to_string().expose_secret()),
    )
    .unwrap();
    let import = |extra: &[&str]| {
        common::cardvault()
            .arg("import")
            .args(cli_as(&b, "admin", addr_b))
            .args(extra)
            .arg("--json")
            .output()
            .unwrap()
    };
    let out_s = out.to_str().unwrap();
    let key_s = key_file.to_str().unwrap();
    let first = import(&["--file", out_s, "--identity", key_s, "--batch", "7"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let summary: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(
        (summary["imported"].as_u64(), summary["refused"].as_u64()),
        (Some(40), Some(0))
    );
    let second = import(&["--file", out_s, "--identity", key_s]);
    let summary: Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(summary["already_present"], 40, "a re-run is idempotent");

    let mut payments = b.connect("payments", addr_b).await;
    for (token, pan) in &pairs {
        let (status, body) = detokenize(&mut payments, token).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["pan"], pan.as_str());
    }
    let mut cart_b = b.connect("cart", addr_b).await;
    let again = common::tokenize(&mut cart_b, &pairs[5].1).await;
    assert_eq!(
        again, pairs[5].0,
        "the imported token is the PAN's token in B"
    );

    // Refusals, by line: Luhn-passing token, a token of another PAN, a PAN
    // with another token, malformed JSON, a sensitive field, a bad PAN.
    let other_pan = luhn_complete("520000000009999");
    let lines = [
        json!({"token": "4111111111111111", "pan": luhn_complete("411111111111222")}).to_string(),
        json!({"token": pairs[0].0, "pan": other_pan}).to_string(),
        json!({"token": "5299999999999994", "pan": pairs[1].1}).to_string(),
        "{not json".to_owned(),
        json!({"token": "5299999999999991", "pan": other_pan, "cvv": "123"}).to_string(),
        json!({"token": "5299999999999992", "pan": "5200000000000001"}).to_string(),
        String::new(),
        json!({"token": "5299999999999993", "pan": luhn_complete("520000000008888"), "expiry": "01/30"}).to_string(),
    ];
    let bad = tmp.path().join("bad.ndjson");
    std::fs::write(&bad, lines.join("\n") + "\n").unwrap();
    let run = import(&["--file", bad.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1));
    let summary: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["imported"], 1);
    let refusals: Vec<(u64, String)> = summary["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["error"]["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        refusals,
        vec![
            (1, "invalid_request".into()),
            (2, "token_conflict".into()),
            (3, "token_conflict".into()),
            (4, "invalid_request".into()),
            (5, "invalid_request".into()),
            (6, "invalid_pan".into()),
        ]
    );
    let output = String::from_utf8_lossy(&run.stdout);
    assert!(!output.contains(&other_pan) && !output.contains(pairs[1].1.as_str()));
    // The one good line is in, with its expiry.
    let (status, body) = detokenize(&mut payments, "5299999999999993").await;
    assert_eq!((status, body["expiry"].as_str()), (200, Some("01/30")));
    service_b.stop().await.unwrap();
    let trail_b = common::entries(&b.config.audit.dir);
    let imports = common::of_kind(&trail_b, "import");
    // One event per request: 6 batches of at most 7, the re-run, the bad file.
    assert_eq!(imports.len(), 6 + 1 + 1);
    assert!(imports.iter().all(|e| !e.to_string().contains(&other_pan)));
}

#[test]
fn a_bad_recipient_or_tenant_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = common::cardvault()
        .args([
            "export",
            "--dev",
            tmp.path().to_str().unwrap(),
            "--tenant",
            "default",
        ])
        .args(["--recipient", "not-a-key", "--out"])
        .arg(tmp.path().join("x.age"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let key = age::x25519::Identity::generate().to_public().to_string();
    assert!(age::x25519::Recipient::from_str(&key).is_ok());
    let out = common::cardvault()
        .args([
            "export",
            "--dev",
            tmp.path().to_str().unwrap(),
            "--tenant",
            "a/b",
        ])
        .args(["--recipient", &key, "--out"])
        .arg(tmp.path().join("x.age"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}
