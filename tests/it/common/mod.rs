//! Helpers shared by the integration tests: synthetic Luhn-valid PANs, a
//! vault in a temp dir with a real key file, and a scanner that looks for a
//! byte string in every file under a directory.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod harness;
pub mod postgres;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cardvault::crypto::KeyFileProvider;
use cardvault::domain::luhn;
use cardvault::{Pan, Vault, VaultOptions};
use serde_json::Value;

/// Appends the Luhn check digit to `body`.
pub fn luhn_complete(body: &str) -> String {
    (b'0'..=b'9')
        .map(|d| format!("{body}{}", char::from(d)))
        .find(|s| luhn::passes(s.as_bytes()))
        .expect("one check digit always fits")
}

/// The `i`-th synthetic 16-digit Visa-range PAN (distinct for distinct `i`).
pub fn synthetic_pan(i: u64) -> Pan {
    Pan::parse(&luhn_complete(&format!("49{i:013}"))).expect("valid synthetic PAN")
}

/// A temp dir holding `kek.key` and `db/`.
pub struct TestVaultDir {
    pub dir: tempfile::TempDir,
}

impl TestVaultDir {
    pub fn new() -> TestVaultDir {
        let dir = tempfile::tempdir().expect("temp dir");
        KeyFileProvider::create(&dir.path().join("kek.key")).expect("key file");
        TestVaultDir { dir }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("db")
    }

    pub fn open(&self) -> Vault {
        self.open_with(VaultOptions::default())
    }

    pub fn open_with(&self, options: VaultOptions) -> Vault {
        let provider =
            KeyFileProvider::open(&self.dir.path().join("kek.key")).expect("open key file");
        Vault::open(&self.db_path(), Arc::new(provider), options).expect("open vault")
    }
}

/// Every file under `root` (recursively) whose bytes contain `needle`.
pub fn files_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    let mut scanned = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read file");
                scanned += 1;
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(path);
                }
            }
        }
    }
    assert!(scanned > 0, "nothing scanned under {}", root.display());
    hits
}

/// The `cardvault` binary with `RUST_LOG=warn`.
pub fn cardvault() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cardvault"));
    command.env("RUST_LOG", "warn");
    command
}

/// What a finished command said: (exit code, stdout, stderr).
pub fn outcome(command: &mut std::process::Command) -> (Option<i32>, String, String) {
    let out = command.output().expect("run the command");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `cardvault ARGS`: (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (Option<i32>, String, String) {
    outcome(cardvault().args(args))
}

/// Copies the directory `from` (and those under it) to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A `cardvault serve --dev` child process on ports chosen by the OS, with
/// the lines it printed up to and including the curl commands.
pub struct DevServer {
    pub child: std::process::Child,
    pub data_dir: PathBuf,
    pub api: String,
    pub printed: Vec<String>,
}

impl DevServer {
    pub fn start(data_dir: &Path) -> DevServer {
        DevServer::start_with(data_dir, &[])
    }

    /// Like [`DevServer::start`] with extra environment (config overrides);
    /// the server's log goes to `DATA_DIR/serve.log`.
    pub fn start_with(data_dir: &Path, env: &[(&str, &str)]) -> DevServer {
        DevServer::start_full(data_dir, &[], env)
    }

    /// Like [`DevServer::start_with`] with extra `serve` arguments
    /// (`--kek shamir`).
    pub fn start_full(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> DevServer {
        use std::io::{BufRead, BufReader};
        std::fs::create_dir_all(data_dir).expect("create data dir");
        let log = std::fs::File::create(data_dir.join("serve.log")).expect("create serve.log");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cardvault"))
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .args([
                "serve",
                "--dev",
                "--listen",
                "127.0.0.1:0",
                "--ops-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn cardvault serve --dev");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut printed = Vec::new();
        let mut api = String::new();
        while let Some(Ok(line)) = lines.next() {
            if let Some(rest) = line.strip_prefix("cardvault is serving: API ") {
                api = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
            let last = line.starts_with("TOKEN=");
            printed.push(line);
            if last {
                break;
            }
        }
        assert!(
            api.starts_with("https://"),
            "serve --dev printed {printed:?}"
        );
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        DevServer {
            child,
            data_dir: data_dir.to_path_buf(),
            api,
            printed,
        }
    }

    /// TLS settings of client `name` of the server's dev PKI.
    pub fn tls(&self, name: &str) -> cardvault::client::ClientTls {
        pki_client(&self.data_dir.join("pki"), name)
    }

    /// The API's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.api
            .trim_start_matches("https://")
            .parse()
            .expect("API address")
    }

    /// The ops listener's address, as `serve` printed it.
    pub fn ops_addr(&self) -> std::net::SocketAddr {
        self.printed
            .iter()
            .find_map(|l| l.split("ops http://").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no ops address in {:?}", self.printed))
            .parse()
            .expect("ops address")
    }

    /// `cardvault load verify --json` of the ack log `acks` against this
    /// server: the report (`verified`, `lost`, `mismatched`, …).
    pub fn verify_acks(&self, acks: &Path) -> Value {
        let out = cardvault()
            .args(["load", "verify", "--json", "--dev"])
            .arg(&self.data_dir)
            .args(["--target", &self.api, "--ack-log"])
            .arg(acks)
            .output()
            .expect("cardvault load verify");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
    }

    /// SIGKILL, then reap.
    pub fn kill_9(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// An mTLS connection to the server as client `name` of its dev PKI.
    pub async fn connect(&self, name: &str) -> cardvault::client::Connection {
        self.tls(name).connect(self.addr()).await.expect("connect")
    }

    /// Starts `cardvault load --dev DATA_DIR --target API ARGS…` with its
    /// output captured (wait with `wait_with_output`).
    pub fn spawn_load(&self, args: &[&str]) -> std::process::Child {
        std::process::Command::new(env!("CARGO_BIN_EXE_cardvault"))
            .env("RUST_LOG", "warn")
            .arg("load")
            .arg("--dev")
            .arg(&self.data_dir)
            .args(["--target", &self.api])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn cardvault load")
    }

    /// Sends SIGTERM and waits (at most 20 s) for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "serve did not stop on SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Tokenizes `pan` over `conn`; the token (panics on any failure).
pub async fn tokenize(conn: &mut cardvault::client::Connection, pan: &str) -> String {
    let reply = conn
        .post_json("/v1/tokenize", &serde_json::json!({ "pan": pan }))
        .await
        .expect("tokenize request");
    assert_eq!(
        reply.status,
        200,
        "tokenize: {}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()["token"]
        .as_str()
        .expect("token in the reply")
        .to_owned()
}

/// Asserts that `reply` is the documented error: `status`, `{"error":
/// {"code": code, "message": <non-empty>}}`. `what` names the case.
pub fn assert_api_error(
    reply: &cardvault::client::Reply,
    status: hyper::StatusCode,
    code: &str,
    what: &str,
) {
    assert_eq!(
        reply.status,
        status,
        "{what}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: no message in {body}"
    );
}

/// Every entry of the trail in `dir`, oldest first.
pub fn entries(dir: &Path) -> Vec<Value> {
    cardvault::audit::segments(dir)
        .unwrap()
        .into_iter()
        .flat_map(|(_, path)| {
            std::fs::read_to_string(path)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

pub fn of_kind<'a>(entries: &'a [Value], kind: &str) -> Vec<&'a Value> {
    entries.iter().filter(|e| e["event"] == kind).collect()
}

/// TLS settings of client `name` of the PKI in `pki` (its CA trusted).
pub fn pki_client(pki: &Path, name: &str) -> cardvault::client::ClientTls {
    cardvault::client::ClientTls::from_files(
        &pki.join("ca.pem"),
        Some((
            &pki.join(format!("{name}.pem")),
            &pki.join(format!("{name}-key.pem")),
        )),
        false,
    )
    .expect("PKI files")
}

/// Runs `command` with `stdin` piped in and its output captured.
pub fn run_with_stdin(command: &mut std::process::Command, stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}
