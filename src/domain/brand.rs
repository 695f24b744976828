//! Card brands, detected from the leading digits (the issuer identification
//! number ranges the networks publish). Used for metadata only; an unknown
//! brand is not an error.

use std::fmt;

/// A card network, as far as the leading digits tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Brand {
    /// Visa: 4.
    Visa = 1,
    /// Mastercard: 51–55 and the 2-series 2221–2720.
    Mastercard = 2,
    /// American Express: 34, 37.
    Amex = 3,
    /// Discover: 6011, 644–649, 65.
    Discover = 4,
    /// JCB: 3528–3589.
    Jcb = 5,
    /// Diners Club: 300–305, 309, 36, 38, 39.
    Diners = 6,
    /// UnionPay: 62, 81.
    UnionPay = 7,
    /// Maestro: 50 and 56–69 where no other brand claims the range
    /// (6304, 639, 67, …).
    Maestro = 8,
    /// Mir: 2200–2204.
    Mir = 9,
    /// RuPay: 508, 60 (but 6011), 82.
    RuPay = 10,
    /// Troy: 9792.
    Troy = 11,
    /// None of the above.
    Unknown = 0,
}

impl Brand {
    /// Every brand, for tables and decoders.
    pub const ALL: [Brand; 12] = [
        Brand::Visa,
        Brand::Mastercard,
        Brand::Amex,
        Brand::Discover,
        Brand::Jcb,
        Brand::Diners,
        Brand::UnionPay,
        Brand::Maestro,
        Brand::Mir,
        Brand::RuPay,
        Brand::Troy,
        Brand::Unknown,
    ];

    /// Detects the brand from ASCII digits (at least the first six are read).
    pub fn detect(digits: &[u8]) -> Brand {
        let prefix = |n: usize| -> u32 {
            digits.iter().take(n).fold(0u32, |acc, &b| {
                acc * 10 + u32::from(b.wrapping_sub(b'0') % 10)
            })
        };
        if digits.len() < 6 {
            return Brand::Unknown;
        }
        let p1 = prefix(1);
        let p2 = prefix(2);
        let p3 = prefix(3);
        let p4 = prefix(4);
        match () {
            _ if p1 == 4 => Brand::Visa,
            _ if (51..=55).contains(&p2) || (2221..=2720).contains(&p4) => Brand::Mastercard,
            _ if p2 == 34 || p2 == 37 => Brand::Amex,
            _ if p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 => Brand::Discover,
            _ if (3528..=3589).contains(&p4) => Brand::Jcb,
            _ if (300..=305).contains(&p3) || p3 == 309 || p2 == 36 || p2 == 38 || p2 == 39 => {
                Brand::Diners
            }
            _ if p2 == 62 || p2 == 81 => Brand::UnionPay,
            _ if (2200..=2204).contains(&p4) => Brand::Mir,
            _ if p3 == 508 || p2 == 60 || p2 == 82 => Brand::RuPay,
            _ if p4 == 9792 => Brand::Troy,
            _ if p2 == 50 || (56..=69).contains(&p2) => Brand::Maestro,
            _ => Brand::Unknown,
        }
    }

    /// The lower-case name used in the API (`visa`, `mastercard`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Brand::Visa => "visa",
            Brand::Mastercard => "mastercard",
            Brand::Amex => "amex",
            Brand::Discover => "discover",
            Brand::Jcb => "jcb",
            Brand::Diners => "diners",
            Brand::UnionPay => "unionpay",
            Brand::Maestro => "maestro",
            Brand::Mir => "mir",
            Brand::RuPay => "rupay",
            Brand::Troy => "troy",
            Brand::Unknown => "unknown",
        }
    }

    /// The one-byte code stored on disk.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Decodes [`Brand::code`]; `None` for a byte no brand uses.
    pub fn from_code(code: u8) -> Option<Brand> {
        Brand::ALL.into_iter().find(|b| b.code() == code)
    }
}

impl fmt::Display for Brand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brand_table() {
        let cases: &[(&str, Brand)] = &[
            ("4111111111111111", Brand::Visa),
            ("5555555555554444", Brand::Mastercard),
            ("5105105105105100", Brand::Mastercard),
            ("2223000048400011", Brand::Mastercard),
            ("2720990000000007", Brand::Mastercard),
            ("2220990000000008", Brand::Unknown),
            ("2721000000000004", Brand::Unknown),
            ("378282246310005", Brand::Amex),
            ("341111111111111", Brand::Amex),
            ("6011111111111117", Brand::Discover),
            ("6445644564456445", Brand::Discover),
            ("6511111111111117", Brand::Discover),
            ("3530111333300000", Brand::Jcb),
            ("3589000000000000", Brand::Jcb),
            ("30569309025904", Brand::Diners),
            ("38520000023237", Brand::Diners),
            ("36000000000008", Brand::Diners),
            ("6200000000000005", Brand::UnionPay),
            ("8100000000000000", Brand::UnionPay),
            ("6759649826438453", Brand::Maestro),
            ("500000000009", Brand::Maestro),
            ("5800000000000000", Brand::Maestro),
            ("9999999999999995", Brand::Unknown),
            ("1234", Brand::Unknown),
        ];
        for (digits, brand) in cases {
            assert_eq!(Brand::detect(digits.as_bytes()), *brand, "{digits}");
        }
    }

    #[test]
    fn codes_round_trip() {
        for b in Brand::ALL {
            assert_eq!(Brand::from_code(b.code()), Some(b));
        }
        assert_eq!(Brand::from_code(200), None);
    }
}
