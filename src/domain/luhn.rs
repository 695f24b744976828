//! The Luhn (mod 10) check used by every card number: PANs must pass it and
//! tokens must fail it, so a token can never be mistaken for a card number.

/// Returns true when `digits` (ASCII `0`–`9`) pass the Luhn check.
///
/// The caller guarantees that every byte is an ASCII digit; other bytes give
/// a meaningless (but never panicking) answer.
pub fn passes(digits: &[u8]) -> bool {
    let mut sum: u32 = 0;
    for (i, &byte) in digits.iter().rev().enumerate() {
        let mut d = u32::from(byte.wrapping_sub(b'0') % 10);
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_numbers() {
        assert!(passes(b"4111111111111111"));
        assert!(passes(b"378282246310005"));
        assert!(passes(b"79927398713"));
        assert!(!passes(b"4111111111111112"));
        assert!(!passes(b"79927398710"));
        assert!(passes(b"0"));
        assert!(!passes(b"1"));
    }

    #[test]
    fn every_check_digit_but_one_fails() {
        let body = b"411111111111111";
        let passing: Vec<u8> = (b'0'..=b'9')
            .filter(|&d| {
                let mut n = body.to_vec();
                n.push(d);
                passes(&n)
            })
            .collect();
        assert_eq!(passing, vec![b'1']);
    }
}
