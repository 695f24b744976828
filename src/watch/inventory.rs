//! What one check of a payment page found, as the browser received it:
//! every script it executed (external: final URL, SHA-384 of the bytes,
//! the `integrity` attribute, who inserted it; inline: SHA-384 of the
//! text), every frame's origin, every form's action, and the page's
//! security headers with per-request CSP nonces normalized away.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The security headers a check records (PCI DSS 11.6.1), lower case.
pub const SECURITY_HEADERS: [&str; 5] = [
    "content-security-policy",
    "strict-transport-security",
    "x-frame-options",
    "permissions-policy",
    "referrer-policy",
];

/// One check's findings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// The page as loaded (after redirects).
    pub url: String,
    /// External scripts the page loaded, in load order.
    #[serde(default)]
    pub scripts: Vec<ExternalScript>,
    /// Inline scripts in the page's document.
    #[serde(default)]
    pub inline_scripts: Vec<InlineScript>,
    /// Frames the page navigated, by origin.
    #[serde(default)]
    pub frames: Vec<Frame>,
    /// Forms, by the URL they post to.
    #[serde(default)]
    pub forms: Vec<Form>,
    /// The security headers of the page's own response (name → value).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl Inventory {
    /// One check's findings as an inventory: frames by origin (from their
    /// URLs) and form actions, each sorted and listed once; the security
    /// headers picked from all the page's headers (lower-case names) and
    /// normalized.
    pub fn assemble(
        url: String,
        scripts: Vec<ExternalScript>,
        inline_scripts: Vec<InlineScript>,
        frame_urls: impl IntoIterator<Item = String>,
        form_actions: impl IntoIterator<Item = String>,
        all_headers: &BTreeMap<String, String>,
    ) -> Inventory {
        let origins: std::collections::BTreeSet<String> =
            frame_urls.into_iter().map(|u| origin_of(&u)).collect();
        let actions: std::collections::BTreeSet<String> = form_actions.into_iter().collect();
        Inventory {
            url,
            scripts,
            inline_scripts,
            frames: origins.into_iter().map(|origin| Frame { origin }).collect(),
            forms: actions.into_iter().map(|action| Form { action }).collect(),
            headers: SECURITY_HEADERS
                .iter()
                .filter_map(|name| {
                    all_headers
                        .get(*name)
                        .map(|v| ((*name).to_owned(), normalize_header(name, v)))
                })
                .collect(),
        }
    }
}

/// A script loaded from a URL.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExternalScript {
    /// Its URL after redirects.
    pub url: String,
    /// `sha384-…` (base64) of the bytes the browser received.
    pub sha384: String,
    /// Its `integrity` attribute, when its element still carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<String>,
    /// `html` (the page's markup) or the URL of the script that inserted it.
    pub inserted_by: String,
}

/// A script in the page's markup (or inserted as text).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InlineScript {
    /// `sha384-…` (base64) of its text.
    pub sha384: String,
    /// Its first 40 characters, to recognize it by (never a secret: page
    /// source anyone can read).
    pub starts_with: String,
}

/// A frame of the page.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Frame {
    /// Its origin (`scheme://host:port`).
    pub origin: String,
}

/// A form of the page.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Form {
    /// The absolute URL it submits to.
    pub action: String,
}

/// `sha384-` and the base64 SHA-384 of `bytes` (the SRI notation).
pub fn sri(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!(
        "sha384-{}",
        data_encoding::BASE64.encode(&sha2::Sha384::digest(bytes))
    )
}

/// A header value as compared: CSP nonces (`'nonce-…'`) replaced by
/// `'nonce-*'` — a fresh nonce per request is not a change — and
/// whitespace collapsed.
pub fn normalize_header(name: &str, value: &str) -> String {
    let words: Vec<String> = value
        .split_whitespace()
        .map(|w| {
            if name == "content-security-policy" && w.starts_with("'nonce-") {
                let end = if w.ends_with(';') {
                    "'nonce-*';"
                } else {
                    "'nonce-*'"
                };
                end.to_owned()
            } else {
                w.to_owned()
            }
        })
        .collect();
    words.join(" ")
}

/// The origin of `url` (`scheme://host[:port]`), or the URL itself when it
/// has none (`about:blank`, `data:`).
pub fn origin_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => match parsed.origin() {
            url::Origin::Tuple(..) => parsed.origin().ascii_serialization(),
            url::Origin::Opaque(_) => parsed.scheme().to_owned() + ":",
        },
        Err(_) => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_not_changes_and_origins_are_exact() {
        assert_eq!(
            normalize_header(
                "content-security-policy",
                "script-src 'self'  'nonce-abc123'; default-src 'none'"
            ),
            "script-src 'self' 'nonce-*'; default-src 'none'"
        );
        assert_eq!(
            normalize_header("content-security-policy", "script-src 'nonce-A';"),
            normalize_header("content-security-policy", "script-src 'nonce-B';")
        );
        assert_eq!(
            origin_of("https://vault.example:8444/frame?x=1"),
            "https://vault.example:8444"
        );
        assert_eq!(
            origin_of("https://vault.example/frame"),
            "https://vault.example"
        );
        assert_ne!(
            origin_of("https://vault.example.evil/frame"),
            "https://vault.example"
        );
        assert!(sri(b"alert(1)").starts_with("sha384-"));
    }
}
