//! Log-probabilities: chat (plain and streamed) and legacy completions with `echo`.

use serde_json::{json, Value};

use crate::common::{post, post_json, shared, sse_data, MODEL};

fn chat(extra: Value) -> Value {
    let mut body = json!({"model": MODEL, "messages": [{"role": "user", "content": "Name three colors."}],
                          "temperature": 0, "max_tokens": 8, "logprobs": true, "top_logprobs": 5});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body
}

#[tokio::test]
async fn chat_logprobs_are_sorted_and_greedy_picks_the_top_one() {
    let (status, v) = post_json(shared(), "/v1/chat/completions", chat(json!({}))).await;
    assert_eq!(status, 200, "{v}");
    let entries = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(entries.len() as u64, v["usage"]["completion_tokens"].as_u64().unwrap(), "one per token");
    let mut text = String::new();
    for e in entries {
        let lp = e["logprob"].as_f64().unwrap();
        assert!(lp <= 0.0, "{e}");
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 5);
        let tops: Vec<f64> = top.iter().map(|t| t["logprob"].as_f64().unwrap()).collect();
        assert!(tops.windows(2).all(|w| w[0] >= w[1]), "sorted: {e}");
        // Greedy: the chosen token is the likeliest (the model's own distribution).
        assert_eq!(top[0]["token"], e["token"], "{e}");
        assert!((tops[0] - lp).abs() < 1e-5, "{e}");
        let bytes: Vec<u8> = e["bytes"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u8).collect();
        text.push_str(&String::from_utf8_lossy(&bytes));
    }
    assert_eq!(text, v["choices"][0]["message"]["content"].as_str().unwrap(), "the tokens make the text");
    // Without `logprobs`, none.
    let (_, v) = post_json(shared(), "/v1/chat/completions", chat(json!({"logprobs": false, "top_logprobs": 0}))).await;
    assert_eq!(v["choices"][0]["logprobs"], Value::Null);
}

#[tokio::test]
async fn streamed_chat_chunks_carry_their_tokens_logprobs() {
    let (_, plain) = post_json(shared(), "/v1/chat/completions", chat(json!({}))).await;
    let data = sse_data(post(shared(), "/v1/chat/completions", chat(json!({"stream": true}))).await).await;
    let streamed: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array().cloned())
        .flatten()
        .collect();
    let tokens = |entries: &[Value]| entries.iter().map(|e| e["token"].clone()).collect::<Vec<_>>();
    assert_eq!(tokens(&streamed), tokens(plain["choices"][0]["logprobs"]["content"].as_array().unwrap()));
}

#[tokio::test]
async fn completion_logprobs_with_echo_cover_the_prompt_then_the_text() {
    let body = json!({"model": MODEL, "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0,
                      "logprobs": 2, "echo": true});
    let (status, v) = post_json(shared(), "/v1/completions", body.clone()).await;
    assert_eq!(status, 200, "{v}");
    let lp = &v["choices"][0]["logprobs"];
    let tokens = lp["tokens"].as_array().unwrap();
    let usage = &v["usage"];
    let total = usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap();
    assert_eq!(tokens.len() as u64, total, "every prompt and output token: {v}");
    assert_eq!(lp["token_logprobs"][0], Value::Null, "nothing predicts the first token");
    assert_eq!(lp["top_logprobs"][0], Value::Null);
    assert!(lp["token_logprobs"].as_array().unwrap()[1..].iter().all(|l| l.as_f64().unwrap() <= 0.0));
    assert!(lp["top_logprobs"].as_array().unwrap()[1..].iter().all(|t| t.as_object().unwrap().len() == 2));
    let offsets: Vec<u64> = lp["text_offset"].as_array().unwrap().iter().map(|o| o.as_u64().unwrap()).collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]) && offsets[0] == 0, "{offsets:?}");
    let text = v["choices"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("The capital of France is"), "{text}");
    // The prompt's log-probabilities are computed, never read from the cache (a cached
    // prefix has no logits), also when the same prompt was just computed.
    let (_, again) = post_json(shared(), "/v1/completions", body.clone()).await;
    assert_eq!(again["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(again["choices"][0]["logprobs"]["tokens"], lp["tokens"]);
    // Streamed: the echo comes with the prompt's entries, then each piece with its own.
    let mut streamed = body;
    streamed["stream"] = true.into();
    let data = sse_data(post(shared(), "/v1/completions", streamed).await).await;
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let all: Vec<Value> =
        chunks.iter().filter_map(|c| c["choices"][0]["logprobs"]["tokens"].as_array().cloned()).flatten().collect();
    assert_eq!(&all, tokens);
    assert_eq!(chunks[0]["choices"][0]["text"], "The capital of France is");
}
