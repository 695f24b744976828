//! Hosted card fields in a real browser (issue 31): Debian's headless
//! Chromium driven over W3C WebDriver (chromedriver, `fantoccini`), the dev
//! CA trusted the way a machine trusts a CA — an NSS database made with
//! `certutil` in the browser's home — never by turning certificate checks
//! off. A real `serve --dev` (its public listener on a free port), and a
//! shop on its own loopback origin whose server logs every request it
//! gets. The shopper types a card into the frame; the shop's page gets the
//! token and never the card; the cart confirms it over mTLS; payments
//! detokenizes it. Then what the page and other origins cannot do, the
//! closed sessions, keyboard-only entry and axe-core inside the frame.
//!
//! Needs `chromium`, `chromium-driver`, `libnss3-tools` and axe-core
//! (`npm install --prefix ~/.cache/cardvault/npm axe-core@4.14.1`, or
//! `CARDVAULT_AXE_JS`): README command 1 and `.ci/run` install them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper::StatusCode;
use serde_json::{Value, json};

use crate::collect::CANARY;
use crate::common::DevServer;

/// The shop's server: its pages by path, and every request it was sent.
#[derive(Default)]
struct Shop {
    pages: Mutex<std::collections::HashMap<String, String>>,
    log: Mutex<Vec<String>>,
}

async fn shop_handler(
    axum::extract::State(shop): axum::extract::State<Arc<Shop>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut line = format!("{} {} {:?} ", parts.method, parts.uri, parts.headers);
    line.push_str(&String::from_utf8_lossy(&body));
    shop.log.lock().unwrap().push(line);
    let page = shop.pages.lock().unwrap().get(parts.uri.path()).cloned();
    match page {
        Some(html) => (
            [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
        None => (StatusCode::NO_CONTENT, "").into_response(),
    }
}

/// Starts the shop on 127.0.0.1, port 0.
async fn start_shop() -> (Arc<Shop>, SocketAddr) {
    let shop = Arc::new(Shop::default());
    let app = axum::Router::new()
        .fallback(shop_handler)
        .with_state(Arc::clone(&shop));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (shop, addr)
}

/// The checkout page: `cardvault.js` pinned by its integrity hash, the
/// frame mounted, the token written into `#token` and posted to the shop's
/// server, an error code into `#error`.
fn checkout_page(public_url: &str, frame_url: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Checkout</title>
{snippet}
</head><body><main><h1>Checkout</h1><div id="card"></div>
<p id="token"></p><p id="error"></p></main>
<script>
window.handle = CardVault.mount({{
  frameUrl: {frame},
  element: '#card',
  onToken: function (t) {{
    document.getElementById('token').textContent = t.token;
    fetch('/confirm', {{method: 'POST', headers: {{'content-type': 'application/json'}},
      body: JSON.stringify({{session: t.session, token: t.token, last4: t.last4}})}});
  }},
  onError: function (e) {{ document.getElementById('error').textContent = e.code; }}
}});
window.handle.frame.style.height = '320px';
window.handle.frame.style.width = '420px';
</script></body></html>"#,
        snippet = cardvault::server::snippet(public_url),
        frame = serde_json::to_string(frame_url).unwrap(),
    )
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A home directory whose NSS database trusts the dev CA.
fn browser_home(ca: &Path) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join(".pki/nssdb");
    std::fs::create_dir_all(&db).unwrap();
    let sql = format!("sql:{}", db.display());
    let run = |args: &[&str]| {
        let out = std::process::Command::new("certutil")
            .args(args)
            .output()
            .expect("certutil (Debian's libnss3-tools) is needed");
        assert!(out.status.success(), "certutil {args:?}: {out:?}");
    };
    run(&["-N", "-d", &sql, "--empty-password"]);
    run(&[
        "-A",
        "-d",
        &sql,
        "-t",
        "C,,",
        "-n",
        "cardvault-dev-ca",
        "-i",
        ca.to_str().unwrap(),
    ]);
    home
}

/// chromedriver on a free port with `home`; killed on drop.
struct Driver {
    child: std::process::Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver(home: &Path) -> Driver {
    let port = free_port();
    let child = std::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .env("HOME", home)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromedriver (Debian's chromium-driver) is needed");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver { child, port }
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    let binary = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chromium is needed");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": binary,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-features=Translate,OptimizationHints,MediaRouter",
                format!("--user-data-dir={}", profile.display()),
                "--window-size=1000,800"
            ]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session in headless Chromium")
}

/// A headless Chromium trusting `ca`, with its driver, home and profile.
struct Browser {
    client: Client,
    _driver: Driver,
    _home: tempfile::TempDir,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn open(ca: &Path) -> Browser {
        let home = browser_home(ca);
        let driver = start_driver(home.path());
        let profile = tempfile::tempdir().unwrap();
        let client = browser(&driver, profile.path()).await;
        Browser {
            client,
            _driver: driver,
            _home: home,
            _profile: profile,
        }
    }

    async fn close(self) {
        self.client.clone().close().await.unwrap();
    }
}

/// Runs `script` until it returns a non-empty string (every 100 ms, at
/// most `limit`); the string, or empty when time ran out.
async fn poll_text(client: &Client, script: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Value::String(s)) = client.execute(script, vec![]).await
            && !s.is_empty()
        {
            return s;
        }
        if Instant::now() >= deadline {
            return String::new();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the page has its iframe yet.
const FRAME_MOUNTED: &str = "return document.querySelector('iframe') ? 'yes' : ''";

/// Serves `html` at `path` of the shop and opens it at `origin`.
async fn open_page(client: &Client, shop: &Shop, origin: &str, path: &str, html: String) {
    shop.pages.lock().unwrap().insert(path.into(), html);
    client.goto(&format!("{origin}{path}")).await.unwrap();
}

/// Waits for the page's iframe, enters it, and waits until the card form's
/// script is ready.
async fn enter_card_frame(client: &Client) {
    assert_eq!(
        poll_text(client, FRAME_MOUNTED, Duration::from_secs(10)).await,
        "yes"
    );
    client.enter_frame(0).await.unwrap();
    client
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("body[data-ready=yes] #number"))
        .await
        .expect("the card form loaded in the frame");
}

/// Types `text` into the element with id `id`.
async fn fill(client: &Client, id: &str, text: &str) {
    client
        .find(Locator::Id(id))
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

/// Types `text` with the keyboard only (key down and up per character),
/// pausing 100 ms after a Tab as a person does: a key typed the same
/// instant focus moves can reach the field it left.
async fn type_keys(client: &Client, text: &str) {
    let tab = char::from(Key::Tab);
    let mut actions = KeyActions::new("keyboard".into());
    for c in text.chars() {
        actions = actions
            .then(KeyAction::Down { value: c })
            .then(KeyAction::Up { value: c });
        if c == tab {
            actions = actions.then(KeyAction::Pause {
                duration: Duration::from_millis(100),
            });
        }
    }
    client.perform_actions(actions).await.unwrap();
}

/// Creates a session for `origin` as the cart; (session, frame URL).
async fn create(server: &DevServer, origin: &str, extra: Value) -> (String, String) {
    let mut cart = server.connect("cart").await;
    let mut body = json!({"origin": origin});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let reply = cart.post_json("/v1/collect/sessions", &body).await.unwrap();
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.json());
    let created = reply.json();
    (
        created["session"].as_str().unwrap().to_owned(),
        created["frame_url"].as_str().unwrap().to_owned(),
    )
}

fn axe_source() -> String {
    let path = std::env::var_os("CARDVAULT_AXE_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap())
                .join(".cache/cardvault/npm/node_modules/axe-core/axe.min.js")
        });
    std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "axe-core not found at {} (npm install --prefix ~/.cache/cardvault/npm axe-core@4.14.1)",
            path.display()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosted_fields_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start_with(&dir.path().join("dev"), &[("RUST_LOG", "debug")]);
    let public_url = server
        .printed
        .iter()
        .find_map(|l| l.strip_prefix("hosted card fields: "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("serve --dev printed the public listener")
        .to_owned();
    let (shop, shop_addr) = start_shop().await;
    let shop_origin = format!("http://127.0.0.1:{}", shop_addr.port());
    let session_browser = Browser::open(&server.data_dir.join("pki/ca.pem")).await;
    let client = session_browser.client.clone();

    // 1. The shopper types the card; the page gets the token.
    let (session, frame_url) = create(&server, &shop_origin, json!({"reference": "order-7"})).await;
    open_page(
        &client,
        &shop,
        &shop_origin,
        "/checkout/1",
        checkout_page(&public_url, &frame_url),
    )
    .await;
    enter_card_frame(&client).await;
    // Everything the frame loaded came from the vault itself.
    let resources = client
        .execute(
            "return [location.href].concat(performance.getEntriesByType('resource').map(function (e) { return e.name; }))",
            vec![],
        )
        .await
        .unwrap();
    let resources: Vec<String> = serde_json::from_value(resources).unwrap();
    assert!(resources.len() >= 3, "{resources:?}");
    for url in &resources {
        assert!(
            url.starts_with(&format!("{public_url}/")),
            "the frame loaded {url}"
        );
    }
    fill(&client, "number", CANARY).await;
    fill(&client, "expiry", "12/30").await;
    fill(&client, "cvc", "123").await;
    // A script of the shop's page cannot read the frame's inputs.
    client.enter_parent_frame().await.unwrap();
    let peek = client
        .execute(
            "try { return 'read:' + document.querySelector('iframe').contentWindow.document.getElementById('number').value; } catch (e) { return 'blocked:' + e.name; }",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(peek, "blocked:SecurityError");
    // The shop's page asks the frame to submit (postMessage).
    client
        .execute("window.handle.submit(); return true;", vec![])
        .await
        .unwrap();
    let token = poll_text(
        &client,
        "return document.getElementById('token').textContent",
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(token.len(), 16, "no token reached the page: {token:?}");
    assert!(!token.contains(CANARY));
    let dom = client
        .execute(
            "return document.documentElement.outerHTML + document.body.innerText",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        !dom.as_str().unwrap().contains(CANARY),
        "the PAN is in the page's DOM"
    );
    // The cart trusts the vault's answer, not the page: the same token.
    let mut cart = server.connect("cart").await;
    let confirmed = cart
        .get(&format!("/v1/collect/sessions/{session}"))
        .await
        .unwrap()
        .json();
    assert_eq!(confirmed["state"], "completed");
    assert_eq!(confirmed["token"], token.as_str());
    assert_eq!(confirmed["cvc_held"], true);
    let mut payments = server.connect("payments").await;
    let revealed = payments
        .post_json("/v1/detokenize", &json!({"token": token}))
        .await
        .unwrap()
        .json();
    assert_eq!(revealed["pan"], CANARY);
    // A second submit from the frame itself (the browser's own Origin and
    // Sec-Fetch-Site) is refused: one completion.
    client.enter_frame(0).await.unwrap();
    let second = client
        .execute_async(
            &format!(
                "var done = arguments[arguments.length - 1];
                 fetch('/collect/v1/sessions/{session}/submit', {{method: 'POST',
                   headers: {{'Content-Type': 'application/json'}},
                   body: JSON.stringify({{nonce: document.body.dataset.nonce, number: '5555555555554444', expiry: '12/30', code: '123'}})}})
                 .then(function (r) {{ done(r.status); }}, function (e) {{ done('failed ' + e); }});"
            ),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(second, json!(409));
    client.enter_parent_frame().await.unwrap();
    let confirm = poll_text(
        &client,
        "return window.performance.getEntriesByName(location.origin + '/confirm').length ? 'sent' : ''",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(confirm, "sent");

    // 2. axe-core inside an open frame: no violation.
    let (_, frame_url) = create(&server, &shop_origin, json!({"cvc": "optional"})).await;
    open_page(
        &client,
        &shop,
        &shop_origin,
        "/checkout/2",
        checkout_page(&public_url, &frame_url),
    )
    .await;
    enter_card_frame(&client).await;
    // An error shown on the field is announced, then axe runs on the form.
    fill(&client, "number", "4111111111111112").await;
    let invalid = client
        .execute("return document.getElementById('number').getAttribute('aria-invalid') + '|' + document.getElementById('number-error').textContent", vec![])
        .await
        .unwrap();
    assert_eq!(invalid, "true|This card number is not valid.");
    client.execute(&axe_source(), vec![]).await.unwrap();
    let violations = client
        .execute_async(
            "var done = arguments[arguments.length - 1];
             axe.run(document).then(function (r) {
               done(JSON.stringify(r.violations.map(function (v) { return {id: v.id, impact: v.impact, nodes: v.nodes.map(function (n) { return n.target; })}; })));
             }, function (e) { done('axe failed: ' + e); });",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(violations, json!("[]"), "axe-core found violations");
    client.enter_parent_frame().await.unwrap();

    // 3. Keyboard only: Tab into the frame's fields, type, Enter.
    let (session3, frame_url) = create(&server, &shop_origin, json!({})).await;
    open_page(
        &client,
        &shop,
        &shop_origin,
        "/checkout/3",
        checkout_page(&public_url, &frame_url),
    )
    .await;
    enter_card_frame(&client).await;
    // From the top of the frame: Tab into each field, type, check what the
    // field shows (the frame formats as it goes), Tab on, Enter on the button.
    let tab = char::from(Key::Tab);
    let enter = char::from(Key::Enter);
    client
        .execute(
            "document.activeElement && document.activeElement.blur(); return true;",
            vec![],
        )
        .await
        .unwrap();
    for (keys, field, shown) in [
        (
            format!("{tab}5555555555554444"),
            "number",
            "5555 5555 5555 4444",
        ),
        (format!("{tab}1230"), "expiry", "12/30"),
        (format!("{tab}737"), "cvc", "737"),
    ] {
        type_keys(&client, &keys).await;
        let script = format!(
            "var e = document.getElementById('{field}'); return document.activeElement === e && e.value === '{shown}' ? 'ok' : ''"
        );
        let typed = poll_text(&client, &script, Duration::from_secs(10)).await;
        let state = client
            .execute(
                "return ['number','expiry','cvc'].map(function (id) { var e = document.getElementById(id); return id + '=' + (id === 'number' ? e.value.length : e.value) + (document.activeElement === e ? '*' : ''); }).join(' ')",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(typed, "ok", "keyboard entry into {field}: {state}");
    }
    type_keys(&client, &format!("{tab}{enter}")).await;
    let status = poll_text(
        &client,
        "return document.getElementById('status').textContent",
        Duration::from_secs(15),
    )
    .await;
    client.enter_parent_frame().await.unwrap();
    let token3 = poll_text(
        &client,
        "return document.getElementById('token').textContent",
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(
        token3.len(),
        16,
        "keyboard-only entry delivered no token (the frame said {status:?})"
    );
    let confirmed = cart
        .get(&format!("/v1/collect/sessions/{session3}"))
        .await
        .unwrap()
        .json();
    assert_eq!(confirmed["token"], token3.as_str());
    assert_eq!(confirmed["last4"], "4444");

    // 4. Closed sessions tell the page why: completed, expired, locked.
    let (_, expired_url) = create(&server, &shop_origin, json!({"ttl_s": 1})).await;
    let (locked, locked_url) = create(&server, &shop_origin, json!({})).await;
    lock_over_the_wire(&server, &public_url, &locked).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (path, url, code) in [
        ("/closed/1", frame_url.as_str(), "session_completed"),
        ("/closed/2", expired_url.as_str(), "session_expired"),
        ("/closed/3", locked_url.as_str(), "session_locked"),
    ] {
        shop.pages
            .lock()
            .unwrap()
            .insert(path.into(), checkout_page(&public_url, url));
        client.goto(&format!("{shop_origin}{path}")).await.unwrap();
        let error = poll_text(
            &client,
            "return document.getElementById('error').textContent",
            Duration::from_secs(15),
        )
        .await;
        assert_eq!(error, code);
    }

    // 5. A page on another origin cannot frame the form.
    let (_, frame_url) = create(&server, &shop_origin, json!({})).await;
    shop.pages.lock().unwrap().insert(
        "/evil".into(),
        format!(
            "<!doctype html><html lang=\"en\"><title>Evil</title><iframe src=\"{frame_url}\"></iframe></html>"
        ),
    );
    client
        .goto(&format!("http://localhost:{}/evil", shop_addr.port()))
        .await
        .unwrap();
    assert_eq!(
        poll_text(&client, FRAME_MOUNTED, Duration::from_secs(10)).await,
        "yes"
    );
    client.enter_frame(0).await.unwrap();
    // Chromium replaces a frame that frame-ancestors refuses with its error
    // page (an opaque origin): wait for that, then look for the form.
    let blocked = poll_text(
        &client,
        "return location.href.indexOf('chrome-error://') === 0 ? location.href : ''",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        !blocked.is_empty(),
        "the frame on another origin was not blocked"
    );
    let form = client
        .execute(
            "return document.getElementById('number') ? 'form' : 'none'",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(form, "none", "another origin framed the form");
    client.enter_parent_frame().await.unwrap();
    session_browser.close().await;

    // The shop's server never saw the card; neither did the vault's log.
    let log = shop.log.lock().unwrap().join("\n");
    assert!(log.contains("POST /confirm"), "{log}");
    assert!(log.contains(&token));
    assert!(
        !log.contains(CANARY) && !log.contains("5555555555554444"),
        "the PAN reached the shop's server"
    );
    server.stop();
    let served = std::fs::read_to_string(dir.path().join("dev/serve.log")).unwrap();
    assert!(
        served.contains("DEBUG") || served.contains("debug"),
        "debug logging was on"
    );
    assert!(
        !served.contains(CANARY) && !served.contains("5555555555554444"),
        "the PAN reached the vault's log"
    );
}

/// Locks `session` with five refused submits, as a hostile client would.
async fn lock_over_the_wire(server: &DevServer, public_url: &str, session: &str) {
    let port: u16 = public_url.rsplit(':').next().unwrap().parse().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let tls =
        cardvault::client::ClientTls::from_files(&server.data_dir.join("pki/ca.pem"), None, false)
            .unwrap();
    for _ in 0..5 {
        let stream = tls.connect_raw(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let body = json!({"nonce": "AAAAAAAAAAAAAAAAAAAAAA", "number": "4111111111111112", "expiry": "12/30", "code": "123"});
        let request = hyper::Request::post(format!("/collect/v1/sessions/{session}/submit"))
            .header("host", "localhost")
            .header("origin", public_url)
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(hyper::body::Bytes::from(
                body.to_string(),
            )))
            .unwrap();
        let answer = sender.send_request(request).await.unwrap();
        assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    }
}

/// A child process killed on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `python3 SCRIPT ARGS` and waits (at most 20 s) for `port` to
/// accept connections.
fn start_python(script: &str, args: &[&str], port: u16) -> Child {
    let child = std::process::Command::new("python3")
        .arg(format!(
            "{}/examples/checkout/{script}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("python3");
    let child = Child(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{script} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// examples/checkout end to end in a real browser: the shop's server makes
/// the session, the shopper types the card into the frame, the shop
/// confirms the token and pays through the reveal proxy, and the payment
/// provider gets the card number from the vault. The shop's request log
/// never holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkout_example_pays_without_touching_a_card() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    // A first start makes the dev directory; then the payment provider's
    // route goes into its config.
    DevServer::start(&data).stop();
    let psp_port = free_port();
    let mut config = std::fs::read_to_string(data.join("cardvault.toml")).unwrap();
    config.push_str(&format!(
        "\n[proxy.routes.\"psp\"]\nupstream = \"https://localhost:{psp_port}/charge\"\nca_file = \"pki/ca.pem\"\nallowed_principals = [\"payments\"]\nreveal = [\"/card/number\"]\ncvc_at = \"/card/cvc\"\n"
    ));
    std::fs::write(data.join("cardvault.toml"), config).unwrap();
    let pki = data.join("pki");
    let _psp = start_python(
        "psp.py",
        &[
            "--cert",
            pki.join("server.pem").to_str().unwrap(),
            "--key",
            pki.join("server-key.pem").to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{psp_port}"),
        ],
        psp_port,
    );
    let server = DevServer::start(&data);
    let shop_port = free_port();
    let shop_log = dir.path().join("shop.log");
    let _shop = start_python(
        "shop.py",
        &[
            "--dev",
            data.to_str().unwrap(),
            "--api",
            &server.api,
            "--listen",
            &format!("127.0.0.1:{shop_port}"),
            "--route",
            "psp",
            "--log",
            shop_log.to_str().unwrap(),
        ],
        shop_port,
    );
    let browser = Browser::open(&pki.join("ca.pem")).await;
    let client = &browser.client;
    client
        .goto(&format!("http://127.0.0.1:{shop_port}/"))
        .await
        .unwrap();
    enter_card_frame(client).await;
    fill(client, "number", "4012888888881881").await;
    fill(client, "expiry", "11/31").await;
    fill(client, "cvc", "321").await;
    client
        .find(Locator::Id("save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client.enter_parent_frame().await.unwrap();
    let result = poll_text(
        client,
        "var t = document.getElementById('result').textContent; return t.indexOf('Paid') === 0 || t.indexOf('failed') > 0 ? t : ''",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(result, "Paid. Thank you!");
    browser.close().await;
    let log = std::fs::read_to_string(&shop_log).unwrap();
    assert!(
        log.contains("POST /confirm") && log.contains("approved"),
        "{log}"
    );
    assert!(
        !log.contains("4012888888881881") && !log.contains("321\""),
        "the shop saw the card: {log}"
    );
    assert!(server.stop().success());
}
