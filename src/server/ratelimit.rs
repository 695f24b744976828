//! Per-principal rate limits (docs/guarantees.md): one token bucket per principal
//! for tokenization, one for detokenization and one for metadata reads and
//! deletes, counted in items (a batch of N costs N), via `governor`'s GCRA.
//! A spent bucket answers 429 `rate_limited` with `Retry-After`.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use super::error::ApiError;
use crate::config::{LimitsConfig, RateLimit};

type Buckets = RateLimiter<String, HashMapStateStore<String>, DefaultClock>;

/// The per-principal buckets.
pub struct RateLimits {
    tokenize: Buckets,
    detokenize: Buckets,
    metadata: Buckets,
    clock: DefaultClock,
}

fn buckets(rate: RateLimit) -> Buckets {
    RateLimiter::hashmap(Quota::per_second(rate.per_second).allow_burst(rate.burst))
}

impl RateLimits {
    /// Buckets as configured.
    pub fn new(limits: &LimitsConfig) -> RateLimits {
        RateLimits {
            tokenize: buckets(limits.tokenize_rate),
            detokenize: buckets(limits.detokenize_rate),
            metadata: buckets(limits.metadata_rate),
            clock: DefaultClock::default(),
        }
    }

    fn take(&self, buckets: &Buckets, principal: &str, items: usize) -> Result<(), ApiError> {
        let Some(n) = u32::try_from(items.max(1)).ok().and_then(NonZeroU32::new) else {
            return Err(ApiError::RateLimited(1));
        };
        match buckets.check_key_n(&principal.to_owned(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(self.clock.now());
                metrics::counter!("cardvault_rate_limited_total").increment(1);
                Err(ApiError::RateLimited(
                    u32::try_from(wait.as_secs() + 1).unwrap_or(u32::MAX),
                ))
            }
            // More items than the bucket can ever hold (validation keeps
            // bursts at least max_batch, so this is defensive).
            Err(_) => Err(ApiError::RateLimited(1)),
        }
    }

    /// Takes `items` from `principal`'s tokenization bucket.
    pub fn tokenize(&self, principal: &str, items: usize) -> Result<(), ApiError> {
        self.take(&self.tokenize, principal, items)
    }

    /// Takes one from `principal`'s metadata bucket (reads and deletes).
    pub fn metadata(&self, principal: &str) -> Result<(), ApiError> {
        self.take(&self.metadata, principal, 1)
    }

    /// Takes `items` from `principal`'s detokenization bucket.
    pub fn detokenize(&self, principal: &str, items: usize) -> Result<(), ApiError> {
        self.take(&self.detokenize, principal, items)
    }
}
