//! The PostgreSQL schema and its versioned migrations, applied at open
//! under an advisory lock (so nodes starting together apply each once). A
//! database whose schema is newer than this build opens as it is when it
//! says this build can still use it (`cardvault_schema_compat`: the next
//! release's additive change — a rollback); any other newer one is refused
//! with the same clear error as a newer RocksDB format. docs/upgrade.md.
//!
//! Nothing stored is plaintext card data: keys are tokens and HMACs,
//! entries are the codec's bytes (metadata + AES-GCM ciphertext), key
//! records are wrapped by the KEK.

use deadpool_postgres::Object;

use crate::store::StoreError;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i32 = 6;

/// The oldest schema whose builds can use a database of this build's
/// schema (recorded in `cardvault_schema_compat`): an additive migration
/// (a column or table old builds do not read) keeps the previous value,
/// one that changes what old builds read raises it.
pub const SCHEMA_READABLE_BY: i32 = 6;

/// Migration `n` (1-based) brings the schema from `n - 1` to `n`.
const MIGRATIONS: [&str; 6] = [
    r#"
CREATE TABLE cardvault_tokens (
    tenant text COLLATE "C" NOT NULL,
    token text COLLATE "C" NOT NULL,
    entry bytea NOT NULL,
    expires_ms bigint,
    PRIMARY KEY (tenant, token)
);
CREATE INDEX cardvault_tokens_expiry ON cardvault_tokens (expires_ms)
    WHERE expires_ms IS NOT NULL;
CREATE TABLE cardvault_fingerprints (
    tenant text COLLATE "C" NOT NULL,
    fingerprint bytea NOT NULL,
    token text COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, fingerprint)
);
CREATE TABLE cardvault_keys (
    key bytea PRIMARY KEY,
    tenant text NOT NULL,
    record bytea NOT NULL
);
CREATE TABLE cardvault_counters (
    key bytea PRIMARY KEY,
    tenant text NOT NULL,
    value bigint NOT NULL
);
CREATE TABLE cardvault_checkpoints (
    tenant text PRIMARY KEY,
    data bytea NOT NULL
);
"#,
    r#"
-- A key's state beside its record, so an insert can check, in its own
-- transaction, that the data key it sealed with is still the active one.
ALTER TABLE cardvault_keys ADD COLUMN state text NOT NULL DEFAULT 'active';
"#,
    r#"
-- 128-bit fingerprints (crypto::fingerprint): the first 16 bytes of the
-- 256-bit HMACs stored so far. Entries keep theirs until rewritten (the
-- codec reads both).
UPDATE cardvault_fingerprints SET fingerprint = substring(fingerprint FROM 1 FOR 16)
    WHERE length(fingerprint) = 32;
"#,
    r#"
-- Hosted-field collection sessions (store::codec::SessionRecord: no PAN,
-- no security code), deleted by the sweep after sweep_at_ms.
CREATE TABLE cardvault_collect_sessions (
    id bytea PRIMARY KEY,
    sweep_at_ms bigint NOT NULL,
    record bytea NOT NULL
);
CREATE INDEX cardvault_collect_sessions_sweep ON cardvault_collect_sessions (sweep_at_ms);
"#,
    r#"
-- The cursors of an unfinished `cardvault migrate` into this database
-- (store::transfer), one row a table; deleted when the copy ends.
CREATE TABLE cardvault_migration (
    name text PRIMARY KEY,
    cursor bytea NOT NULL
);
"#,
    r#"
-- Refuses a group insert written in one statement (store::postgres::writer)
-- when anything but a plain insert of every item happened: the statement,
-- and so everything it wrote, is rolled back, and the node writes the
-- group step by step.
CREATE OR REPLACE FUNCTION cardvault_refuse_group() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'cardvault: the group needs steps' USING ERRCODE = 'CV001';
END
$$;
"#,
];

/// An arbitrary constant: the advisory lock migrations hold.
const MIGRATION_LOCK: i64 = 0x6361_7264_7661_756c;

/// Brings the schema to [`SCHEMA_VERSION`], or refuses a newer one.
pub async fn migrate(client: &mut Object, describe: &str) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS cardvault_schema (version integer NOT NULL)")
        .await
        .map_err(pg)?;
    let found: Option<i32> = tx
        .query_one("SELECT max(version) FROM cardvault_schema", &[])
        .await
        .map_err(pg)?
        .get(0);
    let found = found.unwrap_or(0);
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS cardvault_schema_compat (readable_by integer NOT NULL)",
    )
    .await
    .map_err(pg)?;
    let floor: Option<i32> = tx
        .query_one("SELECT max(readable_by) FROM cardvault_schema_compat", &[])
        .await
        .map_err(pg)?
        .get(0);
    if found > SCHEMA_VERSION {
        // Before the compat table, each schema was its own floor.
        let readable_by = floor.unwrap_or(found);
        if readable_by > SCHEMA_VERSION {
            return Err(StoreError::NewerFormat {
                path: describe.into(),
                found: found as u32,
                supported: SCHEMA_VERSION as u32,
            });
        }
        tracing::warn!(
            found,
            readable_by,
            this = SCHEMA_VERSION,
            "the database schema was written by a newer build that keeps it usable by this one (a rollback): used as it is"
        );
        return tx.commit().await.map_err(pg);
    }
    for version in found + 1..=SCHEMA_VERSION {
        tx.batch_execute(MIGRATIONS[(version - 1) as usize])
            .await
            .map_err(pg)?;
        tx.execute(
            "INSERT INTO cardvault_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(pg)?;
        tracing::info!(version, "applied a database schema migration");
    }
    if floor != Some(SCHEMA_READABLE_BY) {
        tx.batch_execute("DELETE FROM cardvault_schema_compat")
            .await
            .map_err(pg)?;
        tx.execute(
            "INSERT INTO cardvault_schema_compat (readable_by) VALUES ($1)",
            &[&SCHEMA_READABLE_BY],
        )
        .await
        .map_err(pg)?;
    }
    tx.commit().await.map_err(pg)
}

/// A PostgreSQL error as a store error. The message is the server's; it
/// never holds a password (connection strings are not part of errors).
pub fn pg(e: tokio_postgres::Error) -> StoreError {
    let message = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        // "error connecting to server" and why: refused, timed out, "database
        // does not allow writes" (the URL's hosts, never its password).
        None => match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    };
    StoreError::Backend(format!("postgres: {message}"))
}
