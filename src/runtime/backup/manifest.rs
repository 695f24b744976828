//! A backup's `manifest.json`: what it holds (every file's path, size and
//! SHA-256), when and by which build it was taken, and the trail entry
//! (`backup_taken`) it reaches. A restore checks every file against it and
//! refuses a file added, missing, truncated or changed.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// The manifest's file name in a backup.
pub const FILE: &str = "manifest.json";

/// Most files a backup may list (a bound on what a restore reads).
const MAX_FILES: usize = 1_000_000;

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Its path in the backup (`db/…`, `audit/…`, `dev/…`).
    pub path: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// This format (1).
    pub format: u32,
    /// When it was taken (RFC 3339).
    pub created: String,
    /// The build that took it.
    pub version: String,
    /// Its commit.
    pub commit: String,
    /// The `backup_taken` entry of the trail: the copy reaches it.
    pub audit_seq: u64,
    /// Whether it holds a dev vault's config, PKI and development KEK.
    pub dev: bool,
    /// Every file but the manifest.
    pub files: Vec<FileEntry>,
}

/// Why a backup does not match its manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest cannot be read or parsed.
    #[error("{0}: not a cardvault backup manifest ({1})")]
    Unreadable(String, String),
    /// A listed file is missing, or differs in size or content.
    #[error("{0} does not match the manifest ({1}): the backup is damaged or altered")]
    Mismatch(String, &'static str),
    /// A file is in the backup but not in its manifest.
    #[error("{0} is not in the manifest: the backup is altered")]
    Unlisted(String),
}

/// SHA-256 of the file at `path`, hex, and its size.
fn digest(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let bytes = std::io::copy(&mut file, &mut hasher)?;
    Ok((hex::encode(hasher.finalize()), bytes))
}

/// Every file under `dir`, as paths relative to it (sorted), but the
/// manifest; walked depth first and bounded.
fn files_under(dir: &Path) -> Result<Vec<String>, ManifestError> {
    let unreadable = |p: &Path, e: std::io::Error| {
        ManifestError::Unreadable(p.display().to_string(), e.to_string())
    };
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in fs::read_dir(&at).map_err(|e| unreadable(&at, e))? {
            let entry = entry.map_err(|e| unreadable(&at, e))?;
            let path = entry.path();
            if entry
                .file_type()
                .map_err(|e| unreadable(&path, e))?
                .is_dir()
            {
                pending.push(path);
            } else if let Ok(relative) = path.strip_prefix(dir) {
                let relative = relative.to_string_lossy().into_owned();
                if relative != FILE {
                    found.push(relative);
                }
            }
            if found.len() > MAX_FILES {
                return Err(ManifestError::Unreadable(
                    dir.display().to_string(),
                    format!("more than {MAX_FILES} files"),
                ));
            }
        }
    }
    found.sort();
    Ok(found)
}

impl Manifest {
    /// The manifest of the backup in `dir` as it is now.
    pub fn of_dir(dir: &Path, audit_seq: u64, dev: bool) -> Result<Manifest, ManifestError> {
        let mut files = Vec::new();
        for path in files_under(dir)? {
            let (sha256, bytes) = digest(&dir.join(&path))
                .map_err(|e| ManifestError::Unreadable(path.clone(), e.to_string()))?;
            files.push(FileEntry {
                path,
                bytes,
                sha256,
            });
        }
        Ok(Manifest {
            format: 1,
            created: crate::clock::rfc3339(crate::clock::now_ms()),
            version: env!("CARGO_PKG_VERSION").into(),
            commit: env!("CARDVAULT_GIT_COMMIT").into(),
            audit_seq,
            dev,
            files,
        })
    }

    /// Lists `added` (paths relative to the backup `dir`, just copied in)
    /// beside what it lists already, hashing only them.
    pub fn add(&mut self, dir: &Path, added: &[&Path]) -> Result<(), ManifestError> {
        for relative in added {
            let path = relative.to_string_lossy().into_owned();
            let (sha256, bytes) = digest(&dir.join(relative))
                .map_err(|e| ManifestError::Unreadable(path.clone(), e.to_string()))?;
            self.files.push(FileEntry {
                path,
                bytes,
                sha256,
            });
        }
        self.files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(())
    }

    /// Writes it into the backup `dir` (0600).
    pub fn write(&self, dir: &Path) -> Result<(), super::BackupError> {
        let text = serde_json::to_vec_pretty(self).unwrap_or_default();
        super::write_private(&dir.join(FILE), &text)
    }

    /// Reads the manifest of the backup in `dir`.
    pub fn read(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(FILE);
        let bytes = fs::read(&path)
            .map_err(|e| ManifestError::Unreadable(path.display().to_string(), e.to_string()))?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| ManifestError::Unreadable(path.display().to_string(), e.to_string()))?;
        if manifest.format != 1 || manifest.files.len() > MAX_FILES {
            return Err(ManifestError::Unreadable(
                path.display().to_string(),
                format!(
                    "format {} with {} files",
                    manifest.format,
                    manifest.files.len()
                ),
            ));
        }
        Ok(manifest)
    }

    /// SHA-256 of the manifest file of `dir`, hex (names the backup in the
    /// restored vault's trail).
    pub fn digest_of(dir: &Path) -> Result<String, ManifestError> {
        digest(&dir.join(FILE))
            .map(|(d, _)| d)
            .map_err(|e| ManifestError::Unreadable(FILE.into(), e.to_string()))
    }

    /// Checks the backup in `dir`: every listed file there with its size
    /// and digest, and nothing else.
    pub fn check(&self, dir: &Path) -> Result<(), ManifestError> {
        let listed: Vec<&str> = self.files.iter().map(|f| f.path.as_str()).collect();
        for path in files_under(dir)? {
            if !listed.contains(&path.as_str()) {
                return Err(ManifestError::Unlisted(path));
            }
        }
        for file in &self.files {
            let relative = Path::new(&file.path);
            if relative.is_absolute()
                || relative
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(ManifestError::Mismatch(
                    file.path.clone(),
                    "a path outside it",
                ));
            }
            let (sha256, bytes) = digest(&dir.join(relative))
                .map_err(|_| ManifestError::Mismatch(file.path.clone(), "missing"))?;
            if bytes != file.bytes {
                return Err(ManifestError::Mismatch(file.path.clone(), "size"));
            }
            if sha256 != file.sha256 {
                return Err(ManifestError::Mismatch(file.path.clone(), "SHA-256"));
            }
        }
        Ok(())
    }
}
