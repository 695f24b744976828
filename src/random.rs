//! The one source of randomness: the operating system's CSPRNG, for keys,
//! nonces and token digits alike.

/// The OS random source failed. Nothing is generated without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub struct RandomError;

/// Fills `buf` from the OS CSPRNG (`getrandom(2)` on Linux).
pub fn fill(buf: &mut [u8]) -> Result<(), RandomError> {
    getrandom::fill(buf).map_err(|_| RandomError)
}
