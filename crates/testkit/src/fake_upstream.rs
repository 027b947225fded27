//! A fault-injectable OpenAI-compatible engine on loopback, standing in for a vLLM /
//! SGLang / llama-server replica in upstream tests and benchmarks (it is a mock: it
//! computes nothing).
//!
//! Its tokenizer is whitespace: a prompt's tokens are its words (a chat's: the words of
//! every message's content), and a completion of `n` tokens is `w0 w1 ... w{n-1}`, one
//! word per SSE event. Cached tokens are the words a prompt shares, from its start, with
//! the longest earlier prompt it saw, like an engine's prefix cache. `/tokenize` counts
//! the same way, so usage the gateway counts itself matches what the engine reports.
//! Requests without `"stream": true` get the whole answer as one JSON body.
//!
//! It honours `n` (choices interleaved in the stream, usage counting each), `logprobs`
//! (chat's and completions' shapes, every word at -0.5), and tools: with `tool_choice`
//! `required` or a named function, each choice is one call of that (or the first)
//! function whose arguments are `{"words": N}`, streamed in three pieces.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// What the next requests suffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    None,
    /// This status and an OpenAI error body, before any byte of a stream.
    Status(u16),
    /// Headers only after this long.
    SlowFirstByte(Duration),
    /// The connection is cut after this many text events.
    ResetAfter(usize),
    /// Nothing more is sent after this many text events (until the client leaves).
    StallAfter(usize),
    /// An event that is not JSON after this many text events.
    MalformedAfter(usize),
    /// A complete stream without the usage event.
    NoUsage,
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub request_id: Option<String>,
    pub authorization: Option<String>,
    pub body: Value,
}

struct Shared {
    fault: Mutex<(Fault, u64)>,
    words: AtomicUsize,
    word_delay_ms: AtomicU64,
    healthy: AtomicBool,
    seen: Mutex<Vec<Seen>>,
    prompts: Mutex<Vec<Vec<String>>>,
    streams_started: AtomicUsize,
    streams_abandoned: AtomicUsize,
    max_context: u64,
    /// `/tokenize` and `/detokenize` speak llama-server's shapes instead of vLLM's.
    llama_server_api: AtomicBool,
}

pub struct FakeUpstream {
    pub url: String,
    shared: Arc<Shared>,
    _stop: oneshot::Sender<()>,
}

pub const FAKE_UPSTREAM_MODEL: &str = "fake-upstream-model";

impl FakeUpstream {
    /// Starts one on 127.0.0.1 (port chosen by the OS), answering `words` tokens per
    /// request, on the current tokio runtime.
    pub async fn start(words: usize) -> FakeUpstream {
        let shared = Arc::new(Shared {
            fault: Mutex::new((Fault::None, 0)),
            words: AtomicUsize::new(words),
            word_delay_ms: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            seen: Mutex::default(),
            prompts: Mutex::default(),
            streams_started: AtomicUsize::new(0),
            streams_abandoned: AtomicUsize::new(0),
            max_context: 8192,
            llama_server_api: AtomicBool::new(false),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(generate))
            .route("/v1/completions", post(generate))
            .route("/tokenize", post(tokenize))
            .route("/detokenize", post(detokenize))
            .route("/apply-template", post(apply_template))
            .route("/health", get(health))
            .route("/v1/models", get(models))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr: SocketAddr = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        #[allow(clippy::disallowed_methods)] // test furniture: lives as long as the FakeUpstream
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        FakeUpstream { url: format!("http://{addr}"), shared, _stop: stop }
    }

    /// A loopback URL where nothing listens (connections are refused).
    pub async fn refusing_url() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        drop(listener);
        format!("http://{addr}")
    }

    /// `fault` for the next `times` generation requests (`u64::MAX`: until changed).
    pub fn set_fault(&self, fault: Fault, times: u64) {
        *self.shared.fault.lock().expect("fault lock") = (fault, times);
    }

    pub fn set_words(&self, words: usize) {
        self.shared.words.store(words, Ordering::SeqCst);
    }

    /// Delay between two text events.
    pub fn set_word_delay(&self, delay: Duration) {
        self.shared.word_delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// llama-server's `/tokenize` (`content` only, `{"id", "piece"}` tokens), its
    /// `/apply-template`, and `/detokenize` answering `content`.
    pub fn set_llama_server_api(&self, on: bool) {
        self.shared.llama_server_api.store(on, Ordering::SeqCst);
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.shared.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Generation requests received (tokenize and health calls excluded).
    pub fn generations(&self) -> Vec<Seen> {
        self.shared.seen.lock().expect("seen lock").iter().filter(|s| s.path.starts_with("/v1/")).cloned().collect()
    }

    pub fn tokenize_calls(&self) -> usize {
        self.shared.seen.lock().expect("seen lock").iter().filter(|s| s.path == "/tokenize").count()
    }

    /// Streams whose client left (or was cut off by the gateway) before their end.
    pub fn streams_abandoned(&self) -> usize {
        self.shared.streams_abandoned.load(Ordering::SeqCst)
    }

    pub fn streams_started(&self) -> usize {
        self.shared.streams_started.load(Ordering::SeqCst)
    }
}

/// The whitespace tokenizer's view of a request's prompt.
fn prompt_words(body: &Value) -> Vec<String> {
    let text = match body.get("messages").and_then(Value::as_array) {
        Some(messages) => messages.iter().filter_map(|m| m["content"].as_str()).collect::<Vec<_>>().join(" "),
        None => body["prompt"].as_str().unwrap_or_default().to_owned(),
    };
    text.split_whitespace().map(str::to_owned).collect()
}

fn record(shared: &Shared, path: &str, headers: &HeaderMap, body: &Value) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    shared.seen.lock().expect("seen lock").push(Seen {
        path: path.into(),
        request_id: header("x-request-id"),
        authorization: header("authorization"),
        body: body.clone(),
    });
}

fn take_fault(shared: &Shared) -> Fault {
    let mut f = shared.fault.lock().expect("fault lock");
    if f.1 == 0 {
        return Fault::None;
    }
    f.1 = f.1.saturating_sub(u64::from(f.1 != u64::MAX));
    f.0.clone()
}

/// Counts a stream as abandoned when it is dropped before its last event.
struct StreamGuard {
    shared: Arc<Shared>,
    finished: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.streams_abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn generate(
    State(shared): State<Arc<Shared>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let chat = uri.path().contains("chat");
    record(&shared, uri.path(), &headers, &body);
    let fault = take_fault(&shared);
    match fault {
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let error =
                json!({"error": {"message": format!("injected {code}"), "type": "server_error", "param": "messages"}});
            return (status, Json(error)).into_response();
        }
        Fault::SlowFirstByte(d) => tokio::time::sleep(d).await,
        _ => {}
    }
    let prompt = prompt_words(&body);
    let cached = {
        let mut prompts = shared.prompts.lock().expect("prompts lock");
        let shared_words = |p: &Vec<String>| p.iter().zip(&prompt).take_while(|(a, b)| a == b).count();
        let cached = prompts.iter().map(shared_words).max().unwrap_or(0).min(prompt.len().saturating_sub(1));
        prompts.push(prompt.clone());
        cached
    };
    let max_tokens = body["max_tokens"].as_u64().map_or(usize::MAX, |n| n as usize);
    let words = shared.words.load(Ordering::SeqCst).min(max_tokens);
    let choices = body["n"].as_u64().unwrap_or(1).max(1) as usize;
    let call = called_function(&body);
    let with_logprobs = body.get("logprobs").is_some_and(|l| l.as_bool() == Some(true) || l.is_u64());
    let finish = if call.is_some() {
        "tool_calls"
    } else if words == max_tokens {
        "length"
    } else {
        "stop"
    };
    let include_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false)
        && fault != Fault::NoUsage;
    let completion = words * choices;
    let usage = json!({"prompt_tokens": prompt.len(), "completion_tokens": completion,
        "total_tokens": prompt.len() + completion, "prompt_tokens_details": {"cached_tokens": cached}});
    let delay = Duration::from_millis(shared.word_delay_ms.load(Ordering::SeqCst));
    if body["stream"] != true {
        // Not streamed: the whole answer at once (faults after the first byte do not apply).
        if !delay.is_zero() {
            tokio::time::sleep(delay * words as u32).await;
        }
        let text: String = (0..words).map(|i| format!("w{i} ")).collect();
        let choice = |index: usize| match (&call, chat) {
            (Some(name), _) => json!({"index": index, "finish_reason": finish, "message": {"role": "assistant",
                "content": null, "tool_calls": [{"id": format!("call_fake{index}"), "type": "function",
                "function": {"name": name, "arguments": format!("{{\"words\": {words}}}")}}]}}),
            (None, true) => {
                json!({"index": index, "message": {"role": "assistant", "content": text}, "finish_reason": finish})
            }
            (None, false) => json!({"index": index, "text": text, "finish_reason": finish}),
        };
        let object = if chat { "chat.completion" } else { "text_completion" };
        return Json(json!({"id": "fake", "object": object, "created": 0, "model": body["model"],
                           "choices": (0..choices).map(choice).collect::<Vec<_>>(), "usage": usage}))
        .into_response();
    }
    shared.streams_started.fetch_add(1, Ordering::SeqCst);
    let guard = StreamGuard { shared: shared.clone(), finished: false };
    let chunk = move |index: usize, text: Option<String>, finish: Option<&str>| {
        let logprobs = match (&text, with_logprobs, chat) {
            (Some(t), true, true) => json!({"content": [{"token": t, "logprob": -0.5, "bytes": t.as_bytes(),
                                                          "top_logprobs": [{"token": t, "logprob": -0.5, "bytes": t.as_bytes()}]}]}),
            (Some(t), true, false) => {
                json!({"tokens": [t], "token_logprobs": [-0.5], "top_logprobs": [{t.clone(): -0.5}],
                                             "text_offset": [0]})
            }
            _ => Value::Null,
        };
        let choice = if chat {
            json!({"index": index, "delta": {"content": text.unwrap_or_default()}, "finish_reason": finish, "logprobs": logprobs})
        } else {
            json!({"index": index, "text": text.unwrap_or_default(), "finish_reason": finish, "logprobs": logprobs})
        };
        format!("data: {}\n\n", json!({"id": "fake", "object": "chunk", "model": "fake", "choices": [choice]}))
    };
    // A tool call: its head, then its arguments in three pieces.
    let call_chunks = move |index: usize, name: &str| -> Vec<String> {
        let delta = |call: Value| {
            let choice = json!({"index": index, "delta": {"tool_calls": [call]}, "finish_reason": null});
            format!("data: {}\n\n", json!({"id": "fake", "object": "chunk", "model": "fake", "choices": [choice]}))
        };
        let mut out = vec![delta(json!({"index": 0, "id": format!("call_fake{index}"), "type": "function",
                                        "function": {"name": name, "arguments": ""}}))];
        for piece in ["{\"words\": ".to_owned(), words.to_string(), "}".to_owned()] {
            out.push(delta(json!({"index": 0, "function": {"arguments": piece}})));
        }
        out
    };
    let stream = async_stream::stream! {
        // Owned by the stream, so that it drops with the response body.
        let mut guard = guard;
        if chat {
            for c in 0..choices {
                yield Ok::<_, std::io::Error>(format!("data: {}\n\n", json!({"id": "fake", "choices": [{"index": c, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]})));
            }
        }
        if let Some(name) = &call {
            for c in 0..choices {
                for piece in call_chunks(c, name) {
                    yield Ok(piece);
                }
            }
        }
        for i in 0..words {
            if call.is_some() {
                break;
            }
            match &fault {
                Fault::ResetAfter(k) if i == *k => {
                    // Let what was sent leave first (hyper flushes when the body waits).
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    yield Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected reset"));
                    return;
                }
                Fault::StallAfter(k) if i == *k => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                Fault::MalformedAfter(k) if i == *k => {
                    yield Ok("data: {not json\n\n".to_owned());
                    return;
                }
                _ => {}
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            for c in 0..choices {
                yield Ok(chunk(c, Some(format!("w{i} ")), None));
            }
        }
        for c in 0..choices {
            yield Ok(chunk(c, None, Some(finish)));
        }
        if include_usage {
            yield Ok(format!("data: {}\n\n", json!({"id": "fake", "choices": [], "usage": usage})));
        }
        yield Ok("data: [DONE]\n\n".to_owned());
        guard.finished = true;
    };
    let body = Body::from_stream(stream.map(|r| r.map(bytes::Bytes::from)));
    ([("content-type", "text/event-stream")], body).into_response()
}

/// The function a request makes every choice call: the named one, or the first declared
/// under `required`.
fn called_function(body: &Value) -> Option<String> {
    let first = body.pointer("/tools/0/function/name").and_then(Value::as_str).map(str::to_owned);
    match &body["tool_choice"] {
        Value::String(mode) if mode == "required" => first,
        named @ Value::Object(_) => named.pointer("/function/name").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

async fn tokenize(State(shared): State<Arc<Shared>>, headers: HeaderMap, Json(body): Json<Value>) -> Json<Value> {
    record(&shared, "/tokenize", &headers, &body);
    if shared.llama_server_api.load(Ordering::SeqCst) {
        let words: Vec<String> =
            body["content"].as_str().unwrap_or_default().split_whitespace().map(str::to_owned).collect();
        let tokens: Vec<Value> = words.iter().enumerate().map(|(i, w)| json!({"id": i, "piece": w})).collect();
        return Json(json!({"tokens": tokens}));
    }
    let words = prompt_words(&body);
    let tokens: Vec<usize> = (0..words.len()).collect();
    Json(json!({"count": words.len(), "tokens": tokens, "token_strs": words, "max_model_len": shared.max_context}))
}

async fn detokenize(State(shared): State<Arc<Shared>>, headers: HeaderMap, Json(body): Json<Value>) -> Json<Value> {
    record(&shared, "/detokenize", &headers, &body);
    let n = body["tokens"].as_array().map_or(0, Vec::len);
    let text = (0..n).map(|i| format!("t{i}")).collect::<Vec<_>>().join(" ");
    let key = if shared.llama_server_api.load(Ordering::SeqCst) { "content" } else { "prompt" };
    Json(json!({ key: text }))
}

/// llama-server's: the chat rendered as one prompt (here: the contents, space-separated).
async fn apply_template(State(shared): State<Arc<Shared>>, headers: HeaderMap, Json(body): Json<Value>) -> Json<Value> {
    record(&shared, "/apply-template", &headers, &body);
    Json(json!({"prompt": prompt_words(&body).join(" ")}))
}

async fn health(State(shared): State<Arc<Shared>>) -> StatusCode {
    if shared.healthy.load(Ordering::SeqCst) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn models(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": FAKE_UPSTREAM_MODEL, "object": "model", "max_model_len": shared.max_context}]}),
    )
}
