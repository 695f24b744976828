//! `cardvault watch` against a fixture shop served on loopback by the
//! test, checked in Debian's real headless Chromium (through chromedriver):
//! an untouched page checked three times matches (its CSP nonce changes
//! every time), and each of the six ways a payment page is tampered with
//! is reported naming the culprit — a script inserted at run time by an
//! approved one, an approved script's bytes, an inline script, the CSP
//! removed or loosened, the card frame moved to a look-alike origin, a
//! form posting elsewhere. A hostile page (endless load, redirect loop,
//! 100 MB, 300 frames) ends within its budget with exit 2, and so does a
//! check whose browser is killed under it. `watch run` drives a
//! chromedriver run as another user (`nobody`), whose browser cannot read
//! the watcher's key, and refuses to run otherwise.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;

use crate::common;

/// One resource of the shop: content type, body (with `{nonce}` replaced
/// by a fresh nonce per request), and the CSP to send (same).
#[derive(Clone)]
struct Resource {
    content_type: &'static str,
    body: String,
    csp: Option<String>,
}

/// A loopback web server whose resources the test edits while it runs.
#[derive(Default)]
struct Site {
    resources: Mutex<HashMap<String, Resource>>,
    served: Mutex<u64>,
    /// Requests for `/endless` received (a browser is mid-load).
    endless: std::sync::atomic::AtomicU64,
}

impl Site {
    fn set(&self, path: &str, content_type: &'static str, body: &str) {
        self.resources.lock().unwrap().insert(
            path.to_owned(),
            Resource {
                content_type,
                body: body.to_owned(),
                csp: None,
            },
        );
    }

    fn set_csp(&self, path: &str, csp: Option<&str>) {
        if let Some(r) = self.resources.lock().unwrap().get_mut(path) {
            r.csp = csp.map(str::to_owned);
        }
    }
}

async fn handle(
    axum::extract::State(site): axum::extract::State<Arc<Site>>,
    uri: axum::http::Uri,
) -> axum::response::Response {
    match uri.path() {
        // Hostile pages.
        "/endless" => {
            site.endless
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(120)).await;
            return StatusCode::NO_CONTENT.into_response();
        }
        "/loop" => {
            return (StatusCode::FOUND, [("location", "/loop")]).into_response();
        }
        "/download" => {
            return (
                [
                    ("content-type", "application/octet-stream"),
                    ("content-disposition", "attachment; filename=evil.bin"),
                ],
                vec![b'x'; 4096],
            )
                .into_response();
        }
        "/frames" => {
            let frames = "<iframe src=\"about:blank\"></iframe>".repeat(300);
            return (
                [("content-type", "text/html")],
                format!("<!doctype html><title>frames</title>{frames}"),
            )
                .into_response();
        }
        "/huge" => {
            let chunk = bytes::Bytes::from(vec![b' '; 1 << 20]);
            let stream = futures_util::stream::iter(
                (0..100).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
            );
            return (
                [("content-type", "text/html")],
                axum::body::Body::from_stream(stream),
            )
                .into_response();
        }
        _ => {}
    }
    let found = site.resources.lock().unwrap().get(uri.path()).cloned();
    *site.served.lock().unwrap() += 1;
    let Some(resource) = found else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut nonce = [0u8; 12];
    for (i, b) in nonce.iter_mut().enumerate() {
        *b = (std::process::id() as u8)
            .wrapping_add(i as u8)
            .wrapping_add(*site.served.lock().unwrap() as u8);
    }
    let nonce = hex::encode(nonce);
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static(resource.content_type),
    );
    if let Some(csp) = &resource.csp {
        headers.insert(
            "content-security-policy",
            HeaderValue::from_str(&csp.replace("{nonce}", &nonce)).unwrap(),
        );
        headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    }
    (headers, resource.body.replace("{nonce}", &nonce)).into_response()
}

async fn start_site() -> (Arc<Site>, SocketAddr) {
    let site = Arc::new(Site::default());
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(Arc::clone(&site));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (site, addr)
}

const APP_JS: &str = "window.shop = { ready: true };\n";
const CSP: &str = "default-src 'self'; script-src 'self' 'nonce-{nonce}'; frame-src http://localhost:*; form-action 'self'";

fn checkout(vault: &str, inline: &str, form_action: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Checkout</title>
<script src="/app.js"></script>
<script nonce="{{nonce}}">{inline}</script>
</head><body><h1>Checkout</h1>
<iframe src="{vault}/frame" title="card"></iframe>
<form action="{form_action}" method="post"><button>Pay</button></form>
</body></html>"#
    )
}

/// A shop serving the checkout page (no card frame of a live vault) with
/// its CSP, and `app.js`; its origin.
async fn plain_shop() -> (Arc<Site>, String) {
    let (shop, addr) = start_site().await;
    let origin = format!("http://127.0.0.1:{}", addr.port());
    shop.set(
        "/checkout",
        "text/html",
        &checkout(
            "http://localhost:9",
            "window.handle = 1;",
            &format!("{origin}/pay"),
        ),
    );
    shop.set_csp("/checkout", Some(CSP));
    shop.set("/app.js", "text/javascript", APP_JS);
    (shop, origin)
}

/// Serves `html` as the checkout page, with the approved CSP.
fn serve_page(shop: &Arc<Site>, html: &str) -> Box<dyn Fn()> {
    let (shop, html) = (Arc::clone(shop), html.to_owned());
    Box::new(move || {
        shop.set("/checkout", "text/html", &html);
        shop.set_csp("/checkout", Some(CSP));
    })
}

/// Puts the checkout page back as it was (with its CSP).
fn put_back(shop: &Arc<Site>, original: &str) -> Box<dyn Fn()> {
    serve_page(shop, original)
}

/// Puts the approved `app.js` back.
fn put_back_app(shop: &Arc<Site>) -> Box<dyn Fn()> {
    let shop = Arc::clone(shop);
    Box::new(move || shop.set("/app.js", "text/javascript", APP_JS))
}

/// `cardvault watch baseline PAGE --out FILE EXTRA…`, succeeding.
fn take_baseline(page: &str, file: &Path, extra: &[&str]) {
    let mut args = vec![
        "baseline",
        page,
        "--out",
        file.to_str().unwrap(),
        "--settle-ms",
        "300",
    ];
    args.extend_from_slice(extra);
    let (code, out, err, _) = watch(&args);
    assert_eq!(code, Some(0), "{out} {err}");
}

/// Writes `why` as every script's justification in the baseline `file`.
fn justify(file: &Path, why: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    std::fs::write(
        file,
        text.replace(
            "justification = \"\"",
            &format!("justification = \"{why}\""),
        ),
    )
    .unwrap();
}

/// `cardvault watch ARGS`: (exit code, stdout, stderr), and how long it took.
fn watch(args: &[&str]) -> (Option<i32>, String, String, Duration) {
    let started = Instant::now();
    let (code, out, err) = common::outcome(common::cardvault().arg("watch").args(args));
    (code, out, err, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tampering_of_the_payment_page_is_named_and_an_untouched_page_is_not() {
    let (shop, shop_addr) = start_site().await;
    let (vault, vault_addr) = start_site().await;
    let (lookalike, lookalike_addr) = start_site().await;
    // The vault's card frame and a look-alike on another origin (frames
    // allowed from any localhost port by the CSP: only the watch tells).
    let vault_origin = format!("http://localhost:{}", vault_addr.port());
    let lookalike_origin = format!("http://localhost:{}", lookalike_addr.port());
    vault.set("/frame", "text/html", "<p>card fields</p>");
    lookalike.set("/frame", "text/html", "<p>card fields</p>");
    let shop_origin = format!("http://127.0.0.1:{}", shop_addr.port());
    let page = format!("{shop_origin}/checkout");
    let inline = "window.handle = { mounted: true };";
    let pay = format!("{shop_origin}/pay");
    let original = checkout(&vault_origin, inline, &pay);
    shop.set("/checkout", "text/html", &original);
    shop.set_csp("/checkout", Some(CSP));
    shop.set("/app.js", "text/javascript", APP_JS);

    let tmp = tempfile::tempdir().unwrap();
    let baseline = tmp.path().join("checkout.toml");
    let b = baseline.to_str().unwrap();
    take_baseline(&page, &baseline, &["--collect-origin", &vault_origin]);
    // Unjustified, it is refused naming the line.
    let (code, _, err, _) = watch(&["check", "--baseline", b]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("has no justification") && err.contains("line "),
        "{err}"
    );
    let text = std::fs::read_to_string(&baseline).unwrap();
    assert!(
        text.contains("/app.js") && text.contains("content-security-policy"),
        "{text}"
    );
    justify(&baseline, "the shop's checkout code, reviewed in PR 12");
    let check = || watch(&["check", "--baseline", b, "--settle-ms", "300", "--json"]);

    // Without a browser, against the browser's baseline: what the markup
    // asks for, hashed the same way; it says what it cannot see.
    let http_check = || watch(&["check", "--baseline", b, "--http-only", "--json"]);

    // Untouched, three times (a fresh CSP nonce each time): no change.
    for round in 0..3 {
        let (code, out, err, _) = check();
        assert_eq!(code, Some(0), "round {round}: {out} {err}");
        let result: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(result["matches"], true);
    }
    let (code, out, err, _) = http_check();
    assert_eq!(code, Some(0), "http-only, untouched: {out} {err}");
    assert!(
        err.contains("scripts inserted at run time by other scripts (how skimmers arrive)")
            && err.contains("NOT seen"),
        "{err}"
    );

    // Each tampering, then put back; the differences it must name.
    type Tamper = Box<dyn Fn()>;
    /// Each difference a case must name: kind and subject ("" for any).
    type Expected<'a> = Vec<(&'a str, String)>;
    let cases: Vec<(&str, Tamper, Tamper, Expected)> = vec![
        (
            "a skimmer inserted at run time by app.js",
            Box::new({
                let shop = Arc::clone(&shop);
                move || {
                    shop.set(
                        "/app.js",
                        "text/javascript",
                        &format!(
                            "{APP_JS}var s = document.createElement('script'); s.src = '/skim.js'; document.head.appendChild(s); setTimeout(function () {{ s.remove(); }}, 0);\n"
                        ),
                    );
                    shop.set("/skim.js", "text/javascript", "window.stolen = [];\n");
                }
            }),
            put_back_app(&shop),
            vec![
                ("script_added", format!("{shop_origin}/skim.js")),
                ("script_changed", format!("{shop_origin}/app.js")),
            ],
        ),
        (
            "app.js keeps its URL, its bytes change",
            Box::new({
                let shop = Arc::clone(&shop);
                move || {
                    shop.set(
                        "/app.js",
                        "text/javascript",
                        "window.shop = { ready: 1 };\n",
                    )
                }
            }),
            put_back_app(&shop),
            vec![("script_changed", format!("{shop_origin}/app.js"))],
        ),
        (
            "an inline script changes",
            serve_page(
                &shop,
                &checkout(
                    &vault_origin,
                    "window.handle = { mounted: true }; fetch('/x');",
                    &pay,
                ),
            ),
            put_back(&shop, &original),
            vec![
                ("inline_script_added", String::new()),
                ("inline_script_removed", String::new()),
            ],
        ),
        (
            "the CSP header removed",
            Box::new({
                let shop = Arc::clone(&shop);
                move || shop.set_csp("/checkout", None)
            }),
            put_back(&shop, &original),
            vec![("header_removed", "content-security-policy".into())],
        ),
        (
            "the CSP loosened",
            Box::new({
                let shop = Arc::clone(&shop);
                move || {
                    shop.set_csp(
                        "/checkout",
                        Some(&CSP.replace(
                            "script-src 'self'",
                            "script-src 'self' 'unsafe-inline' https:",
                        )),
                    )
                }
            }),
            put_back(&shop, &original),
            vec![("header_weakened", "content-security-policy".into())],
        ),
        (
            "the card frame moved to a look-alike origin",
            serve_page(&shop, &checkout(&lookalike_origin, inline, &pay)),
            put_back(&shop, &original),
            vec![
                ("frame_added", lookalike_origin.clone()),
                ("collect_frame_missing", vault_origin.clone()),
            ],
        ),
        (
            "a form posting to another origin",
            serve_page(
                &shop,
                &checkout(&vault_origin, inline, "https://collector.example/pay"),
            ),
            put_back(&shop, &original),
            vec![
                ("form_added", "https://collector.example/pay".into()),
                ("form_removed", pay.clone()),
            ],
        ),
    ];
    for (what, tamper, restore, expected) in cases {
        tamper();
        let (code, out, err, _) = check();
        assert_eq!(code, Some(1), "{what}: {out} {err}");
        let result: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let differences = result["differences"].as_array().unwrap();
        for (kind, subject) in &expected {
            assert!(
                differences.iter().any(|d| d["kind"] == *kind
                    && (subject.is_empty() || d["subject"] == subject.as_str())),
                "{what}: no {kind} {subject} in {differences:#?}"
            );
        }
        if what.starts_with("a skimmer") {
            let added = differences
                .iter()
                .find(|d| d["kind"] == "script_added")
                .unwrap();
            assert!(
                added["detail"]
                    .as_str()
                    .unwrap()
                    .contains("inserted by the script"),
                "{added}"
            );
        }
        // Without a browser: the same, but for what only a browser sees —
        // the skimmer app.js inserts (app.js's own bytes still changed),
        // the card frame's absence, and what is no longer in the markup.
        let (code, out, err, _) = http_check();
        assert_eq!(code, Some(1), "{what}, http-only: {out} {err}");
        let result: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let differences = result["differences"].as_array().unwrap();
        for (kind, subject) in expected.iter().filter(|(k, s)| {
            ![
                "collect_frame_missing",
                "inline_script_removed",
                "form_removed",
            ]
            .contains(k)
                && !s.ends_with("/skim.js")
        }) {
            assert!(
                differences.iter().any(|d| d["kind"] == *kind
                    && (subject.is_empty() || d["subject"] == subject.as_str())),
                "{what}, http-only: no {kind} {subject} in {differences:#?}"
            );
        }
        assert!(
            !out.contains("skim.js"),
            "http-only cannot see a script inserted at run time: {out}"
        );
        restore();
    }
    let (code, out, err, _) = check();
    assert_eq!(code, Some(0), "restored: {out} {err}");
}

/// `watch baseline` of the shop's hostile `path` with a 5 s load budget and
/// 20 MiB (and `extra`): it must end with exit 2 within its budget and
/// write nothing; its stderr.
fn baseline_fails(addr: SocketAddr, path: &str, extra: &[&str]) -> String {
    let url = format!("http://127.0.0.1:{}{path}", addr.port());
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("b.toml");
    let mut args = vec![
        "baseline",
        &url,
        "--out",
        file.to_str().unwrap(),
        "--load-timeout-s",
        "5",
        "--max-mib",
        "20",
    ];
    args.extend_from_slice(extra);
    let (code, stdout, err, took) = watch(&args);
    assert_eq!(code, Some(2), "{path} {extra:?}: {stdout} {err}");
    assert!(took < Duration::from_secs(40), "{path} took {took:?}");
    assert!(!Path::new(&file).exists());
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_page_ends_within_its_budget() {
    let (_site, addr) = start_site().await;
    // A redirect loop ends in Chromium's own refusal, or — when the
    // browser is slow to give up — in the load budget; either is exit 2.
    for (path, reasons) in [
        ("/endless", &["did not finish loading within 5 s"][..]),
        (
            "/loop",
            &[
                "ERR_TOO_MANY_REDIRECTS",
                "did not finish loading within 5 s",
            ][..],
        ),
        // 100 MB: over the byte budget once loaded, or still loading when
        // the load budget ends it (a loaded machine).
        (
            "/huge",
            &["over the budget", "did not finish loading within 5 s"][..],
        ),
        // 300 frames: over the frame budget once loaded, or still loading
        // them when the load budget ends it (a loaded machine: CI).
        (
            "/frames",
            &[
                "frames, over the budget of 50",
                "did not finish loading within 5 s",
            ][..],
        ),
    ] {
        let err = baseline_fails(addr, path, &["--settle-ms", "0"]);
        assert!(reasons.iter().any(|r| err.contains(r)), "{path}: {err}");
    }
    // Without a browser, the same bounds.
    for (path, reason) in [
        ("/endless", "did not finish loading within 5 s"),
        ("/loop", "more than 10 redirects"),
        ("/huge", "over the budget of 20 MiB"),
    ] {
        let err = baseline_fails(addr, path, &["--http-only"]);
        assert!(err.contains(reason), "http-only {path}: {err}");
    }
}

/// chromedriver run as `nobody`, as a deployment runs it as a user of its
/// own (deploy/systemd/cardvault-watch-browser.service): the browsers it
/// starts cannot read the watcher's (root's, 0600) files. Killed when
/// dropped.
struct SeparateDriver {
    child: std::process::Child,
    url: String,
    home: tempfile::TempDir,
}

/// `nobody`'s uid and gid on Debian.
const NOBODY: u32 = 65_534;

impl SeparateDriver {
    fn start() -> SeparateDriver {
        use std::os::unix::process::CommandExt as _;
        let home = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(home.path(), Some(NOBODY), Some(NOBODY)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", home.path())
            .env("TMPDIR", home.path())
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver (apt install chromium-driver)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        SeparateDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            home,
        }
    }

    /// The processes chromedriver started (the browsers), with their real
    /// uids: (pid, uid).
    fn browsers(&self) -> Vec<(i32, u32)> {
        let mut parents: HashMap<i32, i32> = HashMap::new();
        let mut uids: HashMap<i32, u32> = HashMap::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
                continue;
            };
            for line in status.lines() {
                if let Some(v) = line.strip_prefix("PPid:") {
                    parents.insert(pid, v.trim().parse().unwrap_or(0));
                }
                if let Some(v) = line.strip_prefix("Uid:") {
                    uids.insert(pid, v.split_whitespace().next().unwrap().parse().unwrap());
                }
            }
        }
        let root = self.child.id() as i32;
        let descends = |mut pid: i32| {
            for _ in 0..64 {
                match parents.get(&pid) {
                    Some(&p) if p == root => return true,
                    Some(&p) if p > 1 => pid = p,
                    _ => return false,
                }
            }
            false
        };
        parents
            .keys()
            .filter(|pid| descends(**pid))
            .map(|pid| (*pid, uids[pid]))
            .collect()
    }
}

impl Drop for SeparateDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A check whose browser is killed under it (as a crash would end it)
/// ends at once with exit 2 naming why, not at its load budget; the
/// browser ran as chromedriver's user, and the next check works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_killed_mid_check_ends_the_check_and_the_next_one_works() {
    let driver = SeparateDriver::start();
    let (shop, origin) = plain_shop().await;
    let tmp = tempfile::tempdir().unwrap();
    let baseline = tmp.path().join("b.toml");
    let page = format!("{origin}/checkout");
    take_baseline(&page, &baseline, &["--webdriver", &driver.url]);
    justify(&baseline, "checkout");
    let started = Instant::now();
    let check = common::cardvault()
        .args(["watch", "check", &format!("{origin}/endless"), "--baseline"])
        .arg(&baseline)
        .args(["--webdriver", &driver.url, "--load-timeout-s", "90"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The browser, once it is loading the page (not while its session is
    // still being made): every process of it runs as nobody.
    while shop.endless.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the browser did not start loading the page"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let browsers = driver.browsers();
    assert!(browsers.len() >= 2, "{browsers:?}");
    assert!(
        browsers.iter().all(|(_, uid)| *uid == NOBODY),
        "{browsers:?}"
    );
    for (pid, _) in &browsers {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(*pid).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
    let out = check.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("the browser crashed or was killed during the check"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(80),
        "ended by the crash, not the budget of 90 s"
    );
    // A page that is a download: refused, nothing lands in the browser
    // user's directories.
    let (code, _, err, _) = watch(&[
        "baseline",
        &format!("{origin}/download"),
        "--out",
        tmp.path().join("d.toml").to_str().unwrap(),
        "--webdriver",
        &driver.url,
        "--load-timeout-s",
        "10",
    ]);
    assert_eq!(code, Some(2), "{err}");
    let mut pending = vec![driver.home.path().to_path_buf()];
    let mut seen = 0;
    while let Some(dir) = pending.pop() {
        seen += 1;
        assert!(seen < 100_000);
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                !name.contains("evil") && !name.ends_with(".crdownload"),
                "downloaded: {name}"
            );
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(entry.path());
            }
        }
    }
    // The next check, through the same chromedriver, works.
    let (code, out, err, _) = watch(&[
        "check",
        &page,
        "--baseline",
        baseline.to_str().unwrap(),
        "--webdriver",
        &driver.url,
        "--settle-ms",
        "300",
    ]);
    assert_eq!(code, Some(0), "{out} {err}");
}

/// `watch run --config CONFIG --once`, after which the watcher says, and
/// the vault's gauge shows, that the baseline has no admin's approval.
async fn run_finds_baseline_unapproved(config: &str, ops: SocketAddr) {
    let (_, _, err, _) = watch(&["run", "--config", config, "--once", "--settle-ms", "300"]);
    assert!(
        err.contains("no admin's approval of this baseline"),
        "{err}"
    );
    let (_, metrics) = crate::common::harness::ops_get(ops, "/metrics").await;
    assert_eq!(
        gauge(&metrics, "cardvault_page_baseline_unapproved", "checkout"),
        Some(1.0)
    );
}

/// The value of the gauge `name{page="PAGE"}` on a /metrics page.
fn gauge(metrics: &str, name: &str, page: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l.contains(&format!("page=\"{page}\"")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `cardvault watch run --once` against a vault: each result reported over
/// mTLS as the `watcher` role, audited (`page_checked`, `page_changed`
/// naming the culprit) and exported (`cardvault_page_unapproved_changes`,
/// `cardvault_page_last_check_timestamp_seconds`); the watcher role can do
/// nothing else, and no other role can report; a report is bounded and a
/// card number in it never reaches the trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_reach_the_vault_and_the_watcher_can_do_nothing_else() {
    use crate::common::harness::{Harness, ops_get};
    let harness = Harness::with(|c| {
        let pki = c.api.client_ca.parent().unwrap().to_path_buf();
        cardvault::pki::issue(&pki, "watcher").unwrap();
        let mut watcher = c.principals["cart"].clone();
        watcher.roles = vec![cardvault::config::Role::Watcher];
        c.principals.insert("watcher".into(), watcher);
    });
    let service = harness.start().await;
    let (shop, shop_origin) = plain_shop().await;
    let page = format!("{shop_origin}/checkout");
    let tmp = tempfile::tempdir().unwrap();
    let baseline = tmp.path().join("checkout.toml");
    take_baseline(&page, &baseline, &[]);
    justify(&baseline, "checkout");
    let pki = harness.pki();
    let key = pki.join("watcher-key.pem");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let driver = SeparateDriver::start();
    let config = tmp.path().join("watch.toml");
    let write_config = |key: &Path, webdriver: Option<&str>| {
        let webdriver = webdriver
            .map(|w| format!("webdriver = \"{w}\"\n"))
            .unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "[watch]\nvault = \"https://{}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n{webdriver}\n[[watch.page]]\nname = \"checkout\"\nbaseline = \"checkout.toml\"\ninterval_s = 3600\n",
                service.api_addr,
                pki.join("ca.pem").display(),
                pki.join("watcher.pem").display(),
                key.display(),
            ),
        )
        .unwrap();
    };
    let c = config.to_str().unwrap();
    // Refused: a browser the watcher would start itself (its own user), and
    // one whose user can read the key.
    write_config(&key, None);
    let (code, _, err, _) = watch(&["run", "--config", c, "--once"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("[watch] webdriver is not set"), "{err}");
    let open_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        open_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let readable = open_dir.path().join("readable-key.pem");
    std::fs::copy(&key, &readable).unwrap();
    std::fs::set_permissions(
        &readable,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    write_config(&readable, Some(&driver.url));
    let (code, _, err, _) = watch(&["run", "--config", c, "--once"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("can read the watcher's key"), "{err}");
    assert!(!err.contains("PRIVATE KEY"), "{err}");
    std::fs::remove_file(&readable).unwrap();
    write_config(&key, Some(&driver.url));
    // A baseline no admin approved yet.
    run_finds_baseline_unapproved(c, service.ops_addr).await;
    // An admin approves that baseline file, by its digest, with a reason.
    let api = format!("https://{}", service.api_addr);
    let as_admin = |justification: &str| {
        watch(&[
            "approve",
            "--baseline",
            baseline.to_str().unwrap(),
            "--page",
            "checkout",
            "--justification",
            justification,
            "--addr",
            &api,
            "--cacert",
            pki.join("ca.pem").to_str().unwrap(),
            "--cert",
            pki.join("admin.pem").to_str().unwrap(),
            "--key",
            pki.join("admin-key.pem").to_str().unwrap(),
        ])
    };
    let (code, out, err, _) = as_admin("reviewed by the security team, change 4711");
    assert_eq!(code, Some(0), "{out} {err}");
    let (code, _, _, _) = as_admin("card 4111 1111 1111 1111");
    assert_eq!(code, Some(1), "a card-like justification is refused");
    // The vault's signed approval, kept beside the baseline: the next run
    // carries it and the vault takes it.
    let approvals = tmp.path().join("checkout.toml.approval.json");
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&approvals).unwrap()).unwrap();
    assert_eq!(kept.as_array().unwrap().len(), 1, "{kept}");
    assert_eq!(kept[0]["approved_by"], "admin");
    let (code, out, err, _) = watch(&["run", "--config", c, "--once", "--settle-ms", "300"]);
    assert_eq!(code, Some(0), "{out} {err}");
    assert!(!err.contains("no admin's approval"), "{err}");
    let (_, metrics) = ops_get(service.ops_addr, "/metrics").await;
    assert_eq!(
        gauge(&metrics, "cardvault_page_baseline_unapproved", "checkout"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        gauge(&metrics, "cardvault_page_unapproved_changes", "checkout"),
        Some(0.0),
        "{metrics}"
    );
    let checked = gauge(
        &metrics,
        "cardvault_page_last_check_timestamp_seconds",
        "checkout",
    )
    .unwrap();
    assert_eq!(
        gauge(
            &metrics,
            "cardvault_page_check_interval_seconds",
            "checkout"
        ),
        Some(3600.0)
    );

    // A skimmer: the metric follows the report, and the trail names it.
    shop.set(
        "/app.js",
        "text/javascript",
        &format!("{APP_JS}var s = document.createElement('script'); s.src = '/skim.js'; document.head.appendChild(s);\n"),
    );
    shop.set("/skim.js", "text/javascript", "window.stolen = [];\n");
    let (code, out, err, _) = watch(&["run", "--config", c, "--once", "--settle-ms", "300"]);
    assert_eq!(code, Some(1), "{out} {err}");
    let (_, metrics) = ops_get(service.ops_addr, "/metrics").await;
    assert_eq!(
        gauge(&metrics, "cardvault_page_unapproved_changes", "checkout"),
        Some(2.0),
        "{metrics}"
    );
    assert!(
        gauge(
            &metrics,
            "cardvault_page_last_check_timestamp_seconds",
            "checkout"
        )
        .unwrap()
            >= checked
    );

    // A baseline edited after its approval (a script waved through by
    // whoever can write the file), and a forged signature: unapproved.
    let approved_baseline = std::fs::read_to_string(&baseline).unwrap();
    std::fs::write(
        &baseline,
        approved_baseline.replace(
            "justification = \"checkout\"",
            "justification = \"whatever\"",
        ),
    )
    .unwrap();
    run_finds_baseline_unapproved(c, service.ops_addr).await;
    std::fs::write(&baseline, &approved_baseline).unwrap();
    let mut forged = kept.clone();
    let signature = forged[0]["signature"].as_str().unwrap().to_owned();
    let flipped = if signature.starts_with('0') { "1" } else { "0" };
    forged[0]["signature"] = format!("{flipped}{}", &signature[1..]).into();
    std::fs::write(&approvals, forged.to_string()).unwrap();
    run_finds_baseline_unapproved(c, service.ops_addr).await;

    // The watcher role reports, and nothing else.
    let mut watcher = harness.connect("watcher", service.api_addr).await;
    for (path, body) in [
        (
            "/v1/tokenize",
            serde_json::json!({"pan": "4111111111111111"}),
        ),
        (
            "/v1/detokenize",
            serde_json::json!({"token": "4111110000001111"}),
        ),
        ("/v1/admin/seal", serde_json::json!({})),
        ("/v1/admin/evidence-key/rotate", serde_json::json!({})),
    ] {
        let reply = watcher.post_json(path, &body).await.unwrap();
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "watcher {path}");
    }
    let reply = watcher.get("/v1/admin/keys").await.unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = watcher
        .post_json(
            "/v1/admin/watch/approvals",
            &serde_json::json!({"page": "checkout", "baseline_sha256": "a".repeat(64), "justification": "mine"}),
        )
        .await
        .unwrap();
    assert_eq!(
        reply.status,
        StatusCode::FORBIDDEN,
        "a watcher approves nothing"
    );
    let report = |subject: &str| {
        serde_json::json!({
            "page": "checkout", "url": page, "interval_s": 3600, "outcome": "changed",
            "differences": [{"kind": "script_added", "subject": subject}],
        })
    };
    let mut cart = harness.connect("cart", service.api_addr).await;
    let reply = cart
        .post_json("/v1/admin/watch/reports", &report("https://x.example/a.js"))
        .await
        .unwrap();
    assert_eq!(
        reply.status,
        StatusCode::FORBIDDEN,
        "only the watcher reports"
    );
    // Bounded: a month-long interval, a 65th page.
    let mut long = report("https://x.example/a.js");
    long["interval_s"] = serde_json::json!(30 * 86_400);
    let reply = watcher
        .post_json("/v1/admin/watch/reports", &long)
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    for n in 0..64 {
        let mut other = report("https://x.example/a.js");
        other["page"] = format!("page-{n}").into();
        let reply = watcher
            .post_json("/v1/admin/watch/reports", &other)
            .await
            .unwrap();
        let expected = if n < 63 {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(reply.status, expected, "page {n}");
    }
    // A card number in a report never reaches the trail.
    let canary = "4929123456781236";
    let reply = watcher
        .post_json(
            "/v1/admin/watch/reports",
            &report(&format!("https://x.example/a.js?card={canary}")),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    drop((watcher, cart));
    service.stop().await.unwrap();
    let trail = common::entries(&harness.config.audit.dir);
    let changed: Vec<_> = trail
        .iter()
        .filter(|e| e["event"] == "page_changed")
        .collect();
    assert!(
        changed.iter().any(|e| e["principal"] == "watcher"
            && e["count"] == 2
            && e["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("script_added {shop_origin}/skim.js"))),
        "{changed:?}"
    );
    assert!(
        trail
            .iter()
            .any(|e| e["event"] == "page_checked" && e["principal"] == "watcher")
    );
    // The approved baseline, as the watcher reported it: each script with
    // its justification (for the evidence bundle's 6.4.3 inventory).
    let baselines: Vec<_> = trail
        .iter()
        .filter(|e| e["event"] == "page_baseline")
        .collect();
    assert!(!baselines.is_empty());
    let detail = baselines[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("{shop_origin}/app.js sha384-")) && detail.contains(": checkout"),
        "{detail}"
    );
    assert_eq!(baselines[0]["count"], 2, "app.js and the inline script");
    // The evidence bundle pairs the baseline with the admin's approval.
    let config_file = harness.dir.path().join("cardvault.toml");
    std::fs::write(&config_file, toml::to_string(&harness.config).unwrap()).unwrap();
    let bundle = tmp.path().join("bundle");
    let out = common::cardvault()
        .args(["evidence", "--config"])
        .arg(&config_file)
        .arg("--out")
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evidence: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("evidence.json")).unwrap()).unwrap();
    let section = evidence["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["requirement"] == "6.4.3 / 11.6.1")
        .unwrap();
    let checkout = &section["facts"]["approved_inventories"]["checkout"];
    assert_eq!(checkout["approved"]["principal"], "admin", "{checkout}");
    assert!(
        checkout["approved"]["detail"]
            .as_str()
            .unwrap()
            .contains("reviewed by the security team"),
        "{checkout}"
    );
    assert!(section["facts"]["changes_reported"].as_u64() >= Some(1));
    let raw = std::fs::read_dir(&harness.config.audit.dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect::<String>();
    assert!(!raw.contains(canary), "a card number reached the trail");
}
