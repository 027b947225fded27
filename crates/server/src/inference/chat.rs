//! `POST /v1/chat/completions`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tm_api::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest,
    ChatDelta, SamplingRequest,
};
use tm_backend::{validate, PromptInput};

use super::auth::Caller;
use super::error::ApiError;
use super::generation::{self, collect, json_event, openai_sse, usage, Piece};
use super::json::JsonBody;
use super::{new_id, unix_now, AppState};

pub async fn create(State(state): State<AppState>, caller: Caller, body: JsonBody) -> Result<Response, ApiError> {
    let req: ChatCompletionRequest = body.parse()?;
    let sampling: SamplingRequest = body.parse()?;
    let messages = validate::chat_messages(req.messages)?;
    let generation =
        generation::start(&state, &caller, req.model.clone(), PromptInput::Chat(messages), sampling, None).await?;
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
    let head = vec![json_event(&chunk(ChatDelta { role: Some("assistant"), content: Some(String::new()) }, None))];
    Ok(openai_sse(generation, include_usage, head, move |piece| match piece {
        Piece::Text(t) => chunk(ChatDelta { role: None, content: Some(t) }, None),
        Piece::Finish(reason) => chunk(ChatDelta::default(), Some(reason.as_openai().into())),
        Piece::Usage(u) => ChatCompletionChunk { choices: vec![], usage: Some(u), ..chunk(ChatDelta::default(), None) },
    }))
}
