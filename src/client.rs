//! A small mTLS HTTP/1.1 client with keep-alive, used by the integration
//! tests and by `cardvault load`: rustls with the caller's client
//! certificate, hyper's connection-level client, one request at a time per
//! connection.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A PEM file could not be read.
    #[error("{path}: {problem}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// TLS setup failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// Connecting or the handshake failed.
    #[error("connection to {addr} failed")]
    Connect {
        /// Target.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The HTTP exchange failed (connection closed, refused certificate…).
    #[error("HTTP: {0}")]
    Http(String),
}

/// Why [`resolve_https`] found no address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Not `https://HOST:PORT` (a usage mistake).
    #[error("must look like https://HOST:PORT")]
    NotHttps,
    /// The host could not be resolved.
    #[error("cannot resolve {host}: {reason}")]
    Lookup {
        /// `HOST:PORT`.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// It resolved to no address.
    #[error("{0} resolves to no address")]
    NoAddress(String),
}

/// The socket address of a vault named `https://HOST:PORT` (a trailing
/// `/` allowed): the first address `HOST` resolves to.
pub async fn resolve_https(url: &str) -> Result<SocketAddr, ResolveError> {
    let hostport = url
        .strip_prefix("https://")
        .map(|rest| rest.trim_end_matches('/'))
        .ok_or(ResolveError::NotHttps)?;
    tokio::net::lookup_host(hostport)
        .await
        .map_err(|e| ResolveError::Lookup {
            host: hostport.to_owned(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| ResolveError::NoAddress(hostport.to_owned()))
}

/// TLS settings of a client: trusted CA, optional client certificate.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
}

fn read_pem_error(path: &Path, e: impl std::fmt::Display) -> ClientError {
    ClientError::File {
        path: path.display().to_string(),
        problem: e.to_string(),
    }
}

impl ClientTls {
    /// Trusts `ca` and presents `cert`/`key` when given. `tls12_only` forces
    /// TLS 1.2 (to test that the server refuses it).
    pub fn from_files(
        ca: &Path,
        identity: Option<(&Path, &Path)>,
        tls12_only: bool,
    ) -> Result<ClientTls, ClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| read_pem_error(ca, e))? {
            roots
                .add(cert.map_err(|e| read_pem_error(ca, e))?)
                .map_err(|e| read_pem_error(ca, e))?;
        }
        let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((cert, key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| read_pem_error(cert, e))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| read_pem_error(cert, e))?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| read_pem_error(key, e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| ClientError::Tls(e.to_string()))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ClientTls {
            config: Arc::new(config),
            server_name: ServerName::try_from("localhost")
                .map_err(|e| ClientError::Tls(e.to_string()))?,
        })
    }

    /// Completes a TLS handshake with `addr` and hands back the raw stream
    /// (tests that play a misbehaving peer speak HTTP on it by hand).
    pub async fn connect_raw(
        &self,
        addr: SocketAddr,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ClientError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        TlsConnector::from(Arc::clone(&self.config))
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|source| ClientError::Connect { addr, source })
    }

    /// Opens a keep-alive connection to `addr`.
    pub async fn connect(&self, addr: SocketAddr) -> Result<Connection, ClientError> {
        let tls = self.connect_raw(addr).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Connection { sender })
    }
}

/// A response: status, body and the request id the server assigned.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Body bytes.
    pub body: Vec<u8>,
    /// `x-request-id` header, if any.
    pub request_id: Option<String>,
    /// `Retry-After` header in seconds, if any (429 and 503).
    pub retry_after: Option<u64>,
}

impl Reply {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One open connection.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    /// Sends a request with an optional body and content type.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Reply, ClientError> {
        self.send_with(method, path, &[], body).await
    }

    /// [`Connection::send`] with extra request headers (a browser's
    /// `Origin` and `Sec-Fetch-Site`, for the hosted fields' submit).
    pub async fn send_with(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Reply, ClientError> {
        self.sender
            .ready()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "localhost");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = match body {
            Some((content_type, bytes)) => {
                request = request.header(hyper::header::CONTENT_TYPE, content_type);
                Full::new(Bytes::from(bytes))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request
            .body(body)
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = response.status();
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let retry_after = response
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes()
            .to_vec();
        Ok(Reply {
            status,
            body,
            request_id,
            retry_after,
        })
    }

    /// POSTs `value` as JSON.
    pub async fn post_json(
        &mut self,
        path: &str,
        value: &serde_json::Value,
    ) -> Result<Reply, ClientError> {
        let body = serde_json::to_vec(value).map_err(|e| ClientError::Http(e.to_string()))?;
        self.send(Method::POST, path, Some(("application/json", body)))
            .await
    }

    /// GETs `path`.
    pub async fn get(&mut self, path: &str) -> Result<Reply, ClientError> {
        self.send(Method::GET, path, None).await
    }
}
