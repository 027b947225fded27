//! Turns the wire sampling fields into [`SamplingParams`]. Every error names its field,
//! the rule and the value given. Options that would change the result but that we do not
//! implement are refused, never silently ignored.

use crate::{BackendError, SamplingParams};

type ChatContent = String;
use tm_api::{ChatMessage, ContentPart, MessageContent, SamplingRequest};

/// Sampling settings plus the length and stop settings of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSampling {
    pub sampling: SamplingParams,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
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
        presence_penalty: range("presence_penalty", req.presence_penalty, -2.0, 2.0)?.unwrap_or(d.presence_penalty),
        frequency_penalty: range("frequency_penalty", req.frequency_penalty, -2.0, 2.0)?.unwrap_or(d.frequency_penalty),
        repetition_penalty: open_range("repetition_penalty", req.repetition_penalty, 0.0, 10.0)?
            .unwrap_or(d.repetition_penalty),
        json: match req.response_format.as_ref().map(|f| f.kind.as_str()) {
            None | Some("text") => false,
            Some("json_object") => true,
            Some(other) => {
                return Err(invalid(
                    "response_format.type",
                    format!("`{other}` is not supported; use `text` or `json_object`"),
                ))
            }
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
    Ok(ValidSampling { sampling, max_tokens, stop })
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
    if let Some(n) = req.n {
        if n != 1 {
            return Err(invalid("n", format!("only n=1 is supported, got {n}")));
        }
    }
    if let Some(b) = req.best_of {
        if b != 1 {
            return Err(invalid("best_of", format!("only best_of=1 is supported, got {b}")));
        }
    }
    let truthy = |v: &Option<serde_json::Value>| matches!(v, Some(v) if !(v.is_null() || v == &serde_json::Value::Bool(false) || v == &serde_json::json!(0)));
    if truthy(&req.logprobs) || truthy(&req.top_logprobs) {
        return Err(invalid("logprobs", "logprobs are not supported yet"));
    }
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) || req.functions.as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(invalid("tools", "tool calling is not supported yet"));
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
            obj.insert("role".into(), m.role.into());
            obj.insert("content".into(), content.into());
            Ok(serde_json::Value::Object(obj))
        })
        .collect()
}

/// Joins the text parts of a message content; refuses non-text parts.
pub fn content_text(content: Option<MessageContent>, field: &str) -> Result<ChatContent, BackendError> {
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
            (json!({"n": 2}), "n"),
            (json!({"stop": ["a","b","c","d","e"]}), "stop"),
            (json!({"stop": [""]}), "stop"),
            (json!({"response_format": {"type": "json_schema"}}), "response_format.type"),
            (json!({"logprobs": true}), "logprobs"),
            (json!({"tools": [{"type": "function"}]}), "tools"),
            (json!({"logit_bias": {"abc": 1}}), "logit_bias"),
            (json!({"repetition_penalty": 0}), "repetition_penalty"),
        ] {
            assert_eq!(param_of(parse(body.clone()).unwrap_err()), field, "{body}");
        }
    }

    #[test]
    fn harmless_options_are_accepted() {
        assert!(parse(json!({"n": 1, "logprobs": false, "tools": [], "response_format": {"type": "text"}})).is_ok());
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
