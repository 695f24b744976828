//! The stored record of a hosted-field collection session: which tenant
//! and page origin it serves, its security-code policy, its life (created,
//! expires, refused submits, the current frame's nonce digest) and, once
//! completed, the token and what may be shown of the card — never a PAN,
//! never a security code. One format byte, then JSON (a few hundred bytes,
//! read and written a handful of times per session).

use serde::{Deserialize, Serialize};

use super::CodecError;

/// The session record's format byte.
pub const SESSION_FORMAT_V1: u8 = 1;

/// Longest stored record accepted by the decoder.
const MAX_SESSION_BYTES: usize = 4096;

/// Whether the frame asks for the card's security code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CvcPolicy {
    /// The frame shows the field and refuses a card without a code.
    Required,
    /// The frame shows the field; the shopper may leave it empty.
    Optional,
    /// The frame shows no code field.
    None,
}

impl CvcPolicy {
    /// The name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            CvcPolicy::Required => "required",
            CvcPolicy::Optional => "optional",
            CvcPolicy::None => "none",
        }
    }
}

/// Where a session stands (expiry is read from the clock, not stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Waiting for the shopper's card.
    Pending,
    /// A card was tokenized; the result is set.
    Completed,
    /// Too many refused submits: nothing more is accepted.
    Locked,
}

/// What a completed session holds: the token and what may be shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionResult {
    /// The card's token.
    pub token: String,
    /// The BIN kept in the token, if the tenant's profile keeps one.
    pub bin: Option<String>,
    /// The last four digits.
    pub last4: String,
    /// The card brand.
    pub brand: String,
    /// Expiry month, 1–12.
    pub exp_month: u8,
    /// Expiry year, four digits.
    pub exp_year: u16,
    /// Whether a security code is held for the token.
    pub cvc_held: bool,
    /// When the card was tokenized (ms since the epoch).
    pub completed_ms: u64,
}

/// One collection session as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRecord {
    /// The tenant the card is tokenized in.
    pub tenant: String,
    /// The only origin that may frame the form and receive its messages.
    pub origin: String,
    /// The security-code policy.
    pub cvc: CvcPolicy,
    /// The cart's own reference (an order id), echoed back.
    pub reference: Option<String>,
    /// Created (ms since the epoch).
    pub created_ms: u64,
    /// After this the session takes no card (ms since the epoch).
    pub expires_ms: u64,
    /// Pending, completed or locked.
    pub state: SessionState,
    /// Submits refused so far (a bad card, a wrong nonce, a refused BIN).
    pub refused: u32,
    /// Frames served so far.
    pub frames: u32,
    /// SHA-256 (hex) of the nonce in the frame served last: only that frame
    /// may submit.
    pub frame_nonce: Option<String>,
    /// Set once completed.
    pub result: Option<SessionResult>,
}

impl SessionRecord {
    /// The stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![SESSION_FORMAT_V1];
        // Serializing plain strings and numbers cannot fail.
        out.extend(serde_json::to_vec(self).unwrap_or_default());
        out
    }

    /// Reads stored bytes back.
    pub fn decode(bytes: &[u8]) -> Result<SessionRecord, CodecError> {
        const WHAT: &str = "collection session";
        let (&format, rest) = bytes
            .split_first()
            .ok_or(CodecError::Truncated { what: WHAT })?;
        if format != SESSION_FORMAT_V1 {
            return Err(CodecError::UnknownFormat { what: WHAT, format });
        }
        if bytes.len() > MAX_SESSION_BYTES {
            return Err(CodecError::Trailing { what: WHAT });
        }
        serde_json::from_slice(rest).map_err(|_| CodecError::InvalidField {
            what: WHAT,
            field: "record",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> SessionRecord {
        SessionRecord {
            tenant: "default".into(),
            origin: "https://shop.example".into(),
            cvc: CvcPolicy::Required,
            reference: Some("order-1042".into()),
            created_ms: 1,
            expires_ms: 900_001,
            state: SessionState::Pending,
            refused: 0,
            frames: 0,
            frame_nonce: None,
            result: None,
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let mut record = pending();
        assert_eq!(SessionRecord::decode(&record.encode()).unwrap(), record);
        record.state = SessionState::Completed;
        record.result = Some(SessionResult {
            token: "4111110000001111".into(),
            bin: Some("411111".into()),
            last4: "1111".into(),
            brand: "visa".into(),
            exp_month: 12,
            exp_year: 2030,
            cvc_held: true,
            completed_ms: 5,
        });
        assert_eq!(SessionRecord::decode(&record.encode()).unwrap(), record);
    }

    #[test]
    fn damaged_bytes_are_refused_not_guessed() {
        let bytes = pending().encode();
        assert!(SessionRecord::decode(&[]).is_err());
        assert!(SessionRecord::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(SessionRecord::decode(&other).is_err());
        let mut long = bytes;
        long.extend(std::iter::repeat_n(b' ', MAX_SESSION_BYTES));
        assert!(SessionRecord::decode(&long).is_err());
    }
}
