//! The listeners' TLS: rustls (ring provider). The API: TLS 1.3 only
//! unless the config allows 1.2, and a client certificate that must chain
//! to the configured CA bundle and not be revoked by any configured CRL.
//! The hosted fields' public listener: TLS 1.3, a server certificate only.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls::version::{TLS12, TLS13};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::config::ApiConfig;

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{field}: {problem}")]
    File {
        /// Config field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

fn file_error(field: &'static str, path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        field,
        problem: format!("{}: {e}", path.display()),
    }
}

/// Exports the earliest expiry among `certs` as
/// `cardvault_tls_certificate_not_after_seconds{certificate}` (Unix time),
/// for the "certificate expiring" alert. Set at start and at each reload.
fn publish_not_after(which: &'static str, certs: &[CertificateDer<'_>]) {
    let earliest = certs
        .iter()
        .filter_map(|der| x509_parser::parse_x509_certificate(der.as_ref()).ok())
        .map(|(_, cert)| cert.validity().not_after.timestamp())
        .min();
    if let Some(not_after) = earliest {
        metrics::gauge!("cardvault_tls_certificate_not_after_seconds", "certificate" => which)
            .set(not_after as f64);
    }
}

/// Builds the server config from the `[api]` section.
pub fn server_config(api: &ApiConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&api.client_ca)
        .map_err(|e| file_error("api.client_ca", &api.client_ca, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error("api.client_ca", &api.client_ca, e))?;
    if cas.is_empty() {
        return Err(file_error(
            "api.client_ca",
            &api.client_ca,
            "no certificates",
        ));
    }
    publish_not_after("client_ca", &cas);
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| file_error("api.client_ca", &api.client_ca, e))?;
    }
    let mut crls: Vec<CertificateRevocationListDer<'static>> = Vec::new();
    for path in &api.crls {
        let found: Vec<_> = CertificateRevocationListDer::pem_file_iter(path)
            .map_err(|e| file_error("api.crls", path, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_error("api.crls", path, e))?;
        if found.is_empty() {
            return Err(file_error("api.crls", path, "no CRLs"));
        }
        crls.extend(found);
    }
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
    if !crls.is_empty() {
        verifier = verifier.with_crls(crls).only_check_end_entity_revocation();
    }
    let verifier = verifier
        .build()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&api.cert)
        .map_err(|e| file_error("api.cert", &api.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error("api.cert", &api.cert, e))?;
    publish_not_after("server", &chain[..chain.len().min(1)]);
    let key =
        PrivateKeyDer::from_pem_file(&api.key).map_err(|e| file_error("api.key", &api.key, e))?;
    let versions: &[&rustls::SupportedProtocolVersion] = if api.allow_tls12 {
        &[&TLS13, &TLS12]
    } else {
        &[&TLS13]
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The hosted fields' public listener's TLS: the `[collect]` certificate,
/// no client certificate, TLS 1.3 only (every browser that can run the
/// frame speaks it), HTTP/2 and HTTP/1.1.
pub fn public_server_config(
    collect: &crate::config::CollectConfig,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&collect.cert_file)
        .map_err(|e| file_error("collect.cert_file", &collect.cert_file, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error("collect.cert_file", &collect.cert_file, e))?;
    publish_not_after("collect", &chain[..chain.len().min(1)]);
    let key = PrivateKeyDer::from_pem_file(&collect.key_file)
        .map_err(|e| file_error("collect.key_file", &collect.key_file, e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&TLS13])
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A short, bounded reason for a failed handshake (metric label and log).
pub fn handshake_failure_reason(e: &std::io::Error) -> &'static str {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "eof"
        } else {
            "io"
        };
    };
    use rustls::{CertificateError, Error};
    match tls {
        Error::NoCertificatesPresented => "no_client_certificate",
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "expired",
        Error::InvalidCertificate(CertificateError::Revoked) => "revoked",
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => "unknown_issuer",
        Error::InvalidCertificate(_) => "invalid_certificate",
        Error::PeerIncompatible(_) => "incompatible",
        Error::InappropriateHandshakeMessage { .. } | Error::InappropriateMessage { .. } => {
            "protocol"
        }
        Error::AlertReceived(_) => "alert_received",
        _ => "other",
    }
}
