//! Evidence bundles for a PCI DSS v4.0.1 assessor: the facts gathered from
//! the vault's configuration, key store, audit trail and files
//! ([`collect`], with the readers in `facts` and one function per
//! requirement in `sections`), rendered as `evidence.json` and a readable
//! `evidence.md` (`render`), and signed (`sign`: the Ed25519 signer, the
//! signed manifest, verification). The CLI (`cardvault evidence`) opens the
//! stopped vault, hands its facts here and writes the result.

mod facts;
mod findings;
mod keys;
mod render;
mod sections;
mod sign;

pub use render::render_markdown;
pub use sections::{Inputs, collect, snapshot};
pub use sign::*;
