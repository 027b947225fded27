//! `POST /v1/chat/completions`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tm_api::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest,
    ChatDelta, FunctionCall, FunctionCallDelta, SamplingRequest, ToolCall, ToolCallDelta, WithSampling,
};
use tm_backend::validate::{self, ToolsShape};
use tm_backend::{Output, OutputOptions, PromptInput};
use tm_gateway::{Ask, Overrides};

use super::auth::Authenticated;
use super::error::ApiError;
use super::generation::{collect, json_event, openai_sse, usage, Choice, Piece};
use super::json::JsonBody;
use super::logprobs;
use super::{new_id, unix_now, AppState};

#[utoipa::path(post, path = "/v1/chat/completions", tag = "inference",
    request_body = WithSampling<ChatCompletionRequest>,
    responses((status = 200, description = "The completion, or with `stream: true` its chunks as server-sent events \
        (`data: {ChatCompletionChunk}` lines, then `data: [DONE]`).",
        content((ChatCompletion = "application/json"), (String = "text/event-stream"))))
)]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let req: ChatCompletionRequest = body.parse()?;
    let sampling: SamplingRequest = body.parse()?;
    let messages = validate::chat_messages(req.messages)?;
    let output = OutputOptions {
        logprobs: validate::chat_logprobs(req.logprobs, req.top_logprobs)?,
        tools: validate::tools(
            ToolsShape::Chat,
            req.tools.map(|t| t.into_iter().map(Into::into).collect()),
            req.tool_choice,
            req.parallel_tool_calls,
        )?,
        ..OutputOptions::default()
    };
    let with_logprobs = output.logprobs.is_some();
    // `n`, checked when the generation starts.
    let n = sampling.n.unwrap_or(1).max(1) as u32;
    let ask = Ask {
        model: req.model.clone(),
        prompt: PromptInput::Chat(messages),
        sampling,
        overrides: Overrides::default(),
        output,
    };
    let generation = state.gateway.start(&caller, ask).await?;
    let (id, created, model) = (new_id("chatcmpl"), unix_now(), req.model);
    if !req.stream {
        let done = collect(generation).await?;
        let choices = done.choices.into_iter().enumerate().map(|(i, c)| choice(i as u32, c, with_logprobs)).collect();
        return Ok(Json(ChatCompletion {
            id,
            object: "chat.completion",
            created,
            model,
            choices,
            usage: usage(done.usage),
        })
        .into_response());
    }
    let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
    let chunk = move |choices: Vec<ChatChunkChoice>| ChatCompletionChunk {
        id: id.clone(),
        object: "chat.completion.chunk",
        created,
        model: model.clone(),
        choices,
        usage: None,
    };
    let delta = |index: u32, delta: ChatDelta| ChatChunkChoice { index, delta, finish_reason: None, logprobs: None };
    let opening = ChatDelta { role: Some("assistant"), content: Some(String::new()), tool_calls: None };
    let head = (0..n).map(|i| json_event(&chunk(vec![delta(i, opening.clone())]))).collect();
    Ok(openai_sse(generation, include_usage, head, move |piece| match piece {
        Piece::Output { choice, output } => match stream_delta(output, with_logprobs) {
            Some((d, logprobs)) => vec![chunk(vec![ChatChunkChoice { logprobs, ..delta(choice, d) }])],
            None => vec![],
        },
        Piece::Finish { choice, reason } => {
            let finish_reason = Some(reason.as_openai().into());
            vec![chunk(vec![ChatChunkChoice { finish_reason, ..delta(choice, ChatDelta::default()) }])]
        }
        Piece::Usage(u) => vec![ChatCompletionChunk { usage: Some(u), ..chunk(vec![]) }],
    }))
}

/// A finished choice as chat shows it: content null when the answer is only tool calls.
fn choice(index: u32, c: Choice, with_logprobs: bool) -> ChatChoice {
    let finish_reason = Some(c.finish_reason());
    let tool_calls: Vec<ToolCall> = c
        .tool_calls
        .into_iter()
        .map(|call| ToolCall {
            id: call.id,
            kind: "function",
            function: FunctionCall { name: call.name, arguments: call.arguments },
        })
        .collect();
    let content = if c.text.is_empty() && !tool_calls.is_empty() { None } else { Some(c.text) };
    ChatChoice {
        index,
        message: AssistantMessage {
            role: "assistant",
            content,
            tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
        },
        finish_reason,
        logprobs: with_logprobs.then(|| logprobs::chat(&c.logprobs)),
    }
}

/// A streamed output event as a chat delta (with its log-probabilities when asked for).
fn stream_delta(output: Output, with_logprobs: bool) -> Option<(ChatDelta, Option<tm_api::ChatLogprobs>)> {
    let call = |index: u32, id: Option<String>, name: Option<String>, arguments: String| ChatDelta {
        tool_calls: Some(vec![ToolCallDelta {
            index,
            kind: id.as_ref().map(|_| "function"),
            id,
            function: FunctionCallDelta { name, arguments },
        }]),
        ..ChatDelta::default()
    };
    Some(match output {
        Output::Text { text, logprobs } => {
            let lp = with_logprobs.then(|| logprobs::chat(&logprobs));
            (ChatDelta { content: Some(text), ..ChatDelta::default() }, lp)
        }
        Output::ToolCall { index, id, name } => (call(index, Some(id), Some(name), String::new()), None),
        Output::ToolArguments { index, fragment } => (call(index, None, None, fragment), None),
        Output::Prompt { .. } => return None,
    })
}
