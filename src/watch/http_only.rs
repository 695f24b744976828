//! One check without a browser (`watch check --http-only`, for hosts that
//! have none): the page fetched over plain HTTP(S) — redirects followed,
//! at most ten — its security headers, and what its markup asks for
//! ([`crate::peer::markup`]): each `<script src>` fetched and hashed, each
//! inline script hashed, each frame's origin, each form's action.
//!
//! What it cannot see, and says so: scripts that other scripts insert at
//! run time (how skimmers arrive), frames and forms that scripts build,
//! whether the vault's card frame is on the page, and what a browser would
//! be served that a plain client is not. [`compare_static`] compares only
//! what it can see.
//!
//! Bounded like a browser check: the load budget for the whole check, the
//! byte budget for the page and its scripts together, the script cap.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject as _};

use super::browser::{Budget, WatchError};
use super::inventory::{ExternalScript, InlineScript, Inventory, sri};

/// What a plain client cannot see, as the check reports it.
pub const BLIND_SPOTS: &str = "http-only: scripts inserted at run time by other scripts (how skimmers arrive), frames and forms built by scripts, whether the vault's card frame is on the page, and content served only to browsers are NOT seen; only the markup's scripts, inline scripts, frames and forms and the page's security headers are checked";

/// Most redirects followed per fetch.
const MAX_REDIRECTS: usize = 10;

/// A fetch's answer.
struct Fetched {
    url: url::Url,
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// The client of a check: the trust anchors for https pages and what is
/// left of the byte budget.
struct Fetcher {
    tls: Arc<rustls::ClientConfig>,
    left: u64,
    max_bytes: u64,
}

impl Fetcher {
    fn new(roots_file: &Path, max_bytes: u64) -> Result<Fetcher, WatchError> {
        let unreadable =
            |e: String| WatchError::Browser(format!("trust anchors {}: {e}", roots_file.display()));
        let mut roots = rustls::RootCertStore::empty();
        for cert in
            CertificateDer::pem_file_iter(roots_file).map_err(|e| unreadable(e.to_string()))?
        {
            // A bundle may hold a certificate rustls does not take; the
            // others still count.
            let _ = roots.add(cert.map_err(|e| unreadable(e.to_string()))?);
        }
        if roots.is_empty() {
            return Err(unreadable("no certificate".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| WatchError::Browser(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Fetcher {
            tls: Arc::new(config),
            left: max_bytes,
            max_bytes,
        })
    }

    /// GETs `url`, following redirects; the body counts against the budget.
    async fn get(&mut self, url: &url::Url) -> Result<Fetched, WatchError> {
        let mut url = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let fetched = self.once(&url).await?;
            if (300..400).contains(&fetched.status)
                && let Some(location) = fetched.headers.get("location")
            {
                url = url
                    .join(location)
                    .map_err(|_| WatchError::Page(format!("{url}: a redirect to no URL")))?;
                continue;
            }
            return Ok(fetched);
        }
        Err(WatchError::Page(format!(
            "{url}: more than {MAX_REDIRECTS} redirects"
        )))
    }

    async fn once(&mut self, url: &url::Url) -> Result<Fetched, WatchError> {
        let page = |why: String| WatchError::Page(format!("{url}: {why}"));
        let host = url
            .host_str()
            .ok_or_else(|| page("no host".into()))?
            .to_owned();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| page("no port".into()))?;
        let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| page(format!("connecting: {e}")))?;
        let request = hyper::Request::get(url.as_str())
            .header(
                hyper::header::HOST,
                url[url::Position::BeforeHost..url::Position::AfterPort].to_owned(),
            )
            .header(hyper::header::USER_AGENT, "cardvault-watch (http-only)")
            .header(hyper::header::ACCEPT, "*/*")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| page(e.to_string()))?;
        let response = match url.scheme() {
            "http" => send(TokioIo::new(tcp), request).await,
            "https" => {
                let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                    .map_err(|e| page(e.to_string()))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| page(format!("TLS: {e}")))?;
                send(TokioIo::new(tls), request).await
            }
            other => return Err(page(format!("scheme {other} is not fetched"))),
        }
        .map_err(page)?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| page(e.to_string()))?;
            if let Some(data) = frame.data_ref() {
                if data.len() as u64 > self.left {
                    return Err(WatchError::Page(format!(
                        "the page and its scripts are over the budget of {} MiB",
                        self.max_bytes >> 20
                    )));
                }
                self.left -= data.len() as u64;
                bytes.extend_from_slice(data);
            }
        }
        Ok(Fetched {
            url: url.clone(),
            status,
            headers,
            body: bytes,
        })
    }
}

/// One HTTP/1.1 request on `io`.
async fn send<T>(
    io: TokioIo<T>,
    request: hyper::Request<http_body_util::Empty<bytes::Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// Fetches `url` and takes the inventory of what its markup asks for,
/// within `budget`; `roots` are the trust anchors for https.
pub async fn check_page_http_only(
    url: &str,
    budget: &Budget,
    roots: &Path,
) -> Result<Inventory, WatchError> {
    let check = async {
        let url = url::Url::parse(url).map_err(|e| WatchError::Page(format!("{url}: {e}")))?;
        let mut fetcher = Fetcher::new(roots, budget.max_bytes)?;
        let page = fetcher.get(&url).await?;
        if page.status >= 400 {
            return Err(WatchError::Page(format!(
                "the page answered HTTP {}",
                page.status
            )));
        }
        let html = String::from_utf8_lossy(&page.body);
        let markup = crate::peer::markup::scan(&html);
        let base = markup
            .base
            .as_deref()
            .and_then(|b| page.url.join(b).ok())
            .unwrap_or_else(|| page.url.clone());
        let resolve = |link: &str| base.join(link).ok();
        let external: Vec<_> = markup
            .scripts
            .iter()
            .filter(|s| s.src.is_some() && s.executable())
            .collect();
        if external.len() > budget.max_scripts {
            return Err(WatchError::Page(format!(
                "the page loads {} scripts, over the budget of {}",
                external.len(),
                budget.max_scripts
            )));
        }
        let mut scripts = Vec::new();
        for tag in external {
            let Some(src) = tag.src.as_deref().and_then(resolve) else {
                continue;
            };
            if !matches!(src.scheme(), "http" | "https") {
                continue;
            }
            let fetched = fetcher.get(&src).await?;
            if fetched.status >= 400 {
                continue;
            }
            scripts.push(ExternalScript {
                url: fetched.url.to_string(),
                sha384: sri(&fetched.body),
                integrity: tag.integrity.clone().filter(|i| !i.is_empty()),
                inserted_by: "html".into(),
            });
        }
        let inline_scripts = markup
            .scripts
            .iter()
            .filter(|s| s.src.is_none() && s.executable())
            .map(|s| InlineScript {
                sha384: sri(&s.text.as_bytes()[..s.text.len().min(1 << 20)]),
                starts_with: s.text.trim().chars().take(40).collect(),
            })
            .collect();
        let frames = markup
            .frames
            .iter()
            .filter_map(|src| resolve(src))
            .map(String::from);
        let forms = markup
            .forms
            .iter()
            .filter_map(|action| match action.as_deref() {
                None | Some("") => Some(page.url.clone()),
                Some(a) => resolve(a),
            })
            .map(String::from);
        Ok(Inventory::assemble(
            page.url.to_string(),
            scripts,
            inline_scripts,
            frames,
            forms,
            &page.headers,
        ))
    };
    tokio::time::timeout(budget.load + Duration::from_secs(5), check)
        .await
        .unwrap_or_else(|_| {
            Err(WatchError::Page(format!(
                "did not finish loading within {} s",
                budget.load.as_secs()
            )))
        })
}

/// `found` (an http-only check) against `baseline` (taken in a browser),
/// for what a plain client can see: the scripts the markup loads (added,
/// removed, changed), inline scripts, frames and forms that are new (one
/// no longer in the markup may be built by a script), and the headers.
/// The card frame's presence is not judged.
pub fn compare_static(
    baseline: &super::baseline::Baseline,
    found: &Inventory,
) -> Vec<super::diff::Difference> {
    let mut seen = baseline.clone();
    seen.collect_origin = None;
    let approved = &mut seen.inventory;
    approved.scripts.retain(|s| s.inserted_by == "html");
    approved
        .inline_scripts
        .retain(|s| found.inline_scripts.iter().any(|f| f.sha384 == s.sha384));
    approved
        .frames
        .retain(|s| found.frames.iter().any(|f| f.origin == s.origin));
    approved
        .forms
        .retain(|s| found.forms.iter().any(|f| f.action == s.action));
    super::diff::compare(&seen, found)
}
