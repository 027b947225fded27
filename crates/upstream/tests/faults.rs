//! The upstream backend against fault-injecting fake engines on loopback: each fault has
//! a stated outcome (error before bytes, or an event) and a stated receipt (what is billed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tm_backend::{
    Backend, BackendError, FinishReason, GenerateRequest, GenerationEvent, PromptInput, Receipt, SamplingParams,
    TokenUsage, UsageSource,
};
use tm_testkit::fake_upstream::{FakeUpstream, Fault, FAKE_UPSTREAM_MODEL};
use tm_upstream::{FleetConfig, UpstreamBackend};

const MODEL: &str = "fleet-model";

/// A fleet file for `urls` with short timeouts; `extra` is TOML for the model table.
fn config(urls: &[&str], extra: &str) -> FleetConfig {
    let mut text = format!(
        "[[model]]\nname = \"{MODEL}\"\nupstream_model = \"{FAKE_UPSTREAM_MODEL}\"\n{extra}\n\
         [model.timeouts]\nconnect_ms = 500\nfirst_byte_ms = 1000\nidle_ms = 300\n\
         [model.health]\ninterval_ms = 60000\neject_after_failures = 2\neject_ms = 60000\n"
    );
    if !extra.contains("[model.retry]") {
        text.push_str("[model.retry]\nattempts = 3\nmin_per_second = 100\n");
    }
    for url in urls {
        text.push_str(&format!("[[model.endpoint]]\nurl = \"{url}\"\n"));
    }
    FleetConfig::parse(&text, "test").unwrap()
}

async fn backend(urls: &[&str], extra: &str) -> Arc<UpstreamBackend> {
    let mut registry = prometheus_client::registry::Registry::default();
    Arc::new(UpstreamBackend::connect(config(urls, extra), &mut registry).await.unwrap())
}

fn chat(content: &str, max_tokens: Option<u32>) -> GenerateRequest {
    GenerateRequest {
        model: MODEL.into(),
        prompt: PromptInput::Chat(vec![json!({"role": "user", "content": content})]),
        sampling: SamplingParams::default(),
        max_tokens,
        stop: Vec::new(),
        request_id: format!("req-{}", content.len()),
        output: Default::default(),
    }
}

/// What one request produced: the text, the last event, and the receipt.
#[derive(Debug)]
struct Outcome {
    text: String,
    last: Option<GenerationEvent>,
    receipt: Receipt,
}

async fn run(backend: &UpstreamBackend, request: GenerateRequest) -> Result<Outcome, BackendError> {
    let mut g = backend.generate(request).await?;
    let mut text = String::new();
    let mut last = None;
    while let Some(e) = g.events.recv().await {
        match &e {
            GenerationEvent::Output { output: tm_backend::Output::Text { text: t, .. }, .. } => text.push_str(t),
            GenerationEvent::ChoiceEnded { .. } => {}
            _ => last = Some(e.clone()),
        }
    }
    Ok(Outcome { text, last, receipt: g.receipt.await.unwrap() })
}

fn text_input(text: &str) -> tm_backend::TokenizeInput {
    tm_backend::TokenizeInput {
        model: MODEL.into(),
        prompt: PromptInput::Text(text.into()),
        add_special: true,
        add_generation_prompt: true,
    }
}

fn usage(prompt: u64, cached: u64, completion: u64) -> TokenUsage {
    TokenUsage { prompt_tokens: prompt, cached_tokens: cached, completion_tokens: completion }
}

#[tokio::test]
async fn a_stream_is_relayed_with_the_engines_usage_and_cached_tokens() {
    let fake = FakeUpstream::start(5).await;
    let b = backend(&[&fake.url], "").await;
    let o = run(&b, chat("one two three four", None)).await.unwrap();
    assert_eq!(o.text, "w0 w1 w2 w3 w4 ");
    assert_eq!(o.last, Some(GenerationEvent::Finished { usage: usage(4, 0, 5) }));
    assert_eq!(
        o.receipt,
        Receipt { usage: usage(4, 0, 5), finish: Some(FinishReason::Stop), source: UsageSource::Engine }
    );
    let seen = &fake.generations()[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.request_id.as_deref(), Some("req-18"));
    assert_eq!(seen.body["model"], FAKE_UPSTREAM_MODEL);
    assert_eq!(seen.body["stream"], true);
    assert_eq!(seen.body["stream_options"]["include_usage"], true);
    // The engine's prefix cache shows in the usage, and so in billing.
    let o = run(&b, chat("one two three five", Some(2))).await.unwrap();
    assert_eq!(
        o.receipt,
        Receipt { usage: usage(4, 3, 2), finish: Some(FinishReason::Length), source: UsageSource::Engine }
    );
    assert_eq!(b.models()[0].max_context, 8192, "discovered from the engine's /v1/models");
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_the_next_endpoint() {
    let refusing = FakeUpstream::refusing_url().await;
    let fake = FakeUpstream::start(3).await;
    let b = backend(&[&refusing, &fake.url], "routing = \"round-robin\"").await;
    for i in 0..4 {
        let o = run(&b, chat(&format!("request {i}"), None)).await.unwrap();
        assert_eq!(o.receipt.usage.completion_tokens, 3);
    }
    assert_eq!(fake.generations().len(), 4);
    // Alone, it is a 502-class error naming the cause, and nothing runs.
    let b = backend(&[&refusing], "").await;
    match run(&b, chat("hello", None)).await {
        Err(BackendError::UpstreamFailed(m)) => assert!(m.contains("refused") || m.contains("connect"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_500_before_bytes_is_retried_and_repeated_failures_eject_the_endpoint() {
    let failing = FakeUpstream::start(3).await;
    failing.set_fault(Fault::Status(500), u64::MAX);
    let good = FakeUpstream::start(3).await;
    let b = backend(&[&failing.url, &good.url], "routing = \"round-robin\"").await;
    for i in 0..6 {
        let o = run(&b, chat(&format!("request {i}"), None)).await.unwrap();
        assert_eq!(o.receipt.usage.completion_tokens, 3);
    }
    // Two failures in a row eject it: later requests are not sent there at all.
    assert_eq!(failing.generations().len(), 2);
    assert_eq!(good.generations().len(), 6);
    assert!(!b.models()[0].endpoints[0].healthy);
    // The retry carried the same request id.
    assert_eq!(failing.generations()[0].request_id, good.generations()[0].request_id);
}

#[tokio::test]
async fn the_engines_4xx_is_the_clients_and_is_not_retried() {
    let refusing = FakeUpstream::start(3).await;
    refusing.set_fault(Fault::Status(400), u64::MAX);
    let other = FakeUpstream::start(3).await;
    let b = backend(&[&refusing.url, &other.url], "routing = \"least-loaded\"").await;
    match run(&b, chat("x", None)).await {
        Err(BackendError::InvalidInput { param, message }) => {
            assert_eq!(param, "messages");
            assert!(message.contains("injected 400"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(other.generations().len(), 0);
}

#[tokio::test]
async fn a_reset_mid_stream_ends_with_an_error_event_and_bills_what_was_delivered() {
    let fake = FakeUpstream::start(10).await;
    fake.set_fault(Fault::ResetAfter(2), 1);
    let spare = FakeUpstream::start(10).await;
    let b = backend(&[&fake.url, &spare.url], "routing = \"least-loaded\"").await;
    let o = run(&b, chat("p q r", None)).await.unwrap();
    assert_eq!(o.text, "w0 w1 ");
    assert!(
        matches!(o.last, Some(GenerationEvent::Failed(ref m)) if m.contains("broke") || m.contains("closed")),
        "{o:?}"
    );
    // Counted by the engine's tokenizer: the prompt and the two words delivered.
    assert_eq!(o.receipt, Receipt { usage: usage(3, 0, 2), finish: None, source: UsageSource::Counted });
    assert_eq!(spare.generations().len(), 0, "no retry after the first byte");
}

#[tokio::test]
async fn a_stall_past_the_idle_timeout_fails_and_closes_the_upstream_request() {
    let fake = FakeUpstream::start(10).await;
    fake.set_fault(Fault::StallAfter(3), 1);
    let b = backend(&[&fake.url], "").await;
    let o = run(&b, chat("p q", None)).await.unwrap();
    assert_eq!(o.text, "w0 w1 w2 ");
    assert!(matches!(o.last, Some(GenerationEvent::Failed(ref m)) if m.contains("nothing for 300 ms")), "{o:?}");
    assert_eq!(o.receipt, Receipt { usage: usage(2, 0, 3), finish: None, source: UsageSource::Counted });
    wait_for(|| fake.streams_abandoned() == 1).await;
}

#[tokio::test]
async fn malformed_sse_fails_the_stream_and_bills_what_was_delivered() {
    let fake = FakeUpstream::start(10).await;
    fake.set_fault(Fault::MalformedAfter(1), 1);
    let b = backend(&[&fake.url], "").await;
    let o = run(&b, chat("p", None)).await.unwrap();
    assert_eq!(o.text, "w0 ");
    assert!(matches!(o.last, Some(GenerationEvent::Failed(ref m)) if m.contains("malformed")), "{o:?}");
    assert_eq!(o.receipt, Receipt { usage: usage(1, 0, 1), finish: None, source: UsageSource::Counted });
}

#[tokio::test]
async fn missing_usage_is_counted_with_the_engines_tokenizer() {
    let fake = FakeUpstream::start(4).await;
    fake.set_fault(Fault::NoUsage, 1);
    let b = backend(&[&fake.url], "").await;
    let o = run(&b, chat("five words in this prompt", None)).await.unwrap();
    assert_eq!(o.last, Some(GenerationEvent::Finished { usage: usage(5, 0, 4) }));
    assert_eq!((o.receipt.usage, o.receipt.source), (usage(5, 0, 4), UsageSource::Counted));
    assert_eq!(fake.tokenize_calls(), 3, "the prompt for max_tokens, then prompt and completion for usage");
}

#[tokio::test]
async fn a_slow_first_byte_past_the_timeout_is_retried_elsewhere_and_within_it_is_waited_for() {
    let slow = FakeUpstream::start(2).await;
    slow.set_fault(Fault::SlowFirstByte(Duration::from_millis(1500)), 1);
    let fast = FakeUpstream::start(2).await;
    let b = backend(&[&slow.url, &fast.url], "routing = \"round-robin\"").await;
    let o = run(&b, chat("hi", None)).await.unwrap();
    assert_eq!(o.receipt.usage, usage(1, 0, 2));
    assert_eq!(fast.generations().len(), 1);
    assert_eq!(slow.generations()[0].request_id, fast.generations()[0].request_id);

    slow.set_fault(Fault::SlowFirstByte(Duration::from_millis(400)), 1);
    let b = backend(&[&slow.url], "").await;
    let o = run(&b, chat("hi", None)).await.unwrap();
    assert_eq!(o.receipt.usage, usage(1, 0, 2));
    // With nowhere else to go it is a timeout (504).
    slow.set_fault(Fault::SlowFirstByte(Duration::from_millis(1500)), 1);
    assert!(matches!(run(&b, chat("hi", None)).await, Err(BackendError::UpstreamTimeout(_))));
}

#[tokio::test]
async fn the_retry_budget_caps_attempts_when_every_replica_fails() {
    let a = FakeUpstream::start(2).await;
    let b2 = FakeUpstream::start(2).await;
    a.set_fault(Fault::Status(500), u64::MAX);
    b2.set_fault(Fault::Status(500), u64::MAX);
    let b = backend(&[&a.url, &b2.url], "[model.retry]\nattempts = 2\nbudget_ratio = 0.2\nmin_per_second = 0").await;
    for i in 0..200 {
        assert!(matches!(run(&b, chat(&format!("r{i}"), None)).await, Err(BackendError::UpstreamFailed(_))));
    }
    let attempts = a.generations().len() + b2.generations().len();
    assert!((200..=240).contains(&attempts), "{attempts} upstream attempts for 200 requests");
}

#[tokio::test]
async fn a_client_that_leaves_closes_the_upstream_request_and_pays_for_what_it_got() {
    let fake = FakeUpstream::start(1000).await;
    fake.set_word_delay(Duration::from_millis(5));
    let b = backend(&[&fake.url], "").await;
    let mut g = b.generate(chat("a b c d", None)).await.unwrap();
    let mut delivered = String::new();
    while delivered.split_whitespace().count() < 3 {
        if let Some(GenerationEvent::Output { output: tm_backend::Output::Text { text: t, .. }, .. }) =
            g.events.recv().await
        {
            delivered.push_str(&t);
        }
    }
    drop(g.events);
    let receipt = g.receipt.await.unwrap();
    assert_eq!(receipt.finish, Some(FinishReason::Cancelled));
    assert_eq!(receipt.usage.prompt_tokens, 4);
    assert!((3..1000).contains(&receipt.usage.completion_tokens), "{receipt:?}");
    wait_for(|| fake.streams_abandoned() == 1).await;
    assert_eq!(b.in_flight(), 0);
}

#[tokio::test]
async fn busy_engines_everywhere_are_a_503_with_retry_after() {
    let a = FakeUpstream::start(2).await;
    a.set_fault(Fault::Status(429), u64::MAX);
    let b2 = FakeUpstream::start(2).await;
    b2.set_fault(Fault::Status(429), u64::MAX);
    let b = backend(&[&a.url, &b2.url], "").await;
    assert!(matches!(run(&b, chat("x", None)).await, Err(BackendError::Overloaded { retry_after_secs: 1, .. })));
    assert!(b.models()[0].endpoints.iter().all(|e| e.healthy), "busy is not broken");
}

#[tokio::test]
async fn retries_stop_when_the_budget_is_spent() {
    let refusing = FakeUpstream::refusing_url().await;
    let fake = FakeUpstream::start(2).await;
    let b = backend(
        &[&refusing, &fake.url],
        "routing = \"round-robin\"\n[model.retry]\nattempts = 3\nbudget_ratio = 0.0\nmin_per_second = 0",
    )
    .await;
    // With max_tokens given, nothing is tokenized first: the request goes out before the
    // first health check can find the refusing endpoint down and take it out of the turn.
    match run(&b, chat("x", Some(2))).await {
        Err(BackendError::UpstreamFailed(m)) => assert!(m.contains("retry budget"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// Thirty conversations of four growing turns over three fresh fakes: the cached tokens the
/// engines report, and how many endpoints got requests. (New conversations spread by the
/// rendezvous hash of their first block over endpoints whose ports change every run: with
/// thirty, all three get some but once in ~70,000 runs.)
async fn conversations(routing: &str) -> (u64, usize) {
    let fakes = [FakeUpstream::start(2).await, FakeUpstream::start(2).await, FakeUpstream::start(2).await];
    let urls: Vec<&str> = fakes.iter().map(|f| f.url.as_str()).collect();
    let b = backend(&urls, &format!("routing = \"{routing}\"\nprefix_block_bytes = 64")).await;
    let mut cached = 0;
    for c in 0..30 {
        for turn in 0..4 {
            let question =
                format!("Conversation {c} begins here. ") + &"and then some more words ".repeat(turn * 10 + 5);
            cached += run(&b, chat(&question, Some(2))).await.unwrap().receipt.usage.cached_tokens;
        }
    }
    (cached, fakes.iter().filter(|f| !f.generations().is_empty()).count())
}

#[tokio::test]
async fn prefix_routing_keeps_conversations_where_their_prefix_is_cached() {
    let (prefix, used) = conversations("prefix").await;
    let (round_robin, _) = conversations("round-robin").await;
    assert_eq!(used, 3, "new conversations are spread over the endpoints");
    assert!(prefix > round_robin, "prefix-aware {prefix} cached tokens vs round robin {round_robin}");
}

async fn wait_for(condition: impl Fn() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not met within 5 s");
}

#[tokio::test]
async fn active_health_checks_take_an_endpoint_out_and_back() {
    let sick = FakeUpstream::start(2).await;
    let well = FakeUpstream::start(2).await;
    let text = format!(
        "[[model]]\nname = \"{MODEL}\"\nupstream_model = \"{FAKE_UPSTREAM_MODEL}\"\nrouting = \"round-robin\"\n\
         [model.health]\ninterval_ms = 20\ntimeout_ms = 200\n\
         [[model.endpoint]]\nurl = \"{}\"\n[[model.endpoint]]\nurl = \"{}\"\n",
        sick.url, well.url
    );
    let mut registry = prometheus_client::registry::Registry::default();
    let b = UpstreamBackend::connect(FleetConfig::parse(&text, "test").unwrap(), &mut registry).await.unwrap();
    sick.set_healthy(false);
    wait_for(|| !b.models()[0].endpoints[0].healthy).await;
    assert!(b.model_healthy(MODEL), "one endpoint is enough");
    for i in 0..4 {
        run(&b, chat(&format!("q{i}"), None)).await.unwrap();
    }
    assert_eq!(sick.generations().len(), 0, "an endpoint failing its checks gets no requests");
    // With every endpoint failing its checks the model is down, but a request still tries.
    well.set_healthy(false);
    wait_for(|| !b.model_healthy(MODEL)).await;
    assert!(!b.healthy());
    assert!(run(&b, chat("anyway", None)).await.is_ok());
    sick.set_healthy(true);
    wait_for(|| b.models()[0].endpoints[0].healthy).await;
    assert!(b.model_healthy(MODEL));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("upstream_endpoint_healthy"), "{text}");
}

#[tokio::test]
async fn llama_server_shaped_tokenizers_are_spoken_too() {
    let fake = FakeUpstream::start(4).await;
    fake.set_llama_server_api(true);
    fake.set_fault(Fault::NoUsage, 1);
    let b = backend(&[&fake.url], "").await;
    // The chat is rendered by /apply-template, then tokenized from `content`.
    let o = run(&b, chat("five words in this prompt", None)).await.unwrap();
    assert_eq!(o.receipt.usage, usage(5, 0, 4));
    let t = b.tokenize(text_input("one two three")).await.unwrap();
    assert_eq!(t.tokens, vec![0, 1, 2]);
    assert_eq!(b.detokenize(MODEL, &[7, 8]).await.unwrap(), "t0 t1");
    // An engine that returns no tokens for a non-empty prompt is an error, never a count of 0.
    fake.set_llama_server_api(false);
    let empty = b.tokenize(text_input("   ")).await;
    assert!(matches!(empty, Err(BackendError::UpstreamFailed(_))), "{empty:?}");
}

/// Upstream always gets an explicit `max_tokens`, the one the hold is computed from: the
/// client's, or the context left after the prompt as the engine counts it (else the engine
/// would generate to the end of its own context, past what was held). A prompt that fills
/// the context is refused before anything runs.
#[tokio::test]
async fn max_tokens_is_always_explicit_upstream() {
    let fake = FakeUpstream::start(3).await;
    let b = backend(&[&fake.url], "max_context = 10").await;
    let prepared = b.prepare(chat("one two three four", None)).await.unwrap();
    assert_eq!(prepared.max_completion_tokens, 6, "the hold: 10 - 4 prompt tokens");
    drop(prepared);
    let o = run(&b, chat("one two three four", None)).await.unwrap();
    assert_eq!(o.receipt.usage, usage(4, 0, 3));
    assert_eq!(fake.generations()[0].body["max_tokens"], 6);

    let o = run(&b, chat("five six", Some(2))).await.unwrap();
    assert_eq!(o.receipt.usage, usage(2, 0, 2));
    assert_eq!(fake.generations()[1].body["max_tokens"], 2, "the client's own");

    // Declared tools take room too: the engine's count of the messages does not see them.
    let wide = backend(&[&fake.url], "max_context = 1000").await;
    let tools = tm_backend::Tools {
        functions: vec![tm_backend::FunctionTool {
            name: "lookup".into(),
            description: Some("Looks a word up".into()),
            parameters: json!({"type": "object", "properties": {"word": {"type": "string"}}}),
            field: "tools[0].function.parameters".into(),
        }],
        choice: tm_backend::ToolChoice::Auto,
        parallel: true,
    };
    let tools_bytes = serde_json::Value::from(tools.openai_json()).to_string().len() as u64;
    let mut with_tools = chat("one two three four", None);
    with_tools.output.tools = Some(tools);
    let prepared = wide.prepare(with_tools).await.unwrap();
    assert_eq!(prepared.max_completion_tokens, 1000 - 4 - tools_bytes);

    let full = "w ".repeat(10);
    match b.prepare(chat(&full, None)).await {
        Err(BackendError::ContextLengthExceeded { max_context: 10, prompt: 10, .. }) => {}
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a prompt that fills the context was accepted"),
    }
    assert_eq!(fake.generations().len(), 2, "nothing ran for it");
}
