//! The two sources of randomness. Keys and token digits come from the
//! operating system's CSPRNG ([`fill`]; DESIGN §4 asks it for the digits).
//! Values drawn per request that are only ever used under a key or are
//! public once sent (AES-GCM nonces, request ids) come from this thread's
//! ChaCha12 generator ([`fill_per_use`]), seeded and reseeded from the OS,
//! which saves a `getrandom` system call each.

use rand010::Rng;

/// The OS random source failed. Nothing is generated without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub struct RandomError;

/// Fills `buf` from the OS CSPRNG (`getrandom(2)` on Linux). For keys,
/// token digits and anything else whose secrecy outlives the request.
pub fn fill(buf: &mut [u8]) -> Result<(), RandomError> {
    getrandom::fill(buf).map_err(|_| RandomError)
}

/// Fills `buf` from this thread's CSPRNG: `rand`'s `ThreadRng`, ChaCha12
/// seeded from the OS and reseeded from it after every 64 KiB of output.
/// For nonces and request ids, never for keys: no key may be reproducible
/// from a generator's state in memory.
///
/// `ThreadRng` is not reseeded on `fork`; this process never forks except
/// to `exec` at once (`std::process::Command`), so no two processes share
/// a generator's state. Its seeding from the OS panics instead of failing
/// (a Linux `getrandom` does not fail once the kernel's pool is ready).
pub fn fill_per_use(buf: &mut [u8]) -> Result<(), RandomError> {
    rand010::rng().fill_bytes(buf);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_use_draws_differ_between_calls_and_threads() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        fill_per_use(&mut a).unwrap();
        fill_per_use(&mut b).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
        let c = std::thread::spawn(|| {
            let mut c = [0u8; 32];
            fill_per_use(&mut c).unwrap();
            c
        })
        .join()
        .unwrap();
        assert_ne!(a, c);
        assert_ne!(b, c);
    }
}
