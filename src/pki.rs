//! The development and test PKI (`cardvault pki`): a CA, a server certificate
//! for `localhost`/`127.0.0.1`/`::1`, client certificates whose subject CN is
//! the principal, and CRLs. Certificates carry keyUsage and extendedKeyUsage
//! as a public CA's would, so TLS scanners judge the server, not the PKI.
//! Private keys are written with mode 0600.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// Client principals that `pki init` issues certificates for.
pub const DEV_CLIENTS: [&str; 3] = ["cart", "payments", "admin"];

/// Why a PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Certificate generation or parsing failed.
    #[error("certificate error: {0}")]
    Cert(#[from] rcgen::Error),
    /// `pki init` would overwrite an existing CA.
    #[error("{0} exists already; refusing to overwrite a CA")]
    Exists(PathBuf),
    /// A client name that cannot be a principal or a file name.
    #[error("client name must be 1-64 characters of a-z, 0-9, '.', '_' or '-'")]
    BadName,
    /// The random source failed.
    #[error(transparent)]
    Random(#[from] crate::random::RandomError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A loaded CA: its certificate (PEM) and an issuer that can sign with it.
pub struct Ca {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// Generates a new self-signed CA named `name`, valid for ten years.
    pub fn generate(name: &str) -> Result<Ca, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "cardvault");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.key_identifier_method = KeyIdMethod::Sha256;
        params.serial_number = Some(random_serial()?);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads `ca.pem` and `ca-key.pem` from `dir`.
    pub fn load(dir: &Path) -> Result<Ca, PkiError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca-key.pem");
        let cert_pem = fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key_pem = fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let key = KeyPair::from_pem(&key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        Ok(Ca { cert_pem, issuer })
    }

    /// The CA's private key, PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a server certificate for `localhost`, `127.0.0.1` and `::1`.
    pub fn issue_server(&self) -> Result<Issued, PkiError> {
        let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, Validity::days(SERVER_CERT_DAYS))
    }

    /// Issues a client certificate whose subject CN (the principal) is `name`.
    pub fn issue_client(&self, name: &str, validity: Validity) -> Result<Issued, PkiError> {
        self.issue_client_with_uri(name, None, validity)
    }

    /// Like [`Ca::issue_client`], with a URI SAN (a SPIFFE ID, say), which
    /// then is the principal: the vault reads a URI SAN before the CN.
    pub fn issue_client_with_uri(
        &self,
        name: &str,
        uri: Option<&str>,
        validity: Validity,
    ) -> Result<Issued, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        if let Some(uri) = uri {
            params
                .subject_alt_names
                .push(SanType::URI(uri.try_into().map_err(|_| PkiError::BadName)?));
        }
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "cardvault clients");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, validity)
    }

    fn sign(&self, mut params: CertificateParams, validity: Validity) -> Result<Issued, PkiError> {
        let serial = random_serial()?;
        params.serial_number = Some(serial.clone());
        params.use_authority_key_identifier_extension = true;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial: serial.to_bytes(),
        })
    }

    /// A CRL revoking the certificates with these serial numbers.
    pub fn crl(&self, revoked_serials: &[Vec<u8>]) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(30),
            crl_number: SerialNumber::from(now.unix_timestamp() as u64),
            issuing_distribution_point: None,
            revoked_certs: revoked_serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from(serial.clone()),
                    revocation_time: now - Duration::minutes(1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

/// A certificate's validity window.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Not valid before.
    pub not_before: OffsetDateTime,
    /// Not valid after.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago to `days` days from now.
    pub fn days(days: i64) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days),
        }
    }

    /// A window that ended a day ago (for tests of expired certificates).
    pub fn expired() -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::days(30),
            not_after: now - Duration::days(1),
        }
    }
}

/// A freshly issued certificate and its private key.
pub struct Issued {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM (write it with mode 0600).
    pub key_pem: String,
    /// Serial number bytes.
    pub serial: Vec<u8>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    crate::random::fill(&mut bytes)?;
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte to strip
    Ok(SerialNumber::from(bytes.to_vec()))
}

/// Writes `contents` to `path`, with mode 0600 for private keys.
pub fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    let mode = if private { 0o600 } else { 0o644 };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io(path))?;
    file.write_all(contents.as_bytes()).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

fn check_name(name: &str) -> Result<(), PkiError> {
    crate::domain::TenantId::parse(name)
        .map(|_| ())
        .map_err(|_| PkiError::BadName)
}

/// Lifetime of server certificates: under the 90 days of Mozilla's
/// "modern" TLS profile, which TLS scanners check.
pub const SERVER_CERT_DAYS: i64 = 89;

/// Days before expiry at which [`renew_server_if_due`] issues a new one.
pub const SERVER_RENEW_DAYS: i64 = 30;

/// Re-issues `server.pem`/`server-key.pem` in `dir` from its CA when the
/// current certificate expires within [`SERVER_RENEW_DAYS`] (or cannot be
/// read). Returns whether it did.
pub fn renew_server_if_due(dir: &Path) -> Result<bool, PkiError> {
    let path = dir.join("server.pem");
    let due = fs::read(&path)
        .ok()
        .and_then(|pem| {
            let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
            let cert = pem.parse_x509().ok()?;
            let left = cert.validity().time_to_expiration()?;
            Some(left.whole_days() < SERVER_RENEW_DAYS)
        })
        .unwrap_or(true);
    if due {
        let server = Ca::load(dir)?.issue_server()?;
        write_file(&dir.join("server-key.pem"), &server.key_pem, true)?;
        write_file(&path, &server.cert_pem, false)?;
    }
    Ok(due)
}

/// `pki init`: creates `ca.pem`/`ca-key.pem`, `server.pem`/`server-key.pem`
/// and a client pair for each of [`DEV_CLIENTS`] in `dir`.
pub fn init(dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    let ca_path = dir.join("ca.pem");
    if ca_path.exists() {
        return Err(PkiError::Exists(ca_path));
    }
    // Each dev CA has its own name, so a trust store or a TLS error names
    // which dev setup a certificate came from.
    let mut tag = [0u8; 4];
    crate::random::fill(&mut tag)?;
    let ca = Ca::generate(&format!("cardvault dev CA {}", hex::encode(tag)))?;
    write_file(&dir.join("ca-key.pem"), &ca.key_pem(), true)?;
    write_file(&ca_path, &ca.cert_pem, false)?;
    let server = ca.issue_server()?;
    write_file(&dir.join("server-key.pem"), &server.key_pem, true)?;
    write_file(&dir.join("server.pem"), &server.cert_pem, false)?;
    for name in DEV_CLIENTS {
        write_client(dir, name, &ca.issue_client(name, Validity::days(825))?)?;
    }
    Ok(())
}

/// `pki issue NAME`: adds `NAME.pem`/`NAME-key.pem` signed by the CA in `dir`.
pub fn issue(dir: &Path, name: &str) -> Result<(), PkiError> {
    issue_with_uri(dir, name, None)
}

/// `pki issue NAME --uri URI`: as [`issue`], with a URI SAN (the principal).
pub fn issue_with_uri(dir: &Path, name: &str, uri: Option<&str>) -> Result<(), PkiError> {
    check_name(name)?;
    if uri.is_some_and(|u| !u.contains("://") || u.chars().any(char::is_control)) {
        return Err(PkiError::BadName);
    }
    let ca = Ca::load(dir)?;
    write_client(
        dir,
        name,
        &ca.issue_client_with_uri(name, uri, Validity::days(825))?,
    )
}

/// The serials revoked so far in `dir`, one hex serial a line.
const REVOKED_FILE: &str = "revoked.txt";
/// The CRL `revoke` writes in `dir`.
pub const CRL_FILE: &str = "crl.pem";

/// `pki revoke NAME`: adds `NAME.pem`'s serial to the revoked list in
/// `dir` and rewrites `dir/crl.pem` from the CA with every revoked serial.
/// Returns the serial, hex. Point `api.crls` at the CRL and reload.
pub fn revoke(dir: &Path, name: &str) -> Result<String, PkiError> {
    check_name(name)?;
    let cert_path = dir.join(format!("{name}.pem"));
    let pem = fs::read(&cert_path).map_err(io(&cert_path))?;
    let bad_cert = || PkiError::Io {
        path: cert_path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a PEM certificate"),
    };
    let (_, parsed) = x509_parser::pem::parse_x509_pem(&pem).map_err(|_| bad_cert())?;
    let cert = parsed.parse_x509().map_err(|_| bad_cert())?;
    let serial = hex::encode(cert.raw_serial());
    let list_path = dir.join(REVOKED_FILE);
    let mut serials: Vec<String> = match fs::read_to_string(&list_path) {
        Ok(text) => text
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(&list_path)(e)),
    };
    if !serials.contains(&serial) {
        serials.push(serial.clone());
    }
    let bytes: Vec<Vec<u8>> = serials.iter().filter_map(|s| hex::decode(s).ok()).collect();
    let crl = Ca::load(dir)?.crl(&bytes)?;
    write_file(&dir.join(CRL_FILE), &crl, false)?;
    write_file(&list_path, &(serials.join("\n") + "\n"), false)?;
    Ok(serial)
}

fn write_client(dir: &Path, name: &str, issued: &Issued) -> Result<(), PkiError> {
    write_file(&dir.join(format!("{name}-key.pem")), &issued.key_pem, true)?;
    write_file(&dir.join(format!("{name}.pem")), &issued.cert_pem, false)
}
