//! Pure card-data types: PANs, tokens, tenants, expiry dates, brands and the
//! Luhn check. Every type here is built only by parsing outside input, and no
//! error ever carries the input it rejected. No I/O.

pub(crate) mod brand;
pub(crate) mod expiry;
pub mod luhn;
pub(crate) mod pan;
pub(crate) mod tenant;
pub(crate) mod token;

pub use brand::Brand;
pub use expiry::{Expiry, ExpiryError};
pub use pan::{Bin, Last4, Pan, PanError};
pub use tenant::{TenantError, TenantId};
pub use token::{Token, TokenError, TokenProfile};

/// Shortest PAN (and token) accepted, in digits.
pub const MIN_DIGITS: usize = 12;
/// Longest PAN (and token) accepted, in digits.
pub const MAX_DIGITS: usize = 19;
