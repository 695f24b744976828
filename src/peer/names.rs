//! The name a client certificate gives its holder, with no TLS or HTTP
//! types (so the fuzz targets reach it): the first URI SAN, else the first
//! DNS SAN, else the subject CN; which of the three it was; and the serial.
//! A name holding control characters or invisible formatting characters is
//! refused here, before anything could log it.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What a certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateName {
    /// Which part of the certificate named the holder.
    pub kind: NameKind,
    /// The name (non-empty, no control or invisible characters).
    pub name: String,
    /// The serial number, hex.
    pub serial: String,
}

/// Reads the holder's name from a certificate (DER).
pub fn certificate_name(der: &[u8]) -> Result<CertificateName, IdentityRefused> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityRefused::Unparsable)?;
    let (kind, name, serial) = principal_of(&cert)?;
    Ok(CertificateName { kind, name, serial })
}

/// Why a verified certificate yields no caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityRefused {
    /// No URI SAN, DNS SAN or CN (or an empty one).
    NoPrincipal,
    /// The principal holds control or invisible formatting characters (a
    /// newline would forge log lines): refused, never logged.
    UnsafeCharacters,
    /// The certificate did not parse (rustls accepted it, x509-parser not).
    Unparsable,
}

impl IdentityRefused {
    /// A fixed reason, for metrics labels, logs and the audit trail.
    pub fn reason(self) -> &'static str {
        match self {
            IdentityRefused::NoPrincipal => "no_principal",
            IdentityRefused::UnsafeCharacters => "principal_unsafe_characters",
            IdentityRefused::Unparsable => "certificate_unparsable",
        }
    }
}

/// Whether `c` may stand in a principal name: no control characters
/// (newlines, escapes, NEL) and no invisible formatting characters (line
/// and paragraph separators, bidirectional overrides, zero-width marks)
/// that would let a name forge or disguise a log line.
fn allowed_in_principal(c: char) -> bool {
    !(c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'))
}

/// Which part of a certificate named the principal. URI SANs, DNS SANs
/// and CNs are issued under different rules, so a config key can insist on
/// one (`uri:spiffe://shop/cart`): then a DNS SAN that happens to read the
/// same does not match it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A URI subject alternative name.
    Uri,
    /// A DNS subject alternative name.
    Dns,
    /// The subject common name.
    Cn,
}

impl NameKind {
    /// The config key prefix, without the colon.
    pub fn prefix(self) -> &'static str {
        match self {
            NameKind::Uri => "uri",
            NameKind::Dns => "dns",
            NameKind::Cn => "cn",
        }
    }
}

/// The name a certificate gives its holder (first URI SAN, else first DNS
/// SAN, else subject CN), which kind of name it is, and the serial, hex.
fn principal_of(cert: &X509Certificate<'_>) -> Result<(NameKind, String, String), IdentityRefused> {
    let serial = cert.raw_serial_as_string().replace(':', "");
    let mut uri = None;
    let mut dns = None;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) if uri.is_none() => uri = Some(u.to_string()),
                GeneralName::DNSName(d) if dns.is_none() => dns = Some(d.to_string()),
                _ => {}
            }
        }
    }
    let cn = || {
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned)
    };
    let (kind, name) = uri
        .map(|u| (NameKind::Uri, u))
        .or(dns.map(|d| (NameKind::Dns, d)))
        .or_else(|| cn().map(|c| (NameKind::Cn, c)))
        .filter(|(_, n)| !n.is_empty())
        .ok_or(IdentityRefused::NoPrincipal)?;
    if !name.chars().all(allowed_in_principal) {
        return Err(IdentityRefused::UnsafeCharacters);
    }
    Ok((kind, name, serial))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_invisible_characters_are_not_allowed_in_principals() {
        for bad in [
            '\n', '\r', '\u{1b}', '\u{85}', '\u{2028}', '\u{202E}', '\u{200B}', '\u{FEFF}',
        ] {
            assert!(!allowed_in_principal(bad), "{bad:?}");
        }
        for good in "spiffe://shop.example/cart payments-1 käse.example".chars() {
            assert!(allowed_in_principal(good), "{good:?}");
        }
    }
}
