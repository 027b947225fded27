//! Shared plumbing for the generating routes: consuming a generation (the gateway starts
//! it, see `tm_gateway::infer`).

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Serialize;
use tm_api::Usage;
use tm_backend::{FinishReason, GenerationEvent, Output, TokenLogprob, TokenUsage};
use tm_gateway::Metered;

use super::error::ApiError;

/// One finished choice.
#[derive(Debug, Default)]
pub struct Choice {
    pub text: String,
    pub logprobs: Vec<TokenLogprob>,
    /// The prompt's, when asked for (completions `echo`).
    pub prompt_logprobs: Vec<TokenLogprob>,
    pub tool_calls: Vec<Call>,
    pub finish: Option<FinishReason>,
}

/// A tool call, assembled.
#[derive(Debug, Clone)]
pub struct Call {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

impl Choice {
    /// Takes one output event of this choice.
    fn take(&mut self, output: Output) {
        match output {
            Output::Text { text, logprobs } => {
                self.text.push_str(&text);
                self.logprobs.extend(logprobs);
            }
            Output::Prompt { logprobs } => self.prompt_logprobs = logprobs,
            Output::ToolCall { id, name, .. } => self.tool_calls.push(Call { id, name, arguments: String::new() }),
            Output::ToolArguments { index, fragment } => {
                if let Some(call) = self.tool_calls.get_mut(index as usize) {
                    call.arguments.push_str(&fragment);
                }
            }
        }
    }

    pub fn finish_reason(&self) -> String {
        self.finish.unwrap_or(FinishReason::Stop).as_openai().into()
    }
}

/// A finished generation.
pub struct Collected {
    pub choices: Vec<Choice>,
    pub usage: TokenUsage,
}

pub async fn collect(mut generation: Metered) -> Result<Collected, ApiError> {
    let mut choices: Vec<Choice> = Vec::new();
    let at = |choices: &mut Vec<Choice>, c: u32| -> usize {
        let i = c as usize;
        if choices.len() <= i {
            choices.resize_with(i + 1, Choice::default);
        }
        i
    };
    while let Some(event) = generation.recv().await {
        match event {
            GenerationEvent::Output { choice, output } => {
                let i = at(&mut choices, choice);
                choices[i].take(output);
            }
            GenerationEvent::ChoiceEnded { choice, reason } => {
                let i = at(&mut choices, choice);
                choices[i].finish = Some(reason);
            }
            GenerationEvent::Finished { usage } => {
                if choices.is_empty() {
                    choices.push(Choice::default());
                }
                // Billed before the client gets the body.
                generation.seal().await;
                return Ok(Collected { choices, usage });
            }
            GenerationEvent::Failed(e) => {
                // The client gets an error and no answer: it pays nothing.
                generation.waive();
                return Err(ApiError::Internal(e));
            }
        }
    }
    generation.waive();
    Err(ApiError::Internal("the engine dropped the request".into()))
}

/// The generation's events as a stream; ends after `Finished` or `Failed`. `Finished` comes
/// once the request is billed (it makes the stream's last bytes). Dropping the stream
/// (client gone) drops the generation, which cancels it and settles what it used.
pub fn events(mut generation: Metered) -> impl Stream<Item = GenerationEvent> {
    async_stream::stream! {
        while let Some(event) = generation.recv().await {
            let last = matches!(event, GenerationEvent::Finished { .. } | GenerationEvent::Failed(_));
            if matches!(event, GenerationEvent::Finished { .. }) {
                generation.seal().await;
            }
            yield event;
            if last { break; }
        }
    }
}

pub fn usage(u: TokenUsage) -> Usage {
    Usage::new(u.prompt_tokens, u.cached_tokens, u.completion_tokens)
}

/// What one OpenAI stream chunk is made from (chat and completions differ only in shape).
pub enum Piece {
    Output { choice: u32, output: Output },
    Finish { choice: u32, reason: FinishReason },
    Usage(Usage),
}

/// The OpenAI SSE body shared by chat and completions: `head`, the chunks made from each
/// event, the usage chunk when asked for, then `[DONE]`. An engine failure ends the stream
/// with an `{"error": ...}` event.
pub fn openai_sse<T: Serialize>(
    generation: Metered,
    include_usage: bool,
    head: Vec<Event>,
    mut chunks: impl FnMut(Piece) -> Vec<T> + Send + 'static,
) -> Response {
    let body = events(generation).flat_map(move |event| {
        let out: Vec<Event> = match event {
            GenerationEvent::Output { choice, output } => {
                chunks(Piece::Output { choice, output }).iter().map(json_event).collect()
            }
            GenerationEvent::ChoiceEnded { choice, reason } => {
                chunks(Piece::Finish { choice, reason }).iter().map(json_event).collect()
            }
            GenerationEvent::Finished { usage: u } => {
                let mut out: Vec<Event> = if include_usage {
                    chunks(Piece::Usage(usage(u))).iter().map(json_event).collect()
                } else {
                    vec![]
                };
                out.push(Event::default().data("[DONE]"));
                out
            }
            GenerationEvent::Failed(e) => vec![json_event(&ApiError::stream_event(&e))],
        };
        futures::stream::iter(out)
    });
    sse(futures::stream::iter(head).chain(body))
}

/// An SSE response with keep-alive comments during long silences.
pub fn sse(events: impl Stream<Item = Event> + Send + 'static) -> Response {
    Sse::new(events.map(Ok::<_, std::convert::Infallible>)).keep_alive(KeepAlive::default()).into_response()
}

/// One SSE event whose data is `value` as one line of JSON.
pub fn json_event<T: Serialize>(value: &T) -> Event {
    Event::default().data(serde_json::to_string(value).unwrap_or_default())
}
