//! Engine-neutral request and event types.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::{mpsc, oneshot};

use crate::BackendError;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A text or chat prompt, not yet rendered or tokenized.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    /// Messages as JSON objects with `role` and string `content` (other keys kept for the
    /// chat template), already checked by the gateway.
    Chat(Vec<serde_json::Value>),
    Text(String),
}

/// Sampling settings after validation. Defaults are llama.cpp's own.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 disables.
    pub top_k: i32,
    pub min_p: f32,
    pub typical_p: f32,
    pub seed: u32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// 1 disables.
    pub repetition_penalty: f32,
    /// Constrain output to a JSON value (`response_format: json_object`).
    pub json: bool,
    /// Token id -> additive bias.
    pub logit_bias: Vec<(i32, f32)>,
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            typical_p: 1.0,
            seed: 0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            json: false,
            logit_bias: Vec::new(),
            ignore_eos: false,
        }
    }
}

/// A validated generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    pub model: String,
    pub prompt: PromptInput,
    pub sampling: SamplingParams,
    /// None: up to the end of the context.
    pub max_tokens: Option<u32>,
    /// Stop strings; generation ends before the first occurrence, which is not returned.
    pub stop: Vec<String>,
    /// The gateway's id of the request (sent upstream as `x-request-id`, retries included).
    pub request_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End of sequence token or a stop string.
    Stop,
    /// `max_tokens` or the end of the context.
    Length,
    /// The receiver went away.
    Cancelled,
}

impl FinishReason {
    pub fn as_openai(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// Exact token counts of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    /// Prompt tokens whose KV entries were reused instead of recomputed.
    pub cached_tokens: u64,
    pub completion_tokens: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    /// New output text (never splits a UTF-8 character, never contains stop text).
    Text(String),
    /// The last event of a generation.
    Finished { reason: FinishReason, usage: TokenUsage },
    /// The engine failed mid-generation; no further event follows.
    Failed(String),
}

/// What a generation consumed, reported by the engine once it lets go of the request,
/// however it ended (finished, failed, cancelled because the receiver went away, or
/// dropped before it ran: then all zero). Billing reads this, not the event stream, so
/// that a client who leaves mid-stream still pays for what was computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Receipt {
    pub usage: TokenUsage,
    /// None when the generation failed.
    pub finish: Option<FinishReason>,
    /// Who counted `usage`; kept in the usage record.
    pub source: UsageSource,
}

/// Who counted a request's tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UsageSource {
    /// The engine that ran it (the embedded engine, or an upstream's usage report).
    #[default]
    Engine,
    /// The gateway, with the model's tokenizer: the upstream reported none.
    Counted,
    /// The gateway, at 4 bytes a token: the upstream reported none and could not count.
    Estimated,
}

impl UsageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Engine => "engine",
            UsageSource::Counted => "counted",
            UsageSource::Estimated => "estimated",
        }
    }
}

/// An admitted generation.
pub struct Generation {
    pub prompt_tokens: u64,
    pub events: mpsc::UnboundedReceiver<GenerationEvent>,
    /// Resolves to the receipt; an error means the engine vanished (count nothing).
    pub receipt: oneshot::Receiver<Receipt>,
}

/// A request checked and tokenized, not yet running: its size is known, so the gateway
/// can reserve its worst-case cost before anything is computed.
pub struct Prepared {
    pub model: String,
    pub prompt_tokens: u64,
    /// The most completion tokens it may produce (`max_tokens`, or the rest of the context).
    pub max_completion_tokens: u64,
    launch: BoxFuture<'static, Result<Generation, BackendError>>,
}

impl Prepared {
    pub fn new(
        model: String,
        prompt_tokens: u64,
        max_completion_tokens: u64,
        launch: impl Future<Output = Result<Generation, BackendError>> + Send + 'static,
    ) -> Prepared {
        Prepared { model, prompt_tokens, max_completion_tokens, launch: Box::pin(launch) }
    }

    /// Starts the generation (it may still be refused, e.g. when the engine is full).
    pub async fn launch(self) -> Result<Generation, BackendError> {
        self.launch.await
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub id: String,
    /// Largest prompt + completion length of one request, in tokens.
    pub max_context: u64,
    pub owned_by: String,
    /// What serving it takes, when the backend knows.
    pub memory: Option<ModelMemory>,
    /// The engines behind it, for a model served by upstream endpoints (empty: embedded).
    pub endpoints: Vec<EndpointHealth>,
}

/// One upstream endpoint of a model, as health checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointHealth {
    pub url: String,
    pub healthy: bool,
    pub in_flight: usize,
}

/// Memory a served model needs: its weights, and its KV cache per token of context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelMemory {
    pub weights_bytes: u64,
    pub kv_bytes_per_token: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenizeInput {
    pub model: String,
    pub prompt: PromptInput,
    pub add_special: bool,
    pub add_generation_prompt: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tokenized {
    pub tokens: Vec<i64>,
    /// Each token's text, special tokens included.
    pub token_strs: Vec<String>,
    pub max_context: u64,
}
