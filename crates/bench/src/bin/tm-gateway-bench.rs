//! `tm-gateway-bench`: what the gateway path (auth, rate limits, price, hold, settlement
//! and usage record) adds to a request, against a trivial backend (the stand-in engine,
//! one token, no delay) called directly over the same HTTP, in the same run.
//!
//! Both servers run in this process on their own runtime; the load generator runs on
//! another. Each is driven twice: closed loop (the most requests per second at a fixed
//! concurrency) and open loop at a fixed rate (latency measured from each request's
//! scheduled start, so queueing behind a slow one counts).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use clap::Parser;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde_json::{json, Value};
use tm_backend::{Backend, GenerateRequest, GenerationEvent, PromptInput, SamplingParams};
use tm_testkit::fake_engine::{FakeEngine, FAKE_MODEL};

const KEY: &str = "tm-bench-gateway-key-0123456789";

#[derive(Parser, Debug)]
struct Args {
    /// Requests per second of the open-loop runs.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of each open-loop run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrency of the closed-loop runs.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Requests of each closed-loop run.
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    /// Worker threads of the servers' runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// `postgres://...` of an empty database (e.g. `createdb tm_bench`) to keep billing in
    /// PostgreSQL; default: SQLite in a temp dir.
    #[arg(long)]
    database_url: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let servers =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.server_threads).enable_all().build()?;
    let backend: Arc<dyn Backend> = Arc::new(FakeEngine::new(Duration::ZERO, 100_000));
    let data_dir = std::env::temp_dir().join(format!("tm-gateway-bench-{}", uuid::Uuid::new_v4().simple()));
    let (gateway_url, direct_url, control, tasks) = servers.block_on(start(&args, &data_dir, backend))?;
    let client = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    client.block_on(async {
        let http = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency * 2).build()?;
        println!(
            "trivial backend: {FAKE_MODEL} (1 token, no delay) | server threads {} | db {}",
            args.server_threads,
            if args.database_url.is_some() { "postgresql" } else { "sqlite" }
        );
        // Warm both paths (connections, caches) before measuring.
        for url in [&direct_url, &gateway_url] {
            closed_loop(&http, url, 8, 500).await?;
        }
        let direct_rps = closed_loop(&http, &direct_url, args.concurrency, args.requests).await?;
        let gateway_rps = closed_loop(&http, &gateway_url, args.concurrency, args.requests).await?;
        // Alternated and averaged, so neither side always runs on a warmer machine.
        let (mut direct, mut gateway) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            direct.push(open_loop(&http, &direct_url, args.rate, args.seconds).await?);
            gateway.push(open_loop(&http, &gateway_url, args.rate, args.seconds).await?);
        }
        let (direct, gateway) = (Latency::mean(&direct), Latency::mean(&gateway));
        servers_settled(&control).await?;

        println!("\n{:<44} {:>10} {:>10} {:>8}", "figure", "direct", "gateway", "ratio");
        println!(
            "{:<44} {:>10.0} {:>10.0} {:>7.2}x",
            format!("requests/s, closed loop, {} clients", args.concurrency),
            direct_rps,
            gateway_rps,
            gateway_rps / direct_rps
        );
        for (name, d, g) in [("p50", direct.p50, gateway.p50), ("p99", direct.p99, gateway.p99)] {
            println!(
                "{:<44} {:>10.3} {:>10.3} {:>7.2}x",
                format!("latency {name} ms at {} req/s", args.rate),
                d,
                g,
                d / g
            );
        }
        println!("{:<44} {:>10} {:>10}", "errors (non-200)", direct.errors, gateway.errors);
        println!(
            "added by the gateway at {} req/s: p50 {:.3} ms, p99 {:.3} ms",
            args.rate,
            gateway.p50 - direct.p50,
            gateway.p99 - direct.p99
        );
        let rows = control.store().usage().records(&admin_id(&control).await?).await?.len();
        println!("usage records written: {rows} (every gateway request that got a 200, warm-up included)");
        println!("(ratio > 1: the gateway is as fast as direct; latency ratio = direct / gateway)");
        anyhow::Ok(())
    })?;
    drop(tasks);
    drop(servers);
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}

/// The two servers and the settler, as tasks of a set that ends them when dropped.
type Started = (String, String, tm_control::Control, tokio::task::JoinSet<()>);

async fn start(args: &Args, data_dir: &std::path::Path, backend: Arc<dyn Backend>) -> Result<Started> {
    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        serve: tm_server::config::ServeArgs,
    }
    let mut argv = vec![
        "serve".to_owned(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--admin-api-key".into(),
        KEY.into(),
        "--admin-password".into(),
        "bench-password-123".into(),
        "--admin-credit".into(),
        "1000000".into(),
    ];
    // Limits off: this measures their bookkeeping, not refusals.
    for flag in ["--key-rpm", "--key-tpm", "--user-rpm", "--user-tpm"] {
        argv.extend([flag.to_owned(), "0".to_owned()]);
    }
    if let Some(url) = &args.database_url {
        argv.extend(["--database-url".into(), url.clone()]);
    }
    let serve = Wrap::try_parse_from(argv)?.serve;
    let control = tm_server::serve::open_control(&serve, Arc::new(tm_control::clock::SystemClock)).await?;
    tm_server::serve::bootstrap(&control, &serve.admin, &serve.billing).await?;
    let tm_server::serve::Inference { router: app, settler, .. } =
        tm_server::serve::inference_app(&serve, control.clone(), backend.clone()).await?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(settler.run(std::future::pending()));
    let gateway = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let direct = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let urls = (format!("http://{}", gateway.local_addr()?), format!("http://{}", direct.local_addr()?));
    tasks.spawn(async move {
        let _ = axum::serve(gateway, app).await;
    });
    let direct_app = Router::new().route("/v1/chat/completions", post(direct_chat)).with_state(backend);
    tasks.spawn(async move {
        let _ = axum::serve(direct, direct_app).await;
    });
    Ok((urls.0, urls.1, control, tasks))
}

/// The same backend behind a bare handler: parse, generate, answer. No auth, limits or
/// billing.
async fn direct_chat(State(backend): State<Arc<dyn Backend>>, Json(body): Json<Value>) -> Json<Value> {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let request = GenerateRequest {
        model: body["model"].as_str().unwrap_or_default().to_owned(),
        prompt: PromptInput::Chat(messages),
        sampling: SamplingParams::default(),
        max_tokens: body["max_tokens"].as_u64().map(|m| m as u32),
        stop: Vec::new(),
        request_id: String::new(),
    };
    let mut text = String::new();
    let mut usage = json!(null);
    if let Ok(mut g) = backend.generate(request).await {
        while let Some(event) = g.events.recv().await {
            match event {
                GenerationEvent::Text(t) => text.push_str(&t),
                GenerationEvent::Finished { usage: u, .. } => {
                    usage = json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens});
                    break;
                }
                GenerationEvent::Failed(_) => break,
            }
        }
    }
    Json(
        json!({"object": "chat.completion", "choices": [{"message": {"role": "assistant", "content": text}}], "usage": usage}),
    )
}

fn body() -> Value {
    json!({"model": FAKE_MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]})
}

async fn one(http: &reqwest::Client, url: &str) -> Result<bool> {
    let r = http.post(format!("{url}/v1/chat/completions")).bearer_auth(KEY).json(&body()).send().await?;
    let ok = r.status() == 200;
    r.bytes().await?;
    Ok(ok)
}

/// Requests per second with `concurrency` clients each sending back to back.
async fn closed_loop(http: &reqwest::Client, url: &str, concurrency: usize, requests: usize) -> Result<f64> {
    let started = Instant::now();
    let results: Vec<Result<bool>> =
        futures::stream::iter(0..requests).map(|_| one(http, url)).buffer_unordered(concurrency).collect().await;
    let failed = results.iter().filter(|r| !matches!(r, Ok(true))).count();
    anyhow::ensure!(failed == 0, "{failed} of {requests} requests to {url} failed");
    Ok(requests as f64 / started.elapsed().as_secs_f64())
}

struct Latency {
    p50: f64,
    p99: f64,
    errors: usize,
}

impl Latency {
    fn mean(runs: &[Latency]) -> Latency {
        let n = runs.len() as f64;
        Latency {
            p50: runs.iter().map(|r| r.p50).sum::<f64>() / n,
            p99: runs.iter().map(|r| r.p99).sum::<f64>() / n,
            errors: runs.iter().map(|r| r.errors).sum(),
        }
    }
}

/// Latencies (ms) of `rate` requests per second for `seconds`, each measured from when it
/// was due.
async fn open_loop(http: &reqwest::Client, url: &str, rate: u64, seconds: u64) -> Result<Latency> {
    let total = rate * seconds;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut latencies = Vec::with_capacity(total as usize);
    let mut errors = 0;
    let mut sent = 0;
    while sent < total || !in_flight.is_empty() {
        let due = start + period * sent as u32;
        tokio::select! {
            () = tokio::time::sleep_until(due.into()), if sent < total => {
                sent += 1;
                in_flight.push(async move { (due, one(http, url).await) });
            }
            Some((due, result)) = in_flight.next() => {
                latencies.push(due.elapsed().as_secs_f64() * 1000.0);
                if !matches!(result, Ok(true)) {
                    errors += 1;
                }
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    Ok(Latency { p50: at(0.50), p99: at(0.99), errors })
}

async fn admin_id(control: &tm_control::Control) -> Result<String> {
    let admins = control.store().users().by_email("admin@localhost").await?;
    Ok(admins.context("no admin")?.id)
}

/// Waits (bounded) until every gateway request is settled.
async fn servers_settled(control: &tm_control::Control) -> Result<()> {
    for _ in 0..200 {
        if control.store().ledger().total_held().await? == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("holds remain 10 s after the load")
}
