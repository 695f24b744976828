//! cardvault: a hardened card-data tokenization vault.
//!
//! Layers, inside out, each using only those before it
//! (docs/ARCHITECTURE.md): [`domain`] (PANs, tokens, Luhn, brands; pure),
//! [`crypto`] (key hierarchy, sealed records, fingerprints), [`store`] (the
//! storage interface, the byte layouts in [`store::codec`], and the RocksDB
//! and PostgreSQL backends — the only code that touches a database),
//! [`audit`] (the tamper-evident trail), [`vault`] (the service core, no
//! HTTP), [`config`], `runtime` (work that outlives a request: key custody,
//! re-encryption, cryptoperiods, approvals, the oracle guard, sweeps),
//! [`server`] (the mTLS API and ops listeners and the routes) and [`cli`].
//! Beside them: [`peer`] (what a peer sends, parsed; pure), `scan` (finding
//! card numbers in files), `evidence`, `rewrite` and `watch` (the engines
//! of `cardvault evidence`, `tokenize-file` and `watch`), [`pki`], [`client`] and
//! [`load`]. Domain, crypto, the codec and the audit chain build without
//! RocksDB or tokio (`--no-default-features`), which is how the fuzz
//! targets build.

// Without the `vault` feature the library is the pure layers the fuzz
// crate builds (domain, crypto, codecs, parsers); what only the vault uses
// is unused there.
#![cfg_attr(not(feature = "vault"), allow(dead_code))]

pub mod audit;
#[cfg(feature = "vault")]
pub mod cli;
#[cfg(feature = "vault")]
pub mod client;
#[cfg(feature = "vault")]
pub(crate) mod clock;
#[cfg(feature = "vault")]
pub mod config;
pub mod crypto;
pub(crate) mod dirlock;
pub mod domain;
#[cfg(feature = "vault")]
pub(crate) mod evidence;
pub mod fuzzing;
pub(crate) mod hardening;
#[cfg(feature = "vault")]
pub mod load;
pub mod peer;
#[cfg(feature = "vault")]
pub mod pki;
pub(crate) mod private_file;
pub(crate) mod random;
pub(crate) mod redact;
#[cfg(feature = "vault")]
pub(crate) mod rewrite;
#[cfg(feature = "vault")]
pub(crate) mod runtime;
pub(crate) mod scan;
#[cfg(feature = "vault")]
pub(crate) mod scratch;
#[cfg(feature = "vault")]
pub mod server;
pub mod store;
#[cfg(feature = "vault")]
pub(crate) mod supply_chain;
#[cfg(feature = "vault")]
pub mod vault;
#[cfg(feature = "vault")]
pub(crate) mod watch;
pub mod zero_on_free;

pub use domain::{Brand, Expiry, Pan, TenantId, Token};
#[cfg(feature = "vault")]
pub use vault::{Revealed, TokenInfo, TokenMode, Vault, VaultError, VaultOptions};
