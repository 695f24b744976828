//! A key that exists only in this process's memory: made from the OS
//! CSPRNG at start, never stored, wrapped or exported, on a page left out
//! of core dumps. For values that must not outlive the process — card
//! security codes held between checkout and the first authorization (PCI
//! DSS 3.3.1 allows nothing longer). A restart forgets the key and so
//! everything sealed under it.

use aes_gcm::aead::Aead;
use aes_gcm::aead::Payload;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use zeroize::Zeroizing;

use super::guarded::Guarded;
use super::hierarchy::{KeyError, SecretKey};
use crate::random;

/// Bytes of the random nonce in front of each sealed value.
const NONCE_LEN: usize = 12;

/// The in-memory key.
pub struct TransientKey {
    cipher: Guarded<Aes256Gcm>,
}

impl std::fmt::Debug for TransientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransientKey(redacted)")
    }
}

impl TransientKey {
    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Result<TransientKey, KeyError> {
        let key = SecretKey::generate()?;
        Ok(TransientKey {
            cipher: Guarded::new(Aes256Gcm::new(key.expose().into())),
        })
    }

    /// AES-256-GCM under a random nonce, bound to `aad`: nonce ‖ ciphertext.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        // A per-use draw (the module's rule for AES-GCM nonces): the key
        // is fresh per process and never leaves it.
        random::fill_per_use(&mut nonce)?;
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| KeyError::Provider("transient seal failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`TransientKey::seal`] made with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        if sealed.len() < NONCE_LEN {
            return Err(KeyError::Malformed("transient value".into()));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad })
            .map(Zeroizing::new)
            .map_err(|_| KeyError::Unwrap("transient value".into()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_binding_and_key() {
        let key = TransientKey::generate().unwrap();
        let sealed = key.seal(b"123", b"tenant/token").unwrap();
        assert!(!sealed.windows(3).any(|w| w == b"123"));
        assert_eq!(&key.open(&sealed, b"tenant/token").unwrap()[..], b"123");
        assert!(key.open(&sealed, b"tenant/other").is_err());
        let other = TransientKey::generate().unwrap();
        assert!(other.open(&sealed, b"tenant/token").is_err());
        assert!(format!("{key:?}").contains("redacted"));
    }
}
