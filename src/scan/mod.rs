//! Finding card data at rest: the detector ([`detect`], pure and fuzzed),
//! the file reader ([`source`]: text, UTF-16, `.gz`, bounded chunks) and
//! the walk over files and directories ([`walk`]), and a scan's results
//! and reports ([`report`]: JSON, SARIF). `cardvault scan` prints them; `cardvault evidence` runs them over a vault's
//! own directories. Nothing here ever holds a PAN in a value that could be
//! printed: findings carry BIN (16+ digits), last 4 and positions.

pub(crate) mod detect;
#[cfg(feature = "vault")]
pub(crate) mod report;
#[cfg(feature = "vault")]
pub(crate) mod source;
#[cfg(feature = "vault")]
pub(crate) mod walk;

pub use detect::Kind;
