//! The vault's own keys for the 3.6.1.1 inventory, beside the tenants'
//! data and fingerprint keys: the KEK, the audit MAC key, the evidence key,
//! the TLS server key(s) and the client CA — each with where it lives, what
//! protects it, when it was made and changed, and who holds it. Every
//! value says where it comes from: a file's stat, the audit trail, a
//! certificate, or the config (declared).

use std::path::Path;

use serde_json::{Value, json};

use super::facts::{TrailFacts, certificates};
use crate::config::{Config, KekSource};

/// A file's mode and modification time, measured.
fn stat(path: &Path) -> Value {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::metadata(path) {
        Ok(meta) => json!({
            "file": path.display().to_string(),
            "mode": format!("{:04o}", meta.permissions().mode() & 0o7777),
            "modified": meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| crate::clock::rfc3339(d.as_millis() as u64)),
            "source": "measured: stat of the file",
        }),
        Err(e) => json!({"file": path.display().to_string(), "error": e.to_string()}),
    }
}

/// The custodians `[custodians]` names for `key`, declared.
fn custodians(config: &Config, key: &str) -> Value {
    match config.custodians.get(key) {
        Some(names) => json!({"names": names, "source": "declared: [custodians] in the config"}),
        None => json!({"names": [], "source": "not declared: add [custodians] to the config"}),
    }
}

/// When an event of `kind` first and last happened, from the trail.
fn trail_dates<'a>(trail: &'a TrailFacts, kind: &str) -> (Option<&'a String>, Option<&'a String>) {
    (trail.first_of_kind.get(kind), trail.last_of_kind.get(kind))
}

/// The vault's own keys.
pub(super) fn vault_keys(
    config: &Config,
    kek_description: &str,
    trail: &TrailFacts,
    dev_pki: Option<&Path>,
) -> Vec<Value> {
    let audit_dir = &config.audit.dir;
    let mut keys = Vec::new();
    let kek_location = match config.kek() {
        Ok(KekSource::File(path)) => json!({"kind": "key file", "stat": stat(&path)}),
        Ok(KekSource::Pkcs11 {
            token_label,
            key_label,
            module,
            ..
        }) => json!({
            "kind": "PKCS#11 token",
            "token": token_label,
            "key_label": key_label,
            "module": module.display().to_string(),
            "note": "made sensitive and not extractable (`keys init --pkcs11`); never in the vault's memory",
        }),
        Ok(KekSource::Shamir(set_file)) => json!({
            "kind": "split among custodians (Shamir)",
            "set_file": stat(&set_file),
            "note": "never stored whole: rebuilt in memory from the custodians' shares at each unseal",
        }),
        Err(e) => json!({"error": e.to_string()}),
    };
    let (_, kek_rotated) = trail_dates(trail, "kek_rotated");
    keys.push(json!({
        "key": "kek",
        "purpose": "wraps every other key (key-encrypting key)",
        "algorithm": "AES-256 (key wrap by AES-256-GCM)",
        "provider": kek_description,
        "location": kek_location,
        "created": "not recorded by the vault (made by `cardvault keys init`, before the vault's first start)",
        "last_rotated": kek_rotated,
        "last_rotated_source": "measured: the last kek_rotated event in the trail",
        "custodians": custodians(config, "kek"),
    }));
    keys.push(json!({
        "key": "audit-mac",
        "purpose": "HMAC-SHA-256 chain over the audit trail",
        "algorithm": "HMAC-SHA-256, 256-bit key",
        "location": stat(&audit_dir.join("audit.key")),
        "protected_by": "wrapped by the KEK (label _system / audit-mac)",
        "created": trail.chain_started,
        "created_source": "measured: the trail's first audit_start (\"new chain\")",
        "changed": "follows KEK rotations (rewrapped, the key itself unchanged)",
        "custodians": custodians(config, "audit-mac"),
    }));
    let (evidence_created, _) = trail_dates(trail, "evidence_key_created");
    keys.push(json!({
        "key": "evidence-signing",
        "purpose": "Ed25519 signatures of audit checkpoints and evidence bundles",
        "algorithm": "Ed25519",
        "location": stat(&audit_dir.join("evidence.key")),
        "public_key_file": config.audit.public_key_file.as_deref().map(stat),
        "protected_by": "wrapped by the KEK (label _system / evidence-signing)",
        "created": evidence_created,
        "created_source": "measured: the evidence_key_created event in the trail",
        "custodians": custodians(config, "evidence-signing"),
    }));
    let mut tls_keys = vec![("api", &config.api.key, &config.api.cert)];
    if let Some(collect) = &config.collect
        && collect.key_file != config.api.key
    {
        tls_keys.push(("collect", &collect.key_file, &collect.cert_file));
    }
    for (listener, key, cert) in tls_keys {
        keys.push(json!({
            "key": "tls-server",
            "listener": listener,
            "purpose": "the listener's TLS server identity",
            "location": stat(key),
            "certificate": certificates(cert),
            "created_source": "measured: the certificate's validity dates",
            "custodians": custodians(config, "tls-server"),
        }));
    }
    let ca_key = dev_pki.map(|pki| pki.join("ca-key.pem"));
    keys.push(json!({
        "key": "ca",
        "purpose": "signs the client certificates the API accepts",
        "certificate": certificates(&config.api.client_ca),
        "private_key": match &ca_key {
            Some(path) => stat(path),
            None => json!({"location": "not on this host (the vault needs only the CA certificate)", "source": "declared"}),
        },
        "custodians": custodians(config, "ca"),
    }));
    keys
}
