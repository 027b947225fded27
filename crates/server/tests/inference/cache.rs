//! The prefix cache with the real engine: greedy output with a cache hit is the output
//! without one, cached token counts are exact, a tiny KV budget still gives right answers,
//! a client that leaves frees its KV, and `/metrics` tells what happened.

use futures::StreamExt;
use serde_json::json;
use tm_server::config::Cache;

use crate::common::{client, post, post_json, start, wait_idle, Options, MODEL};

/// A shared prefix the model reads from: the continuations below copy from it, so a
/// wrong cached prefix changes them.
fn inventory() -> String {
    let words =
        "apple river stone cloud tiger lemon piano candle forest rocket silver garden window dragon pepper castle";
    let items: Vec<String> = words.split(' ').enumerate().map(|(i, w)| format!("item {} is {w}", i + 1)).collect();
    format!("Inventory list: {}. ", items.join(", "))
}

fn prompts() -> Vec<String> {
    let list = inventory();
    let mut prompts: Vec<String> = [3, 7, 11, 14].iter().map(|i| format!("{list}Again, item {i} is")).collect();
    prompts.push(format!("{list}Counting: 1, 2, 3, 4, 5, 6,"));
    prompts.push(format!("{list}The list again: item 1 is apple, item 2 is"));
    prompts
}

/// The prompts whose greedy output on the cache-off server does not depend on what else
/// is in the batch, with that output. llama.cpp's kernels round differently at different
/// batch sizes, so near-tied logits can flip whenever the batch changes, cache or not;
/// output identity with a cache hit is only meaningful where that cannot happen.
async fn schedule_stable(off: &str, prompts: &[String], max_tokens: u32) -> Vec<(String, String)> {
    let mut alone = Vec::new();
    for p in prompts {
        alone.push(complete(off, p, max_tokens).await.0);
    }
    let together = futures::future::join_all(prompts.iter().map(|p| complete(off, p, max_tokens))).await;
    let stable: Vec<(String, String)> = prompts
        .iter()
        .zip(alone)
        .zip(together)
        .filter(|((_, a), t)| *a == t.0)
        .map(|((p, a), _)| (p.clone(), a))
        .collect();
    assert!(stable.len() >= 3, "too few schedule-stable prompts ({}) to compare", stable.len());
    stable
}

fn with_cache(prefix_cache: bool, kv_cache_tokens: Option<usize>) -> Options {
    let defaults = Options::default();
    Options { cache: Cache { kv_cache_tokens, prefix_cache, ..defaults.cache.clone() }, ..defaults }
}

async fn complete(base: &str, prompt: &str, max_tokens: u32) -> (String, u64, u64) {
    let body =
        json!({"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true});
    let (status, v) = post_json(base, "/v1/completions", body).await;
    assert_eq!(status, 200, "{v}");
    let text = v["choices"][0]["text"].as_str().unwrap().to_owned();
    (
        text,
        v["usage"]["prompt_tokens"].as_u64().unwrap(),
        v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap(),
    )
}

async fn tokens(base: &str, prompt: &str) -> Vec<i64> {
    let (_, v) = post_json(base, "/tokenize", json!({"model": MODEL, "prompt": prompt})).await;
    v["tokens"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap()).collect()
}

fn common_prefix(a: &[i64], b: &[i64]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// `name{labels} value` from an OpenMetrics text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} is not in\n{text}"))
        .parse()
        .unwrap()
}

async fn metrics(base: &str) -> String {
    let r = client().get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    r.text().await.unwrap()
}

#[tokio::test]
async fn shared_prefixes_are_reused_across_requests_with_identical_output_and_exact_counts() {
    let (on, off) = (start(with_cache(true, None)), start(with_cache(false, None)));
    let stable = schedule_stable(&off, &prompts(), 12).await;
    let list_tokens = tokens(&on, &inventory()).await.len() as u64;
    let mut previous: Vec<Vec<i64>> = Vec::new();
    let mut hits = 0;
    for (prompt, cold) in &stable {
        let (text, prompt_tokens, cached) = complete(&on, prompt, 12).await;
        assert_eq!(text, *cold, "a cache hit changed the output of {prompt:?}");
        // Exactly the longest prefix shared with an earlier prompt (each earlier sequence
        // holds its prompt and answer; a new prompt diverges inside the earlier ones).
        let mine = tokens(&on, prompt).await;
        assert_eq!(mine.len() as u64, prompt_tokens);
        let expected = previous.iter().map(|p| common_prefix(p, &mine)).max().unwrap_or(0).min(mine.len() - 1);
        assert_eq!(cached, expected as u64, "{prompt}");
        if !previous.is_empty() {
            assert!(cached >= list_tokens - 1, "the shared list was not reused: {cached} of {list_tokens}");
        }
        hits += cached;
        previous.push(mine);
    }
    let text = metrics(&on).await;
    let hit_metric = format!("tensormesh_prefix_cache_hit_tokens_total{{model=\"{MODEL}\",tier=\"kv\"}}");
    assert_eq!(metric(&text, &hit_metric), hits as f64);
    for name in [
        "tensormesh_prefix_cache_hit_ratio",
        "tensormesh_kv_cache_used_cells",
        "tensormesh_kv_cache_usage_ratio",
        "tensormesh_queue_depth",
        "tensormesh_running_sequences",
        "tensormesh_inter_token_latency_seconds_count",
    ] {
        let labels = if name.ends_with("ratio") && name.contains("hit") { ",tier=\"kv\"" } else { "" };
        metric(&text, &format!("{name}{{model=\"{MODEL}\"{labels}}}"));
    }
    let ttft = metric(&text, &format!("tensormesh_time_to_first_token_seconds_count{{model=\"{MODEL}\"}}"));
    assert_eq!(ttft, stable.len() as f64);
    assert_eq!(metric(&metrics(&off).await, &hit_metric), 0.0);
}

#[tokio::test]
async fn concurrent_requests_share_a_running_prefix_with_identical_output() {
    let (on, off) = (start(with_cache(true, None)), start(with_cache(false, None)));
    let stable = schedule_stable(&off, &prompts(), 12).await;
    let warm = futures::future::join_all(stable.iter().map(|(p, _)| complete(&on, p, 12))).await;
    for ((prompt, cold), w) in stable.iter().zip(&warm) {
        assert_eq!(w.0, *cold, "{prompt}");
    }
    // Arriving together, all but one wait for the first one's computation of the list
    // instead of computing it too.
    let list_tokens = tokens(&on, &inventory()).await.len() as u64;
    let reused = warm.iter().filter(|w| w.2 >= list_tokens - 1).count();
    assert_eq!(reused, stable.len() - 1, "{warm:?}, list of {list_tokens} tokens");
}

#[tokio::test]
async fn a_tiny_kv_budget_evicts_and_stays_correct() {
    // One request's worth of cells (512) for four slots: cached prefixes are dropped all
    // the time, and requests wait for cells.
    let (tiny, off) = (start(with_cache(true, Some(512))), start(with_cache(false, None)));
    let mut all = prompts();
    // Different long prefixes that cannot all stay cached.
    all.extend((1..4).map(|i| format!("{}{}Again, item 5 is", "Filler words here. ".repeat(i * 20), inventory())));
    let stable = schedule_stable(&off, &all, 16).await;
    let warm = futures::future::join_all(stable.iter().map(|(p, _)| complete(&tiny, p, 16))).await;
    for ((prompt, cold), w) in stable.iter().zip(&warm) {
        assert_eq!(w.0, *cold, "{prompt}");
    }
    for (prompt, cold) in stable.iter().rev() {
        assert_eq!(complete(&tiny, prompt, 16).await.0, *cold, "{prompt}");
    }
    let text = metrics(&tiny).await;
    assert!(metric(&text, &format!("tensormesh_kv_cache_evicted_tokens_total{{model=\"{MODEL}\"}}")) > 0.0, "{text}");
    assert!(metric(&text, &format!("tensormesh_kv_cache_used_cells{{model=\"{MODEL}\"}}")) <= 512.0);
    // Evicted prefixes came back from host memory, with the same output as computing them.
    let ram_hits =
        metric(&text, &format!("tensormesh_prefix_cache_hit_tokens_total{{model=\"{MODEL}\",tier=\"ram\"}}"));
    assert!(ram_hits > 0.0, "{text}");
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_frees_its_kv() {
    let base = start(with_cache(true, Some(512)));
    let long =
        json!({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 400, "stream": true, "ignore_eos": true});
    let mut stream = post(&base, "/v1/completions", long).await.bytes_stream();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    wait_idle(&base).await;
    // The engine reports after the step that ended the request.
    let running = format!("tensormesh_running_sequences{{model=\"{MODEL}\"}}");
    let mut text = metrics(&base).await;
    for _ in 0..100 {
        if metric(&text, &running) == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        text = metrics(&base).await;
    }
    assert_eq!(metric(&text, &running), 0.0);
    // Its cells are only cached now: a request that needs nearly the whole budget runs.
    let used = metric(&text, &format!("tensormesh_kv_cache_used_cells{{model=\"{MODEL}\"}}"));
    assert_eq!(used, metric(&text, &format!("tensormesh_kv_cache_idle_cells{{model=\"{MODEL}\"}}")));
    let big = format!("{}{}", inventory(), "Tell me more. ".repeat(60));
    let (_, prompt_tokens, _) = complete(&base, &big, 500 - tokens(&base, &big).await.len() as u32).await;
    assert!(prompt_tokens > 150);
    wait_idle(&base).await;
}

/// The real binary on `data_dir` with the disk tier only; returns it and its base URL.
fn serve_binary(data_dir: &std::path::Path) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tensormesh"))
        .args(["serve", "--inference-addr", "127.0.0.1:0", "--control-addr", "127.0.0.1:0"])
        .args(["--model", MODEL, "--parallel", "2", "--ctx-size", "512", "--threads", "2"])
        .args(["--kv-spill-ram-mb", "0", "--kv-spill-disk-mb", "64"])
        .arg("--models-dir")
        .arg(crate::common::models_dir())
        .arg("--data-dir")
        .arg(data_dir)
        .env("TENSORMESH_ADMIN_API_KEY", crate::common::KEY)
        .env_remove("TENSORMESH_DATABASE_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("the server exited before printing its address").unwrap();
        if let Some(url) = line.strip_prefix("inference: ") {
            break url.to_owned();
        }
    };
    // Keep reading stdout so that the server never blocks on it.
    std::thread::spawn(move || lines.for_each(drop));
    (child, base)
}

async fn stop(mut child: std::process::Child) {
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn cached_prefixes_survive_a_restart_through_the_disk_tier() {
    let data_dir = std::env::temp_dir().join(format!("tm-spill-{}", uuid::Uuid::new_v4()));
    let prompt = format!("{}Again, item 3 is", inventory());
    let (server, base) = serve_binary(&data_dir);
    let (cold, prompt_tokens, cached) = complete(&base, &prompt, 12).await;
    assert_eq!(cached, 0);
    stop(server).await; // the cached prefix is written at shutdown
    let files = std::fs::read_dir(data_dir.join("kv-cache")).unwrap().flatten().next().unwrap().path();
    assert!(std::fs::read_dir(&files).unwrap().count() >= 2, "no snapshot files in {}", files.display());

    let (server, base) = serve_binary(&data_dir);
    let (warm, _, cached) = complete(&base, &prompt, 12).await;
    assert_eq!(cached, prompt_tokens - 1, "the first request after the restart did not restore the prefix");
    assert_eq!(warm, cold);
    let text = metrics(&base).await;
    assert_eq!(
        metric(&text, &format!("tensormesh_prefix_cache_hit_tokens_total{{model=\"{MODEL}\",tier=\"disk\"}}")),
        cached as f64
    );
    assert!(metric(&text, &format!("tensormesh_kv_spill_entries{{model=\"{MODEL}\",tier=\"disk\"}}")) >= 1.0);
    stop(server).await;
}
