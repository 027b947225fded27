//! The endpoints of one model: their load, and whether they may take requests (active
//! health checks and passive outlier ejection).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::{EndpointConfig, HealthConfig};

/// Ejections in a row beyond which the ejection time stops doubling.
const MAX_EJECTION_DOUBLINGS: u32 = 4;

pub struct Endpoint {
    /// Base URL without a trailing slash (`/v1/chat/completions` is appended).
    pub base: String,
    pub(crate) key: Option<String>,
    pub weight: u32,
    pub max_concurrency: usize,
    in_flight: AtomicUsize,
    /// The last active check's answer (optimistic until the first one).
    checked_ok: AtomicBool,
    passive: Mutex<Passive>,
}

#[derive(Default)]
struct Passive {
    failures_in_a_row: u32,
    ejections_in_a_row: u32,
    ejected_until: Option<Instant>,
}

/// What the Control Plane shows of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStatus {
    pub url: String,
    pub healthy: bool,
    pub in_flight: usize,
}

impl Endpoint {
    pub fn new(config: &EndpointConfig) -> Endpoint {
        Endpoint {
            base: config.url.trim_end_matches('/').to_owned(),
            key: config.key(),
            weight: config.weight,
            max_concurrency: config.max_concurrency,
            in_flight: AtomicUsize::new(0),
            checked_ok: AtomicBool::new(true),
            passive: Mutex::new(Passive::default()),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Load per unit of weight, for comparisons between endpoints.
    pub fn load(&self) -> f64 {
        self.in_flight() as f64 / f64::from(self.weight)
    }

    /// Passes the active check and is not ejected.
    pub fn healthy(&self, now: Instant) -> bool {
        self.checked_ok.load(Ordering::Relaxed)
            && self
                .passive
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .ejected_until
                .is_none_or(|until| now >= until)
    }

    /// Healthy with a free request slot.
    pub fn available(&self, now: Instant) -> bool {
        self.in_flight() < self.max_concurrency && self.healthy(now)
    }

    /// Takes a request slot, unless the endpoint is full.
    pub fn acquire(self: &Arc<Self>) -> Option<InFlight> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max_concurrency).then_some(n + 1))
            .ok()
            .map(|_| InFlight(self.clone()))
    }

    pub fn record_success(&self) {
        let mut p = self.passive.lock().unwrap_or_else(PoisonError::into_inner);
        p.failures_in_a_row = 0;
        p.ejections_in_a_row = 0;
    }

    /// A failed request (no connection, 5xx, broken stream); enough in a row eject the
    /// endpoint. Returns true when this failure ejected it.
    pub fn record_failure(&self, health: &HealthConfig, now: Instant) -> bool {
        let mut p = self.passive.lock().unwrap_or_else(PoisonError::into_inner);
        if p.ejected_until.is_some_and(|until| now < until) {
            return false;
        }
        p.failures_in_a_row += 1;
        if p.failures_in_a_row < health.eject_after_failures {
            return false;
        }
        let factor = 1u32 << p.ejections_in_a_row.min(MAX_EJECTION_DOUBLINGS);
        p.ejected_until = Some(now + Duration::from_millis(health.eject_ms) * factor);
        p.ejections_in_a_row += 1;
        p.failures_in_a_row = 0;
        true
    }

    /// The active check's answer. A passing check does not end an ejection early: the
    /// endpoint failed real requests while answering its health route.
    pub fn record_check(&self, ok: bool) {
        self.checked_ok.store(ok, Ordering::Relaxed);
    }

    pub fn status(&self, now: Instant) -> EndpointStatus {
        EndpointStatus { url: self.base.clone(), healthy: self.healthy(now), in_flight: self.in_flight() }
    }
}

/// A request slot on an endpoint, given back on drop.
pub struct InFlight(Arc<Endpoint>);

impl InFlight {
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Retries allowed over a sliding window: at most `ratio` of the requests in it, plus
/// `min_per_second` (so that a quiet fleet can still retry). Keeps a failing fleet from
/// being sent every request several times.
pub struct RetryBudget {
    ratio: f64,
    min_per_window: f64,
    window: Duration,
    state: Mutex<BudgetWindow>,
}

struct BudgetWindow {
    started: Instant,
    requests: u64,
    retries: u64,
    /// The previous window's counts, weighed by how much of it the sliding window covers.
    previous: (u64, u64),
}

impl RetryBudget {
    pub fn new(ratio: f64, min_per_second: u32) -> RetryBudget {
        let window = Duration::from_secs(10);
        RetryBudget {
            ratio,
            min_per_window: f64::from(min_per_second) * window.as_secs_f64(),
            window,
            state: Mutex::new(BudgetWindow { started: Instant::now(), requests: 0, retries: 0, previous: (0, 0) }),
        }
    }

    pub fn record_request(&self, now: Instant) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.roll(&mut s, now);
        s.requests += 1;
    }

    /// Takes one retry from the budget, if it has one.
    pub fn try_retry(&self, now: Instant) -> bool {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.roll(&mut s, now);
        let past = 1.0 - (now.duration_since(s.started).as_secs_f64() / self.window.as_secs_f64()).min(1.0);
        let requests = s.requests as f64 + s.previous.0 as f64 * past;
        let retries = s.retries as f64 + s.previous.1 as f64 * past;
        if retries + 1.0 > self.min_per_window + self.ratio * requests {
            return false;
        }
        s.retries += 1;
        true
    }

    fn roll(&self, s: &mut BudgetWindow, now: Instant) {
        let age = now.duration_since(s.started);
        if age >= self.window {
            s.previous = if age >= self.window * 2 { (0, 0) } else { (s.requests, s.retries) };
            s.started = now;
            s.requests = 0;
            s.retries = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(max_concurrency: usize) -> Arc<Endpoint> {
        Arc::new(Endpoint::new(&EndpointConfig {
            url: "http://127.0.0.1:9/".into(),
            api_key: None,
            api_key_env: None,
            weight: 1,
            max_concurrency,
        }))
    }

    #[test]
    fn slots_are_bounded_and_given_back() {
        let e = endpoint(2);
        let a = e.acquire().unwrap();
        let _b = e.acquire().unwrap();
        assert!(e.acquire().is_none());
        assert!(!e.available(Instant::now()));
        drop(a);
        assert_eq!(e.in_flight(), 1);
        assert!(e.acquire().is_some());
        assert_eq!(e.base, "http://127.0.0.1:9");
    }

    #[test]
    fn failures_in_a_row_eject_for_a_doubling_time() {
        let e = endpoint(8);
        let health = HealthConfig { eject_after_failures: 2, eject_ms: 1_000, ..HealthConfig::default() };
        let t0 = Instant::now();
        assert!(!e.record_failure(&health, t0));
        e.record_success();
        assert!(!e.record_failure(&health, t0), "a success resets the count");
        assert!(e.record_failure(&health, t0));
        assert!(!e.healthy(t0 + Duration::from_millis(999)));
        assert!(e.healthy(t0 + Duration::from_millis(1_000)));
        let t1 = t0 + Duration::from_millis(1_000);
        e.record_failure(&health, t1);
        assert!(e.record_failure(&health, t1));
        assert!(!e.healthy(t1 + Duration::from_millis(1_999)), "the second ejection lasts twice as long");
        assert!(e.healthy(t1 + Duration::from_millis(2_000)));
        e.record_check(false);
        assert!(!e.healthy(t1 + Duration::from_secs(60)));
    }

    #[test]
    fn the_retry_budget_is_a_share_of_requests() {
        let budget = RetryBudget::new(0.5, 0);
        let now = Instant::now();
        assert!(!budget.try_retry(now));
        for _ in 0..4 {
            budget.record_request(now);
        }
        assert!(budget.try_retry(now));
        assert!(budget.try_retry(now));
        assert!(!budget.try_retry(now), "2 retries for 4 requests at 0.5");
        let later = now + Duration::from_secs(25);
        assert!(!budget.try_retry(later), "old requests leave the window");
    }
}
