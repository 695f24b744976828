//! Replays the cargo-fuzz seed corpora (`fuzz/corpus/*`) through the same
//! entry points the fuzz targets call, on stable Rust, so CI exercises every
//! decoder on them. Every seed is also fed to every other target.
//!
//! `cargo test --test fuzz_corpus -- --ignored write_record_seeds` rewrites
//! the sealed-record seeds (records under the fixed fuzz key),
//! `write_audit_seeds` the audit-line seeds and `write_certificate_seeds`
//! the client-certificate seeds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use cardvault::crypto::record;
use cardvault::crypto::{DataKey, SecretKey};
use cardvault::fuzzing::{self, FUZZ_RECORD_KEY, FUZZ_TENANT, FUZZ_TOKEN};
use cardvault::store::codec::{KeyRecord, KeyState, TokenEntry, TokenMeta};
use cardvault::{Brand, Pan, TenantId, Token};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// A fuzz target: its name and its entry point.
type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 10] = [
    ("pan_parse", fuzzing::pan_parse),
    ("token_parse", fuzzing::token_parse),
    ("record_open", fuzzing::record_open),
    ("audit_line", fuzzing::audit_line),
    ("request_body", fuzzing::request_body),
    ("certificate_name", fuzzing::certificate_name),
    ("kek_share", fuzzing::kek_share),
    ("scan_detect", fuzzing::scan_detect),
    ("session_record", fuzzing::session_record),
    ("markup_scan", fuzzing::markup_scan),
];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(corpus_dir(target))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    out
}

#[test]
fn every_seed_runs_through_every_target() {
    let mut total = 0;
    for (target, _) in TARGETS {
        let corpus = seeds(target);
        assert!(
            corpus.len() >= 5,
            "{target} has only {} seeds",
            corpus.len()
        );
        for seed in &corpus {
            for (_, run) in TARGETS {
                run(seed);
            }
            total += 1;
        }
    }
    assert!(total >= 20);
}

#[test]
fn record_seeds_include_openable_records() {
    let tenant = TenantId::parse(FUZZ_TENANT).unwrap();
    let token = Token::parse(FUZZ_TOKEN).unwrap();
    let secret = SecretKey::from_slice(&FUZZ_RECORD_KEY).unwrap();
    let opened = seeds("record_open")
        .iter()
        .filter(|s| {
            record::RecordView::decode(s)
                .and_then(|v| v.open(&DataKey::new(v.dek_version(), &secret, 0), &tenant, &token))
                .is_ok()
        })
        .count();
    assert!(opened >= 3, "only {opened} record seeds open");
}

#[test]
#[ignore = "writes fuzz/corpus/record_open; run by hand when the formats change"]
fn write_record_seeds() {
    let tenant = TenantId::parse(FUZZ_TENANT).unwrap();
    let token = Token::parse(FUZZ_TOKEN).unwrap();
    let secret = SecretKey::from_slice(&FUZZ_RECORD_KEY).unwrap();
    let dir = corpus_dir("record_open");
    std::fs::create_dir_all(&dir).unwrap();
    let cards = [
        "4111111111111111",
        "500000000009",
        "4000000000000000006",
        "378282246310005",
    ];
    for (i, card) in cards.iter().enumerate() {
        let pan = Pan::parse(card).unwrap();
        let dek = DataKey::new(i as u32 + 1, &secret, 0);
        let sealed = record::seal(&dek, &tenant, &token, &pan).unwrap();
        std::fs::write(dir.join(format!("record{i}")), &sealed).unwrap();
        let entry = TokenEntry {
            meta: TokenMeta {
                pan_len: pan.len() as u8,
                brand: Brand::Visa,
                bin: pan.bin(),
                last4: pan.last4(),
                expiry: None,
                created_ms: 1_790_000_000_000,
                expires_ms: None,
            },
            fingerprint: None,
            record: sealed,
        };
        // Format 2 entries (the `entry{i}` seeds of format 1 stay, for
        // the decoder's older branch).
        std::fs::write(dir.join(format!("entry-v2-{i}")), entry.encode(&token)).unwrap();
    }
    let key = KeyRecord {
        state: KeyState::Active,
        created_ms: 1,
        changed_ms: 1,
        wrapped: vec![1; 61],
        wrapped_next: None,
    };
    std::fs::write(dir.join("keyrecord"), key.encode()).unwrap();
    std::fs::write(dir.join("empty"), b"").unwrap();
}

/// Sealed audit lines under the fixed fuzz key (each chained from genesis),
/// plus damaged variants.
#[test]
#[ignore = "writes fuzz/corpus/audit_line; run by hand when the line format changes"]
fn write_audit_seeds() {
    use cardvault::audit::chain::{Chain, GENESIS};
    let chain = Chain::new(&SecretKey::from_slice(&fuzzing::FUZZ_AUDIT_KEY).unwrap());
    let bodies: [&[u8]; 5] = [
        br#"{"seq":1,"ts":"2026-11-22T05:00:00Z","event":"audit_start","outcome":"success","detail":"new chain"}"#,
        br#"{"seq":2,"ts":"2026-11-22T05:00:01Z","event":"tokenize","outcome":"success","principal":"cart","token":"4111118014801112"}"#,
        br#"{"seq":3,"ts":"2026-11-22T05:00:02Z","event":"access_denied","outcome":"denied","code":"forbidden","detail":"detokenize"}"#,
        br#"{}"#,
        br#"{"seq":4,"event":"detokenize_batch","tokens":["4111118014801112","5555559311424445"],"count":2}"#,
    ];
    let dir = corpus_dir("audit_line");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, body) in bodies.iter().enumerate() {
        let mut line = Vec::new();
        chain.seal_into(&GENESIS, body, &mut line);
        line.pop();
        std::fs::write(dir.join(format!("sealed-{i}")), &line).unwrap();
        let mut edited = line.clone();
        edited[3] ^= 1;
        std::fs::write(dir.join(format!("edited-{i}")), &edited).unwrap();
        std::fs::write(dir.join(format!("cut-{i}")), &line[..line.len() / 2]).unwrap();
    }
    std::fs::write(dir.join("no-mac"), bodies[1]).unwrap();
}

#[test]
fn audit_seeds_include_sealed_lines() {
    use cardvault::audit::chain::{Chain, GENESIS};
    let chain = Chain::new(&SecretKey::from_slice(&fuzzing::FUZZ_AUDIT_KEY).unwrap());
    let opened = seeds("audit_line")
        .iter()
        .filter(|seed| chain.open(&GENESIS, seed).is_ok())
        .count();
    assert!(opened >= 5, "only {opened} audit seeds open");
}

/// Client certificates (DER) from a throwaway CA: a CN, a URI SAN, a DNS
/// SAN, a CN with a newline, plus cut and flipped copies.
#[test]
#[ignore = "writes fuzz/corpus/certificate_name; run by hand when the names change"]
fn write_certificate_seeds() {
    use cardvault::pki::{Ca, Validity};
    let ca = Ca::generate("fuzz CA").unwrap();
    let dir = corpus_dir("certificate_name");
    std::fs::create_dir_all(&dir).unwrap();
    let names = [
        "cart",
        "payments\nINJECTED",
        "spiffe://shop.example/cart",
        "",
    ];
    for (i, name) in names.iter().enumerate() {
        let issued = ca.issue_client(name, Validity::days(30)).unwrap();
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        std::fs::write(dir.join(format!("cert-{i}")), der.as_ref()).unwrap();
        std::fs::write(dir.join(format!("cut-{i}")), &der[..der.len() / 2]).unwrap();
        let mut flipped = der.to_vec();
        flipped[der.len() / 3] ^= 0x40;
        std::fs::write(dir.join(format!("flipped-{i}")), &flipped).unwrap();
    }
    let server = ca.issue_server().unwrap();
    let der = CertificateDer::from_pem_slice(server.cert_pem.as_bytes()).unwrap();
    std::fs::write(dir.join("server-dns-san"), der.as_ref()).unwrap();
}

#[test]
fn certificate_seeds_name_their_holders() {
    let named = seeds("certificate_name")
        .iter()
        .filter_map(|seed| cardvault::peer::names::certificate_name(seed).ok())
        .map(|n| n.name)
        .collect::<Vec<_>>();
    assert!(named.contains(&"cart".to_owned()), "{named:?}");
    assert!(named.contains(&"localhost".to_owned()), "{named:?}");
}
