//! The `[kek]` section: where the key-encryption key lives. `provider =
//! "file"` (the default, and what a bare `storage.key_file` means), `"pkcs11"`
//! (an HSM) or `"shamir"` (M-of-N custodian shares; the vault starts sealed).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The `[kek]` section as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "provider", rename_all = "lowercase", deny_unknown_fields)]
pub enum KekConfig {
    /// A 32-byte key file (mode 0600).
    File {
        /// The key file; `storage.key_file` when left out.
        #[serde(default)]
        key_file: Option<PathBuf>,
    },
    /// An AES-256 key inside a PKCS#11 token.
    Pkcs11 {
        /// The PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`).
        module: PathBuf,
        /// The token's label.
        token_label: String,
        /// File holding the user PIN (mode 0600).
        pin_file: PathBuf,
        /// The KEK object's label.
        key_label: String,
    },
    /// M-of-N custodian shares handed in over the admin API.
    Shamir {
        /// Where the share set's public description (set id, threshold,
        /// check value) is kept; `DATA_DIR/kek-shares.json` when left out.
        #[serde(default)]
        set_file: Option<PathBuf>,
    },
}

/// Where the KEK is, resolved: every path absolute, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KekSource {
    /// A key file.
    File(PathBuf),
    /// A PKCS#11 token.
    Pkcs11 {
        /// The module.
        module: PathBuf,
        /// The token's label.
        token_label: String,
        /// The PIN file.
        pin_file: PathBuf,
        /// The key's label.
        key_label: String,
    },
    /// Custodian shares; the share set's description is kept in this file.
    Shamir(PathBuf),
}

impl KekSource {
    /// The short name used in logs and `/readyz` (`file`, `pkcs11`, `shamir`).
    pub fn name(&self) -> &'static str {
        match self {
            KekSource::File(_) => "file",
            KekSource::Pkcs11 { .. } => "pkcs11",
            KekSource::Shamir(_) => "shamir",
        }
    }
}

/// Resolves `[kek]` with `storage.key_file` and `storage.data_dir`:
/// relative paths against `base`, and the one rule that joins them — a key
/// file belongs to `provider = "file"` only.
pub(super) fn resolve(
    kek: Option<&KekConfig>,
    key_file: Option<&Path>,
    data_dir: &Path,
    base: &Path,
) -> Result<KekSource, ConfigError> {
    let abs = |p: &Path| {
        if p.is_relative() {
            base.join(p)
        } else {
            p.to_path_buf()
        }
    };
    let file_only = |provider: &str| {
        ConfigError::new(
            "storage.key_file",
            format!("a key file is for [kek] provider = \"file\", not \"{provider}\"; remove it"),
        )
    };
    match kek {
        None | Some(KekConfig::File { key_file: None }) => {
            key_file.map(|p| KekSource::File(abs(p))).ok_or_else(|| {
                ConfigError::new(
                    "storage.key_file",
                    "missing: where is the KEK? (or set [kek] provider)",
                )
            })
        }
        Some(KekConfig::File { key_file: Some(p) }) => match key_file {
            Some(other) if abs(other) != abs(p) => Err(ConfigError::new(
                "kek.key_file",
                "differs from storage.key_file; give the key file once",
            )),
            _ => Ok(KekSource::File(abs(p))),
        },
        Some(KekConfig::Pkcs11 {
            module,
            token_label,
            pin_file,
            key_label,
        }) => {
            if key_file.is_some() {
                return Err(file_only("pkcs11"));
            }
            for (field, value) in [
                ("kek.token_label", token_label),
                ("kek.key_label", key_label),
            ] {
                if value.is_empty() || value.len() > 32 {
                    return Err(ConfigError::new(field, "must be 1 to 32 characters"));
                }
            }
            Ok(KekSource::Pkcs11 {
                module: abs(module),
                token_label: token_label.clone(),
                pin_file: abs(pin_file),
                key_label: key_label.clone(),
            })
        }
        Some(KekConfig::Shamir { set_file }) => {
            if key_file.is_some() {
                return Err(file_only("shamir"));
            }
            Ok(KekSource::Shamir(match set_file {
                Some(p) => abs(p),
                None => data_dir.join("kek-shares.json"),
            }))
        }
    }
}
