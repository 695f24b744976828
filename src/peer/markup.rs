//! The page's markup read without a browser (`watch check --http-only`):
//! the start tags of scripts, frames, forms and `<base>`, each script's
//! raw text, following the HTML tokenizer's rules for what matters here —
//! comments, quoted attribute values, and raw-text elements (`script`,
//! `style`, `textarea`, `title`, …) whose content holds no tags. Not a full
//! HTML parser (none is in the offline registry): it never executes or
//! builds a tree, it only lists what the markup itself asks for, and it is
//! bounded (each list at [`MAX_ITEMS`], the input by the fetch's budget).

/// Most elements of each kind kept.
pub const MAX_ITEMS: usize = 10_000;

/// A `<script>` element in the markup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptTag {
    /// Its `src` attribute.
    pub src: Option<String>,
    /// Its `integrity` attribute.
    pub integrity: Option<String>,
    /// Its `type` attribute.
    pub kind: Option<String>,
    /// Its raw text (inline scripts).
    pub text: String,
}

impl ScriptTag {
    /// Whether a browser runs it as script (the watch's browser check
    /// uses the same rule).
    pub fn executable(&self) -> bool {
        match self.kind.as_deref().map(str::trim) {
            None | Some("") => true,
            Some(t) => ["text/javascript", "application/javascript", "module"]
                .iter()
                .any(|k| t.eq_ignore_ascii_case(k)),
        }
    }
}

/// What the markup asks for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Markup {
    /// `<script>` elements, in order.
    pub scripts: Vec<ScriptTag>,
    /// Each `<iframe>`/`<frame>`'s `src`.
    pub frames: Vec<String>,
    /// Each `<form>`'s `action` (`None`: none, so the page itself).
    pub forms: Vec<Option<String>>,
    /// The first `<base href>`.
    pub base: Option<String>,
}

/// Elements whose content is text up to their end tag (`noscript` too: a
/// browser runs scripts).
const RAW_TEXT: [&str; 9] = [
    "script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes", "noscript",
];

/// Reads `html`'s scripts, frames, forms and base.
pub fn scan(html: &str) -> Markup {
    let bytes = html.as_bytes();
    let mut out = Markup::default();
    let mut i = 0;
    while let Some(offset) = memchr(b'<', &bytes[i..]) {
        i += offset;
        let rest = &html[i..];
        if rest.starts_with("<!--") {
            i = find(html, i + 4, "-->").map_or(bytes.len(), |end| end + 3);
            continue;
        }
        let next = bytes.get(i + 1).copied().unwrap_or(0);
        if next == b'!' || next == b'?' || next == b'/' {
            i = memchr(b'>', &bytes[i..]).map_or(bytes.len(), |end| i + end + 1);
            continue;
        }
        if !next.is_ascii_alphabetic() {
            i += 1;
            continue;
        }
        let (name, attributes, end) = start_tag(html, i + 1);
        i = end;
        if RAW_TEXT.contains(&name.as_str()) {
            // The content runs to the first `</name` (case-insensitive).
            let close = find_ci(html, i, &format!("</{name}")).unwrap_or(bytes.len());
            let text = &html[i..close];
            i = memchr(b'>', &bytes[close..]).map_or(bytes.len(), |e| close + e + 1);
            if name == "script" && out.scripts.len() < MAX_ITEMS {
                out.scripts.push(ScriptTag {
                    src: attribute(&attributes, "src"),
                    integrity: attribute(&attributes, "integrity"),
                    kind: attribute(&attributes, "type"),
                    text: text.to_owned(),
                });
            }
            if name == "iframe"
                && let Some(src) = attribute(&attributes, "src")
                && out.frames.len() < MAX_ITEMS
            {
                out.frames.push(src);
            }
            continue;
        }
        match name.as_str() {
            "frame" => {
                if let Some(src) = attribute(&attributes, "src")
                    && out.frames.len() < MAX_ITEMS
                {
                    out.frames.push(src);
                }
            }
            "form" if out.forms.len() < MAX_ITEMS => {
                out.forms.push(attribute(&attributes, "action"));
            }
            "base" if out.base.is_none() => out.base = attribute(&attributes, "href"),
            _ => {}
        }
    }
    out
}

/// The first `needle` in `html` at or after `from`.
fn find(html: &str, from: usize, needle: &str) -> Option<usize> {
    html.get(from..)?.find(needle).map(|at| from + at)
}

/// The first `needle` (ASCII, lower case) in `html` at or after `from`,
/// ignoring ASCII case.
fn find_ci(html: &str, from: usize, needle: &str) -> Option<usize> {
    let hay = html.as_bytes().get(from..)?;
    let needle = needle.as_bytes();
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|at| from + at)
}

fn memchr(byte: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|b| *b == byte)
}

/// The start tag whose name begins at `at`: its lower-case name, its
/// attributes (lower-case names, decoded values; the first of a name
/// wins, as in a browser) and where the markup after it begins.
fn start_tag(html: &str, at: usize) -> (String, Vec<(String, String)>, usize) {
    let bytes = html.as_bytes();
    let mut i = at;
    while i < bytes.len() && !is_space(bytes[i]) && bytes[i] != b'/' && bytes[i] != b'>' {
        i += 1;
    }
    let name = html[at..i].to_ascii_lowercase();
    let mut attributes: Vec<(String, String)> = Vec::new();
    loop {
        while i < bytes.len() && (is_space(bytes[i]) || bytes[i] == b'/') {
            i += 1;
        }
        if i >= bytes.len() {
            return (name, attributes, i);
        }
        if bytes[i] == b'>' {
            return (name, attributes, i + 1);
        }
        let start = i;
        while i < bytes.len() && !is_space(bytes[i]) && !b"/>=".contains(&bytes[i]) {
            i += 1;
        }
        // An attribute name begins with any character but these; `=` as
        // its first character is part of it.
        if i == start {
            i += 1;
        }
        let key = html[start..i].to_ascii_lowercase();
        while i < bytes.len() && is_space(bytes[i]) {
            i += 1;
        }
        let mut value = String::new();
        if i < bytes.len() && bytes[i] == b'=' {
            i += 1;
            while i < bytes.len() && is_space(bytes[i]) {
                i += 1;
            }
            let (raw, end) = match bytes.get(i) {
                Some(q @ (b'"' | b'\'')) => {
                    let close = memchr(*q, &bytes[i + 1..]).map_or(bytes.len(), |e| i + 1 + e);
                    (&html[i + 1..close], (close + 1).min(bytes.len()))
                }
                _ => {
                    let mut e = i;
                    while e < bytes.len() && !is_space(bytes[e]) && bytes[e] != b'>' {
                        e += 1;
                    }
                    (&html[i..e], e)
                }
            };
            value = decode(raw);
            i = end;
        }
        if !attributes.iter().any(|(k, _)| *k == key) {
            attributes.push((key, value));
        }
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
}

fn attribute(attributes: &[(String, String)], name: &str) -> Option<String> {
    attributes
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim().to_owned())
}

/// Character references in an attribute value: the five common named
/// ones and numeric ones (`&#38;`, `&#x26;`); others are kept as written.
fn decode(raw: &str) -> String {
    if !raw.contains('&') {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let end = rest[1..]
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '#')
            .map_or(rest.len(), |e| e + 1);
        let name = &rest[1..end];
        let decoded = match name {
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "lt" => Some('<'),
            "gt" => Some('>'),
            _ => name.strip_prefix('#').and_then(|n| {
                match n.strip_prefix(['x', 'X']) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok(),
                    None => n.parse().ok(),
                }
                .and_then(char::from_u32)
            }),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = rest[end..].strip_prefix(';').unwrap_or(&rest[end..]);
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_markup_gives_its_scripts_frames_and_forms() {
        let page = r#"<!doctype html><html><head><base href="/shop/">
<!-- <script src="commented.js"></script> -->
<script src="app.js?a=1&amp;b=2" integrity="sha384-x"></script>
<SCRIPT type=module>import "./m.js"; if (a < b) { x = "</scr" + "ipt>"; }</SCRIPT>
<script type="application/ld+json">{"not": "run"}</script>
<title>a <script src="not-a-script.js"></script></title>
<textarea><iframe src="https://nowhere.example/"></textarea>
</head><body>
<iframe title='card' src='https://vault.example:8444/frame?x=1'></iframe>
<form method=post action=https://shop.example/pay><input name=a></form>
<form><input></form>
<p data-x="<script src=evil.js>">text</p>
</body></html>"#;
        let m = scan(page);
        let srcs: Vec<_> = m.scripts.iter().map(|s| s.src.clone()).collect();
        assert_eq!(
            srcs,
            vec![Some("app.js?a=1&b=2".into()), None, None],
            "{m:?}"
        );
        assert_eq!(m.scripts[0].integrity.as_deref(), Some("sha384-x"));
        assert!(m.scripts[1].executable());
        assert!(m.scripts[1].text.contains("\"</scr\" + \"ipt>\""));
        assert!(!m.scripts[2].executable());
        assert_eq!(m.frames, vec!["https://vault.example:8444/frame?x=1"]);
        assert_eq!(m.forms, vec![Some("https://shop.example/pay".into()), None]);
        assert_eq!(m.base.as_deref(), Some("/shop/"));
    }

    #[test]
    fn hostile_markup_ends() {
        for page in [
            "<",
            "<a",
            "<script",
            "<script>",
            "<!--",
            "<a b='",
            "<a b=",
            "&",
            "<a b=\"&#x110000;\">",
            "<a =x>",
            "<form action=&#;>",
        ] {
            let _ = scan(page);
        }
        assert_eq!(decode("a&#x26;b&#38;c&zz;&"), "a&b&c&zz;&");
    }
}
