//! The vault core on a real RocksDB in a temp dir with a real key file:
//! durability across reopen, determinism under racing threads, collision
//! handling in a full BIN + last-4 bucket, rotation, deletion, tenant
//! isolation, format-version refusal, and a canary scan of every file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::common::{TestVaultDir, files_containing, luhn_complete, synthetic_pan};
use cardvault::crypto::{KeyError, KeyFileProvider};
use cardvault::domain::luhn;
use cardvault::store::StoreError;
use cardvault::{Expiry, Pan, TenantId, Token, TokenMode, Vault, VaultError, VaultOptions};

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

/// Every `(i, token)` detokenizes to `synthetic_pan(i)`.
async fn assert_all_reveal(vault: &Vault, t: &TenantId, issued: &[(u64, Token)]) {
    for (i, token) in issued {
        assert_eq!(
            vault.detokenize(t, token).await.unwrap().pan,
            synthetic_pan(*i),
            "token {token}"
        );
    }
}

/// Tokenizes `synthetic_pan(i)` for each `i` of `range`: `(i, token)`.
async fn issue(vault: &Vault, t: &TenantId, range: std::ops::Range<u64>) -> Vec<(u64, Token)> {
    let mut issued = Vec::new();
    for i in range {
        let token = vault
            .tokenize(t, &synthetic_pan(i), None)
            .await
            .unwrap()
            .token;
        issued.push((i, token));
    }
    issued
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_survive_reopen_after_close_and_after_drop() {
    let dir = TestVaultDir::new();
    let t = tenant("default");
    let mut issued = Vec::new();
    {
        let vault = dir.open();
        for i in 0..200 {
            let pan = synthetic_pan(i);
            let info = vault.tokenize(&t, &pan, None).await.unwrap();
            issued.push((i, info.token));
        }
        vault.close().await.unwrap();
    }
    {
        // Reopen, add more, then drop without close (like a crash of the
        // process after acknowledgement).
        let vault = dir.open();
        assert_all_reveal(&vault, &t, &issued).await;
        for i in 200..300 {
            let info = vault.tokenize(&t, &synthetic_pan(i), None).await.unwrap();
            issued.push((i, info.token));
        }
        drop(vault);
    }
    let vault = dir.open();
    for (i, token) in &issued {
        assert_eq!(
            vault.detokenize(&t, token).await.unwrap().pan,
            synthetic_pan(*i)
        );
        // Deterministic: the same PAN still maps to the same token.
        assert_eq!(
            vault
                .tokenize(&t, &synthetic_pan(*i), None)
                .await
                .unwrap()
                .token,
            *token
        );
    }
    // After a drop without close the encryption counter is bumped by the
    // safety margin, never lowered.
    let (_, version, sealed) = vault.key_status()[0].clone();
    assert_eq!(version, 1);
    assert!(
        sealed >= cardvault::vault::UNCLEAN_SHUTDOWN_COUNTER_MARGIN + 300,
        "{sealed}"
    );
    vault.close().await.unwrap();
}

#[test]
fn sixteen_threads_racing_on_the_same_pans_get_one_token_per_pan() {
    let dir = TestVaultDir::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let vault = Arc::new(dir.open());
    let t = tenant("race");
    let threads: Vec<_> = (0..16u64)
        .map(|thread| {
            let vault = Arc::clone(&vault);
            let handle = runtime.handle().clone();
            let t = t.clone();
            std::thread::spawn(move || {
                let mut seen = HashMap::new();
                for k in 0..1000u64 {
                    // Each thread walks the PANs in its own order.
                    let i = (k * 7 + thread * 131) % 1000;
                    let info = handle
                        .block_on(vault.tokenize(&t, &synthetic_pan(i), None))
                        .unwrap();
                    seen.insert(i, info.token);
                }
                seen
            })
        })
        .collect();
    let results: Vec<HashMap<u64, Token>> =
        threads.into_iter().map(|h| h.join().unwrap()).collect();
    for i in 0..1000 {
        let first = results[0][&i];
        assert!(
            results.iter().all(|r| r[&i] == first),
            "PAN {i} got several tokens"
        );
    }
    let distinct: HashSet<Token> = results[0].values().copied().collect();
    assert_eq!(distinct.len(), 1000);
    for (i, token) in &results[0] {
        let revealed = runtime.block_on(vault.detokenize(&t, token)).unwrap();
        assert_eq!(revealed.pan, synthetic_pan(*i));
    }
    let vault = Arc::into_inner(vault).unwrap();
    runtime.block_on(vault.close()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_bin_and_last4_bucket_gets_distinct_tokens() {
    // 411111 xxxxxx 1111: exactly 100,000 of the 10^6 middles pass Luhn, and
    // every token of the bucket has 900,000 Luhn-failing candidates, so late
    // draws collide often and must be retried, never overwritten.
    let dir = TestVaultDir::new();
    let vault = dir.open();
    let t = tenant("bucket");
    let pans: Vec<String> = (0..1_000_000u32)
        .map(|m| format!("411111{m:06}1111"))
        .filter(|s| luhn::passes(s.as_bytes()))
        .collect();
    assert_eq!(pans.len(), 100_000);
    let mut tokens = HashSet::new();
    for chunk in pans.chunks(2_000) {
        let items: Vec<(Pan, Option<Expiry>)> = chunk
            .iter()
            .map(|s| (Pan::parse(s).unwrap(), None))
            .collect();
        for result in vault.tokenize_batch(&t, &items).await {
            let info = result.unwrap();
            assert!(
                info.token.as_str().starts_with("411111") && info.token.as_str().ends_with("1111")
            );
            assert!(tokens.insert(info.token), "duplicate token {}", info.token);
        }
    }
    assert_eq!(tokens.len(), 100_000);
    // Spot-check that collisions did not cross records.
    for s in pans.iter().step_by(997) {
        let pan = Pan::parse(s).unwrap();
        let token = vault.tokenize(&t, &pan, None).await.unwrap().token;
        assert_eq!(vault.detokenize(&t, &token).await.unwrap().pan, pan);
    }
    vault.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_pan_appears_in_no_file_of_the_data_directory() {
    let dir = TestVaultDir::new();
    let canary = luhn_complete("493817602954318");
    let vault = dir.open();
    let t = tenant("default");
    let pan = Pan::parse(&canary).unwrap();
    let info = vault
        .tokenize(&t, &pan, Some(Expiry::parse("07/31").unwrap()))
        .await
        .unwrap();
    let formatted = format!("{pan:?} {pan} {info:?}");
    assert!(!formatted.contains(&canary), "{formatted}");
    // In the WAL and memtable only...
    assert!(files_containing(dir.dir.path(), canary.as_bytes()).is_empty());
    // ...then flushed to SST files, then after close.
    vault.flush().await.unwrap();
    assert!(files_containing(dir.dir.path(), canary.as_bytes()).is_empty());
    vault.close().await.unwrap();
    assert!(files_containing(dir.dir.path(), canary.as_bytes()).is_empty());
    // The scan does find what is there: the token itself is stored in clear.
    assert!(!files_containing(dir.dir.path(), info.token.as_bytes()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_public_test_card_round_trips() {
    let shared =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/test-pans.tsv");
    let vendored =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/test-pans.tsv");
    let dir = TestVaultDir::new();
    let vault = dir.open();
    let t = tenant("default");
    let mut checked = 0;
    for file in [shared, vendored].iter().filter(|p| p.exists()) {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split('\t').collect();
            let (brand, digits, len) = (fields[0], fields[1], fields[2]);
            let pan = Pan::parse(digits).unwrap();
            assert_eq!(pan.brand().as_str(), brand, "brand of {}", pan);
            let info = vault.tokenize(&t, &pan, None).await.unwrap();
            assert_eq!(info.token.len().to_string(), len);
            assert_eq!(info.brand.as_str(), brand);
            assert_eq!(info.last4.as_str(), &digits[digits.len() - 4..]);
            assert_eq!(vault.detokenize(&t, &info.token).await.unwrap().pan, pan);
            checked += 1;
        }
    }
    assert!(checked >= 19, "only {checked} cards checked");
    vault.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_old_records_readable_and_survives_reopen() {
    let dir = TestVaultDir::new();
    let t = tenant("rot");
    let mut issued = Vec::new();
    {
        let vault = dir.open();
        issued.extend(issue(&vault, &t, 0..10).await);
        assert_eq!(vault.rotate_keys(&t).await.unwrap(), 2);
        issued.extend(issue(&vault, &t, 10..20).await);
        assert_eq!(vault.key_status(), vec![(t.clone(), 2, 10)]);
        assert!(matches!(
            vault.rotate_keys(&tenant("nobody")).await,
            Err(VaultError::UnknownTenant(_))
        ));
        vault.close().await.unwrap();
    }
    let vault = dir.open();
    assert_eq!(vault.key_status(), vec![(t.clone(), 2, 10)]);
    assert_all_reveal(&vault, &t, &issued).await;
    vault.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_automatically_before_their_limit() {
    let dir = TestVaultDir::new();
    let options = VaultOptions {
        dek_rotate_after: 5,
        dek_hard_limit: 8,
        ..VaultOptions::default()
    };
    let vault = dir.open_with(options);
    let t = tenant("auto");
    let mut issued = Vec::new();
    for i in 0..23 {
        issued.push((
            i,
            vault
                .tokenize(&t, &synthetic_pan(i), None)
                .await
                .unwrap()
                .token,
        ));
    }
    let items: Vec<_> = (100..130).map(|i| (synthetic_pan(i), None)).collect();
    for (k, result) in vault
        .tokenize_batch(&t, &items)
        .await
        .into_iter()
        .enumerate()
    {
        issued.push((100 + k as u64, result.unwrap().token));
    }
    let (_, version, sealed) = vault.key_status()[0].clone();
    assert!(version >= 5, "only rotated to v{version}");
    assert!(sealed <= 8);
    assert_all_reveal(&vault, &t, &issued).await;
    vault.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_mode_issues_a_new_token_per_call() {
    let dir = TestVaultDir::new();
    let t = tenant("rnd");
    let mut options = VaultOptions::default();
    options.tenant_modes.insert(t.clone(), TokenMode::Random);
    let vault = dir.open_with(options);
    let pan = synthetic_pan(1);
    let a = vault.tokenize(&t, &pan, None).await.unwrap().token;
    let b = vault.tokenize(&t, &pan, None).await.unwrap().token;
    assert_ne!(a, b);
    assert_eq!(vault.detokenize(&t, &a).await.unwrap().pan, pan);
    assert_eq!(vault.detokenize(&t, &b).await.unwrap().pan, pan);
    // Another tenant on the same vault stays deterministic.
    let d = tenant("det");
    let c1 = vault.tokenize(&d, &pan, None).await.unwrap().token;
    assert_eq!(vault.tokenize(&d, &pan, None).await.unwrap().token, c1);
    vault.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retokenizing_with_a_new_expiry_updates_it() {
    let dir = TestVaultDir::new();
    let vault = dir.open();
    let t = tenant("exp");
    let pan = synthetic_pan(5);
    let first = vault
        .tokenize(&t, &pan, Some(Expiry::parse("12/29").unwrap()))
        .await
        .unwrap();
    let none = vault.tokenize(&t, &pan, None).await.unwrap();
    assert_eq!(none.token, first.token);
    assert_eq!(none.expiry.unwrap().to_string(), "12/29");
    let second = vault
        .tokenize(&t, &pan, Some(Expiry::parse("01/31").unwrap()))
        .await
        .unwrap();
    assert_eq!(second.token, first.token);
    assert_eq!(second.expiry.unwrap().to_string(), "01/31");
    let meta = vault.metadata(&t, &first.token).await.unwrap();
    assert_eq!(meta.expiry.unwrap().to_string(), "01/31");
    assert_eq!(meta.created_ms, first.created_ms);
    let revealed = vault.detokenize(&t, &first.token).await.unwrap();
    assert_eq!(revealed.expiry.unwrap().to_string(), "01/31");
    vault.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_the_token_and_its_fingerprint() {
    let dir = TestVaultDir::new();
    let vault = dir.open();
    let t = tenant("del");
    let pan = synthetic_pan(9);
    let token = vault.tokenize(&t, &pan, None).await.unwrap().token;
    vault.delete(&t, &token).await.unwrap();
    assert!(matches!(
        vault.detokenize(&t, &token).await,
        Err(VaultError::TokenNotFound)
    ));
    assert!(matches!(
        vault.metadata(&t, &token).await,
        Err(VaultError::TokenNotFound)
    ));
    assert!(matches!(
        vault.delete(&t, &token).await,
        Err(VaultError::TokenNotFound)
    ));
    let again = vault.tokenize(&t, &pan, None).await.unwrap().token;
    assert_eq!(vault.detokenize(&t, &again).await.unwrap().pan, pan);
    vault.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_cannot_read_each_other() {
    let dir = TestVaultDir::new();
    let vault = dir.open();
    let (a, b) = (tenant("a"), tenant("b"));
    let pan = synthetic_pan(3);
    let ta = vault.tokenize(&a, &pan, None).await.unwrap().token;
    vault.tokenize(&b, &synthetic_pan(4), None).await.unwrap();
    assert!(matches!(
        vault.detokenize(&b, &ta).await,
        Err(VaultError::TokenNotFound)
    ));
    assert!(matches!(
        vault.metadata(&b, &ta).await,
        Err(VaultError::TokenNotFound)
    ));
    assert!(matches!(
        vault.delete(&b, &ta).await,
        Err(VaultError::TokenNotFound)
    ));
    assert!(matches!(
        vault.detokenize(&tenant("c"), &ta).await,
        Err(VaultError::TokenNotFound)
    ));
    assert_eq!(vault.detokenize(&a, &ta).await.unwrap().pan, pan);
    vault.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_kek_cannot_open_the_keys() {
    let dir = TestVaultDir::new();
    let vault = dir.open();
    vault
        .tokenize(&tenant("k"), &synthetic_pan(1), None)
        .await
        .unwrap();
    vault.close().await.unwrap();
    let other = dir.dir.path().join("other.key");
    KeyFileProvider::create(&other).unwrap();
    let provider = KeyFileProvider::open(&other).unwrap();
    let err = Vault::open(&dir.db_path(), Arc::new(provider), VaultOptions::default()).unwrap_err();
    assert!(matches!(err, VaultError::Key(KeyError::Unwrap(_))), "{err}");
    assert!(err.to_string().contains("wrong KEK"), "{err}");
}

fn raw_db(path: &std::path::Path) -> rocksdb::DB {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(false);
    // Every column family the database has (the test must not know the list).
    let families = rocksdb::DB::list_cf(&opts, path).unwrap();
    rocksdb::DB::open_cf(&opts, path, families).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_on_disk_format_is_refused_with_a_clear_message() {
    let dir = TestVaultDir::new();
    dir.open().close().await.unwrap();
    {
        let db = raw_db(&dir.db_path());
        let meta = db.cf_handle("meta").unwrap();
        // A newer format that old builds cannot read: its reader floor is
        // itself.
        let newer = u64::from(cardvault::store::rocksdb::FORMAT_VERSION) + 1;
        db.put_cf(meta, b"format_version", newer.to_be_bytes())
            .unwrap();
        db.put_cf(meta, b"format_readable_by", newer.to_be_bytes())
            .unwrap();
    }
    let provider = KeyFileProvider::open(&dir.dir.path().join("kek.key")).unwrap();
    let err = Vault::open(&dir.db_path(), Arc::new(provider), VaultOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::Store(StoreError::NewerFormat {
                found,
                supported: cardvault::store::rocksdb::FORMAT_VERSION,
                ..
            }) if found == cardvault::store::rocksdb::FORMAT_VERSION + 1
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("newer than this build supports"),
        "{err}"
    );
}

/// An upgrade, then a rollback: the next release's additive format change
/// (its format marker one higher, the reader floor left at this format, a
/// column family of its own with data in it) is opened by this build as it
/// is — every token made before serves, new ones are made — and is still
/// the next release's after: the markers and its column family untouched.
/// docs/upgrade.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_opens_the_next_releases_additive_format_unchanged() {
    use cardvault::store::rocksdb::{FORMAT_READABLE_BY, FORMAT_VERSION};
    let dir = TestVaultDir::new();
    let t = tenant("default");
    let mut issued = Vec::new();
    {
        let vault = dir.open();
        issued.extend(issue(&vault, &t, 0..50).await);
        vault.close().await.unwrap();
    }
    let next = u64::from(FORMAT_VERSION) + 1;
    {
        // What the next release leaves behind, as it would write it.
        let mut db = raw_db(&dir.db_path());
        let meta = db.cf_handle("meta").unwrap();
        let floor = db.get_cf(meta, b"format_readable_by").unwrap().unwrap();
        assert_eq!(floor, u64::from(FORMAT_READABLE_BY).to_be_bytes());
        db.put_cf(meta, b"format_version", next.to_be_bytes())
            .unwrap();
        db.create_cf("next_release", &rocksdb::Options::default())
            .unwrap();
        let added = db.cf_handle("next_release").unwrap();
        db.put_cf(added, b"its own key", b"its own value").unwrap();
        drop(db);
    }
    {
        let vault = dir.open();
        assert_all_reveal(&vault, &t, &issued).await;
        issued.extend(issue(&vault, &t, 50..60).await);
        vault.close().await.unwrap();
    }
    {
        let db = raw_db(&dir.db_path());
        let meta = db.cf_handle("meta").unwrap();
        assert_eq!(
            db.get_cf(meta, b"format_version").unwrap().unwrap(),
            next.to_be_bytes(),
            "the rollback left the next release's format as it was"
        );
        let added = db.cf_handle("next_release").unwrap();
        assert_eq!(
            db.get_cf(added, b"its own key").unwrap().as_deref(),
            Some(&b"its own value"[..])
        );
    }
    // And forward again: the same build reopens it, tokens intact.
    let vault = dir.open();
    assert_all_reveal(&vault, &t, &issued).await;
    vault.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_record_fails_to_open_without_panicking() {
    let dir = TestVaultDir::new();
    let t = tenant("tamper");
    let (token, other) = {
        let vault = dir.open();
        let token = vault
            .tokenize(&t, &synthetic_pan(1), None)
            .await
            .unwrap()
            .token;
        let other = vault
            .tokenize(&t, &synthetic_pan(2), None)
            .await
            .unwrap()
            .token;
        vault.close().await.unwrap();
        (token, other)
    };
    {
        // Copy the other token's value over this one: a record moved between tokens.
        let db = raw_db(&dir.db_path());
        let tokens = db.cf_handle("tokens").unwrap();
        let key = |tok: &Token| {
            [
                &[t.as_str().len() as u8][..],
                t.as_str().as_bytes(),
                tok.as_bytes(),
            ]
            .concat()
        };
        let value = db.get_cf(tokens, key(&other)).unwrap().unwrap();
        db.put_cf(tokens, key(&token), value).unwrap();
    }
    let vault = dir.open();
    let err = vault.detokenize(&t, &token).await.unwrap_err();
    assert!(matches!(err, VaultError::Record(_)), "{err}");
    assert_eq!(
        vault.detokenize(&t, &other).await.unwrap().pan,
        synthetic_pan(2)
    );
    vault.close().await.unwrap();
}

/// A format-1 token entry (database formats 1–3), built by hand from a
/// decoded one: PAN length before the brand, BIN and last 4 written out,
/// the fingerprint as a 256-bit HMAC (its second half is never read).
fn entry_v1(entry: &cardvault::store::codec::TokenEntry) -> Vec<u8> {
    let m = &entry.meta;
    let mut flags = 0u8;
    let mut out = vec![1, 0, m.pan_len, m.brand.code()];
    if let Some(bin) = m.bin {
        flags |= 1;
        out.extend_from_slice(bin.as_bytes());
    }
    out.extend_from_slice(m.last4.as_bytes());
    if let Some(expiry) = m.expiry {
        flags |= 2;
        out.push(expiry.month());
        out.extend_from_slice(&expiry.year().to_be_bytes());
    }
    out.extend_from_slice(&m.created_ms.to_be_bytes());
    assert!(m.expires_ms.is_none());
    if let Some(fp) = &entry.fingerprint {
        flags |= 4;
        out.extend_from_slice(fp.as_bytes());
        out.extend_from_slice(&[0xee; 16]);
    }
    out.push(entry.record.len() as u8);
    out.extend_from_slice(&entry.record);
    out[1] = flags;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_3_database_is_raised_to_short_fingerprints_and_loses_nothing() {
    use cardvault::store::codec::TokenEntry;
    let dir = TestVaultDir::new();
    let t = tenant("legacy");
    let vault = dir.open();
    let mut issued = Vec::new();
    for i in 0..40u64 {
        let expiry = (i % 2 == 0).then(|| Expiry::new(4, 2031).unwrap());
        let info = vault.tokenize(&t, &synthetic_pan(i), expiry).await.unwrap();
        issued.push((i, info.token));
    }
    vault.close().await.unwrap();
    // Turn the database back into format 3 (format-1 entries, 32-byte
    // fingerprint keys) as a migration cut short would leave it.
    {
        let db = raw_db(&dir.db_path());
        let (tokens, fps, meta) = (
            db.cf_handle("tokens").unwrap(),
            db.cf_handle("fingerprints").unwrap(),
            db.cf_handle("meta").unwrap(),
        );
        let prefix_len = 1 + t.as_str().len();
        let mut rewrites = 0;
        for item in db.iterator_cf(tokens, rocksdb::IteratorMode::Start) {
            let (key, value) = item.unwrap();
            let token = Token::parse_bytes(&key[prefix_len..]).unwrap();
            let entry = TokenEntry::decode(&value, &token).unwrap();
            assert_eq!(value[0], 2, "this build writes entry format 2");
            db.put_cf(tokens, &key, entry_v1(&entry)).unwrap();
            rewrites += 1;
        }
        assert_eq!(rewrites, 40);
        let short: Vec<_> = db
            .iterator_cf(fps, rocksdb::IteratorMode::Start)
            .map(|item| item.unwrap())
            .collect();
        assert_eq!(short.len(), 40);
        // Every other key is left short: a migration cut short by a crash
        // leaves such a mix, and the next open must finish it.
        for (key, token) in short.into_iter().step_by(2) {
            assert_eq!(key.len(), prefix_len + 16);
            let mut long = key.to_vec();
            long.extend_from_slice(&[0xee; 16]);
            db.delete_cf(fps, &key).unwrap();
            db.put_cf(fps, long, token).unwrap();
        }
        db.put_cf(meta, b"format_version", 3u64.to_be_bytes())
            .unwrap();
    }
    let vault = dir.open();
    // Every PAN finds its token through the rewritten index, and every
    // format-1 entry still reveals.
    for (i, token) in &issued {
        let again = vault.tokenize(&t, &synthetic_pan(*i), None).await.unwrap();
        assert_eq!(&again.token, token, "PAN {i} got a second token");
        let revealed = vault.detokenize(&t, token).await.unwrap();
        assert_eq!(revealed.pan, synthetic_pan(*i));
        assert_eq!(revealed.expiry.is_some(), i % 2 == 0);
    }
    // A format-1 entry's delete removes its (short) index entry: the PAN
    // then gets a new token.
    let (i, token) = &issued[3];
    vault.delete(&t, token).await.unwrap();
    let fresh = vault.tokenize(&t, &synthetic_pan(*i), None).await.unwrap();
    assert_ne!(&fresh.token, token);
    vault.close().await.unwrap();
    let db = raw_db(&dir.db_path());
    let meta = db.cf_handle("meta").unwrap();
    assert_eq!(
        db.get_cf(meta, b"format_version").unwrap().unwrap(),
        u64::from(cardvault::store::rocksdb::FORMAT_VERSION).to_be_bytes()
    );
    let fps = db.cf_handle("fingerprints").unwrap();
    let lengths: HashSet<usize> = db
        .iterator_cf(fps, rocksdb::IteratorMode::Start)
        .map(|item| item.unwrap().0.len())
        .collect();
    assert_eq!(lengths, HashSet::from([1 + t.as_str().len() + 16]));
}
