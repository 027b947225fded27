//! Engine-neutral requests: the prompt, sampling settings, output options and tools of a
//! generation, and what `/tokenize` asks.

/// A text or chat prompt, not yet rendered or tokenized.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    /// Messages as JSON objects with `role` and string `content` (other keys kept for the
    /// chat template), already checked by the gateway.
    Chat(Vec<serde_json::Value>),
    Text(String),
}

impl PromptInput {
    /// The prompt's size in bytes as sent (a chat's messages as their JSON): what bounds
    /// its tokens before a tokenizer has read it.
    pub fn byte_len(&self) -> u64 {
        match self {
            PromptInput::Text(t) => t.len() as u64,
            PromptInput::Chat(messages) => messages.iter().map(|m| m.to_string().len() as u64).sum(),
        }
    }
}

/// Sampling settings after validation. Defaults are llama.cpp's own.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 disables.
    pub top_k: i32,
    pub min_p: f32,
    pub typical_p: f32,
    pub seed: u32,
    /// The client chose the seed: it asks for the same text from the same request.
    pub seeded: bool,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// 1 disables.
    pub repetition_penalty: f32,
    /// What shape the output must have (enforced while sampling, not checked after).
    pub format: OutputFormat,
    /// Token id -> additive bias.
    pub logit_bias: Vec<(i32, f32)>,
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            typical_p: 1.0,
            seed: 0,
            seeded: false,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            format: OutputFormat::Text,
            logit_bias: Vec::new(),
            ignore_eos: false,
        }
    }
}

/// The shape output must have.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum OutputFormat {
    #[default]
    Text,
    /// Any JSON object (`response_format: json_object`).
    JsonObject,
    /// A JSON value valid against `schema` (`response_format: json_schema`); `field`
    /// says where the client put it, for errors.
    JsonSchema { name: String, schema: serde_json::Value, field: String },
}

/// A validated generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    pub model: String,
    pub prompt: PromptInput,
    pub sampling: SamplingParams,
    /// None: up to the end of the context (per choice).
    pub max_tokens: Option<u32>,
    /// Stop strings; generation ends before the first occurrence, which is not returned.
    pub stop: Vec<String>,
    /// The gateway's id of the request (sent upstream as `x-request-id`, retries included).
    pub request_id: String,
    /// Choices, log-probabilities and tools.
    pub output: OutputOptions,
}

/// What a request asks for beyond one sampled text.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputOptions {
    /// Independent completions of the one prompt (OpenAI's `n`), each with its own sampler;
    /// choice `i` is seeded with `seed + i`.
    pub choices: u32,
    /// Report each output token's log-probability and this many likeliest alternatives.
    pub logprobs: Option<u8>,
    /// Also report the prompt's tokens with their log-probabilities (completions `echo`).
    pub prompt_logprobs: bool,
    /// Functions the model may call, and whether it must.
    pub tools: Option<Tools>,
}

impl Default for OutputOptions {
    fn default() -> Self {
        OutputOptions { choices: 1, logprobs: None, prompt_logprobs: false, tools: None }
    }
}

/// The functions a request declares, and how the model may use them.
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    pub functions: Vec<FunctionTool>,
    pub choice: ToolChoice,
    /// Several calls in one answer (OpenAI's `parallel_tool_calls`, default true).
    pub parallel: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FunctionTool {
    pub name: String,
    pub description: Option<String>,
    /// A JSON Schema for the arguments object.
    pub parameters: serde_json::Value,
    /// Where the client put `parameters`, for errors.
    pub field: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// No call: the model answers in text.
    None,
    /// The model decides between text and calls.
    Auto,
    /// At least one call.
    Required,
    /// Exactly one call of this function.
    Function(String),
}

impl Tools {
    /// The declared functions in OpenAI's chat shape (`{"type": "function", "function":
    /// {...}}`), as chat templates and upstream engines read them.
    pub fn openai_json(&self) -> Vec<serde_json::Value> {
        self.functions.iter().map(FunctionTool::openai_json).collect()
    }

    /// `tool_choice` in OpenAI's chat shape.
    pub fn choice_json(&self) -> serde_json::Value {
        match &self.choice {
            ToolChoice::None => "none".into(),
            ToolChoice::Auto => "auto".into(),
            ToolChoice::Required => "required".into(),
            ToolChoice::Function(name) => serde_json::json!({"type": "function", "function": {"name": name}}),
        }
    }
}

impl FunctionTool {
    pub fn openai_json(&self) -> serde_json::Value {
        let mut function = serde_json::Map::new();
        function.insert("name".into(), self.name.clone().into());
        if let Some(d) = &self.description {
            function.insert("description".into(), d.clone().into());
        }
        function.insert("parameters".into(), self.parameters.clone());
        serde_json::json!({"type": "function", "function": function})
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenizeInput {
    pub model: String,
    pub prompt: PromptInput,
    pub add_special: bool,
    pub add_generation_prompt: bool,
}
