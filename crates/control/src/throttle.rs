//! Password guessing and request floods on the sign-in routes, held back per account and
//! per client address (in this process's memory).
//!
//! Failed sign-ins are counted in a 15-minute window: an account may fail
//! [`ACCOUNT_FREE_FAILURES`] times and an address [`ADDRESS_FREE_FAILURES`] times freely;
//! each failure beyond that locks the account (or address) for twice as long as the last,
//! from 1 s up to 15 minutes. While locked, an attempt is refused before the password is
//! checked (no argon2 spent, nothing learned: unknown emails are counted like real ones).
//! A successful sign-in clears the account's failures. Starting and polling CLI logins is
//! limited per address per minute, and signed-in Control Plane requests per user per minute.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use crate::ControlError;

/// The client's address, in every request's extensions (the peer of the connection: behind
/// a proxy, the proxy's), put there by the listener for the limits here.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// Failures an account may have in a window before it is locked.
pub const ACCOUNT_FREE_FAILURES: u32 = 5;
/// Failures an address may have in a window before it is locked (several people may sign
/// in from behind one address).
pub const ADDRESS_FREE_FAILURES: u32 = 20;
const WINDOW_MS: i64 = 15 * 60 * 1000;
const MAX_LOCK_MS: i64 = 15 * 60 * 1000;
/// Logins started, and polls, per address per minute.
pub const STARTS_PER_MINUTE: u32 = 60;
pub const POLLS_PER_MINUTE: u32 = 600;
const MINUTE_MS: i64 = 60 * 1000;
/// Entries kept at most; beyond, those not locked are forgotten.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy, Default)]
struct Failures {
    count: u32,
    window_start: i64,
    locked_until: i64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counter {
    count: u32,
    window_start: i64,
}

/// What a sign-in attempt is keyed by.
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    /// As typed; normalized here.
    pub email: &'a str,
    pub address: Option<IpAddr>,
}

#[derive(Debug, Default)]
pub(crate) struct Throttle {
    failures: Mutex<HashMap<String, Failures>>,
    counters: Mutex<HashMap<String, Counter>>,
}

impl Throttle {
    /// Refuses an attempt while its account or address is locked.
    pub(crate) fn check(&self, attempt: &Attempt<'_>, now: i64) -> Result<(), ControlError> {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let locked_until =
            keys(attempt).iter().filter_map(|(key, _)| failures.get(key)).map(|f| f.locked_until).max().unwrap_or(0);
        if locked_until > now {
            return Err(too_many("sign-in attempts", locked_until - now));
        }
        Ok(())
    }

    /// Counts a failed attempt against its account and address, locking what is over.
    pub(crate) fn failed(&self, attempt: &Attempt<'_>, now: i64) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() >= MAX_ENTRIES {
            failures.retain(|_, f| f.locked_until > now);
        }
        for (key, free) in keys(attempt) {
            let f = failures.entry(key).or_default();
            if now - f.window_start >= WINDOW_MS && f.locked_until <= now {
                *f = Failures { count: 0, window_start: now, locked_until: 0 };
            }
            f.count += 1;
            if f.count > free {
                let lock = 1000_i64.saturating_mul(1_i64 << (f.count - free - 1).min(20)).min(MAX_LOCK_MS);
                f.locked_until = now + lock;
                // A lock keeps the window open: failures do not expire while it lasts.
                f.window_start = now;
            }
        }
    }

    /// A successful sign-in: the account starts afresh (its address does not).
    pub(crate) fn succeeded(&self, attempt: &Attempt<'_>) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.remove(&account_key(attempt.email));
    }

    /// Counts one `what` (starting or polling a login) from `address` in the current
    /// minute; refuses beyond `per_minute`.
    pub(crate) fn count(
        &self,
        what: &'static str,
        address: Option<IpAddr>,
        per_minute: u32,
        now: i64,
    ) -> Result<(), ControlError> {
        let Some(address) = address else { return Ok(()) };
        self.count_for(what, &address.to_string(), per_minute, now)
    }

    /// Counts one `what` by `who` (an address, a user id) in the current minute; refuses
    /// beyond `per_minute` (0: no limit).
    pub(crate) fn count_for(
        &self,
        what: &'static str,
        who: &str,
        per_minute: u32,
        now: i64,
    ) -> Result<(), ControlError> {
        if per_minute == 0 {
            return Ok(());
        }
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        if counters.len() >= MAX_ENTRIES {
            counters.retain(|_, c| now - c.window_start < MINUTE_MS);
        }
        let c = counters.entry(format!("{what}:{who}")).or_default();
        if now - c.window_start >= MINUTE_MS {
            *c = Counter { count: 0, window_start: now };
        }
        if c.count >= per_minute {
            return Err(too_many(what, c.window_start + MINUTE_MS - now));
        }
        c.count += 1;
        Ok(())
    }
}

fn account_key(email: &str) -> String {
    format!("account:{}", email.trim().to_lowercase())
}

fn keys(attempt: &Attempt<'_>) -> Vec<(String, u32)> {
    let mut keys = vec![(account_key(attempt.email), ACCOUNT_FREE_FAILURES)];
    if let Some(address) = attempt.address {
        keys.push((format!("address:{address}"), ADDRESS_FREE_FAILURES));
    }
    keys
}

fn too_many(what: &str, wait_ms: i64) -> ControlError {
    let secs = u64::try_from((wait_ms + 999) / 1000).unwrap_or(1).max(1);
    ControlError::ResourceExhausted {
        message: format!("Too many {what}; try again in {secs} s"),
        retry_after_secs: secs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(email: &str, address: &str) -> Attempt<'static> {
        Attempt { email: Box::leak(email.to_owned().into_boxed_str()), address: Some(address.parse().unwrap()) }
    }

    fn retry_after(r: Result<(), ControlError>) -> Option<u64> {
        match r {
            Ok(()) => None,
            Err(ControlError::ResourceExhausted { retry_after_secs, .. }) => Some(retry_after_secs),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn an_account_is_locked_after_five_failures_for_longer_each_time() {
        let t = Throttle::default();
        let a = attempt("Ann@Example.com", "192.0.2.1");
        let mut now = 1_000_000;
        for _ in 0..ACCOUNT_FREE_FAILURES {
            assert_eq!(retry_after(t.check(&a, now)), None);
            t.failed(&a, now);
        }
        assert_eq!(retry_after(t.check(&a, now)), None, "five failures are free");
        let mut locks = Vec::new();
        for _ in 0..4 {
            t.failed(&a, now);
            let wait = retry_after(t.check(&a, now)).unwrap();
            locks.push(wait);
            // The same account from elsewhere, in another case: locked too.
            assert_eq!(retry_after(t.check(&attempt(" ann@example.com", "198.51.100.7"), now)), Some(wait));
            now += i64::try_from(wait).unwrap() * 1000;
            assert_eq!(retry_after(t.check(&a, now)), None);
        }
        assert_eq!(locks, [1, 2, 4, 8]);
        // Success starts the account afresh.
        t.succeeded(&a);
        t.failed(&a, now);
        assert_eq!(retry_after(t.check(&a, now)), None);
    }

    #[test]
    fn an_address_guessing_many_accounts_is_locked() {
        let t = Throttle::default();
        let now = 5_000_000;
        for i in 0..ADDRESS_FREE_FAILURES {
            t.failed(&attempt(&format!("user{i}@example.com"), "203.0.113.9"), now);
        }
        assert_eq!(retry_after(t.check(&attempt("new@example.com", "203.0.113.9"), now)), None);
        t.failed(&attempt("one-more@example.com", "203.0.113.9"), now);
        assert_eq!(retry_after(t.check(&attempt("new@example.com", "203.0.113.9"), now)), Some(1));
        // Another address for that account is not held back.
        assert_eq!(retry_after(t.check(&attempt("new@example.com", "203.0.113.10"), now)), None);
    }

    #[test]
    fn failures_expire_after_the_window_and_locks_are_capped() {
        let t = Throttle::default();
        let a = attempt("bob@example.com", "192.0.2.2");
        let mut now = 0;
        for _ in 0..40 {
            t.failed(&a, now);
        }
        assert_eq!(retry_after(t.check(&a, now)), Some(15 * 60));
        now += 15 * 60 * 1000;
        assert_eq!(retry_after(t.check(&a, now)), None);
        now += WINDOW_MS;
        t.failed(&a, now);
        assert_eq!(retry_after(t.check(&a, now)), None, "a new window starts free");
    }

    #[test]
    fn starts_and_polls_are_limited_per_address_per_minute() {
        let t = Throttle::default();
        let address = Some("192.0.2.3".parse().unwrap());
        for _ in 0..STARTS_PER_MINUTE {
            assert_eq!(retry_after(t.count("sign-in requests", address, STARTS_PER_MINUTE, 0)), None);
        }
        assert_eq!(retry_after(t.count("sign-in requests", address, STARTS_PER_MINUTE, 30_000)), Some(30));
        assert_eq!(retry_after(t.count("sign-in requests", address, STARTS_PER_MINUTE, 60_000)), None);
        assert_eq!(retry_after(t.count("sign-in requests", None, 0, 0)), None, "no address, no count");
    }
}
