//! `POST /v1/completions`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tm_api::{Completion, CompletionChoice, CompletionRequest, Prompt, SamplingRequest, WithSampling};
use tm_backend::{validate, Output, OutputOptions, PromptInput};
use tm_gateway::{Ask, Overrides};

use super::auth::Authenticated;
use super::error::ApiError;
use super::generation::{collect, json_event, openai_sse, usage, Piece};
use super::json::JsonBody;
use super::logprobs;
use super::{new_id, unix_now, AppState};

#[utoipa::path(post, path = "/v1/completions", tag = "inference",
    request_body = WithSampling<CompletionRequest>,
    responses((status = 200, description = "The completion, or with `stream: true` its chunks as server-sent events \
        (`data: {Completion}` lines, then `data: [DONE]`).",
        content((Completion = "application/json"), (String = "text/event-stream"))))
)]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let req: CompletionRequest = body.parse()?;
    let sampling: SamplingRequest = body.parse()?;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request(Some("suffix".into()), "fill-in-the-middle is not supported"));
    }
    let prompt = single_prompt(req.prompt, "prompt")?;
    let top = validate::completion_logprobs(req.logprobs)?;
    let with_logprobs = top.is_some();
    let output =
        OutputOptions { logprobs: top, prompt_logprobs: req.echo && with_logprobs, ..OutputOptions::default() };
    // `n`, checked when the generation starts.
    let n = sampling.n.unwrap_or(1).max(1) as u32;
    let echo = req.echo.then(|| prompt.clone());
    let ask = Ask {
        model: req.model.clone(),
        prompt: PromptInput::Text(prompt),
        sampling,
        overrides: Overrides::default(),
        output,
    };
    let generation = state.gateway.start(&caller, ask).await?;
    let (id, created, model) = (new_id("cmpl"), unix_now(), req.model);
    let completion = move |index: u32, text: String, finish: Option<String>, logprobs| Completion {
        id: id.clone(),
        object: "text_completion",
        created,
        model: model.clone(),
        choices: vec![CompletionChoice { index, text, finish_reason: finish, logprobs }],
        usage: None,
    };
    if !req.stream {
        let mut done = collect(generation).await?;
        // One choice computed the prompt's log-probabilities; every choice echoes them.
        let prompt_logprobs = std::mem::take(&mut done.choices[0].prompt_logprobs);
        let choices = done
            .choices
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let finish_reason = Some(c.finish_reason());
                let logprobs = with_logprobs.then(|| {
                    let entries = [prompt_logprobs.as_slice(), c.logprobs.as_slice()].concat();
                    logprobs::completion(&entries, &mut 0)
                });
                CompletionChoice {
                    index: i as u32,
                    text: echo.clone().unwrap_or_default() + &c.text,
                    finish_reason,
                    logprobs,
                }
            })
            .collect();
        let mut out = completion(0, String::new(), None, None);
        out.choices = choices;
        out.usage = Some(usage(done.usage));
        return Ok(Json(out).into_response());
    }
    let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
    // Without log-probabilities the echo goes first; with them it waits for the prompt's.
    let head = match &echo {
        Some(e) if !with_logprobs => (0..n).map(|i| json_event(&completion(i, e.clone(), None, None))).collect(),
        _ => Vec::new(),
    };
    // Characters of each choice's text so far, for `text_offset`.
    let mut offsets = vec![0usize; n as usize];
    Ok(openai_sse(generation, include_usage, head, move |piece| match piece {
        Piece::Output { output: Output::Prompt { logprobs: entries }, .. } => {
            let text = echo.clone().unwrap_or_default();
            (0..n)
                .map(|i| {
                    let lp = logprobs::completion(&entries, &mut offsets[i as usize]);
                    completion(i, text.clone(), None, Some(lp))
                })
                .collect()
        }
        Piece::Output { choice, output: Output::Text { text, logprobs: entries } } => {
            let lp = with_logprobs.then(|| {
                let offset = offsets.get_mut(choice as usize);
                logprobs::completion(&entries, offset.unwrap_or(&mut 0))
            });
            vec![completion(choice, text, None, lp)]
        }
        Piece::Output { .. } => vec![],
        Piece::Finish { choice, reason } => {
            vec![completion(choice, String::new(), Some(reason.as_openai().into()), None)]
        }
        Piece::Usage(u) => {
            vec![Completion { choices: vec![], usage: Some(u), ..completion(0, String::new(), None, None) }]
        }
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
