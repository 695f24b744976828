//! Collection sessions in RocksDB: the `sessions` column family (id →
//! sweep time ‖ record), read directly, written through the writer
//! (compare-and-swap, and with a token's insert in one group), swept by a
//! walk that runs only when the earliest sweep time it saw is reached.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rocksdb::IteratorMode;

use super::writer::Command;
use super::{CF_SESSIONS, RocksStore, cf};
use crate::store::{Insert, InsertOutcome, SessionCompletion, StoreError};

/// Bytes before a stored session's record: its sweep time.
pub(super) const SESSION_SWEEP_BYTES: usize = 8;

/// The record part of a stored session value.
pub(super) fn session_record(value: &[u8]) -> &[u8] {
    value.get(SESSION_SWEEP_BYTES..).unwrap_or_default()
}

/// The stored value of a session record swept after `sweep_at`.
pub(super) fn session_value(sweep_at: u64, record: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(SESSION_SWEEP_BYTES + record.len());
    value.extend_from_slice(&sweep_at.to_be_bytes());
    value.extend_from_slice(record);
    value
}

/// The sweep time of a stored session value (0, due at once, if damaged).
pub(super) fn session_sweep_at(value: &[u8]) -> u64 {
    value
        .get(..SESSION_SWEEP_BYTES)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// The session sweep's schedule: a walk of the column family notes the
/// earliest sweep time it saw, and the next walk waits for it — or at most
/// [`SESSION_RESCAN_MS`], so a session written later with a shorter life
/// is swept at most that late. Keeps the sweep from walking every session
/// every few seconds when nothing is due.
#[derive(Default)]
pub(super) struct SweepSchedule {
    /// The earliest sweep time seen by the last walk (0: walk now).
    next_due_ms: std::sync::atomic::AtomicU64,
    /// When the last walk ran (ms since the epoch).
    walked_ms: std::sync::atomic::AtomicU64,
}

/// Longest wait between two walks of the `sessions` column family.
const SESSION_RESCAN_MS: u64 = 10 * 60 * 1000;

impl SweepSchedule {
    fn skip(&self, now_ms: u64) -> bool {
        now_ms < self.next_due_ms.load(Ordering::Relaxed)
            && now_ms.saturating_sub(self.walked_ms.load(Ordering::Relaxed)) < SESSION_RESCAN_MS
    }

    fn walked(&self, now_ms: u64, next_due_ms: u64) {
        self.walked_ms.store(now_ms, Ordering::Relaxed);
        self.next_due_ms.store(next_due_ms, Ordering::Relaxed);
    }
}

impl RocksStore {
    /// The record of session `id` (`Store::get_session`).
    pub(super) fn session(&self, id: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db
            .get_pinned_cf(cf(&self.db, CF_SESSIONS)?, id)?
            .map(|value| session_record(&value).to_vec()))
    }

    /// `Store::swap_session`, through the writer.
    pub(super) async fn swap(
        &self,
        id: &[u8],
        expected: Option<&[u8]>,
        new: Option<(u64, Vec<u8>)>,
    ) -> Result<bool, StoreError> {
        let value = new.map(|(sweep_at, record)| session_value(sweep_at, &record));
        self.ask(|reply| Command::SwapSession {
            id: id.to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            value,
            reply,
        })
        .await
    }

    /// `Store::insert_completing`: both in one writer group.
    pub(super) async fn insert_and_complete(
        &self,
        item: Insert,
        session: SessionCompletion,
    ) -> Result<(InsertOutcome, bool), StoreError> {
        self.ask(|reply| Command::InsertCompleting {
            item: Box::new(item),
            session,
            reply,
        })
        .await
    }

    /// `Store::sweep_sessions`, walking only when something can be due.
    pub(super) async fn sweep(&self, now_ms: u64, limit: usize) -> Result<usize, StoreError> {
        if self.sessions_due.skip(now_ms) {
            return Ok(0);
        }
        let db = Arc::clone(&self.db);
        let (due, next_due) = tokio::task::spawn_blocking(move || {
            let mut due = Vec::new();
            let mut next_due = u64::MAX;
            for item in db.iterator_cf(cf(&db, CF_SESSIONS)?, IteratorMode::Start) {
                let (id, value) = item?;
                let sweep_at = session_sweep_at(&value);
                if sweep_at > now_ms {
                    next_due = next_due.min(sweep_at);
                } else if due.len() < limit {
                    due.push((id.to_vec(), session_record(&value).to_vec()));
                } else {
                    // More are due than one pass takes: walk again next time.
                    next_due = 0;
                }
            }
            Ok::<_, StoreError>((due, next_due))
        })
        .await
        .map_err(|e| StoreError::Backend(format!("session sweep task failed: {e}")))??;
        self.sessions_due.walked(now_ms, next_due);
        let mut deleted = 0;
        for (id, record) in due {
            if self.swap(&id, Some(&record), None).await? {
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}
