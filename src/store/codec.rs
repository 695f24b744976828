//! Byte layouts of everything the store persists: RocksDB keys for tokens,
//! fingerprints and data keys, token entries (non-secret metadata plus the
//! sealed record) and wrapped-key records. Pure functions, no RocksDB, so the
//! decoders can be fuzzed without it. Every decoder rejects truncated,
//! oversized, trailing or unknown bytes with a [`CodecError`], never a panic.

use crate::crypto::fingerprint::{FINGERPRINT_LEN, LEGACY_FINGERPRINT_LEN};
use crate::crypto::record::{MAX_RECORD_LEN, MIN_RECORD_LEN};
use crate::crypto::{Fingerprint, KeyLabel, KeyPurpose};
use crate::domain::{Bin, Brand, Expiry, Last4, MAX_DIGITS, MIN_DIGITS, TenantId, Token};

/// Format byte of a token entry with a 256-bit fingerprint and its PAN
/// length, BIN and last 4 always written out (database formats 1–3). Read,
/// never written.
pub const ENTRY_FORMAT_V1: u8 = 1;
/// Format byte of a token entry as this build writes it: a 128-bit
/// fingerprint, and — flag [`FLAG_SHAPE_FROM_TOKEN`] — PAN length, BIN and
/// last 4 left out when the token itself carries them (every token this
/// vault makes; an imported token may not).
pub const ENTRY_FORMAT_V2: u8 = 2;
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
/// Entry format 2: the PAN's length, BIN (when `FLAG_BIN`) and last 4 are
/// the token's own length, first six and last four digits, so the entry
/// does not repeat them.
const FLAG_SHAPE_FROM_TOKEN: u8 = 16;
const KNOWN_FLAGS_V1: u8 = FLAG_BIN | FLAG_EXPIRY | FLAG_FINGERPRINT | FLAG_EXPIRES;
const KNOWN_FLAGS_V2: u8 = KNOWN_FLAGS_V1 | FLAG_SHAPE_FROM_TOKEN;

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
    /// Whether `token` carries this entry's PAN length, BIN and last 4.
    fn shape_matches(&self, token: &Token) -> bool {
        let m = &self.meta;
        let digits = token.as_bytes();
        usize::from(m.pan_len) == digits.len()
            && digits.ends_with(m.last4.as_bytes())
            && m.bin.is_none_or(|bin| digits.starts_with(bin.as_bytes()))
    }

    /// Encodes the entry stored under `token` (format 2).
    pub fn encode(&self, token: &Token) -> Vec<u8> {
        let m = &self.meta;
        let shape_from_token = self.shape_matches(token);
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
        if shape_from_token {
            flags |= FLAG_SHAPE_FROM_TOKEN;
        }
        let mut out = Vec::with_capacity(3 + 11 + 3 + 16 + FINGERPRINT_LEN + 1 + self.record.len());
        out.extend_from_slice(&[ENTRY_FORMAT_V2, flags, m.brand.code()]);
        if !shape_from_token {
            out.push(m.pan_len);
            if let Some(bin) = m.bin {
                out.extend_from_slice(bin.as_bytes());
            }
            out.extend_from_slice(m.last4.as_bytes());
        }
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

    /// Decodes an entry stored under `token`, written by
    /// [`TokenEntry::encode`] or by an older build (format 1).
    pub fn decode(bytes: &[u8], token: &Token) -> Result<TokenEntry, CodecError> {
        const WHAT: &str = "token entry";
        let invalid = |field| CodecError::InvalidField { what: WHAT, field };
        let mut r = Reader::new(bytes, WHAT);
        let format = r.u8()?;
        let known_flags = match format {
            ENTRY_FORMAT_V1 => KNOWN_FLAGS_V1,
            ENTRY_FORMAT_V2 => KNOWN_FLAGS_V2,
            _ => return Err(CodecError::UnknownFormat { what: WHAT, format }),
        };
        let flags = r.u8()?;
        if flags & !known_flags != 0 {
            return Err(invalid("flags"));
        }
        let shape_from_token = flags & FLAG_SHAPE_FROM_TOKEN != 0;
        let digits = token.as_bytes();
        let (pan_len, brand) = if format == ENTRY_FORMAT_V1 {
            let pan_len = r.u8()?;
            (pan_len, r.u8()?)
        } else {
            let brand = r.u8()?;
            let pan_len = if shape_from_token {
                u8::try_from(digits.len()).map_err(|_| invalid("PAN length"))?
            } else {
                r.u8()?
            };
            (pan_len, brand)
        };
        if !(MIN_DIGITS..=MAX_DIGITS).contains(&usize::from(pan_len)) {
            return Err(invalid("PAN length"));
        }
        let brand = Brand::from_code(brand).ok_or(invalid("brand"))?;
        let bin = if flags & FLAG_BIN == 0 {
            None
        } else if shape_from_token {
            Some(Bin::from_digits(&digits[..6]).ok_or(invalid("BIN"))?)
        } else {
            Some(Bin::from_digits(r.take(6)?).ok_or(invalid("BIN"))?)
        };
        let last4 = if shape_from_token {
            Last4::from_digits(&digits[digits.len() - 4..])
        } else {
            Last4::from_digits(r.take(4)?)
        }
        .ok_or(invalid("last 4"))?;
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
        let fingerprint = if flags & FLAG_FINGERPRINT == 0 {
            None
        } else if format == ENTRY_FORMAT_V1 {
            Some(
                Fingerprint::from_legacy(r.take(LEGACY_FINGERPRINT_LEN)?)
                    .ok_or(invalid("fingerprint"))?,
            )
        } else {
            Some(Fingerprint::from_slice(r.take(FINGERPRINT_LEN)?).ok_or(invalid("fingerprint"))?)
        };
        let record_len = usize::from(r.u8()?);
        if !(MIN_RECORD_LEN..=MAX_RECORD_LEN).contains(&record_len) {
            return Err(invalid("record length"));
        }
        let record = r.take(record_len)?.to_vec();
        r.finish()?;
        let entry = TokenEntry {
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
        };
        // One encoding per entry: format 2 leaves out what the token
        // carries whenever it does.
        if format == ENTRY_FORMAT_V2 && !shape_from_token && entry.shape_matches(token) {
            return Err(invalid("shape flag"));
        }
        Ok(entry)
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

/// The format-4 key for a `fingerprints` key of an older format (tenant ‖
/// 256-bit HMAC): tenant ‖ its first 16 bytes. `None` when the key is not
/// of the older shape (already short, or not a fingerprint key).
pub fn shortened_fingerprint_key(key: &[u8]) -> Option<Vec<u8>> {
    let tenant_len = usize::from(*key.first()?);
    let fingerprint = key.get(1 + tenant_len..)?;
    let fingerprint = Fingerprint::from_legacy(fingerprint)?;
    let mut short = key[..1 + tenant_len].to_vec();
    short.extend_from_slice(fingerprint.as_bytes());
    Some(short)
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
        let t1 = Token::parse("1234567890123")
            .unwrap_or_else(|_| Token::parse("1234567890124").unwrap());
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
}
