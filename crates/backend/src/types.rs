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

impl PromptInput {
    /// The prompt's size in bytes as sent (a chat's messages as their JSON): what bounds
    /// its tokens before a tokenizer has read it.
    pub fn byte_len(&self) -> u64 {
        match self {
            PromptInput::Text(t) => t.len() as u64,
            PromptInput::Chat(messages) => messages.iter().map(|m| m.to_string().len() as u64).sum(),
        }
    }
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
    /// The client chose the seed: it asks for the same text from the same request.
    pub seeded: bool,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// 1 disables.
    pub repetition_penalty: f32,
    /// What shape the output must have (enforced while sampling, not checked after).
    pub format: OutputFormat,
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
            seeded: false,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            format: OutputFormat::Text,
            logit_bias: Vec::new(),
            ignore_eos: false,
        }
    }
}

/// The shape output must have.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum OutputFormat {
    #[default]
    Text,
    /// Any JSON object (`response_format: json_object`).
    JsonObject,
    /// A JSON value valid against `schema` (`response_format: json_schema`); `field`
    /// says where the client put it, for errors.
    JsonSchema { name: String, schema: serde_json::Value, field: String },
}

/// A validated generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    pub model: String,
    pub prompt: PromptInput,
    pub sampling: SamplingParams,
    /// None: up to the end of the context (per choice).
    pub max_tokens: Option<u32>,
    /// Stop strings; generation ends before the first occurrence, which is not returned.
    pub stop: Vec<String>,
    /// The gateway's id of the request (sent upstream as `x-request-id`, retries included).
    pub request_id: String,
    /// Choices, log-probabilities and tools.
    pub output: OutputOptions,
}

/// What a request asks for beyond one sampled text.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputOptions {
    /// Independent completions of the one prompt (OpenAI's `n`), each with its own sampler;
    /// choice `i` is seeded with `seed + i`.
    pub choices: u32,
    /// Report each output token's log-probability and this many likeliest alternatives.
    pub logprobs: Option<u8>,
    /// Also report the prompt's tokens with their log-probabilities (completions `echo`).
    pub prompt_logprobs: bool,
    /// Functions the model may call, and whether it must.
    pub tools: Option<Tools>,
}

impl Default for OutputOptions {
    fn default() -> Self {
        OutputOptions { choices: 1, logprobs: None, prompt_logprobs: false, tools: None }
    }
}

/// The functions a request declares, and how the model may use them.
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    pub functions: Vec<FunctionTool>,
    pub choice: ToolChoice,
    /// Several calls in one answer (OpenAI's `parallel_tool_calls`, default true).
    pub parallel: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FunctionTool {
    pub name: String,
    pub description: Option<String>,
    /// A JSON Schema for the arguments object.
    pub parameters: serde_json::Value,
    /// Where the client put `parameters`, for errors.
    pub field: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// No call: the model answers in text.
    None,
    /// The model decides between text and calls.
    Auto,
    /// At least one call.
    Required,
    /// Exactly one call of this function.
    Function(String),
}

impl Tools {
    /// The declared functions in OpenAI's chat shape (`{"type": "function", "function":
    /// {...}}`), as chat templates and upstream engines read them.
    pub fn openai_json(&self) -> Vec<serde_json::Value> {
        self.functions.iter().map(FunctionTool::openai_json).collect()
    }

    /// `tool_choice` in OpenAI's chat shape.
    pub fn choice_json(&self) -> serde_json::Value {
        match &self.choice {
            ToolChoice::None => "none".into(),
            ToolChoice::Auto => "auto".into(),
            ToolChoice::Required => "required".into(),
            ToolChoice::Function(name) => serde_json::json!({"type": "function", "function": {"name": name}}),
        }
    }
}

impl FunctionTool {
    pub fn openai_json(&self) -> serde_json::Value {
        let mut function = serde_json::Map::new();
        function.insert("name".into(), self.name.clone().into());
        if let Some(d) = &self.description {
            function.insert("description".into(), d.clone().into());
        }
        function.insert("parameters".into(), self.parameters.clone());
        serde_json::json!({"type": "function", "function": function})
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End of sequence token or a stop string.
    Stop,
    /// `max_tokens` or the end of the context.
    Length,
    /// The answer ended with tool calls.
    ToolCalls,
    /// The receiver went away.
    Cancelled,
}

impl FinishReason {
    pub fn as_openai(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
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

/// What a generation sends, in order: each choice's output and its end, then `Finished`
/// (or `Failed`, after which nothing follows).
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    /// More output of choice `choice`.
    Output { choice: u32, output: Output },
    /// Choice `choice` ended; every choice ends once, before `Finished`.
    ChoiceEnded { choice: u32, reason: FinishReason },
    /// The last event: every choice has ended. What the whole request used.
    Finished { usage: TokenUsage },
    /// The engine failed mid-generation; no further event follows.
    Failed(String),
}

impl GenerationEvent {
    /// Plain text of one choice, without log-probabilities.
    pub fn text(choice: u32, text: impl Into<String>) -> GenerationEvent {
        GenerationEvent::Output { choice, output: Output::Text { text: text.into(), logprobs: Vec::new() } }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Text (never splits a UTF-8 character, never contains stop text), with the
    /// log-probabilities of the tokens it came from when they were asked for.
    Text { text: String, logprobs: Vec<TokenLogprob> },
    /// The prompt's tokens and their log-probabilities (the first has none), before any
    /// text of the choice, when asked for.
    Prompt { logprobs: Vec<TokenLogprob> },
    /// A tool call begins; `index` numbers the choice's calls from 0.
    ToolCall { index: u32, id: String, name: String },
    /// More of call `index`'s arguments: pieces of one JSON object.
    ToolArguments { index: u32, fragment: String },
}

/// A token's log-probability under the model's own distribution (before penalties,
/// biases, temperature and constraints), with the likeliest tokens at its place.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: String,
    pub bytes: Vec<u8>,
    /// None only for a prompt's first token, which nothing predicts.
    pub logprob: Option<f32>,
    /// Likeliest first.
    pub top: Vec<TopLogprob>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopLogprob {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
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

impl Receipt {
    /// One request's receipt from its choices' (each ran as a sequence of its own over the
    /// one prompt): the prompt is counted once, as the choice that computed the most of it
    /// saw it (the others found it cached), and every choice's completion tokens. A failed
    /// choice makes the request failed, a cancelled one cancelled.
    pub fn of_choices(receipts: &[Receipt]) -> Receipt {
        let ran: Vec<&Receipt> = receipts.iter().filter(|r| r.usage.prompt_tokens > 0).collect();
        let usage = TokenUsage {
            prompt_tokens: ran.iter().map(|r| r.usage.prompt_tokens).max().unwrap_or(0),
            cached_tokens: ran.iter().map(|r| r.usage.cached_tokens).min().unwrap_or(0),
            completion_tokens: receipts.iter().map(|r| r.usage.completion_tokens).sum(),
        };
        let finish = if receipts.iter().any(|r| r.finish.is_none()) {
            None
        } else if receipts.iter().any(|r| r.finish == Some(FinishReason::Cancelled)) {
            Some(FinishReason::Cancelled)
        } else {
            receipts.first().and_then(|r| r.finish)
        };
        Receipt { usage, finish, source: receipts.first().map(|r| r.source).unwrap_or_default() }
    }
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
    /// The most completion tokens it may produce over all its choices (`max_tokens`, or
    /// the rest of the context, for each).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(prompt: u64, cached: u64, completion: u64, finish: Option<FinishReason>) -> Receipt {
        Receipt {
            usage: TokenUsage { prompt_tokens: prompt, cached_tokens: cached, completion_tokens: completion },
            finish,
            source: UsageSource::Engine,
        }
    }

    #[test]
    fn choices_count_the_prompt_once_and_every_completion() {
        let stop = Some(FinishReason::Stop);
        let r = Receipt::of_choices(&[receipt(100, 10, 5, stop), receipt(100, 99, 7, Some(FinishReason::Length))]);
        assert_eq!(r.usage, TokenUsage { prompt_tokens: 100, cached_tokens: 10, completion_tokens: 12 });
        assert_eq!(r.finish, stop);
        // A choice that never ran (its client left while it waited) counts nothing.
        let r = Receipt::of_choices(&[receipt(100, 40, 5, stop), receipt(0, 0, 0, Some(FinishReason::Cancelled))]);
        assert_eq!((r.usage.cached_tokens, r.finish), (40, Some(FinishReason::Cancelled)));
        assert_eq!(Receipt::of_choices(&[receipt(100, 0, 5, stop), receipt(100, 99, 1, None)]).finish, None);
    }
}
