//! The key-file KEK provider: 32 random bytes in a file that only its owner
//! may read, for development and small installs. The bytes become an
//! [`AesKek`] (the same in-memory KEK the custodian shares combine into);
//! the HSM provider (`crypto::pkcs11`) implements the same trait without
//! ever holding a KEK byte.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::hierarchy::{KEY_LEN, KeyError, KeyLabel, KeyProvider, SecretKey};
use super::wrap::AesKek;
use crate::random;

/// Why a key file could not be used. Never carries key bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read or written.
    #[error("key file {path}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Group or others may read or write the file.
    #[error(
        "key file {path} has mode {mode:04o}; it must not be accessible to group or others (chmod 600)"
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Not a regular file.
    #[error("key file {path} is not a regular file")]
    NotAFile {
        /// The path given.
        path: PathBuf,
    },
    /// Not exactly 32 bytes.
    #[error("key file {path} holds {len} bytes; a KEK is exactly {KEY_LEN} random bytes")]
    WrongSize {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// The file exists already (on create).
    #[error("key file {path} exists already; refusing to overwrite a KEK")]
    Exists {
        /// The key file.
        path: PathBuf,
    },
    /// The OS random source failed.
    #[error(transparent)]
    Random(#[from] random::RandomError),
}

/// A KEK read from a file, expanded into AES-256-GCM.
pub struct KeyFileProvider {
    path: PathBuf,
    kek: AesKek,
}

impl KeyFileProvider {
    /// Opens a key file, refusing one that group or others can access, that
    /// is not a regular file, or that is not exactly 32 bytes.
    pub fn open(path: &Path) -> Result<KeyFileProvider, KeyFileError> {
        let io = |source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(KeyFileError::NotAFile {
                path: path.to_owned(),
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        if meta.len() != KEY_LEN as u64 {
            return Err(KeyFileError::WrongSize {
                path: path.to_owned(),
                len: meta.len(),
            });
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN + 1]);
        let mut read = 0;
        while read < bytes.len() {
            let n = file.read(&mut bytes[read..]).map_err(io)?;
            if n == 0 {
                break;
            }
            read += n;
        }
        if read != KEY_LEN {
            return Err(KeyFileError::WrongSize {
                path: path.to_owned(),
                len: read as u64,
            });
        }
        let key = SecretKey::from_slice(&bytes[..KEY_LEN]).ok_or(KeyFileError::WrongSize {
            path: path.to_owned(),
            len: read as u64,
        })?;
        Ok(KeyFileProvider {
            path: path.to_owned(),
            kek: AesKek::new(&key),
        })
    }

    /// Creates a new key file of 32 random bytes with mode 0600, refusing to
    /// overwrite an existing one, and syncs it to disk.
    pub fn create(path: &Path) -> Result<(), KeyFileError> {
        let io = |source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        };
        let key = SecretKey::generate()?;
        // A missing directory (`keys init --out /etc/cardvault/kek.key` on
        // a fresh host) is created, readable by the owner only.
        if let Some(dir) = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty() && !p.exists())
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(KeyFileError::Exists {
                    path: path.to_owned(),
                });
            }
            Err(e) => return Err(io(e)),
        };
        // The umask may have narrowed 0600 further, never widened it; set it
        // explicitly anyway so the result does not depend on the umask.
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        file.write_all(key.expose()).map_err(io)?;
        file.sync_all().map_err(io)?;
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }
}

impl KeyProvider for KeyFileProvider {
    fn describe(&self) -> String {
        format!("key file {}", self.path.display())
    }

    fn wrap(&self, label: &KeyLabel, key: &SecretKey) -> Result<Vec<u8>, KeyError> {
        self.kek.wrap(label, key)
    }

    fn unwrap(&self, label: &KeyLabel, wrapped: &[u8]) -> Result<SecretKey, KeyError> {
        self.kek.unwrap(label, wrapped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyPurpose;
    use crate::crypto::wrap::WRAPPED_KEY_LEN;
    use crate::domain::TenantId;

    fn label(tenant: &str, version: u32) -> KeyLabel {
        KeyLabel {
            tenant: TenantId::parse(tenant).unwrap(),
            purpose: KeyPurpose::PanEncryption,
            version,
        }
    }

    #[test]
    fn create_open_wrap_unwrap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek.key");
        KeyFileProvider::create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            KeyFileProvider::create(&path),
            Err(KeyFileError::Exists { .. })
        ));
        let kek = KeyFileProvider::open(&path).unwrap();
        let key = SecretKey::generate().unwrap();
        let wrapped = kek.wrap(&label("a", 1), &key).unwrap();
        assert_eq!(wrapped.len(), WRAPPED_KEY_LEN);
        let back = kek.unwrap(&label("a", 1), &wrapped).unwrap();
        assert_eq!(back.expose(), key.expose());
        // Another label, another KEK, or a flipped byte: refused.
        assert!(matches!(
            kek.unwrap(&label("b", 1), &wrapped),
            Err(KeyError::Unwrap(_))
        ));
        assert!(matches!(
            kek.unwrap(&label("a", 2), &wrapped),
            Err(KeyError::Unwrap(_))
        ));
        for i in 0..wrapped.len() {
            let mut bad = wrapped.clone();
            bad[i] ^= 0x01;
            assert!(kek.unwrap(&label("a", 1), &bad).is_err(), "byte {i}");
        }
        assert!(matches!(
            kek.unwrap(&label("a", 1), &wrapped[..20]),
            Err(KeyError::Malformed(_))
        ));
        let other = dir.path().join("other.key");
        KeyFileProvider::create(&other).unwrap();
        let other = KeyFileProvider::open(&other).unwrap();
        assert!(other.unwrap(&label("a", 1), &wrapped).is_err());
    }

    #[test]
    fn create_makes_a_missing_directory_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/cardvault/kek.key");
        KeyFileProvider::create(&path).unwrap();
        let mode = fs::metadata(dir.path().join("etc/cardvault"))
            .unwrap()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
        assert!(KeyFileProvider::open(&path).is_ok());
    }

    #[test]
    fn refuses_readable_or_wrong_sized_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek.key");
        KeyFileProvider::create(&path).unwrap();
        for mode in [0o640, 0o604, 0o660, 0o644] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = KeyFileProvider::open(&path).err().unwrap();
            assert!(matches!(err, KeyFileError::Permissions { .. }), "{mode:o}");
            assert!(err.to_string().contains("chmod 600"));
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(KeyFileProvider::open(&path).is_ok());

        let short = dir.path().join("short.key");
        fs::write(&short, [1u8; 31]).unwrap();
        fs::set_permissions(&short, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            KeyFileProvider::open(&short),
            Err(KeyFileError::WrongSize { len: 31, .. })
        ));
        assert!(matches!(
            KeyFileProvider::open(dir.path()),
            Err(KeyFileError::NotAFile { .. } | KeyFileError::Permissions { .. })
        ));
        assert!(matches!(
            KeyFileProvider::open(&dir.path().join("missing")),
            Err(KeyFileError::Io { .. })
        ));
    }
}
