//! The key hierarchy and everything that touches key material: the KEK
//! provider trait and its implementations (key file, custodian shares, a
//! PKCS#11 HSM), per-tenant data keys, sealing and opening PAN records, and
//! PAN fingerprints. No I/O except the key providers' own (reading the key
//! file, talking to the HSM).

pub mod fingerprint;
pub mod guarded;
pub mod kek;
pub mod keyfile;
pub mod keys;
#[cfg(feature = "vault")]
pub mod pkcs11;
pub mod record;
pub mod shares;
pub mod transient;

pub use fingerprint::{Fingerprint, Fingerprinter};
pub use guarded::Guarded;
pub use kek::AesKek;
pub use keyfile::{KeyFileError, KeyFileProvider};
pub use keys::{DataKey, KeyError, KeyLabel, KeyProvider, KeyPurpose, SecretKey};
pub use record::{RecordError, RecordView};
pub use transient::TransientKey;

/// Appends `bytes` to `out` behind a 4-byte big-endian length, so that
/// concatenated fields can never be re-split differently (`ab‖c` ≠ `a‖bc`).
pub(crate) fn push_length_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}
