//! The response object, its output items, and the stream events that build them:
//! `response.created`, `response.in_progress`, then per item `response.output_item.added`,
//! its deltas (`response.output_text.delta` with the content part events around them, or
//! `response.function_call_arguments.delta`), their `.done` events and
//! `response.output_item.done`, and last `response.completed` (or `.incomplete`,
//! `.failed`).

use axum::response::sse::Event;
use serde_json::{json, Value};
use tm_api::{
    IncompleteDetails, OutputItem, OutputText, OutputTokensDetails, PromptTokensDetails, ResponseError, ResponseObject,
    ResponseTextOptions, ResponseUsage,
};
use tm_backend::{FinishReason, TokenUsage};

use crate::inference::new_id;

/// The fixed parts of one response object.
pub struct Shell {
    pub id: String,
    pub created_at: u64,
    pub model: String,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<i64>,
    pub tools: Vec<Value>,
    pub tool_choice: Value,
    pub parallel_tool_calls: bool,
    pub text_format: Value,
}

/// One output item.
pub enum Item {
    Message { id: String, text: String },
    Call { id: String, call_id: String, name: String, arguments: String },
}

impl Item {
    pub fn message(text: String) -> Item {
        Item::Message { id: new_id("msg"), text }
    }

    pub fn call(call_id: String, name: String, arguments: String) -> Item {
        Item::Call { id: new_id("fc"), call_id, name, arguments }
    }

    fn id(&self) -> &str {
        match self {
            Item::Message { id, .. } | Item::Call { id, .. } => id,
        }
    }

    /// The item on the wire, with `status` (`in_progress`, `completed` or `incomplete`).
    fn wire(&self, status: &'static str) -> OutputItem {
        match self {
            Item::Message { id, text } => {
                let content = if status == "in_progress" { Vec::new() } else { vec![OutputText::new(text.clone())] };
                OutputItem::Message { id: id.clone(), role: "assistant", status, content }
            }
            Item::Call { id, call_id, name, arguments } => OutputItem::FunctionCall {
                id: id.clone(),
                status,
                call_id: call_id.clone(),
                name: name.clone(),
                arguments: arguments.clone(),
            },
        }
    }
}

impl Shell {
    /// The response object; `done` is None while it is in progress.
    pub fn response(&self, items: &[Item], done: Option<(FinishReason, TokenUsage)>) -> ResponseObject {
        let (status, usage, incomplete_details) = match done {
            None => ("in_progress", None, None),
            Some((reason, u)) => {
                let usage = ResponseUsage {
                    input_tokens: u.prompt_tokens,
                    input_tokens_details: PromptTokensDetails { cached_tokens: u.cached_tokens },
                    output_tokens: u.completion_tokens,
                    output_tokens_details: OutputTokensDetails { reasoning_tokens: 0 },
                    total_tokens: u.prompt_tokens + u.completion_tokens,
                };
                if reason == FinishReason::Length {
                    ("incomplete", Some(usage), Some(IncompleteDetails { reason: "max_output_tokens" }))
                } else {
                    ("completed", Some(usage), None)
                }
            }
        };
        ResponseObject {
            id: self.id.clone(),
            object: "response",
            created_at: self.created_at,
            model: self.model.clone(),
            status,
            output: items.iter().map(|i| i.wire(status)).collect(),
            usage,
            error: None,
            incomplete_details,
            instructions: self.instructions.clone(),
            max_output_tokens: self.max_output_tokens,
            metadata: serde_json::Map::new(),
            parallel_tool_calls: self.parallel_tool_calls,
            tool_choice: self.tool_choice.clone(),
            tools: self.tools.clone(),
            text: ResponseTextOptions { format: self.text_format.clone() },
        }
    }
}

/// Builds a streamed response's events as the generation's output arrives.
pub struct Writer {
    shell: Shell,
    seq: u64,
    items: Vec<Item>,
    /// The message item receiving text, if one is open.
    message: Option<usize>,
    /// Item index of each tool call, by the call's index.
    calls: Vec<usize>,
    /// Items announced and not yet done.
    open: Vec<usize>,
    /// How the answer ended, once it did.
    reason: Option<FinishReason>,
}

impl Writer {
    pub fn new(shell: Shell) -> Writer {
        Writer { shell, seq: 0, items: Vec::new(), message: None, calls: Vec::new(), open: Vec::new(), reason: None }
    }

    fn event(&mut self, kind: &str, mut data: Value) -> Event {
        data["type"] = kind.into();
        data["sequence_number"] = self.seq.into();
        self.seq += 1;
        Event::default().event(kind).data(data.to_string())
    }

    /// The first events; `message`: announce the message item now.
    pub fn start(&mut self, message: bool) -> Vec<Event> {
        let response = json!({"response": self.shell.response(&[], None)});
        let mut out =
            vec![self.event("response.created", response.clone()), self.event("response.in_progress", response)];
        if message {
            out.extend(self.open_message());
        }
        out
    }

    fn add(&mut self, item: Item) -> (usize, Event) {
        let at = self.items.len();
        let added = json!({"output_index": at, "item": item.wire("in_progress")});
        self.items.push(item);
        self.open.push(at);
        (at, self.event("response.output_item.added", added))
    }

    fn open_message(&mut self) -> Vec<Event> {
        let (at, added) = self.add(Item::message(String::new()));
        self.message = Some(at);
        let part = json!({"item_id": self.items[at].id(), "output_index": at, "content_index": 0,
                          "part": {"type": "output_text", "text": "", "annotations": []}});
        vec![added, self.event("response.content_part.added", part)]
    }

    pub fn text(&mut self, text: &str) -> Vec<Event> {
        let mut out = if self.message.is_none() { self.open_message() } else { Vec::new() };
        let Some(at) = self.message else { return out };
        if let Item::Message { text: all, .. } = &mut self.items[at] {
            all.push_str(text);
        }
        let delta = json!({"item_id": self.items[at].id(), "output_index": at, "content_index": 0, "delta": text});
        out.push(self.event("response.output_text.delta", delta));
        out
    }

    pub fn call(&mut self, index: u32, call_id: String, name: String) -> Vec<Event> {
        // Items follow one another: the text before a call is done when the call begins.
        let mut out = self.close_message();
        let (at, added) = self.add(Item::call(call_id, name, String::new()));
        if self.calls.len() <= index as usize {
            self.calls.resize(index as usize + 1, at);
        }
        self.calls[index as usize] = at;
        out.push(added);
        out
    }

    pub fn arguments(&mut self, index: u32, fragment: &str) -> Vec<Event> {
        let Some(&at) = self.calls.get(index as usize) else { return Vec::new() };
        if let Item::Call { arguments, .. } = &mut self.items[at] {
            arguments.push_str(fragment);
        }
        let delta = json!({"item_id": self.items[at].id(), "output_index": at, "delta": fragment});
        vec![self.event("response.function_call_arguments.delta", delta)]
    }

    /// The answer ended: every open item is done.
    pub fn end(&mut self, reason: FinishReason) -> Vec<Event> {
        self.reason = Some(reason);
        let mut out = self.close_message();
        let status = if reason == FinishReason::Length { "incomplete" } else { "completed" };
        for at in std::mem::take(&mut self.open) {
            if let Item::Call { arguments, name, .. } = &self.items[at] {
                let done =
                    json!({"item_id": self.items[at].id(), "output_index": at, "arguments": arguments, "name": name});
                out.push(self.event("response.function_call_arguments.done", done));
            }
            let item = self.items[at].wire(status);
            out.push(self.event("response.output_item.done", json!({"output_index": at, "item": item})));
        }
        out
    }

    fn close_message(&mut self) -> Vec<Event> {
        let Some(at) = self.message.take() else { return Vec::new() };
        self.open.retain(|&i| i != at);
        let Item::Message { text, .. } = &self.items[at] else { return Vec::new() };
        let text = text.clone();
        let id = self.items[at].id().to_owned();
        let status = if self.reason == Some(FinishReason::Length) { "incomplete" } else { "completed" };
        let item = self.items[at].wire(status);
        vec![
            self.event(
                "response.output_text.done",
                json!({"item_id": id, "output_index": at, "content_index": 0, "text": text}),
            ),
            self.event(
                "response.content_part.done",
                json!({"item_id": id, "output_index": at, "content_index": 0,
                       "part": {"type": "output_text", "text": text, "annotations": []}}),
            ),
            self.event("response.output_item.done", json!({"output_index": at, "item": item})),
        ]
    }

    pub fn finish(&mut self, usage: TokenUsage) -> Vec<Event> {
        let reason = self.reason.unwrap_or(FinishReason::Stop);
        let mut out = self.end(reason);
        let kind = if reason == FinishReason::Length { "response.incomplete" } else { "response.completed" };
        let response = self.shell.response(&self.items, Some((reason, usage)));
        out.push(self.event(kind, json!({"response": response})));
        out
    }

    pub fn failed(&mut self, error: &str) -> Vec<Event> {
        let mut failed = self.shell.response(&self.items, None);
        failed.status = "failed";
        failed.error = Some(ResponseError { code: "server_error", message: error.to_owned() });
        vec![self.event("response.failed", json!({"response": failed}))]
    }
}
