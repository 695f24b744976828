//! The `cardvault` binary: usage and config errors exit 64 naming the
//! problem, and `serve --dev` starts, prints curl commands that work exactly
//! as printed (run through bash and curl when curl is installed), and stops
//! cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::process::Command;

use crate::common::cardvault;

/// Runs `serve --config CONFIG` with `env`, asserts it is refused with
/// status 64 and that the message names `field`.
fn assert_config_refused(config: &std::path::Path, env: &[(&str, &str)], field: &str) {
    let out = cardvault()
        .envs(env.iter().copied())
        .args(["serve", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(field), "{stderr}");
}

/// `cardvault audit verify DIR/audit --dev DIR` on a dev setup.
fn verify_dev_trail(data: &std::path::Path) -> std::process::Output {
    cardvault()
        .args(["audit", "verify"])
        .arg(data.join("audit"))
        .arg("--dev")
        .arg(data)
        .output()
        .unwrap()
}

#[test]
fn usage_errors_exit_64() {
    let out = cardvault().arg("no-such-command").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = cardvault().args(["serve"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn config_errors_name_the_field_and_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[api]\nlisten = \"not an address\"\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"\n[storage]\ndata_dir = \"db\"\nkey_file = \"kek\"\n").unwrap();
    assert_config_refused(&config, &[], "api.listen");
    std::fs::write(&config, "[api]\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"\n[storage]\ndata_dir = \"db\"\nkey_file = \"kek\"\n").unwrap();
    assert_config_refused(&config, &[], "api.cert");
}

#[test]
fn dev_mode_prints_curl_commands_that_work_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let server = common::DevServer::start(&data);
    let commands: Vec<&String> = server
        .printed
        .iter()
        .filter(|l| l.starts_with("curl ") || l.starts_with("TOKEN="))
        .collect();
    assert_eq!(commands.len(), 2, "dev mode printed {:?}", server.printed);
    let printed = server.printed.join("\n");
    assert!(
        printed.contains("DEV MODE — not for production")
            && printed.contains("payments → default: tokenize, detokenize, read"),
        "{printed}"
    );
    // The dev CA carries a name of its own.
    let ca_pem = std::fs::read(data.join("pki/ca.pem")).unwrap();
    let der = {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_slice(&ca_pem).unwrap()
    };
    let (_, ca) = x509_parser::parse_x509_certificate(&der).unwrap();
    let cn = ca
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    let tag = cn.strip_prefix("cardvault dev CA ").unwrap_or_default();
    assert!(
        tag.len() == 8 && tag.bytes().all(|b| b.is_ascii_hexdigit()),
        "{cn}"
    );
    for file in [
        "pki/ca.pem",
        "pki/cart.pem",
        "pki/payments-key.pem",
        "kek.key",
        "cardvault.toml",
        "db",
    ] {
        assert!(data.join(file).exists(), "{file} missing");
    }
    if Command::new("curl").arg("--version").output().is_ok() {
        let tokenize = Command::new("bash")
            .arg("-c")
            .arg(commands[0])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&tokenize.stdout);
        assert!(
            text.contains("\"token\":\"411111"),
            "tokenize printed {text}"
        );
        let detokenize = Command::new("bash")
            .arg("-c")
            .arg(commands[1])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&detokenize.stdout);
        assert!(
            text.contains("\"pan\":\"4111111111111111\""),
            "detokenize printed {text}"
        );
    } else {
        eprintln!("curl not installed: printed commands not executed");
    }
    let status = server.stop();
    assert!(status.success(), "serve exited with {status}");
}

#[test]
fn environment_overrides_apply_and_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    // A complete dev setup, then a config override that breaks one field.
    let server = common::DevServer::start(&data);
    assert!(server.stop().success());
    let config = data.join("cardvault.toml");
    assert_config_refused(
        &config,
        &[("CARDVAULT_LIMITS__MAX_BATCH", "0")],
        "limits.max_batch",
    );
    assert_config_refused(
        &config,
        &[("CARDVAULT_API__LISTEN", "nowhere")],
        "api.listen",
    );
    // Typed values are parsed once, at load: a bad one names its field.
    for (key, value, field) in [
        (
            "CARDVAULT_PRINCIPALS__CART__TENANT",
            "Not A Tenant",
            "principals.cart.tenant",
        ),
        (
            "CARDVAULT_PRINCIPALS__CART__ROLES",
            "[\"superuser\"]",
            "principals.cart.roles",
        ),
        (
            "CARDVAULT_PRINCIPALS__PAYMENTS__DETOKENIZE_HOURS_UTC",
            "25:00-26:00",
            "principals.payments.detokenize_hours_utc",
        ),
        (
            "CARDVAULT_TENANTS__DEFAULT__TOKEN_MODE",
            "sometimes",
            "tenants.default.token_mode",
        ),
        (
            "CARDVAULT_AUDIT__SYNC_INTERVAL_MS",
            "0",
            "audit.sync_interval_ms",
        ),
        (
            "CARDVAULT_ALERTS__DETOKENIZE_BURST__MAX",
            "0",
            "alerts.detokenize_burst.max",
        ),
    ] {
        assert_config_refused(&config, &[(key, value)], field);
    }
}

/// The alert rules through the real binary: a detokenize burst above the
/// configured limit logs a `warn` line with a stable `alert` field, and the
/// audit trail the server wrote verifies with `audit verify --dev`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detokenize_burst_is_logged_and_the_trail_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let server =
        common::DevServer::start_with(&data, &[("CARDVAULT_ALERTS__DETOKENIZE_BURST__MAX", "2")]);
    let mut conn = server.connect("payments").await;
    let token = common::tokenize(&mut conn, "4929123456781236").await;
    for _ in 0..3 {
        let reply = conn
            .post_json("/v1/detokenize", &serde_json::json!({ "token": token }))
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "blocking is off by default");
    }
    drop(conn);
    assert!(server.stop().success());
    let log = std::fs::read_to_string(data.join("serve.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("alert") && l.contains("detokenize_burst"))
        .unwrap_or_else(|| panic!("no alert line in {log}"));
    assert!(
        line.contains("WARN") && line.contains("principal"),
        "{line}"
    );
    assert!(!log.contains("4929123456781236"), "the log holds the PAN");
    let out = verify_dev_trail(&data);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("last event audit_stop"), "{stdout}");
    assert!(common::files_containing(&data, b"4929123456781236").is_empty());
}

/// `serve` turns core dumps off and says whether memory is locked.
#[test]
fn serve_turns_core_dumps_off() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let server = common::DevServer::start(&data);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let locked_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(server.stop().success());
    let log = std::fs::read_to_string(data.join("serve.log")).unwrap();
    // Either memory is locked, or the log says loudly that it is not.
    assert!(
        locked_kb > 0 || log.contains("memory NOT locked"),
        "VmLck {locked_kb} kB; log: {log}"
    );
}

/// A reader that goes away (`| head`) is not an internal error.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "set -o pipefail; '{}' load ceiling --dir '{}' --duration 200ms | head -c 1 >/dev/null",
        env!("CARGO_BIN_EXE_cardvault"),
        dir.path().display()
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("internal error"), "{stderr}");
}

#[test]
fn offline_key_commands_never_create_a_kek() {
    let dir = tempfile::tempdir().unwrap();
    let mistyped = dir.path().join("cardvault-dve");
    for args in [vec!["keys", "status"], vec!["keys", "rotate"]] {
        let out = cardvault()
            .args(&args)
            .arg("--data-dir")
            .arg(&mistyped)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("no kek.key"), "{args:?}: {stderr}");
        assert!(
            !mistyped.exists(),
            "{args:?} created {}",
            mistyped.display()
        );
    }
    // With --config, the KEK comes from the config; a missing file is named.
    let config = dir.path().join("cardvault.toml");
    std::fs::write(
        &config,
        "[api]\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"\n[storage]\ndata_dir = \"db\"\nkey_file = \"kek\"\n",
    )
    .unwrap();
    let out = cardvault()
        .args(["keys", "status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(!dir.path().join("kek").exists());
}

/// A vault on PostgreSQL: the offline commands refuse (exit 64) and say
/// what to use instead; no RocksDB is made in the node's directory.
#[test]
fn offline_commands_refuse_a_postgres_vault_and_name_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cardvault.toml");
    std::fs::write(
        &config,
        "[api]\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"\n[storage]\nbackend = \"postgres\"\nurl = \"host=127.0.0.1 port=1 user=u password=pw-canary-77 dbname=d sslmode=disable\"\ndata_dir = \"node\"\nkey_file = \"kek\"\n[principals.cart]\ntenant = \"default\"\nroles = [\"tokenize\"]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("kek"), [7u8; 32]).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("kek"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    for file in ["c", "k", "ca"] {
        std::fs::write(dir.path().join(file), "").unwrap();
    }
    for args in [
        vec!["keys", "status"],
        vec!["keys", "rotate"],
        vec!["evidence", "--out", "bundle"],
        vec!["demo"],
    ] {
        let out = cardvault()
            .args(&args)
            .arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains("PostgreSQL"), "{args:?}: {stderr}");
        assert!(stderr.contains("/v1/admin/keys"), "{args:?}: {stderr}");
        assert!(!stderr.contains("pw-canary-77"), "{args:?}: {stderr}");
        assert!(
            !dir.path().join("node").exists(),
            "{args:?} made a directory"
        );
    }
}

/// A second process never touches a running vault's trail: every offline
/// command and a second `serve` exit 75 naming the lock, write nothing, and
/// the running vault's chain still verifies afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_leaves_a_running_vaults_trail_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let server = common::DevServer::start(&data);
    let mut conn = server.connect("cart").await;
    common::tokenize(&mut conn, "4929123456781236").await;
    let segments_before = std::fs::read_dir(data.join("audit")).unwrap().count();
    // `--dev DIR` is the one spelling every subcommand takes.
    let second_serve: Vec<&str> = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--ops-listen",
        "127.0.0.1:0",
        "--dev",
    ];
    for args in [
        vec!["keys", "status", "--data-dir"],
        vec!["keys", "rotate", "--dev"],
        vec!["demo", "--dev"],
        second_serve,
    ] {
        let out = cardvault().args(&args).arg(&data).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(75), "{args:?}: {stderr}");
        assert!(
            stderr.contains("the vault is running")
                && stderr.contains(&format!("PID {}", server.child.id())),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(
        std::fs::read_dir(data.join("audit")).unwrap().count(),
        segments_before,
        "a refused command wrote an audit segment"
    );
    // The running vault goes on, and its chain is whole.
    common::tokenize(&mut conn, "4929123456781244").await;
    drop(conn);
    assert!(server.stop().success());
    let out = verify_dev_trail(&data);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Once it has stopped, the same commands work, by directory or by the
    // config file (the production path).
    let out = cardvault()
        .args(["keys", "status", "--dev"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cardvault()
        .args(["demo", "--config"])
        .arg(data.join("cardvault.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains("every card tokenized"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The binary's `malloc` is jemalloc (linked unprefixed), for RocksDB's C++
/// allocations as much as Rust's: asked through `MALLOC_CONF`, it prints
/// its statistics at exit, which glibc's malloc would never do.
#[test]
fn the_binary_allocates_with_jemalloc() {
    let out = cardvault()
        .env("MALLOC_CONF", "stats_print:true")
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("jemalloc statistics"), "{text}");
}

/// On SIGTERM with a drain delay, `/readyz` answers 503 `draining` while
/// the API still serves; then the vault stops cleanly. Both health routes
/// answer a small JSON body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_with_readyz_503_before_closing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let server = common::DevServer::start_with(&data, &[("CARDVAULT_OPS__DRAIN_DELAY_MS", "3000")]);
    let ops = server.ops_addr();
    let (status, body) = crate::common::harness::ops_get(ops, "/readyz").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("\"state\":\"serving\"") && body.contains("\"sealed\":false"),
        "{body}"
    );
    let mut cart = server.connect("cart").await;
    Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let body = loop {
        let (status, body) = crate::common::harness::ops_get(ops, "/readyz").await;
        if status == 503 {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz stayed 200 after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(body.contains("\"state\":\"draining\""), "{body}");
    let (status, _) = crate::common::harness::ops_get(ops, "/healthz").await;
    assert_eq!(status, 200);
    // Still serving during the delay.
    common::tokenize(&mut cart, "4929123456781236").await;
    drop(cart);
    assert!(server.stop().success());
}

/// Shell completions and the manual page come from the command tree itself.
#[test]
fn completions_and_man_page_are_generated() {
    let out = cardvault().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cardvault") && text.contains("serve") && text.contains("complete"),
        "{text}"
    );
    let out = cardvault().arg("man").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with(".ie") || text.starts_with(".TH"), "{text}");
    assert!(text.contains("cardvault"), "{text}");
}

/// Under systemd's Type=notify the vault asks for more time while it
/// starts (EXTEND_TIMEOUT_USEC), says READY=1 once it serves and
/// STOPPING=1 when asked to stop (a datagram socket plays systemd).
#[test]
fn serve_notifies_systemd_when_starting_ready_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let server = common::DevServer::start_with(
        &dir.path().join("dev"),
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );
    // While it starts it asks for more time; then it is ready.
    let mut buf = [0u8; 256];
    let mut said = Vec::new();
    while !said.iter().any(|m: &String| m.contains("READY=1")) {
        assert!(said.len() < 20, "{said:?}");
        let n = socket.recv(&mut buf).unwrap();
        said.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(said[0].contains("EXTEND_TIMEOUT_USEC="), "{said:?}");
    assert!(server.stop().success());
    let n = socket.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
}

/// `[log] format = "json"` (here through `CARDVAULT_LOG__FORMAT`): every log
/// line is one JSON object with the same fields; a bad value names the field.
#[test]
fn json_logs_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let server = common::DevServer::start_with(
        &data,
        &[("CARDVAULT_LOG__FORMAT", "json"), ("RUST_LOG", "info")],
    );
    assert!(server.stop().success());
    let log = std::fs::read_to_string(data.join("serve.log")).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{log}");
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            value["level"].is_string() && value["fields"].is_object(),
            "{line}"
        );
    }
    assert!(log.contains("cardvault listening"), "{log}");
    assert_config_refused(
        &data.join("cardvault.toml"),
        &[("CARDVAULT_LOG__FORMAT", "yaml")],
        "log.format",
    );
}

/// SIGHUP under load: a bad file keeps the old configuration; a new server
/// certificate, a new SPIFFE principal, a principal's removal and a CRL
/// take effect without a restart and without one failed request of the
/// running load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_certificates_crls_and_principals_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let server = common::DevServer::start(&data);
    let pki = data.join("pki");
    let config_path = data.join("cardvault.toml");
    let hup = || {
        Command::new("kill")
            .arg("-HUP")
            .arg(server.child.id().to_string())
            .status()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(400));
    };
    let run = |args: &[&str]| {
        let out = cardvault().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let pki_dir = pki.to_str().unwrap();
    run(&[
        "pki",
        "issue",
        "spiffe-cart",
        "--uri",
        "spiffe://shop.example/cart",
        "--dir",
        pki_dir,
    ]);
    run(&["pki", "issue", "leaver", "--dir", pki_dir]);
    let original = std::fs::read_to_string(&config_path).unwrap();
    let with_new = format!(
        "{original}\n[principals.\"uri:spiffe://shop.example/cart\"]\ntenant = \"default\"\nroles = [\"tokenize\"]\n\n[principals.leaver]\ntenant = \"default\"\nroles = [\"tokenize\"]\n"
    );
    std::fs::write(&config_path, &with_new).unwrap();
    hup();
    let tls = |name: &str| common::pki_client(&pki, name);
    let addr = server.addr();
    let pan = serde_json::json!({ "pan": "4929123456781236" });
    let mut spiffe = tls("spiffe-cart").connect(addr).await.unwrap();
    assert_eq!(
        spiffe.post_json("/v1/tokenize", &pan).await.unwrap().status,
        200
    );
    let mut leaver = tls("leaver").connect(addr).await.unwrap();
    // The admin routes see the reloaded table too.
    let mut admin = tls("admin").connect(addr).await.unwrap();
    let clear_leaver = serde_json::json!({ "principal": "leaver" });
    let reply = admin
        .post_json("/v1/admin/alerts/clear", &clear_leaver)
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        leaver.post_json("/v1/tokenize", &pan).await.unwrap().status,
        200
    );

    // Load runs through everything below.
    let load = server.spawn_load(&[
        "--concurrency",
        "4",
        "--duration",
        "4s",
        "--warmup",
        "0s",
        "--json",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    // A config naming a CRL that does not exist: refused, the old one stays.
    let with_crl = with_new.replacen(
        "client_ca = \"pki/ca.pem\"\n",
        "client_ca = \"pki/ca.pem\"\ncrls = [\"pki/crl.pem\"]\n",
        1,
    );
    assert_ne!(with_crl, with_new, "the dev config's [api] section moved");
    std::fs::write(&config_path, &with_crl).unwrap();
    hup();
    assert_eq!(
        leaver.post_json("/v1/tokenize", &pan).await.unwrap().status,
        200
    );
    // Now: a new server certificate, leaver removed, spiffe-cart revoked.
    let ca = cardvault::pki::Ca::load(&pki).unwrap();
    let server_cert = ca.issue_server().unwrap();
    cardvault::pki::write_file(&pki.join("server-key.pem"), &server_cert.key_pem, true).unwrap();
    cardvault::pki::write_file(&pki.join("server.pem"), &server_cert.cert_pem, false).unwrap();
    run(&["pki", "revoke", "spiffe-cart", "--dir", pki_dir]);
    let without_leaver = with_crl.replace(
        "[principals.leaver]\ntenant = \"default\"\nroles = [\"tokenize\"]\n",
        "",
    );
    std::fs::write(&config_path, &without_leaver).unwrap();
    hup();
    let out = load.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert!(report["ops"].as_u64().unwrap() > 0);
    let reply = admin
        .post_json("/v1/admin/alerts/clear", &clear_leaver)
        .await
        .unwrap();
    assert_eq!(
        reply.status, 400,
        "a removed principal is still known to admin routes"
    );
    drop(admin);
    // The removed principal's open connection is refused on its next request.
    let reply = leaver.post_json("/v1/tokenize", &pan).await.unwrap();
    assert_eq!(reply.status, 403);
    // The revoked certificate no longer gets a response.
    let revoked = match tls("spiffe-cart").connect(addr).await {
        Ok(mut conn) => conn.post_json("/v1/tokenize", &pan).await.is_err(),
        Err(_) => true,
    };
    assert!(revoked, "a revoked certificate was served");
    // New handshakes present the new server certificate.
    let raw = tls("payments").connect_raw(addr).await.unwrap();
    let presented = raw.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let expected = {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_slice(server_cert.cert_pem.as_bytes()).unwrap()
    };
    assert_eq!(presented, expected.to_vec());
    drop((raw, spiffe, leaver));
    assert!(server.stop().success());
    let entries = common::entries(&data.join("audit"));
    let reloads = common::of_kind(&entries, "config_reloaded");
    let outcomes: Vec<&str> = reloads
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["success", "error", "success"], "{reloads:?}");
}

/// The CLI client: PANs from standard input only, JSON out, the
/// environment or `--dev` for the connection, exit 1 on a refused item, and
/// a card number given where a token belongs is refused without an echo.
#[test]
fn the_cli_client_tokenizes_from_stdin_and_reveals() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let server = common::DevServer::start(&data);
    let pki = data.join("pki");
    let client = |args: &[&str], stdin: &str, env: &[(&str, std::path::PathBuf)]| {
        common::run_with_stdin(
            cardvault()
                .args(args)
                .env("CARDVAULT_ADDR", &server.api)
                .envs(env.iter().map(|(k, v)| (*k, v.as_os_str()))),
            stdin.as_bytes(),
        )
    };
    // Tokenize as cart, through the environment.
    let env = [
        ("CARDVAULT_CACERT", pki.join("ca.pem")),
        ("CARDVAULT_CERT", pki.join("cart.pem")),
        ("CARDVAULT_KEY", pki.join("cart-key.pem")),
    ];
    let out = client(
        &["tokenize", "--expiry", "12/29"],
        "4929123456781236\n\n5555555555554444\n",
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let token = lines[0]["token"].as_str().unwrap().to_owned();
    // Reveal and read as payments (the --dev default).
    let dev = ["--dev", data.to_str().unwrap()];
    let out = client(
        &[&["detokenize"][..], &dev, &[token.as_str()]].concat(),
        "",
        &[],
    );
    assert!(out.status.success());
    let revealed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(revealed["pan"], "4929123456781236");
    assert_eq!(revealed["expiry"], "12/29");
    let out = client(
        &[&["metadata"][..], &dev].concat(),
        &format!("{token}\n"),
        &[],
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(meta["last4"], "1236");
    // A card number where a token belongs: refused here, never echoed.
    let out = client(
        &[&["metadata"][..], &dev, &["4929123456781236"]].concat(),
        "",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("invalid_request") && !text.contains("4929123456781236"),
        "{text}"
    );
    // Delete as admin; the token is gone and detokenize exits 1.
    let out = client(
        &[&["delete", "--as", "admin"][..], &dev, &[token.as_str()]].concat(),
        "",
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = client(
        &[&["detokenize"][..], &dev, &[token.as_str()]].concat(),
        "",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("token_not_found"));
    assert!(server.stop().success());
}

/// The shopping-cart example in examples/python runs against a dev vault
/// (python3's standard library only; CI has python3).
#[test]
fn the_python_cart_example_runs_against_a_dev_vault() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("python3 not installed: the Python example was not run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let server = common::DevServer::start(&data);
    let out = common::run_with_stdin(
        Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/python/cart.py"
            ))
            .arg("--dev")
            .arg(&data)
            .args(["--addr", &server.api]),
        b"5555555555554444\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["brand"], "mastercard");
    assert_eq!(shown["last4"], "4444");
    assert_eq!(shown["expiry"], "12/29");
    assert!(shown["token"].as_str().unwrap().starts_with("555555"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("5555555555554444"));
    assert!(server.stop().success());
}

/// Issue 36, item 6: every command that talks to a running vault names it
/// the same way — `--target`, with `--addr` as an alias and
/// `CARDVAULT_ADDR` — and takes the CA as `--cacert` or `--ca`.
#[test]
fn every_client_command_says_where_the_vault_is_the_same_way() {
    let commands: [&[&str]; 16] = [
        &["unseal"],
        &["seal"],
        &["tokenize"],
        &["detokenize"],
        &["metadata"],
        &["delete"],
        &["keys", "inventory"],
        &["keys", "reencrypt"],
        &["keys", "rotate-kek"],
        &["import"],
        &["export"],
        &["approve"],
        &["load"],
        &["load", "verify"],
        &["tokenize-file"],
        &["scan"],
    ];
    for command in commands {
        let out = common::cardvault()
            .args(command)
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        for needle in [
            "--target",
            "[alias: --addr]",
            "CARDVAULT_ADDR",
            "CARDVAULT_CACERT",
        ] {
            assert!(
                help.contains(needle),
                "{command:?} --help lacks {needle}:\n{help}"
            );
        }
        assert!(
            help.contains("[alias: --ca]") || help.contains("[alias: --cacert]"),
            "{command:?} --help names the CA one way only:\n{help}"
        );
    }
}
