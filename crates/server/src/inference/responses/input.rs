//! Responses input -> chat messages: `instructions` as the system message, messages as
//! they are, the model's earlier `function_call` items as an assistant message's
//! `tool_calls`, and `function_call_output` items as tool messages.

use serde_json::{json, Value};
use tm_api::{ResponsesInput, ResponsesInputItem};
use tm_backend::validate;

use crate::inference::error::ApiError;

pub fn messages(instructions: Option<String>, input: ResponsesInput) -> Result<Vec<Value>, ApiError> {
    let mut messages: Vec<Value> = Vec::new();
    if let Some(i) = instructions {
        messages.push(json!({"role": "system", "content": i}));
    }
    match input {
        ResponsesInput::Text(t) => messages.push(json!({"role": "user", "content": t})),
        ResponsesInput::Items(items) => {
            for (i, item) in items.into_iter().enumerate() {
                add_item(&mut messages, i, item)?;
            }
        }
    }
    if messages.is_empty() {
        return Err(ApiError::bad_request(Some("input".into()), "must not be empty"));
    }
    Ok(messages)
}

fn add_item(messages: &mut Vec<Value>, i: usize, item: ResponsesInputItem) -> Result<(), ApiError> {
    let required = |value: Option<String>, key: &str| {
        value.ok_or_else(|| ApiError::bad_request(Some(format!("input[{i}].{key}")), "is required"))
    };
    match item.kind.as_deref() {
        None | Some("message") => {
            let content = validate::content_text(item.content, &format!("input[{i}].content"))?;
            messages.push(json!({"role": item.role.unwrap_or_else(|| "user".into()), "content": content}));
        }
        Some("function_call") => {
            let call = json!({
                "id": required(item.call_id, "call_id")?,
                "type": "function",
                "function": {"name": required(item.name, "name")?, "arguments": required(item.arguments, "arguments")?},
            });
            // Calls of one turn, and the text before them, are one assistant message.
            match messages.last_mut() {
                Some(last) if last["role"] == "assistant" => {
                    match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                        Some(calls) => calls.push(call),
                        None => last["tool_calls"] = json!([call]),
                    }
                }
                _ => messages.push(json!({"role": "assistant", "content": "", "tool_calls": [call]})),
            }
        }
        Some("function_call_output") => {
            let call_id = required(item.call_id, "call_id")?;
            let output = validate::content_text(item.output, &format!("input[{i}].output"))?;
            messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
        }
        Some(other) => {
            return Err(ApiError::bad_request(
                Some(format!("input[{i}].type")),
                format!("input item type `{other}` is not supported; send messages and function calls"),
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(v: Value) -> ResponsesInput {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_tool_round_trip_becomes_chat_messages() {
        let input = items(json!([
            {"role": "user", "content": "Weather in Paris and Lyon?"},
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "call_2", "name": "weather", "arguments": "{\"city\":\"Lyon\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "call_2", "output": "rain"},
        ]));
        let m = messages(Some("Be brief.".into()), input).unwrap();
        assert_eq!(m.len(), 5);
        assert_eq!(m[0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(m[2]["tool_calls"].as_array().unwrap().len(), 2);
        assert_eq!(m[2]["tool_calls"][1]["function"]["arguments"], "{\"city\":\"Lyon\"}");
        assert_eq!(m[4], json!({"role": "tool", "tool_call_id": "call_2", "content": "rain"}));
    }

    #[test]
    fn incomplete_items_name_their_field() {
        let err =
            messages(None, items(json!([{"type": "function_call", "name": "f", "arguments": "{}"}]))).unwrap_err();
        assert!(format!("{err:?}").contains("input[0].call_id"), "{err:?}");
        let err = messages(None, items(json!([{"type": "reasoning"}]))).unwrap_err();
        assert!(format!("{err:?}").contains("input[0].type"), "{err:?}");
    }
}
