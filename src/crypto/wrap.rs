//! A KEK held in memory as an expanded AES-256-GCM key, and the one byte
//! layout of a key wrapped by software: `format | nonce | ciphertext | tag`
//! with the key's label as associated data. The key-file provider and the
//! custodian-share provider both end in an [`AesKek`]; the HSM provider
//! uses the same layout under its own format byte, so a key wrapped by one
//! provider is refused by another with a clear error.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use zeroize::Zeroizing;

use super::Guarded;
use super::hierarchy::{KEY_LEN, KeyError, KeyLabel, SecretKey};
use crate::random;

/// Format byte of a key wrapped by a software KEK (key file or shares).
pub const WRAP_FORMAT_SOFTWARE: u8 = 1;
/// Format byte of a key wrapped inside a PKCS#11 device.
pub const WRAP_FORMAT_PKCS11: u8 = 2;
/// Nonce length of a wrapped key.
pub const NONCE_LEN: usize = 12;
/// Tag length of a wrapped key.
pub const TAG_LEN: usize = 16;
/// Length of a wrapped key: format, nonce, ciphertext, tag.
pub const WRAPPED_KEY_LEN: usize = 1 + NONCE_LEN + KEY_LEN + TAG_LEN;

/// `tenant/purpose/vN`, for errors about one wrapped key.
pub(crate) fn label_name(label: &KeyLabel) -> String {
    format!(
        "{}/{}/v{}",
        label.tenant,
        label.purpose.as_str(),
        label.version
    )
}

/// Checks a wrapped key's length and format byte, naming the provider that
/// made it when it is not `format`.
pub(crate) fn check_layout(label: &KeyLabel, wrapped: &[u8], format: u8) -> Result<(), KeyError> {
    if wrapped.len() != WRAPPED_KEY_LEN {
        return Err(KeyError::Malformed(label_name(label)));
    }
    match wrapped[0] {
        f if f == format => Ok(()),
        WRAP_FORMAT_SOFTWARE => Err(KeyError::OtherProvider(
            label_name(label),
            "a key file or custodian shares",
        )),
        WRAP_FORMAT_PKCS11 => Err(KeyError::OtherProvider(label_name(label), "a PKCS#11 HSM")),
        _ => Err(KeyError::Malformed(label_name(label))),
    }
}

/// A KEK in memory, expanded once, on pages left out of core dumps.
pub struct AesKek {
    cipher: Guarded<Aes256Gcm>,
}

impl AesKek {
    /// Expands `key`; the caller's copy stays the caller's to wipe.
    pub fn new(key: &SecretKey) -> AesKek {
        AesKek {
            cipher: Guarded::new(Aes256Gcm::new(key.expose().into())),
        }
    }

    /// Wraps `key` under this KEK, binding `label`.
    pub fn wrap(&self, label: &KeyLabel, key: &SecretKey) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        random::fill(&mut nonce)?;
        let mut out = Vec::with_capacity(WRAPPED_KEY_LEN);
        out.push(WRAP_FORMAT_SOFTWARE);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(key.expose());
        let tag = self
            .cipher
            .encrypt_in_place_detached(
                Nonce::from_slice(&nonce),
                &label.aad(),
                &mut out[1 + NONCE_LEN..],
            )
            .map_err(|_| KeyError::Provider("AES-GCM wrap failed".into()))?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Unwraps a key made by [`AesKek::wrap`] under the same label.
    pub fn unwrap(&self, label: &KeyLabel, wrapped: &[u8]) -> Result<SecretKey, KeyError> {
        check_layout(label, wrapped, WRAP_FORMAT_SOFTWARE)?;
        let nonce = Nonce::from_slice(&wrapped[1..1 + NONCE_LEN]);
        let (ciphertext, tag) = wrapped[1 + NONCE_LEN..].split_at(KEY_LEN);
        let mut plain = Zeroizing::new([0u8; KEY_LEN]);
        plain.copy_from_slice(ciphertext);
        self.cipher
            .decrypt_in_place_detached(nonce, &label.aad(), &mut plain[..], Tag::from_slice(tag))
            .map_err(|_| KeyError::Unwrap(label_name(label)))?;
        SecretKey::from_slice(&plain[..]).ok_or_else(|| KeyError::Malformed(label_name(label)))
    }
}

impl std::fmt::Debug for AesKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AesKek(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyPurpose;
    use crate::domain::TenantId;

    #[test]
    fn a_key_from_another_provider_is_named_not_garbled() {
        let label = KeyLabel {
            tenant: TenantId::parse("t").unwrap(),
            purpose: KeyPurpose::PanEncryption,
            version: 1,
        };
        let kek = AesKek::new(&SecretKey::generate().unwrap());
        let mut wrapped = kek.wrap(&label, &SecretKey::generate().unwrap()).unwrap();
        wrapped[0] = WRAP_FORMAT_PKCS11;
        let err = kek.unwrap(&label, &wrapped).err().unwrap();
        assert!(err.to_string().contains("PKCS#11"), "{err}");
        wrapped[0] = 9;
        assert!(matches!(
            kek.unwrap(&label, &wrapped),
            Err(KeyError::Malformed(_))
        ));
        assert_eq!(format!("{kek:?}"), "AesKek(<redacted>)");
    }
}
