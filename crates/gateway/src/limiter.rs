//! Token buckets per API key and per user, for requests and for tokens. A bucket holds
//! up to its per-minute limit and refills continuously (limit / 60 per second), so a
//! burst of the whole minute's allowance passes and then traffic is held to the rate.
//!
//! Time is passed in, so tests move it by hand. State is in memory: one server process
//! enforces its own limits.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

const MINUTE: f64 = 60.0;
/// Past this many buckets, full (idle) ones are forgotten.
const MAX_BUCKETS: usize = 100_000;

/// Per-minute limits; 0 means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub requests_per_minute: u64,
    pub tokens_per_minute: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    level: f64,
    capacity: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(mut self, capacity: f64, now: Instant) -> Bucket {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * capacity / MINUTE).min(capacity);
        self.capacity = capacity;
        self.at = now;
        self
    }

    /// How long until `amount` is available.
    fn wait_for(&self, amount: f64) -> Duration {
        let missing = (amount - self.level).max(0.0);
        Duration::from_secs_f64(missing * MINUTE / self.capacity)
    }
}

/// One bucket to draw from: its name and its per-minute limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub name: String,
    pub limit: u64,
    /// `key` or `user`, for messages.
    pub kind: &'static str,
}

/// Where the tightest of some buckets stands, for `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headroom {
    pub limit: u64,
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset: Duration,
}

/// Requests and tokens headroom of a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateStatus {
    pub requests: Option<Headroom>,
    pub tokens: Option<Headroom>,
}

/// A refusal: which scope ran out, and when to retry.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    Wait {
        scope: Scope,
        retry_after: Duration,
    },
    /// More than the scope's whole per-minute limit: waiting will not help.
    TooLarge {
        scope: Scope,
    },
}

#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// Takes `amount` from every scope, or from none when one of them cannot cover it.
    /// Unlimited scopes (limit 0) are skipped.
    pub fn take(&self, scopes: &[Scope], amount: u64, now: Instant) -> Result<(), Refusal> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let amount = amount as f64;
        let mut current = Vec::with_capacity(scopes.len());
        for scope in scopes.iter().filter(|s| s.limit > 0) {
            let capacity = scope.limit as f64;
            if amount > capacity {
                return Err(Refusal::TooLarge { scope: scope.clone() });
            }
            let bucket = buckets
                .get(&scope.name)
                .copied()
                .unwrap_or(Bucket { level: capacity, capacity, at: now })
                .refilled(capacity, now);
            if bucket.level < amount {
                let retry_after = bucket.wait_for(amount);
                return Err(Refusal::Wait { scope: scope.clone(), retry_after });
            }
            current.push((scope.name.clone(), bucket));
        }
        if buckets.len() > MAX_BUCKETS {
            buckets.retain(|_, b| b.refilled(b.capacity, now).level < b.capacity);
        }
        for (name, mut bucket) in current {
            bucket.level -= amount;
            buckets.insert(name, bucket);
        }
        Ok(())
    }

    /// Returns what was taken but not used (a request's unused `max_tokens`).
    pub fn give_back(&self, scopes: &[Scope], amount: u64, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        for scope in scopes.iter().filter(|s| s.limit > 0) {
            if let Some(b) = buckets.get_mut(&scope.name) {
                let mut refilled = b.refilled(scope.limit as f64, now);
                refilled.level = (refilled.level + amount as f64).min(refilled.capacity);
                *b = refilled;
            }
        }
    }

    /// The tightest of `scopes` (None when all are unlimited).
    pub fn headroom(&self, scopes: &[Scope], now: Instant) -> Option<Headroom> {
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        scopes
            .iter()
            .filter(|s| s.limit > 0)
            .map(|s| {
                let capacity = s.limit as f64;
                let b = buckets.get(&s.name).copied().unwrap_or(Bucket { level: capacity, capacity, at: now });
                let b = b.refilled(capacity, now);
                Headroom { limit: s.limit, remaining: b.level.floor() as u64, reset: b.wait_for(capacity) }
            })
            .min_by_key(|h| (h.remaining, std::cmp::Reverse(h.reset)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(name: &str, limit: u64) -> Scope {
        Scope { name: name.into(), limit, kind: "key" }
    }

    #[test]
    fn a_burst_passes_up_to_the_limit_then_waits_for_refill() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        let s = [scope("k", 10)];
        for _ in 0..10 {
            assert!(limiter.take(&s, 1, t0).is_ok());
        }
        match limiter.take(&s, 1, t0) {
            Err(Refusal::Wait { retry_after, .. }) => assert_eq!(retry_after, Duration::from_secs(6)),
            other => panic!("{other:?}"),
        }
        // One request's worth refills in 60 s / 10.
        assert!(limiter.take(&s, 1, t0 + Duration::from_millis(5_900)).is_err());
        assert!(limiter.take(&s, 1, t0 + Duration::from_secs(6)).is_ok());
        let h = limiter.headroom(&s, t0 + Duration::from_secs(6)).unwrap();
        assert_eq!((h.limit, h.remaining), (10, 0));
        assert_eq!(h.reset, Duration::from_secs(60));
    }

    /// A panic while a lock was held (a bug elsewhere) must not turn the limits off: the
    /// buckets are read as they were. Before, a poisoned lock let every request through.
    #[test]
    fn a_poisoned_lock_still_enforces_the_limits() {
        let limiter = std::sync::Arc::new(RateLimiter::default());
        let t0 = Instant::now();
        let s = [scope("k", 2)];
        assert!(limiter.take(&s, 2, t0).is_ok());
        let poisoner = limiter.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.buckets.lock();
            panic!("poisons the lock");
        })
        .join();
        assert!(limiter.buckets.is_poisoned());
        assert!(matches!(limiter.take(&s, 1, t0), Err(Refusal::Wait { .. })));
        assert_eq!(limiter.headroom(&s, t0).map(|h| h.remaining), Some(0));
    }

    #[test]
    fn all_scopes_must_cover_a_take_and_none_is_charged_otherwise() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        let (key, user) = (scope("key", 100), scope("user", 30));
        assert!(limiter.take(&[key.clone(), user.clone()], 25, t0).is_ok());
        match limiter.take(&[key.clone(), user.clone()], 10, t0) {
            Err(Refusal::Wait { scope, .. }) => assert_eq!(scope.name, "user"),
            other => panic!("{other:?}"),
        }
        // The refused take left the key's bucket alone.
        assert_eq!(limiter.headroom(std::slice::from_ref(&key), t0).unwrap().remaining, 75);
        limiter.give_back(&[key.clone(), user.clone()], 20, t0);
        assert_eq!(limiter.headroom(&[key, user], t0).unwrap().remaining, 25);
    }

    #[test]
    fn more_than_a_minute_of_tokens_is_too_large_and_unlimited_is_free() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        assert!(matches!(limiter.take(&[scope("k", 100)], 101, t0), Err(Refusal::TooLarge { .. })));
        assert!(limiter.take(&[scope("k", 0)], 1_000_000, t0).is_ok());
        assert_eq!(limiter.headroom(&[scope("k", 0)], t0), None);
    }
}
