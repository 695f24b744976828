//! The reveal proxy's side toward an upstream (an acquirer or PSP): one
//! HTTPS/1.1 request per proxied call over rustls (the route's CA, its
//! client certificate when configured, the upstream's host as SNI), bounded
//! by the route's timeout and answer size, with failures sorted into what
//! the caller is told: the upstream unreachable, its certificate refused,
//! or too slow. Nothing here logs a body.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{HeaderMap, Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

use crate::config::ProxyRoute;

/// Why an upstream call failed (what the caller is told).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// No connection, a broken exchange, or an answer over the size limit.
    Failed(&'static str),
    /// The upstream's certificate (or the TLS handshake) was refused.
    Tls,
    /// No answer within the route's timeout.
    Timeout,
}

/// A route's upstream: where, and with which TLS settings.
pub struct Upstream {
    uri: Uri,
    authority: String,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    max_response_bytes: usize,
}

/// One configured proxy route: its settings and its upstream.
pub struct ProxyUpstream {
    /// The route as configured.
    pub config: ProxyRoute,
    /// Its upstream.
    pub upstream: Upstream,
}

/// Every route of `[proxy.routes]`, built at start.
pub fn build_routes(
    config: &crate::config::ProxyConfig,
) -> Result<std::collections::HashMap<String, ProxyUpstream>, String> {
    config
        .routes
        .iter()
        .map(|(name, route)| {
            Ok((
                name.clone(),
                ProxyUpstream {
                    config: route.clone(),
                    upstream: Upstream::new(name, route)?,
                },
            ))
        })
        .collect()
}

/// What the upstream answered.
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its `content-type`, if any.
    pub content_type: Option<hyper::header::HeaderValue>,
    /// Its body.
    pub body: Bytes,
}

impl Upstream {
    /// Builds the upstream of `route` (files read now: a bad CA or key
    /// fails the start, not a request).
    pub fn new(name: &str, route: &ProxyRoute) -> Result<Upstream, String> {
        let field = |f: &str| format!("proxy.routes.{name}.{f}");
        let uri: Uri = route
            .upstream
            .parse()
            .map_err(|_| format!("{}: not a URL", field("upstream")))?;
        let host = uri
            .host()
            .ok_or_else(|| format!("{}: no host", field("upstream")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let server_name = ServerName::try_from(host.clone())
            .map_err(|e| format!("{}: {e}", field("upstream")))?;
        let mut roots = RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(&route.ca_file)
            .map_err(|e| format!("{}: {e}", field("ca_file")))?;
        for ca in cas {
            roots
                .add(ca.map_err(|e| format!("{}: {e}", field("ca_file")))?)
                .map_err(|e| format!("{}: {e}", field("ca_file")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let mut tls = match (&route.client_cert, &route.client_key) {
            (Some(cert), Some(key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| format!("{}: {e}", field("client_cert")))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("{}: {e}", field("client_cert")))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("{}: {e}", field("client_key")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("{}: {e}", field("client_cert")))?
            }
            _ => builder.with_no_client_auth(),
        };
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Upstream {
            authority: format!("{host}:{port}"),
            server_name,
            tls: Arc::new(tls),
            timeout: Duration::from_millis(route.timeout_ms.get()),
            max_response_bytes: route.max_response_bytes.get(),
            uri,
        })
    }

    /// The upstream's host and port, for the audit trail.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// POSTs `body` (which holds PANs; wiped when dropped) with `headers`,
    /// within the route's timeout.
    pub async fn post(
        &self,
        headers: HeaderMap,
        body: Zeroizing<Vec<u8>>,
    ) -> Result<Answer, UpstreamError> {
        tokio::time::timeout(self.timeout, self.exchange(headers, body))
            .await
            .unwrap_or(Err(UpstreamError::Timeout))
    }

    async fn exchange(
        &self,
        headers: HeaderMap,
        body: Zeroizing<Vec<u8>>,
    ) -> Result<Answer, UpstreamError> {
        let tcp = TcpStream::connect(&self.authority)
            .await
            .map_err(|_| UpstreamError::Failed("the upstream could not be reached"))?;
        let _ = tcp.set_nodelay(true);
        let tls = TlsConnector::from(Arc::clone(&self.tls))
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|_| UpstreamError::Tls)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|_| UpstreamError::Failed("the upstream's HTTP exchange failed"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let path = self
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(hyper::header::HOST, self.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        // The bytes move into the request; the binary's allocator wipes
        // them when hyper frees the buffer.
        let request = request
            .body(Full::new(Bytes::from(body.to_vec())))
            .map_err(|_| UpstreamError::Failed("the request to the upstream could not be built"))?;
        drop(body);
        let response = sender
            .send_request(request)
            .await
            .map_err(|_| UpstreamError::Failed("the upstream's HTTP exchange failed"))?;
        let status = response.status();
        let content_type = response.headers().get(hyper::header::CONTENT_TYPE).cloned();
        let body = Limited::new(response.into_body(), self.max_response_bytes)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    UpstreamError::Failed("the upstream's answer is larger than the route allows")
                } else {
                    UpstreamError::Failed("the upstream's answer was cut off")
                }
            })?
            .to_bytes();
        Ok(Answer {
            status,
            content_type,
            body,
        })
    }
}
