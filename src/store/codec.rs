//! Byte layouts of everything the store persists: RocksDB keys for tokens,
//! fingerprints and data keys, token entries (non-secret metadata plus the
//! sealed record) and wrapped-key records. Pure functions, no RocksDB, so the
//! decoders can be fuzzed without it. Every decoder rejects truncated,
//! oversized, trailing or unknown bytes with a [`CodecError`], never a panic.

use crate::crypto::fingerprint::FINGERPRINT_LEN;
use crate::crypto::record::{MAX_RECORD_LEN, MIN_RECORD_LEN};
use crate::crypto::{Fingerprint, KeyLabel, KeyPurpose};
use crate::domain::{Bin, Brand, Expiry, Last4, MAX_DIGITS, MIN_DIGITS, TenantId, Token};

/// Format byte of a token entry.
pub const ENTRY_FORMAT_V1: u8 = 1;
/// Format byte of a stored data-key record.
pub const KEY_RECORD_FORMAT_V1: u8 = 1;
/// Format byte of a key record wrapped under two KEKs (a KEK rotation in
/// progress): V1's fields, then the key wrapped by the next KEK.
pub const KEY_RECORD_FORMAT_V2: u8 = 2;
/// Format byte of a key record with the time of its last state change:
/// state, created, changed, wrapped, then a flag byte and the next KEK's
/// wrapping when the flag is 1. What this build writes.
pub const KEY_RECORD_FORMAT_V3: u8 = 3;

const FLAG_BIN: u8 = 1;
const FLAG_EXPIRY: u8 = 2;
const FLAG_FINGERPRINT: u8 = 4;
/// The token expires (`ttl_s` at tokenization): an expiry time follows
/// the creation time. Database format 3.
const FLAG_EXPIRES: u8 = 8;
const KNOWN_FLAGS: u8 = FLAG_BIN | FLAG_EXPIRY | FLAG_FINGERPRINT | FLAG_EXPIRES;

const KEY_PREFIX_WRAPPED: u8 = 1;
const KEY_PREFIX_COUNTER: u8 = 2;

/// Why stored bytes could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Ended before a field was complete.
    #[error("stored {what} is truncated")]
    Truncated {
        /// Which structure.
        what: &'static str,
    },
    /// Bytes left after the last field.
    #[error("stored {what} has trailing bytes")]
    Trailing {
        /// Which structure.
        what: &'static str,
    },
    /// Format byte this build does not know.
    #[error("stored {what} has unknown format {format}")]
    UnknownFormat {
        /// Which structure.
        what: &'static str,
        /// The format byte.
        format: u8,
    },
    /// A field holds a value outside its range.
    #[error("stored {what} has an invalid {field}")]
    InvalidField {
        /// Which structure.
        what: &'static str,
        /// Which field.
        field: &'static str,
    },
}

/// Non-secret facts about a tokenized PAN, kept beside its sealed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenMeta {
    /// Digits in the PAN (and the token).
    pub pan_len: u8,
    /// Card brand.
    pub brand: Brand,
    /// First six digits, only for PANs of 16+ digits.
    pub bin: Option<Bin>,
    /// Last four digits.
    pub last4: Last4,
    /// Expiry month, when the caller gave one.
    pub expiry: Option<Expiry>,
    /// Creation time, milliseconds since the Unix epoch (UTC).
    pub created_ms: u64,
    /// When the token expires (ms since the epoch), for tokens made with a
    /// time to live; after it every route answers 404 and a sweep deletes it.
    pub expires_ms: Option<u64>,
}

impl TokenMeta {
    /// Whether the token has expired at `now_ms`.
    pub fn expired_at(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|at| at <= now_ms)
    }
}

/// What the `tokens` column family holds for one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    /// Non-secret metadata.
    pub meta: TokenMeta,
    /// Fingerprint of the PAN (deterministic tenants only), so a delete can
    /// remove the fingerprint index entry too.
    pub fingerprint: Option<Fingerprint>,
    /// The sealed record (see [`crate::crypto::record`]).
    pub record: Vec<u8>,
}

impl TokenEntry {
    /// Encodes the entry.
    pub fn encode(&self) -> Vec<u8> {
        let m = &self.meta;
        let mut flags = 0;
        if m.bin.is_some() {
            flags |= FLAG_BIN;
        }
        if m.expiry.is_some() {
            flags |= FLAG_EXPIRY;
        }
        if self.fingerprint.is_some() {
            flags |= FLAG_FINGERPRINT;
        }
        if m.expires_ms.is_some() {
            flags |= FLAG_EXPIRES;
        }
        let mut out = Vec::with_capacity(4 + 6 + 4 + 3 + 8 + 32 + 1 + self.record.len());
        out.extend_from_slice(&[ENTRY_FORMAT_V1, flags, m.pan_len, m.brand.code()]);
        if let Some(bin) = m.bin {
            out.extend_from_slice(bin.as_bytes());
        }
        out.extend_from_slice(m.last4.as_bytes());
        if let Some(expiry) = m.expiry {
            out.push(expiry.month());
            out.extend_from_slice(&expiry.year().to_be_bytes());
        }
        out.extend_from_slice(&m.created_ms.to_be_bytes());
        if let Some(at) = m.expires_ms {
            out.extend_from_slice(&at.to_be_bytes());
        }
        if let Some(fp) = &self.fingerprint {
            out.extend_from_slice(fp.as_bytes());
        }
        out.push(self.record.len() as u8);
        out.extend_from_slice(&self.record);
        out
    }

    /// Decodes an entry written by [`TokenEntry::encode`].
    pub fn decode(bytes: &[u8]) -> Result<TokenEntry, CodecError> {
        const WHAT: &str = "token entry";
        let invalid = |field| CodecError::InvalidField { what: WHAT, field };
        let mut r = Reader::new(bytes, WHAT);
        let format = r.u8()?;
        if format != ENTRY_FORMAT_V1 {
            return Err(CodecError::UnknownFormat { what: WHAT, format });
        }
        let flags = r.u8()?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(invalid("flags"));
        }
        let pan_len = r.u8()?;
        if !(MIN_DIGITS..=MAX_DIGITS).contains(&usize::from(pan_len)) {
            return Err(invalid("PAN length"));
        }
        let brand = Brand::from_code(r.u8()?).ok_or(invalid("brand"))?;
        let bin = if flags & FLAG_BIN != 0 {
            Some(Bin::from_digits(r.take(6)?).ok_or(invalid("BIN"))?)
        } else {
            None
        };
        let last4 = Last4::from_digits(r.take(4)?).ok_or(invalid("last 4"))?;
        let expiry = if flags & FLAG_EXPIRY != 0 {
            let month = r.u8()?;
            let year = r.u16()?;
            Some(Expiry::new(month, year).map_err(|_| invalid("expiry"))?)
        } else {
            None
        };
        let created_ms = r.u64()?;
        let expires_ms = if flags & FLAG_EXPIRES != 0 {
            Some(r.u64()?)
        } else {
            None
        };
        let fingerprint = if flags & FLAG_FINGERPRINT != 0 {
            Some(Fingerprint::from_slice(r.take(FINGERPRINT_LEN)?).ok_or(invalid("fingerprint"))?)
        } else {
            None
        };
        let record_len = usize::from(r.u8()?);
        if !(MIN_RECORD_LEN..=MAX_RECORD_LEN).contains(&record_len) {
            return Err(invalid("record length"));
        }
        let record = r.take(record_len)?.to_vec();
        r.finish()?;
        Ok(TokenEntry {
            meta: TokenMeta {
                pan_len,
                brand,
                bin,
                last4,
                expiry,
                created_ms,
                expires_ms,
            },
            fingerprint,
            record,
        })
    }
}

/// Lifecycle of a data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum KeyState {
    /// Used for new encryptions (one per tenant and purpose).
    Active = 1,
    /// Rotated out: opens old records, seals nothing new.
    DecryptOnly = 2,
    /// Destroyed: no record is sealed under it any more, and its wrapped
    /// bytes are gone; the record stays for the inventory.
    Destroyed = 3,
}

/// A data key as stored: its state, creation time and wrapped bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Lifecycle state.
    pub state: KeyState,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Time of the last state change (activation, retirement,
    /// destruction); records of formats 1 and 2 read it as `created_ms`.
    pub changed_ms: u64,
    /// The key wrapped by the KEK (empty once destroyed).
    pub wrapped: Vec<u8>,
    /// The same key wrapped by the next KEK, while a KEK rotation waits for
    /// the vault to open on it (docs/keys.md).
    pub wrapped_next: Option<Vec<u8>>,
}

impl KeyRecord {
    /// This record destroyed at `now_ms`: label and dates kept for the
    /// inventory, no key bytes under any KEK.
    pub fn destroyed(&self, now_ms: u64) -> KeyRecord {
        KeyRecord {
            state: KeyState::Destroyed,
            changed_ms: now_ms,
            wrapped: Vec::new(),
            wrapped_next: None,
            created_ms: self.created_ms,
        }
    }

    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(21 + 2 * self.wrapped.len());
        out.push(KEY_RECORD_FORMAT_V3);
        out.push(self.state as u8);
        out.extend_from_slice(&self.created_ms.to_be_bytes());
        out.extend_from_slice(&self.changed_ms.to_be_bytes());
        out.push(self.wrapped.len() as u8);
        out.extend_from_slice(&self.wrapped);
        match &self.wrapped_next {
            None => out.push(0),
            Some(next) => {
                out.push(1);
                out.push(next.len() as u8);
                out.extend_from_slice(next);
            }
        }
        out
    }

    /// Decodes a record written by [`KeyRecord::encode`].
    pub fn decode(bytes: &[u8]) -> Result<KeyRecord, CodecError> {
        const WHAT: &str = "key record";
        let mut r = Reader::new(bytes, WHAT);
        let format = r.u8()?;
        if !(KEY_RECORD_FORMAT_V1..=KEY_RECORD_FORMAT_V3).contains(&format) {
            return Err(CodecError::UnknownFormat { what: WHAT, format });
        }
        let state = match r.u8()? {
            1 => KeyState::Active,
            2 => KeyState::DecryptOnly,
            3 => KeyState::Destroyed,
            _ => {
                return Err(CodecError::InvalidField {
                    what: WHAT,
                    field: "state",
                });
            }
        };
        let created_ms = r.u64()?;
        let changed_ms = if format == KEY_RECORD_FORMAT_V3 {
            r.u64()?
        } else {
            created_ms
        };
        let len = usize::from(r.u8()?);
        let wrapped = r.take(len)?.to_vec();
        let has_next = match format {
            KEY_RECORD_FORMAT_V1 => false,
            KEY_RECORD_FORMAT_V2 => true,
            _ => match r.u8()? {
                0 => false,
                1 => true,
                _ => {
                    return Err(CodecError::InvalidField {
                        what: WHAT,
                        field: "next wrapping flag",
                    });
                }
            },
        };
        let wrapped_next = if has_next {
            let len = usize::from(r.u8()?);
            Some(r.take(len)?.to_vec())
        } else {
            None
        };
        r.finish()?;
        Ok(KeyRecord {
            state,
            created_ms,
            changed_ms,
            wrapped,
            wrapped_next,
        })
    }
}

fn push_tenant(out: &mut Vec<u8>, tenant: &TenantId) {
    // Tenant ids are at most 64 bytes, so one length byte suffices.
    out.push(tenant.as_str().len() as u8);
    out.extend_from_slice(tenant.as_str().as_bytes());
}

/// The first key after every key of `tenant` (in `tokens` and
/// `fingerprints`): its prefix with the last byte raised (tenant names are
/// ASCII, so it never overflows).
pub fn tenant_prefix_end(tenant: &TenantId) -> Vec<u8> {
    let mut end = tenant_prefix(tenant);
    if let Some(last) = end.last_mut() {
        *last = last.saturating_add(1);
    }
    end
}

/// The first bytes of every `tokens` key of `tenant`.
pub fn tenant_prefix(tenant: &TenantId) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + tenant.as_str().len());
    push_tenant(&mut key, tenant);
    key
}

const CHECKPOINT_PREFIX: &[u8] = b"reseal/";

/// `meta` key of a tenant's re-sealing checkpoint.
pub fn checkpoint_key(tenant: &TenantId) -> Vec<u8> {
    let mut key = CHECKPOINT_PREFIX.to_vec();
    key.extend_from_slice(tenant.as_str().as_bytes());
    key
}

/// The tenant of a checkpoint key; `None` for any other `meta` key.
pub fn decode_checkpoint_key(key: &[u8]) -> Option<TenantId> {
    let name = key.strip_prefix(CHECKPOINT_PREFIX)?;
    TenantId::parse(std::str::from_utf8(name).ok()?).ok()
}

/// `tokens` key: tenant (length-prefixed) ‖ token digits.
pub fn token_key(tenant: &TenantId, token: &Token) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + tenant.as_str().len() + token.len());
    push_tenant(&mut key, tenant);
    key.extend_from_slice(token.as_bytes());
    key
}

/// `expiry` key: expiry time (ms, big-endian, so keys sort by time) ‖
/// tenant (length-prefixed) ‖ token digits. The value is empty.
pub fn expiry_key(expires_ms: u64, tenant: &TenantId, token: &Token) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + 1 + tenant.as_str().len() + token.len());
    key.extend_from_slice(&expires_ms.to_be_bytes());
    push_tenant(&mut key, tenant);
    key.extend_from_slice(token.as_bytes());
    key
}

/// The parts of an [`expiry_key`].
pub fn decode_expiry_key(key: &[u8]) -> Result<(u64, TenantId, Token), CodecError> {
    let invalid = |field| CodecError::InvalidField {
        what: "expiry key",
        field,
    };
    let mut r = Reader::new(key, "expiry key");
    let at = r.u64()?;
    let len = usize::from(r.u8()?);
    let tenant = std::str::from_utf8(r.take(len)?)
        .ok()
        .and_then(|t| TenantId::parse(t).ok())
        .ok_or(invalid("tenant"))?;
    let rest = r.take(key.len().saturating_sub(9 + len))?;
    let token = Token::parse_bytes(rest).map_err(|_| invalid("token"))?;
    r.finish()?;
    Ok((at, tenant, token))
}

/// `fingerprints` key: tenant (length-prefixed) ‖ HMAC(PAN).
pub fn fingerprint_key(tenant: &TenantId, fingerprint: &Fingerprint) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + tenant.as_str().len() + FINGERPRINT_LEN);
    push_tenant(&mut key, tenant);
    key.extend_from_slice(fingerprint.as_bytes());
    key
}

fn label_key(prefix: u8, label: &KeyLabel) -> Vec<u8> {
    let mut key = vec![prefix];
    push_tenant(&mut key, &label.tenant);
    key.push(label.purpose.code());
    key.extend_from_slice(&label.version.to_be_bytes());
    key
}

/// `keys` key of a wrapped data key.
pub fn wrapped_key_key(label: &KeyLabel) -> Vec<u8> {
    label_key(KEY_PREFIX_WRAPPED, label)
}

/// `keys` key of a data key's persisted encryption counter.
pub fn counter_key(label: &KeyLabel) -> Vec<u8> {
    label_key(KEY_PREFIX_COUNTER, label)
}

/// What a `keys` column family key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysEntry {
    /// A wrapped data key.
    Wrapped(KeyLabel),
    /// A data key's encryption counter.
    Counter(KeyLabel),
}

/// Decodes a `keys` column family key.
pub fn decode_keys_key(bytes: &[u8]) -> Result<KeysEntry, CodecError> {
    const WHAT: &str = "key name";
    let invalid = |field| CodecError::InvalidField { what: WHAT, field };
    let mut r = Reader::new(bytes, WHAT);
    let prefix = r.u8()?;
    let tenant_len = usize::from(r.u8()?);
    let tenant = std::str::from_utf8(r.take(tenant_len)?)
        .ok()
        .and_then(|t| TenantId::parse(t).ok())
        .ok_or(invalid("tenant"))?;
    let purpose = KeyPurpose::from_code(r.u8()?).ok_or(invalid("purpose"))?;
    let version = r.u32()?;
    r.finish()?;
    let label = KeyLabel {
        tenant,
        purpose,
        version,
    };
    match prefix {
        KEY_PREFIX_WRAPPED => Ok(KeysEntry::Wrapped(label)),
        KEY_PREFIX_COUNTER => Ok(KeysEntry::Counter(label)),
        _ => Err(invalid("kind")),
    }
}

/// Decodes a persisted encryption counter.
pub fn decode_counter(bytes: &[u8]) -> Result<u64, CodecError> {
    let mut r = Reader::new(bytes, "key counter");
    let n = r.u64()?;
    r.finish()?;
    Ok(n)
}

/// A bounds-checked cursor over stored bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { bytes, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.bytes.len() < n {
            return Err(CodecError::Truncated { what: self.what });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn finish(self) -> Result<(), CodecError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Trailing { what: self.what })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            fingerprint: with_options.then(|| Fingerprint::from_slice(&[7; 32]).unwrap()),
            record: vec![1; MIN_RECORD_LEN + 4],
        }
    }

    #[test]
    fn entries_round_trip() {
        for with_options in [true, false] {
            let entry = sample(with_options);
            assert_eq!(TokenEntry::decode(&entry.encode()).unwrap(), entry);
        }
    }

    #[test]
    fn entry_decoder_rejects_damage() {
        let bytes = sample(true).encode();
        for len in 0..bytes.len() {
            assert!(TokenEntry::decode(&bytes[..len]).is_err(), "len {len}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            TokenEntry::decode(&trailing).unwrap_err(),
            CodecError::Trailing {
                what: "token entry"
            }
        );
        let mut format = bytes.clone();
        format[0] = 9;
        assert!(matches!(
            TokenEntry::decode(&format).unwrap_err(),
            CodecError::UnknownFormat { format: 9, .. }
        ));
        let mut flags = bytes.clone();
        flags[1] |= 0x80;
        assert!(TokenEntry::decode(&flags).is_err());
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
        let t1 = Token::parse("1234567890123")
            .unwrap_or_else(|_| Token::parse("1234567890124").unwrap());
        assert!(!token_key(&a, &t1).starts_with(&token_key(&b, &t1)[..2]));
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
            let _ = TokenEntry::decode(&bytes);
            let _ = KeyRecord::decode(&bytes);
            let _ = decode_keys_key(&bytes);
            let _ = decode_counter(&bytes);
        }
    }
}
