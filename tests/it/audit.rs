//! The audit trail end to end: events written by a real server over real
//! mTLS, the chain checked by the real `cardvault audit verify` binary,
//! fail-closed detokenization when the trail cannot be written, and the
//! alert rules.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::common::harness::{Harness, ops_get};
use crate::common::{copy_dir, entries, of_kind};
use cardvault::audit::{AuditLog, AuditSettings, Event, EventKind};
use cardvault::client::ClientTls;
use cardvault::config::{BurstRule, Config};
use cardvault::crypto::KeyFileProvider;
use cardvault::{TenantId, Vault, VaultOptions};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

const CANARY: &str = "4929123456781236";

/// Runs `cardvault audit verify PATH --key-file KEK`: (exit code, stdout + stderr).
fn verify(path: &Path, kek: &Path) -> (i32, String) {
    verify_with(path, &["--key-file", kek.to_str().unwrap()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_recorded_with_its_fields_and_no_pan() {
    let harness = Harness::with(|c| {
        c.alerts.handshake_failure_burst = BurstRule::new(2, 600);
    });
    let audit_dir = harness.config.audit.dir.clone();
    let kek = harness.config.storage.key_file.clone().unwrap();
    let service = harness.start().await;
    let addr = service.api_addr;
    let mut cart = harness.connect("cart", addr).await;
    let mut payments = harness.connect("payments", addr).await;
    let mut admin = harness.connect("admin", addr).await;
    let mut stranger = harness.connect("stranger", addr).await;

    let reply = cart
        .post_json("/v1/tokenize", &json!({ "pan": CANARY }))
        .await
        .unwrap();
    let tokenize_id = reply.request_id.clone().unwrap();
    let token = reply.json()["token"].as_str().unwrap().to_owned();
    let reply = cart
        .post_json(
            "/v1/tokenize/batch",
            &json!({ "pans": ["4111111111111111", "123"] }),
        )
        .await
        .unwrap();
    let batch_token = reply.json()["results"][0]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = payments
        .post_json("/v1/detokenize", &json!({ "token": token }))
        .await
        .unwrap();
    assert_eq!(reply.json()["pan"], CANARY);
    let detokenize_id = reply.request_id.clone().unwrap();
    payments
        .post_json(
            "/v1/detokenize/batch",
            &json!({ "tokens": [token, batch_token, "4929000000000000"] }),
        )
        .await
        .unwrap();
    cart.get(&format!("/v1/tokens/{token}")).await.unwrap();
    // A PAN where a token belongs, in a path and in a body: refused, and
    // never written anywhere.
    let reply = cart.get(&format!("/v1/tokens/{CANARY}")).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    payments
        .post_json("/v1/detokenize", &json!({ "token": CANARY }))
        .await
        .unwrap();
    let reply = cart
        .post_json("/v1/detokenize", &json!({ "token": token }))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = stranger
        .post_json("/v1/tokenize", &json!({ "pan": CANARY }))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = admin
        .send(Method::DELETE, &format!("/v1/tokens/{batch_token}"), None)
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    // Three handshakes without a client certificate: the third crosses the
    // burst rule (more than 2).
    let anonymous = ClientTls::from_files(&harness.pki().join("ca.pem"), None, false).unwrap();
    for _ in 0..3 {
        if let Ok(mut conn) = anonymous.connect(addr).await {
            let _ = conn.get("/v1/tokens/x").await;
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (_, metrics) = ops_get(service.ops_addr, "/metrics").await;
    assert!(
        metrics.contains("cardvault_alerts_total{rule=\"handshake_failure_burst\"} 1"),
        "{metrics}"
    );
    drop((cart, payments, admin, stranger));
    service.stop().await.unwrap();

    // A key rotation, as `cardvault keys rotate` does it (offline).
    let provider = Arc::new(KeyFileProvider::open(&kek).unwrap());
    let audit = AuditLog::open(AuditSettings::new(audit_dir.clone()), provider.as_ref()).unwrap();
    let vault = Vault::open(
        &harness.config.storage.data_dir,
        provider,
        VaultOptions {
            audit: Some(audit.clone()),
            ..VaultOptions::default()
        },
    )
    .unwrap();
    vault
        .rotate_keys(&TenantId::parse("default").unwrap())
        .await
        .unwrap();
    vault.close().await.unwrap();
    audit.close().await.unwrap();

    let all = entries(&audit_dir);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1, "{e}");
        assert!(e["ts"].as_str().unwrap().ends_with('Z'), "{e}");
        assert!(e["outcome"].is_string() && e["mac"].is_string(), "{e}");
    }
    let request_fields = ["principal", "cert_serial", "peer", "tenant", "request_id"];
    let one = |kind: &str| -> Value {
        let found = of_kind(&all, kind);
        assert!(!found.is_empty(), "no {kind} event in {all:#?}");
        found[0].clone()
    };
    let tokenize = one("tokenize");
    for field in request_fields {
        assert!(
            tokenize[field].is_string(),
            "tokenize lacks {field}: {tokenize}"
        );
    }
    assert_eq!(tokenize["principal"], "cart");
    assert_eq!(tokenize["token"], token.as_str());
    assert_eq!(tokenize["request_id"], tokenize_id.as_str());
    assert_eq!(tokenize["outcome"], "success");
    let batch = one("tokenize_batch");
    assert_eq!(batch["count"], 2);
    assert_eq!(batch["failed"], 1);
    assert_eq!(batch["tokens"], json!([batch_token]));
    let detokenize = one("detokenize");
    assert_eq!(detokenize["principal"], "payments");
    assert_eq!(detokenize["token"], token.as_str());
    assert_eq!(detokenize["request_id"], detokenize_id.as_str());
    assert_eq!(detokenize["outcome"], "success");
    for field in request_fields {
        assert!(detokenize[field].is_string(), "detokenize lacks {field}");
    }
    let refused = &of_kind(&all, "detokenize")[1];
    assert_eq!(refused["outcome"], "error");
    assert_eq!(refused["code"], "invalid_request");
    assert!(refused.get("token").is_none(), "{refused}");
    let dbatch = one("detokenize_batch");
    assert_eq!(dbatch["tokens"], json!([token, batch_token]));
    assert_eq!(dbatch["failed"], 1);
    let meta = one("metadata_read");
    assert_eq!(meta["token"], token.as_str());
    assert_eq!(of_kind(&all, "metadata_read")[1]["code"], "invalid_request");
    let delete = one("delete");
    assert_eq!(delete["principal"], "admin");
    assert_eq!(delete["token"], batch_token.as_str());
    let denied = of_kind(&all, "access_denied");
    assert!(
        denied
            .iter()
            .any(|e| e["principal"] == "cart" && e["detail"] == "detokenize"),
        "{denied:?}"
    );
    assert!(
        denied
            .iter()
            .any(|e| e["principal"] == "stranger" && e["detail"] == "principal not configured"),
        "{denied:?}"
    );
    assert!(
        denied
            .iter()
            .all(|e| e["outcome"] == "denied" && e["code"] == "forbidden")
    );
    let handshake = one("tls_handshake_failed");
    assert!(
        handshake["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(handshake["detail"].is_string());
    let alert = one("alert");
    assert_eq!(alert["detail"], "handshake_failure_burst");
    assert_eq!(alert["count"], 3);
    assert_eq!(one("key_created")["tenant"], "default");
    assert_eq!(
        one("key_rotated")["detail"],
        "pan-encryption v1 -> v2",
        "{all:#?}"
    );
    for kind in ["vault_start", "vault_stop", "audit_start", "audit_stop"] {
        one(kind);
    }
    assert_eq!(of_kind(&all, "audit_start").len(), 2);
    assert_eq!(all.last().unwrap()["event"], "audit_stop");

    // No PAN anywhere in the trail: not the canary, not the batch PAN.
    assert!(common::files_containing(&audit_dir, CANARY.as_bytes()).is_empty());
    assert!(common::files_containing(&audit_dir, b"4111111111111111").is_empty());

    let (code, text) = verify(&audit_dir, &kek);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("audit trail intact"), "{text}");
}

/// Writes a trail of `n` events (plus audit_start/audit_stop) split over
/// several small segments; returns the KEK path.
async fn small_trail(dir: &Path, n: usize, max_file_bytes: u64) -> PathBuf {
    let kek = dir.join("kek.key");
    KeyFileProvider::create(&kek).unwrap();
    let provider = KeyFileProvider::open(&kek).unwrap();
    let mut settings = AuditSettings::new(dir.join("audit"));
    settings.max_file_bytes = max_file_bytes;
    let audit = AuditLog::open(settings, &provider).unwrap();
    for i in 0..n {
        let mut event = Event::new(EventKind::MetadataRead).with_tenant("default");
        event.principal = Some(format!("p{i}"));
        event.token = Some(format!("49291234567812{:02}", i % 100));
        audit.record(event);
        if i % 3 == 0 {
            audit
                .record_durable(Event::new(EventKind::Tokenize))
                .await
                .unwrap();
        }
    }
    audit.close().await.unwrap();
    kek
}

fn rewrite_lines(path: &Path, edit: impl FnOnce(&mut Vec<String>)) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    edit(&mut lines);
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_first_bad_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let kek = small_trail(tmp.path(), 10, 1 << 20).await;
    let pristine = tmp.path().join("audit");
    let segment = cardvault::audit::segments(&pristine).unwrap()[0].1.clone();
    let name = segment.file_name().unwrap().to_owned();
    let (code, text) = verify(&pristine, &kek);
    assert_eq!(code, 0, "{text}");
    let (code, text) = verify(&segment, &kek);
    assert_eq!(code, 0, "a single segment verifies too: {text}");

    type Edit = Box<dyn FnOnce(&mut Vec<String>)>;
    let cases: Vec<(&str, Edit, u64)> = vec![
        (
            "edit one field",
            Box::new(|l| l[4] = l[4].replace("\"p", "\"q")),
            5,
        ),
        ("delete a line", Box::new(|l| drop(l.remove(6))), 7),
        ("swap two lines", Box::new(|l| l.swap(2, 3)), 3),
        (
            "insert a copied line",
            Box::new(|l| {
                let copy = l[1].clone();
                l.insert(4, copy);
            }),
            5,
        ),
    ];
    for (i, (what, edit, bad_seq)) in cases.into_iter().enumerate() {
        let copy = tmp.path().join(format!("case-{i}"));
        copy_dir(&pristine, &copy);
        rewrite_lines(&copy.join(&name), edit);
        let (code, text) = verify(&copy, &kek);
        assert_eq!(code, 1, "{what}: {text}");
        assert!(
            text.contains(&format!("broken at seq {bad_seq} ")),
            "{what}: {text}"
        );
    }
    // Truncated in the middle of the last line.
    let copy = tmp.path().join("truncated");
    copy_dir(&pristine, &copy);
    let bytes = std::fs::read(copy.join(&name)).unwrap();
    let lines = bytes.iter().filter(|b| **b == b'\n').count() as u64;
    std::fs::write(copy.join(&name), &bytes[..bytes.len() - 30]).unwrap();
    let (code, text) = verify(&copy, &kek);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(&format!("broken at seq {lines} ")), "{text}");
    // Another KEK cannot vouch for the trail.
    let other = tmp.path().join("other.key");
    KeyFileProvider::create(&other).unwrap();
    let (code, text) = verify(&pristine, &other);
    assert_ne!(code, 0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_rotate_and_keep_one_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let kek = small_trail(tmp.path(), 60, 2_000).await;
    let dir = tmp.path().join("audit");
    let segments = cardvault::audit::segments(&dir).unwrap();
    assert!(segments.len() >= 4, "{segments:?}");
    let (code, text) = verify(&dir, &kek);
    assert_eq!(code, 0, "{text}");
    // Reopening continues the chain in a new segment.
    let provider = KeyFileProvider::open(&kek).unwrap();
    let audit = AuditLog::open(AuditSettings::new(dir.clone()), &provider).unwrap();
    audit.close().await.unwrap();
    let (code, text) = verify(&dir, &kek);
    assert_eq!(code, 0, "{text}");
    // A crash mid-write leaves a torn last line: the next start cuts it off
    // and says so in its audit_start event.
    let last = cardvault::audit::segments(&dir)
        .unwrap()
        .last()
        .unwrap()
        .1
        .clone();
    let mut torn = std::fs::read(&last).unwrap();
    torn.extend_from_slice(b"{\"seq\":99,\"ts\"");
    std::fs::write(&last, &torn).unwrap();
    let audit = AuditLog::open(AuditSettings::new(dir.clone()), &provider).unwrap();
    audit.close().await.unwrap();
    let (code, text) = verify(&dir, &kek);
    assert_eq!(code, 0, "{text}");
    let starts = of_kind(&entries(&dir), "audit_start")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert!(
        starts.last().unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("cut 14 bytes"),
        "{starts:?}"
    );
    // A removed middle segment breaks the chain.
    std::fs::remove_file(&segments[1].1).unwrap();
    let (code, text) = verify(&dir, &kek);
    assert_eq!(code, 1, "{text}");
    // A trail with segments but no audit key refuses to continue.
    std::fs::remove_file(dir.join("audit.key")).unwrap();
    let err = AuditLog::open(AuditSettings::new(dir.clone()), &provider).unwrap_err();
    assert!(err.to_string().contains("audit.key"), "{err}");
}

/// Runs `cardvault audit verify PATH` with `args`: (exit code, stdout + stderr).
fn verify_with(path: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cardvault"))
        .args(["audit", "verify"])
        .arg(path)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Opens the trail in `dir` with checkpoints every 7 entries into
/// `checkpoints` and the public key in `public`, writes `n` events, closes.
async fn checkpointed(dir: &Path, kek: &Path, checkpoints: &Path, public: &Path, n: usize) {
    let provider = KeyFileProvider::open(kek).unwrap();
    let mut settings = AuditSettings::new(dir.to_path_buf());
    settings.max_file_bytes = 2_000;
    settings.checkpoints.dir = Some(checkpoints.to_path_buf());
    settings.checkpoints.every_events = 7;
    settings.public_key_file = Some(public.to_path_buf());
    let audit = AuditLog::open(settings, &provider).unwrap();
    for i in 0..n {
        let mut event = Event::new(EventKind::MetadataRead).with_tenant("default");
        event.principal = Some(format!("p{i}"));
        audit.record_durable(event).await.unwrap();
    }
    audit.close().await.unwrap();
}

/// Every checkpoint line in `dir`'s daily files, oldest first.
fn all_checkpoints(dir: &Path) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect()
}

/// The last `n` lines of the trail in `dir` removed (from its last segments).
fn cut_tail(dir: &Path, mut n: usize) {
    for (_, segment) in cardvault::audit::segments(dir).unwrap().into_iter().rev() {
        let mut lines: Vec<String> = std::fs::read_to_string(&segment)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        let cut = n.min(lines.len());
        lines.truncate(lines.len() - cut);
        n -= cut;
        let text = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
        std::fs::write(&segment, text).unwrap();
        if n == 0 {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_catch_a_cut_tail_a_removed_segment_and_a_rollback() {
    let tmp = tempfile::tempdir().unwrap();
    let kek = tmp.path().join("kek.key");
    KeyFileProvider::create(&kek).unwrap();
    let trail = tmp.path().join("audit");
    let spool = tmp.path().join("checkpoints");
    let public = tmp.path().join("evidence.pub");
    checkpointed(&trail, &kek, &spool, &public, 40).await;
    let k = kek.to_str().unwrap();
    let c = spool.to_str().unwrap();
    let p = public.to_str().unwrap();
    let full = ["--key-file", k, "--checkpoints", c, "--pubkey", p];

    let (code, text) = verify_with(&trail, &full);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("checkpoints: ") && text.contains("agree with the trail"),
        "{text}"
    );
    // The public key and the checkpoints alone, no KEK.
    let (code, text) = verify_with(&trail, &["--checkpoints", c, "--pubkey", p]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("MACs between entries were not checked"),
        "{text}"
    );
    // Each checkpoint line verifies with plain openssl, as docs/evidence.md
    // tells an assessor without cardvault.
    let line: Value =
        serde_json::from_str(all_checkpoints(&spool).lines().last().unwrap()).unwrap();
    let message = tmp.path().join("checkpoint.msg");
    let signature = tmp.path().join("checkpoint.sig");
    std::fs::write(&message, line["signed"].as_str().unwrap()).unwrap();
    std::fs::write(
        &signature,
        hex::decode(line["signature"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let openssl = Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-inkey", p, "-rawin", "-in"])
        .arg(&message)
        .arg("-sigfile")
        .arg(&signature)
        .output()
        .unwrap();
    assert!(
        openssl.status.success(),
        "{}",
        String::from_utf8_lossy(&openssl.stderr)
    );

    // 1. The last seven entries cut: the chain alone cannot tell; the
    // checkpoints can.
    let cut = tmp.path().join("cut");
    copy_dir(&trail, &cut);
    cut_tail(&cut, 7);
    let (code, text) = verify_with(&cut, &["--key-file", k]);
    assert_eq!(code, 0, "the chain alone misses a cut tail: {text}");
    let (code, text) = verify_with(&cut, &full);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("entries were cut from its end"), "{text}");

    // 2. The newest segment deleted, then a middle one.
    let removed = tmp.path().join("removed");
    copy_dir(&trail, &removed);
    let segments = cardvault::audit::segments(&removed).unwrap();
    assert!(segments.len() >= 3, "{segments:?}");
    std::fs::remove_file(&segments.last().unwrap().1).unwrap();
    let (code, text) = verify_with(&removed, &["--key-file", k]);
    assert_eq!(
        code, 0,
        "the chain alone misses a removed last segment: {text}"
    );
    let (code, text) = verify_with(&removed, &full);
    assert_eq!(code, 1, "{text}");
    std::fs::remove_file(&segments[1].1).unwrap();
    let (code, text) = verify_with(&removed, &full);
    assert_eq!(code, 1, "{text}");

    // 3. Rolled back: an older copy of the trail put back after the vault
    // went on writing...
    let old = tmp.path().join("old");
    copy_dir(&trail, &old);
    checkpointed(&trail, &kek, &spool, &public, 20).await;
    let (code, text) = verify_with(&trail, &full);
    assert_eq!(code, 0, "{text}");
    let (code, text) = verify_with(&old, &["--key-file", k]);
    assert_eq!(code, 0, "the old copy's chain is intact: {text}");
    let (code, text) = verify_with(&old, &full);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("rolled back to an older copy"), "{text}");
    // ... and then continued past the checkpoints: the entries at their
    // sequence numbers are not the signed ones.
    checkpointed(&old, &kek, &tmp.path().join("elsewhere"), &public, 40).await;
    let (code, text) = verify_with(&old, &["--key-file", k]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = verify_with(&old, &full);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("rolled back and continued"), "{text}");

    // A checkpoint edited, or checked against another key, is refused.
    let forged = tmp.path().join("forged.jsonl");
    let lines = all_checkpoints(&spool);
    std::fs::write(&forged, lines.replacen("\\\"seq\\\":", "\\\"seq\\\":1", 1)).unwrap();
    let (code, text) = verify_with(
        &trail,
        &[
            "--key-file",
            k,
            "--checkpoints",
            forged.to_str().unwrap(),
            "--pubkey",
            p,
        ],
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("signature does not verify"), "{text}");
    let (code, text) = verify_with(
        &trail,
        &[
            "--key-file",
            k,
            "--checkpoints",
            c,
            "--pubkey",
            &"ab".repeat(32),
        ],
    );
    assert_eq!(code, 1, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detokenize_fails_closed_when_the_trail_cannot_be_written() {
    let harness = Harness::new();
    let audit_dir = harness.config.audit.dir.clone();
    let service = harness.start().await;
    let mut payments = harness.connect("payments", service.api_addr).await;
    let token = common::tokenize(&mut payments, CANARY).await;
    let reveal = json!({ "token": token });
    let reply = payments.post_json("/v1/detokenize", &reveal).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);

    // The audit directory disappears and a file takes its place: nothing
    // can be written there any more.
    let moved = audit_dir.with_extension("moved");
    std::fs::rename(&audit_dir, &moved).unwrap();
    std::fs::write(&audit_dir, b"not a directory").unwrap();
    for path in ["/v1/detokenize", "/v1/detokenize/batch"] {
        let body = if path.ends_with("batch") {
            json!({ "tokens": [token] })
        } else {
            reveal.clone()
        };
        let reply = payments.post_json(path, &body).await.unwrap();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(reply.json()["error"]["code"], "unavailable");
        assert!(!String::from_utf8_lossy(&reply.body).contains(CANARY));
    }
    // Tokenization reveals nothing and keeps working.
    let reply = payments
        .post_json("/v1/tokenize", &json!({ "pan": "4111111111111111" }))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let (_, metrics) = ops_get(service.ops_addr, "/metrics").await;
    assert!(
        metrics.contains("cardvault_detokenize_refused_audit_total 2"),
        "{metrics}"
    );

    // The directory comes back (empty): the writer starts a new segment
    // there, with the wrapped key, and says how many events were lost.
    std::fs::remove_file(&audit_dir).unwrap();
    std::fs::create_dir(&audit_dir).unwrap();
    let reply = payments.post_json("/v1/detokenize", &reveal).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    drop(payments);
    service.stop().await.unwrap();
    let resumed = entries(&audit_dir);
    let resumed = of_kind(&resumed, "audit_resumed");
    assert_eq!(resumed.len(), 1);
    assert!(resumed[0]["count"].as_u64().unwrap() >= 3, "{resumed:?}");
    assert!(audit_dir.join("audit.key").exists());
    assert!(common::files_containing(&moved, CANARY.as_bytes()).is_empty());
    assert!(common::files_containing(&audit_dir, CANARY.as_bytes()).is_empty());
}

fn burst_config(c: &mut Config) {
    c.alerts.detokenize_burst = BurstRule::new(3, 600);
    c.alerts.block_detokenize_on_alert = true;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detokenize_burst_raises_an_alert_and_blocks_until_cleared() {
    let harness = Harness::with(burst_config);
    let audit_dir = harness.config.audit.dir.clone();
    let service = harness.start().await;
    let mut payments = harness.connect("payments", service.api_addr).await;
    let mut admin = harness.connect("admin", service.api_addr).await;
    let token = common::tokenize(&mut payments, CANARY).await;
    let reveal = json!({ "token": token });
    for _ in 0..3 {
        let reply = payments.post_json("/v1/detokenize", &reveal).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    // The fourth crosses the rule; with blocking on it is refused, and so
    // is everything after it.
    for _ in 0..2 {
        let reply = payments.post_json("/v1/detokenize", &reveal).await.unwrap();
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
    }
    let reply = admin.get("/v1/admin/alerts").await.unwrap();
    assert_eq!(reply.json(), json!({ "blocked": ["payments"] }));
    let (_, metrics) = ops_get(service.ops_addr, "/metrics").await;
    assert!(
        metrics.contains("cardvault_alerts_total{rule=\"detokenize_burst\"} 1"),
        "{metrics}"
    );
    // Only an admin may clear it, and only for a configured principal.
    let clear = json!({ "principal": "payments" });
    let reply = payments
        .post_json("/v1/admin/alerts/clear", &clear)
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = admin
        .post_json("/v1/admin/alerts/clear", &json!({ "principal": CANARY }))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = admin
        .post_json("/v1/admin/alerts/clear", &clear)
        .await
        .unwrap();
    assert_eq!(
        reply.json(),
        json!({ "principal": "payments", "was_blocked": true })
    );
    let reply = payments.post_json("/v1/detokenize", &reveal).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    drop((payments, admin));
    service.stop().await.unwrap();

    let all = entries(&audit_dir);
    let alert = of_kind(&all, "alert");
    assert_eq!(alert.len(), 1, "{alert:?}");
    assert_eq!(alert[0]["principal"], "payments");
    assert_eq!(alert[0]["count"], 4);
    assert!(
        alert[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("detokenize_burst; detokenization blocked")
    );
    let blocked: Vec<_> = of_kind(&all, "access_denied")
        .into_iter()
        .filter(|e| e["principal"] == "payments")
        .collect();
    assert_eq!(
        blocked.len(),
        3,
        "two blocked reveals and one clear: {blocked:?}"
    );
    assert!(
        blocked[0]["detail"]
            .as_str()
            .unwrap()
            .contains("blocked by an alert")
    );
    let cleared: Vec<_> = of_kind(&all, "alert_cleared")
        .into_iter()
        .filter(|e| e["outcome"] == "success")
        .collect();
    assert_eq!(
        cleared.len(),
        1,
        "the refused attempts are recorded as errors"
    );
    assert_eq!(cleared[0]["principal"], "admin");
    assert_eq!(cleared[0]["detail"], "principal payments");
    assert!(common::files_containing(&audit_dir, CANARY.as_bytes()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detokenization_outside_configured_hours_raises_an_alert() {
    // A two-hour window starting an hour from now: now is outside it.
    let now = time::OffsetDateTime::now_utc();
    let start = (u32::from(now.hour()) + 1) % 24;
    let hours = format!("{start:02}:00-{:02}:00", (start + 2) % 24);
    let harness = Harness::with(|c| {
        c.principals
            .get_mut("payments")
            .unwrap()
            .detokenize_hours_utc = Some(cardvault::config::HoursUtc::parse(&hours).unwrap());
    });
    let audit_dir = harness.config.audit.dir.clone();
    let service = harness.start().await;
    let mut payments = harness.connect("payments", service.api_addr).await;
    let token = common::tokenize(&mut payments, CANARY).await;
    // Blocking is off by default: the reveal is served, and flagged.
    let reply = payments
        .post_json("/v1/detokenize", &json!({ "token": token }))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    drop(payments);
    service.stop().await.unwrap();
    let all = entries(&audit_dir);
    let alert = of_kind(&all, "alert");
    assert_eq!(alert.len(), 1, "{alert:?}");
    assert_eq!(alert[0]["detail"], "detokenize_outside_hours");
    assert_eq!(alert[0]["principal"], "payments");
}

/// Starts the harness's vault, tokenizes the canary once, stops it (the
/// mirror thread then ends, closing its stream).
async fn tokenize_once_and_stop(harness: &Harness) {
    let service = harness.start().await;
    let mut cart = harness.connect("cart", service.api_addr).await;
    let reply = cart
        .post_json("/v1/tokenize", &json!({ "pan": CANARY }))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    drop(cart);
    service.stop().await.unwrap();
}

/// Splits octet-counted syslog frames (RFC 6587): "LEN MSG…".
fn octet_counted(text: &str) -> Vec<&str> {
    let mut rest = text;
    let mut frames = Vec::new();
    while let Some((len, tail)) = rest.split_once(' ') {
        let len: usize = len.parse().unwrap();
        frames.push(&tail[..len]);
        rest = &tail[len..];
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_mirrored_to_syslog_over_tcp() {
    use std::io::Read;
    let collector = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let collector_addr = collector.local_addr().unwrap();
    let received = std::thread::spawn(move || {
        let (mut stream, _) = collector.accept().unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        bytes
    });
    let harness = Harness::with(|c| c.audit.syslog_tcp = Some(collector_addr.to_string()));
    tokenize_once_and_stop(&harness).await;
    // The mirror thread ends when the trail closes, closing the stream.
    let bytes = received.join().unwrap();
    let text = String::from_utf8(bytes).unwrap();
    // Octet-counted frames: "LEN <85>1 TS HOST cardvault PID audit - {entry}".
    let frames = octet_counted(&text);
    assert!(frames.len() >= 4, "{text}");
    // Entries (msgid audit) and signed checkpoints (msgid checkpoint).
    let (mut entries_seen, mut checkpoints) = (Vec::new(), Vec::new());
    for frame in &frames {
        assert!(frame.starts_with("<85>1 "), "{frame}");
        assert!(frame.contains(" cardvault "), "{frame}");
        let body: Value = serde_json::from_str(&frame[frame.find('{').unwrap()..]).unwrap();
        if frame.contains(" checkpoint - ") {
            checkpoints.push(body["signed"].as_str().unwrap().to_owned());
        } else {
            assert!(frame.contains(" audit - "), "{frame}");
            assert!(body["mac"].is_string());
            entries_seen.push(frame);
        }
    }
    assert!(
        entries_seen
            .iter()
            .any(|f| f.contains("\"event\":\"tokenize\""))
    );
    assert!(
        entries_seen
            .last()
            .unwrap()
            .contains("\"event\":\"audit_stop\"")
    );
    // The collector holds a checkpoint of the trail's end, signed.
    assert!(
        checkpoints
            .last()
            .unwrap()
            .contains("\"event\":\"audit_stop\""),
        "{checkpoints:?}"
    );
    assert!(!text.contains(CANARY));
}

/// The mirror over TLS (RFC 5425): the collector's certificate is
/// verified, the vault presents its client certificate, and every entry
/// and signed checkpoint arrives framed as over TCP — none in the clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_and_checkpoints_are_mirrored_to_syslog_over_tls() {
    use rustls::pki_types::pem::PemObject as _;
    use std::io::Read;
    let collector = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = collector.local_addr().unwrap().port();
    let harness = Harness::with(|c| {
        let pki = c.api.client_ca.parent().unwrap().to_path_buf();
        c.audit.syslog_tls = Some(format!("localhost:{port}"));
        c.audit.syslog_ca_file = Some(pki.join("ca.pem"));
        c.audit.syslog_client_cert = Some(pki.join("cart.pem"));
        c.audit.syslog_client_key = Some(pki.join("cart-key.pem"));
    });
    let pki = harness.pki();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(pki.join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()
            .unwrap();
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(pki.join("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(pki.join("server-key.pem")).unwrap();
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap(),
    );
    let received = std::thread::spawn(move || {
        let (tcp, _) = collector.accept().unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let conn = rustls::ServerConnection::new(config).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut bytes = Vec::new();
        // A clean end: the vault's close_notify, not a reset.
        tls.read_to_end(&mut bytes).unwrap();
        let client = tls.conn.peer_certificates().map(|c| c.len()).unwrap_or(0);
        (bytes, client)
    });
    tokenize_once_and_stop(&harness).await;
    let (bytes, client_certs) = received.join().unwrap();
    assert!(
        client_certs >= 1,
        "the vault presented no client certificate"
    );
    let text = String::from_utf8(bytes).unwrap();
    let frames = octet_counted(&text);
    assert!(
        frames.iter().any(|f| f.contains("\"event\":\"tokenize\"")),
        "{text}"
    );
    assert!(
        frames
            .iter()
            .any(|f| f.contains(" checkpoint - ") && f.contains("audit_stop")),
        "{text}"
    );
    assert!(!text.contains(CANARY));
}

/// A reveal reason goes into the audit event; one that could hold a card
/// number is refused (and never recorded); a principal with
/// `require_reason` gets 400 `reason_required` without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reveal_reasons_are_recorded_checked_and_required() {
    let harness = Harness::with(|c| {
        c.principals.get_mut("payments").unwrap().require_reason = true;
    });
    let audit_dir = harness.config.audit.dir.clone();
    let service = harness.start().await;
    let mut payments = harness.connect("payments", service.api_addr).await;
    let token = common::tokenize(&mut payments, CANARY).await;
    let reply = payments
        .post_json("/v1/detokenize", &json!({ "token": token }))
        .await
        .unwrap();
    common::assert_api_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "reason_required",
        "no reason",
    );
    let reply = payments
        .post_json(
            "/v1/detokenize",
            &json!({ "token": token, "reason": format!("customer {CANARY}") }),
        )
        .await
        .unwrap();
    common::assert_api_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "PAN in reason",
    );
    let reply = payments
        .post_json(
            "/v1/detokenize",
            &json!({ "token": token, "reason": "chargeback review #42" }),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let reply = payments
        .post_json(
            "/v1/detokenize/batch",
            &json!({ "tokens": [token], "reason": "settlement batch" }),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    drop(payments);
    service.stop().await.unwrap();
    let all = entries(&audit_dir);
    let reveals = of_kind(&all, "detokenize");
    assert!(
        reveals
            .iter()
            .any(|e| e["reason"] == "chargeback review #42"),
        "{reveals:?}"
    );
    let batch = of_kind(&all, "detokenize_batch");
    assert_eq!(batch[0]["reason"], "settlement batch");
    assert!(common::files_containing(&audit_dir, CANARY.as_bytes()).is_empty());
}

/// Events queued with `record` reach the segment on their own, with no
/// close or durable event behind them to wake the writer (it gathers them
/// for a moment, then writes), and a durable event queued afterwards keeps
/// its place in the chain after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_events_are_written_without_a_wake_and_keep_their_order() {
    let tmp = tempfile::tempdir().unwrap();
    let kek = tmp.path().join("kek.key");
    KeyFileProvider::create(&kek).unwrap();
    let provider = KeyFileProvider::open(&kek).unwrap();
    let dir = tmp.path().join("audit");
    let audit = AuditLog::open(AuditSettings::new(dir.clone()), &provider).unwrap();
    for i in 0..50 {
        let mut event = Event::new(EventKind::MetadataRead).with_tenant("default");
        event.principal = Some(format!("p{i}"));
        audit.record(event);
    }
    // Complete lines only: the writer may be mid-write while this reads.
    let written = || -> usize {
        cardvault::audit::segments(&dir)
            .unwrap()
            .iter()
            .map(|(_, path)| {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let complete = text.rfind('\n').map_or("", |end| &text[..end]);
                complete
                    .lines()
                    .filter(|l| l.contains("\"metadata_read\""))
                    .count()
            })
            .sum()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while written() < 50 {
        assert!(
            std::time::Instant::now() < deadline,
            "queued events were not written: {} of 50",
            written()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // audit_start is seq 1, evidence_key_created 2 (a new trail), the 50
    // queued events 3..=52.
    let seq = audit
        .record_durable(Event::new(EventKind::Tokenize))
        .await
        .unwrap();
    assert_eq!(seq, 53);
    audit.close().await.unwrap();
    let (code, text) = verify(&dir, &kek);
    assert_eq!(code, 0, "{text}");
}

/// Every 403 is an `access_denied` event naming what was refused — on
/// every operation of docs/openapi.json, called by a principal without the
/// operation's role (issue 36: a refused `GET /v1/admin/alerts` was
/// recorded as `alerts_listed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_403_is_an_access_denied_event_naming_what_was_refused() {
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let harness = Harness::with(|c| {
        c.compat.lookup_via_tokenize_or_read = false;
        c.principals.insert(
            "keeper".into(),
            cardvault::config::PrincipalConfig {
                tenant: TenantId::parse("default").unwrap(),
                roles: vec![cardvault::config::Role::Custodian],
                detokenize_hours_utc: None,
                scope: Default::default(),
                require_reason: false,
            },
        );
    });
    cardvault::pki::issue(&harness.pki(), "keeper").unwrap();
    let service = harness.start().await;
    let mut refused = 0;
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            // Someone without the role: a custodian (which may only
            // unseal) everywhere, the cart for unseal.
            let principal = match op["x-cardvault-role"].as_str() {
                Some("custodian") => "cart",
                _ => "keeper",
            };
            let url = path
                .replace("{token}", "4929128888881235")
                .replace("{tenant}", "default")
                .replace("{id}", "x")
                .replace("{route}", "x");
            let mut conn = harness.connect(principal, service.api_addr).await;
            let reply = conn
                .send(
                    method.to_uppercase().parse().unwrap(),
                    &url,
                    Some(("application/json", b"{}".to_vec())),
                )
                .await
                .unwrap();
            assert_eq!(
                reply.status,
                StatusCode::FORBIDDEN,
                "{method} {path} as {principal}"
            );
            refused += 1;
        }
    }
    drop(service.stop().await);
    let all = entries(&harness.config.audit.dir);
    let forbidden: Vec<&Value> = all.iter().filter(|e| e["code"] == "forbidden").collect();
    assert_eq!(forbidden.len(), refused, "{forbidden:#?}");
    for e in forbidden {
        assert_eq!(e["event"], "access_denied", "{e}");
        assert_eq!(e["outcome"], "denied", "{e}");
        assert!(
            e["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "names nothing: {e}"
        );
    }
}
