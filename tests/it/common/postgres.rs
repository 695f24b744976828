//! A real PostgreSQL 15 for one test: `initdb` in a temporary directory,
//! `pg_ctl start` on a free loopback port (PostgreSQL refuses to run as
//! root, so as root the server runs as the `postgres` system user, which
//! owns the directory), stopped when dropped. No mocked database.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's PostgreSQL 15 binaries live.
const BIN: &str = "/usr/lib/postgresql/15/bin";

/// A running PostgreSQL.
pub struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
}

fn as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `program args…`, as the `postgres` user when this process is root.
fn run(program: &str, args: &[&str]) -> std::process::Output {
    let path = Path::new(BIN).join(program);
    let mut command = if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&path);
        c
    } else {
        Command::new(&path)
    };
    command.args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run {} (apt-get install postgresql): {e}",
            path.display()
        )
    })
}

impl Postgres {
    /// Starts a fresh server; panics with the server log if it does not come up.
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        if as_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let data = dir.path().join("data");
        let out = run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Postgres { dir, port };
        server.start_again();
        server
    }

    /// Starts the server (again) on its data directory and port; panics
    /// with the server log if it does not come up.
    pub fn start_again(&self) {
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=50",
            self.port,
            self.dir.path().display()
        );
        let out = run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        if !out.status.success() {
            panic!(
                "pg_ctl start: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    }

    /// Stops the server (fast shutdown: sessions are cut, as in a restart).
    pub fn stop(&self) {
        let data = self.data_dir();
        let out = run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A connection string for the `postgres` database (trust, loopback).
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable",
            self.port
        )
    }

    /// The data directory (for scanning its files).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs one of PostgreSQL's programs (`pg_dump`, …) against this
    /// server's binaries, as the `postgres` user when this process is root.
    pub fn tool(program: &str, args: &[&str]) -> std::process::Output {
        run(program, args)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The vault's PostgreSQL store on this server, `pool_size` connections.
    pub async fn store(&self, pool_size: usize) -> cardvault::store::postgres::PgStore {
        let settings = cardvault::store::postgres::PgSettings {
            url: self.url().into(),
            pool_size,
            ca_file: None,
            password_file: None,
            commit_bound: std::time::Duration::from_secs(5),
            node_dir: None,
        };
        cardvault::store::postgres::PgStore::connect(&settings)
            .await
            .unwrap()
    }

    /// A plain client of this server, for a test to look behind the store.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap_or(""),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}
