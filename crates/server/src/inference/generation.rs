//! Shared plumbing for the generating routes: starting a generation and consuming it.

use futures::Stream;
use tm_api::{SamplingRequest, Usage};
use tm_backend::{validate, FinishReason, GenerateRequest, Generation, GenerationEvent, PromptInput, TokenUsage};

use super::error::ApiError;
use super::{random_seed, AppState};

/// Validates the sampling fields and starts the generation.
pub async fn start(
    state: &AppState,
    model: String,
    prompt: PromptInput,
    sampling: SamplingRequest,
    max_tokens_override: Option<u32>,
) -> Result<Generation, ApiError> {
    let valid = validate::sampling(sampling, random_seed())?;
    let request = GenerateRequest {
        model,
        prompt,
        sampling: valid.sampling,
        max_tokens: max_tokens_override.or(valid.max_tokens),
        stop: valid.stop,
    };
    Ok(state.backend.generate(request).await?)
}

/// A finished generation.
pub struct Collected {
    pub text: String,
    pub finish: FinishReason,
    pub usage: TokenUsage,
}

pub async fn collect(mut generation: Generation) -> Result<Collected, ApiError> {
    let mut text = String::new();
    while let Some(event) = generation.events.recv().await {
        match event {
            GenerationEvent::Text(t) => text.push_str(&t),
            GenerationEvent::Finished { reason, usage } => return Ok(Collected { text, finish: reason, usage }),
            GenerationEvent::Failed(e) => return Err(ApiError::Internal(e)),
        }
    }
    Err(ApiError::Internal("the engine dropped the request".into()))
}

/// The generation's events as a stream; ends after `Finished` or `Failed`. Dropping the
/// stream (client gone) drops the receiver, which cancels the generation.
pub fn events(mut generation: Generation) -> impl Stream<Item = GenerationEvent> {
    async_stream::stream! {
        while let Some(event) = generation.events.recv().await {
            let last = !matches!(event, GenerationEvent::Text(_));
            yield event;
            if last { break; }
        }
    }
}

pub fn usage(u: TokenUsage) -> Usage {
    Usage::new(u.prompt_tokens, u.cached_tokens, u.completion_tokens)
}
