//! cardvault: a hardened card-data tokenization vault.
//!
//! Layers, inside out (DESIGN.md §2): [`domain`] (PANs, tokens, Luhn,
//! brands; pure), [`crypto`] (key hierarchy, sealed records, fingerprints),
//! [`codec`] (byte layouts of stored data; pure), [`store`] (RocksDB, the
//! only module that touches it), [`vault`] (the service core), [`audit`] (the tamper-evident trail), `server`
//! (mTLS HTTP API and ops listener), `cli`. `config`, `pki` and `client`
//! (the mTLS client used by tests and the load tool) support them. The first
//! three build without RocksDB or tokio (`--no-default-features`), which is
//! how the fuzz targets build.

pub mod audit;
#[cfg(feature = "vault")]
pub mod cli;
#[cfg(feature = "vault")]
pub mod client;
pub mod codec;
#[cfg(feature = "vault")]
pub mod config;
pub mod crypto;
pub mod domain;
pub mod fuzzing;
pub mod hardening;
#[cfg(feature = "vault")]
pub mod load;
#[cfg(feature = "vault")]
pub mod pki;
pub mod random;
#[cfg(feature = "vault")]
pub mod server;
#[cfg(feature = "vault")]
pub mod store;
#[cfg(feature = "vault")]
pub mod vault;
pub mod zero_on_free;

pub use domain::{Brand, Expiry, Pan, TenantId, Token};
#[cfg(feature = "vault")]
pub use vault::{Revealed, TokenInfo, TokenMode, Vault, VaultError, VaultOptions};
