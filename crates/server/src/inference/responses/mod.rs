//! `POST /v1/responses` (OpenAI Responses API): messages and function calls in, a message
//! and `function_call` items out, with the standard stream events.

mod input;
mod output;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde_json::{json, Value};
use tm_api::{ResponseObject, ResponsesRequest, ResponsesTextFormat, SamplingRequest, WithSampling};
use tm_backend::validate::{self, ToolsShape};
use tm_backend::{GenerationEvent, Output, OutputFormat, OutputOptions, PromptInput, ToolChoice, Tools};
use tm_gateway::{Ask, Overrides};

use super::auth::Authenticated;
use super::error::ApiError;
use super::generation::{self, collect, sse};
use super::json::JsonBody;
use super::{new_id, unix_now, AppState};
use output::{Item, Shell, Writer};

#[utoipa::path(post, path = "/v1/responses", tag = "inference",
    request_body = WithSampling<ResponsesRequest>,
    responses((status = 200, description = "The response object, or with `stream: true` the events that build it, as \
        server-sent events (`event: response.created` ... `event: response.completed`).",
        content((ResponseObject = "application/json"), (String = "text/event-stream"))))
)]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let req: ResponsesRequest = body.parse()?;
    let sampling: SamplingRequest = body.parse()?;
    if sampling.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request(
            Some("n".into()),
            "the Responses API answers with one output; use chat for `n`",
        ));
    }
    if req.previous_response_id.is_some() {
        return Err(ApiError::bad_request(
            Some("previous_response_id".into()),
            "not supported: responses are not stored; send the full input",
        ));
    }
    let format = req.text.as_ref().and_then(|t| t.format.clone());
    let output_format = format.clone().map(output_format).transpose()?;
    let max_output = validate::max_tokens(req.max_output_tokens, "max_output_tokens")?;
    let tools = validate::tools(
        ToolsShape::Responses,
        req.tools.map(|t| t.into_iter().map(Into::into).collect()),
        req.tool_choice,
        req.parallel_tool_calls,
    )?;
    let shell = Shell {
        id: new_id("resp"),
        created_at: unix_now(),
        model: req.model.clone(),
        instructions: req.instructions.clone(),
        max_output_tokens: req.max_output_tokens,
        tools: tools.as_ref().map(declared).unwrap_or_default(),
        tool_choice: tools.as_ref().map_or(json!("auto"), choice),
        parallel_tool_calls: tools.as_ref().is_none_or(|t| t.parallel),
        text_format: format.map_or(json!({"type": "text"}), |f| serde_json::to_value(f).unwrap_or_default()),
    };
    let expects_calls = tools.as_ref().is_some_and(|t| t.choice != ToolChoice::None);
    let messages = input::messages(req.instructions, req.input)?;
    let output = OutputOptions { tools, ..OutputOptions::default() };
    let overrides = Overrides { max_tokens: max_output, format: output_format };
    let ask = Ask { model: req.model, prompt: PromptInput::Chat(messages), sampling, overrides, output };
    let generation = state.gateway.start(&caller, ask).await?;
    if !req.stream {
        let mut done = collect(generation).await?;
        let choice = done.choices.swap_remove(0);
        let mut items: Vec<Item> =
            choice.tool_calls.into_iter().map(|c| Item::call(c.id, c.name, c.arguments)).collect();
        if !choice.text.is_empty() || items.is_empty() {
            items.insert(0, Item::message(choice.text));
        }
        let finish = choice.finish.unwrap_or(tm_backend::FinishReason::Stop);
        return Ok(Json(shell.response(&items, Some((finish, done.usage)))).into_response());
    }
    // Without tools the answer is a message, announced at once; with them it may be only
    // calls, so a message is announced when its first text arrives.
    let mut writer = Writer::new(shell);
    let head = writer.start(!expects_calls);
    let body = generation::events(generation).flat_map(move |event| {
        let events = match event {
            GenerationEvent::Output { choice: 0, output } => match output {
                Output::Text { text, .. } => writer.text(&text),
                Output::ToolCall { index, id, name } => writer.call(index, id, name),
                Output::ToolArguments { index, fragment } => writer.arguments(index, &fragment),
                Output::Prompt { .. } => vec![],
            },
            GenerationEvent::ChoiceEnded { choice: 0, reason } => writer.end(reason),
            GenerationEvent::Finished { usage } => writer.finish(usage),
            GenerationEvent::Failed(e) => writer.failed(&e),
            _ => vec![],
        };
        futures::stream::iter(events)
    });
    Ok(sse(futures::stream::iter(head).chain(body)))
}

/// `text.format`, whose errors name `text.format`.
fn output_format(f: ResponsesTextFormat) -> Result<OutputFormat, ApiError> {
    Ok(match f.kind.as_str() {
        "text" => OutputFormat::Text,
        "json_object" => OutputFormat::JsonObject,
        "json_schema" => {
            let name = f.name.ok_or_else(|| ApiError::bad_request(Some("text.format.name".into()), "is required"))?;
            validate::json_schema_format(name, f.schema, "text.format")?
        }
        other => {
            return Err(ApiError::bad_request(
                Some("text.format.type".into()),
                format!("`{other}` is not supported; use `text`, `json_object` or `json_schema`"),
            ))
        }
    })
}

/// The declared tools as the response echoes them (Responses' flat shape).
fn declared(tools: &Tools) -> Vec<Value> {
    tools
        .functions
        .iter()
        .map(|f| {
            json!({"type": "function", "name": f.name, "description": f.description, "parameters": f.parameters,
                   "strict": true})
        })
        .collect()
}

fn choice(tools: &Tools) -> Value {
    match &tools.choice {
        ToolChoice::None => "none".into(),
        ToolChoice::Auto => "auto".into(),
        ToolChoice::Required => "required".into(),
        ToolChoice::Function(name) => json!({"type": "function", "name": name}),
    }
}
