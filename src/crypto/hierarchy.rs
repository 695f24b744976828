//! Key material and the KEK boundary. A [`SecretKey`] is 32 bytes that wipe
//! themselves on drop and print as `<redacted>`; a [`KeyProvider`] wraps and
//! unwraps data keys with the KEK without ever handing the KEK out (the HSM
//! provider never even holds it). A [`DataKey`] is one unwrapped, expanded AES-256-GCM
//! key with its version and its count of encryptions.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use aes_gcm::{Aes256Gcm, KeyInit};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{Guarded, push_length_prefixed};
use crate::domain::TenantId;
use crate::random::{self, RandomError};

/// Length of every key in the hierarchy (AES-256, HMAC-SHA-256).
pub const KEY_LEN: usize = 32;

/// 32 bytes of key material on pages left out of core dumps. Wiped on
/// drop, never printed, not `Clone`.
pub struct SecretKey(Guarded<[u8; KEY_LEN]>);

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for SecretKey {}

impl SecretKey {
    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Result<SecretKey, RandomError> {
        let mut key = SecretKey(Guarded::new([0u8; KEY_LEN]));
        random::fill(&mut key.0[..])?;
        Ok(key)
    }

    /// Copies key bytes in; the caller wipes its own copy.
    pub fn from_slice(bytes: &[u8]) -> Option<SecretKey> {
        if bytes.len() != KEY_LEN {
            return None;
        }
        let mut key = SecretKey(Guarded::new([0u8; KEY_LEN]));
        key.0.copy_from_slice(bytes);
        Some(key)
    }

    /// The raw bytes, for expanding into a cipher or MAC.
    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// What a key is for. One key never serves two purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum KeyPurpose {
    /// AES-256-GCM encryption of PAN records.
    PanEncryption = 1,
    /// HMAC-SHA-256 fingerprints of whole PANs (deterministic tokens).
    Fingerprint = 2,
    /// HMAC-SHA-256 chain over the audit trail.
    AuditMac = 3,
    /// The Ed25519 seed that signs audit checkpoints and evidence bundles.
    EvidenceSigning = 4,
}

impl KeyPurpose {
    /// The one-byte code stored on disk.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Decodes [`KeyPurpose::code`].
    pub fn from_code(code: u8) -> Option<KeyPurpose> {
        match code {
            1 => Some(KeyPurpose::PanEncryption),
            2 => Some(KeyPurpose::Fingerprint),
            3 => Some(KeyPurpose::AuditMac),
            4 => Some(KeyPurpose::EvidenceSigning),
            _ => None,
        }
    }

    /// Name used in logs and key listings.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::PanEncryption => "pan-encryption",
            KeyPurpose::Fingerprint => "fingerprint",
            KeyPurpose::AuditMac => "audit-mac",
            KeyPurpose::EvidenceSigning => "evidence-signing",
        }
    }
}

/// Names one wrapped key: whose, what for, which version. Bound into the
/// wrapping as associated data, so a wrapped key moved to another label
/// fails to unwrap.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyLabel {
    /// Owner of the key.
    pub tenant: TenantId,
    /// What the key is for.
    pub purpose: KeyPurpose,
    /// Version, starting at 1.
    pub version: u32,
}

impl KeyLabel {
    /// Associated data for wrapping: domain tag, tenant, purpose, version,
    /// each length-prefixed.
    pub fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(64);
        push_length_prefixed(&mut aad, b"cardvault-key-wrap-v1");
        push_length_prefixed(&mut aad, self.tenant.as_str().as_bytes());
        push_length_prefixed(&mut aad, &[self.purpose.code()]);
        push_length_prefixed(&mut aad, &self.version.to_be_bytes());
        aad
    }
}

/// Why a key operation failed. Never carries key bytes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    /// The OS random source failed.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// A wrapped key is malformed (wrong length or unknown format).
    #[error("wrapped key for {0} is malformed")]
    Malformed(String),
    /// Unwrapping failed: the KEK is not the one that wrapped this key, or
    /// the wrapped key or its label were altered.
    #[error("cannot unwrap key {0}: wrong KEK, or the stored key was altered")]
    Unwrap(String),
    /// Wrapping failed inside the provider.
    #[error("key provider failed to wrap a key: {0}")]
    Provider(String),
    /// The key was wrapped by another kind of KEK provider than this one.
    #[error("key {0} was wrapped by {1}, not by the configured KEK provider ([kek] provider)")]
    OtherProvider(String, &'static str),
    /// The device that holds the KEK cannot be reached now (an HSM that lost
    /// its session, a module that fails); retrying later may succeed.
    #[error("the KEK device is unavailable: {0}")]
    Unavailable(String),
}

/// Holds the key-encryption key and wraps data keys with it. The KEK itself
/// never leaves the provider.
pub trait KeyProvider: Send + Sync {
    /// Human-readable description for logs (`key file /etc/cardvault/kek`).
    fn describe(&self) -> String;
    /// Wraps `key` under the KEK, binding `label`.
    fn wrap(&self, label: &KeyLabel, key: &SecretKey) -> Result<Vec<u8>, KeyError>;
    /// Unwraps a key produced by [`KeyProvider::wrap`] with the same label.
    fn unwrap(&self, label: &KeyLabel, wrapped: &[u8]) -> Result<SecretKey, KeyError>;
}

/// Most encryptions one data key may perform: random 96-bit nonces stay safe
/// to 2^32 per key (NIST SP 800-38D); we stop at half of that.
pub const DEK_HARD_LIMIT: u64 = 1 << 31;

/// One unwrapped AES-256-GCM data key, expanded once and cached, with its
/// version and the number of encryptions made with it.
pub struct DataKey {
    version: u32,
    cipher: Guarded<Aes256Gcm>,
    sealed: AtomicU64,
}

impl DataKey {
    /// Expands `key` into a cipher. `sealed_so_far` is the persisted count.
    pub fn new(version: u32, key: &SecretKey, sealed_so_far: u64) -> DataKey {
        DataKey {
            version,
            cipher: Guarded::new(Aes256Gcm::new(key.expose().into())),
            sealed: AtomicU64::new(sealed_so_far),
        }
    }

    /// The key's version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The expanded cipher.
    pub(crate) fn cipher(&self) -> &Aes256Gcm {
        &self.cipher
    }

    /// Encryptions made so far (including ones not yet persisted).
    pub fn sealed_count(&self) -> u64 {
        self.sealed.load(Ordering::Relaxed)
    }

    /// Claims one encryption. Returns the new count, or `None` (and claims
    /// nothing) when `limit` encryptions have been made already.
    pub fn claim_encryption(&self, limit: u64) -> Option<u64> {
        self.sealed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|previous| previous + 1)
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("version", &self.version)
            .field("sealed", &self.sealed_count())
            .field("key", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_key_bytes() {
        let key = SecretKey::from_slice(&[0xAB; 32]).unwrap();
        let text = format!("{key:?}");
        assert_eq!(text, "SecretKey(<redacted>)");
        let dek = DataKey::new(3, &key, 7);
        let text = format!("{dek:?}");
        assert!(!text.to_lowercase().contains("ab, "), "{text}");
        assert!(!text.contains("171"), "{text}");
        assert!(text.contains("version: 3"), "{text}");
    }

    #[test]
    fn claims_stop_at_the_limit() {
        let key = SecretKey::generate().unwrap();
        let dek = DataKey::new(1, &key, 8);
        assert_eq!(dek.claim_encryption(10), Some(9));
        assert_eq!(dek.claim_encryption(10), Some(10));
        assert_eq!(dek.claim_encryption(10), None);
        assert_eq!(dek.sealed_count(), 10);
    }

    #[test]
    fn labels_are_unambiguous() {
        let a = KeyLabel {
            tenant: TenantId::parse("ab").unwrap(),
            purpose: KeyPurpose::PanEncryption,
            version: 1,
        };
        let mut b = a.clone();
        b.version = 2;
        let mut c = a.clone();
        c.purpose = KeyPurpose::Fingerprint;
        assert_ne!(a.aad(), b.aad());
        assert_ne!(a.aad(), c.aad());
    }
}
