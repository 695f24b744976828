//! The facts an evidence bundle reads from files and the trail, each in
//! its own reader: certificates and CRLs (PEM), the API listener's TLS
//! offer (built by the same code that serves it), the audit trail's events
//! by kind, identities and key events, a card-number scan of the data and
//! audit directories, and the principals table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::config::Config;
use crate::scan::Kind;
use crate::scan::walk::{self, FileOutcome, WalkOptions};

/// Reads a PEM file's certificates: subject, SANs, validity, serial.
pub(super) fn certificates(path: &Path) -> Value {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let Ok(iter) = CertificateDer::pem_file_iter(path) else {
        return json!({"file": path.display().to_string(), "error": "unreadable"});
    };
    let certs: Vec<Value> = iter
        .filter_map(Result::ok)
        .filter_map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
            let sans: Vec<String> = cert
                .subject_alternative_name()
                .ok()
                .flatten()
                .map(|ext| {
                    ext.value
                        .general_names
                        .iter()
                        .map(|n| n.to_string())
                        .collect()
                })
                .unwrap_or_default();
            Some(json!({
                "subject": cert.subject().to_string(),
                "issuer": cert.issuer().to_string(),
                "serial": cert.raw_serial_as_string(),
                "not_before": cert.validity().not_before.to_string(),
                "not_after": cert.validity().not_after.to_string(),
                "subject_alt_names": sans,
                "is_ca": cert.is_ca(),
            }))
        })
        .collect();
    json!({"file": path.display().to_string(), "certificates": certs})
}

/// Each certificate in a PEM file: (subject, is a CA, days valid, not after).
pub(super) fn lifetimes(path: &Path) -> Vec<(String, bool, i64, String)> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let Ok(iter) = CertificateDer::pem_file_iter(path) else {
        return Vec::new();
    };
    iter.filter_map(Result::ok)
        .filter_map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
            let validity = cert.validity();
            let days = (validity.not_after.timestamp() - validity.not_before.timestamp()) / 86_400;
            Some((
                cert.subject().to_string(),
                cert.is_ca(),
                days,
                validity.not_after.to_string(),
            ))
        })
        .collect()
}

fn crls(paths: &[PathBuf]) -> Vec<Value> {
    use rustls_pki_types::CertificateRevocationListDer;
    use rustls_pki_types::pem::PemObject as _;
    paths
        .iter()
        .map(|path| {
            let lists: Vec<Value> = CertificateRevocationListDer::pem_file_iter(path)
                .map(|iter| {
                    iter.filter_map(Result::ok)
                        .filter_map(|der| {
                            let (_, crl) = x509_parser::parse_x509_crl(der.as_ref()).ok()?;
                            Some(json!({
                                "issuer": crl.issuer().to_string(),
                                "this_update": crl.last_update().to_string(),
                                "next_update": crl.next_update().map(|t| t.to_string()),
                                "revoked": crl.iter_revoked_certificates().count(),
                            }))
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({"file": path.display().to_string(), "lists": lists})
        })
        .collect()
}

/// 4.2.1: what the API listener offers, from the same code that builds it.
pub(super) fn tls_inventory(config: &Config) -> anyhow::Result<Value> {
    let server = crate::server::server_config(&config.api)
        .map_err(|e| anyhow::anyhow!("the API listener's TLS settings: {e}"))?;
    let versions: Vec<&str> = if config.api.allow_tls12 {
        vec!["TLSv1.3", "TLSv1.2"]
    } else {
        vec!["TLSv1.3"]
    };
    let suites: Vec<String> = server
        .crypto_provider()
        .cipher_suites
        .iter()
        .filter(|s| config.api.allow_tls12 || s.version() == &rustls::version::TLS13)
        .map(|s| format!("{:?}", s.suite()))
        .collect();
    let groups: Vec<String> = server
        .crypto_provider()
        .kx_groups
        .iter()
        .map(|g| format!("{:?}", g.name()))
        .collect();
    Ok(json!({
        "listen": config.api.listen.to_string(),
        "protocols": versions,
        "cipher_suites": suites,
        "key_exchange_groups": groups,
        "client_certificates": "required: every connection is mutual TLS, verified against the client CA (and the CRLs)",
        "alpn": ["h2", "http/1.1"],
        "server_certificate": certificates(&config.api.cert),
        "client_ca": certificates(&config.api.client_ca),
        "crls": crls(&config.api.crls),
    }))
}

/// 6.4.3 and 4.2.1 for the hosted card fields: the frame's scripts and
/// styles with their integrity hashes (all compiled into this build, none
/// from another origin), the frame's policy, the public listener's TLS,
/// and the sessions the trail records.
pub(super) fn hosted_fields(config: &Config, trail: &TrailFacts) -> anyhow::Result<Value> {
    let Some(collect) = &config.collect else {
        return Ok(json!({"enabled": false}));
    };
    let server = crate::server::public_server_config(collect)
        .map_err(|e| anyhow::anyhow!("the public listener's TLS settings: {e}"))?;
    let suites: Vec<String> = server
        .crypto_provider()
        .cipher_suites
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS13)
        .map(|s| format!("{:?}", s.suite()))
        .collect();
    let scripts: Vec<Value> = crate::server::collect_inventory()
        .into_iter()
        .map(|(path, integrity, bytes)| {
            json!({
                "path": path,
                "integrity": integrity,
                "bytes": bytes,
                "authorized": "compiled into this build; served only by the vault's public listener",
            })
        })
        .collect();
    let count = |kind: &str| trail.by_kind.get(kind).copied().unwrap_or(0);
    Ok(json!({
        "enabled": true,
        "listen": collect.listen.to_string(),
        "public_url": collect.public_url.clone().unwrap_or_else(|| "derived from the bound address".into()),
        "loopback_http_pages_allowed": collect.allow_loopback_http,
        "scripts": scripts,
        "frame_policy": {
            "content_security_policy": crate::server::frame_policy(),
            "other_headers": ["X-Content-Type-Options: nosniff", "Referrer-Policy: no-referrer", "Cache-Control: no-store", "Strict-Transport-Security", "Permissions-Policy (camera, microphone, geolocation, payment, usb … off)"],
            "submit": "same-origin only (Origin and Sec-Fetch-Site), with the nonce of the frame served last",
        },
        "tls": {
            "protocols": ["TLSv1.3"],
            "cipher_suites": suites,
            "client_certificates": "none: browsers connect with the server certificate only",
            "server_certificate": certificates(&collect.cert_file),
        },
        "card_testing": {
            "submits_per_ip_per_minute": collect.limits.submits_per_ip_per_minute.get(),
            "submits_per_session": collect.limits.submits_per_session.get(),
            "sessions_per_tenant_per_minute": collect.limits.sessions_per_tenant_per_minute.get(),
            "sessions_per_card_per_hour": collect.limits.sessions_per_card_per_hour.get(),
            "blocked_bins": collect.blocked_bins.len(),
        },
        "in_the_audit_trail": {
            "sessions_created": count("collect_session_created"),
            "frames_served": count("collect_frame_served"),
            "cards_submitted": count("collect_submitted"),
            "submits_refused": count("collect_refused"),
            "results_read": count("collect_result_read"),
        },
    }))
}

/// What the audit trail says: events by kind, fields, span, rotations,
/// alerts, identities seen.
pub(super) struct TrailFacts {
    pub(super) by_kind: BTreeMap<String, u64>,
    pub(super) fields: BTreeSet<String>,
    pub(super) first: Option<String>,
    pub(super) last: Option<String>,
    pub(super) rotations: Vec<Value>,
    pub(super) alerts: Vec<Value>,
    pub(super) identities: BTreeMap<(String, String), (String, String, u64)>,
    /// When the chain began (its first `audit_start`, "new chain"): the
    /// audit MAC key was made then.
    pub(super) chain_started: Option<String>,
    /// The last event of each kind: its time.
    pub(super) last_of_kind: BTreeMap<String, String>,
    /// The first event of each kind: its time.
    pub(super) first_of_kind: BTreeMap<String, String>,
    /// Payment-page checks the watcher reported (`page_checked`,
    /// `page_changed`), oldest first.
    pub(super) page_checks: Vec<Value>,
    /// Each page's latest approved baseline as a watcher reported it
    /// (`page_baseline`): page → the event.
    pub(super) page_baselines: BTreeMap<String, Value>,
    /// Admins' approvals of baselines (`page_baseline_approved`): the
    /// baseline's SHA-256 → the event.
    pub(super) page_approvals: BTreeMap<String, Value>,
}

/// The baseline digest in a `page_baseline` or `page_baseline_approved`
/// event's detail ("page P: baseline sha256 HEX…").
pub(super) fn baseline_digest(detail: &str) -> Option<&str> {
    let rest = detail.split_once("baseline sha256 ")?.1;
    rest.get(..64)
        .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
}

const KEY_EVENTS: [&str; 8] = [
    "key_created",
    "key_rotated",
    "key_destroyed",
    "kek_rotated",
    "reencrypt",
    "tenant_shredded",
    "evidence_key_created",
    "evidence_key_rotated",
];

pub(super) fn read_trail(dir: &Path) -> anyhow::Result<TrailFacts> {
    let mut facts = TrailFacts {
        by_kind: BTreeMap::new(),
        fields: BTreeSet::new(),
        first: None,
        last: None,
        rotations: Vec::new(),
        alerts: Vec::new(),
        identities: BTreeMap::new(),
        chain_started: None,
        last_of_kind: BTreeMap::new(),
        first_of_kind: BTreeMap::new(),
        page_checks: Vec::new(),
        page_baselines: BTreeMap::new(),
        page_approvals: BTreeMap::new(),
    };
    let segments = crate::audit::segments(dir).context("listing the audit trail")?;
    for (_, path) in segments {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for line in text.lines() {
            let Ok(event) = serde_json::from_str::<serde_json::Map<String, Value>>(line) else {
                continue;
            };
            let kind = event
                .get("event")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned();
            let ts = event
                .get("ts")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            facts.fields.extend(event.keys().cloned());
            *facts.by_kind.entry(kind.clone()).or_default() += 1;
            if facts.first.is_none() {
                facts.first = Some(ts.clone());
            }
            facts.last = Some(ts.clone());
            facts.last_of_kind.insert(kind.clone(), ts.clone());
            facts
                .first_of_kind
                .entry(kind.clone())
                .or_insert_with(|| ts.clone());
            if kind == "audit_start"
                && facts.chain_started.is_none()
                && event
                    .get("detail")
                    .and_then(Value::as_str)
                    .is_some_and(|d| d.starts_with("new chain"))
            {
                facts.chain_started = Some(ts.clone());
            }
            let pick = |fields: &[&str]| -> Value {
                let mut out = serde_json::Map::new();
                for f in fields {
                    if let Some(v) = event.get(*f) {
                        out.insert((*f).to_owned(), v.clone());
                    }
                }
                Value::Object(out)
            };
            if KEY_EVENTS.contains(&kind.as_str()) {
                facts.rotations.push(pick(&[
                    "seq",
                    "ts",
                    "event",
                    "outcome",
                    "tenant",
                    "principal",
                    "detail",
                ]));
            }
            if kind == "page_checked" || kind == "page_changed" {
                facts.page_checks.push(pick(&[
                    "seq",
                    "ts",
                    "event",
                    "principal",
                    "count",
                    "detail",
                ]));
            }
            if kind == "page_baseline"
                && let Some(page) = event
                    .get("detail")
                    .and_then(Value::as_str)
                    .and_then(|d| d.strip_prefix("page "))
                    .and_then(|d| d.split_once(':'))
                    .map(|(page, _)| page.to_owned())
            {
                facts
                    .page_baselines
                    .insert(page, pick(&["seq", "ts", "principal", "count", "detail"]));
            }
            if kind == "page_baseline_approved"
                && event.get("outcome").and_then(Value::as_str) == Some("success")
                && let Some(digest) = event
                    .get("detail")
                    .and_then(Value::as_str)
                    .and_then(baseline_digest)
            {
                facts.page_approvals.insert(
                    digest.to_owned(),
                    pick(&["seq", "ts", "principal", "detail"]),
                );
            }
            if kind == "alert" || kind == "alert_cleared" {
                facts.alerts.push(pick(&[
                    "seq",
                    "ts",
                    "event",
                    "principal",
                    "tenant",
                    "detail",
                ]));
            }
            if let (Some(principal), Some(serial)) = (
                event.get("principal").and_then(Value::as_str),
                event.get("cert_serial").and_then(Value::as_str),
            ) {
                let entry = facts
                    .identities
                    .entry((principal.to_owned(), serial.to_owned()))
                    .or_insert_with(|| (ts.clone(), ts.clone(), 0));
                entry.1 = ts.clone();
                entry.2 += 1;
            }
        }
    }
    Ok(facts)
}

/// Scans `dirs` (binary files too: RocksDB's files are binary) for card
/// numbers; only counts leave this function.
pub(super) fn scan_dirs(dirs: &[PathBuf]) -> Value {
    let options = WalkOptions {
        max_file_size: u64::MAX,
        include_binary: true,
        exclude: Vec::new(),
    };
    let (mut files, mut bytes, mut pans, mut tokens) = (0u64, 0u64, 0u64, 0u64);
    let mut errors = Vec::new();
    let mut walk_errors = Vec::new();
    let mut with_pans = BTreeSet::new();
    let no_excludes = walk::exclude_set(&[]).unwrap_or_default();
    walk::walk(
        dirs,
        &no_excludes,
        |path| {
            let mut here = 0;
            match walk::scan_file(path, &options, |at| match at.finding.kind {
                Kind::Pan => here += 1,
                Kind::Token => tokens += 1,
            }) {
                FileOutcome::Scanned(done) => {
                    files += 1;
                    bytes += done.bytes;
                }
                FileOutcome::Skipped(_) => {}
                FileOutcome::Failed(why) => errors.push(format!("{}: {why}", path.display())),
            }
            if here > 0 {
                pans += here;
                with_pans.insert(path.display().to_string());
            }
        },
        |path, why| walk_errors.push(format!("{}: {why}", path.display())),
    );
    errors.extend(walk_errors);
    json!({
        "scanned": dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>(),
        "files": files,
        "bytes": bytes,
        "card_numbers_found": pans,
        "files_with_card_numbers": with_pans,
        "token_shaped_values": tokens,
        "errors": errors,
        "method": "cardvault scan's detector (IIN ranges, issued lengths, Luhn) over every file, binary files included",
    })
}

pub(super) fn principals(config: &Config) -> Value {
    config
        .principals
        .iter()
        .map(|(name, p)| {
            json!({
                "name": name,
                "tenant": p.tenant.to_string(),
                "roles": p.roles,
                "scope": p.scope,
                "require_reason": p.require_reason,
                "detokenize_hours_utc": p.detokenize_hours_utc,
            })
        })
        .collect()
}

/// Client certificates a dev directory issued (`pki/NAME.pem`).
pub(super) fn dev_client_certificates(pki: Option<&Path>) -> Vec<Value> {
    let Some(pki) = pki else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(pki) else {
        return Vec::new();
    };
    let mut names: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.ends_with(".pem")
                && !name.ends_with("-key.pem")
                && !matches!(name.as_str(), "ca.pem" | "server.pem")
                && !name.starts_with("crl")
        })
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|p| {
            let file = p.display().to_string();
            certificates(p)["certificates"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |mut cert| {
                    cert["file"] = Value::String(file.clone());
                    cert
                })
        })
        .collect()
}
