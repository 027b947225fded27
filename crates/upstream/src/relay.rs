//! Relaying an opened response to the client: text as it arrives, the idle timeout, the
//! client leaving (which closes the upstream request), and the receipt at the end however
//! it ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};

use tm_backend::{FinishReason, GenerationEvent, Output, Receipt, TokenUsage, UsageSource};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::attempt::{error_chain, Opened};
use crate::config::HealthConfig;
use crate::metrics::UpstreamMetrics;
use crate::tokens::Tokens;
use crate::wire::{parse_event, Chunk};

/// How a relayed response ended.
enum End {
    /// `[DONE]`, or the stream closed after a finish reason.
    Finished(FinishReason),
    /// The client went away; the upstream request is closed by dropping it.
    Cancelled,
    /// The upstream failed after the first event: the client gets an error event.
    Failed { message: String, outcome: &'static str },
}

/// What a relay needs of its fleet model.
pub struct RelayContext {
    pub model: String,
    /// The longest silence between two events.
    pub idle: Duration,
    pub health: HealthConfig,
    pub metrics: UpstreamMetrics,
    pub tokens: Arc<Tokens>,
}

pub async fn relay(
    context: RelayContext,
    opened: Opened,
    request: tm_backend::GenerateRequest,
    events: mpsc::UnboundedSender<GenerationEvent>,
    receipt: oneshot::Sender<Receipt>,
) {
    let Opened { slot, mut bytes, mut reader, first } = opened;
    let endpoint = slot.endpoint().clone();
    let RelayContext { model, idle, health, metrics, tokens } = context;
    let mut state = Relayed::default();
    let mut end = state.take(first, &events);
    while end.is_none() {
        // A complete event may already be buffered behind the first one.
        if let Some(event) = reader.next_event() {
            end = match event.and_then(|data| parse_event(&data)) {
                Ok(chunks) => state.take(chunks, &events),
                Err(message) => Some(End::Failed { message, outcome: "malformed" }),
            };
            continue;
        }
        tokio::select! {
            () = events.closed() => end = Some(End::Cancelled),
            next = tokio::time::timeout(idle, bytes.next()) => match next {
                Err(_) => end = Some(End::Failed {
                    message: format!("the model's engine sent nothing for {} ms", idle.as_millis()),
                    outcome: "idle_timeout",
                }),
                Ok(Some(Ok(b))) => reader.push(&b),
                Ok(Some(Err(e))) => end = Some(End::Failed {
                    message: format!("the connection to the model's engine broke: {}", error_chain(&e)),
                    outcome: "broken_stream",
                }),
                Ok(None) => end = Some(match state.ended.get(&0) {
                    Some(&reason) if !reader.has_partial() => End::Finished(reason),
                    _ => End::Failed {
                        message: "the model's engine closed the stream before the end of the response".into(),
                        outcome: "broken_stream",
                    },
                }),
            },
        }
    }
    // Closing the connection is how an engine learns that its request is abandoned.
    drop(bytes);
    drop(slot);
    let end = end.unwrap_or(End::Cancelled);
    let now = Instant::now();
    match &end {
        End::Finished(_) => {
            endpoint.record_success();
            metrics.attempt(&model, &endpoint.base, "ok");
        }
        End::Cancelled => metrics.attempt(&model, &endpoint.base, "cancelled"),
        End::Failed { message, outcome } => {
            warn!(model = %model, endpoint = %endpoint.base, request_id = %request.request_id, error = %message,
                  "upstream failed mid-response");
            metrics.attempt(&model, &endpoint.base, outcome);
            if endpoint.record_failure(&health, now) {
                metrics.ejected(&model, &endpoint.base);
            }
        }
    }
    // What the client pays for: the engine's usage when it reported one, else the prompt
    // and the text it received, counted with the model's tokenizer.
    let (usage, source) = match state.usage {
        Some(u) => (u, UsageSource::Engine),
        None => tokens.count_usage(&request, &state.text).await,
    };
    let finish = match end {
        End::Finished(reason) => {
            state.end_open_choices(&events);
            let _ = events.send(GenerationEvent::Finished { usage });
            Some(reason)
        }
        End::Cancelled => Some(FinishReason::Cancelled),
        End::Failed { message, outcome } => {
            // What the client reads names no address and quotes no engine (the log has both).
            let shown = match outcome {
                "idle_timeout" => message,
                "malformed" => "the model's engine sent a malformed response".into(),
                "error_event" => "the model's engine reported an error".into(),
                _ => "the connection to the model's engine broke".into(),
            };
            let _ = events.send(GenerationEvent::Failed(shown));
            None
        }
    };
    let _ = receipt.send(Receipt { usage, finish, source });
}

/// What has been relayed so far.
#[derive(Default)]
struct Relayed {
    /// Kept only for counting when the engine reports no usage (every choice's text and
    /// tool calls).
    text: String,
    /// Choices that ended, and how.
    ended: BTreeMap<u32, FinishReason>,
    /// Choices that sent anything.
    seen: BTreeSet<u32>,
    /// Tool calls begun, by (choice, index).
    calls: BTreeSet<(u32, u32)>,
    usage: Option<TokenUsage>,
}

impl Relayed {
    /// Relays one event's chunks; returns how the response ended, if it did.
    fn take(&mut self, chunks: Vec<Chunk>, events: &mpsc::UnboundedSender<GenerationEvent>) -> Option<End> {
        for chunk in chunks {
            match chunk {
                Chunk::Delta { choice, text, logprobs, tool_calls, finish } => {
                    self.seen.insert(choice);
                    let mut out = Vec::new();
                    if !text.is_empty() || !logprobs.is_empty() {
                        self.text.push_str(&text);
                        out.push(Output::Text { text, logprobs });
                    }
                    for call in tool_calls {
                        if self.calls.insert((choice, call.index)) {
                            let id = call.id.unwrap_or_else(|| format!("call_{}", uuid::Uuid::new_v4().simple()));
                            let name = call.name.unwrap_or_default();
                            self.text.push_str(&name);
                            out.push(Output::ToolCall { index: call.index, id, name });
                        }
                        if !call.arguments.is_empty() {
                            self.text.push_str(&call.arguments);
                            out.push(Output::ToolArguments { index: call.index, fragment: call.arguments });
                        }
                    }
                    let mut sent =
                        out.into_iter().map(|output| GenerationEvent::Output { choice, output }).collect::<Vec<_>>();
                    if let Some(reason) = finish {
                        if self.ended.insert(choice, reason).is_none() {
                            sent.push(GenerationEvent::ChoiceEnded { choice, reason });
                        }
                    }
                    if sent.into_iter().any(|e| events.send(e).is_err()) {
                        return Some(End::Cancelled);
                    }
                }
                Chunk::Usage(u) => self.usage = Some(u),
                Chunk::Done => {
                    return Some(End::Finished(self.ended.get(&0).copied().unwrap_or(FinishReason::Stop)));
                }
                Chunk::Error(message) => return Some(End::Failed { message, outcome: "error_event" }),
            }
        }
        None
    }

    /// Every choice ends before the generation does: one that sent no finish reason
    /// stopped on its own.
    fn end_open_choices(&mut self, events: &mpsc::UnboundedSender<GenerationEvent>) {
        let open: Vec<u32> = self.seen.iter().copied().filter(|c| !self.ended.contains_key(c)).collect();
        for choice in open.into_iter().chain(self.seen.is_empty().then_some(0)) {
            self.ended.insert(choice, FinishReason::Stop);
            let _ = events.send(GenerationEvent::ChoiceEnded { choice, reason: FinishReason::Stop });
        }
    }
}
