//! Text made safe for a log line or an audit detail, whatever its source:
//! control and invisible formatting characters are escaped (`\u{1b}`), so
//! no text can end a line, forge the next one or move the cursor; and any
//! chain of 12 or more digits — single spaces or dashes between groups
//! allowed — is masked but for its last four (`************1111`), so no
//! card number survives, not even one a caller typed into a field that was
//! never meant for one. Digests are the one exception: a standalone hex
//! word of 32, 40, 64 or 128 characters holding a letter (a SHA-256, a
//! commit id) keeps its digits, or the evidence it is would be corrupted. Tokens in free text are masked too; the audit
//! trail keeps them in their own fields. Pure, no allocation when there is
//! nothing to change. The log writer (`cli`) and the audit trail
//! ([`crate::audit`]) run every line and detail through it.

use std::borrow::Cow;

/// Fewest digits a masked chain holds (the shortest PAN).
const MIN_MASKED_DIGITS: usize = 12;

/// Whether `c` must be escaped: C0 and C1 controls (tab included), DEL,
/// and the characters that move or hide text (line and paragraph
/// separators, bidirectional controls, zero-width marks, the BOM).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// Where the digests are: standalone hex words of a digest's length (32,
/// 40, 64 or 128 characters) with at least one letter — the hashes and
/// commit ids the vault writes itself. Their digits are not card numbers:
/// masking them would corrupt the evidence they are.
fn digests(text: &[u8]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if !text[i].is_ascii_hexdigit() || (i > 0 && text[i - 1].is_ascii_alphanumeric()) {
            i += 1;
            continue;
        }
        let start = i;
        while i < text.len() && text[i].is_ascii_hexdigit() {
            i += 1;
        }
        let standalone = i == text.len() || !text[i].is_ascii_alphanumeric();
        if standalone
            && matches!(i - start, 32 | 40 | 64 | 128)
            && text[start..i].iter().any(u8::is_ascii_alphabetic)
        {
            found.push((start, i));
        }
    }
    found
}

/// Where the digit chains of at least [`MIN_MASKED_DIGITS`] digits are:
/// byte ranges covering first to last digit, digests left out.
fn long_chains(text: &[u8]) -> Vec<(usize, usize)> {
    let digests = digests(text);
    let digest_at = |k: usize| digests.iter().find(|&&(s, e)| s <= k && k < e);
    let mut chains = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if !text[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        if let Some(&(_, end)) = digest_at(i) {
            i = end;
            continue;
        }
        let start = i;
        let mut end = i;
        let mut digits = 0;
        let mut j = i;
        loop {
            while j < text.len() && text[j].is_ascii_digit() {
                digits += 1;
                j += 1;
            }
            end = j.max(end);
            // One space or dash followed by a digit continues the chain.
            if j + 1 < text.len()
                && matches!(text[j], b' ' | b'-')
                && text[j + 1].is_ascii_digit()
                && digest_at(j + 1).is_none()
            {
                j += 1;
                continue;
            }
            break;
        }
        if digits >= MIN_MASKED_DIGITS {
            chains.push((start, end));
        }
        i = end.max(start + 1);
    }
    chains
}

/// `text` with unsafe characters escaped and long digit chains masked.
pub fn text(text: &str) -> Cow<'_, str> {
    let chains = long_chains(text.as_bytes());
    if chains.is_empty() && !text.chars().any(is_unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut chain = chains.iter().peekable();
    // Digits of the current chain still to mask (all but its last four).
    let mut to_mask = 0usize;
    let mut chain_end = 0usize;
    for (at, c) in text.char_indices() {
        if let Some(&&(start, end)) = chain.peek()
            && at == start
        {
            let digits = text.as_bytes()[start..end]
                .iter()
                .filter(|b| b.is_ascii_digit())
                .count();
            to_mask = digits - 4;
            chain_end = end;
            chain.next();
        }
        if at < chain_end && c.is_ascii_digit() && to_mask > 0 {
            out.push('*');
            to_mask -= 1;
        } else if is_unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`text`] for a JSON line (a log line in the JSON format): digits are
/// masked inside string values only, so numbers stay numbers and the line
/// stays valid JSON; unsafe characters inside strings become `\uXXXX`
/// escapes (the JSON encoder already escaped C0 controls).
pub fn json_line(line: &str) -> Cow<'_, str> {
    let bytes = line.as_bytes();
    let chains = long_chains(bytes);
    let unsafe_chars = line
        .chars()
        .any(|c| is_unsafe_char(c) && c != '\n' && c != '\r');
    if chains.is_empty() && !unsafe_chars {
        return Cow::Borrowed(line);
    }
    // Which bytes sit inside a JSON string.
    let mut inside = vec![false; bytes.len()];
    let (mut in_string, mut escaped) = (false, false);
    for (i, b) in bytes.iter().enumerate() {
        inside[i] = in_string;
        if in_string {
            if escaped {
                escaped = false;
            } else if *b == b'\\' {
                escaped = true;
            } else if *b == b'"' {
                in_string = false;
                inside[i] = false;
            }
        } else if *b == b'"' {
            in_string = true;
        }
    }
    let mut out = String::with_capacity(line.len() + 8);
    let mut masked = vec![false; bytes.len()];
    for (start, end) in chains {
        if !inside[start] {
            continue;
        }
        let digits: Vec<usize> = (start..end)
            .filter(|&i| bytes[i].is_ascii_digit())
            .collect();
        for &i in &digits[..digits.len() - 4] {
            masked[i] = true;
        }
    }
    for (at, c) in line.char_indices() {
        if masked[at] {
            out.push('*');
        } else if is_unsafe_char(c) && c != '\n' && c != '\r' {
            if inside[at] {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            } else {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_numbers_are_masked_in_any_grouping() {
        assert_eq!(text("key 4111111111111111 x"), "key ************1111 x");
        assert_eq!(text("4111 1111 1111 1111"), "**** **** **** 1111");
        assert_eq!(text("4111-1111-1111-1111."), "****-****-****-1111.");
        assert_eq!(text("x4111111111111111y"), "x************1111y");
        assert_eq!(text("3056-9309-0259-04"), "****-****-**59-04");
        // Eleven digits, dates and times are left alone…
        assert_eq!(
            text("12345678901 at 2026-12-06T20:30"),
            "12345678901 at 2026-12-06T20:30"
        );
        // …but twelve digits in one chain are masked, whatever they are.
        assert_eq!(text("1234567890 2026"), "********** 2026");
        // Two spaces end a chain.
        assert_eq!(text("123456  789012"), "123456  789012");
    }

    #[test]
    fn digests_keep_their_digits() {
        let digest = "1234567890123456789012345678901234567890123456789012345678abcdef";
        let detail = format!("age ciphertext sha256 {digest}");
        assert_eq!(text(&detail), detail);
        let commit = "0123456789012345678901234567890123456a7e";
        assert_eq!(
            text(&format!("commit {commit}")),
            format!("commit {commit}")
        );
        // Not a digest: the wrong length, no letter, or glued to a word.
        assert_eq!(text("4111111111111111abcdef"), "************1111abcdef");
        assert!(text(&format!("x{digest}")).contains('*'));
        assert!(text(&"4".repeat(64)).contains('*'));
        let json = format!(r#"{{"detail":"sha256 {digest}"}}"#);
        assert_eq!(json_line(&json), json);
    }

    #[test]
    fn control_characters_cannot_forge_a_line() {
        let forged = "x\n2026-12-06T20:30:00Z  INFO forged\u{1b}[31m\u{2028}";
        let clean = text(forged);
        assert!(!clean.contains('\n') && !clean.contains('\u{1b}') && !clean.contains('\u{2028}'));
        assert!(clean.contains("\\u{a}") && clean.contains("\\u{1b}"));
    }

    #[test]
    fn nothing_to_change_borrows() {
        assert!(matches!(text("tokenize ok 200"), Cow::Borrowed(_)));
        assert!(matches!(json_line("{\"a\":1}\n"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_lines_stay_json() {
        let line = "{\"ms\":1733520000000123,\"error\":\"file 4111111111111111 \u{85}\"}\n";
        let clean = json_line(line);
        let value: serde_json::Value = serde_json::from_str(clean.trim_end()).unwrap_or_default();
        assert_eq!(value["ms"], 1733520000000123u64);
        assert_eq!(value["error"], "file ************1111 \u{85}");
        assert!(!clean.contains('\u{85}'));
    }
}
