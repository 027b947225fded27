//! The engines' tokenizers, reached over HTTP: `/tokenize` and `/detokenize` for clients,
//! and the count of what a response used when its engine reported no usage (it omitted
//! it, failed, or the client left).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tm_backend::{BackendError, GenerateRequest, PromptInput, TokenUsage, Tokenized, UsageSource};
use tracing::info;

use crate::attempt::{self, error_chain};
use crate::metrics::UpstreamMetrics;
use crate::route::Router;

/// One fleet model's view of its engines' tokenizers.
pub struct Tokens {
    pub name: String,
    pub upstream_model: String,
    pub max_context: u64,
    pub client: reqwest::Client,
    pub router: Arc<Router>,
    /// Endpoints tried per call, and how long each may take.
    pub attempts: u32,
    pub timeout: Duration,
    pub metrics: UpstreamMetrics,
}

impl Tokens {
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

    /// The prompt's size in the engine's tokens, as a generation counts it; `None` when no
    /// endpoint could tokenize it.
    pub async fn count_prompt(&self, prompt: &PromptInput) -> Option<u64> {
        self.count_tokens(prompt, true).await
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
        let order = self.router.by_load(now);
        let mut failures = Vec::new();
        for &i in order.iter().take(self.attempts as usize) {
            let endpoint = &self.router.endpoints()[i];
            let mut request = self.client.post(format!("{}{path}", endpoint.base)).timeout(self.timeout).json(body);
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
