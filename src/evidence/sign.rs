//! Signing and verifying an evidence bundle (`cardvault evidence`).
//!
//! The bundle is a directory of files; `signature.json` holds a manifest —
//! every other file's name, size and SHA-256 — and an Ed25519 signature
//! over the manifest's exact bytes. Ed25519 rather than an HMAC: the
//! assessor verifies with the public key alone, without the KEK (which an
//! assessor must never hold), and nobody without the vault's KEK can sign.
//!
//! The signing key is the vault's evidence key ([`crate::crypto::SigningKey`],
//! kept wrapped by the KEK in `evidence.key` beside the audit trail, made
//! on the vault's first start); the same key signs the trail's checkpoints.
//! An assessor pins its public key (`evidence.pub`, or its fingerprint)
//! once: `evidence verify --pubkey`, or `openssl pkeyutl -verify` by hand
//! (docs/evidence.md).

use std::collections::BTreeMap;
use std::path::Path;

use ring::signature::{ED25519, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crypto::{SecretKey, SigningKey};

/// The signature file's name inside a bundle.
pub const SIGNATURE_FILE: &str = "signature.json";

/// Largest bundle file read back by `verify` (a bundle is kilobytes).
const MAX_FILE_BYTES: u64 = 64 << 20;

/// Why a bundle does not verify, or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The bundle was changed after signing (names what).
    #[error("the evidence bundle was changed after it was signed: {0}")]
    Tampered(String),
    /// Signed by another key than the pinned one.
    #[error("signed by key {found}, not the expected {expected}")]
    WrongKey {
        /// Key id in the bundle.
        found: String,
        /// Key id expected.
        expected: String,
    },
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
}

/// The signing key of one vault.
pub struct Signer {
    key: SigningKey,
}

/// What `signature.json` signs: the bundle's files.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Manifest format (1).
    pub format: u32,
    /// `Ed25519`.
    pub algorithm: String,
    /// The public key, hex.
    pub public_key: String,
    /// The key id: the first 16 hex digits of SHA-256 of the public key.
    pub key_id: String,
    /// When the bundle was made (RFC 3339).
    pub created: String,
    /// Every other file of the bundle: name → size and SHA-256.
    pub files: BTreeMap<String, FileDigest>,
}

/// One file's size and digest.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileDigest {
    /// Bytes.
    pub bytes: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureFile {
    /// The manifest's exact JSON text (what the signature covers).
    manifest: String,
    /// Ed25519 signature of `manifest`, hex.
    signature: String,
}

/// The key id of a hex public key.
pub fn key_id(public_key_hex: &str) -> String {
    let digest = Sha256::digest(public_key_hex.as_bytes());
    hex::encode(&digest[..8])
}

impl Signer {
    /// The signer whose Ed25519 seed is `seed` (the unwrapped evidence key).
    pub fn from_seed(seed: &SecretKey) -> Result<Signer, EvidenceError> {
        SigningKey::from_seed(seed)
            .map(|key| Signer { key })
            .map_err(|e| EvidenceError::Io(e.to_string()))
    }

    /// The public key, hex.
    pub fn public_key(&self) -> String {
        self.key.public().hex()
    }

    /// The public key's fingerprint (SHA-256 of its DER, hex).
    pub fn fingerprint(&self) -> String {
        self.key.public().fingerprint()
    }

    /// Signs every file in `dir` (but `signature.json`) and writes
    /// `signature.json`.
    pub fn sign_dir(&self, dir: &Path, created: &str) -> Result<Manifest, EvidenceError> {
        let public_key = self.public_key();
        let manifest = Manifest {
            format: 1,
            algorithm: "Ed25519".into(),
            key_id: key_id(&public_key),
            public_key,
            created: created.to_owned(),
            files: digest_dir(dir)?,
        };
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| EvidenceError::Io(e.to_string()))?;
        let signature = hex::encode(self.key.sign(text.as_bytes()));
        let file = SignatureFile {
            manifest: text,
            signature,
        };
        let bytes =
            serde_json::to_vec_pretty(&file).map_err(|e| EvidenceError::Io(e.to_string()))?;
        let path = dir.join(SIGNATURE_FILE);
        std::fs::write(&path, bytes)
            .map_err(|e| EvidenceError::Io(format!("{}: {e}", path.display())))?;
        Ok(manifest)
    }
}

/// Name, size and SHA-256 of every regular file directly in `dir`, but
/// the signature file. A subdirectory or link is an error: a bundle is flat.
fn digest_dir(dir: &Path) -> Result<BTreeMap<String, FileDigest>, EvidenceError> {
    let io = |e: std::io::Error| EvidenceError::Io(format!("{}: {e}", dir.display()));
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == SIGNATURE_FILE {
            continue;
        }
        let kind = entry.file_type().map_err(io)?;
        if !kind.is_file() {
            return Err(EvidenceError::Tampered(format!(
                "{name} is not a regular file"
            )));
        }
        let meta = entry.metadata().map_err(io)?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(EvidenceError::Tampered(format!("{name} is too large")));
        }
        let bytes = std::fs::read(entry.path()).map_err(io)?;
        files.insert(
            name,
            FileDigest {
                bytes: bytes.len() as u64,
                sha256: hex::encode(Sha256::digest(&bytes)),
            },
        );
    }
    Ok(files)
}

/// Verifies the bundle in `dir`: the signature over the manifest, then
/// every file against it (a changed, missing or added file fails). With
/// `expected_key` (hex public key), the signer must be that key.
pub fn verify_dir(dir: &Path, expected_key: Option<&str>) -> Result<Manifest, EvidenceError> {
    let path = dir.join(SIGNATURE_FILE);
    let bytes =
        std::fs::read(&path).map_err(|e| EvidenceError::Io(format!("{}: {e}", path.display())))?;
    let file: SignatureFile = serde_json::from_slice(&bytes).map_err(|_| {
        EvidenceError::Tampered(format!("{SIGNATURE_FILE} is not a signature file"))
    })?;
    let manifest: Manifest = serde_json::from_str(&file.manifest)
        .map_err(|_| EvidenceError::Tampered("the manifest does not parse".into()))?;
    if manifest.format != 1 || manifest.algorithm != "Ed25519" {
        return Err(EvidenceError::Tampered("unknown manifest format".into()));
    }
    let public = hex::decode(&manifest.public_key)
        .map_err(|_| EvidenceError::Tampered("the public key is not hex".into()))?;
    let signature = hex::decode(&file.signature)
        .map_err(|_| EvidenceError::Tampered("the signature is not hex".into()))?;
    UnparsedPublicKey::new(&ED25519, &public)
        .verify(file.manifest.as_bytes(), &signature)
        .map_err(|_| EvidenceError::Tampered("the signature does not match the manifest".into()))?;
    if manifest.key_id != key_id(&manifest.public_key) {
        return Err(EvidenceError::Tampered(
            "the key id does not match the key".into(),
        ));
    }
    if let Some(expected) = expected_key
        && !expected.eq_ignore_ascii_case(&manifest.public_key)
    {
        return Err(EvidenceError::WrongKey {
            found: manifest.key_id.clone(),
            expected: key_id(&expected.to_ascii_lowercase()),
        });
    }
    let actual = digest_dir(dir)?;
    for (name, digest) in &manifest.files {
        match actual.get(name) {
            None => return Err(EvidenceError::Tampered(format!("{name} is missing"))),
            Some(found) if found != digest => {
                return Err(EvidenceError::Tampered(format!("{name} was edited")));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = actual
        .keys()
        .find(|name| !manifest.files.contains_key(*name))
    {
        return Err(EvidenceError::Tampered(format!("{extra} was added")));
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_edit_is_detected_and_the_key_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("evidence.json"), b"{\"a\":1}").unwrap();
        std::fs::write(dir.path().join("evidence.md"), b"# A\n").unwrap();
        let key = SecretKey::from_slice(&[7u8; 32]).unwrap();
        let signer = Signer::from_seed(&key).unwrap();
        assert_eq!(
            signer.public_key(),
            Signer::from_seed(&key).unwrap().public_key()
        );
        let manifest = signer.sign_dir(dir.path(), "2026-12-02T00:00:00Z").unwrap();
        assert_eq!(manifest.files.len(), 2);
        let pk = signer.public_key();
        verify_dir(dir.path(), Some(&pk)).unwrap();

        let other = Signer::from_seed(&SecretKey::from_slice(&[8u8; 32]).unwrap()).unwrap();
        assert!(matches!(
            verify_dir(dir.path(), Some(&other.public_key())),
            Err(EvidenceError::WrongKey { .. })
        ));

        std::fs::write(dir.path().join("evidence.md"), b"# B\n").unwrap();
        let err = verify_dir(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("evidence.md was edited"), "{err}");
        std::fs::write(dir.path().join("evidence.md"), b"# A\n").unwrap();
        verify_dir(dir.path(), None).unwrap();

        std::fs::write(dir.path().join("extra.txt"), b"x").unwrap();
        assert!(
            verify_dir(dir.path(), None)
                .unwrap_err()
                .to_string()
                .contains("extra.txt was added")
        );
        std::fs::remove_file(dir.path().join("extra.txt")).unwrap();
        std::fs::remove_file(dir.path().join("evidence.json")).unwrap();
        assert!(
            verify_dir(dir.path(), None)
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
    }
}
