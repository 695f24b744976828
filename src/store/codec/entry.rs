//! Token entries: what the `tokens` column family (or table) holds for one
//! token — non-secret metadata (brand, BIN and last 4 where the token does
//! not carry them, expiry, times) and the sealed record.

use super::{CodecError, Reader};
use crate::crypto::Fingerprint;
use crate::crypto::fingerprint::{FINGERPRINT_LEN, LEGACY_FINGERPRINT_LEN};
use crate::crypto::record::{MAX_RECORD_LEN, MIN_RECORD_LEN};
use crate::domain::{Bin, Brand, Expiry, Last4, MAX_DIGITS, MIN_DIGITS, Token};

/// Format byte of a token entry with a 256-bit fingerprint and its PAN
/// length, BIN and last 4 always written out (database formats 1–3). Read,
/// never written.
pub const ENTRY_FORMAT_V1: u8 = 1;
/// Format byte of a token entry as this build writes it: a 128-bit
/// fingerprint, and — flag [`FLAG_SHAPE_FROM_TOKEN`] — PAN length, BIN and
/// last 4 left out when the token itself carries them (every token this
/// vault makes; an imported token may not).
pub const ENTRY_FORMAT_V2: u8 = 2;

pub(super) const FLAG_BIN: u8 = 1;
pub(super) const FLAG_EXPIRY: u8 = 2;
pub(super) const FLAG_FINGERPRINT: u8 = 4;
/// The token expires (`ttl_s` at tokenization): an expiry time follows
/// the creation time. Database format 3.
pub(super) const FLAG_EXPIRES: u8 = 8;
/// Entry format 2: the PAN's length, BIN (when `FLAG_BIN`) and last 4 are
/// the token's own length, first six and last four digits, so the entry
/// does not repeat them.
pub(super) const FLAG_SHAPE_FROM_TOKEN: u8 = 16;
pub(super) const KNOWN_FLAGS_V1: u8 = FLAG_BIN | FLAG_EXPIRY | FLAG_FINGERPRINT | FLAG_EXPIRES;
pub(super) const KNOWN_FLAGS_V2: u8 = KNOWN_FLAGS_V1 | FLAG_SHAPE_FROM_TOKEN;

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
