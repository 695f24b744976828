//! The vault's evidence identity: an Ed25519 key pair whose 32-byte seed is
//! a [`SecretKey`] kept like the other keys (wrapped by the KEK, in the
//! audit directory's `evidence.key`). It signs audit checkpoints and
//! evidence bundles; an assessor verifies both with the public key alone —
//! the PEM file `evidence.pub` (SubjectPublicKeyInfo, what `openssl pkey
//! -pubin` reads) — and pins it by its fingerprint, the SHA-256 of that
//! key's DER encoding (`openssl pkey -pubin -in evidence.pub -outform DER |
//! sha256sum`).

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use sha2::{Digest, Sha256};

use super::SecretKey;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE,
/// AlgorithmIdentifier id-Ed25519, BIT STRING of 32 bytes; the key follows.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// An Ed25519 public key of 32 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

/// Why a public key could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PublicKeyError(String);

impl PublicKey {
    /// The key as 64 hex digits.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The key's SubjectPublicKeyInfo DER.
    pub fn der(&self) -> Vec<u8> {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        der
    }

    /// The key as a PEM `PUBLIC KEY` block (what `openssl pkey -pubin` reads).
    pub fn pem(&self) -> String {
        let body = data_encoding::BASE64.encode(&self.der());
        format!("-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n")
    }

    /// The fingerprint an assessor pins: SHA-256 of the DER, hex.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.der()))
    }

    /// Reads a key given as 64 hex digits or as PEM text (`evidence.pub`).
    pub fn parse(text: &str) -> Result<PublicKey, PublicKeyError> {
        let text = text.trim();
        if text.len() == 64
            && let Ok(bytes) = hex::decode(text)
        {
            return PublicKey::from_slice(&bytes);
        }
        use rustls_pki_types::SubjectPublicKeyInfoDer;
        use rustls_pki_types::pem::PemObject as _;
        let der = SubjectPublicKeyInfoDer::from_pem_slice(text.as_bytes()).map_err(|_| {
            PublicKeyError("not an Ed25519 public key (64 hex digits or a PEM PUBLIC KEY)".into())
        })?;
        let key = der
            .as_ref()
            .strip_prefix(&SPKI_PREFIX[..])
            .ok_or_else(|| PublicKeyError("the PEM key is not an Ed25519 key".into()))?;
        PublicKey::from_slice(key)
    }

    /// Reads `text` as a key, or, failing that, the file it names.
    pub fn parse_or_read(text: &str) -> Result<PublicKey, PublicKeyError> {
        if let Ok(key) = PublicKey::parse(text) {
            return Ok(key);
        }
        let path = std::path::Path::new(text);
        let bytes =
            std::fs::read(path).map_err(|e| PublicKeyError(format!("{}: {e}", path.display())))?;
        if bytes.len() > 16 << 10 {
            return Err(PublicKeyError(format!(
                "{}: too large for a public key",
                path.display()
            )));
        }
        PublicKey::parse(&String::from_utf8_lossy(&bytes))
            .map_err(|e| PublicKeyError(format!("{}: {e}", path.display())))
    }

    fn from_slice(bytes: &[u8]) -> Result<PublicKey, PublicKeyError> {
        <[u8; 32]>::try_from(bytes)
            .map(PublicKey)
            .map_err(|_| PublicKeyError("an Ed25519 public key has 32 bytes".into()))
    }

    /// Whether `signature` (64 bytes) is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, signature)
            .is_ok()
    }
}

/// The evidence key pair.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public().fingerprint())
    }
}

impl SigningKey {
    /// The key pair whose seed is `seed`.
    pub fn from_seed(seed: &SecretKey) -> Result<SigningKey, PublicKeyError> {
        Ed25519KeyPair::from_seed_unchecked(seed.expose())
            .map(|pair| SigningKey { pair })
            .map_err(|e| PublicKeyError(format!("an Ed25519 seed: {e}")))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(key)
    }

    /// The Ed25519 signature of `message` (64 bytes).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_hex_and_signatures_round_trip() {
        let key = SigningKey::from_seed(&SecretKey::from_slice(&[9u8; 32]).unwrap()).unwrap();
        let public = key.public();
        assert_eq!(PublicKey::parse(&public.pem()).unwrap(), public);
        assert_eq!(PublicKey::parse(&public.hex()).unwrap(), public);
        let signature = key.sign(b"checkpoint");
        assert!(public.verifies(b"checkpoint", &signature));
        assert!(!public.verifies(b"checkpoinT", &signature));
        assert!(
            PublicKey::parse("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_err()
        );
        assert_eq!(public.fingerprint().len(), 64);
    }
}
