//! Shared plumbing for the generating routes: starting a generation and consuming it.

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Serialize;
use tm_api::{SamplingRequest, Usage};
use tm_backend::{validate, FinishReason, GenerateRequest, GenerationEvent, PromptInput, TokenUsage};
use tm_gateway::Metered;

use super::auth::Caller;
use super::error::ApiError;
use super::{random_seed, AppState};

/// Validates the sampling fields, sizes the request, and has the gateway admit it (price,
/// token limits, hold) and start it.
pub async fn start(
    state: &AppState,
    caller: &Caller,
    model: String,
    prompt: PromptInput,
    sampling: SamplingRequest,
    max_tokens_override: Option<u32>,
) -> Result<Metered, ApiError> {
    let valid = validate::sampling(sampling, random_seed())?;
    let request = GenerateRequest {
        model,
        prompt,
        sampling: valid.sampling,
        max_tokens: max_tokens_override.or(valid.max_tokens),
        stop: valid.stop,
        request_id: caller.request_id.clone(),
    };
    let prepared = state.backend.prepare(request).await?;
    Ok(state.gateway.admit(&caller.holder, &caller.scopes, &caller.request_id, prepared).await?)
}

/// A finished generation.
pub struct Collected {
    pub text: String,
    pub finish: FinishReason,
    pub usage: TokenUsage,
}

pub async fn collect(mut generation: Metered) -> Result<Collected, ApiError> {
    let mut text = String::new();
    while let Some(event) = generation.recv().await {
        match event {
            GenerationEvent::Text(t) => text.push_str(&t),
            GenerationEvent::Finished { reason, usage } => return Ok(Collected { text, finish: reason, usage }),
            GenerationEvent::Failed(e) => return Err(ApiError::Internal(e)),
        }
    }
    Err(ApiError::Internal("the engine dropped the request".into()))
}

/// The generation's events as a stream; ends after `Finished` or `Failed`. Dropping the
/// stream (client gone) drops the generation, which cancels it and settles what it used.
pub fn events(mut generation: Metered) -> impl Stream<Item = GenerationEvent> {
    async_stream::stream! {
        while let Some(event) = generation.recv().await {
            let last = !matches!(event, GenerationEvent::Text(_));
            yield event;
            if last { break; }
        }
    }
}

pub fn usage(u: TokenUsage) -> Usage {
    Usage::new(u.prompt_tokens, u.cached_tokens, u.completion_tokens)
}

/// What one OpenAI stream chunk carries (chat and completions differ only in shape).
pub enum Piece {
    Text(String),
    Finish(FinishReason),
    Usage(Usage),
}

/// The OpenAI SSE body shared by chat and completions: `head`, a chunk per text piece, the
/// finish chunk, the usage chunk when asked for, then `[DONE]`. An engine failure ends the
/// stream with an `{"error": ...}` event.
pub fn openai_sse<T: Serialize>(
    generation: Metered,
    include_usage: bool,
    head: Vec<Event>,
    chunk: impl Fn(Piece) -> T + Send + 'static,
) -> Response {
    let body = events(generation).flat_map(move |event| {
        let out: Vec<Event> = match event {
            GenerationEvent::Text(t) => vec![json_event(&chunk(Piece::Text(t)))],
            GenerationEvent::Finished { reason, usage: u } => {
                let mut out = vec![json_event(&chunk(Piece::Finish(reason)))];
                if include_usage {
                    out.push(json_event(&chunk(Piece::Usage(usage(u)))));
                }
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
