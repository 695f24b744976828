//! Finding card data at rest: the detector ([`detect`], pure and fuzzed),
//! the file reader ([`source`]: text, UTF-16, `.gz`, bounded chunks) and
//! the walk over files and directories ([`walk`]). `cardvault scan`
//! reports what they find; `cardvault evidence` runs them over a vault's
//! own directories. Nothing here ever holds a PAN in a value that could be
//! printed: findings carry BIN (16+ digits), last 4 and positions.

pub mod detect;
#[cfg(feature = "vault")]
pub mod source;
#[cfg(feature = "vault")]
pub mod walk;

pub use detect::{Finding, Kind};
