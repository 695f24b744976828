//! Synthetic card numbers for load tests: Luhn-valid, spread over brands and
//! lengths 12–19, from a seeded fast PRNG (this is test data, not secrets).

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::domain::luhn;

/// (prefix, length) pairs covering every brand the vault detects.
const SHAPES: [(&str, usize); 14] = [
    ("4", 16),
    ("4", 13),
    ("4", 19),
    ("51", 16),
    ("2221", 16),
    ("34", 15),
    ("37", 15),
    ("6011", 16),
    ("3528", 16),
    ("36", 14),
    ("62", 16),
    ("62", 19),
    ("50", 12),
    ("6759", 16),
];

/// Generates synthetic PANs.
pub struct PanGenerator {
    rng: SmallRng,
}

impl PanGenerator {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> PanGenerator {
        PanGenerator {
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// A fresh Luhn-valid PAN.
    pub fn next_pan(&mut self) -> String {
        let (prefix, len) = SHAPES[self.rng.random_range(0..SHAPES.len())];
        let mut digits: Vec<u8> = prefix.bytes().collect();
        while digits.len() < len - 1 {
            digits.push(b'0' + self.rng.random_range(0..10u8));
        }
        digits.push(b'0');
        for check in b'0'..=b'9' {
            digits[len - 1] = check;
            if luhn::passes(&digits) {
                break;
            }
        }
        String::from_utf8(digits).unwrap_or_default()
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n.max(1))
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.random::<f64>() < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Pan;

    #[test]
    fn every_generated_pan_parses() {
        let mut generator = PanGenerator::new(7);
        let mut lengths = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let pan = Pan::parse(&generator.next_pan()).unwrap();
            lengths.insert(pan.len());
        }
        assert_eq!(
            lengths.into_iter().collect::<Vec<_>>(),
            vec![12, 13, 14, 15, 16, 19]
        );
    }
}
