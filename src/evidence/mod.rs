//! Evidence bundles for a PCI DSS v4.0.1 assessor: the facts gathered from
//! the vault's configuration, key store, audit trail and files
//! ([`collect`], with the readers in `facts`, the vault's own keys in
//! `keys`, the flags in `findings`, and one function per requirement in
//! `sections`), the trail fixed first ([`snapshot`]), a running vault's
//! TLS measured ([`probe_tls`]), rendered as `evidence.json` and a
//! readable `evidence.md` (`render`), and signed (`sign`: the Ed25519
//! signer, the signed manifest, verification). The CLI (`cardvault
//! evidence`) reads the stopped vault in-process, or a running one through
//! its admin API, hands the facts here and writes the result.

mod facts;
mod findings;
mod keys;
mod probe;
mod render;
mod sections;
mod sign;
mod snapshot;

pub use probe::{ProbeIdentity, probe_tls};
pub use render::render_markdown;
pub use sections::{Inputs, collect};
pub use sign::*;
pub use snapshot::{Snapshot, snapshot};
