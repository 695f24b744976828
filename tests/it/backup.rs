//! `cardvault backup` and `cardvault restore` on a real dev vault (RocksDB,
//! its trail, its KEK): a backup the running vault takes of itself under
//! load, and one of the stopped vault, each restored into a new directory,
//! serve every token acknowledged before the backup began and their trails
//! verify; without `--target` a running vault is refused; a damaged or
//! altered backup and a non-empty target are refused.

use crate::common::{self, DevServer, copy_dir, run};

#[test]
fn a_backup_restores_elsewhere_with_every_token_and_a_whole_trail() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = tmp.path().join("dev");
    let acks = tmp.path().join("acks.log");
    let server = DevServer::start(&dev);
    let load = server.spawn_load(&[
        "--op",
        "tokenize",
        "--duration",
        "4s",
        "--concurrency",
        "4",
        "--ack-log",
        acks.to_str().unwrap(),
    ]);
    let d = dev.to_str().unwrap();
    // Without --target a running vault is refused: it holds its directories.
    let running_out = tmp.path().join("while-running");
    let (code, _, err) = run(&["backup", "--dev", d, "--out", running_out.to_str().unwrap()]);
    assert_eq!(code, Some(75), "{err}");
    assert!(!running_out.exists());
    // Under load, the running vault backs itself up: every token
    // acknowledged before the backup began must be in it.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let logged = std::fs::read_to_string(&acks).unwrap();
    let before = &logged[..logged.rfind('\n').map_or(0, |i| i + 1)];
    let acks_before = tmp.path().join("acks-before.log");
    std::fs::write(&acks_before, before).unwrap();
    let acknowledged_before = before.lines().count() as u64;
    assert!(acknowledged_before > 100, "{acknowledged_before}");
    let live = tmp.path().join("live-backup");
    let (code, out, err) = run(&[
        "backup",
        "--dev",
        d,
        "--out",
        live.to_str().unwrap(),
        "--target",
        &server.api,
    ]);
    assert_eq!(code, Some(0), "{out} {err}");
    let out = load.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acknowledged = std::fs::read_to_string(&acks).unwrap().lines().count() as u64;
    assert!(
        acknowledged > acknowledged_before,
        "the load went on during the backup"
    );
    assert!(server.stop().success());

    let backup = tmp.path().join("backup");
    let b = backup.to_str().unwrap();
    let (code, out, err) = run(&["backup", "--dev", d, "--out", b]);
    assert_eq!(code, Some(0), "{out} {err}");
    assert!(out.contains("dev backup"), "{out}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backup.join("manifest.json")).unwrap()).unwrap();
    let files = manifest["files"].as_array().unwrap();
    assert!(files.iter().any(|f| f["path"] == "audit/audit.key"));
    assert!(files.iter().any(|f| f["path"] == "dev/kek.key"));
    assert!(
        files
            .iter()
            .any(|f| f["path"].as_str().unwrap().starts_with("db/"))
    );
    // Again into the same place: refused.
    let (code, _, _) = run(&["backup", "--dev", d, "--out", b]);
    assert_ne!(code, Some(0));

    // Damaged or altered copies are refused before anything is written.
    for (what, damage) in [
        ("a changed file", "change"),
        ("a file added", "add"),
        ("a file removed", "remove"),
    ] {
        let bad = tmp.path().join(format!("bad-{damage}"));
        copy_dir(&backup, &bad);
        let victim = bad.join(
            files
                .iter()
                .find(|f| f["path"].as_str().unwrap().ends_with(".sst"))
                .map_or("audit/audit.key", |f| f["path"].as_str().unwrap()),
        );
        match damage {
            "change" => {
                let mut bytes = std::fs::read(&victim).unwrap();
                let last = bytes.len() - 1;
                bytes[last] ^= 1;
                std::fs::write(&victim, bytes).unwrap();
            }
            "add" => std::fs::write(bad.join("db/extra"), b"x").unwrap(),
            _ => std::fs::remove_file(&victim).unwrap(),
        }
        let target = tmp.path().join(format!("never-{damage}"));
        let (code, _, err) = run(&[
            "restore",
            bad.to_str().unwrap(),
            "--dev",
            target.to_str().unwrap(),
        ]);
        assert_eq!(code, Some(2), "{what}: {err}");
        assert!(err.contains("manifest"), "{what}: {err}");
        assert!(!target.exists(), "{what}: something was written");
    }
    // A production restore of a dev backup, and a non-empty target: refused.
    let (code, _, err) = run(&[
        "restore",
        b,
        "--config",
        dev.join("cardvault.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(64), "{err}");
    let (code, _, err) = run(&["restore", b, "--dev", d]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("not empty"), "{err}");

    // Restored elsewhere: each opens with its KEK and its trail verifies,
    // and serves every token acknowledged before its backup.
    for (from, acks, expected) in [
        (&live, &acks_before, acknowledged_before),
        (&backup, &acks, acknowledged),
    ] {
        let restored = tmp.path().join(format!(
            "restored-{}",
            from.file_name().unwrap().to_string_lossy()
        ));
        let r = restored.to_str().unwrap();
        let (code, out, err) = run(&["restore", from.to_str().unwrap(), "--dev", r]);
        assert_eq!(code, Some(0), "{out} {err}");
        assert!(out.contains("its audit trail verifies"), "{out}");
        let server = DevServer::start(&restored);
        let report = server.verify_acks(acks);
        assert_eq!(report["verified"].as_u64(), Some(expected), "{report}");
        assert_eq!(report["lost"], 0, "{report}");
        assert_eq!(report["mismatched"], 0, "{report}");
        assert!(server.stop().success());
        let (code, out, err) = run(&[
            "audit",
            "verify",
            restored.join("audit").to_str().unwrap(),
            "--dev",
            r,
        ]);
        assert_eq!(code, Some(0), "{out} {err}");
        let trail = common::entries(&restored.join("audit"));
        let kinds: Vec<&str> = trail.iter().filter_map(|e| e["event"].as_str()).collect();
        let taken = kinds.iter().position(|k| *k == "backup_taken").unwrap();
        let back = kinds.iter().position(|k| *k == "vault_restored").unwrap();
        assert!(taken < back, "{kinds:?}");
    }
}

/// `POST /v1/admin/backup`: a global admin only; a name that is not a
/// plain name (a path, too long, a dot first) or is taken is refused with
/// 400; the backup lands in `[storage] backup_dir` with its manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_route_takes_names_only_and_admins_only() {
    use crate::common::harness::Harness;
    use hyper::StatusCode;
    let harness = Harness::new();
    let service = harness.start().await;
    let mut cart = harness.connect("cart", service.api_addr).await;
    let reply = cart
        .post_json("/v1/admin/backup", &serde_json::json!({"name": "nightly"}))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let mut admin = harness.connect("admin", service.api_addr).await;
    for bad in [
        "../escape",
        ".hidden",
        "Upper",
        "",
        &"a".repeat(65),
        "a/b",
        "x4111111111111111y",
        "6011-1111-1111-1117",
    ] {
        let reply = admin
            .post_json("/v1/admin/backup", &serde_json::json!({ "name": bad }))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad:?}");
    }
    let reply = admin
        .post_json("/v1/admin/backup", &serde_json::json!({"name": "nightly"}))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    let path = std::path::PathBuf::from(reply.json()["path"].as_str().unwrap());
    assert_eq!(path, harness.config.storage.backup_dir().join("nightly"));
    assert!(path.join("manifest.json").is_file());
    let reply = admin
        .post_json("/v1/admin/backup", &serde_json::json!({"name": "nightly"}))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "a name taken");
    drop((cart, admin));
    service.stop().await.unwrap();
    let trail = common::entries(&harness.config.audit.dir);
    assert!(trail.iter().any(|e| e["event"] == "backup_taken"
        && e["principal"] == "admin"
        && e["outcome"] == "success"));
    assert!(trail.iter().any(|e| e["event"] == "access_denied"
        && e["principal"] == "cart"
        && e["outcome"] == "denied"));
}

/// A backup that would leave the disk below `[storage] min_free_bytes` is
/// refused (503) and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_that_would_fill_the_disk_is_refused() {
    use crate::common::harness::Harness;
    let harness = Harness::with(|c| c.storage.min_free_bytes = 1 << 62);
    let service = harness.start().await;
    let mut admin = harness.connect("admin", service.api_addr).await;
    let reply = admin
        .post_json("/v1/admin/backup", &serde_json::json!({"name": "nightly"}))
        .await
        .unwrap();
    assert_eq!(reply.status, hyper::StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not enough free space"),
        "{:?}",
        reply.json()
    );
    assert!(!harness.config.storage.backup_dir().join("nightly").exists());
    drop(admin);
    service.stop().await.unwrap();
}
