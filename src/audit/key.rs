//! The trail's two keys, each 32 bytes from the OS CSPRNG, wrapped by the
//! KEK under the label (`_system`, purpose, version) and kept beside the
//! trail: the audit MAC key in `audit.key` ([`AUDIT`], the HMAC chain) and
//! the evidence key in `evidence.key` ([`EVIDENCE`], the Ed25519 seed that
//! signs checkpoints and evidence bundles). Wrapped, neither is a secret;
//! without the KEK nobody can unwrap them, so nobody can forge a MAC or a
//! signature. Each serves its one purpose only.
//! During a KEK rotation a file also holds the key wrapped under the next
//! KEK; whichever KEK opens it next time, the file converges to it (as the
//! vault's key records do).

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::AuditError;
use crate::crypto::{KeyLabel, KeyProvider, KeyPurpose, SecretKey};
use crate::domain::TenantId;

/// One of the trail's wrapped keys: its file and its purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyKind {
    /// File name inside the audit directory.
    pub file: &'static str,
    purpose: KeyPurpose,
}

/// The audit MAC key (`audit.key`).
pub const AUDIT: KeyKind = KeyKind {
    file: "audit.key",
    purpose: KeyPurpose::AuditMac,
};

/// The evidence-signing key (`evidence.key`).
pub const EVIDENCE: KeyKind = KeyKind {
    file: "evidence.key",
    purpose: KeyPurpose::EvidenceSigning,
};

/// File name of the wrapped audit key inside the audit directory.
pub const KEY_FILE: &str = AUDIT.file;

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
        .map_err(|_| AuditError::Key(format!("{} is not a wrapped key file", path.display())))?;
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

fn label(kind: KeyKind, version: u32) -> KeyLabel {
    KeyLabel {
        tenant: TenantId::system(),
        purpose: kind.purpose,
        version,
    }
}

/// An unwrapped key of the trail and its wrapped form (to write it again
/// into a directory that lost it).
pub struct AuditKey {
    /// The key.
    pub key: SecretKey,
    /// The key file as stored.
    pub file_bytes: Vec<u8>,
}

/// Loads `DIR/<kind's file>` for the trail's writer; `None` if there is
/// none. A KEK rotation in progress converges (the file is rewritten).
pub fn load(
    dir: &Path,
    kind: KeyKind,
    provider: &dyn KeyProvider,
) -> Result<Option<AuditKey>, AuditError> {
    load_with(dir, kind, provider, true)
}

/// Loads `DIR/<kind's file>` without writing anything (`audit verify`,
/// `evidence`).
pub fn read(
    dir: &Path,
    kind: KeyKind,
    provider: &dyn KeyProvider,
) -> Result<Option<AuditKey>, AuditError> {
    load_with(dir, kind, provider, false)
}

fn load_with(
    dir: &Path,
    kind: KeyKind,
    provider: &dyn KeyProvider,
    write: bool,
) -> Result<Option<AuditKey>, AuditError> {
    let path = dir.join(kind.file);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AuditError::io(&path, e)),
    };
    let mut parsed = parse(&path, &bytes)?;
    let label = label(kind, parsed.key_version);
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
        replace_key_file(dir, kind, &bytes)?;
        bytes
    } else {
        bytes
    };
    Ok(Some(AuditKey {
        key,
        file_bytes: bytes,
    }))
}

/// Phase one of a KEK rotation for one of the trail's keys: its file gets
/// the key wrapped under `next` too (replaced atomically). Returns the new
/// file.
pub fn rewrap(
    dir: &Path,
    kind: KeyKind,
    current: &dyn KeyProvider,
    next: &dyn KeyProvider,
) -> Result<Vec<u8>, AuditError> {
    let path = dir.join(kind.file);
    let bytes = fs::read(&path).map_err(|e| AuditError::io(&path, e))?;
    let mut parsed = parse(&path, &bytes)?;
    let label = label(kind, parsed.key_version);
    let key = current
        .unwrap(&label, &unhex(&path, &parsed.wrapped)?)
        .map_err(|e| AuditError::Key(format!("{}: {e}", path.display())))?;
    let wrapped = next
        .wrap(&label, &key)
        .map_err(|e| AuditError::Key(e.to_string()))?;
    parsed.wrapped_next = Some(hex::encode(wrapped));
    let bytes = parsed.bytes()?;
    replace_key_file(dir, kind, &bytes)?;
    Ok(bytes)
}

/// Replaces the key file with `bytes` atomically (a synced temporary file
/// renamed over it, then the directory synced).
fn replace_key_file(dir: &Path, kind: KeyKind, bytes: &[u8]) -> Result<(), AuditError> {
    let path = dir.join(kind.file);
    crate::private_file::replace(&path, bytes).map_err(|e| AuditError::io(&path, e))
}

/// The next version of the key of `kind` in `dir`: a fresh key, wrapped
/// under `current` (and under `next` too while a KEK rotation is under
/// way), as the file that will replace the current one — not yet written
/// (the trail's writer replaces the file when it switches keys).
pub fn prepare_next(
    dir: &Path,
    kind: KeyKind,
    current: &dyn KeyProvider,
    next: Option<&dyn KeyProvider>,
) -> Result<AuditKey, AuditError> {
    let path = dir.join(kind.file);
    let bytes = fs::read(&path).map_err(|e| AuditError::io(&path, e))?;
    let version = parse(&path, &bytes)?.key_version.saturating_add(1);
    let key = SecretKey::generate().map_err(|e| AuditError::Key(e.to_string()))?;
    let wrap = |provider: &dyn KeyProvider| {
        provider
            .wrap(&label(kind, version), &key)
            .map(hex::encode)
            .map_err(|e| AuditError::Key(e.to_string()))
    };
    let file = KeyFile {
        format: 1,
        key_version: version,
        wrapped: wrap(current)?,
        wrapped_next: next.map(wrap).transpose()?,
    };
    Ok(AuditKey {
        file_bytes: file.bytes()?,
        key,
    })
}

/// Replaces the key file of `kind` with `bytes` (atomically).
pub fn replace(dir: &Path, kind: KeyKind, bytes: &[u8]) -> Result<(), AuditError> {
    replace_key_file(dir, kind, bytes)
}

/// Creates a new key of `kind` and writes its file (never overwrites).
pub fn create(
    dir: &Path,
    kind: KeyKind,
    provider: &dyn KeyProvider,
) -> Result<AuditKey, AuditError> {
    let key = SecretKey::generate().map_err(|e| AuditError::Key(e.to_string()))?;
    let wrapped = provider
        .wrap(&label(kind, KEY_VERSION), &key)
        .map_err(|e| AuditError::Key(e.to_string()))?;
    let file = KeyFile {
        format: 1,
        key_version: KEY_VERSION,
        wrapped: hex::encode(wrapped),
        wrapped_next: None,
    };
    let bytes = file.bytes()?;
    write_key_file(dir, kind, &bytes)?;
    Ok(AuditKey {
        key,
        file_bytes: bytes,
    })
}

/// Writes `bytes` as the key file of `kind` (mode 0600, never
/// overwriting) and syncs it.
pub fn write_key_file(dir: &Path, kind: KeyKind, bytes: &[u8]) -> Result<(), AuditError> {
    write_new_file(dir, kind.file, bytes)
}

/// Writes `bytes` as the new file `DIR/NAME` (mode 0600), syncs it and `DIR`.
fn write_new_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), AuditError> {
    let path = dir.join(name);
    crate::private_file::write_new(&path, bytes).map_err(|e| AuditError::io(&path, e))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io(dir, e))
}
