//! Reading one file for the detector: tells text from binary, opens `.gz`
//! streams and UTF-16 text, and feeds the content through in bounded
//! chunks cut at line ends, so memory stays flat on a file of any size and
//! every finding gets its line and byte offset. Buffers that held file
//! content are wiped when dropped.

use std::io::Read;

use zeroize::Zeroizing;

use super::detect::{self, Finding};

/// Bytes read per chunk.
const CHUNK: usize = 1 << 20;
/// Bytes looked at to tell text from binary.
const SNIFF: usize = 8 << 10;

/// How a file's bytes are text, as far as the first 8 KiB tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// ASCII, UTF-8 or another ASCII-compatible text.
    Text,
    /// UTF-16, little-endian (BOM `FF FE`, or NULs in every odd byte).
    Utf16Le,
    /// UTF-16, big-endian (BOM `FE FF`, or NULs in every even byte).
    Utf16Be,
    /// NUL bytes that are not UTF-16: not scanned by default.
    Binary,
}

/// Guesses the encoding from a file's first bytes.
pub fn sniff(head: &[u8]) -> Encoding {
    match head {
        [0xFF, 0xFE, ..] => return Encoding::Utf16Le,
        [0xFE, 0xFF, ..] => return Encoding::Utf16Be,
        _ => {}
    }
    if !head.contains(&0) {
        return Encoding::Text;
    }
    let pairs = head.len() / 2;
    let zero_at = |parity: usize| (0..pairs).filter(|i| head[2 * i + parity] == 0).count();
    let (even, odd) = (zero_at(0), zero_at(1));
    if pairs >= 2 && odd * 10 >= pairs * 9 && even * 10 < pairs {
        Encoding::Utf16Le
    } else if pairs >= 2 && even * 10 >= pairs * 9 && odd * 10 < pairs {
        Encoding::Utf16Be
    } else {
        Encoding::Binary
    }
}

/// A finding with where it is in the file.
#[derive(Debug, Clone, Copy)]
pub struct Located {
    /// What was found.
    pub finding: Finding,
    /// 1-based line.
    pub line: u64,
    /// Byte offset in the file (in the decompressed stream for `.gz`).
    pub offset: u64,
    /// Bytes the value spans in the file (separators included).
    pub length: u64,
    /// For a token finding, the token itself (tokens are not secret; a
    /// PAN's digits are never copied out).
    pub token: Option<crate::domain::Token>,
}

/// What scanning one stream gave.
#[derive(Debug, Default, Clone, Copy)]
pub struct Scanned {
    /// Content bytes read (decompressed for `.gz`).
    pub bytes: u64,
    /// True when the content went past the size limit and the rest was
    /// not read.
    pub truncated: bool,
}

/// Scans `input` as `encoding`, reading at most `limit` bytes, and calls
/// `each` for every finding in order. `Binary` content is scanned as text
/// (the caller decides whether to scan binaries at all).
pub fn scan_stream(
    mut input: impl Read,
    encoding: Encoding,
    limit: u64,
    mut each: impl FnMut(Located),
) -> std::io::Result<Scanned> {
    let unit = match encoding {
        Encoding::Utf16Le | Encoding::Utf16Be => 2,
        Encoding::Text | Encoding::Binary => 1,
    };
    let mut raw = Zeroizing::new(vec![0u8; CHUNK]);
    // Text for the detector: the raw bytes, or one byte per UTF-16 unit.
    let mut text: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(CHUNK + 64));
    let mut pending_unit: Option<u8> = None;
    let mut consumed_units: u64 = 0; // text bytes before `text[0]`
    let mut line: u64 = 1;
    let mut read_total: u64 = 0;
    let mut truncated = false;
    let mut bom_skipped = false;
    // Leading bytes of `text` that were judged already (context only).
    let mut context = 0usize;
    loop {
        let room = (limit - read_total).min(CHUNK as u64) as usize;
        let n = if room == 0 {
            0
        } else {
            read_some(&mut input, &mut raw[..room])?
        };
        if n == 0 && room == 0 {
            // At the limit: is there more?
            let mut probe = [0u8; 1];
            truncated = read_some(&mut input, &mut probe)? > 0;
        }
        read_total += n as u64;
        let eof = n == 0;
        let mut bytes = &raw[..n];
        if unit == 2 {
            if !bom_skipped && read_total > 0 {
                bom_skipped = true;
                if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
                    bytes = &bytes[2..];
                    consumed_units += 1;
                }
            }
            for &b in bytes {
                match pending_unit.take() {
                    None => pending_unit = Some(b),
                    Some(first) => {
                        let u = if encoding == Encoding::Utf16Le {
                            u16::from_le_bytes([first, b])
                        } else {
                            u16::from_be_bytes([first, b])
                        };
                        // Non-ASCII units become a byte that is neither a
                        // digit nor a separator.
                        text.push(u8::try_from(u).ok().filter(u8::is_ascii).unwrap_or(0xFF));
                    }
                }
            }
        } else {
            text.extend_from_slice(bytes);
        }
        // Judge everything up to the last line end; carry the rest (unless
        // it has grown past a chunk with no line end, or the input ended).
        let cut = if eof {
            text.len()
        } else {
            match memchr::memrchr(b'\n', &text) {
                Some(p) => p + 1,
                None if text.len() >= 2 * CHUNK => detect::safe_cut(&text),
                None => 0,
            }
        };
        if cut > context {
            let mut line_from = context;
            let judged = &text[..cut];
            detect::find_from(judged, context, |finding| {
                line +=
                    memchr::memchr_iter(b'\n', &judged[line_from..finding.start]).count() as u64;
                line_from = finding.start;
                each(Located {
                    finding,
                    line,
                    offset: (consumed_units + finding.start as u64) * unit,
                    length: (finding.end - finding.start) as u64 * unit,
                    token: (finding.kind == detect::Kind::Token)
                        .then(|| {
                            crate::domain::Token::parse_bytes(&detect::digits_of(judged, &finding))
                                .ok()
                        })
                        .flatten(),
                });
            });
            line += memchr::memchr_iter(b'\n', &text[line_from..cut]).count() as u64;
            // The last judged byte stays as the next chunk's left context.
            consumed_units += cut as u64 - 1;
            text.drain(..cut - 1);
            context = 1;
        }
        if eof {
            return Ok(Scanned {
                bytes: read_total,
                truncated,
            });
        }
    }
}

/// `read` that retries on `Interrupted`.
fn read_some(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match input.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Reads up to [`SNIFF`] bytes from the start of `input` (a `.gz` stream's
/// decompressed start included), returning them and a reader that yields
/// the whole content again.
pub fn peek(mut input: impl Read) -> std::io::Result<(Encoding, impl Read)> {
    let mut head = Zeroizing::new(vec![0u8; SNIFF]);
    let mut filled = 0;
    while filled < SNIFF {
        let n = read_some(&mut input, &mut head[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    head.truncate(filled);
    let encoding = sniff(&head);
    Ok((encoding, std::io::Cursor::new(head).chain(input)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_and_offsets(content: &[u8], encoding: Encoding) -> Vec<(u64, u64, u64)> {
        let mut out = Vec::new();
        scan_stream(content, encoding, u64::MAX, |l| {
            out.push((l.line, l.offset, l.length))
        })
        .unwrap();
        out
    }

    #[test]
    fn lines_and_offsets_are_those_of_the_file() {
        let text = b"a\nb\n\nx 4111111111111111 y 5555 5555 5555 4444\n";
        assert_eq!(
            lines_and_offsets(text, Encoding::Text),
            vec![(4, 7, 16), (4, 26, 19)]
        );
    }

    #[test]
    fn utf16_offsets_count_bytes_of_the_file() {
        let mut le = vec![0xFF, 0xFE];
        for u in "id\n 4111111111111111".encode_utf16() {
            le.extend_from_slice(&u.to_le_bytes());
        }
        assert_eq!(sniff(&le), Encoding::Utf16Le);
        assert_eq!(
            lines_and_offsets(&le, Encoding::Utf16Le),
            vec![(2, 2 + 8, 32)]
        );
        let be: Vec<u8> = "x 4111111111111111"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        assert_eq!(sniff(&be), Encoding::Utf16Be);
        assert_eq!(lines_and_offsets(&be, Encoding::Utf16Be), vec![(1, 4, 32)]);
    }

    #[test]
    fn a_card_across_chunk_borders_is_found_once() {
        for pad in [CHUNK - 20, CHUNK - 8, CHUNK - 1, CHUNK, 2 * CHUNK - 5] {
            let mut text = vec![b'x'; pad];
            text.extend_from_slice(b" 4111111111111111 ");
            text.push(b'\n');
            let found = lines_and_offsets(&text, Encoding::Text);
            assert_eq!(found, vec![(1, pad as u64 + 1, 16)], "pad {pad}");
        }
    }

    #[test]
    fn a_card_on_a_line_longer_than_two_chunks_is_found() {
        let mut text = b"a,".repeat(CHUNK + 10);
        text.extend_from_slice(b"4111111111111111,");
        text.extend_from_slice(&b"b,".repeat(CHUNK));
        let found = lines_and_offsets(&text, Encoding::Text);
        assert_eq!(found, vec![(1, 2 * (CHUNK as u64 + 10), 16)]);
    }

    #[test]
    fn the_limit_stops_reading_and_says_so() {
        let text = b"4111111111111111\n5555555555554444\n".to_vec();
        let mut n = 0;
        let scanned = scan_stream(&text[..], Encoding::Text, 17, |_| n += 1).unwrap();
        assert!(scanned.truncated);
        assert_eq!((n, scanned.bytes), (1, 17));
    }

    #[test]
    fn binary_is_told_from_text() {
        assert_eq!(sniff(b"plain text"), Encoding::Text);
        assert_eq!(
            sniff(&[0x7F, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0]),
            Encoding::Binary
        );
    }
}
