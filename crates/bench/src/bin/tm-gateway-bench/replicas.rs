//! `--replicas N`: 1, 2, … N gateway replicas on one PostgreSQL database (and one Redis for
//! the rate limits), behind a round-robin balancer, against the same backend called
//! directly: aggregate requests per second (closed loop) and latency at a fixed rate (open
//! loop), in one table. The replicas run in this process on one runtime, so on a small
//! machine the table shows what coordinating replicas costs, not how they scale out.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tm_backend::Backend;
use tm_testkit::fake_engine::{FakeEngine, FAKE_MODEL};

use crate::load::{closed_loop, open_loop, Latency};
use crate::{admin_id, build_app, serve_direct, servers_settled, Args};

/// Per-minute limits high enough never to refuse: checked on every request, never hit.
const HIGH_LIMIT: &str = "1000000000";

pub fn run(args: &Args) -> Result<()> {
    anyhow::ensure!(args.database_url.is_some(), "--replicas needs --database-url (one PostgreSQL database)");
    let servers =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.server_threads).enable_all().build()?;
    let backend: Arc<dyn Backend> = Arc::new(FakeEngine::new(Duration::ZERO, 100_000));
    let mut tasks = tokio::task::JoinSet::new();
    let mut urls = Vec::new();
    let mut control = None;
    let mut dirs = Vec::new();
    for i in 0..args.replicas {
        let dir = std::env::temp_dir().join(format!("tm-replica-bench-{i}-{}", uuid::Uuid::new_v4().simple()));
        let app = servers.block_on(build_app(args, &dir, backend.clone(), HIGH_LIMIT))?;
        urls.push(format!("http://{}", app.inference_addr().context("no inference listener")?));
        control.get_or_insert_with(|| app.control().clone());
        let _guard = servers.enter();
        tasks.spawn(async move {
            let _ = app.run(std::future::pending()).await;
        });
        dirs.push(dir);
    }
    let direct = {
        let _guard = servers.enter();
        servers.block_on(serve_direct(&mut tasks, backend))?
    };
    let control = control.context("no replica")?;
    let client = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    client.block_on(async {
        let http = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency * 2).build()?;
        println!(
            "backend: the stand-in engine (1 token, no delay) | server threads {} (all replicas) | postgresql | rate limits in {}",
            args.server_threads,
            if args.redis_url.is_some() { "redis" } else { "each process" }
        );
        let mut targets: Vec<(String, Vec<String>)> = vec![("direct".into(), vec![direct.clone()])];
        for n in 1..=urls.len() {
            targets.push((format!("{n} replica{}", if n > 1 { "s" } else { "" }), urls[..n].to_vec()));
        }
        for (_, urls) in &targets {
            closed_loop(&http, urls, FAKE_MODEL, 8, 500).await?;
        }
        let mut rows = Vec::new();
        for (name, urls) in &targets {
            let rps = closed_loop(&http, urls, FAKE_MODEL, args.concurrency, args.requests).await?;
            let mut runs = Vec::new();
            for _ in 0..2 {
                runs.push(open_loop(&http, urls, FAKE_MODEL, args.rate, args.seconds).await?);
            }
            rows.push((name.clone(), rps, Latency::mean(&runs)));
        }
        servers_settled(&control).await?;
        println!(
            "\n{:<12} {:>12} {:>10} {:>10} {:>12} {:>12} {:>7}",
            "target",
            format!("req/s c={}", args.concurrency),
            "p50 ms",
            "p99 ms",
            "added p50",
            "added p99",
            "errors"
        );
        let (direct_p50, direct_p99) = (rows[0].2.p50, rows[0].2.p99);
        for (name, rps, l) in &rows {
            println!(
                "{name:<12} {rps:>12.0} {:>10.3} {:>10.3} {:>12.3} {:>12.3} {:>7}",
                l.p50,
                l.p99,
                l.p50 - direct_p50,
                l.p99 - direct_p99,
                l.errors
            );
        }
        println!("(latency at {} req/s for {} s, twice, averaged)", args.rate, args.seconds);
        let held = control.store().ledger().total_held().await?;
        let records = control.store().usage().records(&admin_id(&control).await?).await?.len();
        println!("usage records written: {records}; money still held after the run: {held}");
        anyhow::Ok(())
    })?;
    drop(tasks);
    drop(servers);
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}
