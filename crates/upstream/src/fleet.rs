//! One model served by a fleet: choosing endpoints, trying them in turn before the first
//! byte, counting usage the engines did not report, and the active health checks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tm_backend::{BackendError, GenerateRequest, Generation, PromptInput, TokenUsage, Tokenized, UsageSource};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::attempt::{self, error_chain, AttemptError};
use crate::config::ModelConfig;
use crate::metrics::UpstreamMetrics;
use crate::pool::{Endpoint, RetryBudget};
use crate::relay::relay;
use crate::route::{block_hashes, Router};
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
    pub router: Router,
    pub metrics: UpstreamMetrics,
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
        Ok(FleetModel {
            name: config.name.clone(),
            upstream_model,
            max_context,
            router: Router::new(config.routing, endpoints),
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
            PromptInput::Text(t) => t.len() as u64 + TEMPLATE_TOKENS,
            PromptInput::Chat(messages) => {
                let bytes: u64 = messages.iter().map(|m| m.to_string().len() as u64).sum();
                bytes + TEMPLATE_TOKENS_PER_MESSAGE * messages.len() as u64 + TEMPLATE_TOKENS
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
        let tasks = self.tasks.clone();
        tasks.spawn(relay(self, opened, request, events_tx, receipt_tx));
        Generation { prompt_tokens, events, receipt }
    }

    /// Usage for a response whose engine reported none (it omitted it, failed, or the
    /// client left): the prompt and `completion` counted by an endpoint's tokenizer, else
    /// estimated at 4 bytes a token. Either way it is logged and counted in the metrics.
    pub async fn count_usage(&self, request: &GenerateRequest, completion: &str) -> (TokenUsage, UsageSource) {
        let prompt = self.count_tokens(&request.prompt, true).await;
        let completion_tokens = if completion.is_empty() {
            Some(0)
        } else {
            self.count_tokens(&PromptInput::Text(completion.to_owned()), false).await
        };
        let (usage, source) = match (prompt, completion_tokens) {
            (Some(p), Some(c)) => {
                (TokenUsage { prompt_tokens: p, cached_tokens: 0, completion_tokens: c }, UsageSource::Counted)
            }
            _ => {
                let bytes = match &request.prompt {
                    PromptInput::Text(t) => t.len(),
                    PromptInput::Chat(m) => m.iter().map(|m| m["content"].as_str().map_or(0, str::len)).sum(),
                };
                let estimate = |n: usize| n.div_ceil(4) as u64;
                (
                    TokenUsage {
                        prompt_tokens: estimate(bytes),
                        cached_tokens: 0,
                        completion_tokens: estimate(completion.len()),
                    },
                    UsageSource::Estimated,
                )
            }
        };
        let how = source.as_str();
        info!(model = %self.name, request_id = %request.request_id, how, prompt_tokens = usage.prompt_tokens,
              completion_tokens = usage.completion_tokens, "the engine reported no usage; counted by the gateway");
        self.metrics.usage_counted(&self.name, how);
        (usage, source)
    }

    async fn count_tokens(&self, prompt: &PromptInput, add_special: bool) -> Option<u64> {
        self.tokenize(prompt, add_special, true).await.ok().map(|t| t.tokens.len() as u64)
    }

    /// The engine's tokenization of `prompt`. The body carries vLLM's fields (SGLang and
    /// tensormesh read the same) and llama-server's (`content`, `add_special`), each side
    /// ignoring the other's. llama-server's `/tokenize` takes no messages: a chat is first
    /// rendered by its `/apply-template`.
    pub async fn tokenize(
        &self,
        prompt: &PromptInput,
        add_special: bool,
        add_generation_prompt: bool,
    ) -> Result<Tokenized, BackendError> {
        let mut body = tokenize_body(&self.upstream_model, prompt, add_special);
        body["add_generation_prompt"] = add_generation_prompt.into();
        body["return_token_strs"] = true.into();
        let v = self.post_any("/tokenize", &body).await?;
        let tokens = token_ids(&v)?;
        if tokens.is_empty() && !prompt_is_empty(prompt) {
            // An engine that read neither `prompt` nor `messages` (llama-server on a chat).
            let PromptInput::Chat(messages) = prompt else {
                return Err(BackendError::UpstreamFailed("the engine's /tokenize returned no tokens".into()));
            };
            let rendered = self.post_any("/apply-template", &json!({"messages": messages})).await?;
            let text = rendered["prompt"].as_str().ok_or_else(|| {
                BackendError::UpstreamFailed("the engine's /tokenize returned no tokens for messages".into())
            })?;
            return Box::pin(self.tokenize(&PromptInput::Text(text.to_owned()), add_special, false)).await;
        }
        let token_strs = v
            .get("token_strs")
            .and_then(Value::as_array)
            .map(|s| s.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        Ok(Tokenized { tokens, token_strs, max_context: self.max_context })
    }

    pub async fn detokenize(&self, tokens: &[i64]) -> Result<String, BackendError> {
        let v = self.post_any("/detokenize", &json!({"model": self.upstream_model, "tokens": tokens})).await?;
        // vLLM and tensormesh answer `prompt`, llama-server `content`.
        v.get("prompt")
            .or_else(|| v.get("content"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| BackendError::UpstreamFailed("the engine's /detokenize answer has no `prompt`".into()))
    }

    /// POSTs a small JSON request to the first endpoint that answers it (healthy ones
    /// first); the engines' 4xx come back as the client's.
    async fn post_any(&self, path: &str, body: &Value) -> Result<Value, BackendError> {
        let now = Instant::now();
        let order = self.router.order(&[], now);
        let mut failures = Vec::new();
        for &i in order.iter().take(self.config.retry.attempts as usize) {
            let endpoint = &self.router.endpoints()[i];
            let mut request = self
                .client
                .post(format!("{}{path}", endpoint.base))
                .timeout(self.config.timeouts.first_byte())
                .json(body);
            if let Some(key) = &endpoint.key {
                request = request.bearer_auth(key);
            }
            match request.send().await {
                Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                    Ok(v) => return Ok(v),
                    Err(e) => failures.push(format!("{}{path}: {}", endpoint.base, error_chain(&e))),
                },
                Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                    let status = r.status().as_u16();
                    let text = attempt::error_body(r).await;
                    return Err(BackendError::invalid("body", format!("the model's engine answered {status}: {text}")));
                }
                Ok(r) => failures.push(format!("{}{path} answered {}", endpoint.base, r.status().as_u16())),
                Err(e) => failures.push(format!("{}{path}: {}", endpoint.base, error_chain(&e))),
            }
        }
        Err(BackendError::UpstreamFailed(failures.join("; ")))
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

/// A `/tokenize` body both vLLM (`prompt` / `messages`, `add_special_tokens`) and
/// llama-server (`content`, `add_special`) read.
fn tokenize_body(model: &str, prompt: &PromptInput, add_special: bool) -> Value {
    match prompt {
        PromptInput::Text(t) => json!({"model": model, "prompt": t, "content": t,
                                       "add_special_tokens": add_special, "add_special": add_special}),
        PromptInput::Chat(m) => json!({"model": model, "messages": m, "add_special_tokens": add_special}),
    }
}

/// Token ids of a `/tokenize` answer: plain ids, or llama-server's `{"id", "piece"}`.
fn token_ids(v: &Value) -> Result<Vec<i64>, BackendError> {
    let tokens = v
        .get("tokens")
        .and_then(Value::as_array)
        .ok_or_else(|| BackendError::UpstreamFailed("the engine's /tokenize answer has no `tokens`".into()))?;
    Ok(tokens.iter().filter_map(|t| t.as_i64().or_else(|| t.get("id").and_then(Value::as_i64))).collect())
}

fn prompt_is_empty(prompt: &PromptInput) -> bool {
    match prompt {
        PromptInput::Text(t) => t.is_empty(),
        PromptInput::Chat(m) => m.is_empty(),
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
