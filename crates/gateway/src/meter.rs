//! Admission and metering of one inference request.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tm_backend::{Backend, Prepared};
use tm_control::keys::KeyHolder;
use tm_control::Control;
use tm_money::Nanos;
use tm_store::rate_limits::LimitOverride;
use tm_store::Store;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::journal::Journal;
use crate::limiter::{Limits, RateLimiter, RateStatus, Refusal, Scope};
use crate::limits::{Denied, Limiter, SharedLimits};
use crate::metered::{Metered, UserSlot};
use crate::replica::Replica;
use crate::settler::{Bill, Pending, Settler};
use crate::wallet::Wallets;
use crate::GatewayError;

/// How long a user's rate-limit override is reused before the store is asked again.
const OVERRIDE_TTL: Duration = Duration::from_secs(5);
/// No token of any model's vocabulary is longer than this many bytes (the longest are runs
/// of spaces or punctuation, tens of bytes): a prompt of n bytes is at least n / this
/// tokens.
const MAX_TOKEN_BYTES: u64 = 256;
/// Prompts from this size on are checked against the caller's money before the model's
/// tokenizer reads them; smaller ones cost less to tokenize than the balance lookup.
const LARGE_PROMPT_BYTES: u64 = 64 * 1024;

/// Default limits; a user's override (from the store) replaces the per-user ones and
/// caps each of their keys.
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitSettings {
    pub per_key: Limits,
    pub per_user: Limits,
    /// Generations one user may have running at once, over all their keys (0: unlimited).
    pub concurrent_per_user: u32,
}

/// The gateway path shared by every inference handler. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    control: Control,
    /// Where generations run.
    backend: Arc<dyn Backend>,
    /// The ledger: holds for leases, balances for a refusal's message.
    store: Store,
    limiter: Arc<Limiter>,
    wallets: Arc<Wallets>,
    limits: LimitSettings,
    overrides: Mutex<HashMap<String, (LimitOverride, Instant)>>,
    settle: mpsc::UnboundedSender<Pending>,
    /// Cancelled at the end of a shutdown's drain: running generations then end with an
    /// error event, so that they settle before the settler stops.
    stop: CancellationToken,
    /// Generations admitted and not yet dropped.
    running: Arc<AtomicUsize>,
    /// The same, per user.
    running_per_user: Arc<Mutex<HashMap<String, u32>>>,
}

/// The requests and tokens buckets of one caller, resolved once per request (defaults and
/// the user's override) and used by every limit check of that request.
#[derive(Debug, Clone)]
pub struct Scopes {
    requests: [Scope; 2],
    tokens: [Scope; 2],
}

impl Gateway {
    /// The gateway and its settler, which the caller runs (and awaits at shutdown: it
    /// ends once every gateway clone is gone and every pending settlement is written).
    /// `replica`: this process among the replicas on its database (see [`Replica::join`]);
    /// `shared`: the limits in Redis, shared by the replicas (None: kept in this process);
    /// `data_dir`: where the settlement journal goes (see `journal`).
    pub fn new(
        control: Control,
        store: Store,
        backend: Arc<dyn Backend>,
        limits: LimitSettings,
        replica: Replica,
        shared: Option<SharedLimits>,
        data_dir: &Path,
    ) -> (Gateway, Settler) {
        let (settle, rx) = mpsc::unbounded_channel();
        let limiter = Arc::new(match shared {
            Some(shared) => Limiter::Shared(shared),
            None => Limiter::Local(RateLimiter::default()),
        });
        let wallets = Arc::new(Wallets::new(Arc::new(replica)));
        let journal = Journal::new(data_dir);
        let settler = Settler::new(control.clone(), store.clone(), limiter.clone(), wallets.clone(), rx, journal);
        let inner = Inner {
            control,
            backend,
            store,
            limiter,
            wallets,
            limits,
            overrides: Mutex::default(),
            settle,
            stop: CancellationToken::new(),
            running: Arc::default(),
            running_per_user: Arc::default(),
        };
        (Gateway { inner: Arc::new(inner) }, settler)
    }

    /// Another replica is short of a user's money (a notice on `Channel::Leases`): gives
    /// back what this one's lease holds for the user unused.
    pub async fn answer_lease_request(&self, notice: &str) {
        self.inner.wallets.give_back_for(&self.inner.store, notice).await;
    }

    pub(crate) fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// Ends every running generation (each gets an error event and settles what it used),
    /// and waits until they are gone, at most `wait`. For the end of a shutdown's drain:
    /// streams still open then would otherwise outlive the settler, unbilled.
    pub async fn stop_generations(&self, wait: Duration) {
        self.inner.stop.cancel();
        let deadline = Instant::now() + wait;
        while self.inner.running.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Takes `tokens` from the caller's tokens-per-minute limits (what `/tokenize` counted).
    pub async fn take_tokens(&self, scopes: &Scopes, tokens: u64) -> Result<(), GatewayError> {
        self.inner.limiter.take(&scopes.tokens, tokens).await.map_err(|r| refused(r, "tokens", tokens))
    }

    /// The fewest tokens a prompt of `bytes` bytes can be.
    pub fn least_tokens(bytes: u64) -> u64 {
        (bytes / MAX_TOKEN_BYTES).max(1)
    }

    /// Refuses a large prompt from a caller who cannot pay even the least it can cost (its
    /// fewest possible tokens and one completion token), before the model's tokenizer and
    /// template spend time on it: a key with no money cannot make the server read
    /// megabytes for free. Smaller prompts, and unpriced models, are left to admission.
    pub async fn refuse_unaffordable(&self, user_id: &str, model: &str, prompt_bytes: u64) -> Result<(), GatewayError> {
        if prompt_bytes < LARGE_PROMPT_BYTES {
            return Ok(());
        }
        let Ok(Some(active)) = self.inner.control.pricing().active(model).await else { return Ok(()) };
        let least = active.price.cost(Self::least_tokens(prompt_bytes), 0, 1);
        let in_account = self
            .inner
            .store
            .ledger()
            .account(user_id)
            .await
            .map_err(|e| GatewayError::Internal(format!("cannot read the balance: {e}")))?
            .available_nanos();
        let available = Nanos(in_account) + self.inner.wallets.free(user_id).await;
        if available < least {
            return Err(GatewayError::InsufficientBalance {
                needed: least.usd_decimal(),
                available: available.max(Nanos::ZERO).usd_decimal(),
            });
        }
        Ok(())
    }

    /// Counts one request against the caller's requests-per-minute limits.
    pub async fn check_request(&self, scopes: &Scopes) -> Result<(), GatewayError> {
        self.inner.limiter.take(&scopes.requests, 1).await.map_err(|r| refused(r, "requests", 1))
    }

    /// The caller's headroom, for the `x-ratelimit-*` headers.
    pub async fn rate_status(&self, scopes: &Scopes) -> RateStatus {
        self.inner.limiter.status(&scopes.requests, &scopes.tokens).await
    }

    /// Admits a prepared generation: checks its model is priced, takes its tokens from the
    /// tokens-per-minute limits, holds its worst-case cost (from the user's lease, see
    /// `wallet`), and launches it. Nothing runs, and nothing is billed, when any step
    /// refuses.
    pub async fn admit(
        &self,
        holder: &KeyHolder,
        scopes: &Scopes,
        request_id: &str,
        prepared: Prepared,
    ) -> Result<Metered, GatewayError> {
        let control = &self.inner.control;
        let price = control
            .pricing()
            .active(&prepared.model)
            .await
            .map_err(|e| GatewayError::Internal(e.to_string()))?
            .ok_or_else(|| GatewayError::NotPriced(prepared.model.clone()))?
            .price;
        let user_slot = self.user_slot(&holder.principal.user_id)?;
        let tokens = prepared.prompt_tokens + prepared.max_completion_tokens;
        self.inner.limiter.take(&scopes.tokens, tokens).await.map_err(|r| refused(r, "tokens", tokens))?;
        let give_back = || self.inner.limiter.give_back(&scopes.tokens, tokens);

        let user_id = &holder.principal.user_id;
        let hold = price.worst_case(prepared.prompt_tokens, prepared.max_completion_tokens);
        let started_at = control.now_ms();
        let store = &self.inner.store;
        let wallets = &self.inner.wallets;
        let held_under = match wallets.take(store, user_id, hold).await {
            Ok(Some(replica_id)) => replica_id,
            Ok(None) => {
                give_back().await;
                // What the account has free plus what this process holds for the user unused.
                let in_account = store.ledger().account(user_id).await.map(|a| a.available_nanos()).unwrap_or(0);
                let available = Nanos(in_account) + wallets.free(user_id).await;
                return Err(GatewayError::InsufficientBalance {
                    needed: hold.usd_decimal(),
                    available: available.max(Nanos::ZERO).usd_decimal(),
                });
            }
            Err(e) => {
                give_back().await;
                return Err(GatewayError::Internal(format!("cannot hold the request's cost: {e}")));
            }
        };
        let model = prepared.model.clone();
        let generation = match prepared.launch().await {
            Ok(g) => g,
            Err(e) => {
                give_back().await;
                wallets.finish(user_id, &held_under, hold, Nanos::ZERO).await;
                return Err(e.into());
            }
        };
        let bill = Bill {
            request_id: request_id.to_owned(),
            user_id: user_id.clone(),
            key_id: holder.key_id.clone(),
            model,
            price,
            hold,
            held_under,
            started_at,
            reserved_tokens: tokens,
            token_scopes: scopes.tokens.to_vec(),
        };
        let inner = &self.inner;
        Ok(Metered::new(generation, bill, inner.settle.clone(), inner.stop.clone(), inner.running.clone(), user_slot))
    }

    /// One of the user's running-generation slots, or a refusal when all are taken.
    fn user_slot(&self, user_id: &str) -> Result<UserSlot, GatewayError> {
        let limit = self.inner.limits.concurrent_per_user;
        let mut running = self.inner.running_per_user.lock().unwrap_or_else(PoisonError::into_inner);
        let count = running.entry(user_id.to_owned()).or_insert(0);
        if limit > 0 && *count >= limit {
            return Err(GatewayError::TooManyAtOnce { limit });
        }
        *count += 1;
        Ok(UserSlot { user_id: user_id.to_owned(), running: Arc::clone(&self.inner.running_per_user) })
    }

    /// The caller's limit buckets.
    pub async fn scopes(&self, holder: &KeyHolder) -> Result<Scopes, GatewayError> {
        let user_id = &holder.principal.user_id;
        let o = self.user_override(user_id).await?;
        let defaults = self.inner.limits;
        let user = Limits {
            requests_per_minute: o.requests_per_minute.map_or(defaults.per_user.requests_per_minute, clamp_limit),
            tokens_per_minute: o.tokens_per_minute.map_or(defaults.per_user.tokens_per_minute, clamp_limit),
        };
        // A user's override also caps each key (0 = unlimited, so take the smaller non-zero).
        let cap =
            |key: u64, user: u64, set: bool| if set && (key == 0 || (user > 0 && user < key)) { user } else { key };
        let key = Limits {
            requests_per_minute: cap(
                defaults.per_key.requests_per_minute,
                user.requests_per_minute,
                o.requests_per_minute.is_some(),
            ),
            tokens_per_minute: cap(
                defaults.per_key.tokens_per_minute,
                user.tokens_per_minute,
                o.tokens_per_minute.is_some(),
            ),
        };
        let scope = |prefix: &str, id: &str, limit: u64, kind: &'static str| Scope {
            name: format!("{prefix}:{id}"),
            limit,
            kind,
        };
        Ok(Scopes {
            requests: [
                scope("rk", &holder.key_id, key.requests_per_minute, "API key"),
                scope("ru", user_id, user.requests_per_minute, "user"),
            ],
            tokens: [
                scope("tk", &holder.key_id, key.tokens_per_minute, "API key"),
                scope("tu", user_id, user.tokens_per_minute, "user"),
            ],
        })
    }

    async fn user_override(&self, user_id: &str) -> Result<LimitOverride, GatewayError> {
        let now = Instant::now();
        if let Some((o, at)) = self.inner.overrides.lock().unwrap_or_else(PoisonError::into_inner).get(user_id).copied()
        {
            if now.duration_since(at) < OVERRIDE_TTL {
                return Ok(o);
            }
        }
        let o = self.inner.store.rate_limits().get(user_id).await.map_err(|e| GatewayError::Internal(e.to_string()))?;
        let mut m = self.inner.overrides.lock().unwrap_or_else(PoisonError::into_inner);
        if m.len() > 100_000 {
            m.clear();
        }
        m.insert(user_id.to_owned(), (o, now));
        Ok(o)
    }
}

fn clamp_limit(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn refused(denied: Denied, what: &'static str, amount: u64) -> GatewayError {
    match denied {
        Denied::Refused(Refusal::Wait { scope, retry_after }) => {
            GatewayError::RateLimited { what, scope: scope.kind, limit: scope.limit, retry_after }
        }
        Denied::Refused(Refusal::TooLarge { scope }) => {
            GatewayError::TooLarge { tokens: amount, limit: scope.limit, scope: scope.kind }
        }
        Denied::Unavailable => GatewayError::LimitsUnavailable,
    }
}
