//! Entry points shared by the cargo-fuzz targets in `fuzz/` and by the test
//! that replays their seed corpora on stable Rust (`tests/fuzz_corpus.rs`).
//! Each takes arbitrary bytes, must never panic, and asserts the invariants
//! that parsing promises.

use crate::crypto::{DataKey, RecordView, SecretKey};
use crate::domain::{MAX_DIGITS, MIN_DIGITS, Pan, TenantId, Token, luhn};
use crate::store::codec::{self, KeyRecord, TokenEntry};

/// Fixed key under which the record seed corpus was sealed.
pub const FUZZ_RECORD_KEY: [u8; 32] = [0x5a; 32];
/// Tenant of the record seed corpus.
pub const FUZZ_TENANT: &str = "fuzz";
/// Token of the record seed corpus.
pub const FUZZ_TOKEN: &str = "4111111111111112";

/// `Pan::parse_bytes` on arbitrary input.
pub fn pan_parse(data: &[u8]) {
    if let Ok(pan) = Pan::parse_bytes(data) {
        let digits = pan.expose_digits();
        assert!((MIN_DIGITS..=MAX_DIGITS).contains(&digits.len()));
        assert!(digits.iter().all(u8::is_ascii_digit));
        assert!(luhn::passes(digits));
        let shown = format!("{pan:?}{pan}");
        assert!(!shown.contains(pan.expose_str()));
    }
}

/// `Token::parse_bytes` on arbitrary input.
pub fn token_parse(data: &[u8]) {
    if let Ok(token) = Token::parse_bytes(data) {
        assert_eq!(token.as_bytes(), data);
        assert!(!luhn::passes(token.as_bytes()));
    }
}

/// Record decoding and opening under the fixed fuzz key, plus every stored
/// structure's decoder, on arbitrary input.
pub fn record_open(data: &[u8]) {
    let (Some(secret), Ok(tenant), Ok(token)) = (
        SecretKey::from_slice(&FUZZ_RECORD_KEY),
        TenantId::parse(FUZZ_TENANT),
        Token::parse(FUZZ_TOKEN),
    ) else {
        return;
    };
    if let Ok(view) = RecordView::decode(data) {
        let key = DataKey::new(view.dek_version(), &secret, 0);
        if let Ok(pan) = view.open(&key, &tenant, &token) {
            assert!(luhn::passes(pan.expose_digits()));
        }
    }
    if let Ok(entry) = TokenEntry::decode(data, &token) {
        // Older formats are rewritten in the newest: the same entry, and
        // the newest format itself re-encodes byte for byte (the shape
        // flag is a function of the token, so it comes back the same).
        let again = entry.encode(&token);
        assert_eq!(TokenEntry::decode(&again, &token).ok(), Some(entry));
        if data.first() == again.first() {
            assert_eq!(again, data);
        }
    }
    if let Ok(record) = KeyRecord::decode(data) {
        // Older formats are rewritten in the newest: same record, and the
        // newest format itself re-encodes byte for byte.
        let again = record.encode();
        assert_eq!(KeyRecord::decode(&again).ok(), Some(record.clone()));
        if data.first() == again.first() {
            assert_eq!(again, data);
        }
    }
    let _ = codec::decode_keys_key(data);
}

/// Fixed audit key of the `audit_line` seed corpus.
pub const FUZZ_AUDIT_KEY: [u8; 32] = [0xa5; 32];

/// Audit trail line parsing (`audit verify` reads files anyone with disk
/// access could have edited): split off the MAC, check it against the
/// genesis MAC, and re-seal what opened — it must reproduce the line.
pub fn audit_line(data: &[u8]) {
    use crate::audit::chain::{Chain, GENESIS, split};
    let Some(key) = SecretKey::from_slice(&FUZZ_AUDIT_KEY) else {
        return;
    };
    let chain = Chain::new(&key);
    if let Ok((body, _)) = split(data) {
        assert!(body.ends_with(b"}"));
        if let Ok((opened, mac)) = chain.open(&GENESIS, data) {
            let mut resealed = Vec::new();
            assert_eq!(chain.seal_into(&GENESIS, &opened, &mut resealed), mac);
            assert_eq!(&resealed[..resealed.len() - 1], data);
        }
    }
}

/// Most items the `request_body` target lets a batch hold.
pub const FUZZ_MAX_BATCH: usize = 16;

/// Request bodies as a peer sends them: every route's shape, and both batch
/// shapes with a small limit. Never panics; a batch never comes back with
/// more items than the limit, and one refused as too large really had more.
pub fn request_body(data: &[u8]) {
    use crate::peer::body::{
        self, BodyError, ClearRequest, DetokenizeRequest, LookupRequest, TokenizeRequest,
    };
    use secrecy::ExposeSecret;
    let _ = body::parse::<TokenizeRequest>(data);
    let _ = body::parse::<LookupRequest>(data);
    let _ = body::parse::<ClearRequest>(data);
    if let Ok(request) = body::parse::<DetokenizeRequest>(data)
        && let Some(reason) = &request.reason
        && let Ok(kept) = body::check_reason(reason.expose_secret())
    {
        assert!(kept.chars().count() <= body::MAX_REASON_CHARS);
        assert!(!kept.chars().any(char::is_control));
    }
    for (field, with_reason) in [("pans", false), ("tokens", true)] {
        match body::parse_batch(data, field, FUZZ_MAX_BATCH, with_reason) {
            Ok(batch) => assert!(batch.items.len() <= FUZZ_MAX_BATCH),
            Err(BodyError::TooMany) => {
                // The same body with a larger limit parses, with more items
                // than the small one allowed (or fails later in the body).
                if let Ok(batch) = body::parse_batch(data, field, usize::MAX, with_reason) {
                    assert!(batch.items.len() > FUZZ_MAX_BATCH);
                }
            }
            Err(BodyError::Invalid(message)) => assert!(!message.is_empty()),
        }
    }
}

/// The name a client certificate (DER) gives its holder: never panics; a
/// name that comes back is non-empty and holds no control character.
pub fn certificate_name(data: &[u8]) {
    if let Ok(name) = crate::peer::names::certificate_name(data) {
        assert!(!name.name.is_empty());
        assert!(!name.name.chars().any(char::is_control));
        assert!(name.serial.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}

/// A custodian's share file (what `unseal` reads and the vault parses):
/// never panics; a share that parses prints back to text that parses to
/// the same share, and its printed form never shows the share's data.
pub fn kek_share(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(share) = crate::crypto::shares::KekShare::parse(text) {
        assert!(share.index >= 1 && share.index <= share.set.count);
        assert!(share.set.threshold >= crate::crypto::shares::MIN_THRESHOLD);
        let again = crate::crypto::shares::KekShare::parse(&share.to_text());
        assert!(again.is_ok_and(|a| a.index == share.index && a.set == share.set));
        let printed = format!("{share:?}");
        assert!(printed.contains("redacted"));
    }
}

/// A stored collection session record: arbitrary bytes decode or are
/// refused, never panic; what decodes encodes back to the same bytes.
pub fn session_record(data: &[u8]) {
    if let Ok(record) = codec::SessionRecord::decode(data) {
        assert_eq!(record.encode(), data);
    }
}

/// The card-number detector (`cardvault scan`, `tokenize-file`) on
/// arbitrary bytes: every finding spans only digits and single separators,
/// holds 12–19 digits of a known brand, passes Luhn exactly when it is a
/// PAN, and findings come in order without overlapping.
pub fn scan_detect(data: &[u8]) {
    use crate::scan::{Kind, detect};
    let mut last_end = 0;
    detect::find(data, |f| {
        assert!(last_end <= f.start && f.start < f.end && f.end <= data.len());
        last_end = f.end;
        let span = &data[f.start..f.end];
        assert!(span.first().is_some_and(u8::is_ascii_digit));
        assert!(span.last().is_some_and(u8::is_ascii_digit));
        assert!(
            span.iter()
                .all(|b| b.is_ascii_digit() || *b == b' ' || *b == b'-')
        );
        let digits = detect::digits_of(data, &f);
        assert_eq!(digits.len(), f.digits);
        assert!((MIN_DIGITS..=MAX_DIGITS).contains(&f.digits));
        assert_ne!(f.brand, crate::domain::Brand::Unknown);
        assert_eq!(luhn::passes(&digits), f.kind == Kind::Pan);
        assert_eq!(f.bin.is_some(), f.digits >= 16);
        assert!(f.kind == Kind::Pan || f.digits >= 16);
        assert_eq!(f.last4.as_bytes(), &digits[digits.len() - 4..]);
        assert!(!f.masked().contains(&*String::from_utf8_lossy(&digits[6..])));
    });
}

/// The payment page's markup as `watch check --http-only` reads it, on
/// arbitrary bytes: it ends, keeps each list within its bound, and every
/// inline script's text and every attribute it reports without a
/// character reference come from the page itself.
pub fn markup_scan(data: &[u8]) {
    use crate::peer::markup::{MAX_ITEMS, scan};
    let html = String::from_utf8_lossy(data);
    let found = scan(&html);
    assert!(found.scripts.len() <= MAX_ITEMS);
    assert!(found.frames.len() <= MAX_ITEMS && found.forms.len() <= MAX_ITEMS);
    for script in &found.scripts {
        assert!(html.contains(&script.text));
        if let Some(src) = &script.src
            && !html.contains('&')
        {
            assert!(html.contains(src.as_str()));
        }
    }
}
