//! The load itself: bounded request counts, loopback only, the same requests for both.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::servers::{Server, KEY};
use crate::Args;

#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub prompt_tps: f64,
    pub decode_tps_1: f64,
    pub aggregate_tps_4: f64,
    pub ttft_p50_4: f64,
    pub ttft_p99_4: f64,
    pub aggregate_tps_8: f64,
    pub ttft_p50_8: f64,
    pub ttft_p99_8: f64,
    pub rss_mb: f64,
}

impl Figures {
    /// (name, value, higher is better)
    pub fn rows(&self) -> Vec<(&'static str, f64, bool)> {
        vec![
            ("prompt tok/s (~500-token prompt)", self.prompt_tps, true),
            ("decode tok/s, 1 stream", self.decode_tps_1, true),
            ("aggregate decode tok/s, 4 streams", self.aggregate_tps_4, true),
            ("TTFT p50 ms, 4 streams", self.ttft_p50_4, false),
            ("TTFT p99 ms, 4 streams", self.ttft_p99_4, false),
            ("aggregate decode tok/s, 8 streams", self.aggregate_tps_8, true),
            ("TTFT p50 ms, 8 streams", self.ttft_p50_8, false),
            ("TTFT p99 ms, 8 streams", self.ttft_p99_8, false),
            ("peak RSS MB", self.rss_mb, false),
        ]
    }
}

/// Filler that tokenizes to roughly 10 tokens per repetition on Qwen.
const FILLER: &str = "fn add(a: i32, b: i32) -> i32 { a + b } ";

/// A prompt no earlier request shares a prefix with, so neither server's prompt cache
/// can skip work that the other has to do.
fn unique_prompt(repeats: usize) -> String {
    format!("// request {}\n{}", uuid::Uuid::new_v4().simple(), FILLER.repeat(repeats))
}

pub async fn run_all(server: &Server, args: &Args) -> Result<Figures> {
    // A fresh connection per request: llama-server closes idle keep-alive connections, and
    // reusing one it has closed fails the request.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(600)).pool_max_idle_per_host(0).build()?;
    // Warm-up: first-touch of weights and buffers.
    stream_completion(&client, server, &unique_prompt(5), 8).await?;

    let mut prompt_rates = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let v = completion(&client, server, &unique_prompt(21), 1).await?;
        let n = v["usage"]["prompt_tokens"].as_f64().context("usage.prompt_tokens")?;
        prompt_rates.push(n / started.elapsed().as_secs_f64());
    }
    let mut f = Figures { prompt_tps: median(&mut prompt_rates), ..Figures::default() };
    println!("prompt: {:.1} tok/s (runs {prompt_rates:.1?})", f.prompt_tps);

    let mut decode_rates = Vec::new();
    for _ in 0..2 {
        let s = stream_completion(&client, server, &unique_prompt(3), 128).await?;
        decode_rates.push(s.decode_tps());
    }
    f.decode_tps_1 = median(&mut decode_rates);
    println!("decode, 1 stream: {:.1} tok/s", f.decode_tps_1);

    for concurrency in [4usize, 8] {
        let started = Instant::now();
        let workers = (0..concurrency).map(|_| {
            let client = client.clone();
            async move {
                let mut runs = Vec::new();
                for _ in 0..args.rounds {
                    runs.push(stream_completion(&client, server, &unique_prompt(3), args.gen_tokens).await?);
                }
                Ok::<_, anyhow::Error>(runs)
            }
        });
        let runs: Vec<Stream> = futures::future::try_join_all(workers).await?.into_iter().flatten().collect();
        let wall = started.elapsed().as_secs_f64();
        let tokens: u64 = runs.iter().map(|r| r.tokens).sum();
        let mut ttfts: Vec<f64> = runs.iter().map(|r| r.ttft.as_secs_f64() * 1000.0).collect();
        ttfts.sort_by(f64::total_cmp);
        let (agg, p50, p99) = (tokens as f64 / wall, percentile(&ttfts, 50.0), percentile(&ttfts, 99.0));
        println!(
            "{concurrency} streams: {agg:.1} tok/s aggregate, TTFT p50 {p50:.0} ms p99 {p99:.0} ms ({} requests)",
            runs.len()
        );
        if concurrency == 4 {
            (f.aggregate_tps_4, f.ttft_p50_4, f.ttft_p99_4) = (agg, p50, p99);
        } else {
            (f.aggregate_tps_8, f.ttft_p50_8, f.ttft_p99_8) = (agg, p50, p99);
        }
    }
    f.rss_mb = server.peak_rss_mb();
    Ok(f)
}

async fn completion(client: &reqwest::Client, server: &Server, prompt: &str, max_tokens: u32) -> Result<Value> {
    let body = json!({"model": server.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true});
    let r = client.post(format!("{}/v1/completions", server.base)).bearer_auth(KEY).json(&body).send().await?;
    if !r.status().is_success() {
        bail!("{}: {}", r.status(), r.text().await?);
    }
    Ok(r.json().await?)
}

/// One streamed completion, timed.
struct Stream {
    ttft: Duration,
    /// From the first to the last content chunk.
    decode: Duration,
    tokens: u64,
}

impl Stream {
    fn decode_tps(&self) -> f64 {
        (self.tokens.saturating_sub(1)) as f64 / self.decode.as_secs_f64()
    }
}

async fn stream_completion(client: &reqwest::Client, server: &Server, prompt: &str, max_tokens: u32) -> Result<Stream> {
    let body = json!({
        "model": server.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
        "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true},
    });
    let started = Instant::now();
    let r = client.post(format!("{}/v1/completions", server.base)).bearer_auth(KEY).json(&body).send().await?;
    if !r.status().is_success() {
        bail!("{}: {}", r.status(), r.text().await?);
    }
    let (mut first, mut last, mut usage_tokens, mut chunks) = (None, started, None, 0u64);
    let mut body = r.bytes_stream();
    let mut buf = String::new();
    while let Some(bytes) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&bytes?));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else { continue };
            if data == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(data).with_context(|| format!("bad SSE data {data}"))?;
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                usage_tokens = Some(n);
            }
            if v["choices"][0]["text"].as_str().is_some_and(|t| !t.is_empty()) {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
                chunks += 1;
            }
        }
    }
    let first = first.context("the stream carried no text")?;
    Ok(Stream { ttft: first - started, decode: last - first, tokens: usage_tokens.unwrap_or(chunks) })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
