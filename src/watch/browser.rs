//! One check of a payment page in a real browser: Debian's headless
//! Chromium, driven by chromedriver over W3C WebDriver (`fantoccini`), with
//! a fresh profile in a scratch directory each time and the sandbox on
//! (off only when running as root, which Chromium refuses otherwise). Only
//! a browser sees what other scripts insert at run time, which is how
//! skimmers arrive.
//!
//! WebDriver itself cannot say who loaded a script or what bytes arrived,
//! so the check asks Chromium's DevTools, through chromedriver: its
//! performance log (every request, its initiator — the page's HTML or a
//! script's URL — its frame, the page's own response headers, each
//! frame's navigation) and `Network.getResponseBody` (each script's bytes
//! as received, not as fetched again). The DOM gives the inline scripts,
//! `integrity` attributes and form actions.
//!
//! Every check is bounded: a load budget (time), a settle time for late
//! insertions, a byte budget for the page and its resources, and caps on
//! frames and scripts; beyond any of them the check ends with
//! [`WatchError::Page`] and the reason.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

use super::inventory::{ExternalScript, InlineScript, Inventory, sri};
use crate::scratch::ScratchDir;

/// Bounds of one check.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Longest the page may take to load.
    pub load: Duration,
    /// How long after load the check waits for late insertions.
    pub settle: Duration,
    /// Largest the page and all its resources may be together.
    pub max_bytes: u64,
    /// Most frames the page may open.
    pub max_frames: usize,
    /// Most external scripts the page may load.
    pub max_scripts: usize,
}

impl Default for Budget {
    /// 30 s to load, 1 s to settle, 20 MiB, 50 frames, 200 scripts.
    fn default() -> Budget {
        Budget {
            load: Duration::from_secs(30),
            settle: Duration::from_secs(1),
            max_bytes: 20 << 20,
            max_frames: 50,
            max_scripts: 200,
        }
    }
}

/// Which browser, and its bounds.
#[derive(Debug, Clone)]
pub struct BrowserSettings {
    /// The chromedriver binary.
    pub chromedriver: PathBuf,
    /// The Chromium binary (found in the usual places when not given).
    pub chromium: Option<PathBuf>,
    /// The bounds of a check.
    pub budget: Budget,
    /// An already running chromedriver (`http://127.0.0.1:PORT`), run as
    /// a user of its own, instead of one started for each check as this
    /// process's user: the browser then cannot read what this process
    /// can (the watcher's key). Each session still gets a fresh profile,
    /// which chromedriver makes and removes.
    pub webdriver: Option<String>,
}

impl Default for BrowserSettings {
    fn default() -> BrowserSettings {
        BrowserSettings {
            chromedriver: PathBuf::from("chromedriver"),
            chromium: None,
            budget: Budget::default(),
            webdriver: None,
        }
    }
}

/// Why a page could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// No browser to check with (chromedriver or Chromium missing, or it
    /// would not start).
    #[error("no browser: {0}")]
    Browser(String),
    /// The page did not load, or broke a bound of the check.
    #[error("the page cannot be checked: {0}")]
    Page(String),
}

/// chromedriver, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port (bound, then released).
fn free_port() -> Result<u16, WatchError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| WatchError::Browser(format!("no free port: {e}")))
}

fn start_driver(
    settings: &BrowserSettings,
    home: &std::path::Path,
) -> Result<(Driver, u16), WatchError> {
    let port = free_port()?;
    let child = Command::new(&settings.chromedriver)
        .arg(format!("--port={port}"))
        .env("HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            WatchError::Browser(format!(
                "{}: {e} (Debian: apt install chromium chromium-driver)",
                settings.chromedriver.display()
            ))
        })?;
    let driver = Driver(child);
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(WatchError::Browser(
                "chromedriver did not start within 15 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((driver, port))
}

fn chromium_binary(settings: &BrowserSettings) -> Option<PathBuf> {
    settings.chromium.clone().or_else(|| {
        [
            "/usr/lib/chromium/chromium",
            "/usr/bin/chromium",
            "/usr/bin/chromium-browser",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    })
}

/// A raw chromedriver command: a DevTools call or the performance log.
#[derive(Debug)]
enum Raw {
    Cdp(&'static str, Value),
    PerformanceLog,
}

impl WebDriverCompatibleCommand for Raw {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let session = session.unwrap_or("");
        match self {
            Raw::Cdp(..) => base.join(&format!("session/{session}/goog/cdp/execute")),
            Raw::PerformanceLog => base.join(&format!("session/{session}/se/log")),
        }
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        let body = match self {
            Raw::Cdp(cmd, params) => json!({"cmd": cmd, "params": params}),
            Raw::PerformanceLog => json!({"type": "performance"}),
        };
        (axum::http::Method::POST, Some(body.to_string()))
    }
}

/// A browser session: Chromium, and the chromedriver and profile started
/// for it (none when the chromedriver is the configured one's).
struct Session {
    client: Client,
    _driver: Option<(Driver, ScratchDir)>,
}

impl Session {
    /// A fresh headless Chromium.
    async fn start(settings: &BrowserSettings) -> Result<Session, WatchError> {
        let session = if let Some(address) = &settings.webdriver {
            Session {
                client: connect(settings, None, address).await?,
                _driver: None,
            }
        } else {
            let profile = ScratchDir::new("cardvault-watch")
                .map_err(|e| WatchError::Browser(format!("a scratch profile: {e}")))?;
            let (driver, port) = start_driver(settings, profile.path())?;
            let address = format!("http://127.0.0.1:{port}");
            Session {
                client: connect(settings, Some(profile.path()), &address).await?,
                _driver: Some((driver, profile)),
            }
        };
        Ok(session)
    }

    /// Ends the session (Chromium goes with it), then its driver.
    async fn end(self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.close()).await;
    }
}

/// Loads `url` in a fresh headless Chromium and takes its inventory.
pub async fn check_page(url: &str, settings: &BrowserSettings) -> Result<Inventory, WatchError> {
    let session = Session::start(settings).await?;
    let found = inspect(&session.client, url, &settings.budget)
        .await
        .map_err(crashed);
    session.end().await;
    found
}

/// A check cut short by the browser dying under it says so.
fn crashed(e: WatchError) -> WatchError {
    const GONE: [&str; 6] = [
        "session deleted",
        "not connected to DevTools",
        "chrome not reachable",
        "disconnected",
        "crashed",
        "target window already closed",
    ];
    match e {
        WatchError::Page(why) if GONE.iter().any(|g| why.contains(g)) => WatchError::Page(format!(
            "the browser crashed or was killed during the check ({})",
            why.chars().take(200).collect::<String>()
        )),
        other => other,
    }
}

/// Whether the browser can read the file at `path` (it must not, when
/// `path` is the watcher's key): a fresh session (downloads refused) loads it
/// as a `file:` URL. Only Chromium's own error page ("access denied", "not
/// found") counts as unreadable; a page shown or a download refused means
/// the browser opened the file. Its text is never fetched.
pub async fn browser_reads(
    path: &std::path::Path,
    settings: &BrowserSettings,
) -> Result<bool, WatchError> {
    let path = path
        .canonicalize()
        .map_err(|e| WatchError::Browser(format!("{}: {e}", path.display())))?;
    let url = url::Url::from_file_path(&path)
        .map_err(|()| WatchError::Browser(format!("{}: not a file path", path.display())))?;
    let session = Session::start(settings).await?;
    let client = &session.client;
    let read = async {
        // A refused download may end the navigation with an error: the
        // page's address says what happened either way.
        let _ = client.goto(url.as_str()).await;
        client
            .execute("return location.href;", Vec::new())
            .await
            .map(|href| href != "chrome-error://chromewebdata/")
            .map_err(|e| WatchError::Browser(format!("opening {url}: {e}")))
    };
    let read = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap_or_else(|_| {
            Err(WatchError::Browser(
                "the browser did not answer within 30 s".into(),
            ))
        });
    session.end().await;
    read
}

/// A WebDriver session at `address`, in a fresh profile: `profile`'s, or
/// (a configured chromedriver) one chromedriver makes and removes.
async fn connect(
    settings: &BrowserSettings,
    profile: Option<&std::path::Path>,
    address: &str,
) -> Result<Client, WatchError> {
    let binary = chromium_binary(settings)
        .ok_or_else(|| WatchError::Browser("Chromium not found (apt install chromium)".into()))?;
    let mut args = vec![
        "--headless=new".to_owned(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--no-first-run".into(),
        "--no-default-browser-check".into(),
        "--disable-extensions".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-features=Translate,OptimizationHints,MediaRouter".into(),
        "--window-size=1280,900".into(),
    ];
    if let Some(profile) = profile {
        args.push(format!(
            "--user-data-dir={}",
            profile.join("chromium").display()
        ));
        // Chromium refuses to run as root with its sandbox; a watcher run
        // as its own user (deploy/) keeps it. A configured chromedriver's
        // browser always keeps it: one run as root does not start.
        if rustix::process::geteuid().is_root() {
            args.push("--no-sandbox".into());
        }
    }
    let budget = &settings.budget;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        // Downloads refused (Chromium's DownloadRestrictions = 3): a hostile
        // page fills no disk, and a file the browser could open is not
        // copied anywhere.
        json!({"binary": binary, "args": args, "prefs": {"download_restrictions": 3}}),
    );
    caps.insert("goog:loggingPrefs".into(), json!({"performance": "ALL"}));
    caps.insert(
        "timeouts".into(),
        json!({"pageLoad": budget.load.as_millis() as u64, "script": 10_000, "implicit": 0}),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let mut builder = ClientBuilder::new(connector);
    builder.capabilities(caps);
    tokio::time::timeout(Duration::from_secs(30), builder.connect(address))
        .await
        .map_err(|_| WatchError::Browser("Chromium did not start within 30 s".into()))?
        .map_err(|e| WatchError::Browser(format!("a WebDriver session: {e}")))
}

/// What the performance log says about one request.
#[derive(Default)]
struct Request {
    url: String,
    /// The document load it belongs to.
    loader: String,
    kind: String,
    frame: String,
    initiator: String,
    status: u16,
    headers: BTreeMap<String, String>,
    bytes: u64,
    failed: Option<String>,
}

async fn inspect(client: &Client, url: &str, budget: &Budget) -> Result<Inventory, WatchError> {
    let page = |why: String| WatchError::Page(why);
    match tokio::time::timeout(budget.load + Duration::from_secs(5), client.goto(url)).await {
        Err(_) => {
            return Err(page(format!(
                "did not finish loading within {} s",
                budget.load.as_secs()
            )));
        }
        Ok(Err(e)) => {
            let text = e.to_string();
            if text.contains("timeout") {
                return Err(page(format!(
                    "did not finish loading within {} s",
                    budget.load.as_secs()
                )));
            }
            return Err(page(format!("loading failed: {text}")));
        }
        Ok(Ok(())) => {}
    }
    tokio::time::sleep(budget.settle).await;
    let log = client
        .issue_cmd(Raw::PerformanceLog)
        .await
        .map_err(|e| page(format!("reading the browser's log: {e}")))?;
    let Log {
        requests,
        frames,
        main: main_frame,
    } = read_log(&log)?;
    // Only what the page's own document load brought in.
    let requests: Vec<(String, Request)> = requests
        .into_iter()
        .filter(|(_, r)| r.loader == main_frame.loader || r.frame != main_frame.id)
        .filter(|(_, r)| r.url.starts_with("http://") || r.url.starts_with("https://"))
        .collect();
    let main_frame = main_frame.id;
    let main = requests
        .iter()
        .map(|(_, r)| r)
        .rfind(|r| r.kind == "Document" && r.frame == main_frame)
        .ok_or_else(|| page("the page's own document was never requested".into()))?;
    if let Some(error) = &main.failed {
        return Err(page(format!("the page did not load: {error}")));
    }
    if main.status >= 400 {
        return Err(page(format!("the page answered HTTP {}", main.status)));
    }
    let total: u64 = requests.iter().map(|(_, r)| r.bytes).sum();
    if total > budget.max_bytes {
        return Err(page(format!(
            "the page and its resources are {} MiB, over the budget of {} MiB",
            total >> 20,
            budget.max_bytes >> 20
        )));
    }
    let child_frames = frame_urls(client).await?;
    let opened = child_frames.len().max(frames);
    if opened > budget.max_frames {
        return Err(page(format!(
            "the page opened {opened} frames, over the budget of {}",
            budget.max_frames
        )));
    }
    let script_requests: Vec<&(String, Request)> = requests
        .iter()
        .filter(|(_, r)| r.kind == "Script" && r.frame == main_frame && r.failed.is_none())
        .collect();
    if script_requests.len() > budget.max_scripts {
        return Err(page(format!(
            "the page loaded {} scripts, over the budget of {}",
            script_requests.len(),
            budget.max_scripts
        )));
    }
    let dom = client
        .execute(DOM_SCRIPT, Vec::new())
        .await
        .map_err(|e| page(format!("reading the page: {e}")))?;
    let integrity: BTreeMap<String, String> = dom["integrity"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|pair| Some((pair[0].as_str()?.to_owned(), pair[1].as_str()?.to_owned())))
        .filter(|(_, i)| !i.is_empty())
        .collect();
    let page_url = main.url.clone();
    let mut scripts = Vec::new();
    for (id, request) in script_requests {
        let body = client
            .issue_cmd(Raw::Cdp(
                "Network.getResponseBody",
                json!({"requestId": id}),
            ))
            .await
            .map_err(|e| page(format!("reading {}: {e}", request.url)))?;
        let bytes = if body["base64Encoded"].as_bool() == Some(true) {
            data_encoding::BASE64
                .decode(body["body"].as_str().unwrap_or("").as_bytes())
                .map_err(|_| page(format!("{}: undecodable body", request.url)))?
        } else {
            body["body"].as_str().unwrap_or("").as_bytes().to_vec()
        };
        scripts.push(ExternalScript {
            url: request.url.clone(),
            sha384: sri(&bytes),
            integrity: integrity.get(&request.url).cloned(),
            inserted_by: match request.initiator.as_str() {
                "" => "html".into(),
                by if by == page_url => "an inline script of the page".into(),
                by => by.to_owned(),
            },
        });
    }
    let inline_scripts = dom["inline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|text| InlineScript {
            sha384: sri(text.as_bytes()),
            starts_with: text.trim().chars().take(40).collect(),
        })
        .collect();
    let forms = dom["forms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned);
    Ok(Inventory::assemble(
        page_url,
        scripts,
        inline_scripts,
        child_frames,
        forms,
        &main.headers,
    ))
}

/// Every frame's URL: the page's own frame tree (frames in its process)
/// and the browser's iframe targets (cross-site frames run in processes of
/// their own, which the page's tree and log do not show).
async fn frame_urls(client: &Client) -> Result<Vec<String>, WatchError> {
    let cdp = |cmd: &'static str| client.issue_cmd(Raw::Cdp(cmd, json!({})));
    let tree = cdp("Page.getFrameTree")
        .await
        .map_err(|e| WatchError::Page(format!("reading the frames: {e}")))?;
    let targets = cdp("Target.getTargets")
        .await
        .map_err(|e| WatchError::Page(format!("reading the frames: {e}")))?;
    let mut urls = Vec::new();
    let mut pending: Vec<&Value> = tree["frameTree"]["childFrames"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    // Bounded: the frame tree walked depth first, at most 10,000 frames.
    while let Some(node) = pending.pop() {
        if urls.len() >= 10_000 {
            break;
        }
        if let Some(url) = node["frame"]["url"].as_str() {
            urls.push(url.to_owned());
        }
        pending.extend(node["childFrames"].as_array().into_iter().flatten());
    }
    urls.extend(
        targets["targetInfos"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["type"] == "iframe")
            .filter_map(|t| t["url"].as_str().map(str::to_owned)),
    );
    Ok(urls)
}

/// Read in the page: each script element's resolved `src` and
/// `integrity`, the text of each executable inline script, each form's
/// resolved action.
const DOM_SCRIPT: &str = r#"
const executable = (s) => !s.type || /^(text\/javascript|application\/javascript|module)$/i.test(s.type);
return {
  integrity: Array.from(document.scripts).filter((s) => s.src).map((s) => [s.src, s.integrity || ""]),
  inline: Array.from(document.scripts).filter((s) => !s.src && executable(s)).map((s) => s.text.slice(0, 1048576)),
  forms: Array.from(document.forms).map((f) => f.action),
};
"#;

/// What the performance log says about the page's load.
struct Log {
    /// Requests (id and facts), in order of their first event.
    requests: Vec<(String, Request)>,
    /// Frames the page's document navigated (in its own process).
    frames: usize,
    /// The main frame.
    main: MainFrame,
}

/// The main frame: its id and the loader of its last document.
struct MainFrame {
    id: String,
    loader: String,
}

/// The page's load, from the performance log.
fn read_log(log: &Value) -> Result<Log, WatchError> {
    let mut requests: BTreeMap<String, Request> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut frames: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut main_frame: Option<MainFrame> = None;
    for entry in log.as_array().into_iter().flatten() {
        let Some(message) = entry["message"]
            .as_str()
            .and_then(|m| serde_json::from_str::<Value>(m).ok())
        else {
            continue;
        };
        let message = &message["message"];
        let params = &message["params"];
        let id = params["requestId"].as_str().unwrap_or("").to_owned();
        match message["method"].as_str().unwrap_or("") {
            "Network.requestWillBeSent" => {
                if !requests.contains_key(&id) {
                    order.push(id.clone());
                }
                let request = requests.entry(id).or_default();
                // A redirect comes back with the same id: the last URL wins.
                request.url = params["request"]["url"].as_str().unwrap_or("").to_owned();
                request.kind = params["type"].as_str().unwrap_or("").to_owned();
                request.loader = params["loaderId"].as_str().unwrap_or("").to_owned();
                request.frame = params["frameId"].as_str().unwrap_or("").to_owned();
                let initiator = &params["initiator"];
                request.initiator = match initiator["type"].as_str() {
                    Some("script") => initiator["stack"]["callFrames"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|f| f["url"].as_str())
                        .find(|u| !u.is_empty())
                        .or_else(|| initiator["url"].as_str())
                        .unwrap_or("a script")
                        .to_owned(),
                    _ => String::new(),
                };
            }
            "Network.responseReceived" => {
                let request = requests.entry(id).or_default();
                let response = &params["response"];
                request.status = response["status"].as_u64().unwrap_or(0) as u16;
                request.headers = response["headers"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), v.as_str()?.to_owned())))
                    .collect();
            }
            "Network.loadingFinished" => {
                if let Some(request) = requests.get_mut(&id) {
                    request.bytes = params["encodedDataLength"].as_f64().unwrap_or(0.0) as u64;
                }
            }
            "Network.loadingFailed" => {
                if let Some(request) = requests.get_mut(&id) {
                    request.failed = params["errorText"].as_str().map(str::to_owned);
                }
            }
            "Page.frameNavigated" => {
                let frame = &params["frame"];
                let id = frame["id"].as_str().unwrap_or("").to_owned();
                let parent = frame["parentId"].as_str().map(str::to_owned);
                if parent.is_none() {
                    // A new top-level document: what came before it (the
                    // browser's start page) is not the page's.
                    frames.clear();
                    main_frame = Some(MainFrame {
                        id: id.clone(),
                        loader: frame["loaderId"].as_str().unwrap_or("").to_owned(),
                    });
                }
                frames.insert(id, parent);
            }
            _ => {}
        }
    }
    let main_frame =
        main_frame.ok_or_else(|| WatchError::Page("the page never navigated".into()))?;
    let requests = order
        .into_iter()
        .filter_map(|id| requests.remove(&id).map(|r| (id, r)))
        .collect();
    Ok(Log {
        requests,
        frames: frames.len(),
        main: main_frame,
    })
}
