//! The tamper-evident line format. Each entry is one JSON object on one
//! line, ending in `,"mac":"<64 hex>"}`; the MAC is HMAC-SHA-256 under the
//! audit key over the previous entry's MAC followed by the entry's own
//! bytes without the MAC field (`{...}`). The first entry of a chain uses
//! 32 zero bytes as its previous MAC. Editing, removing, inserting or
//! reordering an entry breaks the MAC of that entry or of the next one.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::crypto::{Guarded, SecretKey};

/// Length of a chain MAC.
pub const MAC_LEN: usize = 32;

/// The previous MAC of the very first entry.
pub const GENESIS: [u8; MAC_LEN] = [0u8; MAC_LEN];

const MAC_FIELD: &[u8] = b",\"mac\":\"";
/// Bytes after the body's closing brace is removed: `,"mac":"` + hex + `"}`.
const SUFFIX_LEN: usize = MAC_FIELD.len() + 2 * MAC_LEN + 2;

/// Computes entry MACs under one audit key.
pub struct Chain {
    keyed: Guarded<Hmac<Sha256>>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Chain(<audit key redacted>)")
    }
}

/// Why a line is not a well-formed entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// It does not end in a `"mac"` field (cut short, or not an entry).
    #[error("entry is incomplete or has no MAC field")]
    NoMac,
    /// The MAC field is not 64 hex digits.
    #[error("MAC field is not 64 hex digits")]
    BadMacSyntax,
    /// The MAC does not match the entry and its predecessor.
    #[error(
        "MAC mismatch: the entry was altered, or an entry before it was removed, inserted or moved"
    )]
    MacMismatch,
}

impl Chain {
    /// A chain keyed by the audit key.
    pub fn new(key: &SecretKey) -> Chain {
        // HMAC accepts keys of any length, so this cannot fail.
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(key.expose())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        Chain {
            keyed: Guarded::new(keyed),
        }
    }

    fn mac(&self, previous: &[u8; MAC_LEN], body: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = self.keyed.clone();
        mac.update(previous);
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// Appends the sealed line for `body` (a JSON object, `{...}`) and a
    /// newline to `out`; returns the entry's MAC.
    pub fn seal_into(
        &self,
        previous: &[u8; MAC_LEN],
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> [u8; MAC_LEN] {
        debug_assert!(body.ends_with(b"}"));
        let mac = self.mac(previous, body);
        out.extend_from_slice(&body[..body.len() - 1]);
        out.extend_from_slice(MAC_FIELD);
        let mut digits = [0u8; 2 * MAC_LEN];
        // The output is exactly twice the input's length, so this cannot fail.
        let _ = hex::encode_to_slice(mac, &mut digits);
        out.extend_from_slice(&digits);
        out.extend_from_slice(b"\"}\n");
        mac
    }

    /// Checks one line (without its newline) against the previous MAC;
    /// returns the body (`{...}` without the MAC field) and the line's MAC.
    pub fn open(
        &self,
        previous: &[u8; MAC_LEN],
        line: &[u8],
    ) -> Result<(Vec<u8>, [u8; MAC_LEN]), LineError> {
        let (body, mac) = split(line)?;
        let expected = self.mac(previous, &body);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], &mac[..])) {
            return Err(LineError::MacMismatch);
        }
        Ok((body, mac))
    }
}

/// Splits a sealed line into its body and MAC without checking the MAC.
pub fn split(line: &[u8]) -> Result<(Vec<u8>, [u8; MAC_LEN]), LineError> {
    if line.len() < SUFFIX_LEN + 1 || !line.ends_with(b"\"}") {
        return Err(LineError::NoMac);
    }
    let start = line.len() - SUFFIX_LEN;
    if &line[start..start + MAC_FIELD.len()] != MAC_FIELD {
        return Err(LineError::NoMac);
    }
    let hex_digits = &line[start + MAC_FIELD.len()..line.len() - 2];
    // Lower case only, as written: otherwise "AB" and "ab" would both verify
    // and the line could be edited undetected (found by the audit_line fuzzer).
    if !hex_digits
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return Err(LineError::BadMacSyntax);
    }
    let mut mac = [0u8; MAC_LEN];
    hex::decode_to_slice(hex_digits, &mut mac).map_err(|_| LineError::BadMacSyntax)?;
    let mut body = Vec::with_capacity(start + 1);
    body.extend_from_slice(&line[..start]);
    body.push(b'}');
    Ok((body, mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> Chain {
        Chain::new(&SecretKey::from_slice(&[7u8; 32]).unwrap())
    }

    #[test]
    fn sealed_lines_open_in_order_only() {
        let c = chain();
        let mut out = Vec::new();
        let m1 = c.seal_into(&GENESIS, br#"{"seq":1}"#, &mut out);
        let m2 = c.seal_into(&m1, br#"{"seq":2}"#, &mut out);
        let lines: Vec<&[u8]> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(
            c.open(&GENESIS, lines[0]).unwrap(),
            (br#"{"seq":1}"#.to_vec(), m1)
        );
        assert_eq!(c.open(&m1, lines[1]).unwrap().1, m2);
        assert_eq!(c.open(&GENESIS, lines[1]), Err(LineError::MacMismatch));
        let edited = String::from_utf8(lines[0].to_vec())
            .unwrap()
            .replace("1", "3");
        assert!(c.open(&GENESIS, edited.as_bytes()).is_err());
        assert_eq!(
            c.open(&GENESIS, &lines[0][..lines[0].len() - 5]),
            Err(LineError::NoMac)
        );
    }

    #[test]
    fn upper_case_mac_digits_are_refused() {
        let c = chain();
        let mut out = Vec::new();
        c.seal_into(&GENESIS, br#"{"seq":1}"#, &mut out);
        let line = String::from_utf8(out).unwrap();
        let upper = line.trim_end();
        let mac_start = upper.len() - 66;
        let shouted = format!(
            "{}{}",
            &upper[..mac_start],
            upper[mac_start..].to_uppercase()
        );
        assert_ne!(shouted, upper);
        assert_eq!(
            c.open(&GENESIS, shouted.as_bytes()),
            Err(LineError::BadMacSyntax)
        );
    }

    #[test]
    fn another_key_does_not_verify() {
        let mut out = Vec::new();
        chain().seal_into(&GENESIS, br#"{"seq":1}"#, &mut out);
        let other = Chain::new(&SecretKey::from_slice(&[8u8; 32]).unwrap());
        assert_eq!(
            other.open(&GENESIS, &out[..out.len() - 1]),
            Err(LineError::MacMismatch)
        );
    }
}
