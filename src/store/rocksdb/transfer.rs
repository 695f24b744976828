//! [`Transfer`] for RocksDB: each table is a column family (or one kind of
//! key in one), read in key order; an import is one synced `WriteBatch`
//! holding the rows, the expiry index entries of expiring tokens and the
//! copy's cursor (`meta` key `migrate/<table>`). Imports write the database
//! directly, not through the writer: the copy is the store's only user.

use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::key_filter::key_digest;
use super::sessions::{SESSION_SWEEP_BYTES, session_record, session_sweep_at, session_value};
use super::{
    CF_EXPIRY, CF_FINGERPRINTS, CF_KEYS, CF_META, CF_SESSIONS, CF_TOKENS, RocksStore, cf, synced,
};
use crate::crypto::Fingerprint;
use crate::domain::Token;
use crate::store::StoreError;
use crate::store::codec::{self, KeysEntry, TokenEntry};
use crate::store::transfer::{Page, Row, Table, Transfer, corrupt};

const CURSOR_PREFIX: &[u8] = b"migrate/";

fn cursor_key(table: Table) -> Vec<u8> {
    [CURSOR_PREFIX, table.name().as_bytes()].concat()
}

/// The column family a table lives in.
fn family(table: Table) -> &'static str {
    match table {
        Table::Keys | Table::Counters => CF_KEYS,
        Table::Tokens => CF_TOKENS,
        Table::Fingerprints => CF_FINGERPRINTS,
        Table::Checkpoints => CF_META,
        Table::Sessions => CF_SESSIONS,
    }
}

/// The row of `table` stored under `key`; `None` for a key of the column
/// family that belongs to another table (or to no table: `meta`'s own).
fn row_of(table: Table, key: &[u8], value: &[u8]) -> Result<Option<Row>, StoreError> {
    Ok(match table {
        Table::Keys | Table::Counters => match (table, codec::decode_keys_key(key)?) {
            (Table::Keys, KeysEntry::Wrapped(label)) => Some(Row::Key {
                label,
                record: value.to_vec(),
            }),
            (Table::Counters, KeysEntry::Counter(label)) => Some(Row::Counter {
                label,
                value: codec::decode_counter(value)?,
            }),
            _ => None,
        },
        Table::Tokens => {
            let (tenant, digits) = codec::split_tenant_key(key)?;
            let token = Token::parse_bytes(digits).map_err(|_| corrupt("token key", "token"))?;
            Some(Row::Token {
                tenant,
                token,
                entry: value.to_vec(),
            })
        }
        Table::Fingerprints => {
            let (tenant, fingerprint) = codec::split_tenant_key(key)?;
            let token =
                Token::parse_bytes(value).map_err(|_| corrupt("fingerprint entry", "token"))?;
            Some(Row::Fingerprint {
                tenant,
                fingerprint: fingerprint.to_vec(),
                token,
            })
        }
        Table::Checkpoints => codec::decode_checkpoint_key(key).map(|tenant| Row::Checkpoint {
            tenant,
            data: value.to_vec(),
        }),
        Table::Sessions => {
            if value.len() < SESSION_SWEEP_BYTES {
                return Err(corrupt("session", "sweep time"));
            }
            Some(Row::Session {
                id: key.to_vec(),
                sweep_at_ms: session_sweep_at(value),
                record: session_record(value).to_vec(),
            })
        }
    })
}

impl RocksStore {
    /// Refuses this database while a copy into it is unfinished (opening
    /// a vault checks it; the copy itself does not).
    pub fn refuse_unfinished_copy(&self) -> Result<(), StoreError> {
        let meta = cf(&self.db, CF_META)?;
        for table in Table::ALL {
            if self.db.get_pinned_cf(meta, cursor_key(table))?.is_some() {
                return Err(StoreError::UnfinishedCopy {
                    target: self.path.display().to_string(),
                });
            }
        }
        Ok(())
    }

    /// Adds `row` to `batch`; the digests of token and fingerprint keys go
    /// to `tokens` and `fingerprints` (for the key filters).
    fn put_row(
        &self,
        batch: &mut WriteBatch,
        row: Row,
        tokens: &mut Vec<u64>,
        fingerprints: &mut Vec<u64>,
    ) -> Result<(), StoreError> {
        match row {
            Row::Key { label, record } => {
                batch.put_cf(
                    cf(&self.db, CF_KEYS)?,
                    codec::wrapped_key_key(&label),
                    record,
                );
            }
            Row::Counter { label, value } => {
                let key = codec::counter_key(&label);
                let keys = cf(&self.db, CF_KEYS)?;
                let stored = match self.db.get_cf(keys, &key)? {
                    Some(bytes) => codec::decode_counter(&bytes)?,
                    None => 0,
                };
                batch.put_cf(keys, key, value.max(stored).to_be_bytes());
            }
            Row::Token {
                tenant,
                token,
                entry,
            } => {
                let decoded = TokenEntry::decode(&entry, &token)?;
                if let Some(at) = decoded.meta.expires_ms {
                    batch.put_cf(
                        cf(&self.db, CF_EXPIRY)?,
                        codec::expiry_key(at, &tenant, &token),
                        [],
                    );
                }
                let key = codec::token_key(&tenant, &token);
                tokens.push(key_digest(&key));
                batch.put_cf(cf(&self.db, CF_TOKENS)?, key, entry);
            }
            Row::Fingerprint {
                tenant,
                fingerprint,
                token,
            } => {
                let fingerprint = Fingerprint::from_slice(&fingerprint)
                    .ok_or(corrupt("fingerprint entry", "fingerprint"))?;
                let key = codec::fingerprint_key(&tenant, &fingerprint);
                fingerprints.push(key_digest(&key));
                batch.put_cf(cf(&self.db, CF_FINGERPRINTS)?, key, token.as_bytes());
            }
            Row::Checkpoint { tenant, data } => {
                batch.put_cf(cf(&self.db, CF_META)?, codec::checkpoint_key(&tenant), data);
            }
            Row::Session {
                id,
                sweep_at_ms,
                record,
            } => {
                batch.put_cf(
                    cf(&self.db, CF_SESSIONS)?,
                    id,
                    session_value(sweep_at_ms, &record),
                );
            }
        }
        Ok(())
    }

    fn export_now(
        &self,
        table: Table,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Option<Page>, StoreError> {
        let mode = match after {
            Some(key) => IteratorMode::From(key, Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut rows = Vec::new();
        let mut cursor = None;
        for item in self.db.iterator_cf(cf(&self.db, family(table))?, mode) {
            let (key, value) = item?;
            if Some(&*key) == after {
                continue;
            }
            if let Some(row) = row_of(table, &key, &value)? {
                rows.push(row);
                cursor = Some(key.to_vec());
                if rows.len() >= limit {
                    break;
                }
            }
        }
        Ok(cursor.map(|cursor| Page { rows, cursor }))
    }
}

#[async_trait::async_trait]
impl Transfer for RocksStore {
    async fn count(&self, table: Table) -> Result<u64, StoreError> {
        let mut count = 0;
        for item in self
            .db
            .iterator_cf(cf(&self.db, family(table))?, IteratorMode::Start)
        {
            let (key, value) = item?;
            if row_of(table, &key, &value)?.is_some() {
                count += 1;
            }
        }
        Ok(count)
    }

    async fn export(
        &self,
        table: Table,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Option<Page>, StoreError> {
        self.export_now(table, after, limit)
    }

    async fn import(&self, table: Table, rows: Vec<Row>, cursor: &[u8]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let (mut tokens, mut fingerprints) = (Vec::new(), Vec::new());
        for row in rows {
            self.put_row(&mut batch, row, &mut tokens, &mut fingerprints)?;
        }
        batch.put_cf(cf(&self.db, CF_META)?, cursor_key(table), cursor);
        // Before the write: no reader may see a key the filters lack.
        self.filters.tokens.insert(&tokens);
        self.filters.fingerprints.insert(&fingerprints);
        Ok(self.db.write_opt(batch, &synced())?)
    }

    async fn import_cursor(&self, table: Table) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(cf(&self.db, CF_META)?, cursor_key(table))?)
    }

    async fn finish_import(&self) -> Result<(), StoreError> {
        let meta = cf(&self.db, CF_META)?;
        let mut batch = WriteBatch::default();
        for table in Table::ALL {
            batch.delete_cf(meta, cursor_key(table));
        }
        Ok(self.db.write_opt(batch, &synced())?)
    }
}
