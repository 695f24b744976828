//! The card-number detector: finds PANs and cardvault-shaped tokens in a
//! byte buffer. Pure (no I/O, no allocation per byte), fuzzed, and shared by
//! `cardvault scan` and `cardvault tokenize-file`.
//!
//! A candidate is a run of ASCII digits, or a chain of digit groups joined
//! by single spaces or dashes, standing alone as a word: the byte before
//! and after it is neither a letter, a digit nor `_`, and a `.` followed by
//! a digit does not end it (that is a decimal, so the run is part of a
//! longer number). A plain run counts only when it has 12–19 digits; a
//! longer run is never cut into a PAN. In a chain, groups of 1–6 digits
//! may combine (4-4-4-4, 4-6-5, 4-4-4-2, 4-4-4-4-1, pairs, …); the
//! leftmost longest combination that qualifies wins, so an order number or
//! an expiry next to a grouped PAN does not hide it. A group of 12–19
//! digits in a chain stands on its own.
//!
//! A candidate qualifies as a **PAN** when its leading digits fall in a
//! major brand's IIN range, its length is one that brand issues, and it
//! passes the Luhn check. It qualifies as a **token** when it has the same
//! brand and length but fails the Luhn check and has 16 digits or more —
//! cardvault tokens keep the BIN only from 16 digits, so a shorter token
//! cannot be told from any other number without asking the vault.
//!
//! The digits of a finding never leave this module in a value that could
//! be printed: a [`Finding`] carries the span, brand, BIN (16+ digits only)
//! and last 4; the caller that needs the digits (the token check,
//! `tokenize-file`) reads them from its own buffer with [`digits_of`].

use zeroize::Zeroize;

use crate::domain::pan::kept_prefix_len;
use crate::domain::{Bin, Brand, Last4, MAX_DIGITS, MIN_DIGITS, luhn};

/// What a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A card number: in a brand's range, a length it issues, Luhn-valid.
    Pan,
    /// Shaped like a cardvault token of that card (Luhn-failing, BIN and
    /// last 4 of a real range); only the vault can confirm it.
    Token,
}

impl Kind {
    /// `"pan"` or `"token"`, as in the JSON report.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pan => "pan",
            Kind::Token => "token",
        }
    }
}

/// One card number or token found in a buffer. Holds no more of the
/// digits than masking allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    /// Byte offset of the first digit in the buffer.
    pub start: usize,
    /// Byte offset just past the last digit (separators included).
    pub end: usize,
    /// PAN or token.
    pub kind: Kind,
    /// The brand its leading digits belong to (never `Unknown`).
    pub brand: Brand,
    /// How many digits.
    pub digits: usize,
    /// The first six digits, kept only when at least six stay hidden
    /// (16 digits or more), as the vault's own metadata does.
    pub bin: Option<Bin>,
    /// The last four digits.
    pub last4: Last4,
}

impl Finding {
    /// The masked value: BIN (16+ digits only), stars, last 4 —
    /// `411111******1111`, `***********0005`.
    pub fn masked(&self) -> String {
        let shown = self.bin.map_or(0, |_| 6);
        let mut out = String::with_capacity(self.digits);
        if let Some(bin) = self.bin {
            out.push_str(bin.as_str());
        }
        out.extend(std::iter::repeat_n('*', self.digits - shown - 4));
        out.push_str(self.last4.as_str());
        out
    }
}

/// The lengths each brand issues.
fn length_issued(brand: Brand, len: usize) -> bool {
    match brand {
        Brand::Visa => matches!(len, 13 | 16 | 19),
        Brand::Mastercard => len == 16,
        Brand::Amex => len == 15,
        Brand::Discover | Brand::Jcb | Brand::UnionPay => (16..=19).contains(&len),
        Brand::Diners => (14..=19).contains(&len),
        Brand::Maestro => (12..=19).contains(&len),
        Brand::Mir | Brand::RuPay => (16..=19).contains(&len),
        Brand::Troy => len == 16,
        Brand::Unknown => false,
    }
}

/// Classifies 12–19 ASCII digits.
fn classify(digits: &[u8]) -> Option<(Kind, Brand)> {
    let brand = Brand::detect(digits);
    if !length_issued(brand, digits.len()) {
        return None;
    }
    if luhn::passes(digits) {
        Some((Kind::Pan, brand))
    } else if digits.len() >= 16 {
        Some((Kind::Token, brand))
    } else {
        None
    }
}

const DIGIT: u8 = 1;
const WORD: u8 = 2;

/// Byte classes: digits are also word bytes (`\b` semantics on ASCII).
static CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_digit() {
            table[b] = DIGIT | WORD;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            table[b] = WORD;
        }
        b += 1;
    }
    table
};

fn is_digit(b: u8) -> bool {
    CLASS[usize::from(b)] & DIGIT != 0
}

fn is_word(b: u8) -> bool {
    CLASS[usize::from(b)] & WORD != 0
}

fn is_separator(b: u8) -> bool {
    b == b' ' || b == b'-'
}

/// Position of the next ASCII digit at or after `from`, eight bytes at a
/// time: a byte is a digit when it is above `'/'` and below `':'`.
fn next_digit(buf: &[u8], from: usize) -> Option<usize> {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while i + 8 <= buf.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&buf[i..i + 8]);
        let x = u64::from_le_bytes(word);
        // Per byte, exact for all 256 values: 0x80 set where '0' <= b <= '9'
        // (the has-between trick, restricted to bytes below 0x80).
        let low7 = x & !HIGH;
        let above_slash = low7.wrapping_add(LOW * (127 - 0x2F)) & HIGH;
        let below_colon = (LOW * (127 + 0x3A)).wrapping_sub(low7) & HIGH;
        let hits = above_slash & below_colon & !x & HIGH;
        if hits != 0 {
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    (i..buf.len()).find(|&j| is_digit(buf[j]))
}

/// A `.` followed by a digit continues a number (a decimal).
fn decimal_at(buf: &[u8], dot: usize) -> bool {
    buf.get(dot) == Some(&b'.') && buf.get(dot + 1).is_some_and(|&b| is_digit(b))
}

/// Longest chain of groups judged at once; a longer one (a line of
/// space-separated numbers, or a hostile wall of them) is judged in
/// windows this size, so the work per byte stays bounded.
const MAX_CHAIN: usize = 64;

/// Shortest and longest group that may combine with others in a chain:
/// any grouping by single spaces or dashes (4-4-4-2 Diners, 4-4-4-4-1
/// UnionPay, pairs) combines; a group of 7 or more digits stands alone.
const GROUP_MIN: usize = 1;
const GROUP_MAX: usize = 6;

/// Calls `each` for every PAN and token in `buf`, in order. The buffer's
/// ends count as word boundaries.
pub fn find(buf: &[u8], each: impl FnMut(Finding)) {
    find_from(buf, 0, each);
}

/// [`find`] from offset `from`: the bytes before it are context only (the
/// tail of the previous chunk), read to judge the first candidate's left
/// boundary. Offsets in findings are relative to `buf`.
pub fn find_from(buf: &[u8], from: usize, mut each: impl FnMut(Finding)) {
    let mut groups: [(usize, usize); MAX_CHAIN] = [(0, 0); MAX_CHAIN];
    let mut i = from;
    while let Some(start) = next_digit(buf, i) {
        // The chain: digit groups joined by one separator each.
        let mut count = 0;
        let mut at = start;
        loop {
            let run_end = buf[at..]
                .iter()
                .position(|&b| !is_digit(b))
                .map_or(buf.len(), |p| at + p);
            groups[count] = (at, run_end);
            count += 1;
            at = run_end;
            if count < MAX_CHAIN
                && at + 1 < buf.len()
                && is_separator(buf[at])
                && is_digit(buf[at + 1])
            {
                at += 1;
            } else {
                break;
            }
        }
        i = at;
        // A chain after `+` is an international phone number, never a
        // card (cards are not written with a sign).
        let left_ok = start == 0
            || !(is_word(buf[start - 1])
                || buf[start - 1] == b'+'
                || (start >= 2 && buf[start - 1] == b'.' && is_digit(buf[start - 2])));
        let right_ok = at == buf.len() || !(is_word(buf[at]) || decimal_at(buf, at));
        if !left_ok || !right_ok {
            // Glued to a word or a longer number (an IBAN, a UUID, a
            // decimal): nothing in it is a card.
            continue;
        }
        judge_chain(buf, &groups[..count], &mut each);
    }
}

/// Finds the cards in one chain that stands alone as a word.
fn judge_chain(buf: &[u8], groups: &[(usize, usize)], each: &mut impl FnMut(Finding)) {
    let len = |g: &(usize, usize)| g.1 - g.0;
    if groups.len() == 1 {
        report(buf, groups, true, each);
        return;
    }
    let mut a = 0;
    while a < groups.len() {
        let ga = len(&groups[a]);
        if !(GROUP_MIN..=GROUP_MAX).contains(&ga) {
            // A long group stands on its own; a short one breaks the chain.
            if (MIN_DIGITS..=MAX_DIGITS).contains(&ga) {
                report(buf, &groups[a..=a], true, each);
            }
            a += 1;
            continue;
        }
        // The leftmost longest run of combinable groups from `a` that is a card.
        let mut end = a;
        let mut total = 0;
        while end < groups.len()
            && (GROUP_MIN..=GROUP_MAX).contains(&len(&groups[end]))
            && total + len(&groups[end]) <= MAX_DIGITS
        {
            total += len(&groups[end]);
            end += 1;
        }
        let whole_run_end = {
            let mut e = a;
            while e < groups.len() && (GROUP_MIN..=GROUP_MAX).contains(&len(&groups[e])) {
                e += 1;
            }
            e
        };
        let mut matched = None;
        for b in (a + 2..=end).rev() {
            let digits: usize = groups[a..b].iter().map(len).sum();
            if digits < MIN_DIGITS {
                break;
            }
            // A token must be the whole run: random-looking numbers inside a
            // longer chain are far likelier than a token glued to others.
            let tokens_allowed = a == 0 || !combinable(&groups[a - 1]);
            let tokens_allowed = tokens_allowed && b == whole_run_end;
            if report(buf, &groups[a..b], tokens_allowed, each) {
                matched = Some(b);
                break;
            }
        }
        a = matched.unwrap_or(a + 1);
    }
}

fn combinable(g: &(usize, usize)) -> bool {
    (GROUP_MIN..=GROUP_MAX).contains(&(g.1 - g.0))
}

/// Classifies the digits of `groups` and reports them; true if reported.
fn report(
    buf: &[u8],
    groups: &[(usize, usize)],
    tokens_allowed: bool,
    each: &mut impl FnMut(Finding),
) -> bool {
    let mut digits = [0u8; MAX_DIGITS];
    let mut n = 0;
    for &(s, e) in groups {
        if n + (e - s) > MAX_DIGITS {
            digits.zeroize();
            return false;
        }
        digits[n..n + (e - s)].copy_from_slice(&buf[s..e]);
        n += e - s;
    }
    let found = (n >= MIN_DIGITS)
        .then(|| classify(&digits[..n]))
        .flatten()
        .filter(|(kind, _)| *kind == Kind::Pan || tokens_allowed)
        .and_then(|(kind, brand)| {
            Some(Finding {
                start: groups.first()?.0,
                end: groups.last()?.1,
                kind,
                brand,
                digits: n,
                bin: (kept_prefix_len(n) == 6)
                    .then(|| Bin::from_digits(&digits[..6]))
                    .flatten(),
                last4: Last4::from_digits(&digits[n - 4..n])?,
            })
        });
    digits.zeroize();
    match found {
        Some(finding) => {
            each(finding);
            true
        }
        None => false,
    }
}

/// The digits of a finding's span in `buf` (separators dropped), in a
/// buffer wiped on drop. For the callers that must send them on: the
/// token check and `tokenize-file`.
pub fn digits_of(buf: &[u8], finding: &Finding) -> zeroize::Zeroizing<Vec<u8>> {
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(MAX_DIGITS));
    out.extend(
        buf[finding.start..finding.end]
            .iter()
            .copied()
            .filter(u8::is_ascii_digit),
    );
    out
}

/// Where a buffer with no line end may be cut so that no candidate spans
/// the cut: just after the last byte that is neither a digit, a separator
/// nor a `.`. The caller keeps that byte as context for the next chunk
/// ([`find_from`]). The whole buffer if there is no such byte.
pub fn safe_cut(buf: &[u8]) -> usize {
    buf.iter()
        .rposition(|&b| !is_digit(b) && !is_separator(b) && b != b'.')
        .map_or(buf.len(), |p| p + 1)
}

/// Every finding in `buf`, for tests.
#[cfg(test)]
pub fn find_all(buf: &[u8]) -> Vec<Finding> {
    let mut out = Vec::new();
    find(buf, |f| out.push(f));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Kind, String)> {
        find_all(text.as_bytes())
            .into_iter()
            .map(|f| (f.kind, text[f.start..f.end].to_owned()))
            .collect()
    }

    fn pans(text: &str) -> Vec<String> {
        kinds(text)
            .into_iter()
            .filter(|(k, _)| *k == Kind::Pan)
            .map(|(_, s)| s)
            .collect()
    }

    #[test]
    fn next_digit_agrees_with_a_plain_search_for_every_byte() {
        for b in 0..=255u8 {
            for pos in 0..12 {
                let mut buf = vec![b'x'; 12];
                buf[pos] = b;
                let want = buf.iter().position(|c| c.is_ascii_digit());
                assert_eq!(next_digit(&buf, 0), want, "byte {b} at {pos}");
            }
        }
    }

    #[test]
    fn every_shared_test_card_is_found_plain_and_grouped() {
        for (pan, grouped) in [
            ("4111111111111111", "4111 1111 1111 1111"),
            ("4222222222222", "4222-2222-22222"),
            ("4000000000000000006", "4000 0000 0000 0000 006"),
            ("5555555555554444", "5555-5555-5555-4444"),
            ("2223000048400011", "2223 0000 4840 0011"),
            ("378282246310005", "3782 822463 10005"),
            ("6011000990139424", "6011 0009 9013 9424"),
            ("30569309025904", "3056 930902 5904"),
            ("3566002020360505", "3566 0020 2036 0505"),
            ("6212345678901000002", "6212 3456 7890 1000 002"),
            ("500000000009", "5000 0000 0009"),
        ] {
            assert_eq!(pans(&format!("card: {pan}.")), vec![pan], "{pan}");
            assert_eq!(pans(&format!("\"{grouped}\",")), vec![grouped], "{grouped}");
        }
    }

    /// Issue 36: Maestro's whole 50 and 56–69 range (6304, 19 digits),
    /// Diners in 4-4-4-2, UnionPay in 4-4-4-4-1, Mir, RuPay and Troy.
    #[test]
    fn every_range_and_unusual_grouping_is_found() {
        let luhn = |body: &str| {
            (b'0'..=b'9')
                .map(|d| format!("{body}{}", char::from(d)))
                .find(|s| luhn::passes(s.as_bytes()))
                .unwrap_or_default()
        };
        for (prefix, len, brand) in [
            ("6304", 19, Brand::Maestro),
            ("6304", 16, Brand::Maestro),
            ("69", 12, Brand::Maestro),
            ("2200", 16, Brand::Mir),
            ("2204", 19, Brand::Mir),
            ("508", 16, Brand::RuPay),
            ("82", 16, Brand::RuPay),
            ("9792", 16, Brand::Troy),
            ("36", 14, Brand::Diners),
            ("62", 17, Brand::UnionPay),
        ] {
            let pan = luhn(&format!("{prefix}{}", "3".repeat(len - 1 - prefix.len())));
            let f = find_all(pan.as_bytes());
            assert_eq!(f.len(), 1, "{pan}");
            assert_eq!(f[0].brand, brand, "{pan}");
            for size in [1, 2, 3, 4, 5] {
                let grouped: Vec<String> = pan
                    .as_bytes()
                    .chunks(size)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect();
                for sep in [" ", "-"] {
                    let text = format!("card {}.", grouped.join(sep));
                    assert_eq!(pans(&text).len(), 1, "{text}");
                }
            }
        }
        assert_eq!(pans("card 3056 9309 0259 04 ok"), vec!["3056 9309 0259 04"]);
    }

    #[test]
    fn neighbours_do_not_hide_a_grouped_card() {
        assert_eq!(
            pans("qty 1234 4111 1111 1111 1111 exp 12/27"),
            vec!["4111 1111 1111 1111"]
        );
        assert_eq!(
            pans("4111 1111 1111 1111 5555 5555 5555 4444"),
            vec!["4111 1111 1111 1111", "5555 5555 5555 4444"]
        );
        assert_eq!(pans("4111111111111111 1234"), vec!["4111111111111111"]);
    }

    #[test]
    fn decoys_are_not_cards() {
        for decoy in [
            "ts=1733140800000 id=1733140800123456",
            "luhn-valid but no brand: 1234567812345670 9999999999999995",
            "inside longer numbers: 994111111111111111199 41111111111111110",
            "decimal 0.4111111111111111 and 4111111111111111.5",
            "glued: ID4111111111111111 4111111111111111x",
            "phone +1 555-123-4567, +44 20 7946 0958, +63 917 123 4567, +82 10-1234-5678",
            "uuid 123e4567-e89b-12d3-a456-411111111111",
            "iban DE89 3704 0044 0532 0130 00 GB29NWBK60161331926819",
            "date 2024-12-02 10:15:30.123456",
        ] {
            assert_eq!(kinds(decoy), vec![], "{decoy}");
        }
    }

    #[test]
    fn tokens_are_told_apart_from_pans() {
        let found = kinds("pan=4111111111111111 token=4111119270641111");
        assert_eq!(
            found,
            vec![
                (Kind::Pan, "4111111111111111".to_owned()),
                (Kind::Token, "4111119270641111".to_owned())
            ]
        );
        // Shorter than 16 digits: a token keeps no BIN, so it is not claimed.
        assert_eq!(kinds("378282246310006"), vec![]);
    }

    #[test]
    fn findings_mask_like_the_vault() {
        let f = find_all(b"4111111111111111")[0];
        assert_eq!(f.masked(), "411111******1111");
        assert_eq!(f.bin.map(|b| b.to_string()).as_deref(), Some("411111"));
        let f = find_all(b"378282246310005")[0];
        assert_eq!(f.masked(), "***********0005");
        assert_eq!(f.bin, None);
        assert_eq!(f.brand, Brand::Amex);
    }

    #[test]
    fn hostile_walls_of_groups_end_quickly_and_find_nothing_wrong() {
        let wall = "123 ".repeat(100_000);
        assert_eq!(find_all(wall.as_bytes()), vec![]);
        let digits = "4".repeat(1_000_000);
        assert_eq!(find_all(digits.as_bytes()), vec![]);
    }
}
