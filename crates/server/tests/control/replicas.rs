//! Several replicas on one PostgreSQL database (issue 20): the money stays exact while
//! requests are spread over them and while one starts in the middle of the traffic; what
//! one revokes, every other refuses at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::Method;
use tm_money::{Nanos, Price};
use tm_testkit::fake_engine::{FakeEngine, FAKE_MODEL};

use crate::call;
use crate::common::{chat_as, start_with, Engine, Options, Servers};
use crate::metering::{
    domain, funded_user, mixed_plans, real_plans, reconcile, run, set_price, wait_until_settled, Outcome,
};

fn replica(db: &tm_testkit::TestDb) -> Servers {
    start_with(db, Engine::Given(Arc::new(FakeEngine::new(Duration::from_millis(2), 64))), Options::default())
}

/// 300 requests (70 % streamed, 30 % of those dropped, 5 % malformed) spread over two
/// replicas, a third started while the first two stream. Each start sweeps the database;
/// before replicas held money per instance, a start voided every hold, so the running
/// replicas' settlements failed and their requests went unbilled. After: per user,
/// credit - balance = the usage costs, one usage row per 200, nothing held once idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_bill_every_request_exactly_once() {
    let Some(db) = tm_testkit::postgres().await else { return };
    let first = replica(&db);
    let price = Price { input: Nanos(1_234_567), output: Nanos(4_567_891), cached: Nanos(345_678) };
    // Before the others start: each replica caches prices.
    set_price(&first.control, FAKE_MODEL, price).await;
    let second = replica(&db);
    let control = domain(&db).await;
    const CREDIT: i64 = 16_000;
    let mut users = Vec::new();
    for u in 0..3 {
        users.push(funded_user(&control, &format!("r{u}@replicas.io"), CREDIT, 2).await);
    }
    let mut plans = mixed_plans(&users, 300).into_iter();
    let urls = [first.inference.clone().unwrap(), second.inference.clone().unwrap()];
    let phase_one: Vec<_> = plans.by_ref().take(150).enumerate().map(|(i, p)| (urls[i % 2].clone(), p)).collect();
    let load = futures::stream::iter(phase_one).map(|(url, p)| async move { run(&url, p).await }).buffer_unordered(16);
    let started_third = async {
        // Once streams run on both: the third replica's start sweeps while they do.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (held, db) = (control.store().ledger().total_held().await.unwrap(), db.clone());
        let third = tokio::task::spawn_blocking(move || replica(&db)).await.unwrap();
        (held, third)
    };
    let (mut outcomes, (held_at_start, third)): (Vec<Outcome>, _) = tokio::join!(load.collect(), started_third);
    assert!(held_at_start > 0, "the third replica should start while money is held for running requests");
    let urls = [urls[0].clone(), urls[1].clone(), third.inference.clone().unwrap()];
    let phase_two: Vec<_> = plans.enumerate().map(|(i, p)| (urls[i % 3].clone(), p)).collect();
    outcomes.extend(
        futures::stream::iter(phase_two)
            .map(|(url, p)| async move { run(&url, p).await })
            .buffer_unordered(16)
            .collect::<Vec<Outcome>>()
            .await,
    );
    wait_until_settled(&control).await;

    let count = |s: u16| outcomes.iter().filter(|o| o.status == s).count();
    eprintln!(
        "3 replicas: 200 x{}, 400 x{}, 402 x{}, {} streams dropped mid-way",
        count(200),
        count(400),
        count(402),
        outcomes.iter().filter(|o| o.disconnected).count()
    );
    assert!(outcomes.iter().all(|o| [200, 400, 402].contains(&o.status)), "{outcomes:?}");
    assert!(count(200) > 100 && count(402) > 0, "the load should serve most and exhaust some balances");
    assert!(outcomes.iter().any(|o| o.disconnected && o.status == 200), "no disconnect happened");
    reconcile("3 replicas on postgres", &control, &users, CREDIT, price, &outcomes, true).await;
}

/// How long `replica` goes on accepting `key` (polled every 20 ms, for at most 5 s).
async fn accepted_for(replica: &str, key: &str) -> Duration {
    let started = Instant::now();
    loop {
        let (status, _, _) = chat_as(replica, key, &hello()).await;
        if status == 401 {
            return started.elapsed();
        }
        assert_eq!(status, 200);
        assert!(started.elapsed() < Duration::from_secs(5), "the replica still accepts a revoked key after 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hello() -> serde_json::Value {
    serde_json::json!({"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
}

/// A key deleted through one replica, and a user disabled by the operator command (another
/// process on the database), are refused by the other replica at once, though it had the
/// key checks cached: the change notices (PostgreSQL `NOTIFY`) empty its cache. Without
/// them its cache lives for `key_cache_ttl` on the test's clock, which stands still: the
/// keys would be accepted for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocations_reach_every_replica_at_once() {
    let Some(db) = tm_testkit::postgres().await else { return };
    let (first, second) = (replica(&db), replica(&db));
    let control = domain(&db).await;
    let (_, keys) = funded_user(&control, "revoked@replicas.io", 1_000_000_000, 1).await;
    let (disabled_id, disabled_keys) = funded_user(&control, "disabled@replicas.io", 1_000_000_000, 1).await;
    let (a, b) = (first.inference.clone().unwrap(), second.inference.clone().unwrap());
    for key in [&keys[0], &disabled_keys[0]] {
        for url in [&a, &b] {
            assert_eq!(chat_as(url, key, &hello()).await.0, 200, "cached on both replicas");
        }
    }

    let session = crate::login(&first.control, "revoked@replicas.io", "password-123").await;
    let delete = format!("/v1/users/api-keys?apiKey={}", keys[0]);
    assert_eq!(call(&first.control, &session.access, Method::DELETE, &delete, None).await.0, 200);
    let deleted = accepted_for(&b, &keys[0]).await;

    control.accounts().set_disabled(&disabled_id, true).await.unwrap();
    let disabled = accepted_for(&b, &disabled_keys[0]).await;
    assert_eq!(chat_as(&a, &disabled_keys[0], &hello()).await.0, 401);
    eprintln!("the other replica refused the deleted key after {deleted:?}, the disabled user's after {disabled:?}");
}

/// A user with money is not refused by one replica because another holds it: the first
/// request on replica A leases 33 times its worst case (the lease's headroom); a bigger one
/// on replica B a moment later needs more than the account has left unleased. B asks the
/// replicas for the user's unused leases, A gives its lease back, and B serves it. What
/// the account cannot cover even with every lease back is still refused at once (402).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_on_one_replica_does_not_starve_another() {
    let Some(db) = tm_testkit::postgres().await else { return };
    let first = replica(&db);
    // 1,000 nano-USD per output token, prompts free: a request's worst case is
    // max_tokens × 1,000.
    let price = Price { input: Nanos(0), output: Nanos(1_000_000_000), cached: Nanos(0) };
    set_price(&first.control, FAKE_MODEL, price).await;
    let second = replica(&db);
    let control = domain(&db).await;
    let (user_id, keys) = funded_user(&control, "leases@replicas.io", 400_000, 1).await;
    let ask = |max_tokens: u64| serde_json::json!({"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens});
    let (a, b) = (first.inference.clone().unwrap(), second.inference.clone().unwrap());

    assert_eq!(chat_as(&a, &keys[0], &ask(10)).await.0, 200);
    let account = control.store().ledger().account(&user_id).await.unwrap();
    // Held on A: 330,000 (10,000 and 32 times more), less what the request was charged.
    assert!(account.available_nanos() < 100_000, "A should still lease most of the money: {account:?}");
    let (status, _, response) = chat_as(&b, &keys[0], &ask(100)).await;
    assert_eq!(status, 200, "B should get A's unused lease: {}", response.text().await.unwrap());

    let (status, _, response) = chat_as(&b, &keys[0], &ask(1_000)).await;
    assert_eq!(status, 402, "1,000,000 is more than the account ever had: {}", response.text().await.unwrap());
    wait_until_settled(&control).await;
    let account = control.store().ledger().account(&user_id).await.unwrap();
    let charged: i64 = control.store().usage().records(&user_id).await.unwrap().iter().map(|r| r.cost_nanos).sum();
    assert_eq!(400_000 - account.balance_nanos, charged);
}

/// Rate limits kept in Redis hold across replicas: a user limited to 10 requests per
/// minute gets 10 of 20 requests spread over two replicas (each process alone would have
/// let 10 through, 20 in all); the refusals are 429 with `Retry-After`, and unbilled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_per_user_limit_holds_across_replicas() {
    let Some(db) = tm_testkit::postgres().await else { return };
    let Some(url) = tm_testkit::redis() else { return };
    let redis =
        tm_server::config::RedisLimits { url, timeout: Duration::from_millis(250), outage: tm_gateway::Outage::Refuse };
    let start = || {
        let options = Options { redis_limits: Some(redis.clone()), ..Options::default() };
        start_with(&db, Engine::Given(Arc::new(FakeEngine::new(Duration::ZERO, 64))), options)
    };
    let (first, second) = (start(), start());
    let control = domain(&db).await;
    let (user_id, keys) = funded_user(&control, "limited@replicas.io", 1_000_000_000, 2).await;
    control.accounts().set_limits(&user_id, Some(10), None).await.unwrap();
    let urls = [first.inference.clone().unwrap(), second.inference.clone().unwrap()];
    let mut statuses = Vec::new();
    for i in 0..20 {
        let (status, _, response) = chat_as(&urls[i % 2], &keys[i / 2 % 2], &hello()).await;
        if status == 429 {
            assert!(response.headers().contains_key("retry-after"));
        }
        statuses.push(status);
    }
    let served = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(served, 10, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 10, "{statuses:?}");
    wait_until_settled(&control).await;
    assert_eq!(control.store().usage().records(&user_id).await.unwrap().len(), served);
}

/// The same with the real engine (gemma 270M) in two replicas on one PostgreSQL database:
/// 40 chats spread over them, streams cut by their clients, balances run out; llama.cpp
/// stops each cut generation and the money reconciles to the nano-dollar.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_real_engine_replicas_reconcile_exactly() {
    let Some(db) = tm_testkit::postgres().await else { return };
    let first = start_with(&db, Engine::Real, Options::default());
    let price = Price { input: Nanos(1_234_567), output: Nanos(4_567_891), cached: Nanos(345_678) };
    set_price(&first.control, crate::common::MODEL, price).await;
    let second = start_with(&db, Engine::Real, Options::default());
    let control = domain(&db).await;
    const CREDIT: i64 = 1_500;
    let mut users = Vec::new();
    for u in 0..2 {
        users.push(funded_user(&control, &format!("gemma{u}@replicas.io"), CREDIT, 1).await);
    }
    let urls = [first.inference.clone().unwrap(), second.inference.clone().unwrap()];
    let outcomes: Vec<Outcome> = futures::stream::iter(real_plans(&users).into_iter().enumerate())
        .map(|(i, p)| {
            let url = urls[i % 2].clone();
            async move { run(&url, p).await }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    wait_until_settled(&control).await;
    let count = |s: u16| outcomes.iter().filter(|o| o.status == s).count();
    let dropped = outcomes.iter().filter(|o| o.disconnected).count();
    eprintln!(
        "2 gemma replicas: 200 x{}, 400 x{}, 402 x{}, {dropped} streams dropped",
        count(200),
        count(400),
        count(402)
    );
    assert!(outcomes.iter().all(|o| [200, 400, 402].contains(&o.status)), "{outcomes:?}");
    assert!(count(200) > 0 && count(402) > 0, "the load should serve and exhaust the balances");
    reconcile("2 gemma replicas on postgres", &control, &users, CREDIT, price, &outcomes, false).await;
}
