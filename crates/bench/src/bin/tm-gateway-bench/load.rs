//! The load generator: one request, closed loop (most requests per second at a fixed
//! concurrency), open loop (latency at a fixed rate, from each request's due time).

use std::time::{Duration, Instant};

use anyhow::Result;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::KEY;

fn body(model: &str) -> Value {
    json!({"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]})
}

async fn one(http: &reqwest::Client, url: &str, model: &str) -> Result<bool> {
    let r = http.post(format!("{url}/v1/chat/completions")).bearer_auth(KEY).json(&body(model)).send().await?;
    let ok = r.status() == 200;
    r.bytes().await?;
    Ok(ok)
}

/// Requests per second with `concurrency` clients each sending back to back, spread over
/// `urls` in turn (replicas behind a round-robin balancer).
pub async fn closed_loop(
    http: &reqwest::Client,
    urls: &[String],
    model: &str,
    concurrency: usize,
    requests: usize,
) -> Result<f64> {
    let started = Instant::now();
    let results: Vec<Result<bool>> = futures::stream::iter(0..requests)
        .map(|i| one(http, &urls[i % urls.len()], model))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let failed = results.iter().filter(|r| !matches!(r, Ok(true))).count();
    anyhow::ensure!(failed == 0, "{failed} of {requests} requests to {urls:?} failed");
    Ok(requests as f64 / started.elapsed().as_secs_f64())
}

pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub errors: usize,
}

impl Latency {
    pub fn mean(runs: &[Latency]) -> Latency {
        let n = runs.len() as f64;
        Latency {
            p50: runs.iter().map(|r| r.p50).sum::<f64>() / n,
            p99: runs.iter().map(|r| r.p99).sum::<f64>() / n,
            errors: runs.iter().map(|r| r.errors).sum(),
        }
    }
}

/// Latencies (ms) of `rate` requests per second for `seconds`, each measured from when it
/// was due, spread over `urls` in turn.
pub async fn open_loop(
    http: &reqwest::Client,
    urls: &[String],
    model: &str,
    rate: u64,
    seconds: u64,
) -> Result<Latency> {
    let total = rate * seconds;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut latencies = Vec::with_capacity(total as usize);
    let mut errors = 0;
    let mut sent = 0;
    while sent < total || !in_flight.is_empty() {
        let due = start + period * sent as u32;
        tokio::select! {
            () = tokio::time::sleep_until(due.into()), if sent < total => {
                let url = &urls[sent as usize % urls.len()];
                sent += 1;
                in_flight.push(async move { (due, one(http, url, model).await) });
            }
            Some((due, result)) = in_flight.next() => {
                latencies.push(due.elapsed().as_secs_f64() * 1000.0);
                if !matches!(result, Ok(true)) {
                    errors += 1;
                }
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    Ok(Latency { p50: at(0.50), p99: at(0.99), errors })
}
