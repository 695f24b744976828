//! Byte layouts of everything the store persists: token entries
//! (non-secret metadata plus the sealed record, `entry`), wrapped-key
//! records (`key_record`) and the database keys they are stored under
//! (`db_keys`: tokens, fingerprints, expiries, data keys, counters,
//! checkpoints) and hosted-field collection sessions (`session`). Pure functions, no RocksDB, so the decoders can be fuzzed
//! without it. Every decoder rejects truncated, oversized, trailing or
//! unknown bytes with a [`CodecError`], never a panic.

mod db_keys;
mod entry;
mod key_record;
mod session;
#[cfg(test)]
mod tests;

pub use db_keys::*;
pub use entry::{ENTRY_FORMAT_V1, ENTRY_FORMAT_V2, TokenEntry, TokenMeta};
pub use key_record::{
    KEY_RECORD_FORMAT_V1, KEY_RECORD_FORMAT_V2, KEY_RECORD_FORMAT_V3, KeyRecord, KeyState,
};
pub use session::{CvcPolicy, SESSION_FORMAT_V1, SessionRecord, SessionResult, SessionState};

/// Why stored bytes could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Ended before a field was complete.
    #[error("stored {what} is truncated")]
    Truncated {
        /// Which structure.
        what: &'static str,
    },
    /// Bytes left after the last field.
    #[error("stored {what} has trailing bytes")]
    Trailing {
        /// Which structure.
        what: &'static str,
    },
    /// Format byte this build does not know.
    #[error("stored {what} has unknown format {format}")]
    UnknownFormat {
        /// Which structure.
        what: &'static str,
        /// The format byte.
        format: u8,
    },
    /// A field holds a value outside its range.
    #[error("stored {what} has an invalid {field}")]
    InvalidField {
        /// Which structure.
        what: &'static str,
        /// Which field.
        field: &'static str,
    },
}

/// A bounds-checked cursor over stored bytes.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { bytes, what }
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.bytes.len() < n {
            return Err(CodecError::Truncated { what: self.what });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(super) fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.array::<1>()?[0])
    }

    pub(super) fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(super) fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(super) fn finish(self) -> Result<(), CodecError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Trailing { what: self.what })
        }
    }
}
