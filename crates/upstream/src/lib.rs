//! Models served by fleets of OpenAI-compatible engines (vLLM, SGLang, llama-server or
//! other tensormesh nodes), behind the same [`Backend`] seam as the embedded engine, so
//! that auth, limits, holds and settlement are the gateway's as before.
//!
//! - [`config`]: the fleet file.
//! - [`route`]: prefix-aware, least-loaded and round-robin choice of an endpoint.
//! - [`pool`]: endpoint load, health (active checks, passive ejection), the retry budget.
//! - `attempt` / `relay`: one request's tries before the first byte, then the stream.
//! - `tokens`: the engines' tokenizers: `/tokenize`, `/detokenize`, usage they did not report.
//! - [`wire`]: request bodies sent upstream, SSE events read back.

mod attempt;
mod config;
mod fleet;
mod metrics;
mod pool;
mod relay;
mod route;
mod tokens;
mod wire;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tm_backend::{
    Backend, BackendError, EndpointHealth, GenerateRequest, ModelInfo, Prepared, PromptInput, TokenizeInput, Tokenized,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::FleetConfig;
use fleet::FleetModel;
use metrics::UpstreamMetrics;

pub struct UpstreamBackend {
    models: Vec<Arc<FleetModel>>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl UpstreamBackend {
    /// Builds the fleets `config` declares (asking the engines for their context length
    /// where the file does not give it) and starts their health checks.
    pub async fn connect(
        config: FleetConfig,
        registry: &mut prometheus_client::registry::Registry,
    ) -> Result<Self, String> {
        let metrics = UpstreamMetrics::default();
        metrics.register(registry);
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let mut models = Vec::new();
        for m in config.models {
            let model = Arc::new(FleetModel::new(m, metrics.clone(), tasks.clone()).await?);
            tasks.spawn(model.clone().check_health(stop.clone()));
            models.push(model);
        }
        Ok(UpstreamBackend { models, tasks, stop })
    }

    fn model(&self, name: &str) -> Result<&Arc<FleetModel>, BackendError> {
        self.models.iter().find(|m| m.name == name).ok_or_else(|| BackendError::ModelNotFound(name.to_owned()))
    }
}

/// `max_tokens` for a request that sent none: the context left after its prompt, counted by
/// an engine's tokenizer (one small call; `prompt_bound`, the most it can be, when no engine
/// can count it). An engine refuses a `max_tokens` that does not fit beside the prompt, so
/// the count must be the engine's own. The engines' `/tokenize` does not see the tools a
/// chat declares, which its template writes into the prompt: `tools_bound` (their JSON's
/// bytes, at least their tokens; part of `prompt_bound` too) is kept free for them.
async fn completion_room(
    model: &FleetModel,
    prompt: &PromptInput,
    prompt_bound: u64,
    tools_bound: u64,
) -> Result<u64, BackendError> {
    let counted = model.tokens.count_prompt(prompt).await.map(|n| n + tools_bound);
    let prompt_tokens = counted.unwrap_or(prompt_bound);
    match model.max_context.checked_sub(prompt_tokens).filter(|&room| room > 0) {
        Some(room) => Ok(room),
        None if counted.is_some() => Err(BackendError::ContextLengthExceeded {
            max_context: model.max_context,
            requested: prompt_tokens,
            prompt: prompt_tokens,
            completion: 0,
        }),
        None => Err(BackendError::invalid(
            "max_tokens",
            "the model's engines could not count this prompt's tokens; set max_tokens",
        )),
    }
}

#[async_trait]
impl Backend for UpstreamBackend {
    fn models(&self) -> Vec<ModelInfo> {
        let now = Instant::now();
        self.models
            .iter()
            .map(|m| ModelInfo {
                id: m.name.clone(),
                max_context: m.max_context,
                owned_by: "upstream".into(),
                memory: None,
                endpoints: m
                    .router
                    .endpoints()
                    .iter()
                    .map(|e| {
                        let s = e.status(now);
                        EndpointHealth { url: s.url, healthy: s.healthy, in_flight: s.in_flight }
                    })
                    .collect(),
            })
            .collect()
    }

    async fn prepare(&self, mut request: GenerateRequest) -> Result<Prepared, BackendError> {
        let model = self.model(&request.model)?.clone();
        if let Some(n) = request.max_tokens.map(u64::from).filter(|&n| n >= model.max_context) {
            return Err(BackendError::ContextLengthExceeded {
                max_context: model.max_context,
                requested: n,
                prompt: 0,
                completion: n,
            });
        }
        if request.output.prompt_logprobs {
            // The gateway writes the echoed prompt itself; the engines' prompt tokens would
            // come inside their text.
            return Err(BackendError::invalid(
                "echo",
                "`echo` with `logprobs` is not available for models served by upstream engines",
            ));
        }
        // The prompt's exact size is the engine's to say; the hold covers the most it can be,
        // with the tools a chat declares (its template writes them into the prompt).
        let tools = request.output.tools.as_ref();
        let tools_bound = tools.map_or(0, |t| serde_json::Value::from(t.openai_json()).to_string().len() as u64);
        let prompt_bound = FleetModel::prompt_bound(&request.prompt) + tools_bound;
        let max_tokens = match request.max_tokens {
            Some(n) => u64::from(n),
            None => completion_room(&model, &request.prompt, prompt_bound, tools_bound).await?,
        };
        // Always explicit upstream, and the one the hold is computed from: without it an
        // engine generates to the end of its own context, which may be longer than the one
        // held for (when discovery failed, or the fleet file says less).
        request.max_tokens = Some(u32::try_from(max_tokens).unwrap_or(u32::MAX));
        let max_completion = max_tokens * u64::from(request.output.choices.max(1));
        Ok(Prepared::new(model.name.clone(), prompt_bound, max_completion, model.launch(request, prompt_bound)))
    }

    async fn tokenize(&self, request: TokenizeInput) -> Result<Tokenized, BackendError> {
        self.model(&request.model)?
            .tokens
            .tokenize(&request.prompt, request.add_special, request.add_generation_prompt)
            .await
    }

    async fn detokenize(&self, model: &str, tokens: &[i64]) -> Result<String, BackendError> {
        self.model(model)?.tokens.detokenize(tokens).await
    }

    fn healthy(&self) -> bool {
        self.models.iter().all(|m| self.model_healthy(&m.name))
    }

    fn model_healthy(&self, model: &str) -> bool {
        let now = Instant::now();
        self.model(model).is_ok_and(|m| m.router.endpoints().iter().any(|e| e.healthy(now)))
    }

    fn in_flight(&self) -> usize {
        self.models.iter().flat_map(|m| m.router.endpoints()).map(|e| e.in_flight()).sum()
    }

    async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        // Relays end with their clients; one stalled upstream must not hold the exit.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.tasks.wait()).await;
    }
}
