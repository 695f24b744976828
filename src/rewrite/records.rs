//! Finding the card numbers to replace in one record of a file, for
//! `cardvault tokenize-file`: a CSV column (by header name), a JSON Lines
//! field (dotted path or JSON Pointer), or every PAN the scan detector
//! finds in a line of text. Each is a [`Slot`]: the bytes to replace and
//! the value they hold. [`replacement`] writes a token there so that the
//! rest of the record stays byte for byte what it was — grouping spaces and
//! dashes, CSV quotes and JSON string quotes included.
//!
//! Records are lines; a CSV record continues over line ends while a quoted
//! field is open (quote parity, which RFC 4180 escaping keeps). CSV fields
//! are split by `csv-core`, which reports how many input bytes each field
//! took, so spans are exact without re-serializing the record.

use std::collections::BTreeMap;
use std::ops::Range;

use serde_json::value::RawValue;
use zeroize::Zeroizing;

use crate::scan::{Kind, detect};

/// Which values of a file are card numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// CSV with a header line; the column of this name.
    Csv {
        /// Header name of the column.
        column: String,
    },
    /// One JSON object per line; the field at this path.
    Jsonl {
        /// Object keys from the top.
        path: Vec<String>,
    },
    /// Any text: every PAN the detector finds.
    Text,
}

/// Why a format was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    /// `--field` is empty or malformed.
    #[error("--field must be a dotted path (card.pan) or a JSON Pointer (/card/pan)")]
    BadPath,
    /// The CSV header has no such column.
    #[error("the CSV header has no column {0:?}")]
    NoColumn(String),
    /// The CSV file has no header line.
    #[error("the CSV file has no header line")]
    NoHeader,
}

impl Format {
    /// `--format jsonl --field PATH`: `card.pan` or `/card/pan`.
    pub fn jsonl(field: &str) -> Result<Format, FormatError> {
        let path: Vec<String> = if let Some(pointer) = field.strip_prefix('/') {
            pointer
                .split('/')
                .map(|s| s.replace("~1", "/").replace("~0", "~"))
                .collect()
        } else {
            field.split('.').map(str::to_owned).collect()
        };
        if path.is_empty() || path.iter().any(String::is_empty) {
            return Err(FormatError::BadPath);
        }
        Ok(Format::Jsonl { path })
    }
}

/// A value to replace in a record.
pub struct Slot {
    /// The bytes of the record that hold it (inside any quotes).
    pub span: Range<usize>,
    /// The value as text (unescaped): a PAN, a token, or neither.
    pub value: Zeroizing<String>,
    /// Found by the detector as a token (text format), so not to be sent.
    pub known_token: bool,
}

/// Where the next record ends in `buf` (just past its line end), or
/// `None` if `buf` holds no complete record yet. A CSV record runs on
/// while a quoted field is open.
pub fn record_end(buf: &[u8], csv: bool) -> Option<usize> {
    if !csv {
        return memchr::memchr(b'\n', buf).map(|p| p + 1);
    }
    let mut quoted = false;
    for (i, &b) in buf.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// The CSV fields of one record: each field's raw span (inside quotes if
/// quoted) and its unescaped value.
pub fn csv_fields(record: &[u8]) -> Vec<(Range<usize>, Zeroizing<Vec<u8>>)> {
    let mut reader = csv_core::Reader::new();
    let mut fields = Vec::new();
    let mut at = 0;
    let mut out = Zeroizing::new(vec![0u8; record.len() + 1]);
    loop {
        let (result, nin, nout) = reader.read_field(&record[at..], &mut out[..]);
        let raw = at..at + nin;
        at += nin;
        match result {
            csv_core::ReadFieldResult::Field { record_end } => {
                fields.push((
                    trim_field(record, raw),
                    Zeroizing::new(out[..nout].to_vec()),
                ));
                if record_end {
                    break;
                }
            }
            csv_core::ReadFieldResult::InputEmpty => {
                if at >= record.len() {
                    // The last field of a record without a line end: one
                    // more call with no input ends it.
                    let (result, _, nout2) = reader.read_field(&[], &mut out[nout..]);
                    if let csv_core::ReadFieldResult::Field { .. } = result {
                        fields.push((
                            trim_field(record, raw),
                            Zeroizing::new(out[..nout + nout2].to_vec()),
                        ));
                    }
                    break;
                }
            }
            csv_core::ReadFieldResult::OutputFull | csv_core::ReadFieldResult::End => break,
        }
    }
    fields
}

/// A field's raw bytes without its delimiter or line end, and inside its
/// quotes when it is quoted.
fn trim_field(record: &[u8], raw: Range<usize>) -> Range<usize> {
    let mut r = raw;
    while r.end > r.start && matches!(record[r.end - 1], b',' | b'\n' | b'\r') {
        r.end -= 1;
    }
    if r.end - r.start >= 2 && record[r.start] == b'"' && record[r.end - 1] == b'"' {
        r.start += 1;
        r.end -= 1;
    }
    r
}

/// The index of `column` in a CSV header record.
pub fn csv_column(header: &[u8], column: &str) -> Result<usize, FormatError> {
    let fields = csv_fields(header);
    if fields.is_empty() {
        return Err(FormatError::NoHeader);
    }
    fields
        .iter()
        .position(|(_, value)| {
            let name = String::from_utf8_lossy(value);
            name.trim_start_matches('\u{feff}').trim() == column
        })
        .ok_or_else(|| FormatError::NoColumn(column.to_owned()))
}

/// What a JSON Lines record holds at `path`.
pub enum JsonValue {
    /// A string or number to judge.
    Found(Slot),
    /// The field is absent or null: nothing to do.
    Absent,
    /// The line is not a JSON object, or the field is neither a string,
    /// a number nor null.
    Invalid,
}

/// The value at `path` in one JSON Lines record.
pub fn json_value(line: &[u8], path: &[String]) -> JsonValue {
    let Ok(text) = std::str::from_utf8(line) else {
        return JsonValue::Invalid;
    };
    let base = text.as_ptr() as usize;
    let mut current: &str = text.trim_end_matches(['\n', '\r']);
    for key in path {
        let Ok(map) = serde_json::from_str::<BTreeMap<String, &RawValue>>(current) else {
            return JsonValue::Invalid;
        };
        match map.get(key) {
            Some(raw) => current = raw.get(),
            None => return JsonValue::Absent,
        }
    }
    let start = current.as_ptr() as usize - base;
    let span = start..start + current.len();
    match current.as_bytes().first() {
        Some(b'"') => match serde_json::from_str::<String>(current) {
            Ok(value) => JsonValue::Found(Slot {
                span: span.start + 1..span.end - 1,
                value: Zeroizing::new(value),
                known_token: false,
            }),
            Err(_) => JsonValue::Invalid,
        },
        Some(b'0'..=b'9') => JsonValue::Found(Slot {
            span,
            value: Zeroizing::new(current.to_owned()),
            known_token: false,
        }),
        Some(b'n') if current == "null" => JsonValue::Absent,
        _ => JsonValue::Invalid,
    }
}

/// Every PAN and token the detector finds in a line of text.
pub fn text_slots(line: &[u8]) -> Vec<Slot> {
    let mut slots = Vec::new();
    detect::find(line, |f| {
        let digits = detect::digits_of(line, &f);
        slots.push(Slot {
            span: f.start..f.end,
            value: Zeroizing::new(String::from_utf8_lossy(&digits).into_owned()),
            known_token: f.kind == Kind::Token,
        });
    });
    slots
}

/// What to write over `raw` (the original bytes of a slot) for `token`:
/// the original with its digits replaced one for one when it has as many
/// digits as the token and nothing but digits, spaces and dashes (so
/// grouping survives), else the token's digits.
pub fn replacement(raw: &[u8], token: &str) -> Vec<u8> {
    let digits = raw.iter().filter(|b| b.is_ascii_digit()).count();
    let plain = raw
        .iter()
        .all(|b| b.is_ascii_digit() || *b == b' ' || *b == b'-');
    if !plain || digits != token.len() {
        return token.as_bytes().to_vec();
    }
    let mut next = token.bytes();
    raw.iter()
        .map(|&b| {
            if b.is_ascii_digit() {
                next.next().unwrap_or(b'0')
            } else {
                b
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_records_run_over_quoted_line_ends() {
        let buf = b"a,\"x\ny\",1\nb,c,2\n";
        assert_eq!(record_end(buf, true), Some(10));
        assert_eq!(record_end(&buf[10..], true), Some(6));
        assert_eq!(record_end(b"a,\"open\n", true), None);
        assert_eq!(record_end(b"a,\"open\n", false), Some(8));
    }

    #[test]
    fn csv_spans_are_exact_and_quotes_stay() {
        let record = b"1,\"4111 1111 1111 1111\",\"a \"\"b\"\"\",last\r\n";
        let fields = csv_fields(record);
        let spans: Vec<&[u8]> = fields.iter().map(|(r, _)| &record[r.clone()]).collect();
        assert_eq!(
            spans,
            vec![&b"1"[..], b"4111 1111 1111 1111", b"a \"\"b\"\"", b"last"]
        );
        assert_eq!(&fields[2].1[..], b"a \"b\"");
        let last = csv_fields(b"x,4111111111111111");
        assert_eq!(&last[1].1[..], b"4111111111111111");
        assert_eq!(last[1].0, 2..18);
        assert_eq!(csv_column(b"\xEF\xBB\xBFid, card ,x\n", "card"), Ok(1));
        assert_eq!(
            csv_column(b"id,x\n", "card"),
            Err(FormatError::NoColumn("card".into()))
        );
    }

    #[test]
    fn json_values_are_found_by_path() {
        let line =
            br#"{"id":1,"card":{"pan":"4111111111111111","exp":"12/27"},"n":4111111111111111}"#;
        let path = |p: &str| match Format::jsonl(p).unwrap() {
            Format::Jsonl { path } => path,
            _ => unreachable!(),
        };
        let JsonValue::Found(slot) = json_value(line, &path("card.pan")) else {
            panic!("not found")
        };
        assert_eq!(&line[slot.span.clone()], b"4111111111111111");
        let JsonValue::Found(slot) = json_value(line, &path("/n")) else {
            panic!("not found")
        };
        assert_eq!(&line[slot.span], b"4111111111111111");
        assert!(matches!(
            json_value(line, &path("card.cvv")),
            JsonValue::Absent
        ));
        assert!(matches!(
            json_value(b"not json", &path("a")),
            JsonValue::Invalid
        ));
        assert!(matches!(
            json_value(line, &path("card")),
            JsonValue::Invalid
        ));
        assert!(Format::jsonl("a..b").is_err());
    }

    #[test]
    fn replacements_keep_the_grouping() {
        assert_eq!(
            replacement(b"4111 1111 1111 1111", "4111119270641111"),
            b"4111 1192 7064 1111"
        );
        assert_eq!(
            replacement(b"4111111111111111", "4111119270641111"),
            b"4111119270641111"
        );
        assert_eq!(
            replacement(b"\\u00341111", "4111119270641111"),
            b"4111119270641111"
        );
    }

    #[test]
    fn text_slots_are_the_detector_findings() {
        let slots = text_slots(b"card 4111 1111 1111 1111 token 4111119270641111\n");
        assert_eq!(slots.len(), 2);
        assert!(!slots[0].known_token && slots[1].known_token);
        assert_eq!(slots[0].value.as_str(), "4111111111111111");
    }
}
