//! What the bundle flags against a requirement: a development vault, a
//! KEK file on the data's filesystem, long-lived certificates, no CRL,
//! one principal that can both tokenize and detokenize, single-person
//! vault-wide key operations, a trail without checkpoints or off-host
//! copy. Each finding names its requirement and how it was established
//! (measured, or declared by the config).

use std::path::Path;

use serde_json::{Value, json};

use super::facts::lifetimes;
use crate::config::{Config, KekSource, Role};

/// Certificates valid longer than this are flagged (13 months).
const MAX_CERT_DAYS: i64 = 397;

fn finding(requirement: &str, finding: String, source: &str) -> Value {
    json!({"requirement": requirement, "finding": finding, "source": source})
}

/// The device a path's file system is on.
fn device(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| m.dev())
}

/// Every finding for the vault of `config`.
pub(super) fn findings(config: &Config, development: bool, dev_pki: Option<&Path>) -> Vec<Value> {
    let mut found = Vec::new();
    if development {
        found.push(finding(
            "all",
            "a development vault (`serve --dev`): development keys and PKI, the KEK beside the data; not evidence for an assessment".into(),
            "measured: the bundle was made from a dev directory",
        ));
    }
    if let Ok(KekSource::File(path)) = config.kek()
        && device(&path).is_some()
        && device(&path) == device(&config.storage.data_dir)
    {
        found.push(finding(
            "3.6.1.2",
            format!(
                "the KEK is a file ({}) on the same file system as the data it protects; keep key-encrypting keys apart from the data-encrypting keys: an HSM ([kek] provider = \"pkcs11\") or custodian shares (\"shamir\")",
                path.display()
            ),
            "measured: stat of the key file and the data directory (same device)",
        ));
    }
    let dual = config.keys.dual_control;
    for (on, what) in [
        (dual.kek_rotation, "a KEK rotation"),
        (dual.seal, "sealing the vault"),
        (dual.evidence_key_rotation, "an evidence-key rotation"),
    ] {
        if !on {
            found.push(finding(
                "3.6.1.2 / 3.7.6",
                format!("{what} needs one admin only ([keys.dual_control]); split knowledge and dual control ask for two"),
                "declared: the config",
            ));
        }
    }
    let mut certs = vec![config.api.cert.clone()];
    if let Some(collect) = &config.collect {
        certs.push(collect.cert_file.clone());
    }
    if let Some(pki) = dev_pki
        && let Ok(entries) = std::fs::read_dir(pki)
    {
        let mut clients: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                name.is_some_and(|n| {
                    n.ends_with(".pem") && !n.ends_with("-key.pem") && !n.starts_with("crl")
                })
            })
            .collect();
        clients.sort();
        certs.extend(clients);
    }
    certs.dedup();
    for path in &certs {
        for (subject, is_ca, days, not_after) in lifetimes(path) {
            if !is_ca && days > MAX_CERT_DAYS {
                found.push(finding(
                    "4.2.1",
                    format!(
                        "certificate {subject} ({}) is valid for {days} days, over 13 months (until {not_after})",
                        path.display()
                    ),
                    "measured: the certificate's validity dates",
                ));
            }
        }
    }
    if config.api.crls.is_empty() {
        found.push(finding(
            "4.2.1 / 8.2.5",
            "no certificate revocation list is configured ([api] crls): a client certificate cannot be revoked before it expires".into(),
            "declared: the config",
        ));
    }
    for (name, principal) in &config.principals {
        if principal.roles.contains(&Role::Tokenize) && principal.roles.contains(&Role::Detokenize)
        {
            found.push(finding(
                "7.2.2 / 3.4.1",
                format!("principal {name} holds both tokenize and detokenize: one identity can both put card numbers in and take them out"),
                "declared: the config's principals",
            ));
        }
    }
    match &config.audit.checkpoint_dir {
        None => found.push(finding(
            "10.3.2 / 10.3.3",
            "no signed checkpoints of the audit trail ([audit] checkpoint_dir): entries cut from its end would leave no trace".into(),
            "declared: the config",
        )),
        Some(dir)
            if device(dir).is_some() && device(dir) == device(&config.audit.dir) =>
        {
            found.push(finding(
                "10.3.3",
                format!(
                    "the checkpoint directory {} is on the trail's own file system: whoever can cut the trail can cut its checkpoints; mount it from another host",
                    dir.display()
                ),
                "measured: stat of both directories (same device)",
            ));
        }
        Some(_) => {}
    }
    let audit = &config.audit;
    match (&audit.syslog_tls, &audit.syslog_tcp, &audit.syslog_unix) {
        (None, Some(target), _) => found.push(finding(
            "10.3.3 / 4.2.1",
            format!("the syslog mirror to {target} is plain TCP: entries can be read or changed on the way (use syslog_tls)"),
            "declared: the config",
        )),
        (Some(_), ..) | (None, None, Some(_)) => {}
        (None, None, None) => found.push(finding(
            "10.3.3",
            "no syslog mirror: the trail has no off-host copy but its checkpoints".into(),
            "declared: the config",
        )),
    }
    found
}
