//! `cardvault version`: the build's facts, and `--check --db` answering
//! yes or no against a RustSec advisory database — yes on an empty
//! database (and on the shared snapshot when it is there), no on a crafted
//! advisory against a crate of `Cargo.lock`, exit 2 on a database that is
//! not one.

use std::path::Path;

fn version(args: &[&str]) -> (Option<i32>, String, String) {
    let out = crate::common::cardvault()
        .arg("version")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An advisory database whose only advisory flags `hex` below 99.0.0 (the
/// lockfile has 0.4.x), or none with `flag` false.
fn crafted(dir: &Path, flag: bool) {
    let crates = dir.join("crates");
    std::fs::create_dir_all(crates.join("hex")).unwrap();
    if flag {
        std::fs::write(
            crates.join("hex/RUSTSEC-2099-0001.md"),
            "```toml\n[advisory]\nid = \"RUSTSEC-2099-0001\"\npackage = \"hex\"\ndate = \"2099-01-01\"\nurl = \"https://example.invalid/crafted\"\n\n[versions]\npatched = [\">= 99.0.0\"]\n```\n\n# Crafted advisory for the test\n\nProves the \"no\" answer is reachable.\n",
        )
        .unwrap();
    }
}

#[test]
fn version_check_answers_yes_or_no() {
    let (code, out, err) = version(&["--json"]);
    assert_eq!(code, Some(0), "{err}");
    let facts: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(facts["version"], env!("CARGO_PKG_VERSION"));
    for field in ["commit", "build_date", "rustc"] {
        assert!(
            facts[field].as_str().is_some_and(|s| !s.is_empty()),
            "{facts}"
        );
    }
    assert!(facts["dependencies"].as_u64().unwrap() > 100, "{facts}");

    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    crafted(&clean, false);
    let (code, out, err) = version(&["--check", "--db", clean.to_str().unwrap()]);
    assert_eq!((code, out.trim()), (Some(0), "yes"), "{err}");

    let flagged = tmp.path().join("flagged");
    crafted(&flagged, true);
    let (code, out, _) = version(&["--check", "--db", flagged.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with("no\n") && out.contains("RUSTSEC-2099-0001 hex 0.4"),
        "{out}"
    );
    let (code, out, _) = version(&["--check", "--json", "--db", flagged.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["secure"], false);
    assert_eq!(report["advisories"][0]["package"], "hex");

    let (code, _, err) = version(&[
        "--check",
        "--db",
        tmp.path().join("nothing").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a RustSec advisory database"), "{err}");
    let (code, _, _) = version(&["--check"]);
    assert_eq!(code, Some(64));

    // The shared snapshot, when this checkout has it: the answer CI's
    // `cargo audit` gives too.
    let snapshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/advisory-db");
    if snapshot.join("crates").is_dir() {
        let (code, out, err) = version(&["--check", "--db", snapshot.to_str().unwrap()]);
        assert_eq!((code, out.trim()), (Some(0), "yes"), "{out}{err}");
    }
}

/// With `[supply_chain] advisory_db`, the vault checks itself at start:
/// the gauge, the alert and its audit event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vault_reports_known_vulnerabilities_of_its_build() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    crafted(&db, true);
    let harness = crate::common::harness::Harness::with(|c| {
        c.supply_chain.advisory_db = Some(db.clone());
    });
    let service = harness.start().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let page = loop {
        let (_, page) = crate::common::harness::ops_get(service.ops_addr, "/metrics").await;
        if page.contains("cardvault_known_vulnerabilities 1") {
            break page;
        }
        assert!(std::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        page.contains("cardvault_alerts_total{rule=\"known_vulnerabilities\"} 1"),
        "{page}"
    );
    service.stop().await.unwrap();
    let trail = crate::common::entries(&harness.config.audit.dir);
    assert!(crate::common::of_kind(&trail, "alert").iter().any(|e| {
        e["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("known_vulnerabilities: RUSTSEC-2099-0001 (hex"))
    }));
}
