//! The key hierarchy and everything that touches key material: the KEK
//! provider trait and its implementations (key file, custodian shares, a
//! PKCS#11 HSM), per-tenant data keys, sealing and opening PAN records, and
//! PAN fingerprints. No I/O except the key providers' own (reading the key
//! file, talking to the HSM).

pub(crate) mod fingerprint;
pub(crate) mod guarded;
pub(crate) mod hierarchy;
pub(crate) mod keyfile;
#[cfg(feature = "vault")]
pub(crate) mod pkcs11;
pub mod record;
pub(crate) mod shares;
#[cfg(feature = "vault")]
pub(crate) mod signing;
pub(crate) mod transient;
pub(crate) mod wrap;

pub use fingerprint::{Fingerprint, Fingerprinter};
pub use guarded::Guarded;
pub use hierarchy::{DataKey, KeyError, KeyLabel, KeyProvider, KeyPurpose, SecretKey};
pub use keyfile::{KeyFileError, KeyFileProvider};
pub use record::{RecordError, RecordView};
#[cfg(feature = "vault")]
pub use signing::{PublicKey, PublicKeyError, SigningKey};
pub use transient::TransientKey;
pub use wrap::AesKek;

/// Appends `bytes` to `out` behind a 4-byte big-endian length, so that
/// concatenated fields can never be re-split differently (`ab‖c` ≠ `a‖bc`).
pub(crate) fn push_length_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}
