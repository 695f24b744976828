//! cardvault: a hardened card-data tokenization vault.
//!
//! Layers, inside out (docs/ARCHITECTURE.md): [`domain`] (PANs, tokens,
//! Luhn, brands; pure), [`crypto`] (key hierarchy, sealed records,
//! fingerprints), [`store`] (the storage interface, the byte layouts of
//! stored data in [`store::codec`], and the RocksDB backend, the only module
//! that touches a database), [`vault`] (the service core), [`audit`] (the
//! tamper-evident trail), `server` (mTLS HTTP API and ops listener), `cli`.
//! `config`, `pki` and `client` (the mTLS client used by tests and the load
//! tool) support them. Domain, crypto, the codec and the audit chain build
//! without RocksDB or tokio (`--no-default-features`), which is how the
//! fuzz targets build.

pub mod audit;
#[cfg(feature = "vault")]
pub mod cli;
#[cfg(feature = "vault")]
pub mod client;
#[cfg(feature = "vault")]
pub mod config;
pub mod crypto;
pub mod dirlock;
pub mod domain;
#[cfg(feature = "vault")]
pub mod evidence;
pub mod fuzzing;
pub mod hardening;
#[cfg(feature = "vault")]
pub mod load;
pub mod peer;
#[cfg(feature = "vault")]
pub mod pki;
pub mod random;
pub mod redact;
#[cfg(feature = "vault")]
pub mod rewrite;
pub mod scan;
#[cfg(feature = "vault")]
pub mod server;
pub mod store;
#[cfg(feature = "vault")]
pub mod supply_chain;
#[cfg(feature = "vault")]
pub mod vault;
pub mod zero_on_free;

pub use domain::{Brand, Expiry, Pan, TenantId, Token};
#[cfg(feature = "vault")]
pub use vault::{Revealed, TokenInfo, TokenMode, Vault, VaultError, VaultOptions};
