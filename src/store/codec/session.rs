//! The stored record of a hosted-field collection session: which tenant
//! and page origin it serves, its security-code policy, its life (created,
//! expires, refused submits, the current frame's nonce digest) and, once
//! completed, the token and what may be shown of the card — never a PAN,
//! never a security code. A compact binary layout (≈ 150 bytes; it is read
//! and written on every submit): one format byte, fixed-width numbers
//! big-endian, strings with a one- or two-byte length, optional parts
//! behind a presence byte.

use super::CodecError;

/// The session record's format byte.
pub const SESSION_FORMAT_V1: u8 = 1;

/// Longest stored record accepted by the decoder.
const MAX_SESSION_BYTES: usize = 4096;

/// Whether the frame asks for the card's security code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Waiting for the shopper's card.
    Pending,
    /// A card was tokenized; the result is set.
    Completed,
    /// Too many refused submits: nothing more is accepted.
    Locked,
}

/// What a completed session holds: the token and what may be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
        let mut out = Vec::with_capacity(160);
        out.push(SESSION_FORMAT_V1);
        out.push(match self.state {
            SessionState::Pending => 0,
            SessionState::Completed => 1,
            SessionState::Locked => 2,
        });
        out.push(match self.cvc {
            CvcPolicy::Required => 0,
            CvcPolicy::Optional => 1,
            CvcPolicy::None => 2,
        });
        out.extend_from_slice(&self.refused.to_be_bytes());
        out.extend_from_slice(&self.frames.to_be_bytes());
        out.extend_from_slice(&self.created_ms.to_be_bytes());
        out.extend_from_slice(&self.expires_ms.to_be_bytes());
        put_short(&mut out, &self.tenant);
        put_long(&mut out, &self.origin);
        put_optional(&mut out, self.reference.as_deref());
        put_optional(&mut out, self.frame_nonce.as_deref());
        match &self.result {
            None => out.push(0),
            Some(r) => {
                out.push(1);
                put_short(&mut out, &r.token);
                put_optional(&mut out, r.bin.as_deref());
                put_short(&mut out, &r.last4);
                put_short(&mut out, &r.brand);
                out.push(r.exp_month);
                out.extend_from_slice(&r.exp_year.to_be_bytes());
                out.push(u8::from(r.cvc_held));
                out.extend_from_slice(&r.completed_ms.to_be_bytes());
            }
        }
        out
    }

    /// Reads stored bytes back.
    pub fn decode(bytes: &[u8]) -> Result<SessionRecord, CodecError> {
        if bytes.len() > MAX_SESSION_BYTES {
            return Err(CodecError::Trailing { what: WHAT });
        }
        let mut r = Reader(bytes);
        let format = r.byte()?;
        if format != SESSION_FORMAT_V1 {
            return Err(CodecError::UnknownFormat { what: WHAT, format });
        }
        let state = match r.byte()? {
            0 => SessionState::Pending,
            1 => SessionState::Completed,
            2 => SessionState::Locked,
            _ => return Err(invalid("state")),
        };
        let cvc = match r.byte()? {
            0 => CvcPolicy::Required,
            1 => CvcPolicy::Optional,
            2 => CvcPolicy::None,
            _ => return Err(invalid("cvc policy")),
        };
        let refused = r.u32()?;
        let frames = r.u32()?;
        let created_ms = r.u64()?;
        let expires_ms = r.u64()?;
        let tenant = r.short()?;
        let origin = r.long()?;
        let reference = r.optional()?;
        let frame_nonce = r.optional()?;
        let result = match r.byte()? {
            0 => None,
            1 => Some(SessionResult {
                token: r.short()?,
                bin: r.optional()?,
                last4: r.short()?,
                brand: r.short()?,
                exp_month: r.byte()?,
                exp_year: r.u16()?,
                cvc_held: match r.byte()? {
                    0 => false,
                    1 => true,
                    _ => return Err(invalid("cvc held")),
                },
                completed_ms: r.u64()?,
            }),
            _ => return Err(invalid("result")),
        };
        if !r.0.is_empty() {
            return Err(CodecError::Trailing { what: WHAT });
        }
        Ok(SessionRecord {
            tenant,
            origin,
            cvc,
            reference,
            created_ms,
            expires_ms,
            state,
            refused,
            frames,
            frame_nonce,
            result,
        })
    }
}

/// What the codec errors name.
const WHAT: &str = "collection session";

fn invalid(field: &'static str) -> CodecError {
    CodecError::InvalidField { what: WHAT, field }
}

/// A string of at most 255 bytes (longer ones are cut: every field the
/// vault writes is far shorter).
fn put_short(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(255)];
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

/// A string of at most 65,535 bytes.
fn put_long(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(65_535)];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A presence byte, then a short string.
fn put_optional(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_short(out, s);
        }
    }
}

/// The bytes not read yet.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], CodecError> {
        if self.0.len() < n {
            return Err(CodecError::Truncated { what: WHAT });
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn text(&mut self, n: usize) -> Result<String, CodecError> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| invalid("text"))
    }

    fn short(&mut self) -> Result<String, CodecError> {
        let n = usize::from(self.byte()?);
        self.text(n)
    }

    fn long(&mut self) -> Result<String, CodecError> {
        let n = usize::from(self.u16()?);
        self.text(n)
    }

    fn optional(&mut self) -> Result<Option<String>, CodecError> {
        match self.byte()? {
            0 => Ok(None),
            1 => self.short().map(Some),
            _ => Err(invalid("presence")),
        }
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
