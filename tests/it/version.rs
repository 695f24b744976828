//! `cardvault version`: the build's facts, and `--check --db` answering
//! yes or no against a RustSec advisory database — yes on an empty
//! database (and on the shared snapshot when it is there), no on a crafted
//! advisory against a crate of `Cargo.lock`, exit 2 on a database that is
//! not one.

use std::path::Path;

fn version(args: &[&str]) -> (Option<i32>, String, String) {
    crate::common::outcome(crate::common::cardvault().arg("version").args(args))
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

/// `version` is one line; `version --deps --json` lists the packages and
/// where the list came from — on a plain `cargo build`, the build graph:
/// no dev-dependency and no other platform's crate; `version --sbom FILE`
/// writes a CycloneDX 1.5 SBOM of them.
#[test]
fn version_lists_the_dependencies_and_writes_an_sbom() {
    let (code, out, err) = version(&[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains("dependencies compiled in (build graph)"),
        "{out}"
    );
    let (code, out, err) = version(&["--deps", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let facts: serde_json::Value = serde_json::from_str(&out).unwrap();
    let packages = facts["packages"].as_array().unwrap();
    assert_eq!(
        packages.len() as u64,
        facts["dependencies"].as_u64().unwrap()
    );
    // Test builds use plain cargo; CI checks the cargo-auditable build.
    assert_eq!(facts["dependency_source"], "build graph");
    assert!(packages.iter().any(|p| p["name"] == "aes-gcm"));
    for absent in ["criterion", "proptest", "loom", "windows-sys", "tempfile"] {
        assert!(
            !packages.iter().any(|p| p["name"] == absent),
            "{absent} is not compiled in"
        );
    }

    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sbom.json");
    let (code, _, err) = version(&["--sbom", path.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let sbom: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    assert_eq!(sbom["specVersion"], "1.5");
    assert!(
        sbom["serialNumber"]
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:")
    );
    assert_eq!(sbom["metadata"]["component"]["name"], "cardvault");
    let components = sbom["components"].as_array().unwrap();
    assert_eq!(
        components.len(),
        packages.len() - 1,
        "all but the vault itself"
    );
    let aes = components.iter().find(|c| c["name"] == "aes-gcm").unwrap();
    assert_eq!(
        aes["purl"].as_str().unwrap(),
        format!("pkg:cargo/aes-gcm@{}", aes["version"].as_str().unwrap())
    );
    assert_eq!(aes["hashes"][0]["alg"], "SHA-256");
    assert_eq!(aes["hashes"][0]["content"].as_str().unwrap().len(), 64);
    let graph = sbom["dependencies"].as_array().unwrap();
    let root = graph
        .iter()
        .find(|d| d["ref"] == sbom["metadata"]["component"]["bom-ref"])
        .unwrap();
    assert!(
        root["dependsOn"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == &aes["bom-ref"])
    );
    // Every reference in the graph is a component or the vault.
    let refs: std::collections::HashSet<&str> = components
        .iter()
        .map(|c| c["bom-ref"].as_str().unwrap())
        .chain([root["ref"].as_str().unwrap()])
        .collect();
    for d in graph {
        for on in d["dependsOn"].as_array().unwrap() {
            assert!(refs.contains(on.as_str().unwrap()), "{on}");
        }
    }
    let (code, _, _) = version(&["--sbom", "-", "--check", "--db", "x"]);
    assert_eq!(code, Some(64));
}
