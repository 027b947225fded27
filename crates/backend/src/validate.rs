//! Turns the wire sampling fields into [`SamplingParams`]. Every error names its field,
//! the rule and the value given. Options that would change the result but that we do not
//! implement are refused, never silently ignored.

use serde_json::{json, Value};
use tm_api::{
    ChatMessage, ChatTool, ContentPart, MessageContent, ResponseFormat, ResponsesTool, SamplingRequest, ToolChoiceParam,
};

use crate::{BackendError, FunctionTool, OutputFormat, SamplingParams, ToolChoice, Tools};

/// Sampling settings plus the length, stop and choice settings of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSampling {
    pub sampling: SamplingParams,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    /// `n`.
    pub choices: u32,
}

/// Most stop strings accepted, as in OpenAI.
pub const MAX_STOP_STRINGS: usize = 4;

pub fn sampling(req: SamplingRequest, default_seed: u32) -> Result<ValidSampling, BackendError> {
    refuse_unsupported(&req)?;
    let d = SamplingParams::default();
    let sampling = SamplingParams {
        temperature: range("temperature", req.temperature, 0.0, 2.0)?.unwrap_or(d.temperature),
        top_p: open_range("top_p", req.top_p, 0.0, 1.0)?.unwrap_or(d.top_p),
        top_k: match req.top_k {
            None | Some(-1) => d.top_k,
            Some(k) if (0..=i32::MAX as i64).contains(&k) => k as i32,
            Some(k) => return Err(invalid("top_k", format!("must be -1 (disabled) or >= 0, got {k}"))),
        },
        min_p: range("min_p", req.min_p, 0.0, 1.0)?.unwrap_or(d.min_p),
        typical_p: open_range("typical_p", req.typical_p, 0.0, 1.0)?.unwrap_or(d.typical_p),
        // OpenAI seeds are 64-bit; llama.cpp's are 32-bit. Fold both halves so that
        // different 64-bit seeds rarely collide.
        seed: req.seed.map(|s| ((s as u64) ^ ((s as u64) >> 32)) as u32).unwrap_or(default_seed),
        seeded: req.seed.is_some(),
        presence_penalty: range("presence_penalty", req.presence_penalty, -2.0, 2.0)?.unwrap_or(d.presence_penalty),
        frequency_penalty: range("frequency_penalty", req.frequency_penalty, -2.0, 2.0)?.unwrap_or(d.frequency_penalty),
        repetition_penalty: open_range("repetition_penalty", req.repetition_penalty, 0.0, 10.0)?
            .unwrap_or(d.repetition_penalty),
        format: match req.response_format {
            None => OutputFormat::Text,
            Some(f) => response_format(f)?,
        },
        logit_bias: logit_bias(req.logit_bias)?,
        ignore_eos: req.ignore_eos.unwrap_or(false),
    };
    let max_tokens =
        max_tokens(req.max_completion_tokens, "max_completion_tokens")?.or(max_tokens(req.max_tokens, "max_tokens")?);
    let stop = req.stop.map(|s| s.into_vec()).unwrap_or_default();
    if stop.len() > MAX_STOP_STRINGS {
        return Err(invalid("stop", format!("at most {MAX_STOP_STRINGS} stop sequences, got {}", stop.len())));
    }
    if stop.iter().any(String::is_empty) {
        return Err(invalid("stop", "stop sequences must not be empty strings"));
    }
    Ok(ValidSampling { sampling, max_tokens, stop, choices: choices(req.n)? })
}

/// Most choices (`n`) one request may ask for: each is a running sequence of its own.
pub const MAX_CHOICES: u32 = 16;

fn choices(n: Option<i64>) -> Result<u32, BackendError> {
    match n {
        None => Ok(1),
        Some(n) if (1..=i64::from(MAX_CHOICES)).contains(&n) => Ok(n as u32),
        Some(n) => Err(invalid("n", format!("must be between 1 and {MAX_CHOICES}, got {n}"))),
    }
}

/// Most alternatives per token: chat's `top_logprobs` and completions' `logprobs`, as in
/// OpenAI.
pub const MAX_TOP_LOGPROBS: i64 = 20;
pub const MAX_COMPLETION_LOGPROBS: i64 = 5;

/// Chat's `logprobs` (bool) and `top_logprobs` (0-20, only with `logprobs`).
pub fn chat_logprobs(logprobs: Option<bool>, top: Option<i64>) -> Result<Option<u8>, BackendError> {
    match (logprobs.unwrap_or(false), top) {
        (false, None | Some(0)) => Ok(None),
        (false, Some(_)) => Err(invalid("top_logprobs", "needs `logprobs: true`")),
        (true, None) => Ok(Some(0)),
        (true, Some(k)) if (0..=MAX_TOP_LOGPROBS).contains(&k) => Ok(Some(k as u8)),
        (true, Some(k)) => Err(invalid("top_logprobs", format!("must be between 0 and {MAX_TOP_LOGPROBS}, got {k}"))),
    }
}

/// Completions' `logprobs`: the number of alternatives (0-5), or none.
pub fn completion_logprobs(logprobs: Option<i64>) -> Result<Option<u8>, BackendError> {
    match logprobs {
        None => Ok(None),
        Some(k) if (0..=MAX_COMPLETION_LOGPROBS).contains(&k) => Ok(Some(k as u8)),
        Some(k) => Err(invalid("logprobs", format!("must be between 0 and {MAX_COMPLETION_LOGPROBS}, got {k}"))),
    }
}

fn response_format(f: ResponseFormat) -> Result<OutputFormat, BackendError> {
    match f.kind.as_str() {
        "text" => Ok(OutputFormat::Text),
        "json_object" => Ok(OutputFormat::JsonObject),
        "json_schema" => {
            let Some(js) = f.json_schema else {
                return Err(invalid("response_format.json_schema", "required when `type` is `json_schema`"));
            };
            json_schema_format(js.name, js.schema, "response_format.json_schema")
        }
        other => Err(invalid(
            "response_format.type",
            format!("`{other}` is not supported; use `text`, `json_object` or `json_schema`"),
        )),
    }
}

/// A `json_schema` output format; `field` is where its `name` and `schema` sit.
pub fn json_schema_format(name: String, schema: Option<Value>, field: &str) -> Result<OutputFormat, BackendError> {
    check_name(&name, &format!("{field}.name"))?;
    let field = format!("{field}.schema");
    let schema = match schema {
        None => json!({}),
        Some(s @ (Value::Object(_) | Value::Bool(true))) => s,
        Some(other) => return Err(invalid(&field, format!("must be a JSON Schema object, got {other}"))),
    };
    Ok(OutputFormat::JsonSchema { name, schema, field })
}

/// OpenAI's rule for function and schema names.
fn check_name(name: &str, field: &str) -> Result<(), BackendError> {
    let ok = (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(invalid(field, format!("must be 1-64 letters, digits, `_` or `-`, got `{name}`")))
    }
}

/// Where tools are declared: chat nests a function under `function`, Responses does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolsShape {
    Chat,
    Responses,
}

/// One declared tool, in either shape.
pub struct ToolDecl {
    pub kind: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub parameters: Option<Value>,
}

impl From<ChatTool> for ToolDecl {
    fn from(t: ChatTool) -> Self {
        let f = t.function;
        ToolDecl {
            kind: t.kind,
            name: f.as_ref().map(|f| f.name.clone()),
            description: f.as_ref().and_then(|f| f.description.clone()),
            parameters: f.and_then(|f| f.parameters),
        }
    }
}

impl From<ResponsesTool> for ToolDecl {
    fn from(t: ResponsesTool) -> Self {
        ToolDecl { kind: t.kind, name: t.name, description: t.description, parameters: t.parameters }
    }
}

/// Checks declared tools and `tool_choice`. None when no tool is declared (a choice of
/// `none` or `auto` without tools is accepted, as OpenAI does).
pub fn tools(
    shape: ToolsShape,
    declared: Option<Vec<ToolDecl>>,
    choice: Option<ToolChoiceParam>,
    parallel: Option<bool>,
) -> Result<Option<Tools>, BackendError> {
    let declared = declared.unwrap_or_default();
    let prefix = |i: usize| match shape {
        ToolsShape::Chat => format!("tools[{i}].function"),
        ToolsShape::Responses => format!("tools[{i}]"),
    };
    let mut functions: Vec<FunctionTool> = Vec::new();
    for (i, t) in declared.into_iter().enumerate() {
        if t.kind != "function" {
            return Err(invalid(
                &format!("tools[{i}].type"),
                format!("tool type `{}` is not supported; declare functions (`function`)", t.kind),
            ));
        }
        let Some(name) = t.name else { return Err(invalid(&format!("{}.name", prefix(i)), "is required")) };
        check_name(&name, &format!("{}.name", prefix(i)))?;
        if functions.iter().any(|f| f.name == name) {
            return Err(invalid(&format!("{}.name", prefix(i)), format!("`{name}` is declared twice")));
        }
        let field = format!("{}.parameters", prefix(i));
        let parameters = match t.parameters {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p @ Value::Object(_)) => p,
            Some(other) => return Err(invalid(&field, format!("must be a JSON Schema object, got {other}"))),
        };
        functions.push(FunctionTool { name, description: t.description, parameters, field });
    }
    let choice = match choice {
        None => ToolChoice::Auto,
        Some(ToolChoiceParam::Mode(m)) => match m.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(invalid(
                    "tool_choice",
                    format!("`{other}` is not a tool choice; use `none`, `auto`, `required` or a function"),
                ))
            }
        },
        Some(ToolChoiceParam::Named(n)) => {
            if n.kind != "function" {
                return Err(invalid("tool_choice.type", format!("`{}` is not supported; use `function`", n.kind)));
            }
            let Some(name) = n.function.map(|f| f.name).or(n.name) else {
                return Err(invalid("tool_choice", "names no function"));
            };
            ToolChoice::Function(name)
        }
    };
    if functions.is_empty() {
        return match choice {
            ToolChoice::None | ToolChoice::Auto => Ok(None),
            _ => Err(invalid("tool_choice", "needs `tools`: no function is declared")),
        };
    }
    if let ToolChoice::Function(name) = &choice {
        if !functions.iter().any(|f| &f.name == name) {
            return Err(invalid("tool_choice", format!("names `{name}`, which is not declared in `tools`")));
        }
    }
    Ok(Some(Tools { functions, choice, parallel: parallel.unwrap_or(true) }))
}

/// Validates a `max_tokens`-like field.
pub fn max_tokens(value: Option<i64>, field: &str) -> Result<Option<u32>, BackendError> {
    match value {
        None => Ok(None),
        Some(n) if (1..=u32::MAX as i64).contains(&n) => Ok(Some(n as u32)),
        Some(n) => Err(invalid(field, format!("must be >= 1, got {n}"))),
    }
}

fn refuse_unsupported(req: &SamplingRequest) -> Result<(), BackendError> {
    if let Some(b) = req.best_of {
        if b != 1 {
            return Err(invalid("best_of", format!("only best_of=1 is supported, got {b}")));
        }
    }
    if req.functions.as_ref().is_some_and(|f| !f.is_empty()) || req.function_call.is_some() {
        return Err(invalid("functions", "the deprecated `functions` API is not supported; declare `tools`"));
    }
    if req.mirostat_target.is_some() || req.mirostat_lr.is_some() {
        return Err(invalid("mirostat_target", "mirostat sampling is not supported"));
    }
    Ok(())
}

fn logit_bias(bias: Option<std::collections::BTreeMap<String, f64>>) -> Result<Vec<(i32, f32)>, BackendError> {
    let mut out = Vec::new();
    for (token, value) in bias.unwrap_or_default() {
        let id: i32 =
            token.parse().map_err(|_| invalid("logit_bias", format!("keys must be token ids, got `{token}`")))?;
        if !(-100.0..=100.0).contains(&value) {
            return Err(invalid("logit_bias", format!("values must be in [-100, 100], got {value}")));
        }
        out.push((id, value as f32));
    }
    Ok(out)
}

fn range(field: &str, v: Option<f64>, lo: f64, hi: f64) -> Result<Option<f32>, BackendError> {
    match v {
        None => Ok(None),
        Some(x) if x.is_finite() && (lo..=hi).contains(&x) => Ok(Some(x as f32)),
        Some(x) => Err(invalid(field, format!("must be in [{lo}, {hi}], got {x}"))),
    }
}

/// Like [`range`] but excluding the lower bound.
fn open_range(field: &str, v: Option<f64>, lo: f64, hi: f64) -> Result<Option<f32>, BackendError> {
    match v {
        Some(x) if x <= lo => Err(invalid(field, format!("must be in ({lo}, {hi}], got {x}"))),
        v => range(field, v, lo, hi),
    }
}

fn invalid(param: &str, message: impl Into<String>) -> BackendError {
    BackendError::invalid(param, message)
}

/// Checks chat messages and flattens their content to a string, keeping other keys for the
/// chat template.
pub fn chat_messages(messages: Vec<ChatMessage>) -> Result<Vec<serde_json::Value>, BackendError> {
    if messages.is_empty() {
        return Err(invalid("messages", "must contain at least one message"));
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            if m.role.is_empty() {
                return Err(invalid(format!("messages[{i}].role").as_str(), "must not be empty"));
            }
            let content = content_text(m.content, &format!("messages[{i}].content"))?;
            let mut obj = m.extra;
            check_tool_history(&m.role, &obj, i)?;
            obj.insert("role".into(), m.role.into());
            obj.insert("content".into(), content.into());
            Ok(serde_json::Value::Object(obj))
        })
        .collect()
}

/// An assistant message's `tool_calls` and a tool message's `tool_call_id` have the shapes
/// OpenAI defines: templates render them, and a wrong type would fail there unexplained.
fn check_tool_history(role: &str, message: &serde_json::Map<String, Value>, i: usize) -> Result<(), BackendError> {
    if role == "tool" && !message.get("tool_call_id").is_some_and(Value::is_string) {
        return Err(invalid(&format!("messages[{i}].tool_call_id"), "a tool message needs the id of its call"));
    }
    let Some(calls) = message.get("tool_calls").filter(|c| !c.is_null()) else { return Ok(()) };
    let Some(calls) = calls.as_array() else {
        return Err(invalid(&format!("messages[{i}].tool_calls"), "must be a list of tool calls"));
    };
    for (j, call) in calls.iter().enumerate() {
        let field = format!("messages[{i}].tool_calls[{j}]");
        for key in ["name", "arguments"] {
            if !call.pointer(&format!("/function/{key}")).is_some_and(Value::is_string) {
                return Err(invalid(&format!("{field}.function.{key}"), "must be a string"));
            }
        }
    }
    Ok(())
}

/// Joins the text parts of a message content; refuses non-text parts.
pub fn content_text(content: Option<MessageContent>, field: &str) -> Result<String, BackendError> {
    Ok(match content {
        None => String::new(),
        Some(MessageContent::Text(t)) => t,
        Some(MessageContent::Parts(parts)) => {
            let mut text = String::new();
            for (j, ContentPart { kind, text: part }) in parts.into_iter().enumerate() {
                match (kind.as_str(), part) {
                    ("text" | "input_text" | "output_text", Some(t)) => text.push_str(&t),
                    ("text" | "input_text" | "output_text", None) => {
                        return Err(invalid(&format!("{field}[{j}].text"), "text part without `text`"))
                    }
                    (other, _) => {
                        return Err(invalid(
                            &format!("{field}[{j}].type"),
                            format!("content part type `{other}` is not supported by a text model"),
                        ))
                    }
                }
            }
            text
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<ValidSampling, BackendError> {
        sampling(serde_json::from_value(v).unwrap(), 7)
    }

    fn param_of(e: BackendError) -> String {
        match e {
            BackendError::InvalidInput { param, .. } => param,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn defaults_and_values() {
        let v = parse(json!({})).unwrap();
        assert_eq!(v.sampling.seed, 7);
        assert_eq!(v.max_tokens, None);
        let v = parse(json!({"temperature": 0, "max_tokens": 5, "stop": "x", "seed": 3})).unwrap();
        assert_eq!(v.sampling.temperature, 0.0);
        assert_eq!(v.max_tokens, Some(5));
        assert_eq!(v.stop, vec!["x"]);
        assert_eq!(v.sampling.seed, 3);
        // max_completion_tokens wins over max_tokens.
        let v = parse(json!({"max_tokens": 5, "max_completion_tokens": 9})).unwrap();
        assert_eq!(v.max_tokens, Some(9));
    }

    #[test]
    fn errors_name_the_field() {
        for (body, field) in [
            (json!({"temperature": 3}), "temperature"),
            (json!({"top_p": 0}), "top_p"),
            (json!({"top_k": -5}), "top_k"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"max_completion_tokens": -1}), "max_completion_tokens"),
            (json!({"n": 0}), "n"),
            (json!({"n": 17}), "n"),
            (json!({"stop": ["a","b","c","d","e"]}), "stop"),
            (json!({"stop": [""]}), "stop"),
            (json!({"response_format": {"type": "json_schema"}}), "response_format.json_schema"),
            (json!({"response_format": {"type": "yaml"}}), "response_format.type"),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}}),
                "response_format.json_schema.name",
            ),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": 3}}}),
                "response_format.json_schema.schema",
            ),
            (json!({"functions": [{"name": "f"}]}), "functions"),
            (json!({"logit_bias": {"abc": 1}}), "logit_bias"),
            (json!({"repetition_penalty": 0}), "repetition_penalty"),
        ] {
            assert_eq!(param_of(parse(body.clone()).unwrap_err()), field, "{body}");
        }
    }

    #[test]
    fn harmless_options_are_accepted() {
        let v = parse(json!({"n": 3, "response_format": {"type": "text"}})).unwrap();
        assert_eq!((v.choices, v.sampling.format), (3, OutputFormat::Text));
        let v = parse(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object"}}}}))
            .unwrap();
        let field = "response_format.json_schema.schema".to_owned();
        assert_eq!(
            v.sampling.format,
            OutputFormat::JsonSchema { name: "p".into(), schema: json!({"type": "object"}), field }
        );
    }

    #[test]
    fn logprob_counts_are_bounded_and_need_logprobs() {
        assert_eq!(chat_logprobs(None, None).unwrap(), None);
        assert_eq!(chat_logprobs(Some(true), None).unwrap(), Some(0));
        assert_eq!(chat_logprobs(Some(true), Some(20)).unwrap(), Some(20));
        assert_eq!(param_of(chat_logprobs(Some(true), Some(21)).unwrap_err()), "top_logprobs");
        assert_eq!(param_of(chat_logprobs(Some(false), Some(2)).unwrap_err()), "top_logprobs");
        assert_eq!(completion_logprobs(Some(5)).unwrap(), Some(5));
        assert_eq!(param_of(completion_logprobs(Some(6)).unwrap_err()), "logprobs");
    }

    fn chat_tools(tools: Value, choice: Value) -> Result<Option<Tools>, BackendError> {
        let declared: Vec<ChatTool> = serde_json::from_value(tools).unwrap();
        let choice: Option<ToolChoiceParam> = serde_json::from_value(choice).unwrap();
        tools_of(ToolsShape::Chat, declared, choice)
    }

    fn tools_of<T: Into<ToolDecl>>(
        shape: ToolsShape,
        declared: Vec<T>,
        choice: Option<ToolChoiceParam>,
    ) -> Result<Option<Tools>, BackendError> {
        tools(shape, Some(declared.into_iter().map(Into::into).collect()), choice, None)
    }

    #[test]
    fn tools_are_checked_and_choices_resolved() {
        let weather = json!([{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]);
        let t = chat_tools(weather.clone(), json!(null)).unwrap().unwrap();
        assert_eq!((t.choice, t.parallel, t.functions[0].name.as_str()), (ToolChoice::Auto, true, "weather"));
        let t = chat_tools(weather.clone(), json!({"type": "function", "function": {"name": "weather"}})).unwrap();
        assert_eq!(t.unwrap().choice, ToolChoice::Function("weather".into()));
        assert_eq!(chat_tools(weather.clone(), json!("required")).unwrap().unwrap().choice, ToolChoice::Required);
        // No parameters: an empty arguments object.
        let bare = json!([{"type": "function", "function": {"name": "now"}}]);
        assert_eq!(chat_tools(bare, json!(null)).unwrap().unwrap().functions[0].parameters["type"], "object");
        // No tools: `auto` and `none` are harmless, a forced call is not.
        assert_eq!(chat_tools(json!([]), json!("auto")).unwrap(), None);
        for (tools, choice, field) in [
            (weather.clone(), json!({"type": "function", "function": {"name": "other"}}), "tool_choice"),
            (weather.clone(), json!("sometimes"), "tool_choice"),
            (json!([]), json!("required"), "tool_choice"),
            (
                json!([{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
                json!(null),
                "tools[0].function.parameters",
            ),
            (json!([{"type": "function", "function": {"name": "bad name"}}]), json!(null), "tools[0].function.name"),
            (
                json!([{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}]),
                json!(null),
                "tools[1].function.name",
            ),
            (json!([{"type": "retrieval"}]), json!(null), "tools[0].type"),
        ] {
            assert_eq!(param_of(chat_tools(tools.clone(), choice.clone()).unwrap_err()), field, "{tools} {choice}");
        }
        // The Responses shape is flat.
        let declared: Vec<ResponsesTool> =
            serde_json::from_value(json!([{"type": "function", "name": "f", "parameters": []}])).unwrap();
        assert_eq!(param_of(tools_of(ToolsShape::Responses, declared, None).unwrap_err()), "tools[0].parameters");
    }

    #[test]
    fn tool_history_has_openai_shapes() {
        let check = |v: Value| chat_messages(serde_json::from_value(v).unwrap());
        assert!(check(json!([
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "1"}
        ]))
        .is_ok());
        assert_eq!(param_of(check(json!([{"role": "tool", "content": "1"}])).unwrap_err()), "messages[0].tool_call_id");
        let bad_args = json!([{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}]);
        assert_eq!(param_of(check(bad_args).unwrap_err()), "messages[0].tool_calls[0].function.arguments");
    }

    #[test]
    fn message_content_parts_are_joined_and_images_refused() {
        let msgs: Vec<ChatMessage> = serde_json::from_value(json!([
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "name": "x"}
        ]))
        .unwrap();
        let out = chat_messages(msgs).unwrap();
        assert_eq!(out[0]["content"], "ab");
        assert_eq!(out[0]["name"], "x");
        let msgs: Vec<ChatMessage> = serde_json::from_value(json!([
            {"role": "user", "content": [{"type": "image_url", "image_url": {}}]}
        ]))
        .unwrap();
        assert_eq!(param_of(chat_messages(msgs).unwrap_err()), "messages[0].content[0].type");
        assert_eq!(param_of(chat_messages(vec![]).unwrap_err()), "messages");
    }
}
