//! `POST /v1/responses` (OpenAI Responses API), with the standard stream events.

use axum::extract::State;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tm_api::{ResponsesInput, ResponsesRequest, SamplingRequest};
use tm_backend::{validate, FinishReason, GenerationEvent, PromptInput, TokenUsage};

use super::auth::Caller;
use super::error::ApiError;
use super::generation::{self, collect, sse};
use super::json::JsonBody;
use super::{new_id, unix_now, AppState};

/// `text.format`, the Responses API's spelling of `response_format`.
#[derive(Deserialize, Default)]
struct TextOptions {
    text: Option<TextFormat>,
}
#[derive(Deserialize)]
struct TextFormat {
    format: Option<tm_api::ResponseFormat>,
}

pub async fn create(State(state): State<AppState>, caller: Caller, body: JsonBody) -> Result<Response, ApiError> {
    let req: ResponsesRequest = body.parse()?;
    let mut sampling: SamplingRequest = body.parse()?;
    let text_options: TextOptions = body.parse()?;
    if let Some(format) = text_options.text.and_then(|t| t.format) {
        sampling.response_format = Some(format);
    }
    if req.previous_response_id.is_some() {
        return Err(ApiError::bad_request(
            Some("previous_response_id".into()),
            "not supported: responses are not stored; send the full input",
        ));
    }
    let max_output = validate::max_tokens(req.max_output_tokens, "max_output_tokens")?;
    let messages = input_messages(req.instructions.clone(), req.input)?;
    let generation =
        generation::start(&state, &caller, req.model.clone(), PromptInput::Chat(messages), sampling, max_output)
            .await?;
    let shell = Shell {
        id: new_id("resp"),
        item_id: new_id("msg"),
        created_at: unix_now(),
        model: req.model,
        instructions: req.instructions,
        max_output_tokens: req.max_output_tokens,
    };
    if !req.stream {
        let done = collect(generation).await?;
        return Ok(Json(shell.response(Some((&done.text, done.finish, done.usage)))).into_response());
    }
    let mut seq = 0u64;
    let mut text = String::new();
    let mut event = move |kind: &str, mut data: Value| {
        data["type"] = kind.into();
        data["sequence_number"] = seq.into();
        seq += 1;
        Event::default().event(kind).data(data.to_string())
    };
    let item = shell.item("", "in_progress");
    let part = json!({"type": "output_text", "text": "", "annotations": []});
    let head = vec![
        event("response.created", json!({"response": shell.response(None)})),
        event("response.in_progress", json!({"response": shell.response(None)})),
        event("response.output_item.added", json!({"output_index": 0, "item": item})),
        event(
            "response.content_part.added",
            json!({"item_id": shell.item_id, "output_index": 0, "content_index": 0, "part": part}),
        ),
    ];
    let body = generation::events(generation).flat_map(move |ev| {
        let events = match ev {
            GenerationEvent::Text(t) => {
                text.push_str(&t);
                vec![event(
                    "response.output_text.delta",
                    json!({"item_id": shell.item_id, "output_index": 0, "content_index": 0, "delta": t}),
                )]
            }
            GenerationEvent::Finished { reason, usage } => {
                let ids = json!({"item_id": shell.item_id, "output_index": 0, "content_index": 0});
                let mut done_text = ids.clone();
                done_text["text"] = text.clone().into();
                let mut done_part = ids;
                done_part["part"] = json!({"type": "output_text", "text": text, "annotations": []});
                let status = if reason == FinishReason::Length { "incomplete" } else { "completed" };
                let final_kind = if status == "completed" { "response.completed" } else { "response.incomplete" };
                vec![
                    event("response.output_text.done", done_text),
                    event("response.content_part.done", done_part),
                    event("response.output_item.done", json!({"output_index": 0, "item": shell.item(&text, status)})),
                    event(final_kind, json!({"response": shell.response(Some((&text, reason, usage)))})),
                ]
            }
            GenerationEvent::Failed(e) => {
                let mut failed = shell.response(None);
                failed["status"] = "failed".into();
                failed["error"] = json!({"code": "server_error", "message": e});
                vec![event("response.failed", json!({"response": failed}))]
            }
        };
        futures::stream::iter(events)
    });
    Ok(sse(futures::stream::iter(head).chain(body)))
}

/// The fixed parts of one response object.
struct Shell {
    id: String,
    item_id: String,
    created_at: u64,
    model: String,
    instructions: Option<String>,
    max_output_tokens: Option<i64>,
}

impl Shell {
    fn item(&self, text: &str, status: &str) -> Value {
        let content = if status == "in_progress" {
            json!([])
        } else {
            json!([{"type": "output_text", "text": text, "annotations": []}])
        };
        json!({"id": self.item_id, "type": "message", "role": "assistant", "status": status, "content": content})
    }

    /// The response object; `done` is None while it is in progress.
    fn response(&self, done: Option<(&str, FinishReason, TokenUsage)>) -> Value {
        let (status, output, usage, incomplete) = match done {
            None => ("in_progress", json!([]), Value::Null, Value::Null),
            Some((text, reason, u)) => {
                let status = if reason == FinishReason::Length { "incomplete" } else { "completed" };
                let incomplete =
                    if status == "incomplete" { json!({"reason": "max_output_tokens"}) } else { Value::Null };
                let usage = json!({
                    "input_tokens": u.prompt_tokens,
                    "input_tokens_details": {"cached_tokens": u.cached_tokens},
                    "output_tokens": u.completion_tokens,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": u.prompt_tokens + u.completion_tokens,
                });
                (status, json!([self.item(text, status)]), usage, incomplete)
            }
        };
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "model": self.model,
            "status": status,
            "output": output,
            "usage": usage,
            "error": null,
            "incomplete_details": incomplete,
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "metadata": {},
            "parallel_tool_calls": false,
            "tool_choice": "none",
            "tools": [],
        })
    }
}

/// Responses input -> chat messages, with `instructions` as the system message.
fn input_messages(instructions: Option<String>, input: ResponsesInput) -> Result<Vec<Value>, ApiError> {
    let mut messages = Vec::new();
    if let Some(i) = instructions {
        messages.push(json!({"role": "system", "content": i}));
    }
    match input {
        ResponsesInput::Text(t) => messages.push(json!({"role": "user", "content": t})),
        ResponsesInput::Items(items) => {
            for (i, item) in items.into_iter().enumerate() {
                match item.kind.as_deref() {
                    None | Some("message") => {}
                    Some(other) => {
                        return Err(ApiError::bad_request(
                            Some(format!("input[{i}].type")),
                            format!("input item type `{other}` is not supported; send messages"),
                        ))
                    }
                }
                let content = validate::content_text(item.content, &format!("input[{i}].content"))?;
                messages.push(json!({"role": item.role.unwrap_or_else(|| "user".into()), "content": content}));
            }
        }
    }
    if messages.is_empty() {
        return Err(ApiError::bad_request(Some("input".into()), "must not be empty"));
    }
    Ok(messages)
}
