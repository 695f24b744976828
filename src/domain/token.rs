//! Tokens of the default profile (docs/vault-core.md): as long as the PAN, digits
//! only, keeping BIN6 + last 4 when at least six digits stay random (else only
//! the last 4), random digits from the OS CSPRNG, and always failing the Luhn
//! check so a token can never be a valid card number.

use std::fmt;

use super::pan::kept_prefix_len;
use super::{MAX_DIGITS, MIN_DIGITS, Pan, luhn};
use crate::random::{self, RandomError};

/// Why a token was rejected. Never carries the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Nothing was given.
    #[error("token is empty")]
    Empty,
    /// A byte that is not an ASCII digit.
    #[error("token has an invalid character at position {position}")]
    InvalidCharacter {
        /// Zero-based byte offset.
        position: usize,
    },
    /// Fewer than 12 or more than 19 digits.
    #[error("token has {digits} characters; 12 to 19 digits are allowed")]
    WrongLength {
        /// How many bytes were given (capped at 20).
        digits: usize,
    },
    /// The digits pass the Luhn check, so they are not a token this vault
    /// issued — most likely a card number sent where a token belongs.
    #[error("value passes the Luhn check, so it is not a token (was a card number sent?)")]
    LooksLikePan,
}

/// Which of the PAN's digits a tenant's tokens keep (config:
/// `[tenants."NAME"] token_profile`). The random digits are what an
/// attacker holding a token and the tokenize role would have to guess
/// (docs/vault-core.md, "Token profiles and the oracle guard").
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TokenProfile {
    /// The first six and last four digits when at least six digits stay
    /// random (16–19 digit PANs), else the last four (the default).
    #[default]
    BinLast4,
    /// The last four digits only, for every length: the token gives no
    /// BIN away, and the vault does not keep or answer one.
    Last4,
}

impl TokenProfile {
    /// Leading digits of the PAN a token of this profile keeps.
    pub fn kept_prefix_len(self, pan_len: usize) -> usize {
        match self {
            TokenProfile::BinLast4 => kept_prefix_len(pan_len),
            TokenProfile::Last4 => 0,
        }
    }

    /// Whether tokens of this profile keep the BIN of a `pan_len`-digit PAN.
    pub fn keeps_bin(self, pan_len: usize) -> bool {
        self.kept_prefix_len(pan_len) == 6
    }

    /// Lower-case name, as in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenProfile::BinLast4 => "bin_last4",
            TokenProfile::Last4 => "last4",
        }
    }
}

/// A token: 12–19 ASCII digits that fail the Luhn check. Not secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token {
    digits: [u8; MAX_DIGITS],
    len: u8,
}

impl TokenError {
    /// The fixed message an API client gets for this error (never the input).
    pub fn client_message(&self) -> &'static str {
        match self {
            TokenError::LooksLikePan => {
                "value passes the Luhn check, so it is not a token (was a card number sent?)"
            }
            TokenError::Empty
            | TokenError::InvalidCharacter { .. }
            | TokenError::WrongLength { .. } => "token must be 12 to 19 digits",
        }
    }
}

impl Token {
    /// Parses a token from outside input: digits only, 12–19 of them, failing
    /// the Luhn check.
    pub fn parse(input: &str) -> Result<Token, TokenError> {
        Token::parse_bytes(input.as_bytes())
    }

    /// [`Token::parse`] on raw bytes.
    pub fn parse_bytes(input: &[u8]) -> Result<Token, TokenError> {
        if input.is_empty() {
            return Err(TokenError::Empty);
        }
        if let Some(position) = input.iter().position(|b| !b.is_ascii_digit()) {
            return Err(TokenError::InvalidCharacter { position });
        }
        if !(MIN_DIGITS..=MAX_DIGITS).contains(&input.len()) {
            return Err(TokenError::WrongLength {
                digits: input.len().min(MAX_DIGITS + 1),
            });
        }
        if luhn::passes(input) {
            return Err(TokenError::LooksLikePan);
        }
        let mut digits = [0u8; MAX_DIGITS];
        digits[..input.len()].copy_from_slice(input);
        Ok(Token {
            digits,
            len: input.len() as u8,
        })
    }

    /// Generates a fresh token of the default profile for `pan` from the
    /// OS CSPRNG (DESIGN §4).
    pub fn generate(pan: &Pan) -> Result<Token, RandomError> {
        Token::generate_for(pan, TokenProfile::BinLast4)
    }

    /// Generates a fresh token of `profile` for `pan` from the OS CSPRNG.
    pub fn generate_for(pan: &Pan, profile: TokenProfile) -> Result<Token, RandomError> {
        Token::generate_with(pan, profile, random::fill)
    }

    /// Generates a token of `profile` drawing random bytes from `fill`.
    /// Every token that could be produced is equally likely: digits come
    /// from rejection sampling and Luhn-passing candidates are drawn again.
    pub fn generate_with(
        pan: &Pan,
        profile: TokenProfile,
        mut fill: impl FnMut(&mut [u8]) -> Result<(), RandomError>,
    ) -> Result<Token, RandomError> {
        let len = pan.len();
        let keep_front = profile.kept_prefix_len(len);
        let random_range = keep_front..len - 4;
        let mut digits = [0u8; MAX_DIGITS];
        digits[..len].copy_from_slice(pan.expose_digits());
        let mut pool = [0u8; 32];
        let mut used = pool.len();
        loop {
            for slot in &mut digits[random_range.clone()] {
                *slot = loop {
                    if used == pool.len() {
                        fill(&mut pool)?;
                        used = 0;
                    }
                    let byte = pool[used];
                    used += 1;
                    // 250 is the largest multiple of 10 below 256: no modulo bias.
                    if byte < 250 {
                        break b'0' + byte % 10;
                    }
                };
            }
            if !luhn::passes(&digits[..len]) {
                let token = Token {
                    digits,
                    len: len as u8,
                };
                digits.fill(0);
                pool.fill(0);
                return Ok(token);
            }
        }
    }

    /// The token's digits as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// The token's digits as ASCII bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.digits[..usize::from(self.len)]
    }

    /// Number of digits.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Always false: a token has at least 12 digits.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({})", self.as_str())
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn with_check_digit(body: &str) -> String {
        (b'0'..=b'9')
            .map(|d| format!("{body}{}", char::from(d)))
            .find(|s| luhn::passes(s.as_bytes()))
            .unwrap_or_default()
    }

    #[test]
    fn parse_rules() {
        assert_eq!(Token::parse("").unwrap_err(), TokenError::Empty);
        assert_eq!(
            Token::parse("4111 111111111112").unwrap_err(),
            TokenError::InvalidCharacter { position: 4 }
        );
        assert_eq!(
            Token::parse("41111111112").unwrap_err(),
            TokenError::WrongLength { digits: 11 }
        );
        assert_eq!(
            Token::parse(&"1".repeat(500)).unwrap_err(),
            TokenError::WrongLength { digits: 20 }
        );
        assert_eq!(
            Token::parse("4111111111111111").unwrap_err(),
            TokenError::LooksLikePan
        );
        assert_eq!(
            Token::parse("4111111111111112").unwrap().as_str(),
            "4111111111111112"
        );
    }

    #[test]
    fn sixteen_digit_token_keeps_bin_and_last4() {
        let pan = Pan::parse("4111111111111111").unwrap();
        let token = Token::generate(&pan).unwrap();
        assert_eq!(&token.as_str()[..6], "411111");
        assert_eq!(&token.as_str()[12..], "1111");
    }

    #[test]
    fn fixed_randomness_that_passes_luhn_is_drawn_again() {
        // First draw: all zeros in the middle gives 4111110000001111, whose
        // Luhn sum decides whether a second draw happens; either way the
        // result must fail Luhn.
        let pan = Pan::parse("4111111111111111").unwrap();
        let mut calls = 0;
        let token = Token::generate_with(&pan, TokenProfile::BinLast4, |buf| {
            calls += 1;
            buf.fill(if calls == 1 { 0 } else { 7 });
            Ok(())
        })
        .unwrap();
        assert!(!luhn::passes(token.as_bytes()));
    }

    proptest! {
        #[test]
        fn generated_tokens_follow_the_profile(body in "[0-9]{11,18}") {
            let s = with_check_digit(&body);
            let pan = Pan::parse(&s).unwrap();
            let token = Token::generate(&pan).unwrap();
            let t = token.as_str();
            prop_assert_eq!(t.len(), s.len());
            prop_assert!(t.bytes().all(|b| b.is_ascii_digit()));
            prop_assert!(!luhn::passes(t.as_bytes()));
            prop_assert_ne!(t, s.as_str());
            prop_assert_eq!(&t[t.len() - 4..], &s[s.len() - 4..]);
            if s.len() >= 16 {
                prop_assert_eq!(&t[..6], &s[..6]);
            }
            prop_assert_eq!(Token::parse(t).unwrap(), token);
        }

        #[test]
        fn last4_tokens_keep_only_the_last_four(body in "[0-9]{15,18}") {
            let s = with_check_digit(&body);
            let pan = Pan::parse(&s).unwrap();
            // Six leading digits all equal to the PAN's would be kept by
            // chance one time in a million: draw until they differ once.
            let differs = (0..8).any(|_| {
                let t = Token::generate_for(&pan, TokenProfile::Last4).unwrap();
                t.as_str()[..6] != s[..6]
            });
            prop_assert!(differs);
            let t = Token::generate_for(&pan, TokenProfile::Last4).unwrap();
            prop_assert_eq!(&t.as_str()[t.len() - 4..], &s[s.len() - 4..]);
            prop_assert!(!luhn::passes(t.as_bytes()));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(token) = Token::parse_bytes(&bytes) {
                prop_assert!(!luhn::passes(token.as_bytes()));
            }
        }
    }
}
