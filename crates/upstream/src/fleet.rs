//! One model served by a fleet: choosing endpoints, trying them in turn before the first
//! byte, and the active health checks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tm_backend::{BackendError, GenerateRequest, Generation, PromptInput};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::attempt::{self, AttemptError};
use crate::config::ModelConfig;
use crate::metrics::UpstreamMetrics;
use crate::pool::{Endpoint, RetryBudget};
use crate::relay::{relay, RelayContext};
use crate::route::{block_hashes, Router};
use crate::tokens::Tokens;
use crate::wire;

/// Used when neither the fleet file nor the engines say.
const DEFAULT_MAX_CONTEXT: u64 = 4096;
/// Tokens a chat template adds per message at most (role markers, separators), and once
/// (generation prompt, BOS), for the worst-case prompt size a hold is sized for.
const TEMPLATE_TOKENS_PER_MESSAGE: u64 = 8;
const TEMPLATE_TOKENS: u64 = 16;

pub struct FleetModel {
    pub name: String,
    pub upstream_model: String,
    pub max_context: u64,
    pub config: ModelConfig,
    pub router: Arc<Router>,
    pub metrics: UpstreamMetrics,
    /// The engines' tokenizers, for `/tokenize` and for usage they did not report.
    pub(crate) tokens: Arc<Tokens>,
    budget: RetryBudget,
    client: reqwest::Client,
    tasks: TaskTracker,
}

impl FleetModel {
    pub async fn new(config: ModelConfig, metrics: UpstreamMetrics, tasks: TaskTracker) -> Result<FleetModel, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.timeouts.connect())
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let endpoints: Vec<Arc<Endpoint>> = config.endpoints.iter().map(|e| Arc::new(Endpoint::new(e))).collect();
        let upstream_model = config.upstream_model.clone().unwrap_or_else(|| config.name.clone());
        let max_context = match config.max_context {
            Some(n) => n,
            None => discover_max_context(&client, &endpoints, &upstream_model).await.unwrap_or_else(|| {
                warn!(model = %config.name, "no endpoint reported max_model_len; assuming {DEFAULT_MAX_CONTEXT} (set max_context)");
                DEFAULT_MAX_CONTEXT
            }),
        };
        for e in &endpoints {
            metrics.set_healthy(&config.name, &e.base, true);
        }
        let router = Arc::new(Router::new(config.routing, endpoints));
        let tokens = Arc::new(Tokens {
            name: config.name.clone(),
            upstream_model: upstream_model.clone(),
            max_context,
            client: client.clone(),
            router: router.clone(),
            attempts: config.retry.attempts,
            timeout: config.timeouts.first_byte(),
            metrics: metrics.clone(),
        });
        Ok(FleetModel {
            name: config.name.clone(),
            upstream_model,
            max_context,
            router,
            tokens,
            budget: RetryBudget::new(config.retry.budget_ratio, config.retry.min_per_second),
            config,
            metrics,
            client,
            tasks,
        })
    }

    /// The most prompt tokens `prompt` can be: byte-level tokenizers make at most one
    /// token per byte, plus what the chat template adds. Holds are sized on it.
    pub fn prompt_bound(prompt: &PromptInput) -> u64 {
        match prompt {
            PromptInput::Text(_) => prompt.byte_len() + TEMPLATE_TOKENS,
            PromptInput::Chat(messages) => {
                prompt.byte_len() + TEMPLATE_TOKENS_PER_MESSAGE * messages.len() as u64 + TEMPLATE_TOKENS
            }
        }
    }

    /// Routes `request`, tries endpoints until one sends its first event, and relays the
    /// rest in a tracked task.
    /// `prompt_bound`: [`Self::prompt_bound`] of the request, as sized by `prepare`.
    pub async fn launch(
        self: Arc<Self>,
        request: GenerateRequest,
        prompt_bound: u64,
    ) -> Result<Generation, BackendError> {
        let now = Instant::now();
        self.budget.record_request(now);
        let hashes = block_hashes(&wire::routing_key(&request.prompt), self.config.prefix_block_bytes);
        let endpoints = self.router.endpoints();
        let order = self.router.order(&hashes, now);
        let mut candidates: Vec<usize> = order.iter().copied().filter(|&i| endpoints[i].available(now)).collect();
        if candidates.is_empty() {
            if endpoints.iter().any(|e| e.healthy(now)) {
                let capacity = endpoints.iter().map(|e| e.max_concurrency).sum();
                return Err(BackendError::Overloaded { capacity, retry_after_secs: 1 });
            }
            // Every endpoint looks down: try them anyway rather than refuse outright (the
            // checks may be stale, and a refusal is certain to fail).
            candidates = order;
        }
        let (path, body) = wire::request_body(&request, &self.upstream_model);
        let first_byte = self.config.timeouts.first_byte();
        let mut failures = Vec::new();
        let mut only_busy = true;
        let mut only_timeouts = true;
        for (attempt, &i) in candidates.iter().take(self.config.retry.attempts as usize).enumerate() {
            if attempt > 0 {
                if !self.budget.try_retry(Instant::now()) {
                    failures.push("retry budget exhausted".to_owned());
                    break;
                }
                self.metrics.retry(&self.name);
            }
            let endpoint = &endpoints[i];
            let Some(slot) = endpoint.acquire() else { continue };
            let opened =
                tokio::time::timeout(first_byte, attempt::open(&self.client, slot, path, &body, &request.request_id));
            let (message, endpoint_fault, outcome) = match opened.await {
                Ok(Ok(opened)) => {
                    self.router.served(&hashes, i);
                    return Ok(self.spawn_relay(opened, request, prompt_bound));
                }
                Ok(Err(AttemptError::Refused(e))) => {
                    self.metrics.attempt(&self.name, &endpoint.base, "refused");
                    return Err(e);
                }
                Ok(Err(AttemptError::Failed { message, endpoint_fault, outcome })) => {
                    (message, endpoint_fault, outcome)
                }
                Err(_) => (
                    format!("{}: no response within {} ms", endpoint.base, first_byte.as_millis()),
                    true,
                    "first_byte_timeout",
                ),
            };
            self.metrics.attempt(&self.name, &endpoint.base, outcome);
            only_busy &= !endpoint_fault;
            only_timeouts &= outcome == "first_byte_timeout";
            if endpoint_fault && endpoint.record_failure(&self.config.health, Instant::now()) {
                warn!(model = %self.name, endpoint = %endpoint.base, "endpoint ejected after failing requests in a row");
                self.metrics.ejected(&self.name, &endpoint.base);
            }
            warn!(model = %self.name, request_id = %request.request_id, error = %message, "upstream attempt failed");
            failures.push(message);
        }
        // Nothing failed for a reason of its own: the endpoints were busy or full.
        if only_busy {
            let capacity = endpoints.iter().map(|e| e.max_concurrency).sum();
            return Err(BackendError::Overloaded { capacity, retry_after_secs: 1 });
        }
        if only_timeouts {
            return Err(BackendError::UpstreamTimeout(failures.join("; ")));
        }
        Err(BackendError::UpstreamFailed(failures.join("; ")))
    }

    /// `prompt_tokens` is a bound: the prompt's size is only known from the engine's usage,
    /// at the end.
    fn spawn_relay(
        self: Arc<Self>,
        opened: attempt::Opened,
        request: GenerateRequest,
        prompt_tokens: u64,
    ) -> Generation {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (receipt_tx, receipt) = oneshot::channel();
        let context = RelayContext {
            model: self.name.clone(),
            idle: self.config.timeouts.idle(),
            health: self.config.health.clone(),
            metrics: self.metrics.clone(),
            tokens: self.tokens.clone(),
        };
        self.tasks.spawn(relay(context, opened, request, events_tx, receipt_tx));
        Generation { prompt_tokens, events, receipt }
    }

    /// Checks every endpoint each interval until `stop`.
    pub async fn check_health(self: Arc<Self>, stop: CancellationToken) {
        let health = &self.config.health;
        let mut tick = tokio::time::interval(Duration::from_millis(health.interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let checks = self.router.endpoints().iter().map(|e| async {
                let url = format!("{}{}", e.base, health.path);
                let mut request = self.client.get(url).timeout(Duration::from_millis(health.timeout_ms));
                if let Some(key) = &e.key {
                    request = request.bearer_auth(key);
                }
                let ok = request.send().await.is_ok_and(|r| r.status().is_success());
                if ok != e.healthy(Instant::now()) {
                    info!(model = %self.name, endpoint = %e.base, ok, "health check");
                }
                e.record_check(ok);
                self.metrics.set_healthy(&self.name, &e.base, e.healthy(Instant::now()));
            });
            futures::future::join_all(checks).await;
        }
    }
}

/// `max_model_len` of `model` from the first endpoint's `/v1/models` that has it.
async fn discover_max_context(client: &reqwest::Client, endpoints: &[Arc<Endpoint>], model: &str) -> Option<u64> {
    for e in endpoints {
        let mut request = client.get(format!("{}/v1/models", e.base)).timeout(Duration::from_secs(2));
        if let Some(key) = &e.key {
            request = request.bearer_auth(key);
        }
        let Ok(r) = request.send().await else { continue };
        let Ok(v) = r.json::<Value>().await else { continue };
        let found = v["data"]
            .as_array()
            .and_then(|d| d.iter().find(|m| m["id"] == model))
            .and_then(|m| m["max_model_len"].as_u64());
        if found.is_some() {
            return found;
        }
    }
    None
}
