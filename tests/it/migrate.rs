//! `cardvault migrate` both ways on a real PostgreSQL 15 and RocksDB: a
//! vault of 200,000 tokens (two data-key versions, expiring tokens, a
//! random-mode tenant, collection sessions) copied to PostgreSQL with the
//! copy killed (-9) part-way, refused without `--resume`, finished with it;
//! then copied back into a new RocksDB directory the same way. Each end:
//! the counts per table match, the tokens detokenize to their PANs through
//! the target and the same PAN gets the same token.

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cardvault::crypto::KeyFileProvider;
use cardvault::domain::{TenantId, Token};
use cardvault::store::Store as _;
use cardvault::store::codec::{CvcPolicy, SessionRecord, SessionState};
use cardvault::store::rocksdb::{RocksStore, StoreOptions};
use cardvault::{TokenMode, Vault, VaultOptions};

use cardvault::config::{DatabaseUrl, StorageBackend};

use crate::common::harness::Harness;
use crate::common::postgres::Postgres;
use crate::common::{TestVaultDir, cardvault, files_containing, synthetic_pan};

const TOKENS: u64 = 300_000;
/// Every this-many-th PAN is checked at each end.
const STRIDE: u64 = 997;

/// What the source vault holds, to check a copy against.
struct Made {
    checked: Vec<(u64, Token)>,
    random: Vec<(u64, Token)>,
    sessions: Vec<(Vec<u8>, Vec<u8>)>,
}

fn shop() -> TenantId {
    TenantId::parse("shop").unwrap()
}

fn rand() -> TenantId {
    TenantId::parse("rand").unwrap()
}

fn options() -> VaultOptions {
    VaultOptions {
        tenant_modes: [(rand(), TokenMode::Random)].into(),
        ..VaultOptions::default()
    }
}

fn provider(dir: &Path) -> Arc<KeyFileProvider> {
    Arc::new(KeyFileProvider::open(&dir.join("kek.key")).unwrap())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn fill(vault: &Vault) -> Made {
    let mut checked = Vec::new();
    for start in (0..TOKENS).step_by(2000) {
        if start == TOKENS / 2 {
            vault.rotate_keys(&shop()).await.unwrap();
        }
        let items: Vec<_> = (start..start + 2000)
            .map(|i| (synthetic_pan(i), None))
            .collect();
        let done = vault.tokenize_batch(&shop(), &items).await;
        for (i, info) in (start..).zip(done) {
            let info = info.unwrap();
            if i % STRIDE == 0 {
                checked.push((i, info.token));
            }
        }
    }
    let expiring: Vec<_> = (0..500).map(|i| synthetic_pan(TOKENS + i)).collect();
    let refs: Vec<_> = expiring.iter().map(|p| (p, None)).collect();
    let day = now_ms() + 86_400_000;
    for info in vault.tokenize_with_ttl(&shop(), &refs, Some(day)).await {
        info.unwrap();
    }
    let randoms: Vec<_> = (0..1000)
        .map(|i| (synthetic_pan(2 * TOKENS + i), None))
        .collect();
    let random = (2 * TOKENS..)
        .zip(vault.tokenize_batch(&rand(), &randoms).await)
        .map(|(i, info)| (i, info.unwrap().token))
        .collect();
    Made {
        checked,
        random,
        sessions: Vec::new(),
    }
}

/// Three collection sessions stored in the (closed) RocksDB at `db`.
async fn add_sessions(db: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let store = RocksStore::open(db, &StoreOptions::default()).unwrap();
    let mut sessions = Vec::new();
    for n in 0..3u32 {
        let record = SessionRecord {
            tenant: "shop".into(),
            origin: "https://shop.example".into(),
            cvc: CvcPolicy::Required,
            reference: Some(format!("order-{n}")),
            created_ms: now_ms(),
            expires_ms: now_ms() + 900_000,
            state: SessionState::Pending,
            refused: 0,
            frames: n,
            frame_nonce: None,
            result: None,
        }
        .encode();
        let id = format!("session-{n}").into_bytes();
        let sweep = (now_ms() + 86_400_000, record.clone());
        assert!(store.swap_session(&id, None, Some(sweep)).await.unwrap());
        sessions.push((id, record));
    }
    Box::new(store).close(Vec::new()).await.unwrap();
    sessions
}

/// The sessions read back from a store.
async fn sessions_in(store: &dyn cardvault::store::Store, made: &Made) {
    for (id, record) in &made.sessions {
        assert_eq!(store.get_session(id).await.unwrap().as_ref(), Some(record));
    }
}

/// Every checked token detokenizes to its PAN and tokenizing the PAN
/// again gives the same token; random-mode tokens detokenize.
async fn check(vault: &Vault, made: &Made) {
    for (i, token) in &made.checked {
        let revealed = vault.detokenize(&shop(), token).await.unwrap();
        assert_eq!(revealed.pan, synthetic_pan(*i));
    }
    let again: Vec<_> = made
        .checked
        .iter()
        .map(|(i, _)| (synthetic_pan(*i), None))
        .collect();
    for ((_, token), info) in made
        .checked
        .iter()
        .zip(vault.tokenize_batch(&shop(), &again).await)
    {
        assert_eq!(
            info.unwrap().token,
            *token,
            "the same PAN got another token"
        );
    }
    for (i, token) in made.random.iter().step_by(50) {
        assert_eq!(
            vault.detokenize(&rand(), token).await.unwrap().pan,
            synthetic_pan(*i)
        );
    }
}

/// `cardvault migrate` with `args`, the database URL in the environment.
fn migrate(url_var: &str, url: &str, args: &[&str]) -> std::process::Command {
    let mut command = cardvault();
    command.env(url_var, url).arg("migrate").args(args);
    command
}

/// Starts a copy and kills it (-9) once `copied()` says it is part-way
/// through the tokens; the progress lines it printed meanwhile.
fn kill_part_way(
    mut command: std::process::Command,
    copied: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let mut child: Child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !copied(&printed) {
        assert!(Instant::now() < deadline, "the copy never got part-way");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the copy ended before it could be killed: {printed:?}"
        );
        if let Ok(line) = seen.recv_timeout(Duration::from_millis(20)) {
            printed.push(line);
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    printed
}

fn succeeds(command: &mut std::process::Command) -> String {
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "migrate failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for table in ["keys", "counters", "tokens", "fingerprints", "sessions"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(table))
            .unwrap_or_else(|| panic!("no count line for {table}: {stdout}"));
        assert!(line.ends_with(" ok"), "{line}");
    }
    assert!(
        stdout.contains("sample check: 200 of 200 tokens detokenized"),
        "{stdout}"
    );
    stdout
}

fn refused_without_resume(command: &mut std::process::Command) {
    let out = command.output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_moves_to_postgres_and_back_through_kills_losing_nothing() {
    let source = TestVaultDir::new();
    let vault = source.open_with(options());
    let mut made = fill(&vault).await;
    vault.close().await.unwrap();
    made.sessions = add_sessions(&source.db_path()).await;
    let pg = Postgres::start();
    let url = pg.url();
    let dir = source.dir.path().to_str().unwrap().to_owned();

    // RocksDB -> PostgreSQL, killed once 20,000 tokens are committed.
    let client = pg.client().await;
    let to_pg = ["--from-data-dir", dir.as_str(), "--page", "500"];
    let handle = tokio::runtime::Handle::current();
    let committed = || {
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                client
                    .query_one("SELECT count(*) FROM cardvault_tokens", &[])
                    .await
                    .map(|r| r.get::<_, i64>(0))
                    .unwrap_or(0)
            })
        })
    };
    kill_part_way(migrate("CARDVAULT_TO_URL", &url, &to_pg), |_| {
        committed() >= 20_000
    });
    let part = committed();
    assert!(part < TOKENS as i64, "nothing was left to resume: {part}");
    // No vault serves a half-copied database.
    let harness = Harness::with(|c| {
        c.storage.backend = StorageBackend::Postgres;
        c.storage.url = Some(DatabaseUrl(url.clone().into()));
    });
    let refused = cardvault::server::Service::launch(&harness.config)
        .await
        .err()
        .expect("a node started on a half-copied database");
    assert!(
        format!("{refused:#}").contains("unfinished copy"),
        "{refused:#}"
    );
    refused_without_resume(&mut migrate("CARDVAULT_TO_URL", &url, &to_pg));
    succeeds(migrate("CARDVAULT_TO_URL", &url, &to_pg).arg("--resume"));
    let stored = pg.store(2).await;
    sessions_in(&stored, &made).await;
    let vault = Vault::with_store(Box::new(stored), provider(source.dir.path()), options())
        .await
        .unwrap();
    check(&vault, &made).await;
    vault.close().await.unwrap();

    // PostgreSQL -> RocksDB, killed once it prints progress on the tokens.
    let back = tempfile::tempdir().unwrap();
    let back_db = back.path().join("db");
    let kek = source.dir.path().join("kek.key");
    let to_rocks = [
        "--to-data-dir",
        back_db.to_str().unwrap(),
        "--kek-file",
        kek.to_str().unwrap(),
        "--page",
        "200",
    ];
    let printed = kill_part_way(migrate("CARDVAULT_FROM_URL", &url, &to_rocks), |lines| {
        lines.iter().any(|l| l.starts_with("migrate: tokens"))
    });
    assert!(
        printed.iter().any(|l| l.contains("rows/s, ETA")),
        "{printed:?}"
    );
    let refused = Vault::open(&back_db, provider(source.dir.path()), options())
        .expect_err("a vault opened a half-copied database");
    assert!(refused.to_string().contains("unfinished copy"), "{refused}");
    refused_without_resume(&mut migrate("CARDVAULT_FROM_URL", &url, &to_rocks));
    succeeds(migrate("CARDVAULT_FROM_URL", &url, &to_rocks).arg("--resume"));
    let stored = RocksStore::open(&back_db, &StoreOptions::default()).unwrap();
    sessions_in(&stored, &made).await;
    Box::new(stored).close(Vec::new()).await.unwrap();
    let vault = Vault::open(&back_db, provider(source.dir.path()), options()).unwrap();
    check(&vault, &made).await;
    vault.close().await.unwrap();
    for (i, _) in made.checked.iter().take(5) {
        let digits = crate::common::luhn_complete(&format!("49{i:013}")).into_bytes();
        assert!(files_containing(back.path(), &digits).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_password_never_reaches_the_output() {
    let source = TestVaultDir::new();
    source.open().close().await.unwrap();
    let target = tempfile::tempdir().unwrap();
    let target = target.path().join("db");
    let canary = "Pw-canary-7f3e91";
    let url = format!(
        "host=127.0.0.1 port=1 user=cardvault password={canary} dbname=vault sslmode=disable connect_timeout=2"
    );
    let dir = source.dir.path().to_str().unwrap().to_owned();
    for (var, args) in [
        ("CARDVAULT_TO_URL", vec!["--from-data-dir", dir.as_str()]),
        (
            "CARDVAULT_FROM_URL",
            vec!["--to-data-dir", target.to_str().unwrap(), "--sample", "0"],
        ),
    ] {
        let out = migrate(var, &url, &args).output().unwrap();
        assert!(!out.status.success());
        let printed = [out.stdout, out.stderr].concat();
        let printed = String::from_utf8_lossy(&printed);
        assert!(printed.contains("Connection refused"), "{printed}");
        assert!(!printed.contains(canary), "{printed}");
    }
    let out = migrate("CARDVAULT_TO_URL", &url, &["--help"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains(canary));
}
