//! Several replicas on one PostgreSQL database (issue 20): the money stays exact while
//! requests are spread over them and while one starts in the middle of the traffic.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tm_money::{Nanos, Price};
use tm_testkit::fake_engine::{FakeEngine, FAKE_MODEL};

use crate::common::{start_with, Engine, Options, Servers};
use crate::metering::{domain, funded_user, mixed_plans, reconcile, run, set_price, wait_until_settled, Outcome};

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
