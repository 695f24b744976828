//! The audit MAC key: a 32-byte key from the OS CSPRNG, wrapped by the KEK
//! under the label (`_system`, audit-mac, version) and kept beside the trail
//! in `audit.key`. Wrapped, it is no secret; without the KEK nobody can
//! unwrap it, so nobody can forge a MAC. It serves no other purpose.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::AuditError;
use crate::crypto::{KeyLabel, KeyProvider, KeyPurpose, SecretKey};
use crate::domain::TenantId;

/// File name of the wrapped audit key inside the audit directory.
pub const KEY_FILE: &str = "audit.key";

const KEY_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    format: u32,
    key_version: u32,
    wrapped: String,
}

fn label(version: u32) -> KeyLabel {
    KeyLabel {
        tenant: TenantId::system(),
        purpose: KeyPurpose::AuditMac,
        version,
    }
}

/// The unwrapped audit key and its wrapped form (to write it again into a
/// directory that lost it).
pub struct AuditKey {
    /// The key.
    pub key: SecretKey,
    /// `audit.key` as stored.
    pub file_bytes: Vec<u8>,
}

/// Loads `DIR/audit.key`; `None` if there is none.
pub fn load(dir: &Path, provider: &dyn KeyProvider) -> Result<Option<AuditKey>, AuditError> {
    let path = dir.join(KEY_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AuditError::io(&path, e)),
    };
    let parsed: KeyFile = serde_json::from_slice(&bytes)
        .map_err(|_| AuditError::Key(format!("{} is not an audit key file", path.display())))?;
    if parsed.format != 1 {
        return Err(AuditError::Key(format!(
            "{}: unknown format {}",
            path.display(),
            parsed.format
        )));
    }
    let wrapped = hex::decode(&parsed.wrapped)
        .map_err(|_| AuditError::Key(format!("{}: wrapped key is not hex", path.display())))?;
    let key = provider
        .unwrap(&label(parsed.key_version), &wrapped)
        .map_err(|e| AuditError::Key(format!("{}: {e}", path.display())))?;
    Ok(Some(AuditKey {
        key,
        file_bytes: bytes,
    }))
}

/// Creates a new audit key and writes `DIR/audit.key` (never overwrites).
pub fn create(dir: &Path, provider: &dyn KeyProvider) -> Result<AuditKey, AuditError> {
    let key = SecretKey::generate().map_err(|e| AuditError::Key(e.to_string()))?;
    let wrapped = provider
        .wrap(&label(KEY_VERSION), &key)
        .map_err(|e| AuditError::Key(e.to_string()))?;
    let file = KeyFile {
        format: 1,
        key_version: KEY_VERSION,
        wrapped: hex::encode(wrapped),
    };
    let mut bytes = serde_json::to_vec(&file).map_err(|e| AuditError::Key(e.to_string()))?;
    bytes.push(b'\n');
    write_key_file(dir, &bytes)?;
    Ok(AuditKey {
        key,
        file_bytes: bytes,
    })
}

/// Writes `bytes` as `DIR/audit.key` (mode 0600, never overwriting) and syncs it.
pub fn write_key_file(dir: &Path, bytes: &[u8]) -> Result<(), AuditError> {
    let path = dir.join(KEY_FILE);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| AuditError::io(&path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| AuditError::io(&path, e))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io(dir, e))
}
