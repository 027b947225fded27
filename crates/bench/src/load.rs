//! The speed suite: bounded request counts, loopback only, the same requests for both.

use std::time::Instant;

use anyhow::{Context, Result};

use crate::requests::{client, completion, median, percentile, stream_completion, Stream};
use crate::servers::Server;
use crate::Row;

/// Filler of about 24 Qwen tokens per repetition.
pub const FILLER: &str = "fn add(a: i32, b: i32) -> i32 { a + b } ";

/// A prompt no earlier request shares a prefix with, so neither server's prompt cache
/// can skip work that the other has to do.
pub fn unique_prompt(repeats: usize) -> String {
    format!("// request {}\n{}", uuid::Uuid::new_v4().simple(), FILLER.repeat(repeats))
}

pub async fn run(server: &Server, rounds: usize, gen_tokens: u32) -> Result<Vec<Row>> {
    let client = client()?;
    // Warm-up: first-touch of weights and buffers.
    stream_completion(&client, server, &unique_prompt(5), 8).await?;

    let mut prompt_rates = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let v = completion(&client, server, &unique_prompt(21), 1).await?;
        let n = v["usage"]["prompt_tokens"].as_f64().context("usage.prompt_tokens")?;
        prompt_rates.push(n / started.elapsed().as_secs_f64());
    }
    let prompt_tps = median(&mut prompt_rates);
    println!("prompt: {prompt_tps:.1} tok/s (runs {prompt_rates:.1?})");

    let mut decode_rates = Vec::new();
    for _ in 0..2 {
        let s = stream_completion(&client, server, &unique_prompt(3), 128).await?;
        decode_rates.push(s.decode_tps());
    }
    let decode_tps = median(&mut decode_rates);
    println!("decode, 1 stream: {decode_tps:.1} tok/s");
    let mut rows = vec![
        Row::higher("prompt tok/s (~500-token prompt)", prompt_tps),
        Row::higher("decode tok/s, 1 stream", decode_tps),
    ];

    for concurrency in [4usize, 8] {
        let started = Instant::now();
        let workers = (0..concurrency).map(|_| {
            let client = client.clone();
            async move {
                let mut runs = Vec::new();
                for _ in 0..rounds {
                    runs.push(stream_completion(&client, server, &unique_prompt(3), gen_tokens).await?);
                }
                Ok::<_, anyhow::Error>(runs)
            }
        });
        let runs: Vec<Stream> = futures::future::try_join_all(workers).await?.into_iter().flatten().collect();
        let wall = started.elapsed().as_secs_f64();
        let tokens: u64 = runs.iter().map(|r| r.tokens).sum();
        let mut ttfts: Vec<f64> = runs.iter().map(Stream::ttft_ms).collect();
        ttfts.sort_by(f64::total_cmp);
        let (agg, p50, p99) = (tokens as f64 / wall, percentile(&ttfts, 50.0), percentile(&ttfts, 99.0));
        println!(
            "{concurrency} streams: {agg:.1} tok/s aggregate, TTFT p50 {p50:.0} ms p99 {p99:.0} ms ({} requests)",
            runs.len()
        );
        rows.push(Row::higher(
            if concurrency == 4 { "aggregate tok/s, 4 streams" } else { "aggregate tok/s, 8 streams" },
            agg,
        ));
        rows.push(Row::lower(if concurrency == 4 { "TTFT p50 ms, 4 streams" } else { "TTFT p50 ms, 8 streams" }, p50));
        rows.push(Row::lower(if concurrency == 4 { "TTFT p99 ms, 4 streams" } else { "TTFT p99 ms, 8 streams" }, p99));
    }
    rows.push(Row::lower("peak RSS MB", server.peak_rss_mb()));
    Ok(rows)
}
