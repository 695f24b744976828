//! PAN fingerprints: HMAC-SHA-256 of the whole PAN under a per-tenant key of
//! its own (PCI DSS 3.5.1.1 requires keyed hashes), truncated to 128 bits.
//! They find the existing token for a PAN without storing or decrypting any
//! PAN.
//!
//! Why 128 bits: a fingerprint is stored twice per token (the index key and
//! the token's entry), so its length is a third of the bytes per token. A
//! truncated HMAC stays a PRF (NIST SP 800-107 §5.3.4), and two PANs of one
//! tenant share a fingerprint with probability about n² / 2¹²⁹ — 10⁻²¹ for
//! a billion cards. Databases written with 256-bit fingerprints are
//! rewritten at open (their first 16 bytes are this fingerprint).

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Guarded;
use super::hierarchy::{KeyError, SecretKey};
use crate::domain::Pan;

/// Length of a fingerprint in bytes.
pub const FINGERPRINT_LEN: usize = 16;

/// Length of the untruncated fingerprints of older database formats.
pub const LEGACY_FINGERPRINT_LEN: usize = 32;

/// A keyed hash of one PAN within one tenant.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; FINGERPRINT_LEN]);

impl Fingerprint {
    /// The hash bytes.
    pub fn as_bytes(&self) -> &[u8; FINGERPRINT_LEN] {
        &self.0
    }

    /// Rebuilds a fingerprint read back from storage.
    pub fn from_slice(bytes: &[u8]) -> Option<Fingerprint> {
        bytes.try_into().ok().map(Fingerprint)
    }

    /// The fingerprint held in a full 256-bit HMAC as stored by database
    /// formats before 128-bit fingerprints: its first 16 bytes.
    pub fn from_legacy(bytes: &[u8]) -> Option<Fingerprint> {
        if bytes.len() != LEGACY_FINGERPRINT_LEN {
            return None;
        }
        Fingerprint::from_slice(&bytes[..FINGERPRINT_LEN])
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

/// Computes fingerprints with one tenant's fingerprint key. The HMAC state
/// is keyed once and cloned per PAN.
pub struct Fingerprinter {
    version: u32,
    keyed: Guarded<Hmac<Sha256>>,
}

impl Fingerprinter {
    /// Keys a fingerprinter. (HMAC takes keys of any length, so the error
    /// arm exists only to avoid a panic path.)
    pub fn new(version: u32, key: &SecretKey) -> Result<Fingerprinter, KeyError> {
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(key.expose())
            .map_err(|_| KeyError::Provider("HMAC key rejected".into()))?;
        Ok(Fingerprinter {
            version,
            keyed: Guarded::new(keyed),
        })
    }

    /// The fingerprint key's version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The fingerprint of `pan`.
    pub fn fingerprint(&self, pan: &Pan) -> Fingerprint {
        let mut mac = self.keyed.clone();
        mac.update(pan.expose_digits());
        let full = mac.finalize().into_bytes();
        let mut truncated = [0u8; FINGERPRINT_LEN];
        truncated.copy_from_slice(&full[..FINGERPRINT_LEN]);
        Fingerprint(truncated)
    }
}

impl fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fingerprinter")
            .field("version", &self.version)
            .field("key", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_per_key_and_distinct_across_keys() {
        let k1 = SecretKey::generate().unwrap();
        let k2 = SecretKey::generate().unwrap();
        let a = Fingerprinter::new(1, &k1).unwrap();
        let b = Fingerprinter::new(1, &k2).unwrap();
        let pan = Pan::parse("4111111111111111").unwrap();
        let other = Pan::parse("4012888888881881").unwrap();
        assert_eq!(a.fingerprint(&pan), a.fingerprint(&pan));
        assert_ne!(a.fingerprint(&pan), b.fingerprint(&pan));
        assert_ne!(a.fingerprint(&pan), a.fingerprint(&other));
        assert!(format!("{a:?}").contains("<redacted>"));
    }

    #[test]
    fn matches_rfc_4231_style_hmac() {
        // HMAC-SHA-256 with a known key and message, computed independently.
        let key = SecretKey::from_slice(&[0x0b; 32]).unwrap();
        let fp = Fingerprinter::new(1, &key).unwrap();
        let pan = Pan::parse("4111111111111111").unwrap();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&[0x0b; 32]).unwrap();
        mac.update(b"4111111111111111");
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(fp.fingerprint(&pan).as_bytes()[..], expected[..16]);
        assert_eq!(
            Fingerprint::from_legacy(&expected),
            Some(fp.fingerprint(&pan))
        );
        assert_eq!(Fingerprint::from_legacy(&expected[..16]), None);
    }
}
