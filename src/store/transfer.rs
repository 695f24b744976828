//! Copying a store's contents to a store of another backend exactly as
//! they are stored (`cardvault migrate`): data keys still wrapped by the
//! KEK, records still sealed, fingerprints still HMACs — nothing is
//! decrypted, so no key is needed to copy.
//!
//! A source reads each [`Table`] in pages after a cursor (the last row's
//! key in the codec's layout, interpreted only by the source that made
//! it); a target writes a page together with the cursor it reached in one
//! durable commit. A copy killed at any point therefore resumes after its
//! last commit, and a page written twice writes the same rows again
//! (insert-if-absent; counters keep the higher value).

use crate::crypto::KeyLabel;
use crate::domain::{TenantId, Token};

use super::StoreError;

/// What is copied, in the order it is copied: keys first, so a target
/// that holds a record also holds the key that opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Wrapped data keys.
    Keys,
    /// Encryption counters of the data keys.
    Counters,
    /// Token entries (metadata and sealed record); the expiry index
    /// follows them.
    Tokens,
    /// The fingerprint index (tenant, HMAC(PAN)) → token.
    Fingerprints,
    /// Re-sealing job checkpoints.
    Checkpoints,
    /// Hosted-field collection sessions.
    Sessions,
}

impl Table {
    /// Every table, in copy order.
    pub const ALL: [Table; 6] = [
        Table::Keys,
        Table::Counters,
        Table::Tokens,
        Table::Fingerprints,
        Table::Checkpoints,
        Table::Sessions,
    ];

    /// The name reports and cursors use.
    pub fn name(self) -> &'static str {
        match self {
            Table::Keys => "keys",
            Table::Counters => "counters",
            Table::Tokens => "tokens",
            Table::Fingerprints => "fingerprints",
            Table::Checkpoints => "checkpoints",
            Table::Sessions => "sessions",
        }
    }
}

/// One stored row, backend-neutral; every byte field is as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    /// A wrapped data key ([`super::codec::KeyRecord`]'s bytes).
    Key {
        /// Which key.
        label: KeyLabel,
        /// Its record.
        record: Vec<u8>,
    },
    /// A data key's encryption counter.
    Counter {
        /// Which key.
        label: KeyLabel,
        /// Encryptions counted.
        value: u64,
    },
    /// A token entry ([`super::codec::TokenEntry`]'s bytes).
    Token {
        /// Owner.
        tenant: TenantId,
        /// The token.
        token: Token,
        /// Its entry.
        entry: Vec<u8>,
    },
    /// A fingerprint index entry.
    Fingerprint {
        /// Owner.
        tenant: TenantId,
        /// HMAC(PAN) as stored.
        fingerprint: Vec<u8>,
        /// The PAN's token.
        token: Token,
    },
    /// A re-sealing checkpoint (opaque bytes).
    Checkpoint {
        /// Owner.
        tenant: TenantId,
        /// The checkpoint.
        data: Vec<u8>,
    },
    /// A collection session ([`super::codec::SessionRecord`]'s bytes).
    Session {
        /// Its id.
        id: Vec<u8>,
        /// When the sweep may delete it (ms since the epoch).
        sweep_at_ms: u64,
        /// Its record.
        record: Vec<u8>,
    },
}

/// Rows read from a source, and the cursor after the last of them.
#[derive(Debug)]
pub struct Page {
    /// The rows, in the source's order.
    pub rows: Vec<Row>,
    /// Where the next page starts (exclusive).
    pub cursor: Vec<u8>,
}

/// A store that can be the source or the target of a copy. A target is
/// written by the copy alone: no vault may serve it meanwhile.
#[async_trait::async_trait]
pub trait Transfer: Send + Sync {
    /// Rows stored in `table`.
    async fn count(&self, table: Table) -> Result<u64, StoreError>;

    /// Up to `limit` rows of `table` after `after` (from the first when
    /// `None`); `None` when there are no more.
    async fn export(
        &self,
        table: Table,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Option<Page>, StoreError>;

    /// Writes `rows` of `table` and the source cursor they reach in one
    /// durable commit; rows already there stay as they are (counters keep
    /// the higher value).
    async fn import(&self, table: Table, rows: Vec<Row>, cursor: &[u8]) -> Result<(), StoreError>;

    /// The source cursor the last import of `table` reached, while a copy
    /// into this store is unfinished.
    async fn import_cursor(&self, table: Table) -> Result<Option<Vec<u8>>, StoreError>;

    /// Marks the copy into this store finished (its cursors go).
    async fn finish_import(&self) -> Result<(), StoreError>;
}

/// A stored row's bytes that did not decode.
pub(crate) fn corrupt(what: &'static str, field: &'static str) -> StoreError {
    StoreError::Corrupt(super::codec::CodecError::InvalidField { what, field })
}

/// Rows each table holds in the source and in the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// The table.
    pub table: Table,
    /// Rows in the source.
    pub source: u64,
    /// Rows in the target.
    pub target: u64,
}

/// Counts every table on both sides.
pub async fn tally(source: &dyn Transfer, target: &dyn Transfer) -> Result<Vec<Tally>, StoreError> {
    let mut out = Vec::with_capacity(Table::ALL.len());
    for table in Table::ALL {
        out.push(Tally {
            table,
            source: source.count(table).await?,
            target: target.count(table).await?,
        });
    }
    Ok(out)
}

/// Copies every table from `source` to `target` in pages of `page` rows,
/// each table from the cursor the target holds (an unfinished copy goes
/// on where its last commit ended); `copied` sees each page just before
/// its commit (an error ends the copy). Ends by marking the copy finished in the target.
pub async fn copy(
    source: &dyn Transfer,
    target: &dyn Transfer,
    page: usize,
    mut copied: impl FnMut(Table, &[Row]) + Send,
) -> Result<(), StoreError> {
    for table in Table::ALL {
        let mut cursor = target.import_cursor(table).await?;
        while let Some(next) = source.export(table, cursor.as_deref(), page.max(1)).await? {
            let Page {
                rows,
                cursor: reached,
            } = next;
            copied(table, &rows);
            target.import(table, rows, &reached).await?;
            cursor = Some(reached);
        }
    }
    target.finish_import().await
}

/// Refuses a store a copy into has not finished ([`StoreError::UnfinishedCopy`]).
pub async fn refuse_unfinished(store: &dyn Transfer, describe: String) -> Result<(), StoreError> {
    for table in Table::ALL {
        if store.import_cursor(table).await?.is_some() {
            return Err(StoreError::UnfinishedCopy { target: describe });
        }
    }
    Ok(())
}
