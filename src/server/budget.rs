//! The vault-wide budget for request bodies held in memory
//! (`limits.body_budget_bytes`). A body reserves its announced length (or
//! the route's whole limit when it announces none) before a byte of it is
//! read, and gives it back once parsed; a request that finds the budget
//! spent waits briefly, then gets 503 `unavailable`. So the memory held by
//! bodies is bounded by the budget, not by connections × body limit, over
//! HTTP/1 and HTTP/2 alike.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;

/// The budget is counted in units of this many bytes (a semaphore holds
/// at most `u32::MAX` permits per acquisition).
const UNIT: usize = 1024;

/// Shared budget of body bytes.
#[derive(Debug)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
    total_units: usize,
    wait: Duration,
}

/// Body bytes reserved for one request; returned on drop.
#[derive(Debug)]
pub struct Reserved(#[allow(dead_code)] OwnedSemaphorePermit);

impl BodyBudget {
    /// A budget of `bytes`; a reservation waits at most `wait` for room.
    pub fn new(bytes: usize, wait: Duration) -> BodyBudget {
        let total_units = bytes.div_ceil(UNIT).max(1);
        BodyBudget {
            units: Arc::new(Semaphore::new(total_units)),
            total_units,
            wait,
        }
    }

    /// Reserves room for a body of `bytes`, waiting up to the configured
    /// time; 503 `unavailable` if the budget stays spent.
    pub async fn reserve(&self, bytes: usize) -> Result<Reserved, ApiError> {
        let units = bytes.div_ceil(UNIT).clamp(1, self.total_units);
        let units = u32::try_from(units).unwrap_or(u32::MAX);
        // The usual case, room at once, needs no timer.
        if let Ok(permit) = Arc::clone(&self.units).try_acquire_many_owned(units) {
            return Ok(Reserved(permit));
        }
        let acquire = Arc::clone(&self.units).acquire_many_owned(units);
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => Ok(Reserved(permit)),
            _ => {
                metrics::counter!("cardvault_body_budget_refused_total").increment(1);
                Err(ApiError::Unavailable(
                    "the vault is busy receiving other requests; retry shortly",
                ))
            }
        }
    }

    /// Bytes reserved right now (for metrics and tests).
    pub fn in_use(&self) -> usize {
        (self.total_units - self.units.available_permits()) * UNIT
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_spent_budget_refuses_after_waiting_and_recovers() {
        let budget = BodyBudget::new(10 * UNIT, Duration::from_millis(20));
        let a = budget.reserve(6 * UNIT).await.unwrap();
        assert_eq!(budget.in_use(), 6 * UNIT);
        let refused = budget.reserve(5 * UNIT).await.unwrap_err();
        assert_eq!(refused.code(), "unavailable");
        drop(a);
        let _b = budget.reserve(5 * UNIT).await.unwrap();
        // A body larger than the whole budget reserves all of it, no more.
        drop(_b);
        let _c = budget.reserve(100 * UNIT).await.unwrap();
        assert_eq!(budget.in_use(), 10 * UNIT);
    }
}
