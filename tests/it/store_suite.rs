//! The storage contract (src/store/mod.rs), written once against
//! `dyn Store` and run on every backend: insert-if-absent on fingerprint and
//! token (within one call, across calls and under concurrency), durability
//! across a reopen, expiry updates, deletes, key records, counters that only
//! grow, and the clean-shutdown marker. A new backend adds one line to the
//! bottom of this file.

use std::sync::Arc;

use cardvault::crypto::record;
use cardvault::crypto::{DataKey, Fingerprint, Fingerprinter, KeyLabel, KeyPurpose, SecretKey};
use cardvault::store::codec::{KeyRecord, KeyState, TokenEntry, TokenMeta};
use cardvault::store::{Checkpoint, Insert, InsertOutcome, Reseal, Store};
use cardvault::{Expiry, Pan, TenantId, Token};

use crate::common::synthetic_pan;

/// A store being opened.
pub type Opening<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Box<dyn Store>> + 'a>>;

/// Opens (and reopens) one backend's store at one location.
pub trait Backend {
    /// Opens the store; a second call after `close` or drop reopens the same data.
    fn open(&self) -> Opening<'_>;
    /// Whether the backend tells a clean shutdown from a crash (RocksDB's
    /// marker). A shared database (PostgreSQL) cannot tell one node's stop
    /// from another's and always answers "not clean", the safe side.
    fn marks_clean_shutdown(&self) -> bool {
        true
    }
}

/// Real keys and records, so entries look exactly like the vault's.
struct Cards {
    tenant: TenantId,
    dek: DataKey,
    fingerprinter: Fingerprinter,
    /// Every token drawn so far: [`Cards::token`] never draws one twice.
    drawn: std::sync::Mutex<std::collections::HashSet<Token>>,
}

impl Cards {
    fn new() -> Cards {
        let secret = SecretKey::generate().unwrap();
        Cards {
            tenant: TenantId::parse("suite").unwrap(),
            dek: DataKey::new(1, &secret, 0),
            fingerprinter: Fingerprinter::new(1, &SecretKey::generate().unwrap()).unwrap(),
            drawn: Default::default(),
        }
    }

    fn fingerprint(&self, i: u64) -> Fingerprint {
        self.fingerprinter.fingerprint(&synthetic_pan(i))
    }

    /// An insert of PAN `i` under `token`, fingerprinted.
    fn insert(&self, i: u64, token: Token) -> Insert {
        let pan: Pan = synthetic_pan(i);
        let fingerprint = Some(self.fingerprint(i));
        Insert {
            tenant: self.tenant.clone(),
            token,
            fingerprint,
            entry: TokenEntry {
                meta: TokenMeta {
                    pan_len: pan.len() as u8,
                    brand: pan.brand(),
                    bin: pan.bin(),
                    last4: pan.last4(),
                    expiry: None,
                    created_ms: 1_700_000_000_000 + i,
                    expires_ms: None,
                },
                fingerprint,
                record: record::seal(&self.dek, &self.tenant, &token, &pan).unwrap(),
            },
            counter: Some((self.label(), i + 1)),
            fingerprint_absent_at: None,
            token_absent_at: None,
            fingerprint_key: None,
        }
    }

    /// A fresh token for PAN `i`, distinct from every token this `Cards`
    /// drew before. Synthetic PANs share a BIN and, ten at a time, a last
    /// 4, so independent draws collide often enough across tens of
    /// thousands of them (one run in eight did); the vault redraws on a
    /// collision, and so does this.
    fn token(&self, i: u64) -> Token {
        let mut drawn = self.drawn.lock().unwrap();
        for _ in 0..64 {
            let token = Token::generate(&synthetic_pan(i)).unwrap();
            if drawn.insert(token) {
                return token;
            }
        }
        panic!("64 draws of a token for PAN {i} all collided")
    }

    fn label(&self) -> KeyLabel {
        KeyLabel {
            tenant: self.tenant.clone(),
            purpose: KeyPurpose::PanEncryption,
            version: 1,
        }
    }
}

/// Counter of `label` as the store has it.
async fn counter(store: &dyn Store, label: &KeyLabel) -> Option<u64> {
    let keys = store.load_keys().await.unwrap();
    keys.counters
        .into_iter()
        .find(|(l, _)| l == label)
        .map(|(_, n)| n)
}

pub async fn a_fingerprint_keeps_its_first_token(backend: &dyn Backend) {
    let store = backend.open().await;
    let cards = Cards::new();
    let (first, second) = (cards.token(1), cards.token(1));
    let out = store.insert(vec![cards.insert(1, first)]).await.unwrap();
    assert_eq!(out, vec![InsertOutcome::Inserted]);
    let out = store.insert(vec![cards.insert(1, second)]).await.unwrap();
    assert_eq!(out, vec![InsertOutcome::Existing(first)]);
    let fp = cards.fingerprint(1);
    assert_eq!(
        store.get_token_for(&cards.tenant, &fp).await.unwrap(),
        Some(first)
    );
    if second != first {
        assert!(
            store
                .get_entry(&cards.tenant, &second)
                .await
                .unwrap()
                .is_none()
        );
    }
    store.close(Vec::new()).await.unwrap();
}

/// A batched fingerprint lookup answers like one lookup per fingerprint,
/// in input order: hits, misses and repeats.
pub async fn batched_lookups_answer_in_input_order(backend: &dyn Backend) {
    let store = backend.open().await;
    let cards = Cards::new();
    let tokens: Vec<Token> = (1..=6).map(|i| cards.token(i)).collect();
    let inserts = (1..=6)
        .map(|i| cards.insert(i, tokens[i as usize - 1]))
        .collect();
    let out = store.insert(inserts).await.unwrap();
    assert!(out.iter().all(|o| *o == InsertOutcome::Inserted), "{out:?}");
    let asked = [4u64, 99, 1, 6, 4, 50];
    let fps: Vec<Fingerprint> = asked.iter().map(|&i| cards.fingerprint(i)).collect();
    let found = store.get_tokens_for(&cards.tenant, &fps).await.unwrap();
    assert_eq!(
        found,
        vec![
            Some(tokens[3]),
            None,
            Some(tokens[0]),
            Some(tokens[5]),
            Some(tokens[3]),
            None
        ]
    );
    let other = TenantId::parse("elsewhere").unwrap();
    assert_eq!(
        store.get_tokens_for(&other, &fps[..1]).await.unwrap(),
        vec![None]
    );
    assert!(
        store
            .get_tokens_for(&cards.tenant, &[])
            .await
            .unwrap()
            .is_empty()
    );
    store.close(Vec::new()).await.unwrap();
}

/// A thousand other inserts (PANs 1000 to 1999) in 20 calls, so a backend
/// that tracks its recent writes has to look beyond its latest group.
async fn churn(store: &dyn Store, cards: &Cards) {
    for round in 0..20u64 {
        let batch = (0..50)
            .map(|i| {
                let n = 1000 + round * 50 + i;
                cards.insert(n, cards.token(n))
            })
            .collect();
        store.insert(batch).await.unwrap();
    }
}

/// A caller's "I looked and it was absent" is a hint, never a licence to
/// overwrite: with a mark taken before a racing insert of the same PAN
/// (and with marks taken before and after a store-wide churn of other
/// inserts), the second insert still answers `Existing`.
pub async fn a_stale_absence_never_overwrites(backend: &dyn Backend) {
    let store = backend.open().await;
    let cards = Cards::new();
    let mark = store.read_mark();
    assert_eq!(
        store
            .get_token_for(&cards.tenant, &cards.fingerprint(1))
            .await
            .unwrap(),
        None
    );
    let first = cards.token(1);
    store.insert(vec![cards.insert(1, first)]).await.unwrap();
    churn(store.as_ref(), &cards).await;
    let mut racer = cards.insert(1, cards.token(1));
    racer.fingerprint_absent_at = mark;
    let out = store.insert(vec![racer]).await.unwrap();
    assert_eq!(out, vec![InsertOutcome::Existing(first)]);
    // A fresh mark over a fingerprint nobody wrote: inserted once, and the
    // same claim made again (now stale) is refused.
    let mark = store.read_mark();
    let mut fresh = cards.insert(2, cards.token(2));
    fresh.fingerprint_absent_at = mark;
    let token = fresh.token;
    assert_eq!(
        store.insert(vec![fresh]).await.unwrap(),
        vec![InsertOutcome::Inserted]
    );
    let mut again = cards.insert(2, cards.token(2));
    again.fingerprint_absent_at = mark;
    assert_eq!(
        store.insert(vec![again]).await.unwrap(),
        vec![InsertOutcome::Existing(token)]
    );
    store.close(Vec::new()).await.unwrap();
}

/// A caller's word that its drawn token is free ([`Insert::token_absent_at`])
/// goes stale as soon as another insert takes the token: that is still a
/// collision, the stored entry stays as it was — right after the first
/// insert and after enough churn that a backend tracking recent writes has
/// forgotten it — and two items of one call vouching for one token get one
/// insert and one collision.
pub async fn a_stale_token_absence_never_overwrites(backend: &dyn Backend) {
    let store = backend.open().await;
    let cards = Cards::new();
    let (token, unused) = (cards.token(1), cards.token(5));
    let mark = store.read_mark();
    assert_eq!(
        store.tokens_taken(&cards.tenant, &[token]).await.unwrap(),
        vec![false]
    );
    let original = cards.insert(1, token);
    let stored_entry = original.entry.clone();
    store.insert(vec![original]).await.unwrap();
    assert_eq!(
        store
            .tokens_taken(&cards.tenant, &[unused, token])
            .await
            .unwrap(),
        vec![false, true]
    );
    let racer = |i: u64| {
        let mut racer = cards.insert(i, token);
        racer.token_absent_at = mark;
        racer
    };
    assert_eq!(
        store.insert(vec![racer(2)]).await.unwrap(),
        vec![InsertOutcome::TokenCollision]
    );
    churn(store.as_ref(), &cards).await;
    assert_eq!(
        store.insert(vec![racer(3)]).await.unwrap(),
        vec![InsertOutcome::TokenCollision]
    );
    assert_eq!(
        store.get_entry(&cards.tenant, &token).await.unwrap(),
        Some(stored_entry)
    );
    // One call, two PANs, one freshly vouched token.
    let mark = store.read_mark();
    let shared = cards.token(6);
    let mut first = cards.insert(6, shared);
    let mut second = cards.insert(7, shared);
    first.token_absent_at = mark;
    second.token_absent_at = mark;
    let stored_entry = first.entry.clone();
    assert_eq!(
        store.insert(vec![first, second]).await.unwrap(),
        vec![InsertOutcome::Inserted, InsertOutcome::TokenCollision]
    );
    assert_eq!(
        store.get_entry(&cards.tenant, &shared).await.unwrap(),
        Some(stored_entry)
    );
    store.close(Vec::new()).await.unwrap();
}

pub async fn a_taken_token_is_a_collision_and_nothing_is_overwritten(backend: &dyn Backend) {
    let store = backend.open().await;
    let cards = Cards::new();
    let token = cards.token(1);
    let original = cards.insert(1, token);
    let stored_entry = original.entry.clone();
    store.insert(vec![original]).await.unwrap();
    // Another PAN drew the same token.
    let out = store.insert(vec![cards.insert(2, token)]).await.unwrap();
    assert_eq!(out, vec![InsertOutcome::TokenCollision]);
    assert_eq!(
        store.get_entry(&cards.tenant, &token).await.unwrap(),
        Some(stored_entry)
    );
    assert_eq!(
        store
            .get_token_for(&cards.tenant, &cards.fingerprint(2))
            .await
            .unwrap(),
        None
    );
    store.close(Vec::new()).await.unwrap();
}

pub async fn items_of_one_call_are_checked_against_each_other(backend: &dyn Backend) {
    let store = backend.open().await;
    let cards = Cards::new();
    let (a, b) = (cards.token(1), cards.token(3));
    let out = store
        .insert(vec![
            cards.insert(1, a),
            cards.insert(1, cards.token(1)),
            cards.insert(2, a),
            cards.insert(3, b),
        ])
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![
            InsertOutcome::Inserted,
            InsertOutcome::Existing(a),
            InsertOutcome::TokenCollision,
            InsertOutcome::Inserted,
        ]
    );
    store.close(Vec::new()).await.unwrap();
}

pub async fn concurrent_inserts_of_one_pan_yield_one_token(backend: &dyn Backend) {
    let store: Arc<dyn Store> = Arc::from(backend.open().await);
    let cards = Arc::new(Cards::new());
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (store, cards) = (Arc::clone(&store), Arc::clone(&cards));
        tasks.push(tokio::spawn(async move {
            let token = cards.token(7);
            let out = store.insert(vec![cards.insert(7, token)]).await.unwrap();
            match out[0] {
                InsertOutcome::Inserted => token,
                InsertOutcome::Existing(existing) => existing,
                InsertOutcome::TokenCollision => panic!("a fresh token collided"),
                InsertOutcome::StaleKey => panic!("no key was rotated"),
            }
        }));
    }
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(task.await.unwrap());
    }
    tokens.dedup();
    assert_eq!(tokens.len(), 1, "one PAN, several tokens: {tokens:?}");
}

pub async fn acknowledged_writes_survive_a_reopen(backend: &dyn Backend) {
    let cards = Cards::new();
    let tokens: Vec<Token> = (0..50).map(|i| cards.token(100 + i)).collect();
    {
        let store = backend.open().await;
        let inserts = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| cards.insert(100 + i as u64, *t))
            .collect();
        store.insert(inserts).await.unwrap();
        // Dropped without close: no clean-shutdown marker.
    }
    let store = backend.open().await;
    assert!(!store.was_clean_shutdown());
    for (i, token) in tokens.iter().enumerate() {
        let entry = store.get_entry(&cards.tenant, token).await.unwrap();
        assert!(entry.is_some(), "token {i} lost");
        assert_eq!(
            store
                .get_token_for(&cards.tenant, &cards.fingerprint(100 + i as u64))
                .await
                .unwrap(),
            Some(*token)
        );
    }
    store.close(Vec::new()).await.unwrap();
    let store = backend.open().await;
    assert_eq!(store.was_clean_shutdown(), backend.marks_clean_shutdown());
    store.close(Vec::new()).await.unwrap();
}

pub async fn expiry_updates_and_deletes(backend: &dyn Backend) {
    let store = backend.open().await;
    let cards = Cards::new();
    let token = cards.token(1);
    store.insert(vec![cards.insert(1, token)]).await.unwrap();
    let expiry = Expiry::parse("12/29").unwrap();
    assert!(
        store
            .update_expiry(&cards.tenant, &token, expiry)
            .await
            .unwrap()
    );
    let entry = store.get_entry(&cards.tenant, &token).await.unwrap();
    assert_eq!(entry.unwrap().meta.expiry, Some(expiry));
    let missing = cards.token(2);
    assert!(
        !store
            .update_expiry(&cards.tenant, &missing, expiry)
            .await
            .unwrap()
    );
    assert!(store.delete(&cards.tenant, &token).await.unwrap());
    assert!(!store.delete(&cards.tenant, &token).await.unwrap());
    assert!(
        store
            .get_entry(&cards.tenant, &token)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .get_token_for(&cards.tenant, &cards.fingerprint(1))
            .await
            .unwrap(),
        None
    );
    // The PAN can be tokenized again after its delete.
    let again = cards.token(1);
    let out = store.insert(vec![cards.insert(1, again)]).await.unwrap();
    assert_eq!(out, vec![InsertOutcome::Inserted]);
    store.close(Vec::new()).await.unwrap();
}

pub async fn keys_and_counters(backend: &dyn Backend) {
    let store = backend.open().await;
    let cards = Cards::new();
    let label = cards.label();
    let record = KeyRecord {
        state: KeyState::Active,
        created_ms: 42,
        changed_ms: 42,
        wrapped: vec![7; 60],
        wrapped_next: None,
    };
    store
        .put_keys(
            vec![(label.clone(), record.clone())],
            vec![(label.clone(), 10)],
        )
        .await
        .unwrap();
    let keys = store.load_keys().await.unwrap();
    assert_eq!(keys.keys, vec![(label.clone(), record)]);
    assert_eq!(counter(store.as_ref(), &label).await, Some(10));
    // A lower count (a commit that overtook an earlier claim) never wins.
    store
        .put_keys(Vec::new(), vec![(label.clone(), 5)])
        .await
        .unwrap();
    assert_eq!(counter(store.as_ref(), &label).await, Some(10));
    // Inserts carry their counter in the same commit.
    store
        .insert(vec![cards.insert(99, cards.token(99))])
        .await
        .unwrap();
    assert_eq!(counter(store.as_ref(), &label).await, Some(100));
    // Close writes final counters, again never lower.
    store.close(vec![(label.clone(), 50)]).await.unwrap();
    let store = backend.open().await;
    assert_eq!(counter(store.as_ref(), &label).await, Some(100));
    store.close(Vec::new()).await.unwrap();
}

/// Runs every contract test on one backend, each test on a fresh location.
pub async fn scans_and_reseals_compare_and_swap(backend: &dyn Backend) {
    let store = backend.open().await;
    let cards = Cards::new();
    let tokens: Vec<Token> = (0..10).map(|i| cards.token(200 + i)).collect();
    let inserts = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| cards.insert(200 + i as u64, *t))
        .collect();
    store.insert(inserts).await.unwrap();
    // Another tenant's entries never show in this tenant's scan.
    let other = TenantId::parse("suite-other").unwrap();
    let mut foreign = cards.insert(300, cards.token(300));
    foreign.tenant = other.clone();
    foreign.fingerprint = None;
    foreign.counter = None;
    store.insert(vec![foreign]).await.unwrap();
    // Scans come in token order, resumable after any token.
    let first = store.scan_entries(&cards.tenant, None, 4).await.unwrap();
    let rest = store
        .scan_entries(&cards.tenant, Some(first[3].0), 100)
        .await
        .unwrap();
    let scanned: Vec<Token> = first.iter().chain(&rest).map(|(t, _)| *t).collect();
    let mut sorted = tokens.clone();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(scanned, sorted);
    // A reseal swaps only records still as read; a deleted token and a
    // stale expectation are skipped; metadata changed meanwhile is kept.
    let (a, b, c) = (first[0].clone(), first[1].clone(), first[2].clone());
    let expiry = Expiry::parse("11/30").unwrap();
    assert!(
        store
            .update_expiry(&cards.tenant, &a.0, expiry)
            .await
            .unwrap()
    );
    assert!(store.delete(&cards.tenant, &b.0).await.unwrap());
    let items = vec![
        Reseal {
            token: a.0,
            expected: a.1.record.clone(),
            record: vec![9; a.1.record.len()],
            fingerprint: None,
        },
        Reseal {
            token: b.0,
            expected: b.1.record.clone(),
            record: vec![9; 8],
            fingerprint: None,
        },
        Reseal {
            token: c.0,
            expected: vec![1, 2, 3],
            record: vec![9; 8],
            fingerprint: None,
        },
    ];
    let done = store
        .reseal(
            &cards.tenant,
            items,
            vec![(cards.label(), 99)],
            Checkpoint::Set(b"where".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(done, 1);
    let now = store.get_entry(&cards.tenant, &a.0).await.unwrap().unwrap();
    assert_eq!(now.record, vec![9; a.1.record.len()]);
    assert_eq!(now.meta.expiry, Some(expiry));
    assert_eq!(now.fingerprint, a.1.fingerprint);
    let untouched = store.get_entry(&cards.tenant, &c.0).await.unwrap().unwrap();
    assert_eq!(untouched.record, c.1.record);
    assert!(
        store
            .get_entry(&cards.tenant, &b.0)
            .await
            .unwrap()
            .is_none()
    );
    // Counters only grow: 99 is below the inserts' 210, so 210 stays.
    assert_eq!(counter(store.as_ref(), &cards.label()).await, Some(210));
    store
        .reseal(
            &cards.tenant,
            Vec::new(),
            vec![(cards.label(), 500)],
            Checkpoint::Set(b"where".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(counter(store.as_ref(), &cards.label()).await, Some(500));
    // The checkpoint is stored with it, listed, and cleared.
    assert_eq!(
        store.checkpoint(&cards.tenant).await.unwrap(),
        Some(b"where".to_vec())
    );
    assert_eq!(
        store.checkpoints().await.unwrap(),
        vec![cards.tenant.clone()]
    );
    assert_eq!(store.checkpoint(&other).await.unwrap(), None);
    store
        .reseal(&cards.tenant, Vec::new(), Vec::new(), Checkpoint::Clear)
        .await
        .unwrap();
    assert_eq!(store.checkpoint(&cards.tenant).await.unwrap(), None);
    assert!(store.checkpoints().await.unwrap().is_empty());
    store.close(Vec::new()).await.unwrap();
}

/// Expiring tokens: listed by the expiry index in time order once due,
/// never before; deleted with their index entries in one call, only while
/// they still carry that expiry; a PAN whose token expired gets a new one.
pub async fn expiring_tokens_are_listed_and_swept(backend: &dyn Backend) {
    let store = backend.open().await;
    let cards = Cards::new();
    let mut items = Vec::new();
    for (i, at) in [(1u64, 5_000u64), (2, 1_000), (3, 9_000)] {
        let mut insert = cards.insert(i, cards.token(i));
        insert.entry.meta.expires_ms = Some(at);
        items.push(insert);
    }
    let forever = cards.insert(4, cards.token(4));
    let tokens: Vec<Token> = items.iter().map(|i| i.token).collect();
    items.push(forever);
    store.insert(items).await.unwrap();
    assert_eq!(store.expired(999, 10).await.unwrap(), vec![]);
    let due = store.expired(5_000, 10).await.unwrap();
    assert_eq!(
        due,
        vec![
            (1_000, cards.tenant.clone(), tokens[1]),
            (5_000, cards.tenant.clone(), tokens[0])
        ]
    );
    assert_eq!(store.expired(u64::MAX, 1).await.unwrap().len(), 1, "limit");
    // A stale index item (wrong time) removes nothing but itself.
    let stale = vec![(4_000, cards.tenant.clone(), tokens[0])];
    assert_eq!(store.delete_expired(stale).await.unwrap(), 0);
    assert!(
        store
            .get_entry(&cards.tenant, &tokens[0])
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.delete_expired(due).await.unwrap(), 2);
    for i in [0, 1] {
        assert!(
            store
                .get_entry(&cards.tenant, &tokens[i])
                .await
                .unwrap()
                .is_none()
        );
    }
    assert_eq!(
        store
            .get_token_for(&cards.tenant, &cards.fingerprint(1))
            .await
            .unwrap(),
        None,
        "the index entry went with the token"
    );
    assert_eq!(
        store.expired(u64::MAX, 10).await.unwrap(),
        vec![(9_000, cards.tenant.clone(), tokens[2])]
    );
    // Deleting an expiring token by hand takes its index entry too.
    assert!(store.delete(&cards.tenant, &tokens[2]).await.unwrap());
    assert_eq!(store.expired(u64::MAX, 10).await.unwrap(), vec![]);
    let again = store
        .insert(vec![cards.insert(1, cards.token(1))])
        .await
        .unwrap();
    assert_eq!(again, vec![InsertOutcome::Inserted]);
    store.close(Vec::new()).await.unwrap();
}

/// Collection sessions: create-if-absent, compare-and-swap (one winner
/// among concurrent swaps from the same read), delete, durability across
/// a reopen, and the sweep by time.
pub async fn sessions_compare_and_swap(backend: &dyn Backend) {
    let store = backend.open().await;
    let id = |n: u8| [n; 16];
    let v1 = b"\x01record-one".to_vec();
    let v2 = b"\x01record-two".to_vec();
    assert_eq!(store.get_session(&id(1)).await.unwrap(), None);
    assert!(
        store
            .swap_session(&id(1), None, Some((5_000, v1.clone())))
            .await
            .unwrap()
    );
    assert!(
        !store
            .swap_session(&id(1), None, Some((5_000, v2.clone())))
            .await
            .unwrap(),
        "created twice"
    );
    assert_eq!(store.get_session(&id(1)).await.unwrap(), Some(v1.clone()));
    // Eight swaps from the same read: exactly one wins.
    let mut racers = Vec::new();
    for n in 0..8u8 {
        let expected = v1.clone();
        let store = &store;
        racers.push(async move {
            let mut new = b"\x01racer-".to_vec();
            new.push(b'0' + n);
            store
                .swap_session(&id(1), Some(&expected), Some((5_000, new)))
                .await
                .unwrap()
        });
    }
    let won = futures_util::future::join_all(racers).await;
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    let current = store.get_session(&id(1)).await.unwrap().unwrap();
    assert!(current.starts_with(b"\x01racer-"));
    assert!(
        !store.swap_session(&id(1), Some(&v1), None).await.unwrap(),
        "stale delete"
    );
    assert!(
        store
            .swap_session(&id(2), None, Some((1_000, v2.clone())))
            .await
            .unwrap()
    );
    assert!(
        store
            .swap_session(&id(3), None, Some((9_000, v2.clone())))
            .await
            .unwrap()
    );
    drop(store);
    let store = backend.open().await;
    assert_eq!(
        store.get_session(&id(1)).await.unwrap(),
        Some(current.clone())
    );
    // The sweep takes what is due (id 2 at 1 000) and nothing else.
    assert_eq!(store.sweep_sessions(4_999, 10).await.unwrap(), 1);
    assert_eq!(store.get_session(&id(2)).await.unwrap(), None);
    assert_eq!(
        store.get_session(&id(1)).await.unwrap(),
        Some(current.clone())
    );
    assert_eq!(store.sweep_sessions(u64::MAX, 10).await.unwrap(), 2);
    assert_eq!(store.get_session(&id(3)).await.unwrap(), None);
    assert!(
        store
            .swap_session(&id(1), None, Some((1, v1)))
            .await
            .unwrap(),
        "recreated"
    );
    assert!(
        store
            .swap_session(&id(1), Some(b"\x01record-one"), None)
            .await
            .unwrap()
    );
    assert_eq!(store.get_session(&id(1)).await.unwrap(), None);
    store.close(Vec::new()).await.unwrap();
}

/// An insert that completes a collection session: the session gets the
/// record of the token the card ends up with (its own when inserted, the
/// PAN's existing one otherwise), in the same commit; nothing of the
/// session for a collision, and no swap over a record that changed.
pub async fn an_insert_completes_its_session(backend: &dyn Backend) {
    use cardvault::store::SessionCompletion;
    let store = backend.open().await;
    let cards = Cards::new();
    let completion = |id: u8, expected: &[u8]| SessionCompletion {
        id: vec![id; 16],
        expected: expected.to_vec(),
        sweep_at: 9_000,
        record: std::sync::Arc::new(|token: &Token| format!("\x01done {token}").into_bytes()),
    };
    let open = b"\x01open".to_vec();
    for id in 1..=4u8 {
        assert!(
            store
                .swap_session(&[id; 16], None, Some((9_000, open.clone())))
                .await
                .unwrap()
        );
    }
    // A new card: inserted, and the session holds its token.
    let first = cards.token(1);
    let (outcome, swapped) = store
        .insert_completing(cards.insert(1, first), completion(1, &open))
        .await
        .unwrap();
    assert_eq!((outcome, swapped), (InsertOutcome::Inserted, true));
    assert_eq!(
        store.get_session(&[1; 16]).await.unwrap().unwrap(),
        format!("\x01done {first}").into_bytes()
    );
    assert!(
        store
            .get_entry(&cards.tenant, &first)
            .await
            .unwrap()
            .is_some()
    );
    // The same card again under another drafted token: the existing token.
    let (outcome, swapped) = store
        .insert_completing(cards.insert(1, cards.token(1)), completion(2, &open))
        .await
        .unwrap();
    assert_eq!((outcome, swapped), (InsertOutcome::Existing(first), true));
    assert_eq!(
        store.get_session(&[2; 16]).await.unwrap().unwrap(),
        format!("\x01done {first}").into_bytes()
    );
    // Another card drawing a taken token: nothing of the session.
    let (outcome, swapped) = store
        .insert_completing(cards.insert(2, first), completion(3, &open))
        .await
        .unwrap();
    assert_eq!((outcome, swapped), (InsertOutcome::TokenCollision, false));
    assert_eq!(store.get_session(&[3; 16]).await.unwrap().unwrap(), open);
    // A session that changed since it was read: the card is stored, the
    // session is not swapped.
    let third = cards.token(3);
    let (outcome, swapped) = store
        .insert_completing(cards.insert(3, third), completion(4, b"\x01stale"))
        .await
        .unwrap();
    assert_eq!((outcome, swapped), (InsertOutcome::Inserted, false));
    assert_eq!(store.get_session(&[4; 16]).await.unwrap().unwrap(), open);
    assert!(
        store
            .get_entry(&cards.tenant, &third)
            .await
            .unwrap()
            .is_some()
    );
    store.close(Vec::new()).await.unwrap();
}

macro_rules! store_suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn a_fingerprint_keeps_its_first_token() {
                super::a_fingerprint_keeps_its_first_token(&$make).await;
            }
            #[tokio::test]
            async fn batched_lookups_answer_in_input_order() {
                super::batched_lookups_answer_in_input_order(&$make).await;
            }
            #[tokio::test]
            async fn a_taken_token_is_a_collision_and_nothing_is_overwritten() {
                super::a_taken_token_is_a_collision_and_nothing_is_overwritten(&$make).await;
            }
            #[tokio::test]
            async fn items_of_one_call_are_checked_against_each_other() {
                super::items_of_one_call_are_checked_against_each_other(&$make).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_inserts_of_one_pan_yield_one_token() {
                super::concurrent_inserts_of_one_pan_yield_one_token(&$make).await;
            }
            #[tokio::test]
            async fn acknowledged_writes_survive_a_reopen() {
                super::acknowledged_writes_survive_a_reopen(&$make).await;
            }
            #[tokio::test]
            async fn a_stale_absence_never_overwrites() {
                super::a_stale_absence_never_overwrites(&$make).await;
            }
            #[tokio::test]
            async fn a_stale_token_absence_never_overwrites() {
                super::a_stale_token_absence_never_overwrites(&$make).await;
            }
            #[tokio::test]
            async fn expiry_updates_and_deletes() {
                super::expiry_updates_and_deletes(&$make).await;
            }
            #[tokio::test]
            async fn expiring_tokens_are_listed_and_swept() {
                super::expiring_tokens_are_listed_and_swept(&$make).await;
            }
            #[tokio::test]
            async fn keys_and_counters() {
                super::keys_and_counters(&$make).await;
            }
            #[tokio::test]
            async fn scans_and_reseals_compare_and_swap() {
                super::scans_and_reseals_compare_and_swap(&$make).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sessions_compare_and_swap() {
                super::sessions_compare_and_swap(&$make).await;
            }
            #[tokio::test]
            async fn an_insert_completes_its_session() {
                super::an_insert_completes_its_session(&$make).await;
            }
        }
    };
}

/// RocksDB in a temp dir.
pub struct RocksBackend {
    dir: tempfile::TempDir,
}

impl RocksBackend {
    pub fn new() -> RocksBackend {
        RocksBackend {
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

impl Backend for RocksBackend {
    fn open(&self) -> Opening<'_> {
        let options = cardvault::store::rocksdb::StoreOptions {
            min_free_bytes: 0,
            // Small, so the suite's churn makes the writer forget and fall
            // back to reading the database.
            recent_writes: 64,
            ..Default::default()
        };
        let path = self.dir.path().join("db");
        Box::pin(async move {
            Box::new(cardvault::store::rocksdb::RocksStore::open(&path, &options).unwrap())
                as Box<dyn Store>
        })
    }
}

/// A real PostgreSQL 15 started for the test (see `common::postgres`).
pub struct PgBackend {
    server: crate::common::postgres::Postgres,
}

impl PgBackend {
    pub fn new() -> PgBackend {
        PgBackend {
            server: crate::common::postgres::Postgres::start(),
        }
    }
}

impl Backend for PgBackend {
    fn open(&self) -> Opening<'_> {
        Box::pin(async move { Box::new(self.server.store(4).await) as Box<dyn Store> })
    }

    fn marks_clean_shutdown(&self) -> bool {
        false
    }
}

store_suite!(rocksdb, RocksBackend::new());
store_suite!(postgres, PgBackend::new());

/// The RocksDB store's in-memory key filters (src/store/rocksdb/key_filter.rs):
/// a lookup they rule out never reaches RocksDB, so a key they lack would
/// read as absent and be issued twice.
mod rocksdb_key_filter {
    use super::*;
    use cardvault::store::rocksdb::{RocksStore, StoreOptions};

    const STORED: u64 = 40_000;

    fn open(path: &std::path::Path) -> RocksStore {
        let options = StoreOptions {
            min_free_bytes: 0,
            ..Default::default()
        };
        RocksStore::open(path, &options).unwrap()
    }

    /// Waits (bounded) for the scan at open to finish.
    async fn until_ready(store: &RocksStore) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !store.key_filters_ready() {
            assert!(
                std::time::Instant::now() < deadline,
                "key filters never ready"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// After a reopen, keys stored before it (added by the scan) and keys
    /// written while the scan ran (added by the writer) are all found, and
    /// keys never written read as absent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_stored_and_every_new_key_is_found_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let cards = Cards::new();
        let mut tokens = Vec::new();
        {
            let store = open(&path);
            for start in (0..STORED).step_by(1000) {
                let batch: Vec<Insert> = (start..start + 1000)
                    .map(|i| cards.insert(i, cards.token(i)))
                    .collect();
                tokens.extend(batch.iter().map(|item| item.token));
                let out = store.insert(batch).await.unwrap();
                assert!(out.iter().all(|o| *o == InsertOutcome::Inserted));
            }
            Box::new(store).close(Vec::new()).await.unwrap();
        }
        let store = open(&path);
        // Written at once, most likely while the scan still runs.
        let during: Vec<Insert> = (STORED..STORED + 200)
            .map(|i| cards.insert(i, cards.token(i)))
            .collect();
        tokens.extend(during.iter().map(|item| item.token));
        for item in during {
            let out = store.insert(vec![item]).await.unwrap();
            assert_eq!(out, vec![InsertOutcome::Inserted]);
        }
        until_ready(&store).await;
        let all = STORED + 200;
        let fps: Vec<Fingerprint> = (0..all).map(|i| cards.fingerprint(i)).collect();
        let found = store.get_tokens_for(&cards.tenant, &fps).await.unwrap();
        let lost = found.iter().filter(|t| t.is_none()).count();
        assert_eq!(
            lost, 0,
            "{lost} of {all} stored fingerprints read as absent"
        );
        assert_eq!(found, tokens.iter().copied().map(Some).collect::<Vec<_>>());
        for i in [0, STORED - 1, STORED, all - 1] {
            assert_eq!(
                store
                    .get_token_for(&cards.tenant, &cards.fingerprint(i))
                    .await
                    .unwrap(),
                Some(tokens[i as usize])
            );
        }
        let taken = store.tokens_taken(&cards.tenant, &tokens).await.unwrap();
        assert!(taken.iter().all(|t| *t), "a stored token read as free");
        // A PAN stored before the reopen is not issued a second token.
        let again = store
            .insert(vec![cards.insert(7, cards.token(7))])
            .await
            .unwrap();
        assert_eq!(again, vec![InsertOutcome::Existing(tokens[7])]);
        // Never written: absent (through the filter or RocksDB, same answer).
        let unknown: Vec<Fingerprint> = (all..all + 1000).map(|i| cards.fingerprint(i)).collect();
        let found = store.get_tokens_for(&cards.tenant, &unknown).await.unwrap();
        assert!(found.iter().all(Option::is_none));
        Box::new(store).close(Vec::new()).await.unwrap();
    }

    /// With the filters ready, an acknowledged insert is visible to the
    /// next lookup at once, from another task, for every one of many
    /// inserts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_acknowledged_insert_is_found_by_the_next_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(&dir.path().join("db")));
        until_ready(&store).await;
        let cards = Arc::new(Cards::new());
        let mut tasks = Vec::new();
        for lane in 0..4u64 {
            let (store, cards) = (Arc::clone(&store), Arc::clone(&cards));
            tasks.push(tokio::spawn(async move {
                for n in 0..250 {
                    let i = lane * 1000 + n;
                    let token = cards.token(i);
                    let out = store.insert(vec![cards.insert(i, token)]).await.unwrap();
                    assert_eq!(out, vec![InsertOutcome::Inserted]);
                    let reader = {
                        let (store, cards) = (Arc::clone(&store), Arc::clone(&cards));
                        tokio::spawn(async move {
                            let fp = cards.fingerprint(i);
                            let found = store.get_token_for(&cards.tenant, &fp).await.unwrap();
                            let taken = store.tokens_taken(&cards.tenant, &[token]).await.unwrap();
                            (found, taken)
                        })
                    };
                    assert_eq!(reader.await.unwrap(), (Some(token), vec![true]));
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }
}
