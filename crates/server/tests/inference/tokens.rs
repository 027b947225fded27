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

/// Tokenizing a long prompt (rendering the chat template, then the tokenizer: about a
/// second of CPU for 3 MB) runs on the blocking pool, not on the async runtime: on a
/// one-thread runtime, a task beside `prepare` and `tokenize` keeps running while they work.
/// Before, they tokenized inside their first poll: the task beside them never ran (0 ticks).
#[test]
fn a_long_prompt_is_tokenized_off_the_runtime() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use tm_backend::{Backend, GenerateRequest, PromptInput, TokenizeInput};

    let dir = crate::common::models_dir_with(MODEL);
    let config = tm_llama::ModelConfig {
        name: MODEL.into(),
        path: tm_server::downloads::model_path(&dir, MODEL),
        slots: 1,
        queue: 1,
        ctx_size: 512,
        threads: 1,
        kv_cells: None,
        cache_sequences: 0,
        step_tokens: 256,
        prefix_cache: false,
        spill: tm_llama::SpillConfig::default(),
        idle_tokens: 0,
        grammar_engine: tm_llama::GrammarEngine::Llguidance,
        speculative: false,
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let backend = tm_llama::EmbeddedBackend::load(&[config], false, &mut registry).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let messages = vec![json!({"role": "user", "content": "word ".repeat(600_000)})];
    let ticks = AtomicU32::new(0);
    let ticker = || async {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            ticks.fetch_add(1, Ordering::SeqCst);
        }
    };
    rt.block_on(async {
        let tokenize = TokenizeInput {
            model: MODEL.into(),
            prompt: PromptInput::Chat(messages.clone()),
            add_special: true,
            add_generation_prompt: true,
        };
        tokio::select! {
            counted = backend.tokenize(tokenize) => assert!(counted.unwrap().tokens.len() > 600_000),
            () = ticker() => unreachable!(),
        }
    });
    assert!(ticks.swap(0, Ordering::SeqCst) > 0, "/tokenize held the runtime");
    rt.block_on(async {
        let chat = GenerateRequest {
            model: MODEL.into(),
            prompt: PromptInput::Chat(messages),
            sampling: Default::default(),
            max_tokens: Some(1),
            stop: Vec::new(),
            request_id: "off-the-runtime".into(),
            output: Default::default(),
        };
        tokio::select! {
            // Longer than the context: refused, once tokenized.
            prepared = backend.prepare(chat) => assert!(prepared.is_err()),
            () = ticker() => unreachable!(),
        }
    });
    assert!(ticks.load(Ordering::SeqCst) > 0, "prepare held the runtime");
    rt.block_on(backend.shutdown());
}
