//! `n` > 1: several choices from one prompt, computed once.

use serde_json::{json, Value};

use crate::common::{client, post, post_json, shared, sse_data, start, Options, MODEL};

/// A prompt's prefix-cache hits so far, from `/metrics`.
async fn cache_hits(base: &str) -> u64 {
    let text = client().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with("tensormesh_prefix_cache_hit_tokens_total") && l.contains("tier=\"kv\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no KV hit counter in {text}"))
}

#[tokio::test]
async fn four_choices_compute_the_prompt_once_and_count_every_completion() {
    let base = start(Options::default());
    let prompt = "Write a short poem about the sea and the wind and the stars: ".repeat(4);
    let body = json!({"model": MODEL, "prompt": prompt, "n": 4, "max_tokens": 6, "ignore_eos": true,
                      "temperature": 1.0, "seed": 3});
    let before = cache_hits(&base).await;
    let (status, v) = post_json(&base, "/v1/completions", body.clone()).await;
    assert_eq!(status, 200, "{v}");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["finish_reason"], "length");
    }
    let usage = &v["usage"];
    let prompt_tokens = usage["prompt_tokens"].as_u64().unwrap();
    assert_eq!(usage["completion_tokens"], 4 * 6, "every choice's tokens");
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0, "the prompt is new: computed once, reported once");
    // The other three copied all of it but its last token from the first.
    assert_eq!(cache_hits(&base).await - before, 3 * (prompt_tokens - 1));
    // A seed makes the choices reproducible; they still differ from each other. The repeats
    // are compared with each other: both take the cached prompt, which can round differently
    // from the first, fresh computation (docs/engine.md, "Prefix cache").
    let (_, again) = post_json(&base, "/v1/completions", body.clone()).await;
    let (_, third) = post_json(&base, "/v1/completions", body).await;
    let texts = |v: &Value| v["choices"].as_array().unwrap().iter().map(|c| c["text"].clone()).collect::<Vec<_>>();
    assert_eq!(texts(&third), texts(&again));
    let mut distinct = texts(&v);
    distinct.dedup();
    assert!(distinct.len() > 1, "four identical choices at temperature 1: {v}");
}

#[tokio::test]
async fn streamed_choices_arrive_by_index_and_each_finishes() {
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "n": 3, "max_tokens": 5,
                      "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}});
    let data = sse_data(post(shared(), "/v1/chat/completions", body).await).await;
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    for i in 0..3 {
        let of_choice: Vec<&Value> =
            chunks.iter().filter_map(|c| c["choices"].get(0)).filter(|c| c["index"] == i).collect();
        assert_eq!(of_choice[0]["delta"]["role"], "assistant");
        assert_eq!(of_choice.last().unwrap()["finish_reason"], "length", "choice {i}");
        assert!(of_choice.iter().filter(|c| c["delta"]["content"].as_str().is_some_and(|t| !t.is_empty())).count() > 0);
    }
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 15);
}
