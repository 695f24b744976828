//! The deploy files stay true: the example config parses into the real
//! config type (every field it documents exists), and the systemd unit
//! scores 2.0 or lower on `systemd-analyze security` where that tool exists,
//! and the Prometheus rules and Grafana dashboard query real metrics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use cardvault::config::Config;
use figment::Figment;
use figment::providers::{Format, Toml};

fn deploy(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

/// The watcher's unit keeps the vault's directories out of its reach and,
/// with no browser inside it, scores 2.0 or lower; the browser's unit
/// (Chromium needs W^X off and user namespaces for its own sandbox) runs
/// as a user of its own that cannot reach the watcher's files, at 4.5 or
/// lower.
#[test]
fn the_watch_units_keep_the_browser_from_the_watcher_and_the_vault() {
    let unit = std::fs::read_to_string(deploy("systemd/cardvault-watch.service")).unwrap();
    assert!(unit.contains("InaccessiblePaths=-/var/lib/cardvault -/etc/cardvault"));
    assert!(unit.contains("User=cardvault-watch"));
    assert!(unit.contains("Requires=cardvault-watch-browser.service"));
    assert!(unit.contains("MemoryDenyWriteExecute=yes"));
    let browser =
        std::fs::read_to_string(deploy("systemd/cardvault-watch-browser.service")).unwrap();
    assert!(browser.contains("DynamicUser=yes"));
    assert!(browser.contains(
        "InaccessiblePaths=-/etc/cardvault-watch -/var/lib/cardvault-watch -/var/lib/cardvault -/etc/cardvault"
    ));
    let example = std::fs::read_to_string(deploy("config/watch.example.toml")).unwrap();
    assert!(example.contains("webdriver = \"http://127.0.0.1:9515\""));
    let (Some(watcher), Some(browser)) = (
        exposure("cardvault-watch.service"),
        exposure("cardvault-watch-browser.service"),
    ) else {
        return;
    };
    assert!(watcher <= 2.0, "watcher exposure {watcher}");
    assert!(browser <= 4.5, "browser exposure {browser}");
}

#[test]
fn example_config_parses_with_every_section() {
    let config: Config = Figment::from(Toml::file(deploy("config/cardvault.example.toml")))
        .extract()
        .unwrap();
    assert_eq!(config.principals.len(), 3);
    assert!(config.alerts.block_detokenize_on_alert);
    assert_eq!(config.limits.detokenize_rate.per_second.get(), 50_000);
    assert!(config.audit.syslog_unix.is_some());
    // A setting that would turn client-certificate checks off does not exist.
    let text = std::fs::read_to_string(deploy("config/cardvault.example.toml")).unwrap();
    let disabled = text.replacen("[api]\n", "[api]\nrequire_client_cert = false\n", 1);
    let err = Figment::from(Toml::string(&disabled))
        .extract::<Config>()
        .unwrap_err();
    assert!(err.to_string().contains("require_client_cert"), "{err}");
}

/// `systemd-analyze security` of `deploy/systemd/UNIT`: its exposure
/// score, or `None` (said) where the tool is missing.
fn exposure(unit: &str) -> Option<f64> {
    let Ok(out) = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(deploy(&format!("systemd/{unit}")))
        .output()
    else {
        eprintln!("systemd-analyze not installed; skipping {unit}'s security score");
        return None;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let score = text
        .lines()
        .find_map(|l| l.split(&format!("exposure level for {unit}:")).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in {text}"));
    Some(score)
}

/// The vault's unit: notify from the main process only (each setting
/// once: a later `NotifyAccess=none` would silence READY=1 and systemd
/// would kill every start), a config error (exit 64) not restarted, and a
/// start timeout the vault can extend.
#[test]
fn the_vault_unit_keeps_its_notify_and_restart_settings() {
    let unit = std::fs::read_to_string(deploy("systemd/cardvault.service")).unwrap();
    let settings: Vec<&str> = unit
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    let once = |key: &str| {
        let found: Vec<&&str> = settings
            .iter()
            .filter(|l| l.starts_with(&format!("{key}=")))
            .collect();
        assert_eq!(found.len(), 1, "{key}: {found:?}");
        found[0].split_once('=').unwrap().1.to_owned()
    };
    assert_eq!(once("Type"), "notify");
    assert_eq!(once("NotifyAccess"), "main");
    assert_eq!(once("RestartPreventExitStatus"), "64");
    assert_eq!(once("TimeoutStartSec"), "90s");
}

#[test]
fn systemd_unit_scores_two_or_lower() {
    let Some(score) = exposure("cardvault.service") else {
        return;
    };
    assert!(score <= 2.0, "exposure {score}");
}

/// Every `cardvault_…` metric name in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("cardvault_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end] == b'_'
                || bytes[end].is_ascii_digit())
        {
            end += 1;
        }
        let name = &text[start..end];
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(name.to_owned());
        i = end;
    }
    names
}

/// Every alert rule has a `runbook_url` whose section exists in
/// docs/runbook.md, and fires in at least one promtool unit test (the
/// tests also show each quiet before its `for:` and after its window).
#[test]
fn every_alert_has_a_runbook_section_and_a_test_that_fires_it() {
    let rules = std::fs::read_to_string(deploy("prometheus/cardvault-rules.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy("prometheus/cardvault-rules.test.yml")).unwrap();
    let runbook =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/runbook.md"))
            .unwrap();
    let anchors: std::collections::BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    let lines: Vec<&str> = rules.lines().map(str::trim).collect();
    let mut alerts = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.strip_prefix("- alert: ") else {
            continue;
        };
        alerts.push(name.to_owned());
        let url = lines[i..]
            .iter()
            .skip(1)
            .take_while(|l| !l.starts_with("- alert: "))
            .find_map(|l| l.strip_prefix("runbook_url: "))
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        let anchor = url
            .trim_matches('"')
            .strip_prefix("docs/runbook.md#")
            .unwrap();
        assert_eq!(anchor, name.to_lowercase(), "{name}: {url}");
        assert!(
            anchors.contains(anchor),
            "docs/runbook.md has no section {name}"
        );
    }
    assert!(alerts.len() >= 29, "{alerts:?}");
    let test_lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for name in &alerts {
        let fires = test_lines.windows(3).any(|w| {
            w[0] == format!("alertname: {name}")
                && w[1] == "exp_alerts:"
                && w[2].starts_with("- exp_labels:")
        });
        assert!(fires, "no promtool test makes {name} fire");
    }
}

/// The Prometheus rules pass `promtool check rules` and their unit tests
/// (`promtool test rules`), and they and the
/// Grafana dashboard query only metrics the vault exports: each name is on
/// a live vault's /metrics page or described in `server/metrics.rs` (the
/// labelled series appear with their first event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_rules_and_grafana_dashboard_use_real_metrics() {
    let rules = deploy("prometheus/cardvault-rules.yml");
    match Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => eprintln!("promtool not installed: `promtool check rules` skipped"),
    }
    // The rules' own unit tests (the alerts fire and clear as meant).
    match Command::new("promtool")
        .args(["test", "rules"])
        .arg(deploy("prometheus/cardvault-rules.test.yml"))
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool test rules: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => eprintln!("promtool not installed: `promtool test rules` skipped"),
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/cardvault.json")).unwrap())
            .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 6);
    // What an operator looks at first: up, ready/sealed, the error ratio and
    // latency against their objectives, the version running.
    let titled = |t: &str| {
        panels
            .iter()
            .find(|p| p["title"].as_str().unwrap().starts_with(t))
            .unwrap_or_else(|| panic!("no panel {t}"))
    };
    for t in [
        "Up",
        "Ready / sealed",
        "5xx ratio",
        "Version",
        "p99 latency by route",
    ] {
        let _ = titled(t);
    }
    let steps = &titled("p99 latency by route")["fieldConfig"]["defaults"]["thresholds"]["steps"];
    assert_eq!(steps[1]["value"], 0.25, "the latency objective drawn");
    assert!(
        titled("p99 latency by route")["targets"][0]["expr"]
            .as_str()
            .unwrap()
            .contains("by (route, le)"),
        "latency per route, not summed over routes"
    );
    let mut queries = String::new();
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            queries.push_str(target["expr"].as_str().unwrap());
            queries.push('\n');
        }
    }
    queries.push_str(
        dashboard["templating"]["list"][1]["query"]
            .as_str()
            .unwrap(),
    );
    let harness = crate::common::harness::Harness::new();
    let service = harness.start().await;
    let mut payments = harness.connect("payments", service.api_addr).await;
    let token = crate::common::tokenize(&mut payments, "4111111111111111").await;
    payments
        .post_json("/v1/detokenize", &serde_json::json!({ "token": token }))
        .await
        .unwrap();
    drop(payments);
    let (_, page) = crate::common::harness::ops_get(service.ops_addr, "/metrics").await;
    service.stop().await.unwrap();
    let described = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server/metrics.rs"),
    )
    .unwrap();
    let exported: std::collections::BTreeSet<String> = metric_names(&page)
        .union(&metric_names(&described))
        .cloned()
        .collect();
    for (what, text) in [
        ("rules", std::fs::read_to_string(&rules).unwrap()),
        ("dashboard", queries),
    ] {
        let used = metric_names(&text);
        assert!(!used.is_empty());
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{what} query metrics the vault does not export: {unknown:?}"
        );
    }
    assert!(
        page.contains("cardvault_tls_certificate_not_after_seconds{certificate=\"server\"}"),
        "{page}"
    );
    assert!(page.contains("cardvault_build_info{version="), "{page}");
}
