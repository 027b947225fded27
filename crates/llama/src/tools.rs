//! Tools in the prompt: how declared functions and earlier calls reach a chat template.
//!
//! Every model writes calls in one syntax (see `constraint`): `<tool_call>\n{"name": ...,
//! "arguments": {...}}\n</tool_call>`. A template that knows that syntax (Qwen 2.5's) gets
//! the tools and the history as OpenAI sends them, with each call's `arguments` parsed
//! from its JSON string into an object, as Hugging Face templates expect (vLLM and
//! llama.cpp do the same). Any other template gets the **fallback convention**, in plain
//! messages it can render: the tool declarations and the instructions Qwen's template
//! uses appended to the system message (one is added when there is none); an assistant's
//! calls written into its content in that syntax; tool results sent as user messages of
//! `<tool_response>` blocks.

use serde_json::{json, Value};
use tm_backend::{ToolChoice, Tools};

use crate::constraint::{CALL_CLOSE, CALL_OPEN};
use crate::template::python_json;

/// The messages and tool declarations to render for a request.
pub fn prompt_parts(messages: &[Value], tools: Option<&Tools>, native: bool) -> (Vec<Value>, Option<Vec<Value>>) {
    // `tool_choice: none` declares nothing: the model answers in text.
    let declared = tools.filter(|t| t.choice != ToolChoice::None).map(Tools::openai_json);
    let mut messages: Vec<Value> = messages.iter().map(with_parsed_arguments).collect();
    if native {
        return (messages, declared);
    }
    messages = fallback_history(messages);
    if let Some(declared) = declared {
        let instructions = instructions(&declared);
        match messages.first_mut() {
            Some(first) if first["role"] == "system" => {
                let content = first["content"].as_str().unwrap_or_default().to_owned();
                first["content"] = format!("{content}\n\n{instructions}").into();
            }
            _ => messages.insert(0, json!({"role": "system", "content": instructions})),
        }
    }
    (messages, None)
}

/// Qwen 2.5's tool instructions, word for word.
fn instructions(declared: &[Value]) -> String {
    let list: Vec<String> = declared.iter().map(|t| python_json(t, None)).collect();
    format!(
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with \
         function signatures within <tools></tools> XML tags:\n<tools>\n{}\n</tools>\n\nFor each function call, \
         return a json object with function name and arguments within {CALL_OPEN}{CALL_CLOSE} XML tags:\n\
         {CALL_OPEN}\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n{CALL_CLOSE}",
        list.join("\n")
    )
}

/// An assistant message whose calls' `arguments` are JSON objects rather than strings.
fn with_parsed_arguments(message: &Value) -> Value {
    let mut message = message.clone();
    if let Some(calls) = message.get_mut("tool_calls").and_then(Value::as_array_mut) {
        for call in calls {
            if let Some(args) = call.pointer_mut("/function/arguments") {
                if let Some(parsed) = args.as_str().and_then(|a| serde_json::from_str::<Value>(a).ok()) {
                    *args = parsed;
                }
            }
        }
    }
    message
}

/// One call as the model writes it.
pub fn call_text(name: &str, arguments: &Value) -> String {
    let call = json!({"name": name, "arguments": arguments});
    format!("{CALL_OPEN}\n{}\n{CALL_CLOSE}", python_json(&call, None))
}

/// Calls written into assistant messages, tool results into user messages.
fn fallback_history(messages: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(messages.len());
    for m in messages {
        match m["role"].as_str() {
            Some("assistant") if m.get("tool_calls").is_some_and(|c| !c.is_null()) => {
                let mut parts: Vec<String> =
                    m["content"].as_str().filter(|c| !c.is_empty()).map(str::to_owned).into_iter().collect();
                for call in m["tool_calls"].as_array().into_iter().flatten() {
                    let f = &call["function"];
                    parts.push(call_text(f["name"].as_str().unwrap_or_default(), &f["arguments"]));
                }
                out.push(json!({"role": "assistant", "content": parts.join("\n")}));
            }
            Some("tool") => {
                let block = format!("<tool_response>\n{}\n</tool_response>", m["content"].as_str().unwrap_or_default());
                match out.last_mut() {
                    // Results of one turn's calls go in one message.
                    Some(last) if last.get("tool_responses").is_some() => {
                        let content = last["content"].as_str().unwrap_or_default().to_owned();
                        last["content"] = format!("{content}\n{block}").into();
                    }
                    _ => out.push(json!({"role": "user", "content": block, "tool_responses": true})),
                }
            }
            _ => out.push(m),
        }
    }
    for m in &mut out {
        if let Some(obj) = m.as_object_mut() {
            obj.remove("tool_responses");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tm_backend::FunctionTool;

    fn weather(choice: ToolChoice) -> Tools {
        Tools {
            functions: vec![FunctionTool {
                name: "weather".into(),
                description: Some("Weather in a city".into()),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
                field: "tools[0].function.parameters".into(),
            }],
            choice,
            parallel: true,
        }
    }

    fn history() -> Vec<Value> {
        vec![
            json!({"role": "user", "content": "Paris?"}),
            json!({"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Lyon\"}"}}
            ]}),
            json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"}),
            json!({"role": "tool", "tool_call_id": "call_2", "content": "rain"}),
        ]
    }

    #[test]
    fn a_native_template_gets_tools_and_parsed_arguments() {
        let (messages, tools) = prompt_parts(&history(), Some(&weather(ToolChoice::Auto)), true);
        assert_eq!(tools.unwrap()[0]["function"]["name"], "weather");
        assert_eq!(messages[1]["tool_calls"][0]["function"]["arguments"], json!({"city": "Paris"}));
        assert_eq!(messages.len(), 4);
        // `none`: nothing is declared.
        assert!(prompt_parts(&history(), Some(&weather(ToolChoice::None)), true).1.is_none());
    }

    #[test]
    fn the_fallback_writes_everything_as_plain_messages() {
        let (messages, tools) = prompt_parts(&history(), Some(&weather(ToolChoice::Required)), false);
        assert!(tools.is_none());
        assert_eq!(messages[0]["role"], "system");
        let system = messages[0]["content"].as_str().unwrap();
        assert!(system.contains("<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"weather\""), "{system}");
        assert_eq!(
            messages[2]["content"],
            "<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n\
             <tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Lyon\"}}\n</tool_call>"
        );
        assert_eq!(
            messages[3],
            json!({"role": "user", "content": "<tool_response>\nsunny\n</tool_response>\n<tool_response>\nrain\n</tool_response>"})
        );
        assert_eq!(messages.len(), 4, "the two results are one message");
        // A system message of the client's keeps its text first.
        let with_system = [vec![json!({"role": "system", "content": "Be brief."})], history()].concat();
        let (messages, _) = prompt_parts(&with_system, Some(&weather(ToolChoice::Auto)), false);
        assert!(messages[0]["content"].as_str().unwrap().starts_with("Be brief.\n\n# Tools"));
    }
}
