//! A tensormesh node (the real engine and model) as another server's upstream: the front
//! server answers like the node, passes its cached tokens through, and forwards tokenize.

use std::sync::Arc;

use serde_json::{json, Value};
use tm_upstream::{FleetConfig, UpstreamBackend};

use crate::common::{self, post_json, start_with, Engine, Options, KEY, MODEL};

const FLEET_MODEL: &str = "gemma-via-fleet";

async fn front_of(node: &str) -> String {
    let text = format!(
        "[[model]]\nname = \"{FLEET_MODEL}\"\nupstream_model = \"{MODEL}\"\n\
         [[model.endpoint]]\nurl = \"{node}\"\napi_key = \"{KEY}\"\n"
    );
    let config = FleetConfig::parse(&text, "test").unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let backend = Arc::new(UpstreamBackend::connect(config, &mut registry).await.unwrap());
    start_with(&tm_testkit::sqlite(), Engine::Given(backend), Options::default()).detach().inference.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tensormesh_node_serves_as_an_upstream_with_the_same_answers() {
    // Without drafts: verifying one changes the batch shapes that llama.cpp's kernels round
    // by, so a near-tie in this base model's greedy choice could flip between the two runs.
    let node = common::start(Options { speculative: "off", ..Options::default() });
    let front = front_of(&node).await;
    let prompt = format!("Notes for the meeting {}: first, the budget. Second, the plan. Third,", uuid::Uuid::new_v4());
    let body = |model: &str| json!({"model": model, "prompt": prompt, "max_tokens": 12, "temperature": 0});

    // Both answers compared are computed alike, from the prompt the first request cached
    // (llama.cpp rounds differently when a prompt's last token is computed alone, which can
    // flip a near-tie between a cold answer and a cached one).
    let (status, _) = post_json(&node, "/v1/completions", body(MODEL)).await;
    assert_eq!(status, 200);
    let (status, direct) = post_json(&node, "/v1/completions", body(MODEL)).await;
    assert_eq!(status, 200, "{direct}");
    let (status, proxied) = post_json(&front, "/v1/completions", body(FLEET_MODEL)).await;
    assert_eq!(status, 200, "{proxied}");
    assert_eq!(proxied["model"], FLEET_MODEL);
    assert_eq!(proxied["choices"][0]["text"], direct["choices"][0]["text"], "greedy output through the fleet");
    assert_eq!(proxied["usage"]["prompt_tokens"], direct["usage"]["prompt_tokens"]);
    // The node's KV cache held the prompt from the direct requests: the front reports it.
    let cached = proxied["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    assert!(cached > 0, "{proxied}");

    // Streaming chat, through the front, ends with the node's usage.
    let chat = json!({"model": FLEET_MODEL, "messages": [{"role": "user", "content": "Say hello."}],
                      "max_tokens": 8, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}});
    let events = common::sse_data(common::post(&front, "/v1/chat/completions", chat).await).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 8);

    // Tokenize is the node's tokenizer.
    let tokenize = |model: &str| json!({"model": model, "prompt": "Hello world"});
    let (_, a) = post_json(&node, "/tokenize", tokenize(MODEL)).await;
    let (status, b) = post_json(&front, "/tokenize", tokenize(FLEET_MODEL)).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(a["tokens"], b["tokens"]);
    let (status, d) = post_json(&front, "/detokenize", json!({"model": FLEET_MODEL, "tokens": a["tokens"]})).await;
    assert_eq!(status, 200, "{d}");
    assert!(d["prompt"].as_str().unwrap().contains("Hello world"), "{d}");
}
