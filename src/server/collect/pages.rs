//! What the public listener serves besides the submit: the card frame (an
//! HTML page per session with a fresh CSP nonce, the frame's nonce and the
//! one origin allowed to frame it), its script and style, and the shop's
//! `cardvault.js`, each with its Subresource Integrity hash. The assets
//! are compiled in (`assets/`): no framework, nothing from another origin.

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use sha2::{Digest, Sha384};

use crate::runtime::collect::{CollectError, Frame};
use crate::store::codec::CvcPolicy;

/// The frame page's template.
const FRAME_HTML: &str = include_str!("assets/frame.html");
/// The card form inside it.
const FORM_HTML: &str = include_str!("assets/form.html");
/// The security-code field of the form.
const CVC_HTML: &str = include_str!("assets/cvc.html");
/// The frame's script.
pub const FRAME_JS: &str = include_str!("assets/frame.js");
/// The frame's style.
pub const FRAME_CSS: &str = include_str!("assets/frame.css");
/// The shop's script.
pub const CARDVAULT_JS: &str = include_str!("assets/cardvault.js");

/// `sha384-…` of `bytes`, as an `integrity` attribute takes it.
pub fn sri(bytes: &[u8]) -> String {
    format!(
        "sha384-{}",
        data_encoding::BASE64.encode(&Sha384::digest(bytes))
    )
}

/// The integrity hashes of the three assets, computed once.
pub struct Integrity {
    /// `frame.js`.
    pub frame_js: String,
    /// `frame.css`.
    pub frame_css: String,
    /// `cardvault.js`.
    pub cardvault_js: String,
}

/// The assets' integrity hashes.
pub fn integrity() -> &'static Integrity {
    static HASHES: OnceLock<Integrity> = OnceLock::new();
    HASHES.get_or_init(|| Integrity {
        frame_js: sri(FRAME_JS.as_bytes()),
        frame_css: sri(FRAME_CSS.as_bytes()),
        cardvault_js: sri(CARDVAULT_JS.as_bytes()),
    })
}

/// Escapes text for an HTML attribute or element.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What a closed session's frame says.
fn closed_message(code: &str) -> &'static str {
    match code {
        "session_completed" => "This card form was already used.",
        "session_expired" => "This card form has expired. Reload the page to try again.",
        "session_locked" => "This card form is locked after too many attempts.",
        _ => "This card form cannot be used right now.",
    }
}

/// The frame page of session `session` and the CSP nonce it uses.
pub fn frame_page(session: &str, frame: &Frame, csp_nonce: &str, code: Option<&str>) -> String {
    let state = code.unwrap_or("open");
    let content = match (&frame.open, code) {
        (Ok(_), None) => {
            let cvc = match frame.cvc {
                CvcPolicy::None => String::new(),
                CvcPolicy::Required => CVC_HTML
                    .replace("{{cvc_hint}}", "")
                    .replace("{{cvc_required}}", "required "),
                CvcPolicy::Optional => CVC_HTML
                    .replace("{{cvc_hint}}", " (optional)")
                    .replace("{{cvc_required}}", ""),
            };
            FORM_HTML.replace("{{cvc_field}}", &cvc)
        }
        _ => format!(
            "<p class=\"status\" role=\"status\">{}</p>",
            closed_message(state)
        ),
    };
    let hashes = integrity();
    let nonce = frame.open.as_ref().map(String::as_str).unwrap_or_default();
    FRAME_HTML
        .replace("{{css_sri}}", &hashes.frame_css)
        .replace("{{js_sri}}", &hashes.frame_js)
        .replace("{{csp_nonce}}", csp_nonce)
        .replace("{{session}}", &escape(session))
        .replace("{{frame_nonce}}", &escape(nonce))
        .replace("{{origin}}", &escape(&frame.origin))
        .replace("{{state}}", &escape(state))
        .replace("{{cvc}}", frame.cvc.as_str())
        .replace("{{content}}", &content)
}

/// The frame's Content-Security-Policy: scripts and styles only with this
/// response's nonce, requests only to the vault itself, no forms, no base,
/// framed only by `origin`.
pub fn frame_csp(csp_nonce: &str, origin: &str) -> String {
    format!(
        "default-src 'none'; script-src 'nonce-{csp_nonce}'; style-src 'nonce-{csp_nonce}'; \
         connect-src 'self'; img-src 'none'; font-src 'none'; form-action 'none'; \
         base-uri 'none'; frame-ancestors {origin}"
    )
}

/// The policy of every other answer: nothing loads, nothing frames it.
pub const DEFAULT_CSP: &str =
    "default-src 'none'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

/// An HTML answer with its own CSP, never cached.
pub fn html(status: StatusCode, body: String, csp: &str) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) = HeaderValue::from_str(csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

/// A static asset: cacheable for an hour (its hash pins it), readable by
/// other origins only for the shop's script (which pages load with
/// `crossorigin` to check its integrity).
pub fn asset(body: &'static str, content_type: &'static str, cross_origin: bool) -> Response {
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    if cross_origin {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        headers.insert(
            "cross-origin-resource-policy",
            HeaderValue::from_static("cross-origin"),
        );
    } else {
        headers.insert(
            "cross-origin-resource-policy",
            HeaderValue::from_static("same-origin"),
        );
    }
    response
}

/// The code a closed session's frame reports.
pub fn closed_code(e: &CollectError) -> &'static str {
    crate::server::error::collect_error(e).code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_html_script_and_style_stay_under_20_kb() {
        let frame = Frame {
            origin: "https://shop.example".into(),
            cvc: CvcPolicy::Required,
            tenant: "default".into(),
            open: Ok("n".repeat(22)),
        };
        let page = frame_page(&"s".repeat(22), &frame, &"c".repeat(22), None);
        let total = page.len() + FRAME_JS.len() + FRAME_CSS.len();
        assert!(total < 20 * 1024, "frame is {total} bytes");
        assert!(page.contains("autocomplete=\"cc-number\""));
        assert!(page.contains("autocomplete=\"cc-exp\""));
        assert!(page.contains("autocomplete=\"cc-csc\""));
        assert!(!page.contains("{{"), "a placeholder was left: {page}");
    }

    #[test]
    fn values_are_escaped_and_closed_sessions_have_no_form() {
        let frame = Frame {
            origin: "https://a\"b<c".into(),
            cvc: CvcPolicy::None,
            tenant: "default".into(),
            open: Err(CollectError::Expired),
        };
        let page = frame_page("x", &frame, "n", Some("session_expired"));
        assert!(page.contains("https://a&quot;b&lt;c"));
        assert!(!page.contains("<form"));
        assert!(page.contains("has expired"));
    }

    #[test]
    fn integrity_hashes_are_sha384_base64() {
        let h = integrity();
        assert!(h.cardvault_js.starts_with("sha384-"));
        assert_eq!(h.cardvault_js.len(), "sha384-".len() + 64);
    }
}
