//! cardvault: a hardened card-data tokenization vault.
//!
//! Layers, inside out (DESIGN.md §2): [`domain`] (PANs, tokens, Luhn,
//! brands; pure), [`crypto`] (key hierarchy, sealed records, fingerprints),
//! [`codec`] (byte layouts of stored data; pure), [`store`] (RocksDB, the
//! only module that touches it), [`vault`] (the service core). The first
//! three build without RocksDB or tokio (`--no-default-features`), which is
//! how the fuzz targets build.

#[cfg(feature = "vault")]
pub mod cli;
pub mod codec;
pub mod crypto;
pub mod domain;
pub mod fuzzing;
pub mod hardening;
pub mod random;
#[cfg(feature = "vault")]
pub mod store;
#[cfg(feature = "vault")]
pub mod vault;

pub use domain::{Brand, Expiry, Pan, TenantId, Token};
#[cfg(feature = "vault")]
pub use vault::{Revealed, TokenInfo, TokenMode, Vault, VaultError, VaultOptions};
