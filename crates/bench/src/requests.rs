//! The requests both servers get: `/v1/completions`, greedy, plain or streamed and timed.
//! Prompts are text the bench renders itself (ChatML for chat turns), so that both servers
//! see the same tokens whatever their chat template handling.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::servers::{Server, KEY};

/// A fresh connection per request: llama-server closes idle keep-alive connections, and
/// reusing one it has closed fails the request.
pub fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(Duration::from_secs(900)).pool_max_idle_per_host(0).build()?)
}

pub async fn completion(client: &reqwest::Client, server: &Server, prompt: &str, max_tokens: u32) -> Result<Value> {
    let body = json!({"model": server.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true});
    let r = client.post(format!("{}/v1/completions", server.base)).bearer_auth(KEY).json(&body).send().await?;
    if !r.status().is_success() {
        bail!("{}: {}", r.status(), r.text().await?);
    }
    Ok(r.json().await?)
}

/// One streamed completion, timed.
#[derive(Debug, Clone)]
pub struct Stream {
    pub ttft: Duration,
    /// From the first to the last content chunk.
    pub decode: Duration,
    pub tokens: u64,
    pub text: String,
    /// Prompt tokens our server served from its cache (llama-server: its `tokens_cached`).
    pub cached: Option<u64>,
    pub prompt_tokens: Option<u64>,
}

impl Stream {
    pub fn decode_tps(&self) -> f64 {
        (self.tokens.saturating_sub(1)) as f64 / self.decode.as_secs_f64()
    }

    pub fn ttft_ms(&self) -> f64 {
        self.ttft.as_secs_f64() * 1000.0
    }
}

pub async fn stream_completion(
    client: &reqwest::Client,
    server: &Server,
    prompt: &str,
    max_tokens: u32,
) -> Result<Stream> {
    let body = json!({
        "model": server.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
        "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true},
    });
    stream(client, server, "/v1/completions", body).await
}

/// A streamed request to `path` (completions or chat), timed: text is a completion's
/// `text`, a chat delta's `content`, or a streamed tool call's arguments.
pub async fn stream(client: &reqwest::Client, server: &Server, path: &str, body: Value) -> Result<Stream> {
    let started = Instant::now();
    let r = client.post(format!("{}{path}", server.base)).bearer_auth(KEY).json(&body).send().await?;
    if !r.status().is_success() {
        bail!("{}: {}", r.status(), r.text().await?);
    }
    let (mut first, mut last, mut chunks) = (None, started, 0u64);
    let mut out = Stream {
        ttft: Duration::ZERO,
        decode: Duration::ZERO,
        tokens: 0,
        text: String::new(),
        cached: None,
        prompt_tokens: None,
    };
    let mut usage_tokens = None;
    for_each_event(r, |v| {
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            usage_tokens = Some(n);
            out.prompt_tokens = v["usage"]["prompt_tokens"].as_u64();
            out.cached = v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64();
        }
        if let Some(n) = v["timings"]["cache_n"].as_u64() {
            out.cached = Some(n);
        }
        let choice = &v["choices"][0];
        let piece = choice["text"]
            .as_str()
            .or_else(|| choice["delta"]["content"].as_str())
            .or_else(|| choice["delta"]["tool_calls"][0]["function"]["arguments"].as_str());
        if let Some(t) = piece.filter(|t| !t.is_empty()) {
            let now = Instant::now();
            first.get_or_insert(now);
            last = now;
            chunks += 1;
            out.text.push_str(t);
        }
    })
    .await?;
    let first = first.context("the stream carried no text")?;
    out.ttft = first - started;
    out.decode = last - first;
    out.tokens = usage_tokens.unwrap_or(chunks);
    Ok(out)
}

pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A ChatML conversation as one prompt (Qwen's template, without the default system
/// prompt, so that both servers see the same text).
pub fn chatml(system: &str, turns: &[(String, Option<String>)]) -> String {
    let mut out = format!("<|im_start|>system\n{system}<|im_end|>\n");
    for (user, assistant) in turns {
        out.push_str(&format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"));
        if let Some(a) = assistant {
            out.push_str(&format!("{a}<|im_end|>\n"));
        }
    }
    out
}

/// Calls `on` with each event's JSON data of a server-sent event stream, as it arrives
/// (`[DONE]` and events without data skipped).
pub async fn for_each_event(r: reqwest::Response, mut on: impl FnMut(&Value)) -> Result<()> {
    let mut body = r.bytes_stream();
    let mut buf = String::new();
    while let Some(bytes) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&bytes?));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")).filter(|d| *d != "[DONE]") else {
                continue;
            };
            on(&serde_json::from_str(data).with_context(|| format!("bad SSE data {data}"))?);
        }
    }
    Ok(())
}
