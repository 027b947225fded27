//! The OpenAI wire format as the engines speak it: request bodies we send, and the SSE
//! events we read back.

use serde_json::{json, Map, Value};
use tm_backend::{FinishReason, GenerateRequest, PromptInput, SamplingParams, TokenUsage};

/// The upstream route and streaming body for `request`. Always streamed, with usage asked
/// for, whatever the client asked: the gateway needs the engine's usage to bill, and
/// retries are only possible before the first event.
pub fn request_body(request: &GenerateRequest, upstream_model: &str) -> (&'static str, Value) {
    let mut body = Map::new();
    body.insert("model".into(), upstream_model.into());
    let path = match &request.prompt {
        PromptInput::Chat(messages) => {
            body.insert("messages".into(), Value::Array(messages.clone()));
            "/v1/chat/completions"
        }
        PromptInput::Text(prompt) => {
            body.insert("prompt".into(), prompt.clone().into());
            "/v1/completions"
        }
    };
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
    if s.json {
        body.insert("response_format".into(), json!({"type": "json_object"}));
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
    /// Text, and the finish reason when this chunk ends the choice.
    Delta {
        text: String,
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
    if let Some(choice) = v.get("choices").and_then(Value::as_array).and_then(|c| c.first()) {
        let text = choice
            .pointer("/delta/content")
            .or_else(|| choice.get("text"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let finish = choice.get("finish_reason").and_then(Value::as_str).map(finish_reason);
        if !text.is_empty() || finish.is_some() {
            out.push(Chunk::Delta { text, finish });
        }
    } else if v.get("choices").is_none() && v.get("usage").is_none() {
        return Err("malformed event from the upstream (no `choices`)".into());
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
        // stop, eos, tool calls, content filter: the generation ended on its own.
        _ => FinishReason::Stop,
    }
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
        assert_eq!(parse_event(chat).unwrap(), vec![Chunk::Delta { text: "Hi".into(), finish: None }]);
        let text = r#"{"choices":[{"index":0,"text":"","finish_reason":"length"}],"usage":{"prompt_tokens":7,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":5}}}"#;
        assert_eq!(
            parse_event(text).unwrap(),
            vec![
                Chunk::Delta { text: String::new(), finish: Some(FinishReason::Length) },
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

    #[test]
    fn the_body_is_streamed_with_usage_and_only_non_default_extensions() {
        let request = GenerateRequest {
            model: "m".into(),
            prompt: PromptInput::Text("hello".into()),
            sampling: SamplingParams { temperature: 0.0, top_k: 40, ..SamplingParams::default() },
            max_tokens: Some(16),
            stop: vec!["\n".into()],
            request_id: "r".into(),
        };
        let (path, body) = request_body(&request, "upstream-m");
        assert_eq!(path, "/v1/completions");
        assert_eq!(body["model"], "upstream-m");
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["max_tokens"], 16);
        assert_eq!(body["top_k"], 40);
        assert!(body.get("min_p").is_none() && body.get("repetition_penalty").is_none());
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
