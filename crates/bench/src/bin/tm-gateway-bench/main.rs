//! `tm-gateway-bench`: what the gateway path (auth, rate limits, price, hold, settlement
//! and usage record) adds to a request, against a trivial backend (the stand-in engine,
//! one token, no delay) called directly over the same HTTP, in the same run. With
//! `--upstream`, the backend is tm-upstream in front of a fake OpenAI-compatible engine
//! (mock), compared with calling that engine directly and, with `--litellm`, with LiteLLM's
//! proxy configured for the same engine.
//!
//! Both servers run in this process on their own runtime; the load generator runs on
//! another. Each is driven twice: closed loop (the most requests per second at a fixed
//! concurrency) and open loop at a fixed rate (latency measured from each request's
//! scheduled start, so queueing behind a slow one counts).

mod litellm;
mod load;
mod replicas;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use clap::Parser;
use serde_json::{json, Value};
use tm_backend::{Backend, GenerateRequest, GenerationEvent, PromptInput, SamplingParams};
use tm_server::app::{App, Engines};
use tm_testkit::fake_engine::{FakeEngine, FAKE_MODEL};
use tm_testkit::fake_upstream::{FakeUpstream, FAKE_UPSTREAM_MODEL};
use tm_upstream::{FleetConfig, UpstreamBackend};

use litellm::LiteLlm;
use load::{closed_loop, open_loop, Latency};

/// The bearer key of every target (LiteLLM's master key wants an `sk-` prefix).
const KEY: &str = "sk-tm-bench-gateway-key-0123456789";
/// The fleet model's name at the gateway and at LiteLLM.
const FLEET_MODEL: &str = "fleet";

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
    /// Serve through tm-upstream in front of a fake OpenAI-compatible engine (mock) on
    /// loopback; "direct" is then that engine called without the gateway.
    #[arg(long)]
    upstream: bool,
    /// With --upstream: LiteLLM's `litellm` executable (`pip install 'litellm[proxy]'`),
    /// run as a proxy for the same fake engine and measured in the same run.
    #[arg(long)]
    litellm: Option<std::path::PathBuf>,
    /// With --litellm: a second open-loop rate, one LiteLLM can sustain.
    #[arg(long, default_value_t = 50)]
    low_rate: u64,
    /// With --litellm: its proxy's worker processes.
    #[arg(long, default_value_t = 2)]
    litellm_workers: u32,
    /// Replicas on one PostgreSQL database (needs --database-url): measures 1, 2, … up to
    /// this many behind a round-robin balancer, with the rate limits on (very high, so that
    /// they are checked, never hit) and in Redis with --redis-url. Replaces the default run.
    #[arg(long, default_value_t = 0)]
    replicas: usize,
    /// `redis://HOST:PORT/DB` for --replicas.
    #[arg(long)]
    redis_url: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.replicas > 0 {
        return replicas::run(&args);
    }
    let servers =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.server_threads).enable_all().build()?;
    let data_dir = std::env::temp_dir().join(format!("tm-gateway-bench-{}", uuid::Uuid::new_v4().simple()));
    // The backend behind the gateway, and what "direct" is: the same backend behind a bare
    // handler, or (--upstream) the fake engine itself, called without the gateway.
    let (backend, fake, model): (Arc<dyn Backend>, Option<FakeUpstream>, &str) = if args.upstream {
        servers.block_on(async {
            let fake = FakeUpstream::start(1).await;
            let fleet = format!(
                "[[model]]\nname = \"{FLEET_MODEL}\"\nupstream_model = \"{FAKE_UPSTREAM_MODEL}\"\n\
                 [[model.endpoint]]\nurl = \"{}\"\nmax_concurrency = 100000\n",
                fake.url
            );
            let config = FleetConfig::parse(&fleet, "bench")?;
            let mut registry = prometheus_client::registry::Registry::default();
            let backend = UpstreamBackend::connect(config, &mut registry).await.map_err(anyhow::Error::msg)?;
            anyhow::Ok((Arc::new(backend) as Arc<dyn Backend>, Some(fake), FLEET_MODEL))
        })?
    } else {
        (Arc::new(FakeEngine::new(Duration::ZERO, 100_000)), None, FAKE_MODEL)
    };
    let direct_of_fake = fake.as_ref().map(|f| f.url.clone());
    let (gateway_url, direct_url, control, tasks) =
        servers.block_on(start(&args, &data_dir, backend, direct_of_fake))?;
    let litellm = match (&args.litellm, &fake) {
        (Some(bin), Some(fake)) => Some(LiteLlm::start(bin, &fake.url, &data_dir, args.litellm_workers)?),
        (Some(_), None) => anyhow::bail!("--litellm needs --upstream (it proxies the same fake engine)"),
        _ => None,
    };
    let client = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    client.block_on(async {
        let http = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency * 2).build()?;
        let backend_name = if args.upstream {
            "the fake upstream engine (mock: 1 token, no delay), via tm-upstream"
        } else {
            "the stand-in engine (1 token, no delay)"
        };
        println!(
            "backend: {backend_name} | server threads {} | db {}",
            args.server_threads,
            if args.database_url.is_some() { "postgresql" } else { "sqlite" }
        );
        let mut targets = vec![("direct", direct_url.clone()), ("gateway", gateway_url.clone())];
        if let Some(l) = &litellm {
            l.wait_ready(&http).await?;
            targets.push(("litellm", l.url.clone()));
        }
        // Warm every path (connections, caches) before measuring.
        for (_, url) in &targets {
            closed_loop(&http, std::slice::from_ref(url), model, 8, 500).await?;
        }
        let mut rps = Vec::new();
        for (_, url) in &targets {
            rps.push(closed_loop(&http, std::slice::from_ref(url), model, args.concurrency, args.requests).await?);
        }
        // Alternated and averaged, so that no side always runs on a warmer machine.
        let mut runs: Vec<Vec<Latency>> = targets.iter().map(|_| Vec::new()).collect();
        for _ in 0..2 {
            for (i, (_, url)) in targets.iter().enumerate() {
                runs[i].push(open_loop(&http, std::slice::from_ref(url), model, args.rate, args.seconds).await?);
            }
        }
        let latency: Vec<Latency> = runs.iter().map(|r| Latency::mean(r)).collect();
        servers_settled(&control).await?;

        print!("\n{:<44}", "figure");
        for (name, _) in &targets {
            print!(" {name:>10}");
        }
        println!();
        print!("{:<44}", format!("requests/s, closed loop, {} clients", args.concurrency));
        for r in &rps {
            print!(" {r:>10.0}");
        }
        println!();
        type Pick = fn(&Latency) -> f64;
        let figures: [(&str, Pick); 2] = [("p50", |l| l.p50), ("p99", |l| l.p99)];
        for (name, pick) in figures {
            print!("{:<44}", format!("latency {name} ms at {} req/s", args.rate));
            for l in &latency {
                print!(" {:>10.3}", pick(l));
            }
            println!();
        }
        print!("{:<44}", "errors (non-200)");
        for l in &latency {
            print!(" {:>10}", l.errors);
        }
        println!();
        for (i, (name, _)) in targets.iter().enumerate().skip(1) {
            println!(
                "added by {name} at {} req/s: p50 {:.3} ms, p99 {:.3} ms; closed-loop throughput {:.2}x direct",
                args.rate,
                latency[i].p50 - latency[0].p50,
                latency[i].p99 - latency[0].p99,
                rps[i] / rps[0]
            );
        }
        if targets.len() == 3 {
            println!(
                "litellm / gateway at {} req/s: latency p50 {:.1}x, p99 {:.1}x; closed-loop throughput gateway / litellm {:.1}x",
                args.rate,
                latency[2].p50 / latency[1].p50,
                latency[2].p99 / latency[1].p99,
                rps[1] / rps[2]
            );
            // Also at a rate LiteLLM sustains, so that its latency is not only its queue.
            let mut runs: Vec<Vec<Latency>> = targets.iter().map(|_| Vec::new()).collect();
            for _ in 0..2 {
                for (i, (_, url)) in targets.iter().enumerate() {
                    runs[i].push(open_loop(&http, std::slice::from_ref(url), model, args.low_rate, args.seconds).await?);
                }
            }
            let l: Vec<Latency> = runs.iter().map(|r| Latency::mean(r)).collect();
            for (i, (name, _)) in targets.iter().enumerate() {
                println!(
                    "at {} req/s: {name:<8} p50 {:.3} ms, p99 {:.3} ms, errors {} (added p50 {:.3} ms, p99 {:.3} ms)",
                    args.low_rate,
                    l[i].p50,
                    l[i].p99,
                    l[i].errors,
                    l[i].p50 - l[0].p50,
                    l[i].p99 - l[0].p99
                );
            }
            println!(
                "litellm / gateway at {} req/s: latency p50 {:.1}x, p99 {:.1}x",
                args.low_rate,
                l[2].p50 / l[1].p50,
                l[2].p99 / l[1].p99
            );
            servers_settled(&control).await?;
        }
        let rows = control.store().usage().records(&admin_id(&control).await?).await?.len();
        println!("usage records written: {rows} (every gateway request that got a 200, warm-up included)");
        anyhow::Ok(())
    })?;
    drop(litellm);
    drop(tasks);
    drop(fake);
    drop(servers);
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}

/// The two servers and the settler, as tasks of a set that ends them when dropped.
type Started = (String, String, tm_control::Control, tokio::task::JoinSet<()>);

/// `direct`: an existing server to compare with; default, the backend behind a bare handler.
async fn start(
    args: &Args,
    data_dir: &std::path::Path,
    backend: Arc<dyn Backend>,
    direct: Option<String>,
) -> Result<Started> {
    // Limits off: this measures their bookkeeping, not refusals.
    let app = build_app(args, data_dir, backend.clone(), "0").await?;
    let gateway_url = format!("http://{}", app.inference_addr().context("no inference listener")?);
    let control = app.control().clone();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(async move {
        let _ = app.run(std::future::pending()).await;
    });
    let direct_url = match direct {
        Some(url) => url,
        None => serve_direct(&mut tasks, backend).await?,
    };
    Ok((gateway_url, direct_url, control, tasks))
}

/// The process `tensormesh serve` runs, with `backend` and every per-minute limit at
/// `limit` (0: off).
async fn build_app(args: &Args, data_dir: &std::path::Path, backend: Arc<dyn Backend>, limit: &str) -> Result<App> {
    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        serve: tm_server::flags::ServeArgs,
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
        "--inference-addr".into(),
        "127.0.0.1:0".into(),
        "--control-addr".into(),
        "127.0.0.1:0".into(),
    ];
    for flag in ["--key-rpm", "--key-tpm", "--user-rpm", "--user-tpm"] {
        argv.extend([flag.to_owned(), limit.to_owned()]);
    }
    argv.extend(["--user-concurrency".to_owned(), "0".to_owned()]);
    if let Some(url) = &args.database_url {
        argv.extend(["--database-url".into(), url.clone()]);
    }
    if let Some(url) = &args.redis_url {
        argv.extend(["--redis-url".into(), url.clone()]);
    }
    let config = Wrap::try_parse_from(argv)?.serve.config()?;
    App::build(&config, Arc::new(tm_control::clock::SystemClock), Engines::Given(backend)).await
}

/// `backend` behind a bare handler (no auth, limits or billing), as a task of `tasks`.
async fn serve_direct(tasks: &mut tokio::task::JoinSet<()>, backend: Arc<dyn Backend>) -> Result<String> {
    let direct = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", direct.local_addr()?);
    let direct_app = Router::new().route("/v1/chat/completions", post(direct_chat)).with_state(backend);
    tasks.spawn(async move {
        let _ = axum::serve(direct, direct_app).await;
    });
    Ok(url)
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
        output: Default::default(),
    };
    let mut text = String::new();
    let mut usage = json!(null);
    if let Ok(mut g) = backend.generate(request).await {
        while let Some(event) = g.events.recv().await {
            match event {
                GenerationEvent::Output { output: tm_backend::Output::Text { text: t, .. }, .. } => text.push_str(&t),
                GenerationEvent::Output { .. } | GenerationEvent::ChoiceEnded { .. } => {}
                GenerationEvent::Finished { usage: u } => {
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
