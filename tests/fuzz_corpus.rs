//! Replays the cargo-fuzz seed corpora (`fuzz/corpus/*`) through the same
//! entry points the fuzz targets call, on stable Rust, so CI exercises every
//! decoder on them. Every seed is also fed to every other target.
//!
//! `cargo test --test fuzz_corpus -- --ignored write_record_seeds` rewrites
//! the sealed-record seeds (records under the fixed fuzz key).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use cardvault::codec::{KeyRecord, KeyState, TokenEntry, TokenMeta};
use cardvault::crypto::record;
use cardvault::crypto::{DataKey, SecretKey};
use cardvault::fuzzing::{self, FUZZ_RECORD_KEY, FUZZ_TENANT, FUZZ_TOKEN};
use cardvault::{Brand, Pan, TenantId, Token};

/// A fuzz target: its name and its entry point.
type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 3] = [
    ("pan_parse", fuzzing::pan_parse),
    ("token_parse", fuzzing::token_parse),
    ("record_open", fuzzing::record_open),
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
            },
            fingerprint: None,
            record: sealed,
        };
        std::fs::write(dir.join(format!("entry{i}")), entry.encode()).unwrap();
    }
    let key = KeyRecord {
        state: KeyState::Active,
        created_ms: 1,
        wrapped: vec![1; 61],
    };
    std::fs::write(dir.join("keyrecord"), key.encode()).unwrap();
    std::fs::write(dir.join("empty"), b"").unwrap();
}
