//! A rotated key reaches a running vault without a restart: `cardvault
//! copy-secrets` follows a secret volume laid out as the kubelet lays it
//! out (files as links into `..data`, swapped by a rename) and writes the
//! vault's own 0600 copies; `[api] tls_check_s` reloads the TLS files once
//! they have changed and held still, and a key that does not match the
//! certificate is refused with the old pair kept.

use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::harness::{counter, ops_get};
use crate::common::{self, cardvault, outcome};

/// Writes `files` as one kubelet "version" directory of `volume` and
/// points `..data` (and a link per file) at it, swapping atomically.
fn kubelet_publish(volume: &Path, version: &str, files: &[(&str, &[u8])]) {
    let dir = volume.join(format!("..{version}"));
    std::fs::create_dir(&dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o440)).unwrap();
    }
    let staged = volume.join("..data_tmp");
    symlink(format!("..{version}"), &staged).unwrap();
    std::fs::rename(&staged, volume.join("..data")).unwrap();
    for (name, _) in files {
        let link = volume.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Polls `done` every 100 ms for at most `limit`.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

#[test]
fn copy_secrets_follows_a_kubelet_secret_and_prints_no_content() {
    const KEY_1: &[u8] = b"canary-key-one-3b1f";
    const KEY_2: &[u8] = b"canary-key-two-9e0c";
    let dir = tempfile::tempdir().unwrap();
    let (volume, keys) = (dir.path().join("secret"), dir.path().join("keys"));
    std::fs::create_dir_all(&volume).unwrap();
    std::fs::create_dir_all(&keys).unwrap();
    kubelet_publish(&volume, "v1", &[("tls.key", KEY_1), ("kek.key", b"k1")]);
    let args = [
        "copy-secrets",
        "--from",
        volume.to_str().unwrap(),
        "--to",
        keys.to_str().unwrap(),
    ];
    let (code, stdout, stderr) = outcome(cardvault().args(args));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(std::fs::read(keys.join("tls.key")).unwrap(), KEY_1);
    assert_eq!(mode(&keys.join("tls.key")), 0o600);
    assert_eq!(mode(&keys.join("kek.key")), 0o600);
    let mut held: Vec<String> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    held.sort();
    assert_eq!(
        held,
        ["kek.key", "tls.key"],
        "the kubelet's own entries copied"
    );
    assert!(stdout.contains("tls.key updated"), "{stdout}");
    // Again: nothing changed, nothing copied.
    let (code, stdout, _) = outcome(cardvault().args(args));
    assert_eq!(code, Some(0));
    assert!(stdout.is_empty(), "{stdout}");

    // As a sidecar: the kubelet swaps in a rotated key; the copy follows.
    let mut sidecar = cardvault()
        .args(args)
        .args(["--every", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    kubelet_publish(&volume, "v2", &[("tls.key", KEY_2), ("kek.key", b"k1")]);
    let followed = wait_for(Duration::from_secs(15), || {
        std::fs::read(keys.join("tls.key")).unwrap() == KEY_2
    });
    assert!(followed, "the rotated key was not copied within 15 s");
    assert_eq!(mode(&keys.join("tls.key")), 0o600);
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&sidecar),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let stopped = wait_for(Duration::from_secs(10), || {
        sidecar.try_wait().unwrap().is_some()
    });
    assert!(stopped, "copy-secrets --every did not stop on SIGTERM");
    let out = sidecar.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = format!(
        "{stdout}{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("tls.key updated"), "{printed}");
    for canary in ["canary-key-one", "canary-key-two"] {
        assert!(!printed.contains(canary), "a key's content printed");
    }

    // A file larger than a secret should be: refused (exit 2), unnamed content.
    let big = dir.path().join("big");
    std::fs::create_dir(&big).unwrap();
    std::fs::write(big.join("huge"), vec![b'k'; 2 << 20]).unwrap();
    let (code, _, stderr) = outcome(cardvault().args([
        "copy-secrets",
        "--from",
        big.to_str().unwrap(),
        "--to",
        keys.to_str().unwrap(),
    ]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("larger than"), "{stderr}");
    assert!(!keys.join("huge").exists());
}

/// The served certificate, as a new handshake sees it.
async fn presented(server: &common::DevServer) -> Vec<u8> {
    let raw = common::pki_client(&server.data_dir.join("pki"), "payments")
        .connect_raw(server.addr())
        .await
        .unwrap();
    raw.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// Waits (at most `limit`) until new handshakes present `cert_pem`.
async fn await_served(server: &common::DevServer, cert_pem: &str, limit: Duration) {
    let wanted = der(cert_pem);
    let start = Instant::now();
    while presented(server).await != wanted {
        assert!(
            start.elapsed() < limit,
            "the renewed certificate was not served within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_tls_files_are_reloaded_and_a_mismatched_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let server = common::DevServer::start_with(
        &data,
        &[("CARDVAULT_API__TLS_CHECK_S", "1"), ("RUST_LOG", "info")],
    );
    let pki = data.join("pki");
    assert_eq!(
        presented(&server).await,
        der(&std::fs::read_to_string(pki.join("server.pem")).unwrap())
    );
    // A renewed certificate: key first, then the certificate, as two
    // separate writes; the vault waits until both have held still.
    let ca = cardvault::pki::Ca::load(&pki).unwrap();
    let renewed = ca.issue_server().unwrap();
    cardvault::pki::write_file(&pki.join("server-key.pem"), &renewed.key_pem, true).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    cardvault::pki::write_file(&pki.join("server.pem"), &renewed.cert_pem, false).unwrap();
    await_served(&server, &renewed.cert_pem, Duration::from_secs(15)).await;
    // A key that is not the certificate's: refused, the pair in force kept.
    let other = ca.issue_server().unwrap();
    cardvault::pki::write_file(&pki.join("server-key.pem"), &other.key_pem, true).unwrap();
    let ops = server.ops_addr();
    let mut failed = 0.0;
    let start = Instant::now();
    while failed < 1.0 && start.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, metrics) = ops_get(ops, "/metrics").await;
        failed = counter(&metrics, "cardvault_reloads_total{outcome=\"failed\"}");
    }
    assert_eq!(
        failed, 1.0,
        "the mismatched key was not refused within 15 s"
    );
    assert_eq!(presented(&server).await, der(&renewed.cert_pem));
    // Not retried while the files stay as they are.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, metrics) = ops_get(ops, "/metrics").await;
    assert_eq!(
        counter(&metrics, "cardvault_reloads_total{outcome=\"failed\"}"),
        1.0
    );
    assert!(server.stop().success());
    let entries = common::entries(&data.join("audit"));
    let outcomes: Vec<&str> = common::of_kind(&entries, "config_reloaded")
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["success", "error"]);
    let log = std::fs::read_to_string(data.join("serve.log")).unwrap();
    assert!(log.contains("TLS files changed"), "{log}");
}

/// The whole Kubernetes rotation path on the real binaries: the vault's
/// TLS pair is the copy `copy-secrets --every` keeps of a kubelet-style
/// secret volume; the kubelet swaps in a renewed pair; the sidecar copies
/// it (two renames) and the vault serves it, with no reload failing on a
/// half-copied pair and no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_secret_reaches_the_running_vault_through_the_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    // A first start makes the dev PKI; its server pair becomes the Secret.
    assert!(common::DevServer::start(&data).stop().success());
    let pki = data.join("pki");
    let (volume, keys) = (dir.path().join("secret"), dir.path().join("keys"));
    std::fs::create_dir_all(&volume).unwrap();
    std::fs::create_dir_all(&keys).unwrap();
    let pair =
        |cert: &[u8], key: &[u8]| vec![("tls.crt", cert.to_vec()), ("tls.key", key.to_vec())];
    let publish = |version: &str, files: Vec<(&str, Vec<u8>)>| {
        let files: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        kubelet_publish(&volume, version, &files);
    };
    publish(
        "v1",
        pair(
            &std::fs::read(pki.join("server.pem")).unwrap(),
            &std::fs::read(pki.join("server-key.pem")).unwrap(),
        ),
    );
    let copy = |extra: &[&str]| {
        let mut command = cardvault();
        command.args([
            "copy-secrets",
            "--from",
            volume.to_str().unwrap(),
            "--to",
            keys.to_str().unwrap(),
        ]);
        command.args(extra);
        command
    };
    // The init container, then the sidecar.
    assert_eq!(outcome(&mut copy(&[])).0, Some(0));
    let mut sidecar = copy(&["--every", "1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (cert, key) = (keys.join("tls.crt"), keys.join("tls.key"));
    let server = common::DevServer::start_with(
        &data,
        &[
            ("CARDVAULT_API__CERT", cert.to_str().unwrap()),
            ("CARDVAULT_API__KEY", key.to_str().unwrap()),
            ("CARDVAULT_API__TLS_CHECK_S", "1"),
        ],
    );
    let first = presented(&server).await;
    assert_eq!(
        first,
        der(&std::fs::read_to_string(pki.join("server.pem")).unwrap())
    );
    // cert-manager renews: the kubelet publishes the new pair.
    let renewed = cardvault::pki::Ca::load(&pki)
        .unwrap()
        .issue_server()
        .unwrap();
    publish(
        "v2",
        pair(renewed.cert_pem.as_bytes(), renewed.key_pem.as_bytes()),
    );
    await_served(&server, &renewed.cert_pem, Duration::from_secs(20)).await;
    let (_, metrics) = ops_get(server.ops_addr(), "/metrics").await;
    assert_eq!(
        counter(&metrics, "cardvault_reloads_total{outcome=\"failed\"}"),
        0.0,
        "a half-copied pair was loaded"
    );
    assert_eq!(
        counter(&metrics, "cardvault_reloads_total{outcome=\"ok\"}"),
        1.0
    );
    let _ = sidecar.kill();
    let _ = sidecar.wait();
    assert!(server.stop().success());
}
