//! Page origins a collection session may be created for: exactly
//! `scheme://host[:port]` as a browser writes `event.origin` — `https://`
//! always, `http://` only for 127.0.0.1, localhost and [::1] when the
//! listener allows loopback pages (development). Pure.

/// Longest origin accepted.
const MAX_ORIGIN_LEN: usize = 253;

/// `input` as a browser's origin, lower-cased, or why it is refused (a
/// fixed message, never the input).
pub fn parse(input: &str, allow_loopback_http: bool) -> Result<String, &'static str> {
    if input.len() > MAX_ORIGIN_LEN {
        return Err("origin is longer than 253 characters");
    }
    let origin = input.to_ascii_lowercase();
    let (scheme, rest) = origin
        .split_once("://")
        .ok_or("origin must be https://HOST[:PORT]")?;
    let (host, port) = split_port(rest)?;
    if !valid_host(host) {
        return Err("origin must be https://HOST[:PORT] with nothing after it");
    }
    if let Some(port) = port
        && (port.is_empty()
            || port.len() > 5
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.starts_with('0')
            || port.parse::<u32>().map_or(true, |p| p > 65_535))
    {
        return Err("origin's port must be 1 to 65535");
    }
    match scheme {
        "https" => Ok(origin),
        "http" if allow_loopback_http && matches!(host, "127.0.0.1" | "localhost" | "[::1]") => {
            Ok(origin)
        }
        "http" => {
            Err("origin must use https:// (plain http only for loopback pages in development)")
        }
        _ => Err("origin must be https://HOST[:PORT]"),
    }
}

/// Host and optional port of `rest` (`[v6]:port` included).
fn split_port(rest: &str) -> Result<(&str, Option<&str>), &'static str> {
    if rest.starts_with('[') {
        let end = rest.find(']').ok_or("origin must be https://HOST[:PORT]")?;
        let (host, after) = rest.split_at(end + 1);
        return match after {
            "" => Ok((host, None)),
            _ => after
                .strip_prefix(':')
                .map(|port| (host, Some(port)))
                .ok_or("origin must be https://HOST[:PORT] with nothing after it"),
        };
    }
    Ok(match rest.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    })
}

/// A DNS name (letters, digits, hyphens, dots; no empty label) or an IP
/// literal (`[…]` for IPv6).
fn valid_host(host: &str) -> bool {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn https_origins_are_accepted_as_a_browser_writes_them() {
        assert_eq!(
            parse("https://shop.example", false).unwrap(),
            "https://shop.example"
        );
        assert_eq!(
            parse("HTTPS://Shop.Example:8443", false).unwrap(),
            "https://shop.example:8443"
        );
        assert_eq!(
            parse("https://[::1]:443", false).unwrap(),
            "https://[::1]:443"
        );
        assert!(parse("https://127.0.0.1", false).is_ok());
    }

    #[test]
    fn anything_more_or_less_than_an_origin_is_refused() {
        for bad in [
            "",
            "shop.example",
            "https://",
            "https://shop.example/",
            "https://shop.example/pay",
            "https://shop.example?x",
            "https://shop.example#x",
            "https://user@shop.example",
            "https://shop..example",
            "https://-shop.example",
            "https://shop.example:0",
            "https://shop.example:65536",
            "https://shop.example:",
            "https://[::1",
            "https://[nothost]",
            "ftp://shop.example",
            "javascript://shop.example",
            "https://shop example",
            "null",
            "*",
        ] {
            assert!(parse(bad, true).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn plain_http_only_for_loopback_pages_when_allowed() {
        assert!(parse("http://shop.example", true).is_err());
        assert!(parse("http://127.0.0.1:8080", false).is_err());
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:3000",
            "http://[::1]:1",
        ] {
            assert!(parse(ok, true).is_ok(), "{ok}");
        }
        assert!(parse("http://127.0.0.2", true).is_err());
    }
}
