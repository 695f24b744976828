//! Collection sessions in PostgreSQL: the `cardvault_collect_sessions`
//! table (id, sweep time, record), compare-and-swap by a conditional
//! insert, update or delete, swept through its sweep-time index.

use super::PgStore;
use super::schema::pg;
use crate::store::StoreError;

impl PgStore {
    /// The record of session `id` (`Store::get_session`).
    pub(super) async fn session(&self, id: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT record FROM cardvault_collect_sessions WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
    }

    /// `Store::swap_session`: one conditional statement.
    pub(super) async fn swap(
        &self,
        id: &[u8],
        expected: Option<&[u8]>,
        new: Option<(u64, Vec<u8>)>,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let changed = match (expected, new) {
            (None, None) => return Ok(false),
            (None, Some((sweep_at, record))) => client
                .execute(
                    "INSERT INTO cardvault_collect_sessions (id, sweep_at_ms, record) \
                     VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
                    &[&id, &millis(sweep_at), &record],
                )
                .await
                .map_err(pg)?,
            (Some(expected), Some((sweep_at, record))) => client
                .execute(
                    "UPDATE cardvault_collect_sessions SET sweep_at_ms = $2, record = $3 \
                     WHERE id = $1 AND record = $4",
                    &[&id, &millis(sweep_at), &record, &expected],
                )
                .await
                .map_err(pg)?,
            (Some(expected), None) => client
                .execute(
                    "DELETE FROM cardvault_collect_sessions WHERE id = $1 AND record = $2",
                    &[&id, &expected],
                )
                .await
                .map_err(pg)?,
        };
        Ok(changed == 1)
    }

    /// `Store::sweep_sessions`: one delete through the sweep-time index.
    pub(super) async fn sweep(&self, now_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let deleted = client
            .execute(
                "DELETE FROM cardvault_collect_sessions WHERE id IN \
                 (SELECT id FROM cardvault_collect_sessions WHERE sweep_at_ms <= $1 LIMIT $2)",
                &[&millis(now_ms), &limit],
            )
            .await
            .map_err(pg)?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }
}

/// Milliseconds since the epoch as PostgreSQL's bigint (saturating).
fn millis(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}
