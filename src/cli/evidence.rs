//! `cardvault evidence (--config FILE | --dev DIR) --out DIR`: a signed
//! bundle for a PCI DSS v4.0.1 assessor, built from the vault's own
//! configuration, key store, audit trail and files — facts, not promises —
//! as `evidence.json` and a readable `evidence.md`, signed in
//! `signature.json` ([`crate::evidence`]). `cardvault evidence verify DIR`
//! detects any edit: exit 0 intact, 1 changed or signed by another key,
//! 2 unreadable.
//!
//! The vault must be stopped (the bundle reads the store in-process; a
//! running vault holds its directories and this exits 75). The bundle holds
//! no PAN and no key material: the data and audit directories are scanned
//! for card numbers and only the counts go in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::error::{CliError, CliResult};
use super::offline::{VaultLocation, dev_config, offline_provider};
use crate::config::Config;
use crate::evidence::{self, EvidenceError, Signer};
use crate::scan::Kind;
use crate::scan::walk::{self, FileOutcome, WalkOptions};

/// Arguments of `evidence`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvidenceArgs {
    /// `verify`: check a bundle instead of making one.
    #[command(subcommand)]
    command: Option<EvidenceCommand>,
    /// The vault (stopped).
    #[command(flatten)]
    location: VaultLocation,
    /// Directory to write the bundle into (created; must be empty).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// A RustSec advisory database for the 6.3.3 answer (default: the
    /// config's `[supply_chain] advisory_db`).
    #[arg(long, value_name = "DIR")]
    advisory_db: Option<PathBuf>,
}

/// Subcommands of `evidence`.
#[derive(Debug, Subcommand)]
enum EvidenceCommand {
    /// Verify a bundle: the signature and every file. Exit 0 intact, 1
    /// changed (naming what) or signed by another key, 2 unreadable.
    Verify {
        /// The bundle directory.
        dir: PathBuf,
        /// The signer's public key (hex) to pin; printed by `evidence`.
        #[arg(long, conflicts_with_all = ["config", "dev"])]
        public_key: Option<String>,
        /// Pin the key of the vault of this config file.
        #[arg(long, conflicts_with = "dev")]
        config: Option<PathBuf>,
        /// Pin the key of this `serve --dev` directory's vault.
        #[arg(long)]
        dev: Option<PathBuf>,
    },
}

/// Runs `evidence` or `evidence verify`.
pub async fn run(args: EvidenceArgs) -> CliResult {
    match args.command {
        Some(EvidenceCommand::Verify {
            dir,
            public_key,
            config,
            dev,
        }) => verify(&dir, public_key, config, dev),
        None => {
            let out = args
                .out
                .clone()
                .ok_or_else(|| CliError::Usage("evidence needs --out DIR".into()))?;
            collect(&args, &out).await
        }
    }
}

/// The config of the vault at `location` (a dev directory's own file).
fn config_of(location: &VaultLocation) -> Result<Config, CliError> {
    let path = location
        .config
        .clone()
        .or_else(|| dev_config(&location.data_dir))
        .ok_or_else(|| {
            CliError::Usage(format!(
                "no vault config: give --config FILE, or --dev DIR of a `serve --dev` directory ({} has no cardvault.toml)",
                location.data_dir.display()
            ))
        })?;
    Ok(Config::load(&path)?)
}

/// The signer of the vault whose config this is.
fn signer_of(config: &Config) -> Result<Signer, CliError> {
    let provider = offline_provider(&config.kek()?)?;
    let audit_key = crate::audit::key::read(&config.audit.dir, provider.as_ref())
        .context("reading the audit key")?
        .ok_or_else(|| {
            CliError::Unreadable(format!(
                "no audit key in {}: the vault has never run",
                config.audit.dir.display()
            ))
        })?;
    Signer::derive(&audit_key.key).map_err(|e| CliError::Failed(e.into()))
}

fn verify(
    dir: &Path,
    public_key: Option<String>,
    config: Option<PathBuf>,
    dev: Option<PathBuf>,
) -> CliResult {
    let pinned = match (public_key, config, dev) {
        (Some(key), ..) => Some(key),
        (None, Some(config), _) => Some(signer_of(&Config::load(&config)?)?.public_key()),
        (None, None, Some(dir)) => Some(
            signer_of(&config_of(&VaultLocation {
                config: None,
                data_dir: dir,
            })?)?
            .public_key(),
        ),
        (None, None, None) => None,
    };
    match evidence::verify_dir(dir, pinned.as_deref()) {
        Ok(manifest) => {
            say!(
                "evidence bundle intact: {} files signed {} by key {}{}",
                manifest.files.len(),
                manifest.created,
                manifest.key_id,
                if pinned.is_some() {
                    " (the expected key)"
                } else {
                    " (not pinned: give --public-key, --config or --dev to check the signer)"
                }
            );
            Ok(())
        }
        Err(EvidenceError::Io(why)) => Err(CliError::Unreadable(why)),
        Err(e) => Err(CliError::Answer(e.to_string())),
    }
}

/// Reads a PEM file's certificates: subject, SANs, validity, serial.
fn certificates(path: &Path) -> Value {
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
fn tls_inventory(config: &Config) -> Result<Value, CliError> {
    let server = crate::server::tls::server_config(&config.api)
        .map_err(|e| CliError::Failed(anyhow::anyhow!("{e}")))?;
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

/// What the audit trail says: events by kind, fields, span, rotations,
/// alerts, identities seen.
struct TrailFacts {
    by_kind: BTreeMap<String, u64>,
    fields: BTreeSet<String>,
    first: Option<String>,
    last: Option<String>,
    rotations: Vec<Value>,
    alerts: Vec<Value>,
    identities: BTreeMap<(String, String), (String, String, u64)>,
}

const KEY_EVENTS: [&str; 6] = [
    "key_created",
    "key_rotated",
    "key_destroyed",
    "kek_rotated",
    "reencrypt",
    "tenant_shredded",
];

fn read_trail(dir: &Path) -> Result<TrailFacts, CliError> {
    let mut facts = TrailFacts {
        by_kind: BTreeMap::new(),
        fields: BTreeSet::new(),
        first: None,
        last: None,
        rotations: Vec::new(),
        alerts: Vec::new(),
        identities: BTreeMap::new(),
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
fn scan_dirs(dirs: &[PathBuf]) -> Value {
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

fn principals(config: &Config) -> Value {
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
fn dev_client_certificates(location: &VaultLocation) -> Vec<Value> {
    if location.config.is_some() {
        return Vec::new();
    }
    let pki = location.data_dir.join("pki");
    let Ok(entries) = std::fs::read_dir(&pki) else {
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

fn section(id: &str, title: &str, facts: Value) -> Value {
    json!({"requirement": id, "title": title, "facts": facts})
}

async fn collect(args: &EvidenceArgs, out: &Path) -> CliResult {
    if out.exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(CliError::Usage(format!(
            "--out {} exists and is not empty",
            out.display()
        )));
    }
    let config = config_of(&args.location)?;
    let signer = signer_of(&config)?;
    let created = crate::server::response::created_at(now_ms());

    // The store, in-process (the vault must be stopped).
    let offline = args.location.open()?;
    let inventory = offline
        .vault
        .inventory(true, 4096)
        .await
        .context("reading the key inventory")?;
    let kek = offline.vault.describe_kek();
    offline.close().await?;

    let keys: Vec<Value> = inventory
        .iter()
        .map(|k| {
            serde_json::to_value(crate::server::keys::InventoryEntry::of(
                k.clone(),
                &config.keys,
            ))
            .unwrap_or(Value::Null)
        })
        .collect();
    let mut tokens_per_tenant: BTreeMap<String, u64> = BTreeMap::new();
    for k in &inventory {
        if let Some(records) = k.records {
            *tokens_per_tenant
                .entry(k.label.tenant.to_string())
                .or_default() += records;
        }
    }

    let provider = offline_provider(&config.kek()?)?;
    let verdict = crate::audit::verify(&config.audit.dir, provider.as_ref(), true)
        .context("verifying the audit trail")?;
    let trail = read_trail(&config.audit.dir)?;
    let advisory_db = args
        .advisory_db
        .clone()
        .or_else(|| config.supply_chain.advisory_db.clone());
    // Read once: from the binary itself when it carries cargo-auditable data.
    let dependencies = crate::supply_chain::dependencies();
    let vulnerabilities = match (&advisory_db, &dependencies) {
        (Some(db), Err(e)) => json!({"database": db.display().to_string(), "error": e.to_string()}),
        (Some(db), Ok(deps)) => match crate::supply_chain::known_vulnerabilities(db, deps) {
            Ok(found) => json!({
                "database": db.display().to_string(),
                "latest_secure_version": if found.is_empty() { "yes" } else { "no" },
                "advisories": found,
            }),
            Err(e) => json!({"database": db.display().to_string(), "error": e.to_string()}),
        },
        (None, _) => {
            json!({"database": null, "latest_secure_version": "not checked: no advisory database given (--advisory-db or [supply_chain] advisory_db)"})
        }
    };
    let deleters: Vec<&String> = config
        .principals
        .iter()
        .filter(|(_, p)| p.roles.contains(&crate::config::Role::Delete))
        .map(|(n, _)| n)
        .collect();
    let revealers: Vec<&String> = config
        .principals
        .iter()
        .filter(|(_, p)| p.roles.contains(&crate::config::Role::Detokenize))
        .map(|(n, _)| n)
        .collect();

    let sections = vec![
        section(
            "3.2.1",
            "Account data storage is kept to a minimum (retention)",
            json!({
                "tokens_per_tenant": tokens_per_tenant,
                "token_expiry": "a token made with ttl_s (1 s to ten years) answers 404 after its expiry and its record is deleted by a sweep every second; a token without ttl_s is kept until it is deleted (DELETE /v1/tokens/{token}) or its tenant is crypto-shredded",
                "principals_allowed_to_delete": deleters,
                "tenant_crypto_shred": format!("DELETE /v1/admin/tenants/{{tenant}}, approved by a second admin within {} s", config.keys.approval_ttl_s),
                "security_codes": format!("held in memory only, for at most {} s, never written to disk; lost on restart", config.cvc.max_ttl_s),
            }),
        ),
        section(
            "3.3.1",
            "Sensitive authentication data is not stored",
            json!({
                "refused_request_fields": crate::peer::body::SENSITIVE_FIELDS,
                "refusal": "a request naming any of these fields (or one containing them) is refused with 400 before it is parsed further",
                "stored_schema": {
                    "engine": "RocksDB",
                    "column_families": {
                        "tokens": "token → entry: flags, brand, BIN/last 4 (16+ digits), data-key version, AES-256-GCM ciphertext of PAN and expiry",
                        "fingerprints": "HMAC-SHA-256 fingerprint of the PAN → token (deterministic tenants)",
                        "keys": "data and fingerprint keys, wrapped by the KEK",
                        "meta": "format version, counters, re-encryption checkpoints",
                    },
                    "security_code_field": "none",
                },
                "scan_of_data_and_audit_directories": scan_dirs(&[config.storage.data_dir.clone(), config.audit.dir.clone()]),
            }),
        ),
        section(
            "3.4.1",
            "PAN is masked when displayed",
            json!({
                "metadata_shows": "brand, BIN6 (only for PANs of 16+ digits, so at least 6 digits stay hidden), last 4, expiry — never the PAN",
                "roles": {
                    "tokenize": "sends PANs, receives tokens and metadata",
                    "read": "metadata only (masked)",
                    "detokenize": "the full PAN, each reveal audited durably before the answer is sent",
                    "delete": "deletes tokens",
                    "admin": "keys, alerts, approvals — never PANs",
                    "custodian": "hands in a KEK share — never PANs",
                },
                "principals_who_see_full_pan": revealers,
                "logs_and_errors": "never carry a PAN: errors have fixed messages, logs and metrics labels carry tokens or masked values",
            }),
        ),
        section(
            "3.5.1 / 3.5.1.1",
            "PAN is unreadable wherever stored; keyed cryptographic hashes",
            json!({
                "pan_encryption": "AES-256-GCM, a fresh 96-bit nonce per record, per-tenant data keys (256-bit); the associated data binds tenant, token and key version",
                "fingerprints": "HMAC-SHA-256 under a per-tenant 256-bit fingerprint key (keyed: a PAN cannot be found from a fingerprint without the key)",
                "tokens": "random digits from the OS CSPRNG, BIN6/last 4 kept, always failing Luhn; not derived from the PAN",
                "key_encryption_key": kek,
            }),
        ),
        section(
            "3.6.1.1",
            "Key inventory",
            json!({
                "keys": keys,
                "cryptoperiods_s": {"data_key": config.keys.dek_cryptoperiod_s, "fingerprint_key": config.keys.fingerprint_cryptoperiod_s},
            }),
        ),
        section(
            "3.7.x",
            "Key lifecycle: creation, rotation, retirement (from the audit trail)",
            json!({
                "events": trail.rotations,
            }),
        ),
        section(
            "4.2.1 / 4.2.1.1",
            "Strong cryptography in transit; certificate inventory",
            tls_inventory(&config)?,
        ),
        section(
            "7.2",
            "Access by role: principals and their roles",
            json!({
                "principals": principals(&config),
                "default": "a certificate whose name matches no principal has no role",
            }),
        ),
        section(
            "8.x",
            "Identities: client certificates",
            json!({
                "issued_by_this_dev_directory": dev_client_certificates(&args.location),
                "seen_in_the_audit_trail": trail.identities.iter().map(|((p, s), (first, last, n))| json!({
                    "principal": p, "certificate_serial": s, "first_seen": first, "last_seen": last, "events": n,
                })).collect::<Vec<_>>(),
            }),
        ),
        section(
            "10.2.1 / 10.2.2",
            "Audit logs record events and their details",
            json!({
                "events_by_kind": trail.by_kind,
                "fields_recorded": trail.fields,
            }),
        ),
        section(
            "10.3.2 / 10.5.1",
            "Audit logs protected; retained",
            json!({
                "verify": match &verdict {
                    Ok(report) => json!({"intact": true, "report": report}),
                    Err(failure) => json!({"intact": false, "failure": failure}),
                },
                "first_event": trail.first,
                "last_event": trail.last,
                "protection": "HMAC-SHA-256 chain under a key wrapped by the KEK; files 0600, synced before each reveal is answered",
                "segments": {"max_file_bytes": config.audit.max_file_bytes, "rotate_secs": config.audit.rotate_secs},
                "retention": "segments are never deleted by the vault; archive them off the host (audit verify --anchored checks a trail whose older segments were archived)",
                "mirror": {"syslog_tcp": config.audit.syslog_tcp, "syslog_unix": config.audit.syslog_unix},
            }),
        ),
        section(
            "11.5",
            "Alerts: rules configured and raised",
            json!({
                "rules": config.alerts,
                "raised_and_cleared": trail.alerts,
                "prometheus_rules": "deploy/prometheus/cardvault-rules.yml",
            }),
        ),
        section(
            "6.3.3",
            "Known vulnerabilities in the components",
            json!({
                "build": super::version::facts(),
                "dependencies": dependencies.as_ref().map(|d| json!({
                "count": d.lockfile.packages.len(),
                "source": d.source.as_str(),
            })).unwrap_or(Value::Null),
                "check": vulnerabilities,
            }),
        ),
    ];
    let bundle = json!({
        "format": 1,
        "standard": "PCI DSS v4.0.1",
        "created": created,
        "vault": {"data_dir": config.storage.data_dir.display().to_string(), "audit_dir": config.audit.dir.display().to_string()},
        "sections": sections,
    });
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json_text = serde_json::to_string_pretty(&bundle).context("encoding the bundle")?;
    std::fs::write(out.join("evidence.json"), json_text + "\n").context("writing evidence.json")?;
    std::fs::write(out.join("evidence.md"), render_markdown(&bundle))
        .context("writing evidence.md")?;
    let manifest = signer
        .sign_dir(out, &created)
        .map_err(|e| CliError::Failed(e.into()))?;
    say!(
        "evidence bundle written to {} ({} files), signed by key {} (public key {})",
        out.display(),
        manifest.files.len() + 1,
        manifest.key_id,
        manifest.public_key
    );
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A readable rendering: one heading per requirement, facts as nested
/// lists, arrays of objects as tables.
fn render_markdown(bundle: &Value) -> String {
    let mut out = format!(
        "# PCI DSS v4.0.1 evidence — cardvault\n\nCreated {}. Signed in `signature.json` (verify with `cardvault evidence verify DIR`). Every fact below was read from the vault's configuration, key store, audit trail and files when the bundle was made.\n\n",
        bundle["created"].as_str().unwrap_or("")
    );
    for s in bundle["sections"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "## {} — {}\n\n",
            s["requirement"].as_str().unwrap_or(""),
            s["title"].as_str().unwrap_or("")
        ));
        render_value(&s["facts"], 0, &mut out);
        out.push('\n');
    }
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.replace('|', "\\|").replace('\n', " "),
        Value::Null => "—".into(),
        other => other.to_string(),
    }
}

fn render_value(v: &Value, depth: usize, out: &mut String) {
    let indent = "  ".repeat(depth);
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::Object(_) => {
                        out.push_str(&format!("{indent}- **{k}**:\n"));
                        render_value(v, depth + 1, out);
                    }
                    Value::Array(items) if items.iter().any(Value::is_object) => {
                        out.push_str(&format!("{indent}- **{k}**:\n\n"));
                        render_table(items, out);
                        out.push('\n');
                    }
                    Value::Array(items) => out.push_str(&format!(
                        "{indent}- **{k}**: {}\n",
                        if items.is_empty() {
                            "none".into()
                        } else {
                            items.iter().map(scalar).collect::<Vec<_>>().join(", ")
                        }
                    )),
                    other => out.push_str(&format!("{indent}- **{k}**: {}\n", scalar(other))),
                }
            }
        }
        other => out.push_str(&format!("{indent}{}\n", scalar(other))),
    }
}

fn render_table(items: &[Value], out: &mut String) {
    let mut columns: Vec<String> = Vec::new();
    for item in items {
        for k in item.as_object().into_iter().flat_map(|m| m.keys()) {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    out.push_str(&format!("| {} |\n", columns.join(" | ")));
    out.push_str(&format!("|{}\n", " --- |".repeat(columns.len())));
    for item in items {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match &item[c] {
                Value::Array(a) => a.iter().map(scalar).collect::<Vec<_>>().join(", "),
                Value::Object(_) => scalar(&Value::String(item[c].to_string())),
                other => scalar(other),
            })
            .collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
}
