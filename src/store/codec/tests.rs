//! Round trips and refusals of every layout.
use super::db_keys::*;
use super::entry::*;
use super::key_record::*;
use super::*;
use crate::crypto::record::MIN_RECORD_LEN;
use crate::crypto::{Fingerprint, KeyLabel, KeyPurpose};
use crate::domain::{Bin, Brand, Expiry, Last4, TenantId, Token};
use proptest::prelude::*;

fn sample(with_options: bool) -> TokenEntry {
    TokenEntry {
        meta: TokenMeta {
            pan_len: 16,
            brand: Brand::Visa,
            bin: with_options.then(|| Bin::from_digits(b"411111").unwrap()),
            last4: Last4::from_digits(b"1111").unwrap(),
            expiry: with_options.then(|| Expiry::new(12, 2029).unwrap()),
            created_ms: 1_790_000_000_123,
            expires_ms: with_options.then_some(1_790_000_900_123),
        },
        fingerprint: with_options.then(|| Fingerprint::from_slice(&[7; 16]).unwrap()),
        record: vec![1; MIN_RECORD_LEN + 4],
    }
}

/// A token with the sample's shape (BIN 411111, last 4 1111).
fn shaped() -> Token {
    Token::parse("4111119274601111").unwrap()
}

/// A token of another length and other digits (an imported one).
fn unshaped() -> Token {
    Token::parse("9990001112223334").unwrap()
}

#[test]
fn entries_round_trip() {
    for with_options in [true, false] {
        let entry = sample(with_options);
        for token in [shaped(), unshaped()] {
            let bytes = entry.encode(&token);
            assert_eq!(bytes[0], ENTRY_FORMAT_V2);
            assert_eq!(TokenEntry::decode(&bytes, &token).unwrap(), entry);
        }
    }
}

#[test]
fn entries_leave_out_what_the_token_carries() {
    let entry = sample(true);
    let short = entry.encode(&shaped());
    let long = entry.encode(&unshaped());
    // PAN length, BIN and last 4: 11 bytes the token already holds.
    assert_eq!(long.len() - short.len(), 11);
    // Written out although the token carries them: not the one
    // encoding, refused.
    assert!(TokenEntry::decode(&long, &unshaped()).is_ok());
    assert_eq!(
        TokenEntry::decode(&long, &shaped()).unwrap_err(),
        CodecError::InvalidField {
            what: "token entry",
            field: "shape flag"
        }
    );
    // 3 header + 3 expiry + 8 created + 8 expires + 16 fingerprint +
    // 1 length + the record.
    assert_eq!(short.len(), 3 + 3 + 8 + 8 + 16 + 1 + MIN_RECORD_LEN + 4);
    // A BIN-less (short PAN) entry under a token of its length.
    let mut amex = sample(false);
    amex.meta.pan_len = 15;
    amex.meta.brand = Brand::Amex;
    let token = Token::parse("370000000001111").unwrap();
    let bytes = amex.encode(&token);
    assert_ne!(bytes[1] & FLAG_SHAPE_FROM_TOKEN, 0);
    assert_eq!(TokenEntry::decode(&bytes, &token).unwrap(), amex);
}

#[test]
fn format_1_entries_still_read() {
    // Written by databases of formats 1-3: PAN length before the
    // brand, BIN and last 4 always, a 32-byte fingerprint.
    let entry = sample(true);
    let mut v1 = vec![
        ENTRY_FORMAT_V1,
        FLAG_BIN | FLAG_EXPIRY | FLAG_FINGERPRINT | FLAG_EXPIRES,
        16,
        Brand::Visa.code(),
    ];
    v1.extend_from_slice(b"411111");
    v1.extend_from_slice(b"1111");
    v1.push(12);
    v1.extend_from_slice(&2029u16.to_be_bytes());
    v1.extend_from_slice(&1_790_000_000_123u64.to_be_bytes());
    v1.extend_from_slice(&1_790_000_900_123u64.to_be_bytes());
    v1.extend_from_slice(&[7; 16]);
    v1.extend_from_slice(&[8; 16]);
    v1.push((MIN_RECORD_LEN + 4) as u8);
    v1.extend_from_slice(&[1; MIN_RECORD_LEN + 4]);
    assert_eq!(TokenEntry::decode(&v1, &shaped()).unwrap(), entry);
    // Format 1 has no shape flag.
    let mut shape = v1.clone();
    shape[1] |= FLAG_SHAPE_FROM_TOKEN;
    assert!(TokenEntry::decode(&shape, &shaped()).is_err());
}

#[test]
fn entry_decoder_rejects_damage() {
    for token in [shaped(), unshaped()] {
        let bytes = sample(true).encode(&token);
        for len in 0..bytes.len() {
            assert!(
                TokenEntry::decode(&bytes[..len], &token).is_err(),
                "len {len}"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            TokenEntry::decode(&trailing, &token).unwrap_err(),
            CodecError::Trailing {
                what: "token entry"
            }
        );
        let mut format = bytes.clone();
        format[0] = 9;
        assert!(matches!(
            TokenEntry::decode(&format, &token).unwrap_err(),
            CodecError::UnknownFormat { format: 9, .. }
        ));
        let mut flags = bytes.clone();
        flags[1] |= 0x80;
        assert!(TokenEntry::decode(&flags, &token).is_err());
    }
}

#[test]
fn key_records_and_names_round_trip() {
    let record = KeyRecord {
        state: KeyState::DecryptOnly,
        created_ms: 5,
        changed_ms: 9,
        wrapped: vec![3; 61],
        wrapped_next: None,
    };
    assert_eq!(KeyRecord::decode(&record.encode()).unwrap(), record);
    assert_eq!(record.encode()[0], KEY_RECORD_FORMAT_V3);
    let dual = KeyRecord {
        wrapped_next: Some(vec![4; 61]),
        ..record.clone()
    };
    assert_eq!(KeyRecord::decode(&dual.encode()).unwrap(), dual);
    let cut = dual.encode();
    assert!(KeyRecord::decode(&cut[..cut.len() - 1]).is_err());
    let destroyed = KeyRecord {
        state: KeyState::Destroyed,
        wrapped: Vec::new(),
        ..record.clone()
    };
    assert_eq!(KeyRecord::decode(&destroyed.encode()).unwrap(), destroyed);
    // Older formats still read: V1 (one wrapping), V2 (two), no change time.
    let mut v1 = vec![KEY_RECORD_FORMAT_V1, 2];
    v1.extend_from_slice(&5u64.to_be_bytes());
    v1.push(61);
    v1.extend_from_slice(&[3; 61]);
    let old = KeyRecord::decode(&v1).unwrap();
    assert_eq!(
        (old.created_ms, old.changed_ms, old.wrapped_next),
        (5, 5, None)
    );
    let mut v2 = v1.clone();
    v2[0] = KEY_RECORD_FORMAT_V2;
    v2.push(61);
    v2.extend_from_slice(&[4; 61]);
    assert_eq!(
        KeyRecord::decode(&v2).unwrap().wrapped_next,
        Some(vec![4; 61])
    );
    let label = KeyLabel {
        tenant: TenantId::parse("shop").unwrap(),
        purpose: KeyPurpose::Fingerprint,
        version: 9,
    };
    assert_eq!(
        decode_keys_key(&wrapped_key_key(&label)).unwrap(),
        KeysEntry::Wrapped(label.clone())
    );
    assert_eq!(
        decode_keys_key(&counter_key(&label)).unwrap(),
        KeysEntry::Counter(label)
    );
    assert_eq!(decode_counter(&42u64.to_be_bytes()).unwrap(), 42);
    assert!(decode_counter(&[0; 9]).is_err());
}

#[test]
fn tenant_prefix_keeps_tenants_apart() {
    let a = TenantId::parse("ab").unwrap();
    let b = TenantId::parse("a").unwrap();
    let t1 =
        Token::parse("1234567890123").unwrap_or_else(|_| Token::parse("1234567890124").unwrap());
    assert!(!token_key(&a, &t1).starts_with(&token_key(&b, &t1)[..2]));
}

proptest! {
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
        let token = Token::parse("4111119274601111").unwrap();
        let _ = TokenEntry::decode(&bytes, &token);
        let _ = KeyRecord::decode(&bytes);
        let _ = decode_keys_key(&bytes);
        let _ = decode_counter(&bytes);
    }
}
