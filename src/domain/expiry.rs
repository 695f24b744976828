//! Card expiry dates (`MM/YY`), stored as non-secret token metadata.

use std::fmt;

/// Why an expiry date was rejected. Never carries the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    /// Not of the form `MM/YY` or `MM/YYYY`.
    #[error("expiry must be MM/YY or MM/YYYY")]
    Format,
    /// Month outside 01–12.
    #[error("expiry month must be 01 to 12")]
    Month,
    /// Year outside 2000–2099.
    #[error("expiry year must be 2000 to 2099")]
    Year,
}

/// A card expiry month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    month: u8,
    year: u16,
}

impl Expiry {
    /// Parses `MM/YY` or `MM/YYYY`.
    pub fn parse(input: &str) -> Result<Expiry, ExpiryError> {
        let bytes = input.as_bytes();
        let digits = |s: &[u8]| -> Result<u16, ExpiryError> {
            if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
                return Err(ExpiryError::Format);
            }
            Ok(s.iter()
                .fold(0u16, |acc, &b| acc * 10 + u16::from(b - b'0')))
        };
        let (month, year) = match bytes {
            [m1, m2, b'/', rest @ ..] if rest.len() == 2 || rest.len() == 4 => {
                (digits(&[*m1, *m2])?, digits(rest)?)
            }
            _ => return Err(ExpiryError::Format),
        };
        let year = if bytes.len() == 5 { 2000 + year } else { year };
        Expiry::new(month as u8, year)
    }

    /// Builds an expiry from its parts.
    pub fn new(month: u8, year: u16) -> Result<Expiry, ExpiryError> {
        if !(1..=12).contains(&month) {
            return Err(ExpiryError::Month);
        }
        if !(2000..=2099).contains(&year) {
            return Err(ExpiryError::Year);
        }
        Ok(Expiry { month, year })
    }

    /// Month, 1–12.
    pub fn month(&self) -> u8 {
        self.month
    }

    /// Four-digit year.
    pub fn year(&self) -> u16 {
        self.year
    }
}

impl fmt::Display for Expiry {
    /// `MM/YY`, the form the API returns.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}/{:02}", self.month, self.year % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!(Expiry::parse("12/29").unwrap().to_string(), "12/29");
        assert_eq!(Expiry::parse("01/2031").unwrap().to_string(), "01/31");
        assert_eq!(Expiry::parse("01/2031").unwrap().year(), 2031);
        assert_eq!(Expiry::parse("13/29").unwrap_err(), ExpiryError::Month);
        assert_eq!(Expiry::parse("00/29").unwrap_err(), ExpiryError::Month);
        assert_eq!(Expiry::parse("12/1999").unwrap_err(), ExpiryError::Year);
        for bad in [
            "", "1/29", "12-29", "12/2", "12/299", "ab/cd", "12/29 ", "１2/29",
        ] {
            assert_eq!(
                Expiry::parse(bad).unwrap_err(),
                ExpiryError::Format,
                "{bad}"
            );
        }
    }
}
