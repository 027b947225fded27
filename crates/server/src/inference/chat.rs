//! `POST /v1/chat/completions`.

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use tm_api::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatDelta,
    SamplingRequest,
};
use tm_backend::{validate, GenerationEvent, PromptInput};

use super::error::ApiError;
use super::generation::{self, collect, usage};
use super::json::JsonBody;
use super::{new_id, unix_now, AppState};

pub async fn create(State(state): State<AppState>, body: JsonBody) -> Result<Response, ApiError> {
    let req: ChatCompletionRequest = body.parse()?;
    let sampling: SamplingRequest = body.parse()?;
    let messages = validate::chat_messages(req.messages)?;
    let generation = generation::start(&state, req.model.clone(), PromptInput::Chat(messages), sampling, None).await?;
    let (id, created, model) = (new_id("chatcmpl"), unix_now(), req.model);
    if !req.stream {
        let done = collect(generation).await?;
        return Ok(Json(ChatCompletion {
            id,
            object: "chat.completion",
            created,
            model,
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage { role: "assistant", content: done.text },
                finish_reason: Some(done.finish.as_openai().into()),
                logprobs: None,
            }],
            usage: usage(done.usage),
        })
        .into_response());
    }
    let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
    let chunk = move |delta: ChatDelta, finish: Option<String>| ChatCompletionChunk {
        id: id.clone(),
        object: "chat.completion.chunk",
        created,
        model: model.clone(),
        choices: vec![ChatChunkChoice { index: 0, delta, finish_reason: finish, logprobs: None }],
        usage: None,
    };
    let first = chunk(ChatDelta { role: Some("assistant"), content: Some(String::new()) }, None);
    let body = generation::events(generation).flat_map(move |event| {
        let events: Vec<Event> = match event {
            GenerationEvent::Text(t) => vec![json_event(&chunk(ChatDelta { role: None, content: Some(t) }, None))],
            GenerationEvent::Finished { reason, usage: u } => {
                let mut out = vec![json_event(&chunk(ChatDelta::default(), Some(reason.as_openai().into())))];
                if include_usage {
                    let mut last = chunk(ChatDelta::default(), None);
                    last.choices.clear();
                    last.usage = Some(usage(u));
                    out.push(json_event(&last));
                }
                out.push(Event::default().data("[DONE]"));
                out
            }
            GenerationEvent::Failed(e) => vec![json_event(&ApiError::stream_event(&e))],
        };
        futures::stream::iter(events)
    });
    let stream = futures::stream::once(async move { json_event(&first) }).chain(body).map(Ok::<_, std::convert::Infallible>);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// One SSE event whose data is `value` as one line of JSON.
pub fn json_event<T: serde::Serialize>(value: &T) -> Event {
    Event::default().data(serde_json::to_string(value).unwrap_or_default())
}
