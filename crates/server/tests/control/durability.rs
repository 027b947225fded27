//! Settlement outlives the database's absence (issue 20 item 2): PostgreSQL taken away for
//! 20 s in the middle of traffic (a proxy between the server and it is cut), and nothing
//! served goes unbilled once it is back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tm_money::{Nanos, Price};
use tm_testkit::fake_engine::{FakeEngine, FAKE_MODEL};
use tm_testkit::proxy::Proxy;
use tm_testkit::TestDb;

use crate::common::{start_with, Engine, Options};
use crate::metering::{domain, funded_user, mixed_plans, reconcile, run, set_price, wait_until_settled};

/// 30 s of traffic (streams, some cut by their clients) against one server whose database
/// goes away for 20 s after 3 s. While it is away, requests paid from money already leased
/// are served and their bills go to the journal; the others fail (5xx) and are not billed.
/// Once it is back: every 200 has its one usage record, each balance moved by exactly the
/// recorded costs, nothing stays held. Before the journal, bills that could not be written
/// within ~5 s were dropped ("these requests go unbilled").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_away_for_20_s_loses_no_bill() {
    let Some(db) = tm_testkit::postgres().await else { return };
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let proxied = TestDb { kind: db.kind, url: db.url.replace("127.0.0.1:5432", &proxy.addr().to_string()) };
    assert_ne!(proxied.url, db.url, "the test database should be on the local server");
    let s = start_with(
        &proxied,
        Engine::Given(Arc::new(FakeEngine::new(Duration::from_millis(2), 64))),
        Options::default(),
    );
    let url = s.inference.clone().unwrap();
    let price = Price { input: Nanos(1_234_567), output: Nanos(4_567_891), cached: Nanos(345_678) };
    set_price(&s.control, FAKE_MODEL, price).await;
    let control = domain(&db).await;
    const CREDIT: i64 = 1_000_000;
    let mut users = Vec::new();
    for u in 0..3 {
        users.push(funded_user(&control, &format!("d{u}@durability.io"), CREDIT, 2).await);
    }

    let started = Instant::now();
    let outage = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        proxy.cut();
        tokio::time::sleep(Duration::from_secs(20)).await;
        proxy.restore();
    };
    let load = futures::stream::iter(mixed_plans(&users, 100_000))
        .take_while(|_| futures::future::ready(started.elapsed() < Duration::from_secs(30)))
        .map(|p| {
            let url = url.clone();
            async move {
                let outcome = run(&url, p).await;
                (started.elapsed(), outcome)
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>();
    let ((), timed) = tokio::join!(outage, load);
    let during = |t: &Duration| *t > Duration::from_secs(3) && *t < Duration::from_secs(23);
    let served_away = timed.iter().filter(|(t, o)| during(t) && o.status == 200).count();
    let failed_away = timed.iter().filter(|(t, o)| during(t) && o.status >= 500).count();
    eprintln!(
        "{} requests; while the database was away: {served_away} served (journaled), {failed_away} failed",
        timed.len()
    );
    assert!(served_away > 0, "requests paid from leases should be served while the database is away");
    let outcomes: Vec<_> = timed.into_iter().map(|(_, o)| o).collect();
    assert!(outcomes.iter().all(|o| [200, 400, 402, 500, 503].contains(&o.status)), "{outcomes:?}");
    wait_until_settled(&control).await;
    reconcile("postgres away for 20 s", &control, &users, CREDIT, price, &outcomes, true).await;
}
