//! The OpenAI wire format as the engines speak it: request bodies we send, and the SSE
//! events we read back.

use serde_json::{json, Map, Value};
use tm_backend::{
    FinishReason, GenerateRequest, OutputFormat, PromptInput, SamplingParams, TokenLogprob, TokenUsage, TopLogprob,
};

/// The upstream route and streaming body for `request`. Always streamed, with usage asked
/// for, whatever the client asked: the gateway needs the engine's usage to bill, and
/// retries are only possible before the first event.
pub fn request_body(request: &GenerateRequest, upstream_model: &str) -> (&'static str, Value) {
    let mut body = Map::new();
    body.insert("model".into(), upstream_model.into());
    let output = &request.output;
    let path = match &request.prompt {
        PromptInput::Chat(messages) => {
            body.insert("messages".into(), Value::Array(messages.clone()));
            if let Some(k) = output.logprobs {
                body.insert("logprobs".into(), true.into());
                body.insert("top_logprobs".into(), k.into());
            }
            if let Some(tools) = &output.tools {
                body.insert("tools".into(), tools.openai_json().into());
                body.insert("tool_choice".into(), tools.choice_json());
                body.insert("parallel_tool_calls".into(), tools.parallel.into());
            }
            "/v1/chat/completions"
        }
        PromptInput::Text(prompt) => {
            body.insert("prompt".into(), prompt.clone().into());
            if let Some(k) = output.logprobs {
                body.insert("logprobs".into(), k.into());
            }
            "/v1/completions"
        }
    };
    if output.choices > 1 {
        body.insert("n".into(), output.choices.into());
    }
    body.insert("stream".into(), true.into());
    body.insert("stream_options".into(), json!({"include_usage": true}));
    if let Some(n) = request.max_tokens {
        body.insert("max_tokens".into(), n.into());
    }
    if !request.stop.is_empty() {
        body.insert("stop".into(), request.stop.clone().into());
    }
    sampling(&mut body, &request.sampling);
    (path, Value::Object(body))
}

/// OpenAI's own fields always; the engines' extensions (vLLM, SGLang and llama-server all
/// read `top_k`, `min_p`, `repetition_penalty`...) only when they differ from the default,
/// so a strict OpenAI-compatible upstream is not sent fields it would refuse.
fn sampling(body: &mut Map<String, Value>, s: &SamplingParams) {
    let d = SamplingParams::default();
    body.insert("temperature".into(), s.temperature.into());
    body.insert("top_p".into(), s.top_p.into());
    body.insert("seed".into(), s.seed.into());
    if s.presence_penalty != d.presence_penalty {
        body.insert("presence_penalty".into(), s.presence_penalty.into());
    }
    if s.frequency_penalty != d.frequency_penalty {
        body.insert("frequency_penalty".into(), s.frequency_penalty.into());
    }
    if !s.logit_bias.is_empty() {
        let bias: Map<String, Value> = s.logit_bias.iter().map(|(t, b)| (t.to_string(), (*b).into())).collect();
        body.insert("logit_bias".into(), bias.into());
    }
    match &s.format {
        OutputFormat::Text => {}
        OutputFormat::JsonObject => {
            body.insert("response_format".into(), json!({"type": "json_object"}));
        }
        OutputFormat::JsonSchema { name, schema, .. } => {
            let format = json!({"name": name, "schema": schema, "strict": true});
            body.insert("response_format".into(), json!({"type": "json_schema", "json_schema": format}));
        }
    }
    if s.top_k != d.top_k {
        body.insert("top_k".into(), s.top_k.into());
    }
    if s.min_p != d.min_p {
        body.insert("min_p".into(), s.min_p.into());
    }
    if s.typical_p != d.typical_p {
        body.insert("typical_p".into(), s.typical_p.into());
    }
    if s.repetition_penalty != d.repetition_penalty {
        body.insert("repetition_penalty".into(), s.repetition_penalty.into());
    }
    if s.ignore_eos {
        body.insert("ignore_eos".into(), true.into());
    }
}

/// The bytes the router hashes: the prompt as the engine will see it, each message's
/// role and content in order, so that a conversation's next turn extends the last one's.
pub fn routing_key(prompt: &PromptInput) -> Vec<u8> {
    match prompt {
        PromptInput::Text(text) => text.as_bytes().to_vec(),
        PromptInput::Chat(messages) => {
            let mut key = Vec::new();
            for m in messages {
                key.extend_from_slice(m["role"].as_str().unwrap_or_default().as_bytes());
                key.push(0);
                key.extend_from_slice(m["content"].as_str().unwrap_or_default().as_bytes());
                key.push(0x1e);
            }
            key
        }
    }
}

/// One upstream SSE event, read.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    /// A choice's new output, and its finish reason when this chunk ends it.
    Delta {
        choice: u32,
        text: String,
        logprobs: Vec<TokenLogprob>,
        tool_calls: Vec<CallDelta>,
        finish: Option<FinishReason>,
    },
    Usage(TokenUsage),
    /// `[DONE]`.
    Done,
    /// An `{"error": ...}` event.
    Error(String),
}

/// Reads one event's `data`. A chunk may carry text, a finish reason and usage at once
/// (some engines put usage on the last choice chunk): they come out in that order.
pub fn parse_event(data: &str) -> Result<Vec<Chunk>, String> {
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(vec![Chunk::Done]);
    }
    let v: Value = serde_json::from_str(data).map_err(|e| format!("malformed event from the upstream ({e})"))?;
    if let Some(error) = v.get("error") {
        let message = error.get("message").and_then(Value::as_str).map_or_else(|| error.to_string(), str::to_owned);
        return Ok(vec![Chunk::Error(message)]);
    }
    let mut out = Vec::new();
    match v.get("choices").and_then(Value::as_array) {
        Some(choices) => {
            for (i, choice) in choices.iter().enumerate() {
                let index = choice.get("index").and_then(Value::as_u64).unwrap_or(i as u64) as u32;
                let text = choice
                    .pointer("/delta/content")
                    .or_else(|| choice.get("text"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let logprobs = choice.get("logprobs").map(parse_logprobs).unwrap_or_default();
                let tool_calls: Vec<CallDelta> = choice
                    .pointer("/delta/tool_calls")
                    .and_then(Value::as_array)
                    .map(|calls| calls.iter().enumerate().map(|(k, c)| CallDelta::parse(c, k)).collect())
                    .unwrap_or_default();
                let finish = choice.get("finish_reason").and_then(Value::as_str).map(finish_reason);
                if !text.is_empty() || !logprobs.is_empty() || !tool_calls.is_empty() || finish.is_some() {
                    out.push(Chunk::Delta { choice: index, text, logprobs, tool_calls, finish });
                }
            }
        }
        None if v.get("usage").is_none() => return Err("malformed event from the upstream (no `choices`)".into()),
        None => {}
    }
    if let Some(usage) = v.get("usage").filter(|u| !u.is_null()) {
        out.push(Chunk::Usage(parse_usage(usage)?));
    }
    Ok(out)
}

fn parse_usage(u: &Value) -> Result<TokenUsage, String> {
    let count = |v: Option<&Value>| v.and_then(Value::as_u64);
    let prompt = count(u.get("prompt_tokens")).ok_or("upstream usage without `prompt_tokens`")?;
    let completion = count(u.get("completion_tokens")).ok_or("upstream usage without `completion_tokens`")?;
    let cached = count(u.pointer("/prompt_tokens_details/cached_tokens")).unwrap_or(0).min(prompt);
    Ok(TokenUsage { prompt_tokens: prompt, cached_tokens: cached, completion_tokens: completion })
}

fn finish_reason(s: &str) -> FinishReason {
    match s {
        "length" => FinishReason::Length,
        "tool_calls" => FinishReason::ToolCalls,
        // stop, eos, content filter: the generation ended on its own.
        _ => FinishReason::Stop,
    }
}

/// A piece of a streamed tool call: the first one of a call has its id and name.
#[derive(Debug, Clone, PartialEq)]
pub struct CallDelta {
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
}

impl CallDelta {
    fn parse(c: &Value, position: usize) -> CallDelta {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        CallDelta {
            index: c.get("index").and_then(Value::as_u64).unwrap_or(position as u64) as u32,
            id: text(c.get("id")).filter(|s| !s.is_empty()),
            name: text(c.pointer("/function/name")).filter(|s| !s.is_empty()),
            arguments: text(c.pointer("/function/arguments")).unwrap_or_default(),
        }
    }
}

/// A choice's `logprobs`: chat's `{"content": [...]}` or completions' `{"tokens",
/// "token_logprobs", "top_logprobs"}`.
fn parse_logprobs(v: &Value) -> Vec<TokenLogprob> {
    let bytes_of = |e: &Value, token: &str| -> Vec<u8> {
        e.get("bytes")
            .and_then(Value::as_array)
            .map(|b| b.iter().filter_map(Value::as_u64).map(|b| b as u8).collect())
            .unwrap_or_else(|| token.as_bytes().to_vec())
    };
    let text = |e: &Value, key: &str| e.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    if let Some(content) = v.get("content").and_then(Value::as_array) {
        return content
            .iter()
            .map(|e| {
                let token = text(e, "token");
                TokenLogprob {
                    bytes: bytes_of(e, &token),
                    logprob: e.get("logprob").and_then(Value::as_f64).map(|l| l as f32),
                    top: e
                        .get("top_logprobs")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|t| {
                            let token = text(t, "token");
                            TopLogprob {
                                bytes: bytes_of(t, &token),
                                logprob: t.get("logprob").and_then(Value::as_f64).unwrap_or(f64::NEG_INFINITY) as f32,
                                token,
                            }
                        })
                        .collect(),
                    token,
                }
            })
            .collect();
    }
    let Some(tokens) = v.get("tokens").and_then(Value::as_array) else { return Vec::new() };
    let logprobs = v.get("token_logprobs").and_then(Value::as_array);
    let tops = v.get("top_logprobs").and_then(Value::as_array);
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let token = t.as_str().unwrap_or_default().to_owned();
            let mut top: Vec<TopLogprob> = tops
                .and_then(|t| t.get(i))
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(tok, lp)| TopLogprob {
                    token: tok.clone(),
                    bytes: tok.as_bytes().to_vec(),
                    logprob: lp.as_f64().unwrap_or(f64::NEG_INFINITY) as f32,
                })
                .collect();
            top.sort_by(|a, b| b.logprob.total_cmp(&a.logprob));
            TokenLogprob {
                bytes: token.as_bytes().to_vec(),
                logprob: logprobs.and_then(|l| l.get(i)).and_then(Value::as_f64).map(|l| l as f32),
                top,
                token,
            }
        })
        .collect()
}

/// An event longer than this is not a chat chunk: the upstream is broken (and memory is
/// not spent on it).
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Splits an SSE byte stream into events' `data` (joined over `data:` lines), as bytes
/// arrive in arbitrary pieces.
#[derive(Default)]
pub struct SseReader {
    buffer: Vec<u8>,
}

impl SseReader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete event's data; `Err` when it is not UTF-8 or too long.
    pub fn next_event(&mut self) -> Option<Result<String, String>> {
        loop {
            let Some(end) = find_blank_line(&self.buffer) else {
                if self.buffer.len() > MAX_EVENT_BYTES {
                    self.buffer.clear();
                    return Some(Err(format!("malformed event from the upstream (over {MAX_EVENT_BYTES} bytes)")));
                }
                return None;
            };
            let (event, sep) = end;
            let raw: Vec<u8> = self.buffer.drain(..event + sep).take(event).collect();
            let Ok(text) = String::from_utf8(raw) else {
                return Some(Err("malformed event from the upstream (not UTF-8)".into()));
            };
            let data: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            // Comments (`: keep-alive`) and events without data are skipped.
            if !data.is_empty() {
                return Some(Ok(data.join("\n")));
            }
        }
    }

    /// Bytes left over after the stream ended (a truncated event).
    pub fn has_partial(&self) -> bool {
        self.buffer.iter().any(|b| !b.is_ascii_whitespace())
    }
}

/// Where the first blank line (event end) starts, and its length.
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    (0..buf.len()).find_map(|i| {
        let rest = &buf[i..];
        if rest.starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else if rest.starts_with(b"\n\n") || rest.starts_with(b"\r\r") {
            Some((i, 2))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_however_the_bytes_arrive() {
        let stream = b": ping\n\ndata: {\"a\":1}\r\n\r\ndata: x\ndata: y\n\ndata: [DONE]\n\n";
        for piece in [1, 3, 7, stream.len()] {
            let mut reader = SseReader::default();
            let mut events = Vec::new();
            for chunk in stream.chunks(piece) {
                reader.push(chunk);
                while let Some(e) = reader.next_event() {
                    events.push(e.unwrap());
                }
            }
            assert_eq!(events, vec!["{\"a\":1}", "x\ny", "[DONE]"]);
            assert!(!reader.has_partial());
        }
    }

    #[test]
    fn an_endless_event_is_an_error_not_a_growing_buffer() {
        let mut reader = SseReader::default();
        reader.push(b"data: ");
        reader.push(&vec![b'x'; MAX_EVENT_BYTES]);
        assert!(matches!(reader.next_event(), Some(Err(e)) if e.contains("over")));
        assert!(!reader.has_partial());
    }

    #[test]
    fn chat_and_completion_chunks_are_read() {
        let chat = r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#;
        assert_eq!(parse_event(chat).unwrap(), vec![delta(0, "Hi", None)]);
        let text = r#"{"choices":[{"index":0,"text":"","finish_reason":"length"}],"usage":{"prompt_tokens":7,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":5}}}"#;
        assert_eq!(
            parse_event(text).unwrap(),
            vec![
                delta(0, "", Some(FinishReason::Length)),
                Chunk::Usage(TokenUsage { prompt_tokens: 7, cached_tokens: 5, completion_tokens: 3 }),
            ]
        );
        let usage_only = r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}"#;
        assert_eq!(
            parse_event(usage_only).unwrap(),
            vec![Chunk::Usage(TokenUsage { prompt_tokens: 7, cached_tokens: 0, completion_tokens: 3 })]
        );
        assert_eq!(parse_event(r#"{"error":{"message":"boom"}}"#).unwrap(), vec![Chunk::Error("boom".into())]);
        assert!(parse_event("{not json").is_err());
        assert!(parse_event(r#"{"id":"x"}"#).is_err());
        assert_eq!(parse_event(" [DONE]").unwrap(), vec![Chunk::Done]);
    }

    fn delta(choice: u32, text: &str, finish: Option<FinishReason>) -> Chunk {
        Chunk::Delta { choice, text: text.into(), logprobs: Vec::new(), tool_calls: Vec::new(), finish }
    }

    #[test]
    fn choices_tool_calls_and_logprobs_are_read() {
        let event = r#"{"choices":[
            {"index":1,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"f","arguments":""}}]},"finish_reason":null},
            {"index":0,"delta":{"content":"x"},"logprobs":{"content":[{"token":"x","logprob":-0.5,"bytes":[120],"top_logprobs":[{"token":"x","logprob":-0.5,"bytes":[120]}]}]},"finish_reason":"stop"}
        ]}"#;
        let chunks = parse_event(event).unwrap();
        let Chunk::Delta { choice: 1, tool_calls, .. } = &chunks[0] else { panic!("{chunks:?}") };
        assert_eq!(
            tool_calls[0],
            CallDelta { index: 0, id: Some("call_a".into()), name: Some("f".into()), arguments: String::new() }
        );
        let Chunk::Delta { choice: 0, logprobs, finish, .. } = &chunks[1] else { panic!("{chunks:?}") };
        assert_eq!((logprobs[0].logprob, logprobs[0].top.len(), *finish), (Some(-0.5), 1, Some(FinishReason::Stop)));
        let legacy = r#"{"choices":[{"index":0,"text":"ab","logprobs":{"tokens":["a","b"],"token_logprobs":[-1.0,-2.0],"top_logprobs":[{"a":-1.0,"c":-3.0},{"b":-2.0}],"text_offset":[0,1]},"finish_reason":"tool_calls"}]}"#;
        let Chunk::Delta { logprobs, finish, .. } = &parse_event(legacy).unwrap()[0] else { panic!() };
        assert_eq!(logprobs.iter().map(|l| l.logprob).collect::<Vec<_>>(), vec![Some(-1.0), Some(-2.0)]);
        assert_eq!((logprobs[0].top[1].token.as_str(), *finish), ("c", Some(FinishReason::ToolCalls)));
    }

    #[test]
    fn the_body_is_streamed_with_usage_and_only_non_default_extensions() {
        let request = GenerateRequest {
            model: "m".into(),
            prompt: PromptInput::Text("hello".into()),
            sampling: SamplingParams { temperature: 0.0, top_k: 40, ..SamplingParams::default() },
            max_tokens: Some(16),
            stop: vec!["\n".into()],
            request_id: "r".into(),
            output: Default::default(),
        };
        let (path, body) = request_body(&request, "upstream-m");
        assert_eq!(path, "/v1/completions");
        assert_eq!(body["model"], "upstream-m");
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["max_tokens"], 16);
        assert_eq!(body["top_k"], 40);
        assert!(body.get("min_p").is_none() && body.get("repetition_penalty").is_none());
        assert!(body.get("n").is_none() && body.get("logprobs").is_none());
    }

    #[test]
    fn choices_tools_formats_and_logprobs_are_passed_through() {
        let tools = tm_backend::Tools {
            functions: vec![tm_backend::FunctionTool {
                name: "f".into(),
                description: None,
                parameters: json!({"type": "object"}),
                field: "tools[0].function.parameters".into(),
            }],
            choice: tm_backend::ToolChoice::Required,
            parallel: false,
        };
        let request = GenerateRequest {
            model: "m".into(),
            prompt: PromptInput::Chat(vec![json!({"role": "user", "content": "hi"})]),
            sampling: SamplingParams {
                format: OutputFormat::JsonSchema {
                    name: "s".into(),
                    schema: json!({"type": "object"}),
                    field: "f".into(),
                },
                ..SamplingParams::default()
            },
            max_tokens: None,
            stop: vec![],
            request_id: "r".into(),
            output: tm_backend::OutputOptions {
                choices: 3,
                logprobs: Some(2),
                prompt_logprobs: false,
                tools: Some(tools),
            },
        };
        let (path, body) = request_body(&request, "m");
        assert_eq!(path, "/v1/chat/completions");
        assert_eq!(
            (body["n"].clone(), body["logprobs"].clone(), body["top_logprobs"].clone()),
            (json!(3), json!(true), json!(2))
        );
        assert_eq!(body["tools"][0]["function"]["name"], "f");
        assert_eq!(
            (body["tool_choice"].clone(), body["parallel_tool_calls"].clone()),
            (json!("required"), json!(false))
        );
        assert_eq!(body["response_format"]["json_schema"]["schema"], json!({"type": "object"}));
    }

    #[test]
    fn the_routing_key_of_a_longer_conversation_extends_the_shorter_ones() {
        let turn = |n: usize| {
            let messages = (0..n).map(|i| json!({"role": "user", "content": format!("message {i}")})).collect();
            routing_key(&PromptInput::Chat(messages))
        };
        assert!(turn(3).starts_with(&turn(2)));
    }
}
