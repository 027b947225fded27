//! Request bodies. Only shapes live here; value checks (ranges, support) are done when the
//! server turns them into engine requests, so that every message can name its field.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /v1/chat/completions`. Sampling fields are read separately as [`SamplingRequest`]
/// from the same body, so chat, completions and responses share one definition of them.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ChatCompletionRequest {
    pub model: String,
    #[schema(min_items = 1)]
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    /// Report the chosen tokens' log-probabilities.
    pub logprobs: Option<bool>,
    /// And this many alternatives at each place (0-20; needs `logprobs`).
    #[schema(minimum = 0, maximum = 20)]
    pub top_logprobs: Option<i64>,
    pub tools: Option<Vec<ChatTool>>,
    pub tool_choice: Option<ToolChoiceParam>,
    pub parallel_tool_calls: Option<bool>,
}

/// A chat tool: `{"type": "function", "function": {...}}`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ChatTool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: Option<FunctionDefinition>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct FunctionDefinition {
    pub name: String,
    pub description: Option<String>,
    /// A JSON Schema for the arguments; absent means no arguments.
    pub parameters: Option<Value>,
    pub strict: Option<bool>,
}

/// `tool_choice`: `"none"` / `"auto"` / `"required"`, or a named function, in the chat
/// shape (`{"type": "function", "function": {"name": ...}}`) or the Responses shape
/// (`{"type": "function", "name": ...}`).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ToolChoiceParam {
    Mode(String),
    Named(NamedToolChoice),
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct NamedToolChoice {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: Option<ToolChoiceFunction>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ToolChoiceFunction {
    pub name: String,
}

/// One chat message. `content` may be a string, null, or an array of content parts.
/// Other keys (`name`, `tool_calls`, `tool_call_id`, ...) are kept and handed to the chat
/// template untouched, since templates may use them.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ChatMessage {
    #[schema(min_length = 1)]
    pub role: String,
    #[serde(default)]
    pub content: Option<MessageContent>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// An OpenAI content part. Only text parts can be served by a text model; the others are
/// parsed so that the error can say which part type is not supported.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Prompt,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub echo: bool,
    pub suffix: Option<String>,
    /// Log-probabilities of the chosen tokens and this many alternatives (0-5).
    #[schema(minimum = 0, maximum = 5)]
    pub logprobs: Option<i64>,
}

/// A completions prompt: a string, or a list of strings (one choice each in OpenAI; we
/// accept a list of exactly one).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
}

/// `POST /v1/responses`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ResponsesRequest {
    pub model: String,
    pub input: ResponsesInput,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<i64>,
    #[serde(default)]
    pub stream: bool,
    pub previous_response_id: Option<String>,
    pub tools: Option<Vec<ResponsesTool>>,
    pub tool_choice: Option<ToolChoiceParam>,
    pub parallel_tool_calls: Option<bool>,
    pub text: Option<ResponsesText>,
}

/// A Responses tool: a function is `{"type": "function", "name", "parameters", ...}`
/// (flat, unlike chat's); hosted tools (`web_search`...) are parsed to be refused by name.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ResponsesTool {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub parameters: Option<Value>,
    pub strict: Option<bool>,
}

/// `text`: the Responses API's output options.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
pub struct ResponsesText {
    pub format: Option<ResponsesTextFormat>,
}

/// `text.format`: `{"type": "text"}`, `{"type": "json_object"}` or `{"type": "json_schema",
/// "name", "schema", "strict"}` (flat, unlike chat's `response_format`).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ResponsesTextFormat {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    pub schema: Option<Value>,
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ResponsesInput {
    Text(String),
    Items(Vec<ResponsesInputItem>),
}

/// A Responses input item: a message (`type` absent or `"message"`, content a string or a
/// list of `input_text`/`output_text` parts), an earlier `function_call` of the model
/// (`call_id`, `name`, `arguments`), or a `function_call_output` (`call_id`, `output`).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ResponsesInputItem {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub role: Option<String>,
    pub content: Option<MessageContent>,
    pub call_id: Option<String>,
    pub name: Option<String>,
    pub arguments: Option<String>,
    pub output: Option<MessageContent>,
}

/// The sampling and length fields shared by chat, completions and responses. Parsed from
/// the same body as the route's own struct. Fields we cannot honour are still parsed so
/// that a request using them is refused with a 400 instead of silently ignored.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
pub struct SamplingRequest {
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub top_p: Option<f64>,
    /// -1 turns it off.
    #[schema(minimum = -1, maximum = 2147483647)]
    pub top_k: Option<i64>,
    #[schema(minimum = 0, maximum = 1)]
    pub min_p: Option<f64>,
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub typical_p: Option<f64>,
    pub seed: Option<i64>,
    #[schema(minimum = -2, maximum = 2)]
    pub presence_penalty: Option<f64>,
    #[schema(minimum = -2, maximum = 2)]
    pub frequency_penalty: Option<f64>,
    #[schema(exclusive_minimum = 0, maximum = 10)]
    pub repetition_penalty: Option<f64>,
    pub stop: Option<Stop>,
    /// At most what the context leaves beside the prompt.
    #[schema(minimum = 1, maximum = 4294967295i64)]
    pub max_tokens: Option<i64>,
    #[schema(minimum = 1, maximum = 4294967295i64)]
    pub max_completion_tokens: Option<i64>,
    /// Choices (16 at most; the Responses API answers with one).
    #[schema(minimum = 1, maximum = 16)]
    pub n: Option<i64>,
    pub response_format: Option<ResponseFormat>,
    pub logit_bias: Option<std::collections::BTreeMap<String, f64>>,
    pub ignore_eos: Option<bool>,
    // Parsed only to be refused when they would change the result.
    pub functions: Option<Vec<Value>>,
    pub function_call: Option<Value>,
    pub best_of: Option<i64>,
    pub mirostat_target: Option<f64>,
    pub mirostat_lr: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// `response_format`: `{"type": "text" | "json_object"}` or `{"type": "json_schema",
/// "json_schema": {"name", "schema", "strict", "description"}}`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    pub json_schema: Option<JsonSchemaFormat>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct JsonSchemaFormat {
    pub name: String,
    pub description: Option<String>,
    pub schema: Option<Value>,
    pub strict: Option<bool>,
}

/// `POST /tokenize`: either `prompt` or `messages`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct TokenizeRequest {
    pub model: String,
    pub prompt: Option<Prompt>,
    pub messages: Option<Vec<ChatMessage>>,
    /// vLLM's flag: add the model's special tokens (BOS) to a raw prompt. Default true.
    pub add_special_tokens: Option<bool>,
    /// vLLM's flag: add the assistant turn opener after `messages`. Default true.
    pub add_generation_prompt: Option<bool>,
}

/// `POST /detokenize`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct DetokenizeRequest {
    pub model: String,
    pub tokens: Vec<i64>,
}

/// The whole body of a generating route as its OpenAPI schema shows it: the route's own
/// fields and the shared [`SamplingRequest`] fields, side by side in one object. (The server
/// reads the two views separately from the same body; serde's `flatten` here only tells
/// the schema that they share one level.)
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WithSampling<T> {
    #[serde(flatten)]
    pub request: T,
    #[serde(flatten)]
    pub sampling: SamplingRequest,
}
