//! A live probe of a running vault's API listener for the 4.2.1 section:
//! one TLS handshake per protocol version, per cipher suite and per
//! key-exchange group the probing client knows (rustls' own set), each
//! offering only that one, and one handshake without a client certificate;
//! what the server accepted is what it serves — measured at the address it
//! actually listens on, not read from its config. Versions older than
//! TLS 1.2 cannot be offered by this client; the bundle says so.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Longest a probe handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Who the probe is and whom it trusts.
pub struct ProbeIdentity {
    roots: RootCertStore,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl ProbeIdentity {
    /// Trusts `ca` and presents `cert`/`key` (an admin's).
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<ProbeIdentity> {
        let read =
            |p: &Path, e: rustls::pki_types::pem::Error| anyhow::anyhow!("{}: {e}", p.display());
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).map_err(|e| read(ca, e))? {
            roots
                .add(c.map_err(|e| read(ca, e))?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?;
        }
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| read(cert, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| read(cert, e))?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| read(key, e))?;
        Ok(ProbeIdentity { roots, chain, key })
    }

    fn config(
        &self,
        provider: CryptoProvider,
        versions: &[&'static SupportedProtocolVersion],
        with_cert: bool,
        alpn: &[&[u8]],
    ) -> Option<ClientConfig> {
        let builder = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .ok()?
            .with_root_certificates(self.roots.clone());
        let mut config = if with_cert {
            builder
                .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
                .ok()?
        } else {
            builder.with_no_client_auth()
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Some(config)
    }
}

/// What one handshake negotiated.
struct Handshake {
    version: String,
    suite: String,
    group: Option<String>,
    alpn: Option<String>,
    served: Vec<CertificateDer<'static>>,
}

/// One handshake with `config`; `with_cert`-less probes also send one
/// request, since a TLS 1.3 server refuses a missing client certificate
/// only after the handshake.
async fn handshake(addr: SocketAddr, config: ClientConfig) -> Result<Handshake, String> {
    let run = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        // The server's verdict on the client certificate arrives with the
        // first read (TLS 1.3 finishes the client's side first). An unknown
        // path: answered 404 by the router, never audited, reveals nothing.
        tls.write_all(b"GET / HTTP/1.1\r\nhost: probe\r\nconnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut first = [0u8; 12];
        let read = tls.read(&mut first).await.map_err(|e| e.to_string())?;
        if read == 0 {
            return Err("closed without an answer".into());
        }
        let (_, conn) = tls.get_ref();
        Ok(Handshake {
            version: conn
                .protocol_version()
                .map(|v| format!("{v:?}").replace("TLSv1_", "TLSv1."))
                .unwrap_or_default(),
            suite: conn
                .negotiated_cipher_suite()
                .map(|s| iana(s.suite()))
                .unwrap_or_default(),
            group: conn
                .negotiated_key_exchange_group()
                .map(|g| format!("{:?}", g.name())),
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            served: conn
                .peer_certificates()
                .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                .unwrap_or_default(),
        })
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// The IANA name of a cipher suite (rustls says `TLS13_…` for TLS 1.3).
fn iana(suite: rustls::CipherSuite) -> String {
    format!("{suite:?}").replacen("TLS13_", "TLS_", 1)
}

/// Probes the listener at `addr` as `identity`; `config_cert` is the
/// certificate file the config names (compared with the one served).
pub async fn probe_tls(addr: SocketAddr, identity: &ProbeIdentity, config_cert: &Path) -> Value {
    let base = rustls::crypto::ring::default_provider();
    let only = |suites: Vec<rustls::SupportedCipherSuite>,
                groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>| {
        CryptoProvider {
            cipher_suites: suites,
            kx_groups: groups,
            ..rustls::crypto::ring::default_provider()
        }
    };
    let mut protocols = Vec::new();
    let mut refused_protocols = Vec::new();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let name = format!("{:?}", version.version).replace("TLSv1_", "TLSv1.");
        let accepted = match identity.config(base.clone(), &[version], true, &[b"http/1.1"]) {
            Some(config) => handshake(addr, config).await.is_ok(),
            None => false,
        };
        if accepted {
            protocols.push(name);
        } else {
            refused_protocols.push(name);
        }
    }
    let mut suites = Vec::new();
    for suite in base.cipher_suites.iter().copied() {
        let version = suite.version();
        let config = identity.config(
            only(vec![suite], base.kx_groups.clone()),
            &[version],
            true,
            &[b"http/1.1"],
        );
        if let Some(config) = config
            && handshake(addr, config).await.is_ok()
        {
            suites.push(iana(suite.suite()));
        }
    }
    let mut groups = Vec::new();
    for group in base.kx_groups.iter().copied() {
        let config = identity.config(
            only(base.cipher_suites.clone(), vec![group]),
            &[&rustls::version::TLS13, &rustls::version::TLS12],
            true,
            &[b"http/1.1"],
        );
        if let Some(config) = config
            && handshake(addr, config).await.is_ok()
        {
            groups.push(format!("{:?}", group.name()));
        }
    }
    let full = match identity.config(
        base.clone(),
        &[&rustls::version::TLS13, &rustls::version::TLS12],
        true,
        &[b"h2", b"http/1.1"],
    ) {
        Some(config) => handshake(addr, config).await,
        None => Err("no client configuration".into()),
    };
    let without_cert = match identity.config(
        base.clone(),
        &[&rustls::version::TLS13, &rustls::version::TLS12],
        false,
        &[b"http/1.1"],
    ) {
        Some(config) => match handshake(addr, config).await {
            Ok(_) => "ACCEPTED: a connection without a client certificate got an answer".to_owned(),
            Err(why) => format!("refused ({why})"),
        },
        None => "not probed".into(),
    };
    let served = full.as_ref().ok().and_then(|h| h.served.first().cloned());
    let config_first = CertificateDer::pem_file_iter(config_cert)
        .ok()
        .and_then(|mut iter| iter.next())
        .and_then(Result::ok);
    let served_cert = served.as_ref().and_then(|der| {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        Some(json!({
            "subject": cert.subject().to_string(),
            "serial": cert.raw_serial_as_string(),
            "not_after": cert.validity().not_after.to_string(),
            "same_as_the_config_file": config_first.as_ref().map(|c| c.as_ref() == der.as_ref()),
        }))
    });
    json!({
        "address": addr.to_string(),
        "protocols_accepted": protocols,
        "protocols_refused": refused_protocols,
        "older_protocols": "TLS 1.0 and 1.1 not probed: the probing client (rustls) cannot offer them, and the server's TLS library (rustls) implements neither",
        "cipher_suites_accepted": suites,
        "key_exchange_groups_accepted": groups,
        "negotiated_by_default": full.as_ref().ok().map(|h| json!({
            "protocol": h.version, "cipher_suite": h.suite, "key_exchange_group": h.group, "alpn": h.alpn,
        })),
        "without_a_client_certificate": without_cert,
        "served_certificate": served_cert,
    })
}
