//! PAN fingerprints: HMAC-SHA-256 of the whole PAN under a per-tenant key of
//! its own (PCI DSS 3.5.1.1 requires keyed hashes). They find the existing
//! token for a PAN without storing or decrypting any PAN.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Guarded;
use super::keys::{KeyError, SecretKey};
use crate::domain::Pan;

/// Length of a fingerprint in bytes.
pub const FINGERPRINT_LEN: usize = 32;

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
        Fingerprint(mac.finalize().into_bytes().into())
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
        assert_eq!(fp.fingerprint(&pan).as_bytes(), &expected);
    }
}
