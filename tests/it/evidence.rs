//! `cardvault evidence`: a bundle made from a real dev vault (RocksDB, key
//! file, audit trail, dev PKI) after it served a canary PAN carries every
//! requirement's facts, holds neither the PAN nor the KEK, verifies, and
//! any edit — a changed, added or missing file, another signer — fails
//! verification. A running vault is refused (exit 75), not read under it.

use std::path::Path;

use serde_json::Value;

use crate::common::{self, DevServer, run};

const CANARY_PAN: &str = "4929361425631237";

fn section<'a>(bundle: &'a Value, id: &str) -> &'a Value {
    &bundle["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["requirement"] == id)
        .unwrap_or_else(|| panic!("no section {id}"))["facts"]
}

/// Re-signs the bundle in `dir` as a forger would: a manifest of its
/// files, signed with a key of the forger's own.
fn resign(dir: &Path) {
    use ring::signature::{Ed25519KeyPair, KeyPair as _};
    use sha2::Digest as _;
    let pair = Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).unwrap();
    let public = hex::encode(pair.public_key().as_ref());
    let mut files = serde_json::Map::new();
    for (name, bytes) in bundle_bytes(dir) {
        if name != "signature.json" {
            files.insert(
                name,
                serde_json::json!({"bytes": bytes.len(), "sha256": hex::encode(sha2::Sha256::digest(&bytes))}),
            );
        }
    }
    let manifest = serde_json::to_string_pretty(&serde_json::json!({
        "format": 1,
        "algorithm": "Ed25519",
        "public_key": public,
        "key_id": hex::encode(&sha2::Sha256::digest(public.as_bytes())[..8]),
        "created": "2026-12-07T00:00:00Z",
        "files": files,
    }))
    .unwrap();
    let signature = hex::encode(pair.sign(manifest.as_bytes()).as_ref());
    std::fs::write(
        dir.join("signature.json"),
        serde_json::to_vec(&serde_json::json!({"manifest": manifest, "signature": signature}))
            .unwrap(),
    )
    .unwrap();
}

/// A dev vault in `tmp/vault`, serving, that tokenized the canary PAN.
async fn vault_with_a_card(tmp: &Path) -> (DevServer, std::path::PathBuf) {
    let dir = tmp.join("vault");
    let server = DevServer::start(&dir);
    let mut conn = server.connect("cart").await;
    common::tokenize(&mut conn, CANARY_PAN).await;
    drop(conn);
    (server, dir)
}

fn bundle_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundle_holds_the_facts_no_secret_and_detects_any_edit() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, dir) = vault_with_a_card(tmp.path()).await;
    let d = dir.to_str().unwrap();

    // Running: the store is not read under the vault.
    let out = tmp.path().join("bundle");
    let o = out.to_str().unwrap();
    let (code, _, err) = run(&["evidence", "--dev", d, "--out", o]);
    assert_eq!(code, Some(75), "{err}");
    assert!(!out.exists());
    server.stop();

    let advisories = tmp.path().join("advisory-db");
    std::fs::create_dir_all(advisories.join("crates")).unwrap();
    let (code, stdout, err) = run(&[
        "evidence",
        "--dev",
        d,
        "--out",
        o,
        "--advisory-db",
        advisories.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(stdout.contains("signed by key"), "{stdout}");

    let bundle: Value =
        serde_json::from_slice(&std::fs::read(out.join("evidence.json")).unwrap()).unwrap();
    assert_eq!(bundle["standard"], "PCI DSS v4.0.1");
    // A dev directory's bundle says so, under the title and on every
    // section.
    assert_eq!(bundle["development"], true);
    let markdown = std::fs::read_to_string(out.join("evidence.md")).unwrap();
    assert!(markdown.contains("Not evidence for an assessment"));
    let headings: Vec<&str> = markdown.lines().filter(|l| l.starts_with("## ")).collect();
    assert!(headings.len() >= 10);
    assert!(
        headings.iter().all(|h| h.ends_with("(development vault)")),
        "{headings:?}"
    );
    for id in [
        "3.2.1",
        "3.3.1",
        "3.4.1",
        "3.5.1 / 3.5.1.1",
        "3.6.1.1",
        "3.7.x",
        "4.2.1 / 4.2.1.1",
        "7.2",
        "8.x",
        "10.2.1 / 10.2.2",
        "10.3.2 / 10.5.1",
        "10.4.1.1",
        "6.3.3",
        "6.4.3 / 11.6.1",
        "Findings",
    ] {
        assert!(section(&bundle, id).is_object(), "{id}");
    }
    // Every fact of every section says where it comes from.
    for s in bundle["sections"].as_array().unwrap() {
        let facts = s["facts"].as_object().unwrap();
        let sources = s["sources"].as_object().unwrap();
        for fact in facts.keys() {
            let source = sources
                .get(fact)
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{}: no source for {fact}", s["requirement"]));
            assert!(
                source.starts_with("measured")
                    || source.starts_with("declared")
                    || source.starts_with("each"),
                "{}: {fact}: {source}",
                s["requirement"]
            );
        }
    }
    // The snapshot: taken before this run opened the store, so the last
    // event reported is the server's own stop, and the bundle is made
    // after it.
    let protection = section(&bundle, "10.3.2 / 10.5.1");
    let last = protection["last_event"].as_str().unwrap();
    assert!(bundle["created"].as_str().unwrap() >= last, "{bundle}");
    assert_eq!(protection["verify"]["report"]["last_event"], "audit_stop");
    let reported = protection["verify"]["report"]["last_seq"].as_u64().unwrap();
    let on_disk = common::entries(&dir.join("audit"));
    assert!(
        on_disk.len() as u64 > reported,
        "this run's own events come after the snapshot"
    );
    // The counts re-checked against the files: every event up to the
    // snapshot's end, by kind.
    let by_kind = section(&bundle, "10.2.1 / 10.2.2")["events_by_kind"]
        .as_object()
        .unwrap()
        .clone();
    let mut counted: std::collections::BTreeMap<String, u64> = Default::default();
    for e in on_disk
        .iter()
        .filter(|e| e["seq"].as_u64().unwrap() <= reported)
    {
        *counted
            .entry(e["event"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let by_kind: std::collections::BTreeMap<String, u64> = by_kind
        .into_iter()
        .map(|(k, v)| (k, v.as_u64().unwrap()))
        .collect();
    assert_eq!(by_kind, counted);
    // `audit verify --dev` uses the dev directory's checkpoints and key.
    let (code, stdout, err) = run(&["audit", "verify", &format!("{d}/audit"), "--dev", d]);
    assert_eq!(code, Some(0), "{err}");
    assert!(stdout.contains("agree with the trail"), "{stdout}");
    assert!(protection["verify"]["checkpoints"]["checkpoints"].as_u64() > Some(0));
    // The flags a dev vault earns, each against its requirement.
    let findings = section(&bundle, "Findings")["findings"].as_array().unwrap();
    for (requirement, words) in [
        ("3.6.1.2", "same file system"),
        ("4.2.1 / 8.2.5", "no certificate revocation list"),
        ("7.2.2 / 3.4.1", "principal payments holds both"),
        ("3.6.1.2 / 3.7.6", "sealing the vault needs one admin"),
        ("10.3.3", "on the trail's own file system"),
        ("all", "development vault"),
    ] {
        assert!(
            findings.iter().any(|f| f["requirement"] == requirement
                && f["finding"].as_str().unwrap().contains(words)),
            "{requirement} {words}: {findings:?}"
        );
    }
    assert!(
        !findings
            .iter()
            .any(|f| f["finding"].as_str().unwrap().contains("principal cart"))
    );
    // Every kind of key is in the inventory.
    let vault_keys = section(&bundle, "3.6.1.1")["vault_keys"]
        .as_array()
        .unwrap();
    for kind in ["kek", "audit-mac", "evidence-signing", "tls-server", "ca"] {
        assert!(
            vault_keys.iter().any(|k| k["key"] == kind),
            "{kind}: {vault_keys:?}"
        );
    }
    let evidence_key = vault_keys
        .iter()
        .find(|k| k["key"] == "evidence-signing")
        .unwrap();
    assert!(evidence_key["created"].is_string(), "{evidence_key}");
    assert_eq!(evidence_key["location"]["mode"], "0600");
    assert_eq!(section(&bundle, "3.2.1")["tokens_per_tenant"]["default"], 1);
    let scan = &section(&bundle, "3.3.1")["scan_of_data_and_audit_directories"];
    assert_eq!(scan["card_numbers_found"], 0, "{scan}");
    assert!(scan["files"].as_u64().unwrap() > 5, "{scan}");
    let keys = section(&bundle, "3.6.1.1")["keys"].as_array().unwrap();
    assert!(
        keys.iter()
            .any(|k| k["purpose"] == "pan-encryption" && k["records"] == 1)
    );
    assert!(keys.iter().any(|k| k["purpose"] == "fingerprint"));
    let lifecycle = section(&bundle, "3.7.x")["events"].as_array().unwrap();
    assert!(lifecycle.iter().any(|e| e["event"] == "key_created"));
    let tls = section(&bundle, "4.2.1 / 4.2.1.1");
    assert_eq!(tls["protocols"], serde_json::json!(["TLSv1.3"]));
    assert!(tls["server_certificate"]["certificates"][0]["not_after"].is_string());
    let hosted = section(&bundle, "6.4.3 / 4.2.1 (hosted card fields)");
    assert_eq!(hosted["enabled"], true);
    let scripts = hosted["scripts"].as_array().unwrap();
    assert_eq!(scripts.len(), 3);
    assert!(
        scripts
            .iter()
            .all(|s| s["integrity"].as_str().unwrap().starts_with("sha384-"))
    );
    assert_eq!(hosted["tls"]["protocols"], serde_json::json!(["TLSv1.3"]));
    assert!(
        hosted["frame_policy"]["content_security_policy"]
            .as_str()
            .unwrap()
            .contains("frame-ancestors")
    );
    let principals = section(&bundle, "7.2")["principals"].as_array().unwrap();
    assert!(principals.iter().any(|p| p["name"] == "payments"));
    let seen = section(&bundle, "8.x")["seen_in_the_audit_trail"]
        .as_array()
        .unwrap();
    assert!(seen.iter().any(|i| i["principal"] == "cart"));
    assert!(section(&bundle, "10.2.1 / 10.2.2")["events_by_kind"]["tokenize"].as_u64() >= Some(1));
    assert_eq!(
        section(&bundle, "10.3.2 / 10.5.1")["verify"]["intact"],
        true
    );
    // File modes are read from the files, not declared: re-checked here
    // against the audit directory (every mode the bundle counts is on a
    // file there, and the segments are not claimed to be 0600).
    let modes = section(&bundle, "10.3.2 / 10.5.1")["file_modes"]["files_by_mode"]
        .as_object()
        .unwrap()
        .clone();
    let mut on_disk = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir.join("audit")).unwrap().flatten() {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = entry.metadata().unwrap();
        if meta.is_file() {
            on_disk.insert(format!("{:04o}", meta.permissions().mode() & 0o7777));
        }
    }
    assert!(!modes.is_empty());
    for mode in modes.keys() {
        assert!(on_disk.contains(mode), "{mode} not on disk: {on_disk:?}");
    }
    let check = &section(&bundle, "6.3.3")["check"];
    assert_eq!(check["advisories_matched"], 0);
    assert!(
        check["answer"]
            .as_str()
            .unwrap()
            .contains("only as current as"),
        "{check}"
    );

    // No PAN and no key material anywhere in the bundle (the token may be).
    let kek = std::fs::read(dir.join("kek.key")).unwrap();
    let audit_key_file = std::fs::read(dir.join("audit/audit.key")).unwrap();
    let audit_key: Value = serde_json::from_slice(&audit_key_file).unwrap();
    let wrapped = audit_key["wrapped"].as_str().unwrap();
    for (name, bytes) in bundle_bytes(&out) {
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(CANARY_PAN), "the PAN in {name}");
        assert!(
            !text.contains(&CANARY_PAN[6..]),
            "the PAN's middle in {name}"
        );
        assert!(
            !text.contains(&hex::encode(&kek)),
            "the KEK (hex) in {name}"
        );
        assert!(
            !bytes.windows(kek.len()).any(|w| w == kek.as_slice()),
            "the KEK in {name}"
        );
        assert!(!text.contains(wrapped), "the wrapped audit key in {name}");
    }
    let (code, stdout, _) = run(&["scan", o]);
    assert_eq!(code, Some(0), "{stdout}");

    // Verification: intact, pinned, and every kind of edit.
    let (code, stdout, err) = run(&["evidence", "verify", o, "--dev", d]);
    assert_eq!(code, Some(0), "{err}");
    assert!(stdout.contains("the expected key"), "{stdout}");
    let md = out.join("evidence.md");
    let original = std::fs::read(&md).unwrap();
    let mut edited = original.clone();
    edited.extend_from_slice(b"\n- **card_numbers_found**: 0\n");
    std::fs::write(&md, &edited).unwrap();
    let (code, _, err) = run(&["evidence", "verify", o]);
    assert_eq!(code, Some(1));
    assert!(err.contains("evidence.md was edited"), "{err}");
    std::fs::write(&md, &original).unwrap();
    std::fs::write(out.join("notes.txt"), b"added later").unwrap();
    let (code, _, err) = run(&["evidence", "verify", o]);
    assert_eq!(code, Some(1));
    assert!(err.contains("notes.txt was added"), "{err}");
    std::fs::remove_file(out.join("notes.txt")).unwrap();
    let (code, _, err) = run(&["evidence", "verify", o, "--public-key", &"ab".repeat(32)]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not the expected"), "{err}");
    // A forged signature file: the manifest re-written to match an edit.
    let sig = out.join("signature.json");
    let text = std::fs::read_to_string(&sig).unwrap();
    std::fs::write(
        &sig,
        text.replacen("\\\"bytes\\\": ", "\\\"bytes\\\": 1", 1),
    )
    .unwrap();
    let (code, _, err) = run(&["evidence", "verify", o]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("signature does not match"), "{err}");
    std::fs::write(&sig, text).unwrap();
    // Unchanged, but nobody pinned the signer: never "intact".
    let (code, stdout, err) = run(&["evidence", "verify", o]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("no key was pinned"), "{err}");
    assert!(!stdout.contains("intact") && !err.contains("intact"));
    let (code, _, err) = run(&["evidence", "verify", o, "--dev", d]);
    assert_eq!(code, Some(0), "{err}");
    // Pinned by the public key file the vault wrote, as an assessor does.
    let public = dir.join("evidence.pub");
    let (code, stdout, err) = run(&[
        "evidence",
        "verify",
        o,
        "--pubkey",
        public.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(stdout.contains("the expected key"), "{stdout}");
    // The same checks without cardvault: openssl, jq, xxd and coreutils,
    // as docs/evidence.md walks an assessor through them.
    let by_hand = |bundle: &Path| {
        std::process::Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/assessor-verify.sh"
            ))
            .arg("--pubkey")
            .arg(&public)
            .arg("--bundle")
            .arg(bundle)
            .arg("--trail")
            .arg(dir.join("audit"))
            .arg("--checkpoints")
            .arg(dir.join("checkpoints"))
            .output()
            .unwrap()
    };
    let hand = by_hand(&out);
    assert!(
        hand.status.success(),
        "{}{}",
        String::from_utf8_lossy(&hand.stdout),
        String::from_utf8_lossy(&hand.stderr)
    );
    // Edited and re-signed with another key: its own signature holds,
    // so unpinned it is only "unpinned"; pinned, it is refused.
    let forged = tmp.path().join("forged");
    std::fs::create_dir(&forged).unwrap();
    for (name, bytes) in bundle_bytes(&out) {
        std::fs::write(forged.join(name), bytes).unwrap();
    }
    std::fs::write(forged.join("evidence.md"), b"# all good\n").unwrap();
    resign(&forged);
    let f = forged.to_str().unwrap();
    let (code, _, err) = run(&["evidence", "verify", f]);
    assert_eq!(code, Some(3), "{err}");
    let (code, _, err) = run(&[
        "evidence",
        "verify",
        f,
        "--pubkey",
        public.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not the expected"), "{err}");
    let hand = by_hand(&forged);
    assert_eq!(hand.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&hand.stderr).contains("not signed by the pinned key"),
        "{}",
        String::from_utf8_lossy(&hand.stderr)
    );

    // Relative paths (a relative --dev once resolved its config's key file
    // against `/`).
    let out_rel = common::cardvault()
        .current_dir(tmp.path())
        .args(["evidence", "verify", "bundle", "--dev", "vault"])
        .output()
        .unwrap();
    assert!(
        out_rel.status.success(),
        "{}",
        String::from_utf8_lossy(&out_rel.stderr)
    );

    // An existing, non-empty --out is refused; a missing bundle is exit 2.
    let (code, _, _) = run(&["evidence", "--dev", d, "--out", o]);
    assert_eq!(code, Some(64));
    let missing = tmp.path().join("nothing");
    let (code, _, _) = run(&["evidence", "verify", missing.to_str().unwrap()]);
    assert_eq!(code, Some(2));
}

/// `openssl s_client` against `addr` as the dev admin with `args`: whether
/// a TLS session was established, and its output.
fn openssl_connects(pki: &Path, addr: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", addr, "-servername", "localhost"])
        .arg("-CAfile")
        .arg(pki.join("ca.pem"))
        .arg("-cert")
        .arg(pki.join("admin.pem"))
        .arg("-key")
        .arg(pki.join("admin-key.pem"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let established = out.status.success() && !text.contains("Cipher is (NONE)");
    (established, text)
}

/// Collected from the running vault (through the admin API, its trail
/// copied first): the bundle's measured TLS facts are what an independent
/// scanner (openssl) finds at the address the vault really serves, which
/// the config does not name; the run's own requests come after the
/// snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_vault_is_read_through_its_admin_api_and_its_tls_measured() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, dir) = vault_with_a_card(tmp.path()).await;
    let d = dir.to_str().unwrap();
    let out = tmp.path().join("bundle");
    let o = out.to_str().unwrap();
    let target = server.api.clone();
    let hostport = target.trim_start_matches("https://").to_owned();
    let (code, stdout, err) = run(&["evidence", "--dev", d, "--out", o, "--target", &target]);
    assert_eq!(code, Some(0), "{stdout} {err}");
    // A target whose name resolves to nothing says so (exit 1), rather
    // than taking the held directory for a vault with no way in (75).
    let elsewhere = tmp.path().join("elsewhere");
    let (code, _, err) = run(&[
        "evidence",
        "--dev",
        d,
        "--out",
        elsewhere.to_str().unwrap(),
        "--target",
        "https://nothing.invalid:8443",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--target https://nothing.invalid:8443"),
        "{err}"
    );
    assert!(!elsewhere.exists());
    let bundle: Value =
        serde_json::from_slice(&std::fs::read(out.join("evidence.json")).unwrap()).unwrap();
    assert_eq!(section(&bundle, "3.2.1")["tokens_per_tenant"]["default"], 1);
    assert!(
        section(&bundle, "3.6.1.1")["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["purpose"] == "pan-encryption" && k["records"] == 1)
    );
    assert!(
        section(&bundle, "3.6.1.1")["keys"]
            .as_array()
            .unwrap()
            .len()
            >= 2,
        "{bundle}"
    );
    let transit = &bundle["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["requirement"] == "4.2.1 / 4.2.1.1")
        .unwrap();
    assert!(
        transit["sources"]["live_probe"]
            .as_str()
            .unwrap()
            .starts_with("measured")
    );
    let probe = &transit["facts"]["live_probe"];
    assert_eq!(probe["address"], hostport.as_str());
    assert_eq!(probe["served_certificate"]["same_as_the_config_file"], true);
    assert!(
        probe["without_a_client_certificate"]
            .as_str()
            .unwrap()
            .starts_with("refused"),
        "{probe}"
    );
    // The address the vault serves is not the config's: flagged.
    let findings = section(&bundle, "Findings")["findings"].as_array().unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f["finding"].as_str().unwrap().contains("serves its API at")),
        "{findings:?}"
    );

    // The same facts, found by an independent scanner.
    let pki = dir.join("pki");
    let accepted = |key: &str| -> Vec<String> {
        probe[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let protocols = accepted("protocols_accepted");
    for (flag, name) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
        let (ok, text) = openssl_connects(&pki, &hostport, &[flag]);
        assert_eq!(ok, protocols.contains(&name.to_owned()), "{name}: {text}");
    }
    let (ok, _) = openssl_connects(&pki, &hostport, &["-tls1_1"]);
    assert!(!ok, "TLS 1.1 accepted");
    let suites = accepted("cipher_suites_accepted");
    assert_eq!(suites.len(), 3, "{suites:?}");
    for suite in [
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
    ] {
        let (ok, text) = openssl_connects(&pki, &hostport, &["-tls1_3", "-ciphersuites", suite]);
        assert_eq!(ok, suites.contains(&suite.to_owned()), "{suite}: {text}");
    }
    let groups = accepted("key_exchange_groups_accepted");
    for (openssl, rustls) in [
        ("X25519", "X25519"),
        ("P-256", "secp256r1"),
        ("P-384", "secp384r1"),
        ("P-521", "secp521r1"),
    ] {
        let (ok, text) = openssl_connects(&pki, &hostport, &["-groups", openssl]);
        assert_eq!(ok, groups.contains(&rustls.to_owned()), "{openssl}: {text}");
    }

    // The snapshot came before this run's own requests (keys_listed), and
    // the bundle after the snapshot's last event.
    let protection = section(&bundle, "10.3.2 / 10.5.1");
    assert_eq!(protection["verify"]["intact"], true, "{protection}");
    let reported = protection["verify"]["report"]["last_seq"].as_u64().unwrap();
    server.stop();
    let trail = common::entries(&dir.join("audit"));
    let listed = trail
        .iter()
        .find(|e| e["event"] == "keys_listed")
        .expect("the run's inventory request is audited");
    assert!(listed["seq"].as_u64().unwrap() > reported);
    assert!(bundle["created"].as_str().unwrap() >= protection["last_event"].as_str().unwrap());
    let (code, _, err) = run(&["evidence", "verify", o, "--dev", d]);
    assert_eq!(code, Some(0), "{err}");
}

/// The evidence key rotated (`POST /v1/admin/evidence-key/rotate`): a
/// handover checkpoint signed by the old key names the new one, so
/// checkpoints verify under either pin; `evidence.pub` and the next bundle
/// carry the new key; under dual control it waits for a second admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evidence_key_rotates_with_a_handover_the_old_key_signs() {
    let harness = crate::common::harness::Harness::with(|c| {
        let base = c.audit.dir.parent().unwrap().to_path_buf();
        c.audit.checkpoint_dir = Some(base.join("checkpoints"));
        c.audit.public_key_file = Some(base.join("evidence.pub"));
    });
    let base = harness.dir.path();
    let service = harness.start().await;
    let old_pub = std::fs::read_to_string(base.join("evidence.pub")).unwrap();
    std::fs::write(base.join("old.pub"), &old_pub).unwrap();
    let mut admin = harness.connect("admin", service.api_addr).await;
    let mut cart = harness.connect("cart", service.api_addr).await;
    common::tokenize(&mut cart, CANARY_PAN).await;
    let reply = admin
        .post_json("/v1/admin/evidence-key/rotate", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(reply.status, hyper::StatusCode::OK, "{:?}", reply.json());
    let handover = reply.json();
    assert_ne!(handover["from"], handover["to"]);
    let new_pub = std::fs::read_to_string(base.join("evidence.pub")).unwrap();
    assert_ne!(old_pub, new_pub, "evidence.pub follows the new key");
    common::tokenize(&mut cart, "4929123456781236").await;
    drop((admin, cart));
    service.stop().await.unwrap();

    let trail = base.join("audit");
    let checkpoints = base.join("checkpoints");
    let verify = |pubkey: &Path| {
        common::cardvault()
            .args(["audit", "verify"])
            .arg(&trail)
            .arg("--checkpoints")
            .arg(&checkpoints)
            .arg("--pubkey")
            .arg(pubkey)
            .output()
            .unwrap()
    };
    // Pinned to the old key: it follows the handover to the new one.
    let out = verify(&base.join("old.pub"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Pinned to the new key: the old key's checkpoints are skipped, said so.
    let out = verify(&base.join("evidence.pub"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("older checkpoints"), "{text}");
    // A checkpoint line by a key nobody handed over to is refused.
    let file = std::fs::read_dir(&checkpoints)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let mut lines = std::fs::read_to_string(&file).unwrap();
    let forged = {
        use ring::signature::{Ed25519KeyPair, KeyPair as _};
        let pair = Ed25519KeyPair::from_seed_unchecked(&[5u8; 32]).unwrap();
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        der.extend_from_slice(pair.public_key().as_ref());
        use sha2::Digest as _;
        let signed = serde_json::json!({
            "format": 1, "seq": 999, "mac": "00", "event": "audit_stop",
            "ts": "2026-12-07T00:00:00Z", "key": hex::encode(sha2::Sha256::digest(&der)),
        })
        .to_string();
        let signature = hex::encode(pair.sign(signed.as_bytes()).as_ref());
        serde_json::json!({"signed": signed, "signature": signature}).to_string()
    };
    lines.push_str(&forged);
    lines.push('\n');
    std::fs::write(&file, lines).unwrap();
    let out = verify(&base.join("old.pub"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("neither pinned nor handed over"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The trail names both keys.
    let rotated: Vec<_> = common::entries(&trail)
        .into_iter()
        .filter(|e| e["event"] == "evidence_key_rotated")
        .collect();
    assert_eq!(rotated.len(), 1, "{rotated:?}");
    assert_eq!(rotated[0]["principal"], "admin");
    let to = handover["to"].as_str().unwrap();
    assert!(rotated[0]["detail"].as_str().unwrap().contains(to));
}

/// Under dual control the evidence-key rotation waits for a second admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evidence_key_rotation_waits_for_a_second_admin() {
    let harness = crate::common::harness::Harness::with(|c| {
        c.keys.dual_control = cardvault::config::DualControl::default();
    });
    let service = harness.start().await;
    let before = std::fs::read(harness.config.audit.dir.join("evidence.key")).unwrap();
    let mut admin = harness.connect("admin", service.api_addr).await;
    let reply = admin
        .post_json("/v1/admin/evidence-key/rotate", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(
        reply.status,
        hyper::StatusCode::ACCEPTED,
        "{:?}",
        reply.json()
    );
    assert_eq!(reply.json()["action"], "rotate_evidence_key");
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    let reply = admin
        .post_json(&format!("/v1/admin/approvals/{id}"), &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(reply.status, hyper::StatusCode::FORBIDDEN);
    let after = std::fs::read(harness.config.audit.dir.join("evidence.key")).unwrap();
    assert_eq!(before, after, "nothing rotated without a second admin");
    drop(admin);
    service.stop().await.unwrap();
}
