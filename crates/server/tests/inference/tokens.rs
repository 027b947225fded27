//! `/tokenize`, `/detokenize` and the public GETs.

use serde_json::{json, Value};

use crate::common::{client, post_json, shared, MODEL};

#[tokio::test]
async fn tokenize_detokenize_round_trip() {
    let text = "Hello, world! Ünïcödé and emoji 🦀 survive.";
    let (status, t) = post_json(shared(), "/tokenize", json!({"model": MODEL, "prompt": text})).await;
    assert_eq!(status, 200, "{t}");
    let tokens = t["tokens"].as_array().unwrap();
    assert_eq!(t["count"], tokens.len());
    assert_eq!(t["max_model_len"], 512);
    assert_eq!(t["token_strs"].as_array().unwrap().len(), tokens.len());
    let (status, d) = post_json(shared(), "/detokenize", json!({"model": MODEL, "tokens": tokens})).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["prompt"], text);
    // Without special tokens the count drops by the BOS token.
    let (_, bare) =
        post_json(shared(), "/tokenize", json!({"model": MODEL, "prompt": text, "add_special_tokens": false})).await;
    assert_eq!(bare["count"].as_u64().unwrap() + 1, t["count"].as_u64().unwrap());
}

#[tokio::test]
async fn tokenize_messages_matches_the_chat_prompt_size() {
    let messages = json!([{"role": "user", "content": "What is 2+2?"}]);
    let (status, t) = post_json(shared(), "/tokenize", json!({"model": MODEL, "messages": messages})).await;
    assert_eq!(status, 200, "{t}");
    let (_, chat) =
        post_json(shared(), "/v1/chat/completions", json!({"model": MODEL, "messages": messages, "max_tokens": 1}))
            .await;
    assert_eq!(t["count"], chat["usage"]["prompt_tokens"]);
}

#[tokio::test]
async fn detokenize_rejects_ids_outside_the_vocabulary() {
    let (status, v) = post_json(shared(), "/detokenize", json!({"model": MODEL, "tokens": [1, -5]})).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["param"], "tokens[1]");
    let (status, v) = post_json(shared(), "/detokenize", json!({"model": MODEL, "tokens": []})).await;
    assert_eq!((status, v["prompt"].clone()), (200, json!("")));
}

#[tokio::test]
async fn models_health_version() {
    let c = client();
    let m: Value = c.get(format!("{}/v1/models", shared())).send().await.unwrap().json().await.unwrap();
    assert_eq!(m["object"], "list");
    assert_eq!(m["data"][0]["id"], MODEL);
    assert_eq!(m["data"][0]["object"], "model");
    let h: Value = c.get(format!("{}/health", shared())).send().await.unwrap().json().await.unwrap();
    assert_eq!(h["status"], "ok");
    let v: Value = c.get(format!("{}/version", shared())).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
}
