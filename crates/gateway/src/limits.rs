//! Where the per-minute limits are kept: in this process ([`RateLimiter`]), or in Redis,
//! shared by every replica (`--redis-url`), so that N replicas let through what one would.
//!
//! In Redis each bucket is a hash (`level`, `at`) under `tensormesh:rl:<scope>`, refilled
//! and taken from by one Lua script per check, on Redis's clock: a check over a key's and
//! its user's buckets is atomic, whichever replica makes it. Every call has a deadline; when
//! Redis does not answer in time the [`Outage`] policy decides, so that a request never
//! hangs on it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tracing::warn;

use crate::limiter::{Headroom, RateLimiter, RateStatus, Refusal, Scope};

/// Outage warnings are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What happens to requests while Redis does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// Served, each replica enforcing the limits on its own (fail open: N replicas let up
    /// to N times the limit through until Redis is back).
    Allow,
    /// Refused with 503 and `Retry-After` (fail closed).
    Refuse,
}

/// Why a take was not granted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Denied {
    Refused(Refusal),
    /// The shared limits cannot be checked and [`Outage::Refuse`] is the policy.
    Unavailable,
}

/// The limits of a gateway.
pub(crate) enum Limiter {
    Local(RateLimiter),
    Shared(SharedLimits),
}

impl Limiter {
    /// Takes `amount` from every scope, or from none.
    pub async fn take(&self, scopes: &[Scope], amount: u64) -> Result<(), Denied> {
        match self {
            Limiter::Local(local) => local.take(scopes, amount, Instant::now()).map_err(Denied::Refused),
            Limiter::Shared(shared) => shared.take(scopes, amount).await,
        }
    }

    /// Returns what was taken but not used.
    pub async fn give_back(&self, scopes: &[Scope], amount: u64) {
        match self {
            Limiter::Local(local) => local.give_back(scopes, amount, Instant::now()),
            Limiter::Shared(shared) => shared.give_back(scopes, amount).await,
        }
    }

    /// The tightest requests and tokens buckets, for the `x-ratelimit-*` headers.
    pub async fn status(&self, requests: &[Scope], tokens: &[Scope]) -> RateStatus {
        match self {
            Limiter::Local(local) => {
                let now = Instant::now();
                RateStatus { requests: local.headroom(requests, now), tokens: local.headroom(tokens, now) }
            }
            Limiter::Shared(shared) => shared.status(requests, tokens).await,
        }
    }
}

/// Limits kept in Redis.
pub struct SharedLimits {
    redis: ConnectionManager,
    /// Deadline of each call.
    timeout: Duration,
    outage: Outage,
    /// What [`Outage::Allow`] enforces meanwhile.
    fallback: RateLimiter,
    take_script: Script,
    give_back_script: Script,
    peek_script: Script,
    started: Instant,
    /// When an outage was last logged (ms since `started`, +1; 0: never).
    warned_at: AtomicU64,
}

impl SharedLimits {
    /// Limits in the Redis at `url` (`redis://host:port/db`). Connects lazily: a Redis that
    /// is down at start is an outage like any other.
    pub fn connect(url: &str, timeout: Duration, outage: Outage) -> Result<SharedLimits, String> {
        let client = redis::Client::open(url).map_err(|e| format!("--redis-url: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let redis = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| format!("--redis-url: {e}"))?;
        Ok(SharedLimits {
            redis,
            timeout,
            outage,
            fallback: RateLimiter::default(),
            take_script: Script::new(TAKE),
            give_back_script: Script::new(GIVE_BACK),
            peek_script: Script::new(PEEK),
            started: Instant::now(),
            warned_at: AtomicU64::new(0),
        })
    }

    /// Runs `script` over the limited scopes (keys) with `args` first and then each scope's
    /// limit, within the deadline.
    async fn run(&self, script: &Script, scopes: &[&Scope], args: &[u64]) -> Result<Vec<i64>, String> {
        let mut invocation = script.prepare_invoke();
        for scope in scopes {
            invocation.key(format!("tensormesh:rl:{}", scope.name));
        }
        for arg in args {
            invocation.arg(*arg);
        }
        for scope in scopes {
            invocation.arg(scope.limit);
        }
        let mut redis = self.redis.clone();
        match tokio::time::timeout(self.timeout, invocation.invoke_async::<Vec<i64>>(&mut redis)).await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    fn outage(&self, error: &str) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1);
        let last = self.warned_at.load(Ordering::Relaxed);
        let quiet = u64::try_from(WARN_EVERY.as_millis()).unwrap_or(u64::MAX);
        if (last == 0 || now.saturating_sub(last) >= quiet)
            && self.warned_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let policy = match self.outage {
                Outage::Allow => "each replica enforces the limits on its own meanwhile",
                Outage::Refuse => "requests are refused with 503 meanwhile",
            };
            warn!(error, "the shared rate limits (Redis) do not answer; {policy}");
        }
    }

    async fn take(&self, scopes: &[Scope], amount: u64) -> Result<(), Denied> {
        let limited: Vec<&Scope> = scopes.iter().filter(|s| s.limit > 0).collect();
        if limited.is_empty() {
            return Ok(());
        }
        match self.run(&self.take_script, &limited, &[amount]).await {
            Ok(out) => match out.as_slice() {
                [0] => Ok(()),
                [1, i, ms, ..] => Err(Denied::Refused(Refusal::Wait {
                    scope: nth(&limited, *i),
                    retry_after: Duration::from_millis(u64::try_from(*ms).unwrap_or(0)),
                })),
                [2, i, ..] => Err(Denied::Refused(Refusal::TooLarge { scope: nth(&limited, *i) })),
                other => {
                    self.outage(&format!("unexpected answer {other:?}"));
                    self.fall_back(scopes, amount)
                }
            },
            Err(e) => {
                self.outage(&e);
                self.fall_back(scopes, amount)
            }
        }
    }

    fn fall_back(&self, scopes: &[Scope], amount: u64) -> Result<(), Denied> {
        match self.outage {
            Outage::Allow => self.fallback.take(scopes, amount, Instant::now()).map_err(Denied::Refused),
            Outage::Refuse => Err(Denied::Unavailable),
        }
    }

    async fn give_back(&self, scopes: &[Scope], amount: u64) {
        let limited: Vec<&Scope> = scopes.iter().filter(|s| s.limit > 0).collect();
        if limited.is_empty() || amount == 0 {
            return;
        }
        if let Err(e) = self.run(&self.give_back_script, &limited, &[amount]).await {
            // The tokens come back with the refill instead.
            self.outage(&e);
        }
    }

    async fn status(&self, requests: &[Scope], tokens: &[Scope]) -> RateStatus {
        let requests: Vec<&Scope> = requests.iter().filter(|s| s.limit > 0).collect();
        let tokens: Vec<&Scope> = tokens.iter().filter(|s| s.limit > 0).collect();
        let all: Vec<&Scope> = requests.iter().chain(&tokens).copied().collect();
        if all.is_empty() {
            return RateStatus { requests: None, tokens: None };
        }
        let Ok(out) = self.run(&self.peek_script, &all, &[]).await else {
            return RateStatus { requests: None, tokens: None };
        };
        let headroom = |scopes: &[&Scope], offset: usize| {
            scopes
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let remaining = *out.get(2 * (offset + i))?;
                    let reset = *out.get(2 * (offset + i) + 1)?;
                    Some(Headroom {
                        limit: s.limit,
                        remaining: u64::try_from(remaining).unwrap_or(0),
                        reset: Duration::from_millis(u64::try_from(reset).unwrap_or(0)),
                    })
                })
                .min_by_key(|h| (h.remaining, std::cmp::Reverse(h.reset)))
        };
        RateStatus { requests: headroom(&requests, 0), tokens: headroom(&tokens, requests.len()) }
    }
}

/// The scope a script named by its 1-based index.
fn nth(scopes: &[&Scope], i: i64) -> Scope {
    let i = usize::try_from(i - 1).unwrap_or(0).min(scopes.len().saturating_sub(1));
    scopes[i].clone()
}

/// What every script starts with: Redis's clock, a bucket's level after its refill, and
/// how a level is stored: with a time-to-live of two minutes, after which the bucket is full
/// again anyway (a minute refills it).
macro_rules! lua_prelude {
    () => {
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function level(key, cap)
  local b = redis.call('HMGET', key, 'level', 'at')
  if not b[1] then return cap end
  return math.min(cap, tonumber(b[1]) + math.max(0, now - tonumber(b[2])) * cap / 60000)
end
local function store(key, value)
  redis.call('HSET', key, 'level', tostring(value), 'at', now)
  redis.call('PEXPIRE', key, 120000)
end
"
    };
}

/// ARGV[1]: the amount; ARGV[1 + i]: bucket i's limit. {0}: taken from every bucket;
/// {1, i, ms}: bucket i lacks it for ms more (nothing taken); {2, i}: more than bucket i's
/// whole limit.
const TAKE: &str = concat!(
    lua_prelude!(),
    r"
local amount = tonumber(ARGV[1])
local levels = {}
for i, key in ipairs(KEYS) do
  local cap = tonumber(ARGV[i + 1])
  if amount > cap then return {2, i} end
  local l = level(key, cap)
  if l < amount then return {1, i, math.ceil((amount - l) * 60000 / cap)} end
  levels[i] = l
end
for i, key in ipairs(KEYS) do store(key, levels[i] - amount) end
return {0}
",
);

/// ARGV[1]: the amount given back; ARGV[1 + i]: bucket i's limit.
const GIVE_BACK: &str = concat!(
    lua_prelude!(),
    r"
local amount = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local cap = tonumber(ARGV[i + 1])
  store(key, math.min(cap, level(key, cap) + amount))
end
return {0}
",
);

/// ARGV[i]: bucket i's limit. Per bucket: what is left (whole units) and ms until full.
const PEEK: &str = concat!(
    lua_prelude!(),
    r"
local out = {}
for i, key in ipairs(KEYS) do
  local cap = tonumber(ARGV[i])
  local l = level(key, cap)
  out[2 * i - 1] = math.floor(l)
  out[2 * i] = math.ceil((cap - l) * 60000 / cap)
end
return out
",
);

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(name: &str, limit: u64) -> Scope {
        Scope { name: format!("test:{name}:{}", uuid::Uuid::new_v4().simple()), limit, kind: "user" }
    }

    /// Two replicas' limiters on one Redis: a limit of 10 per minute lets 10 of 20 takes
    /// through, whichever replica makes them; the refusal says when to retry; what is
    /// given back can be taken again.
    #[tokio::test]
    async fn replicas_share_one_bucket() {
        let Some(url) = tm_testkit::redis() else { return };
        let replicas = [
            SharedLimits::connect(&url, Duration::from_secs(1), Outage::Refuse).unwrap(),
            SharedLimits::connect(&url, Duration::from_secs(1), Outage::Refuse).unwrap(),
        ];
        let user = scope("user", 10);
        let mut granted = 0;
        for i in 0..20 {
            match replicas[i % 2].take(std::slice::from_ref(&user), 1).await {
                Ok(()) => granted += 1,
                Err(Denied::Refused(Refusal::Wait { scope, retry_after })) => {
                    assert_eq!(scope, user);
                    // One request's worth refills in 6 s.
                    assert!(retry_after > Duration::from_secs(5) && retry_after <= Duration::from_secs(6));
                }
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(granted, 10);
        let status = replicas[1].status(std::slice::from_ref(&user), &[]).await;
        assert_eq!(status.requests.map(|h| (h.limit, h.remaining)), Some((10, 0)));
        replicas[0].give_back(std::slice::from_ref(&user), 2).await;
        assert_eq!(replicas[1].take(std::slice::from_ref(&user), 2).await, Ok(()));

        // A take over two buckets is all or nothing; more than a whole limit is too large.
        let (key, user) = (scope("key", 100), scope("user", 30));
        let both = [key.clone(), user.clone()];
        assert_eq!(replicas[0].take(&both, 25).await, Ok(()));
        assert!(
            matches!(replicas[1].take(&both, 10).await, Err(Denied::Refused(Refusal::Wait { scope, .. })) if scope == user)
        );
        let status = replicas[1].status(&[], std::slice::from_ref(&key)).await;
        assert_eq!(status.tokens.map(|h| h.remaining), Some(75), "the refused take left the key's bucket alone");
        assert!(matches!(replicas[0].take(&both, 101).await, Err(Denied::Refused(Refusal::TooLarge { .. }))));
    }

    /// Redis down (nothing listens on the port): every call ends within its deadline;
    /// `allow` serves with this process's own limits, `refuse` refuses.
    #[tokio::test]
    async fn an_outage_fails_open_or_closed_within_the_deadline() {
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let url = format!("redis://{closed}");
        let user = scope("user", 3);
        let open = SharedLimits::connect(&url, Duration::from_millis(200), Outage::Allow).unwrap();
        let started = Instant::now();
        let outcomes: Vec<bool> = futures::future::join_all((0..5).map(|_| open.take(std::slice::from_ref(&user), 1)))
            .await
            .into_iter()
            .map(|r| r.is_ok())
            .collect();
        assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 3, "the local limits apply: {outcomes:?}");
        let closed = SharedLimits::connect(&url, Duration::from_millis(200), Outage::Refuse).unwrap();
        assert_eq!(closed.take(std::slice::from_ref(&user), 1).await, Err(Denied::Unavailable));
        eprintln!("6 checks against a dead Redis took {:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(5), "checks must not hang on a dead Redis");
    }
}
