//! Engine-neutral results: what a generation sends back and ends with (events, outputs,
//! logprobs, receipts), the launchable `Prepared`, and model descriptions.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::{mpsc, oneshot};

use crate::BackendError;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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
