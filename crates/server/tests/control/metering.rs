//! Metering and prepaid billing of inference requests over real HTTP (docs/contracts.md §G4 (L4),
//! §G8 (F2), §G11 (F6)), with the stand-in engine so that hundreds of requests take seconds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use tm_control::{Control, Principal, Role};
use tm_money::{Nanos, Price};
use tm_testkit::fake_engine::{FakeEngine, FAKE_MODEL};
use tm_testkit::TestDb;

use crate::common::{chat_as, client, start_with, Engine, Options};
use crate::{admin_login, call};

/// The control-plane domain on the test's database (the server has its own).
pub(crate) async fn domain(db: &TestDb) -> Control {
    let store = tm_store::Store::open(&db.url).await.unwrap();
    Control::new(store, Arc::new(tm_control::clock::SystemClock), Default::default())
}

/// A user with `keys` API keys and `credit` nano-USD.
pub(crate) async fn funded_user(control: &Control, email: &str, credit: i64, keys: usize) -> (String, Vec<String>) {
    let new = tm_control::accounts::NewUser {
        email: email.into(),
        password: "password-123".into(),
        role: Role::User,
        first_name: String::new(),
        last_name: String::new(),
    };
    let id = control.accounts().create(new).await.unwrap().id;
    let me = Principal { user_id: id.clone(), role: Role::User };
    let mut tokens = Vec::new();
    for i in 0..keys {
        tokens.push(control.keys().create(&me, None, format!("k{i}"), vec![], None).await.unwrap().token);
    }
    if credit > 0 {
        control.billing().grant(&id, credit, "test credit").await.unwrap();
    }
    (id, tokens)
}

/// Sets a model's price through the admin route (which also clears the server's price
/// cache).
pub(crate) async fn set_price(control_url: &str, model: &str, price: Price) {
    let admin = admin_login(control_url).await;
    let (_, list) = call(control_url, &admin.access, Method::GET, "/v1/admin/billing/serverless-pricing", None).await;
    let id = list["pricing"].as_array().unwrap().iter().find(|p| p["model"] == model).unwrap()["id"].clone();
    let money =
        |n: i64| json!({"currencyCode": "USD", "units": (n / 1_000_000_000).to_string(), "nanos": n % 1_000_000_000});
    let body = json!({"pricing": {"id": id, "inputTokenPrice": money(price.input.get()),
        "outputTokenPrice": money(price.output.get()), "cachedTokenPrice": money(price.cached.get())}});
    let (status, row) =
        call(control_url, &admin.access, Method::PUT, "/v1/admin/billing/serverless-pricing", Some(body)).await;
    assert_eq!(status, 200, "{row}");
}

pub(crate) async fn wait_until_settled(control: &Control) {
    for _ in 0..200 {
        if control.store().ledger().total_held().await.unwrap() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("money still held 10 s after the last request");
}

/// A small deterministic generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

pub(crate) struct Plan {
    user: usize,
    key: String,
    body: Value,
    stream: bool,
    /// Drop the connection after this many content events.
    drop_after: Option<usize>,
}

#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) user: usize,
    pub(crate) request_id: String,
    pub(crate) status: u16,
    pub(crate) retry_after: bool,
    pub(crate) stream: bool,
    pub(crate) disconnected: bool,
    /// Content pieces the client received.
    pub(crate) delivered: i64,
    /// The request's `max_tokens`, when it named one.
    pub(crate) asked: Option<i64>,
    pub(crate) usage: Option<Value>,
}

pub(crate) async fn run(url: &str, plan: Plan) -> Outcome {
    let response = client()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(&plan.key)
        // A client-chosen id must not become the settlement key.
        .header("x-request-id", "client-chosen-id")
        .json(&plan.body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let retry_after = response.headers().contains_key("retry-after");
    let mut out = Outcome {
        user: plan.user,
        request_id,
        status,
        retry_after,
        stream: plan.stream,
        disconnected: false,
        delivered: 0,
        asked: plan.body["max_tokens"].as_i64(),
        usage: None,
    };
    if status != 200 {
        return out;
    }
    if !plan.stream {
        let body: Value = response.json().await.unwrap();
        out.delivered = body["choices"][0]["message"]["content"].as_str().unwrap().split_whitespace().count() as i64;
        out.usage = Some(body["usage"].clone());
        return out;
    }
    let mut bytes = response.bytes_stream();
    let mut buffer = String::new();
    'read: while let Some(chunk) = bytes.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else { continue };
            if data == "[DONE]" {
                break 'read;
            }
            let v: Value = serde_json::from_str(data).unwrap();
            if v["choices"][0]["delta"]["content"].as_str().is_some_and(|c| !c.is_empty()) {
                out.delivered += 1;
                if plan.drop_after.is_some_and(|n| out.delivered as usize >= n) {
                    out.disconnected = true;
                    break 'read; // dropping the body closes the connection
                }
            }
            if !v["usage"].is_null() {
                out.usage = Some(v["usage"].clone());
            }
        }
    }
    out
}

/// `count` chat requests from `users` (round robin, one of their two keys at random): 70 %
/// streamed, 30 % of those dropped mid-stream, 5 % malformed, 10 % repeating a prompt
/// prefix, `max_tokens` 8-128. Deterministic.
pub(crate) fn mixed_plans(users: &[(String, Vec<String>)], count: usize) -> Vec<Plan> {
    let mut rng = Rng(0x5eed_0000_0000_0001);
    let shared = "You are a careful assistant who answers in one word only please";
    (0..count)
        .map(|i| {
            let user = i % users.len();
            let key = users[user].1[rng.below(2) as usize].clone();
            let stream = rng.chance(70);
            let drop_after = (stream && rng.chance(30)).then(|| 1 + rng.below(20) as usize);
            let max_tokens = 8 + rng.below(121);
            let prompt = if rng.chance(10) {
                format!("{shared} q{i}")
            } else {
                format!("question {i} about {} things", rng.below(1000))
            };
            let body = if rng.chance(5) {
                json!({"model": FAKE_MODEL, "messages": "not a list"})
            } else {
                json!({"model": FAKE_MODEL, "messages": [{"role": "user", "content": prompt}],
                       "max_tokens": max_tokens, "stream": stream,
                       "stream_options": {"include_usage": true}})
            };
            Plan { user, key, body, stream, drop_after }
        })
        .collect()
}

/// L4: 300 chat requests at concurrency 16 from three users with small balances; 70 %
/// streamed, 30 % of those dropped mid-stream, 5 % malformed, 10 % repeating a prompt
/// prefix. Afterwards the money reconciles to the nano-dollar.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_streams_with_disconnects_reconcile_exactly() {
    for db in tm_testkit::all().await {
        let engine = Arc::new(FakeEngine::new(Duration::from_millis(2), 64));
        let s = start_with(&db, Engine::Given(engine), Options::default());
        let url = s.inference.clone().unwrap();
        // Prices that do not divide evenly, so per-request rounding is exercised.
        let price = Price { input: Nanos(1_234_567), output: Nanos(4_567_891), cached: Nanos(345_678) };
        set_price(&s.control, FAKE_MODEL, price).await;
        let control = domain(&db).await;
        const CREDIT: i64 = 16_000;
        let mut users = Vec::new();
        for u in 0..3 {
            users.push(funded_user(&control, &format!("u{u}@{}.io", db.kind), CREDIT, 2).await);
        }

        let plans = mixed_plans(&users, 300);

        // I3 sampled while the load runs: no available balance ever below zero.
        let running = Arc::new(AtomicBool::new(true));
        let sampler = {
            let (control, running, ids) =
                (control.clone(), running.clone(), users.iter().map(|u| u.0.clone()).collect::<Vec<_>>());
            async move {
                let mut samples = 0;
                while running.load(Ordering::SeqCst) {
                    for id in &ids {
                        let a = control.store().ledger().account(id).await.unwrap();
                        assert!(a.available_nanos() >= 0 && a.held_nanos >= 0, "{a:?}");
                    }
                    samples += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                samples
            }
        };
        let load = async {
            let outcomes: Vec<Outcome> =
                futures::stream::iter(plans).map(|p| run(&url, p)).buffer_unordered(16).collect().await;
            running.store(false, Ordering::SeqCst);
            outcomes
        };
        let (outcomes, samples) = tokio::join!(load, sampler);
        assert!(samples > 0);
        wait_until_settled(&control).await;

        let statuses: Vec<u16> = outcomes.iter().map(|o| o.status).collect();
        let count = |s: u16| statuses.iter().filter(|&&x| x == s).count();
        eprintln!(
            "{}: 200 x{}, 400 x{}, 402 x{}, {} streams dropped mid-way",
            db.kind,
            count(200),
            count(400),
            count(402),
            outcomes.iter().filter(|o| o.disconnected).count()
        );
        assert!(statuses.iter().all(|s| [200, 400, 402].contains(s)), "{}: {statuses:?}", db.kind);
        for (what, status) in [("refused for funds", 402), ("malformed", 400), ("served", 200)] {
            assert!(statuses.contains(&status), "{}: nothing {what}", db.kind);
        }
        assert!(outcomes.iter().any(|o| o.disconnected && o.status == 200), "no disconnect happened");
        let ids: std::collections::HashSet<&str> = outcomes.iter().map(|o| o.request_id.as_str()).collect();
        assert_eq!(ids.len(), outcomes.len(), "request ids must be the server's own and unique");

        let cached_seen = reconcile(db.kind, &control, &users, CREDIT, price, &outcomes, true).await;
        assert!(cached_seen, "no request reused a prefix");
        assert!(outcomes.iter().any(|o| o.stream && o.status == 200 && !o.disconnected));
    }
}

/// The L4 checks, after the load: per user, the balance moved by exactly the sum of the
/// usage records' costs, each cost is the price of its tokens, nothing is held; every 200
/// has exactly one usage row and every refusal none; completed requests were billed what
/// their `usage` said, dropped streams at least what they received and at most what they
/// asked for, and at least one dropped stream less than that (its generation stopped when
/// its client left). How far the server ran ahead of a dropped client depends on how late
/// that client read its socket, so no tighter bound holds on a loaded machine; the
/// dedicated cancellation tests check that a generation stops. `one_token_per_event`: the
/// stand-in engine sends a content event per token. Returns whether any request was served
/// from the cache.
pub(crate) async fn reconcile(
    kind: &str,
    control: &Control,
    users: &[(String, Vec<String>)],
    credit: i64,
    price: Price,
    outcomes: &[Outcome],
    one_token_per_event: bool,
) -> bool {
    let mut cached_seen = false;
    let mut stopped_early = false;
    for (u, (user_id, _)) in users.iter().enumerate() {
        let rows = control.store().usage().records(user_id).await.unwrap();
        let account = control.store().ledger().account(user_id).await.unwrap();
        let charged: i64 = rows.iter().map(|r| r.cost_nanos).sum();
        assert_eq!(account.held_nanos, 0, "{}", kind);
        assert_eq!(credit - account.balance_nanos, charged, "{}: balance and usage disagree", kind);
        for r in &rows {
            let expected = price.cost(r.prompt_tokens as u64, r.cached_tokens as u64, r.completion_tokens as u64).get();
            assert_eq!(r.cost_nanos, expected, "{}: {r:?}", kind);
            cached_seen |= r.cached_tokens > 0;
        }
        let by_id: HashMap<&str, _> = rows.iter().map(|r| (r.request_id.as_str(), r)).collect();
        for o in outcomes.iter().filter(|o| o.user == u) {
            let row = by_id.get(o.request_id.as_str());
            if o.status != 200 {
                assert!(row.is_none(), "{}: a refused request was billed: {o:?}", kind);
                continue;
            }
            let row = row.unwrap_or_else(|| panic!("{}: a served request has no usage row: {o:?}", kind));
            if o.disconnected {
                let asked = o.asked.unwrap_or(i64::MAX);
                assert!(
                    o.delivered <= row.completion_tokens && row.completion_tokens <= asked,
                    "{}: delivered {} of {asked} asked for but billed {} completion tokens",
                    kind,
                    o.delivered,
                    row.completion_tokens
                );
                stopped_early |= row.completion_tokens < asked;
            } else {
                let usage = o.usage.as_ref().unwrap_or_else(|| panic!("no usage: {o:?}"));
                assert_eq!(usage["prompt_tokens"], row.prompt_tokens, "{o:?}");
                assert_eq!(usage["completion_tokens"], row.completion_tokens, "{o:?}");
                assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], row.cached_tokens, "{o:?}");
                if one_token_per_event {
                    assert_eq!(o.delivered, row.completion_tokens, "{o:?}");
                }
            }
        }
        assert_eq!(rows.len(), outcomes.iter().filter(|o| o.user == u && o.status == 200).count());
    }
    let dropped = outcomes.iter().any(|o| o.disconnected && o.status == 200);
    assert!(!dropped || stopped_early, "{kind}: every dropped stream was generated to its end");
    cached_seen
}

/// 40 chats for the real engine from `users` (round robin, their first key): 60 % streamed,
/// 40 % of those dropped after 1-4 pieces, 5 % malformed, a quarter with a shared system
/// prompt, `max_tokens` 8-32 with `ignore_eos`. Deterministic.
pub(crate) fn real_plans(users: &[(String, Vec<String>)]) -> Vec<Plan> {
    let mut rng = Rng(0x5eed_0000_0000_0002);
    let shared = "You are a helpful assistant for a small bakery in Lyon. Answer briefly.";
    (0..40)
        .map(|i| {
            let user = i % users.len();
            let stream = rng.chance(60);
            let drop_after = (stream && rng.chance(40)).then(|| 1 + rng.below(4) as usize);
            let max_tokens = 8 + rng.below(25);
            let system = if rng.chance(25) { shared.to_owned() } else { format!("Request {i}.") };
            let body = if rng.chance(5) {
                json!({"model": crate::common::MODEL, "messages": 7})
            } else {
                json!({"model": crate::common::MODEL, "max_tokens": max_tokens, "stream": stream,
                       "stream_options": {"include_usage": true}, "ignore_eos": true,
                       "messages": [{"role": "system", "content": system}, {"role": "user", "content": format!("Item {i}?")}]})
            };
            Plan { user, key: users[user].1[0].clone(), body, stream, drop_after }
        })
        .collect()
}

/// L4's slower variant through the real engine (gemma 270M, SQLite): llama.cpp itself must
/// stop a generation whose client left and report what it computed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn real_engine_streams_with_disconnects_reconcile_exactly() {
    let db = tm_testkit::sqlite();
    let s = start_with(&db, Engine::Real, Options::default());
    let url = s.inference.clone().unwrap();
    let price = Price { input: Nanos(1_234_567), output: Nanos(4_567_891), cached: Nanos(345_678) };
    set_price(&s.control, crate::common::MODEL, price).await;
    let control = domain(&db).await;
    const CREDIT: i64 = 1_500;
    let mut users = Vec::new();
    for u in 0..2 {
        users.push(funded_user(&control, &format!("real{u}@example.com"), CREDIT, 1).await);
    }
    let plans = real_plans(&users);
    let outcomes: Vec<Outcome> = futures::stream::iter(plans).map(|p| run(&url, p)).buffer_unordered(4).collect().await;
    wait_until_settled(&control).await;
    let statuses: Vec<u16> = outcomes.iter().map(|o| o.status).collect();
    let count = |s: u16| statuses.iter().filter(|&&x| x == s).count();
    let dropped = outcomes.iter().filter(|o| o.disconnected).count();
    eprintln!("real engine: 200 x{}, 400 x{}, 402 x{}, {dropped} streams dropped", count(200), count(400), count(402));
    assert!(statuses.iter().all(|s| [200, 400, 402].contains(s)), "{statuses:?}");
    assert!(statuses.contains(&402) && statuses.contains(&200), "{statuses:?}");
    assert!(outcomes.iter().any(|o| o.disconnected && o.status == 200), "no disconnect happened");
    reconcile("sqlite, real engine", &control, &users, CREDIT, price, &outcomes, false).await;
}

/// F2: more concurrent requests than the engine admits: only 200 or 503 with
/// `Retry-After`, and the refused ones leave no usage and no hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_is_refused_explicitly_and_not_billed() {
    for db in tm_testkit::all().await {
        let engine = Arc::new(FakeEngine::new(Duration::from_millis(5), 4));
        let s = start_with(&db, Engine::Given(engine), Options::default());
        let url = s.inference.clone().unwrap();
        let control = domain(&db).await;
        let (user_id, keys) = funded_user(&control, &format!("f2@{}.io", db.kind), 1_000_000_000, 1).await;
        let body = json!({"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 32});
        let plans = (0..40).map(|_| Plan {
            user: 0,
            key: keys[0].clone(),
            body: body.clone(),
            stream: false,
            drop_after: None,
        });
        let outcomes: Vec<Outcome> = futures::future::join_all(plans.map(|p| run(&url, p))).await;
        let ok = outcomes.iter().filter(|o| o.status == 200).count();
        assert!(ok >= 4, "{}", db.kind);
        for o in &outcomes {
            assert!(o.status == 200 || (o.status == 503 && o.retry_after), "{o:?}");
        }
        assert!(outcomes.iter().any(|o| o.status == 503), "{}: nothing was refused", db.kind);
        wait_until_settled(&control).await;
        let rows = control.store().usage().records(&user_id).await.unwrap();
        assert_eq!(rows.len(), ok, "{}: only served requests are billed", db.kind);
    }
}

/// F6: a key limited to 10 requests per minute: a burst of 15 gives 10 × 200 and 5 × 429
/// with `Retry-After` and `x-ratelimit-*`; 429s are not billed; after the wait it passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_refuse_with_retry_after_and_bill_nothing() {
    let db = tm_testkit::sqlite();
    let engine = Arc::new(FakeEngine::new(Duration::ZERO, 64));
    let s = start_with(&db, Engine::Given(engine), Options { key_limits: (10, 1_000), ..Options::default() });
    let url = s.inference.clone().unwrap();
    let control = domain(&db).await;
    let (user_id, keys) = funded_user(&control, "f6@example.com", 1_000_000_000, 1).await;
    let request = |max_tokens: u64| {
        client()
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(&keys[0])
            .json(&json!({"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}))
            .send()
    };
    let mut statuses = Vec::new();
    let mut retry_after = 0;
    for _ in 0..15 {
        let r = request(50).await.unwrap();
        let status = r.status().as_u16();
        let h = r.headers();
        assert_eq!(h["x-ratelimit-limit-requests"], "10");
        assert_eq!(h["x-ratelimit-limit-tokens"], "1000");
        assert!(h.contains_key("x-ratelimit-remaining-requests") && h.contains_key("x-ratelimit-reset-requests"));
        if status == 429 {
            retry_after = h["retry-after"].to_str().unwrap().parse::<u64>().unwrap();
            assert!(retry_after >= 1);
            let body: Value = r.json().await.unwrap();
            assert_eq!(
                (body["error"]["code"].as_str(), body["error"]["type"].as_str()),
                (Some("rate_limit_exceeded"), Some("requests"))
            );
        }
        statuses.push(status);
    }
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 10, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|&&s| s == 429).count(), 5, "{statuses:?}");
    wait_until_settled(&control).await;
    assert_eq!(control.store().usage().records(&user_id).await.unwrap().len(), 10);

    // After the indicated wait a request passes the requests limit again. One needing more
    // tokens than the whole minute allows is refused as too large; one needing more than
    // what is left of the tokens (10 x 53 were used) waits for them; a small one passes.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(request(2_000).await.unwrap().status(), 400);
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let r = request(900).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["type"], "tokens");
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(request(8).await.unwrap().status(), 200);
    wait_until_settled(&control).await;
    assert_eq!(control.store().usage().records(&user_id).await.unwrap().len(), 11);
}

/// A user's override (what `tensormesh user set-limits` writes) replaces the defaults for
/// the user and caps each of their keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_override_limits_all_their_keys() {
    let db = tm_testkit::sqlite();
    let engine = Arc::new(FakeEngine::new(Duration::ZERO, 64));
    let s = start_with(&db, Engine::Given(engine), Options::default());
    let url = s.inference.clone().unwrap();
    let control = domain(&db).await;
    let (user_id, keys) = funded_user(&control, "limited@example.com", 1_000_000_000, 2).await;
    let limits = tm_store::rate_limits::LimitOverride { requests_per_minute: Some(3), tokens_per_minute: None };
    control.store().rate_limits().set(&user_id, limits).await.unwrap();
    let mut statuses = Vec::new();
    for i in 0..4 {
        let r = client()
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(&keys[i % 2])
            .json(&json!({"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-ratelimit-limit-requests"], "3");
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429], "three per minute over both keys");
}

/// `n` choices through the real engine: the hold covers every choice's worst case (so a
/// balance that covers one choice is refused for four), the usage row counts the prompt
/// once and every choice's tokens, and the charge is exactly the response's usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn choices_are_held_for_together_and_billed_once_each() {
    let db = tm_testkit::sqlite();
    let s = start_with(&db, Engine::Real, Options::default());
    let url = s.inference.clone().unwrap();
    // 1,000 nano-USD a token in and out, 500 cached.
    let price = Price { input: Nanos(1_000_000_000), output: Nanos(1_000_000_000), cached: Nanos(500_000_000) };
    set_price(&s.control, crate::common::MODEL, price).await;
    let control = domain(&db).await;
    const CREDIT: i64 = 70_000;
    let (user, keys) = funded_user(&control, "choices@example.com", CREDIT, 1).await;
    let ask = |n: u32| {
        json!({"model": crate::common::MODEL, "messages": [{"role": "user", "content": "Hi"}], "n": n,
               "max_tokens": 20, "ignore_eos": true})
    };
    let post = |body: Value| {
        let (url, key) = (url.clone(), keys[0].clone());
        async move {
            let (status, id, r) = chat_as(&url, &key, &body).await;
            (status, id, r.json::<Value>().await.unwrap())
        }
    };
    // Four choices of 20 tokens: over 80,000 held, more than the balance.
    let (status, _, v) = post(ask(4)).await;
    assert_eq!(status, 402, "{v}");
    // Two fit (the rendered prompt is 25 tokens: 65,000 held).
    let (status, id, v) = post(ask(2)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    let usage = &v["usage"];
    assert_eq!(usage["completion_tokens"], 40);
    wait_until_settled(&control).await;
    let rows = control.store().usage().records(&user).await.unwrap();
    assert_eq!(rows.len(), 1, "one request, one usage row");
    let row = &rows[0];
    assert_eq!(row.request_id, id);
    let (prompt, cached) =
        (usage["prompt_tokens"].as_i64().unwrap(), usage["prompt_tokens_details"]["cached_tokens"].as_i64().unwrap());
    assert_eq!((row.prompt_tokens, row.cached_tokens, row.completion_tokens), (prompt, cached, 40));
    assert_eq!(row.cost_nanos, price.cost(prompt as u64, cached as u64, 40).get());
    let account = control.store().ledger().account(&user).await.unwrap();
    assert_eq!((account.balance_nanos, account.held_nanos), (CREDIT - row.cost_nanos, 0));
}

/// One user's long streams take at most `--user-concurrency` generations: the next one is a
/// 429 with `Retry-After` (not billed), while another user is still served; when one of
/// the streams ends, the user is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_users_streams_cannot_take_every_slot() {
    let db = tm_testkit::sqlite();
    let engine = Arc::new(FakeEngine::new(Duration::from_millis(50), 32));
    let s = start_with(&db, Engine::Given(engine), Options { user_concurrency: 3, ..Options::default() });
    let url = s.inference.clone().unwrap();
    let control = domain(&db).await;
    let (greedy, greedy_keys) = funded_user(&control, "greedy@example.com", 1_000_000_000, 2).await;
    let (_, other_keys) = funded_user(&control, "other@example.com", 1_000_000_000, 1).await;
    let ask = |key: &str, stream: bool, max_tokens: u64| {
        client()
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}],
                          "max_tokens": max_tokens, "stream": stream}))
            .send()
    };
    // Three long streams over two keys, held open (each would last 10 s).
    let mut streams = Vec::new();
    for i in 0..3 {
        let r = ask(&greedy_keys[i % 2], true, 200).await.unwrap();
        assert_eq!(r.status(), 200);
        streams.push(r);
    }
    let refused = ask(&greedy_keys[0], false, 4).await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_concurrent_requests", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("3 generations"), "{body}");
    // Someone else is served meanwhile.
    assert_eq!(ask(&other_keys[0], false, 4).await.unwrap().status(), 200);
    // One stream ends (its client leaves): the greedy user is served again.
    streams.pop();
    let mut served = false;
    for _ in 0..100 {
        if ask(&greedy_keys[1], false, 4).await.unwrap().status() == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "the slot of the closed stream was not given back");
    drop(streams);
    wait_until_settled(&control).await;
    let rows = control.store().usage().records(&greedy).await.unwrap();
    assert_eq!(rows.len(), 4, "three streams and one short answer are billed, the refusal is not");
}

/// Work that cannot be paid for is refused before it is done: a key with no money sending
/// a 3 MB prompt gets its 402 before the model's tokenizer reads it, and `/tokenize`
/// counts against the tokens-per-minute limit (over it: 429, the text not read).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unpaid_work_is_refused_before_it_is_done() {
    let db = tm_testkit::sqlite();
    let engine = Arc::new(FakeEngine::new(Duration::ZERO, 8));
    let options = Options { key_limits: (0, 1_000), max_body_bytes: 4 << 20, ..Options::default() };
    let s = start_with(&db, Engine::Given(engine.clone()), options);
    let url = s.inference.clone().unwrap();
    let control = domain(&db).await;
    let (_, broke) = funded_user(&control, "broke@example.com", 0, 1).await;
    let (_, paying) = funded_user(&control, "paying@example.com", 1_000_000_000, 1).await;

    let huge = "word ".repeat(600_000);
    let body = json!({"model": FAKE_MODEL, "messages": [{"role": "user", "content": huge}], "max_tokens": 4});
    let started = std::time::Instant::now();
    let r =
        client().post(format!("{url}/v1/chat/completions")).bearer_auth(&broke[0]).json(&body).send().await.unwrap();
    eprintln!("a 3 MB prompt from a key with no money refused in {:?}", started.elapsed());
    assert_eq!(r.status(), 402);
    assert_eq!(engine.prepared(), 0, "the prompt reached the tokenizer");
    // A small prompt goes the usual way (its 402 comes from admission, after tokenizing).
    let small = json!({"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
    let r =
        client().post(format!("{url}/v1/chat/completions")).bearer_auth(&broke[0]).json(&small).send().await.unwrap();
    assert_eq!(r.status(), 402);

    let tokenize = |words: usize| {
        client()
            .post(format!("{url}/tokenize"))
            .bearer_auth(&paying[0])
            .json(&json!({"model": FAKE_MODEL, "prompt": "w ".repeat(words)}))
            .send()
    };
    assert_eq!(tokenize(600).await.unwrap().status(), 200);
    let over = tokenize(600).await.unwrap();
    assert_eq!(over.status(), 429);
    assert!(over.headers().contains_key("retry-after"));
}

/// A response the client received whole is already billed: its usage record is in the
/// database when the last byte arrives (the JSON body, the stream's `[DONE]`), so
/// a process killed right after cannot lose the bill (`scripts/sigkill-billing` kills one
/// under load). Before, the bill was written after the response, off the request path,
/// after a 5 ms gathering window.
#[tokio::test]
async fn a_whole_response_is_billed_before_its_last_byte() {
    for db in tm_testkit::all().await {
        let engine = Arc::new(FakeEngine::new(Duration::ZERO, 8));
        let s = start_with(&db, Engine::Given(engine), Options::default());
        let url = s.inference.clone().unwrap();
        let control = domain(&db).await;
        let (_, keys) = funded_user(&control, "whole@example.com", 1_000_000_000, 1).await;
        let chat = |stream: bool| {
            json!({"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
                   "stream": stream})
        };
        for round in 0..5 {
            let (status, id, r) = chat_as(&url, &keys[0], &chat(false)).await;
            let _: Value = r.json().await.unwrap();
            let billed = control.store().usage().by_request(&id).await.unwrap();
            assert_eq!((status, billed.is_some()), (200, true), "{}: round {round}, non-streamed", db.kind);

            let (status, id, r) = chat_as(&url, &keys[0], &chat(true)).await;
            let data = crate::common::sse_data(r).await;
            assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
            let billed = control.store().usage().by_request(&id).await.unwrap();
            assert_eq!((status, billed.is_some()), (200, true), "{}: round {round}, streamed", db.kind);
        }
    }
}
