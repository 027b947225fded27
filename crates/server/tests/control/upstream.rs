//! Billing of requests served by upstream engines, over real HTTP through the gateway,
//! with the fault-injecting fake engine: each fault's status or event, and what is billed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tm_control::Control;
use tm_money::{Nanos, Price};
use tm_testkit::fake_upstream::{FakeUpstream, Fault, FAKE_UPSTREAM_MODEL};
use tm_upstream::{FleetConfig, UpstreamBackend};

use crate::common::{chat_as, client, sse_data, start_with, Engine, Options};
use crate::metering::{domain, funded_user, wait_until_settled};

const MODEL: &str = "fleet-model";
const DEAD: &str = "dead-model";
const CREDIT: i64 = 1_000_000_000;

/// `MODEL` on the fake engine at `url`, and `DEAD` on a port where nothing listens.
async fn fleet(url: &str) -> Arc<UpstreamBackend> {
    let dead = FakeUpstream::refusing_url().await;
    let text = format!(
        "[[model]]\nname = \"{MODEL}\"\nupstream_model = \"{FAKE_UPSTREAM_MODEL}\"\n\
         [model.timeouts]\nidle_ms = 300\nfirst_byte_ms = 1000\n[[model.endpoint]]\nurl = \"{url}\"\n\
         [[model]]\nname = \"{DEAD}\"\nmax_context = 4096\n[[model.endpoint]]\nurl = \"{dead}\"\n"
    );
    let config = FleetConfig::parse(&text, "test").unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    Arc::new(UpstreamBackend::connect(config, &mut registry).await.unwrap())
}

struct Answer {
    status: u16,
    request_id: String,
    retry_after: Option<String>,
    /// SSE data payloads, or the JSON body of an error.
    events: Vec<Value>,
}

async fn stream(base: &str, key: &str, content: &str) -> Answer {
    stream_model(base, key, MODEL, content).await
}

async fn stream_model(base: &str, key: &str, model: &str, content: &str) -> Answer {
    let body = json!({"model": model, "messages": [{"role": "user", "content": content}], "stream": true,
                      "stream_options": {"include_usage": true}});
    let r = client().post(format!("{base}/v1/chat/completions")).bearer_auth(key).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let events = if status == 200 {
        sse_data(r).await.iter().filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect()
    } else {
        vec![r.json().await.unwrap()]
    };
    Answer { status, request_id, retry_after, events }
}

/// The usage row of a request: (prompt, cached, completion, status, cost, who counted).
async fn billed(control: &Control, user: &str, request_id: &str) -> Option<(i64, i64, i64, String, i64, String)> {
    let rows = control.store().usage().records(user).await.unwrap();
    rows.into_iter()
        .find(|r| r.request_id == request_id)
        .map(|r| (r.prompt_tokens, r.cached_tokens, r.completion_tokens, r.status, r.cost_nanos, r.usage_source))
}

/// Polls `probe` every 25 ms, for at most 5 s, until it yields something.
async fn eventually<T, F: Future<Output = Option<T>>>(mut probe: impl FnMut() -> F) -> Option<T> {
    for _ in 0..200 {
        if let Some(v) = probe().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

fn text_of(events: &[Value]) -> String {
    events.iter().filter_map(|e| e.pointer("/choices/0/delta/content").and_then(Value::as_str)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_have_a_stated_answer_and_bill_exactly() {
    let db = tm_testkit::sqlite();
    let fake = FakeUpstream::start(6).await;
    let servers = start_with(&db, Engine::Given(fleet(&fake.url).await), Options::default());
    let base = servers.inference.unwrap();
    let control = domain(&db).await;
    let (user, keys) = funded_user(&control, "fleet@example.com", CREDIT, 1).await;
    let key = &keys[0];
    // The seeded default prices (common::config): 0.10 and 0.40 USD per 1M tokens, cached free.
    let price = Price { input: Nanos(100_000_000), output: Nanos(400_000_000), cached: Nanos(0) };
    let cost = |p: i64, c: i64, n: i64| price.cost(p as u64, c as u64, n as u64).get();

    // Served: the engine's usage, cached tokens included, is what the client sees and pays.
    let a = stream(&base, key, "alpha beta gamma delta").await;
    assert_eq!(a.status, 200);
    assert_eq!(text_of(&a.events), "w0 w1 w2 w3 w4 w5 ");
    let usage = &a.events.last().unwrap()["usage"];
    assert_eq!((usage["prompt_tokens"].as_i64(), usage["completion_tokens"].as_i64()), (Some(4), Some(6)));
    let b = stream(&base, key, "alpha beta gamma epsilon").await;
    assert_eq!(b.events.last().unwrap()["usage"]["prompt_tokens_details"]["cached_tokens"], 3);
    wait_until_settled(&control).await;
    assert_eq!(
        billed(&control, &user, &a.request_id).await,
        Some((4, 0, 6, "stop".into(), cost(4, 0, 6), "engine".into()))
    );
    assert_eq!(
        billed(&control, &user, &b.request_id).await,
        Some((4, 3, 6, "stop".into(), cost(4, 3, 6), "engine".into()))
    );
    assert_eq!(fake.generations()[0].request_id.as_deref(), Some(a.request_id.as_str()), "same id upstream");

    // 500 before any byte (one endpoint, nothing to retry on): 502, nothing billed.
    fake.set_fault(Fault::Status(500), 1);
    let failed = stream(&base, key, "one").await;
    assert_eq!(failed.status, 502);
    assert_eq!(failed.events[0]["error"]["code"], "upstream_failed");
    assert_eq!(failed.retry_after.as_deref(), Some("1"));
    // Connection refused: the same.
    let refused = stream_model(&base, key, DEAD, "one").await;
    assert_eq!((refused.status, refused.retry_after.as_deref()), (502, Some("1")), "{:?}", refused.events);
    // Nothing within the first-byte timeout: 504.
    fake.set_fault(Fault::SlowFirstByte(Duration::from_millis(1500)), 1);
    let slow = stream(&base, key, "one").await;
    assert_eq!(slow.status, 504);
    assert_eq!(slow.events[0]["error"]["code"], "upstream_timeout");
    // The engine busy (429): our 503 with Retry-After, not the caller's 429.
    fake.set_fault(Fault::Status(429), 1);
    let busy = stream(&base, key, "one").await;
    assert_eq!((busy.status, busy.retry_after.as_deref()), (503, Some("1")));
    // Reset after two words: the stream ends with an error event; the prompt and the two
    // words delivered are billed, counted by the engine's tokenizer.
    fake.set_fault(Fault::ResetAfter(2), 1);
    let reset = stream(&base, key, "one two three").await;
    assert_eq!(reset.status, 200);
    assert_eq!(text_of(&reset.events), "w0 w1 ");
    assert!(reset.events.last().unwrap().get("error").is_some(), "{:?}", reset.events);
    // The same fault on a non-streamed request: the client gets an error and no answer, so
    // the usage is recorded (an error in the metrics) and nothing is charged.
    fake.set_fault(Fault::ResetAfter(2), 1);
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "one two three"}]});
    let r = client().post(format!("{base}/v1/chat/completions")).bearer_auth(key).json(&body).send().await.unwrap();
    let whole_failed = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(r.status().is_server_error(), "{}", r.status());
    // Stall past the idle timeout: the same as the reset.
    fake.set_fault(Fault::StallAfter(1), 1);
    let stalled = stream(&base, key, "one two").await;
    assert_eq!(text_of(&stalled.events), "w0 ");
    assert!(stalled.events.last().unwrap()["error"]["message"].as_str().unwrap().contains("sent nothing"));
    // Malformed SSE: the same.
    fake.set_fault(Fault::MalformedAfter(3), 1);
    let malformed = stream(&base, key, "x").await;
    assert_eq!(text_of(&malformed.events), "w0 w1 w2 ");
    // No usage from the engine: counted, and the client sees the counted usage.
    fake.set_fault(Fault::NoUsage, 1);
    let counted = stream(&base, key, "five little words are here").await;
    assert_eq!(counted.events.last().unwrap()["usage"]["prompt_tokens"], 5);
    assert_eq!(counted.events.last().unwrap()["usage"]["completion_tokens"], 6);

    // What clients read names no engine address and quotes no engine error (issue 19:
    // error bodies carried upstream URLs); the log has the detail.
    let address = fake.url.trim_start_matches("http://").trim_end_matches('/').to_owned();
    for answer in [&failed, &refused, &slow, &busy, &reset, &stalled, &malformed] {
        let text = serde_json::to_string(&answer.events).unwrap();
        assert!(!text.contains(&address), "{text}");
    }
    assert_eq!(reset.events.last().unwrap()["error"]["message"], "the connection to the model's engine broke");

    wait_until_settled(&control).await;
    for refused in [&failed, &refused, &slow, &busy] {
        assert_eq!(billed(&control, &user, &refused.request_id).await, None);
    }
    assert_eq!(
        billed(&control, &user, &reset.request_id).await,
        Some((3, 0, 2, "failed".into(), cost(3, 0, 2), "counted".into()))
    );
    assert_eq!(billed(&control, &user, &whole_failed).await, Some((3, 0, 2, "failed".into(), 0, "counted".into())));
    assert_eq!(
        billed(&control, &user, &stalled.request_id).await,
        Some((2, 0, 1, "failed".into(), cost(2, 0, 1), "counted".into()))
    );
    assert_eq!(
        billed(&control, &user, &malformed.request_id).await,
        Some((1, 0, 3, "failed".into(), cost(1, 0, 3), "counted".into()))
    );
    assert_eq!(
        billed(&control, &user, &counted.request_id).await,
        Some((5, 0, 6, "stop".into(), cost(5, 0, 6), "counted".into()))
    );

    // A client that leaves mid-stream pays for what it was sent, and the engine's request
    // is closed.
    fake.set_words(1000);
    fake.set_word_delay(Duration::from_millis(10));
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "go on"}], "stream": true});
    let r = client().post(format!("{base}/v1/chat/completions")).bearer_auth(key).json(&body).send().await.unwrap();
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let mut chunks = r.bytes_stream();
    let mut seen = String::new();
    while seen.matches("\"content\":\"w").count() < 3 {
        seen.push_str(&String::from_utf8_lossy(&chunks.next().await.unwrap().unwrap()));
    }
    drop(chunks);
    let abandoned = fake.streams_abandoned();
    let closed = eventually(|| async { (fake.streams_abandoned() > abandoned).then_some(()) }).await;
    assert!(closed.is_some(), "the upstream request was not closed");
    let row = eventually(|| billed(&control, &user, &request_id)).await;
    let (prompt, _, completion, status, _, source) = row.expect("the abandoned request was never billed");
    wait_until_settled(&control).await;
    assert_eq!((prompt, status.as_str(), source.as_str()), (2, "cancelled", "counted"));
    assert!((3..100).contains(&completion), "billed {completion} completion tokens");

    // The balance is the credit less exactly what the usage rows say.
    let rows = control.store().usage().records(&user).await.unwrap();
    let account = control.store().ledger().account(&user).await.unwrap();
    assert_eq!(account.held_nanos, 0);
    assert_eq!(CREDIT - account.balance_nanos, rows.iter().map(|r| r.cost_nanos).sum::<i64>());
}

/// A deployment of a fleet model is `MODEL_STATUS_UP` while one of its endpoints passes
/// its health checks, and `MODEL_STATUS_DOWN` when none does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_models_status_follows_its_endpoints_health() {
    use reqwest::Method;

    let db = tm_testkit::sqlite();
    let fake = FakeUpstream::start(2).await;
    let text = format!(
        "[[model]]\nname = \"{MODEL}\"\nupstream_model = \"{FAKE_UPSTREAM_MODEL}\"\n\
         [model.health]\ninterval_ms = 20\n[[model.endpoint]]\nurl = \"{}\"\n",
        fake.url
    );
    let mut registry = prometheus_client::registry::Registry::default();
    let backend = UpstreamBackend::connect(FleetConfig::parse(&text, "test").unwrap(), &mut registry).await.unwrap();
    let servers = start_with(&db, Engine::Given(Arc::new(backend)), Options::default());
    let cp = servers.control.as_str();
    let admin = crate::admin_login(cp).await;
    let new = json!({"modelName": "via-fleet", "modelPath": MODEL});
    let (status, made) = crate::call(cp, &admin.access, Method::POST, "/v1/models", Some(new)).await;
    assert_eq!(status, 200, "{made}");
    let id = made["model"]["modelId"].as_str().unwrap().to_owned();
    let status_now = || async {
        let (_, got) = crate::call(cp, &admin.access, Method::GET, &format!("/v1/models/{id}"), None).await;
        got["model"]["status"].as_str().unwrap().to_owned()
    };
    let becomes =
        |expected: &'static str| eventually(move || async move { (status_now().await == expected).then_some(()) });
    assert_eq!(status_now().await, "MODEL_STATUS_UP");
    fake.set_healthy(false);
    becomes("MODEL_STATUS_DOWN").await.expect("the model never went DOWN");
    fake.set_healthy(true);
    becomes("MODEL_STATUS_UP").await.expect("the model never came back UP");
}

/// Choices, tools and log-probabilities go to the engine as the client sent them; its
/// calls, choices and log-probabilities come back in our shapes; every choice is billed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_models_pass_tools_choices_and_logprobs_through() {
    let db = tm_testkit::sqlite();
    let fake = FakeUpstream::start(3).await;
    let servers = start_with(&db, Engine::Given(fleet(&fake.url).await), Options::default());
    let base = servers.inference.unwrap();
    let control = domain(&db).await;
    let (user, keys) = funded_user(&control, "agents@example.com", CREDIT, 1).await;
    let post = |body: Value| {
        let (base, key) = (base.clone(), keys[0].clone());
        async move { chat_as(&base, &key, &body).await }
    };
    let tools = json!([{"type": "function", "function": {"name": "count", "parameters": {"type": "object"}}}]);

    // Two forced calls, one per choice.
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "count these words"}], "n": 2,
                      "tools": tools, "tool_choice": "required", "parallel_tool_calls": false});
    let (status, id, r) = post(body).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    let sent = &fake.generations()[0].body;
    assert_eq!((sent["n"].clone(), sent["tool_choice"].clone()), (json!(2), json!("required")));
    assert_eq!((sent["tools"].clone(), sent["parallel_tool_calls"].clone()), (tools.clone(), json!(false)));
    for (i, choice) in v["choices"].as_array().unwrap().iter().enumerate() {
        assert_eq!(choice["index"], i);
        assert_eq!(choice["finish_reason"], "tool_calls");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(
            (call["id"].clone(), call["function"]["name"].clone()),
            (json!(format!("call_fake{i}")), json!("count"))
        );
        assert_eq!(call["function"]["arguments"], "{\"words\": 3}", "reassembled from the engine's pieces");
    }
    wait_until_settled(&control).await;
    let billed_calls = billed(&control, &user, &id).await.unwrap();
    assert_eq!((billed_calls.0, billed_calls.2, billed_calls.3.as_str()), (3, 6, "tool_calls"), "both choices billed");

    // Streamed choices with log-probabilities.
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "a b"}], "n": 2, "stream": true,
                      "logprobs": true, "top_logprobs": 1, "stream_options": {"include_usage": true}});
    let (status, _, r) = post(body).await;
    assert_eq!(status, 200);
    let sent = &fake.generations()[1].body;
    assert_eq!((sent["logprobs"].clone(), sent["top_logprobs"].clone()), (json!(true), json!(1)));
    let events: Vec<Value> =
        sse_data(r).await.iter().filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
    for i in 0..2 {
        let tokens: Vec<&str> = events
            .iter()
            .filter(|e| e["choices"][0]["index"] == i)
            .filter_map(|e| e["choices"][0]["logprobs"]["content"][0]["token"].as_str())
            .collect();
        assert_eq!(tokens, vec!["w0 ", "w1 ", "w2 "], "choice {i}");
    }
    assert_eq!(events.last().unwrap()["usage"]["completion_tokens"], 6);
}
