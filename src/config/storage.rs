//! The `[storage]` section: the backend (RocksDB in `data_dir`, or
//! PostgreSQL by `url`, redacted wherever it is printed), the KEK file of
//! the file provider, the free-space reserve and RocksDB's memory.

use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Storage.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `rocksdb` (embedded, the default) or `postgres` (shared by several
    /// stateless nodes).
    #[serde(default)]
    pub backend: StorageBackend,
    /// PostgreSQL: libpq-style URL or `key=value` string (multi-host with
    /// `target_session_attrs=read-write` follows a failover). May hold the
    /// password: never printed (`<redacted>` when the config is shown).
    #[serde(default)]
    pub url: Option<DatabaseUrl>,
    /// PostgreSQL: connections per node.
    #[serde(default = "default_pool_size")]
    pub pool_size: NonZeroUsize,
    /// PostgreSQL: CA bundle for TLS to the database (rustls; the server's
    /// certificate and name are always verified). Required unless the URL
    /// says `sslmode=disable`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PostgreSQL: a file holding the database password (mode 0600, owned
    /// by the vault; a trailing newline is dropped), for a URL without
    /// one: a Kubernetes Secret or a systemd credential instead of the
    /// environment. Read at each start.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PostgreSQL: a node whose probe commit (one a second, waiting for the
    /// synchronous standby like every insert) has not completed within
    /// this many milliseconds answers `/readyz` 503 until one does; also
    /// the connect timeout per host when the URL sets none.
    #[serde(default = "default_commit_bound_ms")]
    pub commit_bound_ms: NonZeroU64,
    /// RocksDB directory; with PostgreSQL, the node's own state (its lock,
    /// the custodian set file).
    pub data_dir: PathBuf,
    /// Where a running vault writes the backups an admin asks for
    /// (`POST /v1/admin/backup`, `cardvault backup`); default: `backups`
    /// beside `data_dir`. Keep it on the data's file system (RocksDB's
    /// checkpoint then hard-links instead of copying).
    #[serde(default)]
    pub backup_dir: Option<PathBuf>,
    /// KEK file (32 bytes, mode 0600) for the file provider.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Refuse writes (503) while the data directory's filesystem has less
    /// free space than this, so RocksDB never meets a full disk.
    #[serde(default = "default_min_free_bytes")]
    pub min_free_bytes: u64,
    /// RocksDB block cache, shared by all column families: index and filter
    /// partitions (about 6 bytes per stored token) and hot data blocks.
    #[serde(default = "default_block_cache_bytes")]
    pub block_cache_bytes: NonZeroUsize,
    /// RocksDB memtable size of each of the tokens and fingerprints column
    /// families (docs/BENCHMARKS.md, "Seventh sitting").
    #[serde(default = "default_write_buffer_bytes")]
    pub write_buffer_bytes: NonZeroUsize,
}

/// Which store a node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// Embedded RocksDB in `storage.data_dir`.
    #[default]
    Rocksdb,
    /// PostgreSQL at `storage.url`.
    Postgres,
}

/// A database URL: read from the config or `CARDVAULT_STORAGE__URL`,
/// wiped on drop, printed and serialized as `<redacted>`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(pub secrecy::SecretString);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(<redacted>)")
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

fn default_commit_bound_ms() -> NonZeroU64 {
    NonZeroU64::new(5000).unwrap_or(NonZeroU64::MIN)
}

fn default_pool_size() -> NonZeroUsize {
    NonZeroUsize::new(16).unwrap_or(NonZeroUsize::MIN)
}

impl StorageConfig {
    /// Where a running vault writes backups.
    pub fn backup_dir(&self) -> PathBuf {
        self.backup_dir.clone().unwrap_or_else(|| {
            self.data_dir
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join("backups")
        })
    }

    /// The PostgreSQL settings (`backend = "postgres"`).
    pub fn postgres(&self) -> Result<crate::store::postgres::PgSettings, ConfigError> {
        let url = self.url.clone().ok_or_else(|| {
            ConfigError::new("storage.url", "required with backend = \"postgres\"")
        })?;
        Ok(crate::store::postgres::PgSettings {
            url: url.0,
            pool_size: self.pool_size.get(),
            ca_file: self.ca_file.clone(),
            password_file: self.password_file.clone(),
            commit_bound: std::time::Duration::from_millis(self.commit_bound_ms.get()),
            node_dir: Some(self.data_dir.clone()),
        })
    }
}

fn default_min_free_bytes() -> u64 {
    crate::store::rocksdb::StoreOptions::default().min_free_bytes
}

fn default_block_cache_bytes() -> NonZeroUsize {
    NonZeroUsize::new(crate::store::rocksdb::StoreOptions::default().block_cache_bytes)
        .unwrap_or(NonZeroUsize::MIN)
}

fn default_write_buffer_bytes() -> NonZeroUsize {
    NonZeroUsize::new(crate::store::rocksdb::StoreOptions::default().write_buffer_bytes)
        .unwrap_or(NonZeroUsize::MIN)
}
