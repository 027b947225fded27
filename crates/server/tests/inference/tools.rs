//! Tool calls with the real Qwen model (its template knows tools): forced, required, auto
//! and none, streamed deltas reassembled, a round trip through the history, and the
//! Responses API's function calls. Arguments are checked against the declared schema.

use serde_json::{json, Value};

use crate::common::{post, post_json, shared, shared_qwen, sse_data, start, Options, MODEL, QWEN};

fn weather_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
        },
        "required": ["city", "unit"],
        "additionalProperties": false
    })
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a city",
                                          "parameters": weather_schema()}},
        {"type": "function", "function": {"name": "get_time", "description": "Get the current time in a time zone",
                                          "parameters": {"type": "object", "properties": {"tz": {"type": "string"}},
                                                         "required": ["tz"]}}}
    ])
}

fn ask(question: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": QWEN,
        "messages": [{"role": "user", "content": question}],
        "tools": tools(),
        "temperature": 0,
        "max_tokens": 80,
    });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body
}

/// A call's arguments parse as JSON and validate against the function's parameters.
pub fn assert_valid_call(call: &Value) {
    let name = call["function"]["name"].as_str().unwrap();
    let declared = tools().as_array().unwrap().iter().find(|t| t["function"]["name"] == name).cloned();
    let declared = declared.unwrap_or_else(|| panic!("`{name}` is not declared: {call}"));
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("arguments are not JSON ({e}): {call}"));
    let validator = jsonschema::validator_for(&declared["function"]["parameters"]).unwrap();
    assert!(validator.is_valid(&args), "{args} does not validate against `{name}`'s parameters");
    assert!(call["id"].as_str().unwrap().starts_with("call_"), "{call}");
    assert_eq!(call["type"], "function");
}

#[tokio::test]
async fn a_named_or_required_call_is_made_and_validates() {
    for choice in [json!({"type": "function", "function": {"name": "get_weather"}}), json!("required")] {
        let (status, v) = post_json(
            shared_qwen(),
            "/v1/chat/completions",
            ask("What is the weather like in Paris?", json!({"tool_choice": choice})),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        let choice0 = &v["choices"][0];
        assert_eq!(choice0["finish_reason"], "tool_calls", "{v}");
        assert_eq!(choice0["message"]["content"], Value::Null, "no text beside the call: {v}");
        let calls = choice0["message"]["tool_calls"].as_array().unwrap();
        assert!(!calls.is_empty());
        calls.iter().for_each(assert_valid_call);
        assert_eq!(calls[0]["function"]["name"], "get_weather", "{v}");
        assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 5);
    }
    // A forced call of the other function is that function, whatever the question.
    let forced = json!({"tool_choice": {"type": "function", "function": {"name": "get_time"}}});
    let (_, v) =
        post_json(shared_qwen(), "/v1/chat/completions", ask("What is the weather like in Paris?", forced)).await;
    let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "a named function is called once: {v}");
    assert_eq!(calls[0]["function"]["name"], "get_time");
    assert_valid_call(&calls[0]);
}

/// On a server of its own: whether this small model opens a call is a near thing, and
/// batches shared with other tests' requests round differently.
#[tokio::test]
async fn auto_calls_when_the_question_needs_a_tool_and_answers_when_not() {
    let base = start(Options { model: QWEN, ctx_size: 2048, parallel: 1, ..Options::default() });
    let (_, v) =
        post_json(&base, "/v1/chat/completions", ask("What is the weather like in Paris today?", json!({}))).await;
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    v["choices"][0]["message"]["tool_calls"].as_array().unwrap().iter().for_each(assert_valid_call);
    let (_, v) =
        post_json(&base, "/v1/chat/completions", ask("Explain what a mutex is in one sentence.", json!({}))).await;
    let message = &v["choices"][0]["message"];
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert!(message.get("tool_calls").is_none(), "{v}");
    assert!(message["content"].as_str().unwrap().to_lowercase().contains("mutex"), "{v}");
}

#[tokio::test]
async fn none_answers_in_text_and_never_shows_call_markup() {
    let (_, v) = post_json(
        shared_qwen(),
        "/v1/chat/completions",
        ask("What is the weather like in Paris today?", json!({"tool_choice": "none"})),
    )
    .await;
    let message = &v["choices"][0]["message"];
    assert!(message.get("tool_calls").is_none(), "{v}");
    let content = message["content"].as_str().unwrap();
    assert!(!content.is_empty() && !content.contains("<tool_call>"), "{v}");
}

#[tokio::test]
async fn streamed_calls_reassemble_into_the_plain_answer() {
    let question = "What is the weather like in Paris and in Lyon?";
    let body =
        ask(question, json!({"tool_choice": "required", "stream": true, "stream_options": {"include_usage": true}}));
    let data = sse_data(post(shared_qwen(), "/v1/chat/completions", body).await).await;
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let mut calls: Vec<Value> = Vec::new();
    let mut finish = Value::Null;
    for chunk in &chunks {
        let Some(choice) = chunk["choices"].get(0) else { continue };
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
        for delta in choice["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let index = delta["index"].as_u64().unwrap() as usize;
            if index == calls.len() {
                // The first delta of a call has its id, type and name.
                assert!(delta["id"].is_string() && delta["type"] == "function", "{delta}");
                calls.push(json!({"id": delta["id"], "type": "function",
                                  "function": {"name": delta["function"]["name"], "arguments": ""}}));
            }
            let args = calls[index]["function"]["arguments"].as_str().unwrap().to_owned();
            calls[index]["function"]["arguments"] = (args + delta["function"]["arguments"].as_str().unwrap()).into();
        }
        assert!(choice["delta"]["content"].as_str().is_none_or(str::is_empty), "no text: {chunk}");
    }
    assert_eq!(finish, "tool_calls");
    assert!(chunks.last().unwrap()["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    calls.iter().for_each(assert_valid_call);
    // Greedy: the same calls as the answer that is not streamed.
    let (_, plain) =
        post_json(shared_qwen(), "/v1/chat/completions", ask(question, json!({"tool_choice": "required"}))).await;
    let plain_calls = plain["choices"][0]["message"]["tool_calls"].as_array().unwrap();
    let strip = |calls: &[Value]| calls.iter().map(|c| c["function"].clone()).collect::<Vec<_>>();
    assert_eq!(strip(&calls), strip(plain_calls));
}

#[tokio::test]
async fn a_tool_result_in_the_history_reaches_the_answer() {
    let messages = json!([
        {"role": "system", "content": "Call a tool when you need data; once you have its result, answer in one plain sentence."},
        {"role": "user", "content": "What is the weather like in Paris today?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 22, \"sky\": \"sunny\"}"}
    ]);
    let body = json!({"model": QWEN, "messages": messages, "tools": tools(), "tool_choice": "none",
                      "temperature": 0, "max_tokens": 40});
    let (_, v) = post_json(shared_qwen(), "/v1/chat/completions", body).await;
    let answer = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(answer.contains("22") && answer.to_lowercase().contains("sunny"), "{v}");
}

#[tokio::test]
async fn responses_function_calls_plain_streamed_and_answered() {
    let tools = json!([{"type": "function", "name": "get_weather", "description": "Get the current weather in a city",
                        "parameters": weather_schema()}]);
    let body = json!({"model": QWEN, "input": "What is the weather like in Paris?", "tools": tools,
                      "tool_choice": "required", "temperature": 0, "max_output_tokens": 60});
    let (status, v) = post_json(shared_qwen(), "/v1/responses", body.clone()).await;
    assert_eq!(status, 200, "{v}");
    let call = v["output"].as_array().unwrap().iter().find(|i| i["type"] == "function_call").cloned().unwrap();
    assert_eq!((call["name"].clone(), call["status"].clone()), (json!("get_weather"), json!("completed")), "{v}");
    assert!(call["call_id"].as_str().unwrap().starts_with("call_"));
    assert!(call["id"].as_str().unwrap().starts_with("fc"));
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert!(jsonschema::validator_for(&weather_schema()).unwrap().is_valid(&args), "{args}");
    assert_eq!(v["tool_choice"], "required");

    // Streamed: the item is announced, its arguments arrive as deltas, then it is done.
    let mut streamed = body.clone();
    streamed["stream"] = true.into();
    let events: Vec<Value> = sse_data(post(shared_qwen(), "/v1/responses", streamed).await)
        .await
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let at = |kind: &str| kinds.iter().position(|k| *k == kind).unwrap_or_else(|| panic!("no {kind}: {kinds:?}"));
    assert!(at("response.output_item.added") < at("response.function_call_arguments.delta"));
    assert!(at("response.function_call_arguments.delta") < at("response.function_call_arguments.done"));
    assert!(at("response.function_call_arguments.done") < at("response.output_item.done"));
    assert_eq!(kinds.last(), Some(&"response.completed"));
    let deltas: String = events
        .iter()
        .filter(|e| e["type"] == "response.function_call_arguments.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, call["arguments"].as_str().unwrap(), "greedy: the same arguments");
    assert_eq!(events[at("response.function_call_arguments.done")]["arguments"], call["arguments"]);

    // The call and its output go back as input items; the model answers.
    let input = json!([
        {"role": "system", "content": "Once you have a tool's result, answer in one plain sentence."},
        {"role": "user", "content": "What is the weather like in Paris?"},
        {"type": "function_call", "call_id": call["call_id"], "name": "get_weather", "arguments": call["arguments"]},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "{\"temperature\": 22, \"sky\": \"sunny\"}"}
    ]);
    let answer = json!({"model": QWEN, "input": input, "tools": body["tools"], "tool_choice": "none",
                        "temperature": 0, "max_output_tokens": 40});
    let (status, v) = post_json(shared_qwen(), "/v1/responses", answer).await;
    assert_eq!(status, 200, "{v}");
    let text = v["output"][0]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("22"), "{v}");
}

/// Gemma's GGUF has no chat template (ChatML, no tool syntax): the tools reach it by the
/// fallback convention, and a required call is still one that validates, as is the history.
#[tokio::test]
async fn a_model_without_tool_syntax_still_makes_valid_calls() {
    let mut body =
        ask("What is the weather like in Paris?", json!({"tool_choice": "required", "parallel_tool_calls": false}));
    body["model"] = MODEL.into();
    let (status, v) = post_json(shared(), "/v1/chat/completions", body.clone()).await;
    assert_eq!(status, 200, "{v}");
    let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{v}");
    assert_valid_call(&calls[0]);
    // A history with calls and results renders for it too.
    body["messages"] = json!([
        {"role": "user", "content": "What is the weather like in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [calls[0].clone()]},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"}
    ]);
    body["tool_choice"] = "none".into();
    body["max_tokens"] = 8.into();
    let (status, v) = post_json(shared(), "/v1/chat/completions", body).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["choices"][0]["message"].get("tool_calls").is_none(), "{v}");
}
