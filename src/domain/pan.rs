//! The primary account number. A [`Pan`] exists only once outside input has
//! been parsed and checked; it keeps its digits in a fixed buffer that is
//! wiped on drop, never prints more than BIN + last 4, cannot be cloned and
//! cannot be serialized.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{Brand, MAX_DIGITS, MIN_DIGITS, luhn};

/// Longest input accepted before parsing stops: 19 digits with a separator
/// between every two of them.
pub const MAX_INPUT_LEN: usize = 2 * MAX_DIGITS - 1;

/// Why a PAN was rejected. Carries positions and counts, never the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PanError {
    /// Nothing was given.
    #[error("card number is empty")]
    Empty,
    /// More bytes than any card number with separators can have.
    #[error("card number input is longer than {MAX_INPUT_LEN} characters")]
    InputTooLong,
    /// A byte that is neither an ASCII digit nor a separator.
    #[error("card number has an invalid character at position {position}")]
    InvalidCharacter {
        /// Zero-based byte offset.
        position: usize,
    },
    /// A space or dash that is not between two digits.
    #[error("card number has a misplaced separator at position {position}")]
    MisplacedSeparator {
        /// Zero-based byte offset.
        position: usize,
    },
    /// Fewer than 12 or more than 19 digits.
    #[error("card number has {digits} digits; 12 to 19 are allowed")]
    WrongLength {
        /// How many digits were found.
        digits: usize,
    },
    /// The digits fail the Luhn check.
    #[error("card number fails the Luhn check")]
    LuhnCheckFailed,
}

impl PanError {
    /// The fixed message an API client gets for this error: no positions,
    /// counts or input, so it can never help reconstruct what was sent.
    pub fn client_message(&self) -> &'static str {
        match self {
            PanError::Empty => "card number is empty",
            PanError::InputTooLong => "card number input is too long",
            PanError::InvalidCharacter { .. } => {
                "card number may contain only digits, with single spaces or dashes between groups"
            }
            PanError::MisplacedSeparator { .. } => "card number has a misplaced space or dash",
            PanError::WrongLength { .. } => "card number must have 12 to 19 digits",
            PanError::LuhnCheckFailed => "card number fails the Luhn check",
        }
    }
}

/// The first six digits of a PAN of 16 digits or more.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bin([u8; 6]);

/// The last four digits of a PAN.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Last4([u8; 4]);

macro_rules! digit_newtype {
    ($ty:ident, $n:expr) => {
        impl $ty {
            /// Builds it from exactly this many ASCII digits.
            pub fn from_digits(digits: &[u8]) -> Option<$ty> {
                let arr: [u8; $n] = digits.try_into().ok()?;
                arr.iter().all(u8::is_ascii_digit).then_some($ty(arr))
            }

            /// The digits as text.
            pub fn as_str(&self) -> &str {
                // Built only from ASCII digits.
                std::str::from_utf8(&self.0).unwrap_or("")
            }

            /// The digits as ASCII bytes.
            pub fn as_bytes(&self) -> &[u8] {
                &self.0
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($ty), self.as_str())
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
digit_newtype!(Bin, 6);
digit_newtype!(Last4, 4);

/// How many leading digits of a PAN may be kept in its token and shown in
/// metadata: six when at least six digits stay hidden (PANs of 16+ digits),
/// otherwise none.
pub fn kept_prefix_len(pan_len: usize) -> usize {
    if pan_len >= 16 { 6 } else { 0 }
}

/// A parsed, Luhn-valid primary account number of 12 to 19 digits.
///
/// ```
/// use cardvault::Pan;
///
/// let pan = Pan::parse("4111 1111 1111 1111").unwrap();
/// assert_eq!(pan.to_string(), "411111******1111");
/// assert_eq!(format!("{pan:?}"), "Pan(411111******1111)");
/// assert!(Pan::parse("4111 1111 1111 1112").is_err()); // fails Luhn
/// ```
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Pan {
    /// On the heap, so moving a `Pan` moves a pointer and leaves no copy of
    /// the digits behind on the stack (a gcore showed such residue).
    digits: Box<[u8; MAX_DIGITS]>,
    len: u8,
}

impl Pan {
    /// Parses a card number: 12–19 ASCII digits, optionally grouped by single
    /// spaces or dashes, passing the Luhn check.
    pub fn parse(input: &str) -> Result<Pan, PanError> {
        Pan::parse_bytes(input.as_bytes())
    }

    /// [`Pan::parse`] on raw bytes (anything that is not ASCII is rejected).
    pub fn parse_bytes(input: &[u8]) -> Result<Pan, PanError> {
        if input.is_empty() {
            return Err(PanError::Empty);
        }
        if input.len() > MAX_INPUT_LEN {
            return Err(PanError::InputTooLong);
        }
        let mut pan = Pan {
            digits: Box::new([0; MAX_DIGITS]),
            len: 0,
        };
        let mut count = 0usize;
        for (position, &byte) in input.iter().enumerate() {
            match byte {
                b'0'..=b'9' => {
                    if count < MAX_DIGITS {
                        pan.digits[count] = byte;
                    }
                    count += 1;
                }
                b' ' | b'-' => {
                    let after_digit = position > 0 && input[position - 1].is_ascii_digit();
                    let before_digit = input.get(position + 1).is_some_and(u8::is_ascii_digit);
                    if !(after_digit && before_digit) {
                        return Err(PanError::MisplacedSeparator { position });
                    }
                }
                _ => return Err(PanError::InvalidCharacter { position }),
            }
        }
        if !(MIN_DIGITS..=MAX_DIGITS).contains(&count) {
            return Err(PanError::WrongLength { digits: count });
        }
        pan.len = count as u8;
        if !luhn::passes(pan.digits()) {
            return Err(PanError::LuhnCheckFailed);
        }
        Ok(pan)
    }

    fn digits(&self) -> &[u8] {
        &self.digits[..usize::from(self.len)]
    }

    /// The full card number as ASCII digits. Every caller is a place where
    /// the PAN leaves the vault's protection (sealing, fingerprinting, the
    /// detokenize response): keep them few and reviewed.
    pub fn expose_digits(&self) -> &[u8] {
        self.digits()
    }

    /// The full card number as text; see [`Pan::expose_digits`].
    pub fn expose_str(&self) -> &str {
        std::str::from_utf8(self.digits()).unwrap_or("")
    }

    /// Number of digits (12–19).
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Always false: a PAN has at least 12 digits.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The first six digits, only for PANs of 16 digits or more (shorter
    /// ones would reveal too much alongside the last four).
    pub fn bin(&self) -> Option<Bin> {
        (kept_prefix_len(self.len()) == 6)
            .then(|| Bin::from_digits(&self.digits[..6]))
            .flatten()
    }

    /// The last four digits.
    pub fn last4(&self) -> Last4 {
        let d = self.digits();
        Last4::from_digits(&d[d.len() - 4..]).unwrap_or(Last4([b'0'; 4]))
    }

    /// The card brand.
    pub fn brand(&self) -> Brand {
        Brand::detect(self.digits())
    }

    /// Masked form: BIN6 (when allowed) and last 4, the rest `*`.
    fn write_masked(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keep_front = kept_prefix_len(self.len());
        for (i, &b) in self.digits().iter().enumerate() {
            let shown = i < keep_front || i >= self.len() - 4;
            let c = if shown { char::from(b) } else { '*' };
            fmt::Write::write_char(f, c)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pan(")?;
        self.write_masked(f)?;
        f.write_str(")")
    }
}

impl fmt::Display for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_masked(f)
    }
}

impl PartialEq for Pan {
    /// Constant-time comparison of the digits.
    fn eq(&self, other: &Pan) -> bool {
        use subtle::ConstantTimeEq;
        self.len == other.len && bool::from(self.digits[..].ct_eq(&other.digits[..]))
    }
}

impl Eq for Pan {}

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
    fn accepts_public_test_numbers_with_and_without_separators() {
        for s in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "3782 822463 10005",
            "500000000009",
            "4000000000000000006",
        ] {
            let pan = Pan::parse(s).unwrap();
            assert_eq!(pan.expose_str(), s.replace([' ', '-'], ""));
        }
    }

    #[test]
    fn rejections_name_the_problem() {
        assert_eq!(Pan::parse("").unwrap_err(), PanError::Empty);
        assert_eq!(
            Pan::parse("4111111111111112").unwrap_err(),
            PanError::LuhnCheckFailed
        );
        assert_eq!(
            Pan::parse("41111111111").unwrap_err(),
            PanError::WrongLength { digits: 11 }
        );
        assert_eq!(
            Pan::parse("41111111111111111111").unwrap_err(),
            PanError::WrongLength { digits: 20 }
        );
        assert_eq!(
            Pan::parse("4111x11111111111").unwrap_err(),
            PanError::InvalidCharacter { position: 4 }
        );
        assert_eq!(
            Pan::parse(" 4111111111111111").unwrap_err(),
            PanError::MisplacedSeparator { position: 0 }
        );
        assert_eq!(
            Pan::parse("4111111111111111-").unwrap_err(),
            PanError::MisplacedSeparator { position: 16 }
        );
        assert_eq!(
            Pan::parse("4111  1111111111111").unwrap_err(),
            PanError::MisplacedSeparator { position: 4 }
        );
        // Unicode digits (Arabic-Indic, fullwidth) are not ASCII digits.
        assert!(matches!(
            Pan::parse("٤١١١١١١١١١١١١١١١").unwrap_err(),
            PanError::InvalidCharacter { position: 0 } | PanError::InputTooLong
        ));
        assert_eq!(
            Pan::parse("４111111111111111").unwrap_err(),
            PanError::InvalidCharacter { position: 0 }
        );
        assert_eq!(
            Pan::parse("4111111111111111\n").unwrap_err(),
            PanError::InvalidCharacter { position: 16 }
        );
        assert_eq!(
            Pan::parse("4111\u{0}111111111111").unwrap_err(),
            PanError::InvalidCharacter { position: 4 }
        );
        assert_eq!(
            Pan::parse(&"1".repeat(1000)).unwrap_err(),
            PanError::InputTooLong
        );
    }

    #[test]
    fn debug_and_display_mask_the_middle() {
        let pan = Pan::parse("4111111111111111").unwrap();
        assert_eq!(format!("{pan:?}"), "Pan(411111******1111)");
        assert_eq!(format!("{pan}"), "411111******1111");
        let amex = Pan::parse("378282246310005").unwrap();
        assert_eq!(format!("{amex:?}"), "Pan(***********0005)");
        assert_eq!(amex.bin(), None);
        assert_eq!(amex.last4().as_str(), "0005");
        assert_eq!(pan.bin().unwrap().as_str(), "411111");
    }

    #[test]
    fn error_text_never_contains_the_input() {
        let canary = "4929123456781234";
        for input in [canary, &canary[..11], "4929-1234-5678-123x"] {
            if let Err(e) = Pan::parse(input) {
                let text = format!("{e} {e:?}");
                assert!(!text.contains("4929"), "{text}");
            }
        }
    }

    proptest! {
        #[test]
        fn valid_pans_round_trip(body in "[0-9]{11,18}") {
            let s = with_check_digit(&body);
            let pan = Pan::parse(&s).unwrap();
            prop_assert_eq!(pan.expose_str(), s.as_str());
            prop_assert_eq!(pan.len(), s.len());
            let shown = format!("{pan:?} {pan}");
            prop_assert!(!shown.contains(&s));
            let hidden = pan.len() - 4 - kept_prefix_len(pan.len());
            prop_assert_eq!(shown.matches('*').count(), 2 * hidden);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(pan) = Pan::parse_bytes(&bytes) {
                prop_assert!(luhn::passes(pan.expose_digits()));
                prop_assert!((MIN_DIGITS..=MAX_DIGITS).contains(&pan.len()));
            }
        }

        #[test]
        fn one_changed_digit_fails_luhn(body in "[0-9]{15}", pos in 0usize..16, delta in 1u8..10) {
            let s = with_check_digit(&body);
            let mut bytes = s.into_bytes();
            bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
            prop_assert_eq!(Pan::parse_bytes(&bytes).unwrap_err(), PanError::LuhnCheckFailed);
        }
    }
}
