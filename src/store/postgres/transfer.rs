//! [`Transfer`] for PostgreSQL: each table read in primary-key order after
//! a cursor (the row's key in the codec's layout, split back into
//! columns); an import is one transaction of one multi-row `unnest`
//! statement and the copy's cursor (`cardvault_migration`).

use tokio_postgres::types::ToSql;

use super::schema::pg;
use super::{PgStore, state_name, token_of};
use crate::domain::TenantId;
use crate::store::StoreError;
use crate::store::codec::{self, KeyRecord, KeysEntry, TokenEntry};
use crate::store::transfer::{Page, Row, Table, Transfer, corrupt};

/// The table that holds `table`'s rows.
fn relation(table: Table) -> &'static str {
    match table {
        Table::Keys => "cardvault_keys",
        Table::Counters => "cardvault_counters",
        Table::Tokens => "cardvault_tokens",
        Table::Fingerprints => "cardvault_fingerprints",
        Table::Checkpoints => "cardvault_checkpoints",
        Table::Sessions => "cardvault_collect_sessions",
    }
}

/// Rows after a cursor, in key order: `$1` (and `$2`) the cursor's
/// columns, the last parameter the limit.
fn export_statement(table: Table) -> &'static str {
    match table {
        Table::Keys => {
            "SELECT key, record FROM cardvault_keys WHERE key > $1 ORDER BY key LIMIT $2"
        }
        Table::Counters => {
            "SELECT key, value FROM cardvault_counters WHERE key > $1 ORDER BY key LIMIT $2"
        }
        Table::Tokens => {
            "SELECT tenant, token, entry FROM cardvault_tokens \
             WHERE (tenant, token) > ($1, $2) ORDER BY tenant, token LIMIT $3"
        }
        Table::Fingerprints => {
            "SELECT tenant, fingerprint, token FROM cardvault_fingerprints \
             WHERE (tenant, fingerprint) > ($1, $2) ORDER BY tenant, fingerprint LIMIT $3"
        }
        Table::Checkpoints => {
            "SELECT tenant, data FROM cardvault_checkpoints WHERE tenant > $1 \
             ORDER BY tenant LIMIT $2"
        }
        Table::Sessions => {
            "SELECT id, sweep_at_ms, record FROM cardvault_collect_sessions WHERE id > $1 \
             ORDER BY id LIMIT $2"
        }
    }
}

/// Rows inserted from arrays; a row already there is kept (a counter
/// keeps the higher value).
fn import_statement(table: Table) -> &'static str {
    match table {
        Table::Keys => {
            "INSERT INTO cardvault_keys (key, tenant, record, state) \
             SELECT * FROM unnest($1::bytea[], $2::text[], $3::bytea[], $4::text[]) \
             ON CONFLICT DO NOTHING"
        }
        Table::Counters => {
            "INSERT INTO cardvault_counters (key, tenant, value) \
             SELECT * FROM unnest($1::bytea[], $2::text[], $3::int8[]) \
             ON CONFLICT (key) DO UPDATE SET value = greatest(cardvault_counters.value, EXCLUDED.value)"
        }
        Table::Tokens => {
            "INSERT INTO cardvault_tokens (tenant, token, entry, expires_ms) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::int8[]) \
             ON CONFLICT DO NOTHING"
        }
        Table::Fingerprints => {
            "INSERT INTO cardvault_fingerprints (tenant, fingerprint, token) \
             SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[]) ON CONFLICT DO NOTHING"
        }
        Table::Checkpoints => {
            "INSERT INTO cardvault_checkpoints (tenant, data) \
             SELECT * FROM unnest($1::text[], $2::bytea[]) ON CONFLICT DO NOTHING"
        }
        Table::Sessions => {
            "INSERT INTO cardvault_collect_sessions (id, sweep_at_ms, record) \
             SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[]) ON CONFLICT DO NOTHING"
        }
    }
}

fn tenant_of(text: &str, what: &'static str) -> Result<TenantId, StoreError> {
    TenantId::parse(text).map_err(|_| corrupt(what, "tenant"))
}

/// A tenant-prefixed cursor (tokens, fingerprints) as its two columns.
fn split_cursor(after: Option<&[u8]>) -> Result<(String, Vec<u8>), StoreError> {
    match after {
        Some(cursor) => {
            let (tenant, rest) = codec::split_tenant_key(cursor)?;
            Ok((tenant.as_str().to_owned(), rest.to_vec()))
        }
        None => Ok((String::new(), Vec::new())),
    }
}

fn i64_of(value: u64) -> i64 {
    value.min(i64::MAX as u64) as i64
}

/// One page of rows read from the database, and the cursor after it.
fn page_of(table: Table, rows: &[tokio_postgres::Row]) -> Result<Option<Page>, StoreError> {
    let mut out = Vec::with_capacity(rows.len());
    let mut cursor = Vec::new();
    for r in rows {
        let row = match table {
            Table::Keys | Table::Counters => {
                let key: &[u8] = r.get(0);
                cursor = key.to_vec();
                match (table, codec::decode_keys_key(key)?) {
                    (Table::Keys, KeysEntry::Wrapped(label)) => Row::Key {
                        label,
                        record: r.get::<_, &[u8]>(1).to_vec(),
                    },
                    (Table::Counters, KeysEntry::Counter(label)) => Row::Counter {
                        label,
                        value: r.get::<_, i64>(1).max(0) as u64,
                    },
                    _ => return Err(corrupt("key name", "kind")),
                }
            }
            Table::Tokens => {
                let tenant = tenant_of(r.get(0), "token entry")?;
                let token = token_of(r.get(1), "token entry")?;
                cursor = codec::token_key(&tenant, &token);
                Row::Token {
                    tenant,
                    token,
                    entry: r.get::<_, &[u8]>(2).to_vec(),
                }
            }
            Table::Fingerprints => {
                let tenant = tenant_of(r.get(0), "fingerprint entry")?;
                let fingerprint = r.get::<_, &[u8]>(1).to_vec();
                cursor = [codec::tenant_prefix(&tenant).as_slice(), &fingerprint].concat();
                Row::Fingerprint {
                    tenant,
                    fingerprint,
                    token: token_of(r.get(2), "fingerprint entry")?,
                }
            }
            Table::Checkpoints => {
                let tenant = tenant_of(r.get(0), "checkpoint")?;
                cursor = tenant.as_str().as_bytes().to_vec();
                Row::Checkpoint {
                    tenant,
                    data: r.get::<_, &[u8]>(1).to_vec(),
                }
            }
            Table::Sessions => {
                let id = r.get::<_, &[u8]>(0).to_vec();
                cursor = id.clone();
                Row::Session {
                    id,
                    sweep_at_ms: r.get::<_, i64>(1).max(0) as u64,
                    record: r.get::<_, &[u8]>(2).to_vec(),
                }
            }
        };
        out.push(row);
    }
    Ok((!out.is_empty()).then_some(Page { rows: out, cursor }))
}

/// The columns of an import, as arrays.
#[derive(Default)]
struct Columns {
    bytes: [Vec<Vec<u8>>; 2],
    texts: [Vec<String>; 2],
    numbers: Vec<Option<i64>>,
}

impl Columns {
    fn of(rows: Vec<Row>) -> Result<Columns, StoreError> {
        let mut c = Columns::default();
        for row in rows {
            match row {
                Row::Key { label, record } => {
                    let state = KeyRecord::decode(&record)?.state;
                    c.bytes[0].push(codec::wrapped_key_key(&label));
                    c.texts[0].push(label.tenant.as_str().to_owned());
                    c.bytes[1].push(record);
                    c.texts[1].push(state_name(state).to_owned());
                }
                Row::Counter { label, value } => {
                    c.bytes[0].push(codec::counter_key(&label));
                    c.texts[0].push(label.tenant.as_str().to_owned());
                    c.numbers.push(Some(i64_of(value)));
                }
                Row::Token {
                    tenant,
                    token,
                    entry,
                } => {
                    let expires = TokenEntry::decode(&entry, &token)?.meta.expires_ms;
                    c.texts[0].push(tenant.as_str().to_owned());
                    c.texts[1].push(token.as_str().to_owned());
                    c.bytes[0].push(entry);
                    c.numbers.push(expires.map(i64_of));
                }
                Row::Fingerprint {
                    tenant,
                    fingerprint,
                    token,
                } => {
                    c.texts[0].push(tenant.as_str().to_owned());
                    c.bytes[0].push(fingerprint);
                    c.texts[1].push(token.as_str().to_owned());
                }
                Row::Checkpoint { tenant, data } => {
                    c.texts[0].push(tenant.as_str().to_owned());
                    c.bytes[0].push(data);
                }
                Row::Session {
                    id,
                    sweep_at_ms,
                    record,
                } => {
                    c.bytes[0].push(id);
                    c.numbers.push(Some(i64_of(sweep_at_ms)));
                    c.bytes[1].push(record);
                }
            }
        }
        Ok(c)
    }

    /// The statement's parameters for `table`, in its column order.
    fn params(&self, table: Table) -> Vec<&(dyn ToSql + Sync)> {
        let [b0, b1] = &self.bytes;
        let [t0, t1] = &self.texts;
        let n = &self.numbers;
        match table {
            Table::Keys => vec![b0, t0, b1, t1],
            Table::Counters => vec![b0, t0, n],
            Table::Tokens => vec![t0, t1, b0, n],
            Table::Fingerprints => vec![t0, b0, t1],
            Table::Checkpoints => vec![t0, b0],
            Table::Sessions => vec![b0, n, b1],
        }
    }
}

#[async_trait::async_trait]
impl Transfer for PgStore {
    async fn count(&self, table: Table) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let sql = format!("SELECT count(*) FROM {}", relation(table));
        let count: i64 = client.query_one(&sql, &[]).await.map_err(pg)?.get(0);
        Ok(count.max(0) as u64)
    }

    async fn export(
        &self,
        table: Table,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Option<Page>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(export_statement(table))
            .await
            .map_err(pg)?;
        let limit = limit as i64;
        let rows = match table {
            Table::Tokens => {
                let (tenant, digits) = split_cursor(after)?;
                let token = String::from_utf8(digits).map_err(|_| corrupt("cursor", "token"))?;
                client.query(&statement, &[&tenant, &token, &limit]).await
            }
            Table::Fingerprints => {
                let (tenant, fingerprint) = split_cursor(after)?;
                client
                    .query(&statement, &[&tenant, &fingerprint, &limit])
                    .await
            }
            Table::Checkpoints => {
                let tenant = String::from_utf8(after.unwrap_or_default().to_vec())
                    .map_err(|_| corrupt("cursor", "tenant"))?;
                client.query(&statement, &[&tenant, &limit]).await
            }
            Table::Keys | Table::Counters | Table::Sessions => {
                let key = after.unwrap_or_default();
                client.query(&statement, &[&key, &limit]).await
            }
        }
        .map_err(pg)?;
        page_of(table, &rows)
    }

    async fn import(&self, table: Table, rows: Vec<Row>, cursor: &[u8]) -> Result<(), StoreError> {
        let columns = Columns::of(rows)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let statement = tx
            .prepare_cached(import_statement(table))
            .await
            .map_err(pg)?;
        tx.execute(&statement, &columns.params(table))
            .await
            .map_err(pg)?;
        tx.execute(
            "INSERT INTO cardvault_migration (name, cursor) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET cursor = EXCLUDED.cursor",
            &[&table.name(), &cursor],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn import_cursor(&self, table: Table) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT cursor FROM cardvault_migration WHERE name = $1",
                &[&table.name()],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
    }

    async fn finish_import(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM cardvault_migration", &[])
            .await
            .map_err(pg)?;
        Ok(())
    }
}
