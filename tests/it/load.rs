//! `cardvault load` against a real `serve --dev` on port 0: short closed- and
//! open-loop runs report non-zero ops and zero errors, the JSON report
//! parses, the ack log verifies with nothing lost, and a vault that is down
//! or bad arguments give clear failures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::process::Command;

use serde_json::Value;

fn load(server: &common::DevServer, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cardvault"))
        .env("RUST_LOG", "warn")
        .arg("load")
        .arg("--dev")
        .arg(&server.data_dir)
        .args(["--target", &server.api])
        .args(args)
        .output()
        .unwrap()
}

fn report(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn closed_and_open_loop_runs_report_and_acks_verify() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::DevServer::start(&dir.path().join("dev"));
    let acks = dir.path().join("acks.jsonl");
    let acks_arg = acks.to_str().unwrap();

    let closed = report(&load(
        &server,
        &[
            "--concurrency",
            "4",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--json",
            "--ack-log",
            acks_arg,
            "--repeat-ratio",
            "0.2",
        ],
    ));
    assert!(closed["ops"].as_u64().unwrap() > 0, "{closed}");
    assert_eq!(closed["errors"], serde_json::json!({}));
    assert!(closed["throughput_per_s"].as_f64().unwrap() > 0.0);
    for field in ["p50", "p90", "p99", "p999", "max"] {
        assert!(
            closed["latency_ms"][field].as_f64().unwrap() > 0.0,
            "{field}: {closed}"
        );
    }

    let open = report(&load(
        &server,
        &[
            "--rate",
            "200",
            "--concurrency",
            "4",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--json",
            "--ack-log",
            acks_arg,
        ],
    ));
    assert_eq!(open["mode"], "open");
    let ops = open["ops"].as_u64().unwrap();
    assert!(
        (150..=260).contains(&ops),
        "open loop at 200/s for 1 s made {ops} ops"
    );
    assert_eq!(open["errors"], serde_json::json!({}));

    let batch = report(&load(
        &server,
        &[
            "--op",
            "tokenize-batch",
            "--batch",
            "100",
            "--concurrency",
            "2",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--json",
        ],
    ));
    assert_eq!(
        batch["items"].as_u64().unwrap(),
        100 * batch["ops"].as_u64().unwrap()
    );
    for op in ["mixed", "metadata"] {
        let run = report(&load(
            &server,
            &[
                "--op",
                op,
                "--concurrency",
                "2",
                "--duration",
                "500ms",
                "--warmup",
                "0s",
                "--json",
            ],
        ));
        assert!(run["ops"].as_u64().unwrap() > 0, "{op}");
        assert_eq!(run["errors"], serde_json::json!({}), "{op}");
    }

    let lines = std::fs::read_to_string(&acks).unwrap().lines().count();
    assert!(lines > 0);
    let verify = Command::new(env!("CARGO_BIN_EXE_cardvault"))
        .args(["load", "verify", "--json", "--dev"])
        .arg(&server.data_dir)
        .args(["--target", &server.api, "--ack-log", acks_arg])
        .output()
        .unwrap();
    let verified = report(&verify);
    assert_eq!(verified["entries"].as_u64().unwrap() as usize, lines);
    assert_eq!(verified["verified"].as_u64().unwrap() as usize, lines);
    assert_eq!(verified["lost"], 0);
    assert_eq!(verified["mismatched"], 0);
    assert!(server.stop().success());
}

#[test]
fn bad_arguments_exit_64_and_a_down_vault_is_a_clear_error() {
    let bin = env!("CARGO_BIN_EXE_cardvault");
    for args in [
        vec!["load", "--mix", "2", "--dev", "x"],
        vec!["load", "--op", "nonsense"],
        vec!["load", "--concurrency", "0", "--dev", "x"],
        vec!["load", "--duration", "soon"],
    ] {
        let out = Command::new(bin).args(&args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let server = common::DevServer::start(&data);
    assert!(server.stop().success());
    let out = Command::new(bin)
        .args([
            "load",
            "--duration",
            "1s",
            "--target",
            "https://127.0.0.1:1",
            "--dev",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach the vault"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn ceiling_reports_synced_batch_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cardvault"))
        .args([
            "load",
            "ceiling",
            "--group",
            "1",
            "--group",
            "16",
            "--duration",
            "200ms",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["group"], 16);
    assert!(lines[1]["puts_per_s"].as_f64().unwrap() > 0.0);
}

/// The vault dies mid-run: load still prints its report, names each error
/// in full (not cut at the first colon), and exits non-zero.
#[test]
fn a_vault_that_goes_away_mid_run_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::DevServer::start(&dir.path().join("dev"));
    let run = server.spawn_load(&[
        "--concurrency",
        "4",
        "--duration",
        "3s",
        "--warmup",
        "0s",
        "--json",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    server.child.kill().unwrap();
    let _ = server.child.wait();
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "load exited 0 after the vault died");
    assert!(stderr.contains("did the vault go away"), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = report["errors"].as_object().unwrap();
    assert!(!errors.is_empty());
    for key in errors.keys() {
        assert!(
            key.starts_with("connect") && key.len() > "connection: http".len(),
            "error label cut short: {key}"
        );
    }
}
