//! `cardvault backup` and `cardvault restore` on a real dev vault (RocksDB,
//! its trail, its KEK): a backup of a vault that took tokens under load,
//! restored into a new directory, serves every acknowledged token and its
//! trail verifies; a running vault is refused; a damaged or altered backup
//! and a non-empty target are refused.

use std::path::Path;

use crate::common::{self, DevServer};

/// `cardvault ARGS`: (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = common::cardvault().args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

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
        "2s",
        "--concurrency",
        "4",
        "--ack-log",
        acks.to_str().unwrap(),
    ]);
    let out = load.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acknowledged = std::fs::read_to_string(&acks).unwrap().lines().count() as u64;
    assert!(acknowledged > 100, "{acknowledged}");
    let d = dev.to_str().unwrap();

    // A running vault holds its directories: refused, nothing written.
    let running_out = tmp.path().join("while-running");
    let (code, _, err) = run(&["backup", "--dev", d, "--out", running_out.to_str().unwrap()]);
    assert_eq!(code, Some(75), "{err}");
    assert!(!running_out.exists());
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

    // Restored elsewhere: it opens with its KEK and its trail verifies...
    let restored = tmp.path().join("restored");
    let r = restored.to_str().unwrap();
    let (code, out, err) = run(&["restore", b, "--dev", r]);
    assert_eq!(code, Some(0), "{out} {err}");
    assert!(out.contains("its audit trail verifies"), "{out}");
    // ... and serves every token acknowledged before the backup.
    let server = DevServer::start(&restored);
    let report = server.verify_acks(&acks);
    assert_eq!(report["verified"].as_u64(), Some(acknowledged), "{report}");
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
