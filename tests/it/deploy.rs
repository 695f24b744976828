//! The deploy files stay true: the example config parses into the real
//! config type (every field it documents exists), and the systemd unit
//! scores 2.0 or lower on `systemd-analyze security` where that tool exists.

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

#[test]
fn systemd_unit_scores_two_or_lower() {
    let Ok(out) = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(deploy("systemd/cardvault.service"))
        .output()
    else {
        eprintln!("systemd-analyze not installed; skipping the unit's security score");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for cardvault.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in {text}"));
    assert!(score <= 2.0, "exposure {score}:\n{text}");
}

/// The Kubernetes manifest defines what it references (the ConfigMap and
/// Secret it mounts), carries a scrape annotation, lets DNS out, and its
/// embedded config parses into the real config type.
#[test]
fn kubernetes_manifest_defines_what_it_mounts() {
    let text = std::fs::read_to_string(deploy("kubernetes/cardvault.yaml")).unwrap();
    for needle in [
        "kind: ConfigMap\nmetadata:\n  name: cardvault-config",
        "kind: Secret\nmetadata:\n  name: cardvault-secrets",
        "configMap: { name: cardvault-config }",
        "secretName: cardvault-secrets",
        "prometheus.io/scrape: \"true\"",
        "port: 53, protocol: UDP",
    ] {
        assert!(text.contains(needle), "manifest lacks {needle:?}");
    }
    // The config block: the lines indented under `cardvault.toml: |`.
    let block: String = text
        .split("cardvault.toml: |\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect();
    let config: Config = Figment::from(Toml::string(&block)).extract().unwrap();
    assert_eq!(config.principals.len(), 2);
    assert_eq!(config.log.format, cardvault::config::LogFormat::Json);
    assert_eq!(config.ops.drain_delay.as_millis(), 5000);
}
