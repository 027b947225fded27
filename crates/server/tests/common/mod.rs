//! Test servers: the real router and engine with the small real model (gemma 3 270M),
//! on 127.0.0.1:0, talked to over HTTP.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tm_gateway::{LimitSettings, Limits};
use tm_llama::SpillConfig;
use tm_money::{Nanos, Price};
use tm_server::app::{App, Engines};
use tm_server::config::{Billing, Cache, Config, Connections, FirstAdmin, Serving};
use tm_server::downloads;
use tm_server::flags::ModelsDirArg;

pub const MODEL: &str = "gemma-3-270m";
/// The default chat model: its template knows tools. For tests of what a chat model does.
pub const QWEN: &str = "qwen2.5-coder-0.5b-instruct";
/// The bootstrap admin's inference key (`TENSORMESH_ADMIN_API_KEY`).
pub const KEY: &str = "tm-test-admin-key-0123456789";
pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password-123";

pub fn models_dir() -> PathBuf {
    models_dir_with(MODEL)
}

/// The models directory, which must hold `model`.
pub fn models_dir_with(model: &str) -> PathBuf {
    let dir = ModelsDirArg { path: std::env::var_os("TENSORMESH_MODELS_DIR").map(PathBuf::from) }.resolve();
    let path = downloads::model_path(&dir, model);
    assert!(path.is_file(), "{} is missing: run `cargo run -p tm-server -- model pull {model}` first", path.display());
    dir
}

pub struct Options {
    /// The model served (one that `tensormesh model pull` knows).
    pub model: &'static str,
    pub parallel: usize,
    pub queue: usize,
    pub ctx_size: usize,
    pub max_body_bytes: usize,
    /// Per key (requests, tokens) per minute; 0 = unlimited.
    pub key_limits: (u64, u64),
    /// Generations one user may run at once (0 = unlimited, the default here: one test key
    /// is every client, as in a benchmark; the cap has its own test. `tensormesh serve`: 8).
    pub user_concurrency: u32,
    /// Signed-in Control Plane requests per user per minute (0 = unlimited).
    pub control_requests_per_minute: u32,
    /// Serve `GET /metrics` on a listener of its own (`--metrics-addr`, a free port).
    pub metrics_listener: bool,
    /// `--heartbeat-timeout`.
    pub heartbeat_timeout: Duration,
    /// `--redis-url` and its settings.
    pub redis_limits: Option<tm_server::config::RedisLimits>,
    /// What `GET /metrics` requires (None: public, as by default).
    pub metrics_token: Option<&'static str>,
    /// The spill tier's directory is left None here: the test server's data dir is used.
    pub cache: Cache,
    /// `llguidance` or `gbnf`.
    pub grammar_engine: &'static str,
    /// `ngram` or `off`.
    pub speculative: &'static str,
    /// Timeouts and the connection cap (the production defaults unless a test changes them).
    pub connections: Connections,
    /// `--public-control-url` (an `https://` one makes the console's cookies `Secure`).
    pub public_control_url: Option<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            model: MODEL,
            parallel: 4,
            queue: 8,
            ctx_size: 512,
            max_body_bytes: 64 * 1024,
            key_limits: (0, 0),
            user_concurrency: 0,
            control_requests_per_minute: 600,
            metrics_listener: false,
            heartbeat_timeout: Duration::from_secs(10),
            redis_limits: None,
            metrics_token: None,
            grammar_engine: "llguidance",
            speculative: "ngram",
            connections: Connections::default(),
            public_control_url: None,
            cache: Cache {
                kv_cache_tokens: None,
                prefix_cache: true,
                cache_sequences: 32,
                step_tokens: 256,
                kv_idle_tokens: 256,
                spill: SpillConfig { ram_bytes: 64 << 20, dir: None, disk_bytes: 0 },
            },
        }
    }
}

/// What serves inference in a test server.
pub enum Engine {
    None,
    /// The real embedded engine with the small real model.
    Real,
    /// A stand-in backend (gateway tests).
    Given(Arc<dyn tm_backend::Backend>),
}

/// What a test server runs with: SQLite in a fresh temp data dir, the test admin with its
/// key and password and 100 USD, default prices (0.10 / 0.40 / 0 USD per 1M tokens).
pub fn config(o: &Options) -> Config {
    let data_dir = std::env::temp_dir().join(format!("tm-test-{}", uuid::Uuid::new_v4()));
    let usd = |usd: f64| Nanos::from_usd(usd).unwrap();
    let mut cache = o.cache.clone();
    cache.spill.dir = Some(cache.spill.dir.unwrap_or_else(|| data_dir.join("kv-cache")));
    Config {
        inference_addr: "127.0.0.1:0".parse().unwrap(),
        control_addr: "127.0.0.1:0".parse().unwrap(),
        public_control_url: o.public_control_url.map(str::to_owned),
        database_url: format!("sqlite://{}", data_dir.join("tensormesh.db").display()),
        first_admin: FirstAdmin {
            email: ADMIN_EMAIL.into(),
            password: Some(ADMIN_PASSWORD.into()),
            api_key: Some(KEY.into()),
            credit: usd(100.0),
        },
        billing: Billing {
            default_price: Price { input: usd(0.10), output: usd(0.40), cached: Nanos::ZERO },
            limits: LimitSettings {
                per_key: Limits { requests_per_minute: o.key_limits.0, tokens_per_minute: o.key_limits.1 },
                per_user: Limits::default(),
                concurrent_per_user: o.user_concurrency,
            },
        },
        serving: Serving {
            models_dir: models_dir_with(o.model),
            models: vec![o.model.into()],
            upstreams: None,
            threads: 2,
            parallel: o.parallel,
            queue: o.queue,
            ctx_size: o.ctx_size,
            cache,
            grammar_engine: match o.grammar_engine {
                "gbnf" => tm_llama::GrammarEngine::Gbnf,
                _ => tm_llama::GrammarEngine::Llguidance,
            },
            speculative: o.speculative == "ngram",
        },
        data_dir,
        access_token_ttl: Duration::from_secs(3600),
        control_requests_per_minute: o.control_requests_per_minute,
        max_body_bytes: o.max_body_bytes,
        shutdown_timeout: Duration::from_secs(5),
        drain_delay: Duration::ZERO,
        heartbeat_timeout: o.heartbeat_timeout,
        redis_limits: o.redis_limits.clone(),
        connections: o.connections,
        metrics_token: o.metrics_token.map(str::to_owned),
        metrics_addr: o.metrics_listener.then(|| SocketAddr::from(([127, 0, 0, 1], 0))),
    }
}

/// Starts a server (SQLite in a temp data dir) on its own thread and runtime, so that it
/// outlives any one test's runtime. Returns its inference base URL.
pub fn start(options: Options) -> String {
    launch(None, Engine::Real, options).detach().inference.unwrap()
}

/// One server shared by the tests of a binary that need no special settings.
pub fn shared() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| start(Options::default()))
}

/// One server with the Qwen chat model, shared by the tests of a binary.
pub fn shared_qwen() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| start(Options { model: QWEN, ctx_size: 2048, queue: 32, ..Options::default() }))
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap()
}

pub async fn post(base: &str, path: &str, body: serde_json::Value) -> reqwest::Response {
    client().post(format!("{base}{path}")).bearer_auth(KEY).json(&body).send().await.unwrap()
}

pub async fn post_json(base: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = post(base, path, body).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// A chat completion with `key`: the status, the request id (its settlement key) and the
/// response.
pub async fn chat_as(base: &str, key: &str, body: &serde_json::Value) -> (u16, String, reqwest::Response) {
    let r = client().post(format!("{base}/v1/chat/completions")).bearer_auth(key).json(body).send().await.unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    (r.status().as_u16(), id, r)
}

/// Reads an SSE body into its `data:` payloads, in order (`[DONE]` included).
pub async fn sse_data(response: reqwest::Response) -> Vec<String> {
    let text = response.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")).map(str::to_owned))
        .collect()
}

/// Waits (bounded) until the server reports no request in flight.
pub async fn wait_idle(base: &str) {
    for _ in 0..200 {
        let h: serde_json::Value = client().get(format!("{base}/health")).send().await.unwrap().json().await.unwrap();
        if h["in_flight"] == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("requests still in flight after 5 s");
}

/// A running Control Plane (and, when asked, the inference API beside it) on one test
/// database, with a clock the test moves. Dropped, it shuts down as on SIGTERM (so that a
/// test process does not keep every earlier test's database connections open), unless
/// detached.
pub struct Servers {
    pub control: String,
    pub inference: Option<String>,
    /// `GET /metrics`'s own listener, when the options asked for one.
    pub metrics: Option<String>,
    pub clock: Arc<tm_control::clock::ManualClock>,
    /// Dropped (with the servers), it tells them to shut down.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Servers {
    /// Keeps the servers running until the test process ends, wherever this value goes.
    pub fn detach(mut self) -> Servers {
        std::mem::forget(self.stop.take());
        self
    }
}

/// Starts the Control Plane on `db` (`with_inference`: also the inference API with the
/// real model, sharing the database), bootstrapped with the test admin.
pub fn start_servers(db: &tm_testkit::TestDb, with_inference: bool) -> Servers {
    launch(Some(db.url.clone()), if with_inference { Engine::Real } else { Engine::None }, Options::default())
}

/// Both listeners on `db` with the given engine and options.
pub fn start_with(db: &tm_testkit::TestDb, engine: Engine, options: Options) -> Servers {
    launch(Some(db.url.clone()), engine, options)
}

fn launch(database_url: Option<String>, engine: Engine, options: Options) -> Servers {
    install_subscriber();
    let clock = Arc::new(tm_control::clock::ManualClock::starting_now());
    type Addresses = (SocketAddr, Option<SocketAddr>, Option<SocketAddr>);
    let (tx, rx) = std::sync::mpsc::channel::<Addresses>();
    let mut config = config(&options);
    if let Some(url) = database_url {
        config.database_url = url;
    }
    let engines = match engine {
        Engine::None => Engines::None,
        Engine::Real => Engines::Configured,
        Engine::Given(backend) => Engines::Given(backend),
    };
    let thread_clock = clock.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // The process as `tensormesh serve` builds it, on its own thread and runtime so that it
    // outlives any one test's runtime; it runs until its `Servers` is dropped.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let app = App::build(&config, thread_clock, engines).await.unwrap();
            tx.send((app.control_addr(), app.inference_addr(), app.metrics_addr())).unwrap();
            app.run(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
    });
    let (control, inference, metrics) = rx.recv_timeout(Duration::from_secs(120)).expect("servers did not start");
    let url = |a: SocketAddr| format!("http://{a}");
    Servers { control: url(control), inference: inference.map(url), metrics: metrics.map(url), clock, stop: Some(stop) }
}

/// Everything the test process logs, at every level, once a test asked for it with
/// [`captured_logs`] (the secrets test reads it).
#[derive(Clone, Default)]
pub struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

static CAPTURED: OnceLock<Captured> = OnceLock::new();
static CAPTURING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Starts capturing every log line of the process.
pub fn captured_logs() -> &'static Captured {
    install_subscriber();
    CAPTURING.store(true, std::sync::atomic::Ordering::SeqCst);
    CAPTURED.get_or_init(Captured::default)
}

/// The process's one subscriber: the per-model logs (deployment logs) as the server keeps
/// them, and the capture, off until a test turns it on.
fn install_subscriber() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::Layer;
        let capture = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(CAPTURED.get_or_init(Captured::default).clone())
            // Decided per event, never cached per callsite: capture starts mid-run.
            .with_filter(
                tracing_subscriber::filter::DynFilterFn::new(|_, _| {
                    CAPTURING.load(std::sync::atomic::Ordering::SeqCst)
                })
                .with_callsite_filter(|_| tracing::subscriber::Interest::sometimes()),
            );
        let subscriber = tracing_subscriber::registry().with(tm_server::model_logs::layer()).with(capture);
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of the test process");
    });
}
