//! The key hierarchy and everything that touches key material: the KEK
//! provider trait and its key-file implementation, per-tenant data keys,
//! sealing and opening PAN records, and PAN fingerprints. No I/O except the
//! key provider's own (reading the key file).

pub mod fingerprint;
pub mod guarded;
pub mod keyfile;
pub mod keys;
pub mod record;
pub mod transient;

pub use fingerprint::{Fingerprint, Fingerprinter};
pub use guarded::Guarded;
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
