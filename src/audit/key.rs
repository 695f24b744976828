//! The audit MAC key: a 32-byte key from the OS CSPRNG, wrapped by the KEK
//! under the label (`_system`, audit-mac, version) and kept beside the trail
//! in `audit.key`. Wrapped, it is no secret; without the KEK nobody can
//! unwrap it, so nobody can forge a MAC. It serves no other purpose.
//! During a KEK rotation the file also holds the key wrapped under the next
//! KEK; whichever KEK opens it next time, the file converges to it (as the
//! vault's key records do).

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wrapped_next: Option<String>,
}

impl KeyFile {
    fn bytes(&self) -> Result<Vec<u8>, AuditError> {
        let mut bytes = serde_json::to_vec(self).map_err(|e| AuditError::Key(e.to_string()))?;
        bytes.push(b'\n');
        Ok(bytes)
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<KeyFile, AuditError> {
    let parsed: KeyFile = serde_json::from_slice(bytes)
        .map_err(|_| AuditError::Key(format!("{} is not an audit key file", path.display())))?;
    if parsed.format != 1 {
        return Err(AuditError::Key(format!(
            "{}: unknown format {}",
            path.display(),
            parsed.format
        )));
    }
    Ok(parsed)
}

fn unhex(path: &Path, text: &str) -> Result<Vec<u8>, AuditError> {
    hex::decode(text)
        .map_err(|_| AuditError::Key(format!("{}: wrapped key is not hex", path.display())))
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

/// Loads `DIR/audit.key` for the trail's writer; `None` if there is none.
/// A KEK rotation in progress converges (the file is rewritten).
pub fn load(dir: &Path, provider: &dyn KeyProvider) -> Result<Option<AuditKey>, AuditError> {
    load_with(dir, provider, true)
}

/// Loads `DIR/audit.key` without writing anything (`audit verify`).
pub fn read(dir: &Path, provider: &dyn KeyProvider) -> Result<Option<AuditKey>, AuditError> {
    load_with(dir, provider, false)
}

fn load_with(
    dir: &Path,
    provider: &dyn KeyProvider,
    write: bool,
) -> Result<Option<AuditKey>, AuditError> {
    let path = dir.join(KEY_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AuditError::io(&path, e)),
    };
    let mut parsed = parse(&path, &bytes)?;
    let label = label(parsed.key_version);
    let unwrap = |text: &str| {
        provider
            .unwrap(&label, &unhex(&path, text)?)
            .map_err(|e| AuditError::Key(format!("{}: {e}", path.display())))
    };
    let (key, converged) = match (unwrap(&parsed.wrapped), parsed.wrapped_next.take()) {
        (Ok(key), None) => (key, false),
        // Opened by the KEK a rotation started from: roll the rotation back.
        (Ok(key), Some(_)) => (key, true),
        // Opened by the rotation's target: finish it.
        (Err(first), Some(next)) => match unwrap(&next) {
            Ok(key) => {
                parsed.wrapped = next;
                (key, true)
            }
            Err(_) => return Err(first),
        },
        (Err(e), None) => return Err(e),
    };
    let bytes = if converged && write {
        let bytes = parsed.bytes()?;
        replace_key_file(dir, &bytes)?;
        bytes
    } else {
        bytes
    };
    Ok(Some(AuditKey {
        key,
        file_bytes: bytes,
    }))
}

/// Phase one of a KEK rotation for the audit key: `DIR/audit.key` gets the
/// key wrapped under `next` too (replaced atomically). Returns the new file.
pub fn rewrap(
    dir: &Path,
    current: &dyn KeyProvider,
    next: &dyn KeyProvider,
) -> Result<Vec<u8>, AuditError> {
    let path = dir.join(KEY_FILE);
    let bytes = fs::read(&path).map_err(|e| AuditError::io(&path, e))?;
    let mut parsed = parse(&path, &bytes)?;
    let label = label(parsed.key_version);
    let key = current
        .unwrap(&label, &unhex(&path, &parsed.wrapped)?)
        .map_err(|e| AuditError::Key(format!("{}: {e}", path.display())))?;
    let wrapped = next
        .wrap(&label, &key)
        .map_err(|e| AuditError::Key(e.to_string()))?;
    parsed.wrapped_next = Some(hex::encode(wrapped));
    let bytes = parsed.bytes()?;
    replace_key_file(dir, &bytes)?;
    Ok(bytes)
}

/// Replaces `DIR/audit.key` with `bytes` atomically (a synced temporary
/// file renamed over it, then the directory synced).
fn replace_key_file(dir: &Path, bytes: &[u8]) -> Result<(), AuditError> {
    const TMP: &str = "audit.key.tmp";
    let _ = fs::remove_file(dir.join(TMP));
    write_new_file(dir, TMP, bytes)?;
    let path = dir.join(KEY_FILE);
    fs::rename(dir.join(TMP), &path).map_err(|e| AuditError::io(&path, e))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io(dir, e))
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
        wrapped_next: None,
    };
    let bytes = file.bytes()?;
    write_key_file(dir, &bytes)?;
    Ok(AuditKey {
        key,
        file_bytes: bytes,
    })
}

/// Writes `bytes` as `DIR/audit.key` (mode 0600, never overwriting) and syncs it.
pub fn write_key_file(dir: &Path, bytes: &[u8]) -> Result<(), AuditError> {
    write_new_file(dir, KEY_FILE, bytes)
}

/// Writes `bytes` as the new file `DIR/NAME` (mode 0600), syncs it and `DIR`.
fn write_new_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), AuditError> {
    let path = dir.join(name);
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
