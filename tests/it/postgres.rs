//! Three vault nodes on one real PostgreSQL 15: 48 concurrent clients
//! spread over the nodes tokenize an overlapping set of PANs while the
//! tenant's keys do not exist yet (so the nodes race to create them) —
//! exactly one token per PAN, and every token detokenizes on every node.
//! Nothing in the database is plaintext: `pg_dump` and the server's data
//! directory hold no PAN. Each node writes its own audit trail.

use std::collections::{BTreeMap, BTreeSet};

use cardvault::config::{Config, DatabaseUrl, StorageBackend};
use serde_json::json;

use crate::common::harness::Harness;
use crate::common::postgres::Postgres;
use crate::common::{self, luhn_complete};

fn node(base: &Config, dir: &std::path::Path) -> Config {
    let mut config = base.clone();
    config.storage.data_dir = dir.join("db");
    config.audit.dir = dir.join("audit");
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_one_database_agree_on_every_token() {
    let pg = Postgres::start();
    let url = pg.url();
    let harness = Harness::with(|c| {
        c.storage.backend = StorageBackend::Postgres;
        c.storage.url = Some(DatabaseUrl(url.clone().into()));
    });
    let others = tempfile::tempdir().unwrap();
    let configs = [
        harness.config.clone(),
        node(&harness.config, &others.path().join("b")),
        node(&harness.config, &others.path().join("c")),
    ];
    let mut nodes = Vec::new();
    for config in &configs {
        nodes.push(cardvault::server::Service::launch(config).await.unwrap());
    }
    let addrs: Vec<_> = nodes.iter().map(|n| n.api_addr).collect();

    // 48 clients, each on node i % 3, tokenizing 30 PANs of a set of 40 in
    // its own order.
    let pans: Vec<String> = (0..40)
        .map(|i| luhn_complete(&format!("5100{i:011}")))
        .collect();
    let mut clients = Vec::new();
    for c in 0..48usize {
        let tls = harness.tls("cart");
        let addr = addrs[c % 3];
        let pans = pans.clone();
        clients.push(tokio::spawn(async move {
            let mut conn = tls.connect(addr).await.unwrap();
            let mut seen = Vec::new();
            for k in 0..30 {
                let pan = &pans[(c * 7 + k * 3) % pans.len()];
                let reply = conn
                    .post_json("/v1/tokenize", &json!({"pan": pan}))
                    .await
                    .unwrap();
                assert_eq!(
                    reply.status,
                    200,
                    "{}",
                    String::from_utf8_lossy(&reply.body)
                );
                seen.push((
                    pan.clone(),
                    reply.json()["token"].as_str().unwrap().to_owned(),
                ));
            }
            seen
        }));
    }
    let mut tokens: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for client in clients {
        for (pan, token) in client.await.unwrap() {
            tokens.entry(pan).or_default().insert(token);
        }
    }
    assert_eq!(tokens.len(), pans.len(), "every PAN was tokenized");
    for (pan, set) in &tokens {
        assert_eq!(
            set.len(),
            1,
            "PAN ending {} got {} tokens",
            &pan[12..],
            set.len()
        );
    }

    // Every token detokenizes on every node.
    for addr in &addrs {
        let mut payments = harness.tls("payments").connect(*addr).await.unwrap();
        for (pan, set) in &tokens {
            let token = set.iter().next().unwrap();
            let reply = payments
                .post_json("/v1/detokenize", &json!({"token": token}))
                .await
                .unwrap();
            assert_eq!(
                reply.status,
                200,
                "{}",
                String::from_utf8_lossy(&reply.body)
            );
            assert_eq!(reply.json()["pan"], pan.as_str());
        }
    }
    // A rotation on node 0 is used by node 1 at once: its next seal under
    // the old key is refused by the store, it reads the keys and seals
    // under the new one; node 2 reveals the token.
    let mut admin = harness.tls("admin").connect(addrs[0]).await.unwrap();
    let rotated = admin
        .send(hyper::Method::POST, "/v1/admin/keys/default/rotate", None)
        .await
        .unwrap();
    assert_eq!(
        rotated.status,
        200,
        "{}",
        String::from_utf8_lossy(&rotated.body)
    );
    let mut cart = harness.tls("cart").connect(addrs[1]).await.unwrap();
    let fresh_pan = luhn_complete("510099999999999");
    let fresh = common::tokenize(&mut cart, &fresh_pan).await;
    let mut payments = harness.tls("payments").connect(addrs[2]).await.unwrap();
    let reply = payments
        .post_json("/v1/detokenize", &json!({"token": fresh}))
        .await
        .unwrap();
    assert_eq!(reply.json()["pan"], fresh_pan.as_str());
    let inventory = admin
        .get("/v1/admin/keys?records=true")
        .await
        .unwrap()
        .json();
    let v2 = inventory["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["purpose"] == "pan-encryption" && k["version"] == 2)
        .unwrap()
        .clone();
    assert_eq!(
        v2["records"], 1,
        "node 1 sealed under the new key: {inventory}"
    );

    // A fingerprint-key rotation and the re-encryption that moves every
    // index entry, on node 0; node 1 still fingerprints with the old key
    // until the store refuses it, then finds each PAN's one token.
    let rotated = admin
        .send(
            hyper::Method::POST,
            "/v1/admin/keys/default/rotate?purpose=fingerprint",
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        rotated.status,
        200,
        "{}",
        String::from_utf8_lossy(&rotated.body)
    );
    let started = admin
        .send(
            hyper::Method::POST,
            "/v1/admin/keys/default/reencrypt",
            Some(("application/json", b"{}".to_vec())),
        )
        .await
        .unwrap();
    assert!(
        started.status.is_success(),
        "{}",
        String::from_utf8_lossy(&started.body)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = admin
            .get("/v1/admin/keys/default/reencrypt")
            .await
            .unwrap()
            .json();
        if status["state"] == "done" {
            break;
        }
        assert_ne!(status["state"], "failed", "{status}");
        assert!(std::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    for (pan, set) in tokens.iter().take(8) {
        let again = common::tokenize(&mut cart, pan).await;
        assert_eq!(
            &again,
            set.iter().next().unwrap(),
            "a second token after the rotation"
        );
    }
    drop((admin, cart, payments));

    for n in nodes {
        n.stop().await.unwrap();
    }

    // Each node kept its own trail, its id in every entry and segment name.
    let mut ids = BTreeSet::new();
    for config in &configs {
        let trail = common::entries(&config.audit.dir);
        assert!(!common::of_kind(&trail, "tokenize").is_empty());
        let id = trail[0]["node"].as_str().unwrap().to_owned();
        assert!(
            trail.iter().all(|e| e["node"] == id.as_str()),
            "one node id per trail"
        );
        let segments = cardvault::audit::segments(&config.audit.dir).unwrap();
        assert!(segments.iter().all(|(_, p)| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("audit-{id}-"))
        }));
        let provider =
            cardvault::crypto::KeyFileProvider::open(config.storage.key_file.as_ref().unwrap())
                .unwrap();
        let with = cardvault::audit::VerifyWith {
            provider: Some(&provider),
            allow_anchor: false,
            checkpoints: None,
        };
        let verdict = cardvault::audit::verify(&config.audit.dir, &with).unwrap();
        assert!(verdict.is_ok(), "each node's chain verifies");
        ids.insert(id);
    }
    assert_eq!(ids.len(), 3, "three distinct node ids");

    // Nothing plaintext in PostgreSQL: a dump and the data directory.
    let port = pg.port().to_string();
    let dump = Postgres::tool(
        "pg_dump",
        &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "postgres"],
    );
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = dump.stdout;
    assert!(
        String::from_utf8_lossy(&dump).contains("cardvault_tokens"),
        "a real dump"
    );
    for pan in &pans {
        assert!(
            !dump.windows(pan.len()).any(|w| w == pan.as_bytes()),
            "a PAN in pg_dump"
        );
        assert!(
            common::files_containing(&pg.data_dir(), pan.as_bytes()).is_empty(),
            "a PAN in PostgreSQL's files"
        );
    }
}

/// kill -9 of a node under `cardvault load --ack-log`: every acknowledged
/// token detokenizes on another node (two dev nodes sharing one dev PKI,
/// KEK and database, as docs/postgres.md describes).
#[test]
fn a_node_killed_under_load_loses_no_acknowledged_token() {
    let pg = Postgres::start();
    // The server trusts loopback, so the password is never checked: it is
    // a canary that must not show up in any log or on /metrics.
    let url = format!("{} password=PgPassCanary91", pg.url());
    let env = [
        ("CARDVAULT_STORAGE__BACKEND", "postgres"),
        ("CARDVAULT_STORAGE__URL", url.as_str()),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let a_dir = tmp.path().join("a");
    let a = common::DevServer::start_with(&a_dir, &env);
    let b_dir = tmp.path().join("b");
    std::fs::create_dir_all(b_dir.join("pki")).unwrap();
    for entry in std::fs::read_dir(a_dir.join("pki")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), b_dir.join("pki").join(entry.file_name())).unwrap();
    }
    for file in ["kek.key", "cardvault.toml"] {
        std::fs::copy(a_dir.join(file), b_dir.join(file)).unwrap();
    }
    let b = common::DevServer::start_with(&b_dir, &env);

    let acks = tmp.path().join("acks.jsonl");
    let acks_arg = acks.to_str().unwrap().to_owned();
    let load = a.spawn_load(&[
        "--op",
        "tokenize",
        "--concurrency",
        "8",
        "--duration",
        "30s",
        "--ack-log",
        &acks_arg,
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_to_string(&acks).map_or(0, |t| t.lines().count()) < 300 {
        assert!(
            std::time::Instant::now() < deadline,
            "no acknowledged tokens"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    a.kill_9();
    let _ = load.wait_with_output();
    let report = b.verify_acks(&acks);
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["mismatched"], 0, "{report}");
    assert!(report["verified"].as_u64().unwrap() >= 300, "{report}");
    let (_, metrics) = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(crate::common::harness::ops_get(b.ops_addr(), "/metrics"));
    assert!(metrics.contains("cardvault_"), "metrics read");
    b.stop();
    for text in [
        std::fs::read_to_string(a_dir.join("serve.log")).unwrap(),
        std::fs::read_to_string(b_dir.join("serve.log")).unwrap(),
        metrics,
    ] {
        assert!(
            !text.contains("PgPassCanary91"),
            "the database password leaked"
        );
    }
}

/// A schema-2 database (256-bit fingerprints) is raised to schema 3 at
/// connect: its index rows hold the first 16 bytes, and a PAN's token is
/// found with the 128-bit fingerprint this build computes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_2_database_is_raised_to_short_fingerprints() {
    use cardvault::crypto::Fingerprint;
    use cardvault::store::Store as _;
    use cardvault::{TenantId, Token};
    let pg = Postgres::start();
    Box::new(pg.store(2).await).close(Vec::new()).await.unwrap();
    let client = pg.client().await;
    let short = [7u8; 16];
    let mut long = short.to_vec();
    long.extend_from_slice(&[0xee; 16]);
    client
        .batch_execute(
            "DELETE FROM cardvault_schema WHERE version >= 3; DROP TABLE cardvault_collect_sessions; \
             DROP TABLE cardvault_migration",
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO cardvault_fingerprints (tenant, fingerprint, token) VALUES ('shop', $1, '4111119274601111')",
            &[&long],
        )
        .await
        .unwrap();
    let store = pg.store(2).await;
    let tenant = TenantId::parse("shop").unwrap();
    let found = store
        .get_token_for(&tenant, &Fingerprint::from_slice(&short).unwrap())
        .await
        .unwrap();
    assert_eq!(found, Some(Token::parse("4111119274601111").unwrap()));
    let row = client
        .query_one(
            "SELECT max(version), (SELECT max(length(fingerprint)) FROM cardvault_fingerprints) FROM cardvault_schema",
            &[],
        )
        .await
        .unwrap();
    // Raised through schema 3 to this build's (5: migration cursors).
    assert_eq!(
        row.get::<_, Option<i32>>(0),
        Some(cardvault::store::postgres::SCHEMA_VERSION)
    );
    assert_eq!(row.get::<_, Option<i32>>(1), Some(16));
}

/// An upgrade, then a rollback, on PostgreSQL: the next release's additive
/// migration (schema one higher, a column of its own, the compat floor
/// left at this schema) is used by this build as it is, and left as it
/// was; a newer schema whose floor is above this build is refused.
/// docs/upgrade.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_uses_the_next_releases_additive_schema_unchanged() {
    use cardvault::store::Store as _;
    use cardvault::store::postgres::{SCHEMA_READABLE_BY, SCHEMA_VERSION};
    let pg = Postgres::start();
    Box::new(pg.store(2).await).close(Vec::new()).await.unwrap();
    let client = pg.client().await;
    let floor: i32 = client
        .query_one("SELECT max(readable_by) FROM cardvault_schema_compat", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(floor, SCHEMA_READABLE_BY);
    let next = SCHEMA_VERSION + 1;
    client
        .execute(
            "INSERT INTO cardvault_schema (version) VALUES ($1)",
            &[&next],
        )
        .await
        .unwrap();
    client
        .batch_execute("ALTER TABLE cardvault_tokens ADD COLUMN next_release text")
        .await
        .unwrap();
    let store = pg.store(2).await;
    assert!(
        store.describe().contains("postgres"),
        "{}",
        store.describe()
    );
    Box::new(store).close(Vec::new()).await.unwrap();
    let row = client
        .query_one(
            "SELECT max(version), (SELECT max(readable_by) FROM cardvault_schema_compat) FROM cardvault_schema",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<i32>>(0),
        Some(next),
        "the rollback left the schema as it was"
    );
    assert_eq!(row.get::<_, Option<i32>>(1), Some(SCHEMA_READABLE_BY));
    // A next release that old builds cannot use: refused, clearly.
    client
        .execute(
            "UPDATE cardvault_schema_compat SET readable_by = $1",
            &[&next],
        )
        .await
        .unwrap();
    let settings = cardvault::store::postgres::PgSettings {
        url: pg.url().into(),
        pool_size: 2,
        ca_file: None,
        password_file: None,
        commit_bound: std::time::Duration::from_secs(5),
        node_dir: None,
    };
    let Err(err) = cardvault::store::postgres::PgStore::connect(&settings).await else {
        panic!("a schema this build cannot use was opened");
    };
    assert!(
        err.to_string().contains("newer than this build supports"),
        "{err}"
    );
}

/// A point lookup prepared while its table was small still uses the
/// primary key once the table has grown. PostgreSQL may cache a generic
/// plan for a prepared statement after five executions; made from the
/// statistics of a small table it is a scan of the whole table (or of
/// the tenant), and it is kept as the table grows until the next ANALYZE
/// (tokenize fell 3-5x in benches/postgres.sh). The store plans every
/// execution for the table as it is (`plan_cache_mode`); without that
/// this test counts 0 index scans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_prepared_on_a_small_table_use_the_index_once_it_grows() {
    use cardvault::crypto::Fingerprint;
    use cardvault::store::Store as _;
    use cardvault::{TenantId, Token};
    let pg = Postgres::start();
    // One connection: every lookup runs on the session that prepared it.
    let store = pg.store(1).await;
    let client = pg.client().await;
    // No ANALYZE behind the test's back: the plans see only what the
    // planner reads from the tables themselves.
    client
        .batch_execute(
            "ALTER TABLE cardvault_fingerprints SET (autovacuum_enabled = false); \
             ALTER TABLE cardvault_tokens SET (autovacuum_enabled = false)",
        )
        .await
        .unwrap();
    let tenant = TenantId::parse("shop").unwrap();
    let absent_fp = Fingerprint::from_slice(&[0xab; 16]).unwrap();
    let absent_token = Token::parse("4111110000001111").unwrap();
    /// Point lookups of absent keys, each statement LOOKUPS times.
    async fn lookups(
        store: &cardvault::store::postgres::PgStore,
        tenant: &TenantId,
        fingerprint: &Fingerprint,
        token: &Token,
    ) {
        for _ in 0..LOOKUPS {
            assert_eq!(
                store.get_token_for(tenant, fingerprint).await.unwrap(),
                None
            );
            let many = store
                .get_tokens_for(tenant, std::slice::from_ref(fingerprint))
                .await
                .unwrap();
            assert_eq!(many, vec![None]);
            assert!(store.get_entry(tenant, token).await.unwrap().is_none());
        }
    }
    const LOOKUPS: i64 = 10;
    let fill = |from: i32, to: i32| {
        format!(
            "INSERT INTO cardvault_fingerprints (tenant, fingerprint, token) \
             SELECT 'shop', decode(lpad(to_hex(i), 32, '0'), 'hex'), lpad(i::text, 16, '0') \
             FROM generate_series({from}, {to}) AS i; \
             INSERT INTO cardvault_tokens (tenant, token, entry) \
             SELECT 'shop', lpad(i::text, 16, '0'), '\\x00' FROM generate_series({from}, {to}) AS i"
        )
    };
    // What autovacuum does soon after a new table's first rows arrive.
    client.batch_execute(&fill(1, 100)).await.unwrap();
    client.batch_execute("ANALYZE").await.unwrap();
    lookups(&store, &tenant, &absent_fp, &absent_token).await;
    client.batch_execute(&fill(101, 50_000)).await.unwrap();
    lookups(&store, &tenant, &absent_fp, &absent_token).await;
    // The server counts scans when the session ends.
    Box::new(store).close(Vec::new()).await.unwrap();
    let stats = "SELECT relname::text, seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables \
                 WHERE relname IN ('cardvault_fingerprints', 'cardvault_tokens') ORDER BY relname";
    let per_table_lookups = [2 * LOOKUPS, LOOKUPS];
    let mut scans = Vec::new();
    for _ in 0..300 {
        client
            .batch_execute("SELECT pg_stat_clear_snapshot()")
            .await
            .unwrap();
        scans = client
            .query(stats, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    r.get::<_, i64>(1),
                    r.get::<_, i64>(2),
                )
            })
            .collect::<Vec<_>>();
        let counted = scans.len() == 2
            && scans
                .iter()
                .zip(per_table_lookups)
                .all(|((_, seq, idx), n)| seq + idx >= 2 * n);
        if counted {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Before the table grew a scan of it was as good as the index; after,
    // every lookup must have used the index.
    for ((table, _, idx), n) in scans.iter().zip(per_table_lookups) {
        assert!(*idx >= n, "{table}: {scans:?}");
    }
}

/// Point reads of concurrent requests share one query (store/postgres/
/// reads.rs): the same token and the same card asked for by 200 requests
/// at once, mixed with absent ones, each get their own answer — a batch
/// holding a key twice answers both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_of_the_same_token_each_get_it() {
    use cardvault::crypto::KeyFileProvider;
    use cardvault::{TenantId, Token, Vault, VaultOptions};
    let pg = Postgres::start();
    let dir = common::TestVaultDir::new();
    let provider =
        std::sync::Arc::new(KeyFileProvider::open(&dir.dir.path().join("kek.key")).unwrap());
    let vault = std::sync::Arc::new(
        Vault::with_store(
            Box::new(pg.store(4).await),
            provider,
            VaultOptions::default(),
        )
        .await
        .unwrap(),
    );
    let tenant = TenantId::parse("shop").unwrap();
    let pan = || common::synthetic_pan(7);
    let token = vault.tokenize_batch(&tenant, &[(pan(), None)]).await[0]
        .as_ref()
        .unwrap()
        .token;
    let absent = Token::parse("4900000000000000").unwrap_or(token);
    let mut reads = tokio::task::JoinSet::new();
    for i in 0..400 {
        let (vault, tenant) = (std::sync::Arc::clone(&vault), tenant.clone());
        reads.spawn(async move {
            match i % 4 {
                0 | 1 => Some(vault.detokenize(&tenant, &token).await.unwrap().pan == pan()),
                2 => Some(vault.lookup(&tenant, &pan()).await.unwrap().token == token),
                _ => {
                    if absent != token {
                        assert!(vault.detokenize(&tenant, &absent).await.is_err());
                    }
                    None
                }
            }
        });
    }
    let mut answered = 0;
    while let Some(done) = reads.join_next().await {
        if let Some(right) = done.unwrap() {
            assert!(right);
            answered += 1;
        }
    }
    assert_eq!(answered, 300);
}

/// `storage.password_file`: a database that asks for a password (SCRAM)
/// is reached with the password read from a private file, and a token
/// round-trips. A missing or wrong password is refused by the server, a
/// file group or others can read is refused before connecting, and a URL
/// that holds a password as well is refused; no error quotes the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_password_comes_from_a_private_file() {
    use cardvault::store::Store as _;
    use std::os::unix::fs::PermissionsExt as _;
    const PASSWORD: &str = "canary-pw-7f3a9c41e2";
    let pg = Postgres::start();
    let client = pg.client().await;
    for statement in [
        "SET password_encryption = 'scram-sha-256'".to_owned(),
        format!("CREATE ROLE vaulter LOGIN PASSWORD '{PASSWORD}'"),
        "CREATE DATABASE cardvault OWNER vaulter".to_owned(),
    ] {
        client.batch_execute(&statement).await.unwrap();
    }
    // The vault's role must give its password; the trust line for the
    // test's own `postgres` user stays after it.
    let hba = pg.data_dir().join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all vaulter 127.0.0.1/32 scram-sha-256\n{rules}"),
    )
    .unwrap();
    client
        .query_one("SELECT pg_reload_conf()", &[])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("db-password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let url = format!(
        "host=127.0.0.1 port={} user=vaulter dbname=cardvault sslmode=disable",
        pg.port()
    );
    let settings = |url: &str, password_file: Option<&std::path::Path>| {
        cardvault::store::postgres::PgSettings {
            url: url.to_owned().into(),
            pool_size: 2,
            ca_file: None,
            password_file: password_file.map(std::path::Path::to_path_buf),
            commit_bound: std::time::Duration::from_secs(5),
            node_dir: None,
        }
    };
    let refused = |result: Result<cardvault::store::postgres::PgStore, _>| match result {
        Ok(_) => panic!("connected"),
        Err(e) => {
            let text = format!("{e} {e:?}");
            assert!(!text.contains(PASSWORD), "the password in an error: {text}");
            text
        }
    };
    // The server asks for the password: without the file, refused.
    refused(cardvault::store::postgres::PgStore::connect(&settings(&url, None)).await);
    // With it, the vault's store works.
    let store = cardvault::store::postgres::PgStore::connect(&settings(&url, Some(&file)))
        .await
        .unwrap();
    assert!(
        store.describe().contains("postgres"),
        "{}",
        store.describe()
    );
    Box::new(store).close(Vec::new()).await.unwrap();
    let (owner, connection) = tokio_postgres::connect(
        &pg.url().replace("dbname=postgres", "dbname=cardvault"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let made: i64 = owner
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'cardvault_tokens' AND tableowner = 'vaulter'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(made, 1, "the vault's schema was not made as its role");
    // A wrong password: the server refuses it.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    refused(cardvault::store::postgres::PgStore::connect(&settings(&url, Some(&wrong))).await);
    // A file others can read: refused before any connection.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text =
        refused(cardvault::store::postgres::PgStore::connect(&settings(&url, Some(&file))).await);
    assert!(text.contains("mode 0644"), "{text}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A password in the URL as well: which one is meant? Refused.
    let with_password = format!("{url} password={PASSWORD}x");
    let text = refused(
        cardvault::store::postgres::PgStore::connect(&settings(&with_password, Some(&file))).await,
    );
    assert!(text.contains("keep one"), "{text}");
}
