//! Wrapped-key records: a data, fingerprint or audit key wrapped by the KEK
//! (and, during a KEK rotation, by the next one too), with its state and
//! the times it was created and last changed.

use super::{CodecError, Reader};

/// Format byte of a stored data-key record.
pub const KEY_RECORD_FORMAT_V1: u8 = 1;
/// Format byte of a key record wrapped under two KEKs (a KEK rotation in
/// progress): V1's fields, then the key wrapped by the next KEK.
pub const KEY_RECORD_FORMAT_V2: u8 = 2;
/// Format byte of a key record with the time of its last state change:
/// state, created, changed, wrapped, then a flag byte and the next KEK's
/// wrapping when the flag is 1. What this build writes.
pub const KEY_RECORD_FORMAT_V3: u8 = 3;

/// Lifecycle of a data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum KeyState {
    /// Used for new encryptions (one per tenant and purpose).
    Active = 1,
    /// Rotated out: opens old records, seals nothing new.
    DecryptOnly = 2,
    /// Destroyed: no record is sealed under it any more, and its wrapped
    /// bytes are gone; the record stays for the inventory.
    Destroyed = 3,
}

/// A data key as stored: its state, creation time and wrapped bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Lifecycle state.
    pub state: KeyState,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Time of the last state change (activation, retirement,
    /// destruction); records of formats 1 and 2 read it as `created_ms`.
    pub changed_ms: u64,
    /// The key wrapped by the KEK (empty once destroyed).
    pub wrapped: Vec<u8>,
    /// The same key wrapped by the next KEK, while a KEK rotation waits for
    /// the vault to open on it (docs/keys.md).
    pub wrapped_next: Option<Vec<u8>>,
}

impl KeyRecord {
    /// This record destroyed at `now_ms`: label and dates kept for the
    /// inventory, no key bytes under any KEK.
    pub fn destroyed(&self, now_ms: u64) -> KeyRecord {
        KeyRecord {
            state: KeyState::Destroyed,
            changed_ms: now_ms,
            wrapped: Vec::new(),
            wrapped_next: None,
            created_ms: self.created_ms,
        }
    }

    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(21 + 2 * self.wrapped.len());
        out.push(KEY_RECORD_FORMAT_V3);
        out.push(self.state as u8);
        out.extend_from_slice(&self.created_ms.to_be_bytes());
        out.extend_from_slice(&self.changed_ms.to_be_bytes());
        out.push(self.wrapped.len() as u8);
        out.extend_from_slice(&self.wrapped);
        match &self.wrapped_next {
            None => out.push(0),
            Some(next) => {
                out.push(1);
                out.push(next.len() as u8);
                out.extend_from_slice(next);
            }
        }
        out
    }

    /// Decodes a record written by [`KeyRecord::encode`].
    pub fn decode(bytes: &[u8]) -> Result<KeyRecord, CodecError> {
        const WHAT: &str = "key record";
        let mut r = Reader::new(bytes, WHAT);
        let format = r.u8()?;
        if !(KEY_RECORD_FORMAT_V1..=KEY_RECORD_FORMAT_V3).contains(&format) {
            return Err(CodecError::UnknownFormat { what: WHAT, format });
        }
        let state = match r.u8()? {
            1 => KeyState::Active,
            2 => KeyState::DecryptOnly,
            3 => KeyState::Destroyed,
            _ => {
                return Err(CodecError::InvalidField {
                    what: WHAT,
                    field: "state",
                });
            }
        };
        let created_ms = r.u64()?;
        let changed_ms = if format == KEY_RECORD_FORMAT_V3 {
            r.u64()?
        } else {
            created_ms
        };
        let len = usize::from(r.u8()?);
        let wrapped = r.take(len)?.to_vec();
        let has_next = match format {
            KEY_RECORD_FORMAT_V1 => false,
            KEY_RECORD_FORMAT_V2 => true,
            _ => match r.u8()? {
                0 => false,
                1 => true,
                _ => {
                    return Err(CodecError::InvalidField {
                        what: WHAT,
                        field: "next wrapping flag",
                    });
                }
            },
        };
        let wrapped_next = if has_next {
            let len = usize::from(r.u8()?);
            Some(r.take(len)?.to_vec())
        } else {
            None
        };
        r.finish()?;
        Ok(KeyRecord {
            state,
            created_ms,
            changed_ms,
            wrapped,
            wrapped_next,
        })
    }
}
