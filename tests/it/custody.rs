//! Key custody against real components: a KEK split among custodians
//! (sealed start, unseal over mTLS with the `cardvault unseal` binary,
//! refusals, seal, restart) and a KEK inside a real PKCS#11 token
//! (SoftHSM2, read back with OpenSC's `pkcs11-tool`).

use std::path::{Path, PathBuf};
use std::process::Command;

use hyper::StatusCode;
use serde_json::json;

use crate::common::{self, DevServer, assert_api_error, cardvault, entries, of_kind};

const PAN: &str = "4111111111111111";

/// Runs `command`; its output, after asserting it succeeded.
fn succeeds(command: &mut Command) -> std::process::Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}{}",
        command,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `cardvault seal --dev DIR --addr API` (as the dev admin), succeeding.
fn seal(server: &DevServer) {
    succeeds(
        cardvault()
            .args(["seal", "--dev"])
            .arg(&server.data_dir)
            .args(["--addr", &server.api]),
    );
}

/// `cardvault keys status --dev DIR`.
fn keys_status(dir: &Path) -> std::process::Output {
    cardvault()
        .args(["keys", "status", "--dev"])
        .arg(dir)
        .output()
        .unwrap()
}

fn share_path(dir: &Path, custodian: &str) -> PathBuf {
    dir.join("custodians").join(format!("{custodian}.share"))
}

/// `cardvault unseal --dev DIR --addr API --share FILE`: exit code, stdout.
fn unseal(server: &DevServer, share: &Path) -> (Option<i32>, String, String) {
    crate::common::outcome(
        cardvault()
            .arg("unseal")
            .arg("--dev")
            .arg(&server.data_dir)
            .args(["--addr", &server.api, "--share"])
            .arg(share),
    )
}

fn status(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("not JSON: {stdout}"))
}

/// Hands in share text `share` over `conn` and expects 400 `share_rejected`.
async fn refused_share(conn: &mut cardvault::client::Connection, share: &str, what: &str) {
    let reply = conn
        .post_json("/v1/admin/unseal", &json!({ "share": share }))
        .await
        .unwrap();
    assert_api_error(&reply, StatusCode::BAD_REQUEST, "share_rejected", what);
}

async fn reveal(
    payments: &mut cardvault::client::Connection,
    token: &str,
) -> cardvault::client::Reply {
    payments
        .post_json("/v1/detokenize", &json!({ "token": token }))
        .await
        .unwrap()
}

async fn readyz(server: &DevServer) -> (u16, serde_json::Value) {
    common::harness::ops_json(server.ops_addr(), "/readyz").await
}

/// The `data:` line of a share file: the secret part.
fn share_data(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_kek_starts_sealed_and_any_two_custodians_unseal_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let server = DevServer::start_full(&dir, &["--kek", "shamir"], &[]);
    assert!(
        server
            .printed
            .iter()
            .any(|l| l.starts_with("cardvault unseal --dev")),
        "no unseal commands printed: {:?}",
        server.printed
    );
    // Sealed: not ready, and every data route answers 503 `sealed`.
    let (code, body) = readyz(&server).await;
    assert_eq!(code, 503);
    assert_eq!(body["sealed"], true);
    assert_eq!(body["shares_received"], 0);
    let mut cart = server.connect("cart").await;
    let reply = cart
        .post_json("/v1/tokenize", &json!({ "pan": PAN }))
        .await
        .unwrap();
    assert_api_error(
        &reply,
        StatusCode::SERVICE_UNAVAILABLE,
        "sealed",
        "tokenize while sealed",
    );
    let reply = cart.get("/v1/tokens/4111110000001111").await.unwrap();
    assert_api_error(
        &reply,
        StatusCode::SERVICE_UNAVAILABLE,
        "sealed",
        "metadata while sealed",
    );
    // Only custodians hand in shares.
    let text = std::fs::read_to_string(share_path(&dir, "custodian-1")).unwrap();
    let reply = cart
        .post_json("/v1/admin/unseal", &json!({ "share": text }))
        .await
        .unwrap();
    assert_api_error(&reply, StatusCode::FORBIDDEN, "forbidden", "cart unsealing");

    // The third custodian first, then the same share again (refused).
    let (code, out, err) = unseal(&server, &share_path(&dir, "custodian-3"));
    assert_eq!(code, Some(0), "{out} {err}");
    assert_eq!(
        status(&out),
        json!({"sealed": true, "shares_received": 1, "threshold": 2})
    );
    let (code, out, _) = unseal(&server, &share_path(&dir, "custodian-3"));
    assert_eq!(code, Some(1));
    assert_eq!(status(&out)["error"]["code"], "share_rejected");

    // A mistyped share: the CLI catches it before sending (exit 64); sent
    // anyway over the API, the vault refuses it too.
    let good = share_data(&share_path(&dir, "custodian-2"));
    let flipped = format!(
        "{}{}",
        &good[..good.len() - 1],
        if good.ends_with('0') { '1' } else { '0' }
    );
    let typo = tmp.path().join("typo.share");
    let typo_text = std::fs::read_to_string(share_path(&dir, "custodian-2"))
        .unwrap()
        .replace(&good, &flipped);
    std::fs::write(&typo, &typo_text).unwrap();
    std::fs::set_permissions(&typo, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (code, _, err) = unseal(&server, &typo);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("checksum"), "{err}");
    let mut custodian = server.connect("custodian-2").await;
    refused_share(&mut custodian, &typo_text, "mistyped share").await;
    // A share of another split (a fresh `keys init --shares`).
    let foreign_dir = tmp.path().join("foreign");
    let out = cardvault()
        .args([
            "keys",
            "init",
            "--shares",
            "3",
            "--threshold",
            "2",
            "--out-dir",
        ])
        .arg(&foreign_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let foreign = std::fs::read_to_string(foreign_dir.join("custodian-1.share")).unwrap();
    refused_share(&mut custodian, &foreign, "foreign share").await;
    // A group-readable share file is refused by the CLI.
    let loose = tmp.path().join("loose.share");
    std::fs::copy(share_path(&dir, "custodian-1"), &loose).unwrap();
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let (code, _, err) = unseal(&server, &loose);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("chmod 600"), "{err}");

    // The first custodian completes the unseal.
    let (code, out, err) = unseal(&server, &share_path(&dir, "custodian-1"));
    assert_eq!(code, Some(0), "{out} {err}");
    assert_eq!(status(&out)["sealed"], false);
    let (code, body) = readyz(&server).await;
    assert_eq!((code, body["sealed"].clone()), (200, json!(false)));
    let token = common::tokenize(&mut cart, PAN).await;
    let mut payments = server.connect("payments").await;
    assert_eq!(reveal(&mut payments, &token).await.json()["pan"], PAN);

    // Unsealing an unsealed vault: 409.
    let (code, out, _) = unseal(&server, &share_path(&dir, "custodian-2"));
    assert_eq!(code, Some(1));
    assert_eq!(status(&out)["error"]["code"], "seal_state");

    // Seal (admin, global scope): every key dropped; 503 until unsealed
    // again, by another pair in another order.
    seal(&server);
    let reply = reveal(&mut payments, &token).await;
    assert_api_error(
        &reply,
        StatusCode::SERVICE_UNAVAILABLE,
        "sealed",
        "detokenize after seal",
    );
    for custodian in ["custodian-2", "custodian-1"] {
        let (code, out, err) = unseal(&server, &share_path(&dir, custodian));
        assert_eq!(code, Some(0), "{out} {err}");
    }
    assert_eq!(reveal(&mut payments, &token).await.json()["pan"], PAN);
    drop((cart, payments, custodian));

    // A restart seals again; the token survives it.
    assert!(server.stop().success());
    let server = DevServer::start_full(&dir, &["--kek", "shamir"], &[]);
    let (code, body) = readyz(&server).await;
    assert_eq!(
        (code, body["sealed"].clone(), body["threshold"].clone()),
        (503, json!(true), json!(2))
    );
    // The set is pinned now: a foreign share is refused as the first one.
    let mut custodian = server.connect("custodian-1").await;
    refused_share(&mut custodian, &foreign, "foreign first share").await;
    for custodian in ["custodian-1", "custodian-3"] {
        let (code, out, err) = unseal(&server, &share_path(&dir, custodian));
        assert_eq!(code, Some(0), "{out} {err}");
    }
    let mut payments = server.connect("payments").await;
    assert_eq!(reveal(&mut payments, &token).await.json()["pan"], PAN);
    drop((payments, custodian));
    assert!(server.stop().success());

    // The trail tells the ceremony: who handed in which share, refusals,
    // unseal, seal — and holds no share's secret part, nor does any file.
    let trail = entries(&dir.join("audit"));
    assert!(of_kind(&trail, "unseal_share_accepted").len() >= 6);
    let rejected = of_kind(&trail, "unseal_share_rejected");
    assert!(rejected.len() >= 4, "{rejected:?}");
    assert!(rejected.iter().any(|e| e["principal"] == "custodian-2"));
    assert_eq!(of_kind(&trail, "unsealed").len(), 3);
    assert_eq!(of_kind(&trail, "sealed").len(), 1);
    assert_eq!(of_kind(&trail, "sealed")[0]["principal"], "admin");
    for custodian in ["custodian-1", "custodian-2", "custodian-3"] {
        let secret = share_data(&share_path(&dir, custodian));
        let holders = common::files_containing(&dir, secret.as_bytes());
        assert_eq!(
            holders,
            vec![share_path(&dir, custodian)],
            "{custodian}'s share outside its file"
        );
    }
    // The KEK split cannot be opened by offline commands.
    let out = keys_status(&dir);
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `SOFTHSM2_CONF` for a dev directory made with `--kek pkcs11`.
fn softhsm_env(dir: &Path) -> (String, String) {
    (
        "SOFTHSM2_CONF".to_owned(),
        dir.join("softhsm/softhsm2.conf").display().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kek_in_a_pkcs11_token_never_leaves_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let server = DevServer::start_full(&dir, &["--kek", "pkcs11"], &[]);
    let mut cart = server.connect("cart").await;
    let token = common::tokenize(&mut cart, PAN).await;
    drop(cart);
    assert!(server.stop().success());
    // No key file anywhere in the directory; the config names the token.
    assert!(!dir.join("kek.key").exists());
    let config = std::fs::read_to_string(dir.join("cardvault.toml")).unwrap();
    assert!(config.contains("provider = \"pkcs11\"") && !config.contains("key_file"));
    // Restarted, it opens the record through the token.
    let server = DevServer::start_full(&dir, &[], &[]);
    let mut payments = server.connect("payments").await;
    let reply = payments
        .post_json("/v1/detokenize", &json!({ "token": token }))
        .await
        .unwrap();
    assert_eq!(reply.json()["pan"], PAN);
    drop(payments);
    assert!(server.stop().success());

    // The key's attributes, read back through PKCS#11 by another program.
    let (env, conf) = softhsm_env(&dir);
    let pin = std::fs::read_to_string(dir.join("hsm.pin")).unwrap();
    let pkcs11_tool = |args: &[&str]| {
        Command::new("pkcs11-tool")
            .env(&env, &conf)
            .args([
                "--module",
                "/usr/lib/softhsm/libsofthsm2.so",
                "--token-label",
                "cardvault-dev",
                "--login",
                "--pin",
                pin.trim(),
            ])
            .args(args)
            .output()
            .expect("pkcs11-tool (Debian package opensc)")
    };
    let out = pkcs11_tool(&["--list-objects", "--type", "secrkey"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("cardvault-kek-1"), "{listing}");
    assert!(listing.contains("AES length 32"), "{listing}");
    assert!(
        listing.contains("sensitive") && listing.contains("never extractable"),
        "{listing}"
    );
    // Reading its value is refused by the token.
    let out = pkcs11_tool(&[
        "--read-object",
        "--type",
        "secrkey",
        "--label",
        "cardvault-kek-1",
    ]);
    assert!(!out.status.success(), "the KEK's value was readable");

    // Misconfigurations exit 64 naming the field, and never print the PIN.
    let wrong_pin = dir.join("wrong.pin");
    std::fs::write(&wrong_pin, "not-the-pin-7731\n").unwrap();
    std::fs::set_permissions(
        &wrong_pin,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    for (field, from, to) in [
        (
            "kek.pin_file",
            "pin_file = \"hsm.pin\"",
            "pin_file = \"wrong.pin\"",
        ),
        (
            "kek.module",
            "module = \"/usr/lib/softhsm/libsofthsm2.so\"",
            "module = \"/usr/lib/softhsm/no-such-module.so\"",
        ),
        (
            "kek.key_label",
            "key_label = \"cardvault-kek-1\"",
            "key_label = \"no-such-key\"",
        ),
        (
            "kek.token_label",
            "token_label = \"cardvault-dev\"",
            "token_label = \"no-such-token\"",
        ),
    ] {
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, config.replace(from, to)).unwrap();
        let out = cardvault()
            .env(&env, &conf)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--ops-listen",
                "127.0.0.1:0",
                "--config",
            ])
            .arg(&bad)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{field}: {stderr}");
        assert!(stderr.contains(field), "{field}: {stderr}");
        for secret in [pin.trim(), "not-the-pin-7731"] {
            assert!(!stderr.contains(secret), "{field}: PIN in {stderr}");
            assert!(!String::from_utf8_lossy(&out.stdout).contains(secret));
        }
    }
    // `keys init --pkcs11` refuses to overwrite the label.
    let out = cardvault()
        .env(&env, &conf)
        .args(["keys", "init", "--pkcs11", "--config"])
        .arg(dir.join("cardvault.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("kek.key_label") && stderr.contains("refusing"),
        "{stderr}"
    );
    // Offline commands open the vault through the token.
    let out = keys_status(&dir);
    assert!(String::from_utf8_lossy(&out.stdout).contains("tenant default"));
    succeeds(
        cardvault()
            .args(["audit", "verify", "--dev"])
            .arg(&dir)
            .arg(dir.join("audit")),
    );
}

/// `cardvault load verify` of `acks` against `server`: (verified, lost, mismatched).
fn verify_acks(server: &DevServer, acks: &Path) -> (u64, u64, u64) {
    let report = server.verify_acks(acks);
    (
        report["verified"].as_u64().unwrap(),
        report["lost"].as_u64().unwrap(),
        report["mismatched"].as_u64().unwrap(),
    )
}

fn rotate_to_file(server: &DevServer, key: &Path) -> std::process::Output {
    cardvault()
        .args(["keys", "rotate-kek", "--dev"])
        .arg(&server.data_dir)
        .args(["--addr", &server.api, "--key-file"])
        .arg(key)
        .output()
        .unwrap()
}

fn use_key_file(dir: &Path, name: &str) {
    let config = dir.join("cardvault.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("key_file = "))
        .unwrap()
        .to_owned();
    std::fs::write(
        &config,
        text.replace(&line, &format!("key_file = \"{name}\"")),
    )
    .unwrap();
}

#[test]
fn a_kek_rotation_under_load_loses_nothing_and_survives_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let acks = tmp.path().join("acks.jsonl");
    let server = DevServer::start(&dir);
    for name in ["kek-2.key", "kek-3.key"] {
        let out = cardvault()
            .args(["keys", "init", "--out"])
            .arg(dir.join(name))
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    // Rotate while tokenize load runs (several tenants' worth of keys are
    // not needed: every key record goes through the same commit).
    let load = server.spawn_load(&[
        "--op",
        "tokenize",
        "--concurrency",
        "8",
        "--duration",
        "3s",
        "--warmup",
        "0s",
        "--ack-log",
        acks.to_str().unwrap(),
    ]);
    std::thread::sleep(std::time::Duration::from_millis(800));
    let out = rotate_to_file(&server, &dir.join("kek-2.key"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(answer["keys"].as_u64().unwrap() >= 2, "{answer}");
    assert!(
        answer["from"].as_str().unwrap().ends_with("kek.key"),
        "{answer}"
    );
    assert!(
        answer["to"].as_str().unwrap().ends_with("kek-2.key"),
        "{answer}"
    );
    let load = load.wait_with_output().unwrap();
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    // kill -9 before the config names the new KEK: the old one still opens
    // everything (the rotation rolls back), nothing acknowledged is lost.
    server.kill_9();
    let server = DevServer::start(&dir);
    let (verified, lost, mismatched) = verify_acks(&server, &acks);
    assert!(verified > 100, "only {verified} acknowledged tokens");
    assert_eq!((lost, mismatched), (0, 0));
    // Rotate again and switch the config: the new KEK opens everything and
    // the old wrapping is dropped.
    let out = rotate_to_file(&server, &dir.join("kek-2.key"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    server.kill_9();
    use_key_file(&dir, "kek-2.key");
    let server = DevServer::start(&dir);
    assert_eq!(verify_acks(&server, &acks), (verified, 0, 0));
    // A kill -9 racing the rewrap itself: whichever side of the commit it
    // lands on, the KEK in the config (the one rotated from) opens it all.
    let racing = std::process::Command::new(env!("CARGO_BIN_EXE_cardvault"))
        .args(["keys", "rotate-kek", "--dev"])
        .arg(&dir)
        .args(["--addr", &server.api, "--key-file"])
        .arg(dir.join("kek-3.key"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(40));
    server.kill_9();
    let _ = racing.wait_with_output();
    let server = DevServer::start(&dir);
    assert_eq!(verify_acks(&server, &acks), (verified, 0, 0));
    assert!(server.stop().success());
    // The old KEK no longer opens the vault; the trail says who rotated
    // to what, and how each rotation ended.
    use_key_file(&dir, "kek.key");
    assert!(!keys_status(&dir).status.success());
    let trail = entries(&dir.join("audit"));
    let rotated = of_kind(&trail, "kek_rotated");
    let details: Vec<&str> = rotated
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .collect();
    assert!(
        details.iter().any(|d| d.starts_with("rolled back")),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.starts_with("finished")),
        "{details:?}"
    );
    let requests: Vec<&&serde_json::Value> = rotated
        .iter()
        .filter(|e| e["principal"] == "admin")
        .collect();
    assert!(requests.len() >= 2, "{details:?}");
    assert!(
        requests[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("kek.key to key file") && d.contains("kek-2.key")),
        "{details:?}"
    );
    succeeds(
        cardvault()
            .args(["audit", "verify", "--key-file"])
            .arg(dir.join("kek-2.key"))
            .arg(dir.join("audit")),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_kek_rotates_to_a_fresh_split() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let server = DevServer::start_full(&dir, &["--kek", "shamir"], &[]);
    for custodian in ["custodian-1", "custodian-2"] {
        let (code, out, err) = unseal(&server, &share_path(&dir, custodian));
        assert_eq!(code, Some(0), "{out} {err}");
    }
    let mut cart = server.connect("cart").await;
    let token = common::tokenize(&mut cart, PAN).await;
    drop(cart);
    let fresh = tmp.path().join("fresh");
    let out = cardvault()
        .args(["keys", "rotate-kek", "--dev"])
        .arg(&dir)
        .args([
            "--addr",
            &server.api,
            "--shares",
            "3",
            "--threshold",
            "2",
            "--out-dir",
        ])
        .arg(&fresh)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        answer["share_files"].as_array().unwrap().len(),
        3,
        "{answer}"
    );
    // Sealed again, the new set's custodians open it; the old set is then
    // refused, and the tokens made before the rotation still reveal.
    seal(&server);
    for custodian in ["custodian-3", "custodian-1"] {
        let (code, out, err) = unseal(&server, &fresh.join(format!("{custodian}.share")));
        assert_eq!(code, Some(0), "{out} {err}");
    }
    let mut payments = server.connect("payments").await;
    assert_eq!(reveal(&mut payments, &token).await.json()["pan"], PAN);
    drop(payments);
    seal(&server);
    let (code, out, _) = unseal(&server, &share_path(&dir, "custodian-1"));
    assert_eq!(code, Some(1));
    assert_eq!(status(&out)["error"]["code"], "share_rejected");
    assert!(server.stop().success());
    let set: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("db/kek-shares.json")).unwrap())
            .unwrap();
    assert!(set.get("next").is_none(), "{set}");
}

/// A KEK rotation's paths come from a request: relative paths, and an
/// `out_dir` that already exists, are refused before anything is opened or
/// written (found by schemathesis as admin: share files landed in the
/// vault's working directory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kek_rotation_refuses_relative_and_existing_paths() {
    let harness = crate::common::harness::Harness::new();
    let service = harness.start().await;
    let mut admin = harness.connect("admin", service.api_addr).await;
    let existing = harness.dir.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    for (body, message) in [
        (
            serde_json::json!({"provider": "file", "key_file": "kek-2.key"}),
            "key_file must be an absolute path",
        ),
        (
            serde_json::json!({"provider": "shamir", "shares": 2, "threshold": 2, "out_dir": "shares"}),
            "out_dir must be an absolute path",
        ),
        (
            serde_json::json!({"provider": "shamir", "shares": 2, "threshold": 2, "out_dir": existing}),
            "out_dir must not exist yet",
        ),
    ] {
        let reply = admin
            .post_json("/v1/admin/kek/rotate", &body)
            .await
            .unwrap();
        crate::common::assert_api_error(
            &reply,
            hyper::StatusCode::BAD_REQUEST,
            "invalid_request",
            message,
        );
        drop(reply);
    }
    assert_eq!(std::fs::read_dir(&existing).unwrap().count(), 0);
    assert!(!std::path::Path::new("shares").exists());
    drop(admin);
    service.stop().await.unwrap();
    let trail: Vec<String> = crate::common::entries(&harness.config.audit.dir)
        .iter()
        .filter(|e| e["event"] == "kek_rotated")
        .map(|e| e["detail"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        trail[0].contains("key_file must be an absolute path"),
        "{trail:?}"
    );
    assert!(trail[2].contains("out_dir must not exist yet"), "{trail:?}");
}

/// Dual control (`[keys.dual_control]`, on by default): one global admin's
/// KEK rotation or seal waits as a pending approval — nothing is rewrapped
/// or dropped — until a *different* global admin approves it; the asker
/// cannot approve their own, a non-admin cannot approve at all, and the
/// trail names both admins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kek_rotation_and_a_seal_wait_for_a_second_admin() {
    let harness = crate::common::harness::Harness::with(|c| {
        c.keys.dual_control = cardvault::config::DualControl::default();
        let pki = c.api.client_ca.parent().unwrap().to_path_buf();
        cardvault::pki::issue(&pki, "admin2").unwrap();
        let admin = c.principals["admin"].clone();
        c.principals.insert("admin2".into(), admin);
    });
    let service = harness.start().await;
    let mut admin = harness.connect("admin", service.api_addr).await;
    let next = harness.dir.path().join("kek-2.key");
    cardvault::crypto::KeyFileProvider::create(&next).unwrap();
    let reply = admin
        .post_json(
            "/v1/admin/kek/rotate",
            &json!({"provider": "file", "key_file": next}),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.json());
    let pending = reply.json();
    assert_eq!(pending["action"], "rotate_kek");
    assert_eq!(pending["to"]["provider"], "file");
    assert_eq!(pending["requested_by"], "admin");
    let id = pending["id"].as_str().unwrap().to_owned();
    // Nothing was rewrapped yet.
    let audit_key = std::fs::read_to_string(harness.config.audit.dir.join("audit.key")).unwrap();
    assert!(!audit_key.contains("wrapped_next"), "{audit_key}");
    // The asker cannot approve; neither can a non-admin.
    let path = format!("/v1/admin/approvals/{id}");
    let reply = admin.post_json(&path, &json!({})).await.unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let mut cart = harness.connect("cart", service.api_addr).await;
    let reply = cart.post_json(&path, &json!({})).await.unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    // A second global admin carries it out.
    let mut admin2 = harness.connect("admin2", service.api_addr).await;
    let reply = admin2.post_json(&path, &json!({})).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert!(reply.json()["keys"].is_u64(), "{:?}", reply.json());
    let audit_key = std::fs::read_to_string(harness.config.audit.dir.join("audit.key")).unwrap();
    assert!(audit_key.contains("wrapped_next"), "{audit_key}");
    let evidence_key =
        std::fs::read_to_string(harness.config.audit.dir.join("evidence.key")).unwrap();
    assert!(evidence_key.contains("wrapped_next"), "{evidence_key}");
    // Used up: a second approval of the same id is refused.
    let reply = admin2.post_json(&path, &json!({})).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    // Sealing waits the same way (this vault's KEK is a file, so the
    // approved seal answers that it cannot be sealed: it was attempted).
    let reply = admin.post_json("/v1/admin/seal", &json!({})).await.unwrap();
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.json());
    assert_eq!(reply.json()["action"], "seal_vault");
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    let reply = admin2
        .post_json(&format!("/v1/admin/approvals/{id}"), &json!({}))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::CONFLICT, "{:?}", reply.json());
    drop((admin, admin2, cart));
    service.stop().await.unwrap();

    let trail = entries(&harness.config.audit.dir);
    let asked = of_kind(&trail, "approval_requested");
    assert!(
        asked.iter().any(|e| e["detail"]
            .as_str()
            .unwrap()
            .starts_with("rotate_kek, approval")),
        "{asked:?}"
    );
    let rotated = of_kind(&trail, "kek_rotated");
    let done = rotated
        .iter()
        .find(|e| e["outcome"] == "success")
        .unwrap_or_else(|| panic!("{rotated:?}"));
    assert_eq!(done["principal"], "admin2");
    assert!(
        done["detail"]
            .as_str()
            .unwrap()
            .contains("requested by admin, approved by admin2"),
        "{done}"
    );
    let sealed = of_kind(&trail, "sealed");
    assert!(
        sealed.iter().any(|e| e["principal"] == "admin2"
            && e["detail"]
                .as_str()
                .unwrap_or("")
                .contains("requested by admin, approved by admin2")),
        "{sealed:?}"
    );
}
