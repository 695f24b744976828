//! Sealed PAN records (docs/vault-core.md):
//! `format version | DEK version (u32 BE) | 96-bit random nonce | AES-256-GCM(PAN digits) + tag`,
//! with associated data = format version ‖ tenant ‖ token ‖ DEK version, each
//! length-prefixed. A record moved to another token, tenant or key version
//! fails to open. The decoder rejects truncated, oversized and unknown-format
//! bytes with an error and never panics.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Nonce, Tag};
use zeroize::Zeroizing;

use super::hierarchy::DataKey;
use super::push_length_prefixed;
use crate::domain::{MAX_DIGITS, MIN_DIGITS, Pan, TenantId, Token};
use crate::random::{self, RandomError};

/// The only record format this build writes and reads.
pub const RECORD_FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
/// Shortest valid record (a 12-digit PAN).
pub const MIN_RECORD_LEN: usize = HEADER_LEN + MIN_DIGITS + TAG_LEN;
/// Longest valid record (a 19-digit PAN).
pub const MAX_RECORD_LEN: usize = HEADER_LEN + MAX_DIGITS + TAG_LEN;

/// Why a record could not be sealed, decoded or opened. Never carries
/// plaintext or key bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Shorter than any valid record.
    #[error("record is truncated ({len} bytes, at least {MIN_RECORD_LEN} expected)")]
    Truncated {
        /// Bytes given.
        len: usize,
    },
    /// Longer than any valid record.
    #[error("record is oversized ({len} bytes, at most {MAX_RECORD_LEN} expected)")]
    Oversized {
        /// Bytes given.
        len: usize,
    },
    /// A format byte this build does not know.
    #[error("record has unknown format version {0}")]
    UnknownFormat(u8),
    /// The key offered is not the version the record names.
    #[error("record was sealed with key version {record}, not {offered}")]
    KeyVersionMismatch {
        /// Version in the record header.
        record: u32,
        /// Version of the key offered.
        offered: u32,
    },
    /// Authentication failed: wrong key, wrong tenant or token, or altered bytes.
    #[error("record failed authentication (altered, moved, or wrong key)")]
    Authentication,
    /// Decrypted bytes are not a valid PAN (cannot happen without a forged tag).
    #[error("record content is not a valid card number")]
    InvalidContent,
    /// The OS random source failed while sealing.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// A decoded (not yet opened) record: header fields and borrowed ciphertext.
#[derive(Clone, Copy)]
pub struct RecordView<'a> {
    format: u8,
    dek_version: u32,
    nonce: &'a [u8],
    ciphertext: &'a [u8],
    tag: &'a [u8],
}

impl std::fmt::Debug for RecordView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordView")
            .field("format", &self.format)
            .field("dek_version", &self.dek_version)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

impl<'a> RecordView<'a> {
    /// Splits record bytes into their fields, checking length and format.
    pub fn decode(bytes: &'a [u8]) -> Result<RecordView<'a>, RecordError> {
        if bytes.len() < MIN_RECORD_LEN {
            return Err(RecordError::Truncated { len: bytes.len() });
        }
        if bytes.len() > MAX_RECORD_LEN {
            return Err(RecordError::Oversized { len: bytes.len() });
        }
        let format = bytes[0];
        if format != RECORD_FORMAT_V1 {
            return Err(RecordError::UnknownFormat(format));
        }
        let dek_version = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let (ciphertext, tag) = bytes[HEADER_LEN..].split_at(bytes.len() - HEADER_LEN - TAG_LEN);
        Ok(RecordView {
            format,
            dek_version,
            nonce: &bytes[5..HEADER_LEN],
            ciphertext,
            tag,
        })
    }

    /// The data-key version the record was sealed with.
    pub fn dek_version(&self) -> u32 {
        self.dek_version
    }

    /// Decrypts and authenticates the record for this tenant and token.
    pub fn open(
        &self,
        key: &DataKey,
        tenant: &TenantId,
        token: &Token,
    ) -> Result<Pan, RecordError> {
        if key.version() != self.dek_version {
            return Err(RecordError::KeyVersionMismatch {
                record: self.dek_version,
                offered: key.version(),
            });
        }
        let aad = associated_data(self.format, tenant, token, self.dek_version);
        let mut plain = Zeroizing::new([0u8; MAX_DIGITS]);
        let plain = &mut plain[..self.ciphertext.len()];
        plain.copy_from_slice(self.ciphertext);
        key.cipher()
            .decrypt_in_place_detached(
                Nonce::from_slice(self.nonce),
                &aad,
                plain,
                Tag::from_slice(self.tag),
            )
            .map_err(|_| RecordError::Authentication)?;
        let pan = Pan::parse_bytes(plain).map_err(|_| RecordError::InvalidContent);
        plain.fill(0);
        pan
    }
}

/// Seals `pan` for `tenant` and `token` under `key`. The caller accounts for
/// the encryption against the key's limit first.
pub fn seal(
    key: &DataKey,
    tenant: &TenantId,
    token: &Token,
    pan: &Pan,
) -> Result<Vec<u8>, RecordError> {
    // A random 96-bit nonce per record from this thread's CSPRNG
    // (random::fill_per_use); a DEK seals at most DEK_HARD_LIMIT records.
    let mut nonce = [0u8; NONCE_LEN];
    random::fill_per_use(&mut nonce)?;
    let aad = associated_data(RECORD_FORMAT_V1, tenant, token, key.version());
    let mut out = Vec::with_capacity(HEADER_LEN + pan.len() + TAG_LEN);
    out.push(RECORD_FORMAT_V1);
    out.extend_from_slice(&key.version().to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(pan.expose_digits());
    let tag = key
        .cipher()
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut out[HEADER_LEN..])
        .map_err(|_| RecordError::Authentication)?;
    out.extend_from_slice(&tag);
    Ok(out)
}

fn associated_data(format: u8, tenant: &TenantId, token: &Token, dek_version: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(4 * 4 + 1 + tenant.as_str().len() + token.len() + 4);
    push_length_prefixed(&mut aad, &[format]);
    push_length_prefixed(&mut aad, tenant.as_str().as_bytes());
    push_length_prefixed(&mut aad, token.as_bytes());
    push_length_prefixed(&mut aad, &dek_version.to_be_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;
    use proptest::prelude::*;

    fn fixture() -> (DataKey, TenantId, Pan, Token) {
        let key = DataKey::new(1, &SecretKey::generate().unwrap(), 0);
        let tenant = TenantId::parse("shop").unwrap();
        let pan = Pan::parse("4111111111111111").unwrap();
        let token = Token::generate(&pan).unwrap();
        (key, tenant, pan, token)
    }

    #[test]
    fn seal_open_round_trip_and_layout() {
        let (key, tenant, pan, token) = fixture();
        let record = seal(&key, &tenant, &token, &pan).unwrap();
        assert_eq!(record.len(), HEADER_LEN + 16 + TAG_LEN);
        assert_eq!(record[0], RECORD_FORMAT_V1);
        assert_eq!(&record[1..5], &1u32.to_be_bytes());
        let view = RecordView::decode(&record).unwrap();
        assert_eq!(view.dek_version(), 1);
        assert_eq!(view.open(&key, &tenant, &token).unwrap(), pan);
        // No plaintext digits in the record.
        assert!(!record.windows(16).any(|w| w == pan.expose_digits()));
        // Two seals of the same PAN differ (random nonce).
        assert_ne!(record, seal(&key, &tenant, &token, &pan).unwrap());
    }

    #[test]
    fn moved_records_fail_to_open() {
        let (key, tenant, pan, token) = fixture();
        let record = seal(&key, &tenant, &token, &pan).unwrap();
        let view = RecordView::decode(&record).unwrap();
        let other_tenant = TenantId::parse("shop2").unwrap();
        let other_token = Token::generate(&pan).unwrap();
        assert_eq!(
            view.open(&key, &other_tenant, &token).unwrap_err(),
            RecordError::Authentication
        );
        if other_token != token {
            assert_eq!(
                view.open(&key, &tenant, &other_token).unwrap_err(),
                RecordError::Authentication
            );
        }
        let other_key = DataKey::new(1, &SecretKey::generate().unwrap(), 0);
        assert_eq!(
            view.open(&other_key, &tenant, &token).unwrap_err(),
            RecordError::Authentication
        );
        let v2 = DataKey::new(2, &SecretKey::generate().unwrap(), 0);
        assert!(matches!(
            view.open(&v2, &tenant, &token).unwrap_err(),
            RecordError::KeyVersionMismatch {
                record: 1,
                offered: 2
            }
        ));
    }

    #[test]
    fn decoder_rejects_bad_lengths_and_formats() {
        let (key, tenant, pan, token) = fixture();
        let record = seal(&key, &tenant, &token, &pan).unwrap();
        for len in 0..MIN_RECORD_LEN {
            assert_eq!(
                RecordView::decode(&record[..len.min(record.len())]).unwrap_err(),
                RecordError::Truncated {
                    len: len.min(record.len())
                }
            );
        }
        let mut long = record.clone();
        long.resize(MAX_RECORD_LEN + 1, 0);
        assert_eq!(
            RecordView::decode(&long).unwrap_err(),
            RecordError::Oversized {
                len: MAX_RECORD_LEN + 1
            }
        );
        let mut v2 = record.clone();
        v2[0] = 2;
        assert_eq!(
            RecordView::decode(&v2).unwrap_err(),
            RecordError::UnknownFormat(2)
        );
        // A record cut short by a few bytes still decodes (12-digit PANs are
        // shorter) but fails authentication.
        let cut = &record[..record.len() - 1];
        let view = RecordView::decode(cut).unwrap();
        assert!(view.open(&key, &tenant, &token).is_err());
    }

    #[test]
    fn debug_shows_no_ciphertext() {
        let (key, tenant, pan, token) = fixture();
        let record = seal(&key, &tenant, &token, &pan).unwrap();
        let text = format!("{:?}", RecordView::decode(&record).unwrap());
        assert!(text.contains("dek_version: 1"), "{text}");
        assert!(!text.contains("4111"), "{text}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn flipping_any_bit_fails(index in 0usize..MAX_RECORD_LEN, bit in 0u8..8) {
            let (key, tenant, pan, token) = fixture();
            let mut record = seal(&key, &tenant, &token, &pan).unwrap();
            let index = index % record.len();
            record[index] ^= 1 << bit;
            let opened = RecordView::decode(&record).and_then(|v| v.open(&key, &tenant, &token));
            prop_assert!(opened.is_err());
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let (key, tenant, _, token) = fixture();
            if let Ok(view) = RecordView::decode(&bytes) {
                prop_assert!(view.open(&key, &tenant, &token).is_err());
            }
        }
    }

    #[test]
    fn every_byte_flip_fails() {
        let (key, tenant, pan, token) = fixture();
        let record = seal(&key, &tenant, &token, &pan).unwrap();
        for i in 0..record.len() {
            for bit in 0..8 {
                let mut bad = record.clone();
                bad[i] ^= 1 << bit;
                let opened = RecordView::decode(&bad).and_then(|v| v.open(&key, &tenant, &token));
                assert!(opened.is_err(), "byte {i} bit {bit}");
            }
        }
    }
}
