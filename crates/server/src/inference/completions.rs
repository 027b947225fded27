//! `POST /v1/completions`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tm_api::{Completion, CompletionChoice, CompletionRequest, Prompt, SamplingRequest};
use tm_backend::PromptInput;

use super::auth::Caller;
use super::error::ApiError;
use super::generation::{self, collect, json_event, openai_sse, usage, Piece};
use super::json::JsonBody;
use super::{new_id, unix_now, AppState};

pub async fn create(State(state): State<AppState>, caller: Caller, body: JsonBody) -> Result<Response, ApiError> {
    let req: CompletionRequest = body.parse()?;
    let sampling: SamplingRequest = body.parse()?;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request(Some("suffix".into()), "fill-in-the-middle is not supported"));
    }
    let prompt = single_prompt(req.prompt, "prompt")?;
    let echo = req.echo.then(|| prompt.clone());
    let generation =
        generation::start(&state, &caller, req.model.clone(), PromptInput::Text(prompt), sampling, None).await?;
    let (id, created, model) = (new_id("cmpl"), unix_now(), req.model);
    let completion = move |text: String, finish: Option<String>| Completion {
        id: id.clone(),
        object: "text_completion",
        created,
        model: model.clone(),
        choices: vec![CompletionChoice { index: 0, text, finish_reason: finish, logprobs: None }],
        usage: None,
    };
    if !req.stream {
        let done = collect(generation).await?;
        let mut out = completion(echo.unwrap_or_default() + &done.text, Some(done.finish.as_openai().into()));
        out.usage = Some(usage(done.usage));
        return Ok(Json(out).into_response());
    }
    let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
    let head = echo.map(|e| json_event(&completion(e, None))).into_iter().collect();
    Ok(openai_sse(generation, include_usage, head, move |piece| match piece {
        Piece::Text(t) => completion(t, None),
        Piece::Finish(reason) => completion(String::new(), Some(reason.as_openai().into())),
        Piece::Usage(u) => Completion { choices: vec![], usage: Some(u), ..completion(String::new(), None) },
    }))
}

/// One prompt per request: a string, or a list holding one string.
pub fn single_prompt(prompt: Prompt, field: &str) -> Result<String, ApiError> {
    match prompt {
        Prompt::Text(t) => Ok(t),
        Prompt::Texts(mut v) if v.len() == 1 => Ok(v.remove(0)),
        Prompt::Texts(v) => Err(ApiError::bad_request(
            Some(field.into()),
            format!("must be a string or a list of one string, got a list of {}", v.len()),
        )),
    }
}
