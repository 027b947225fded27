//! What a process runs with, every default resolved and every amount checked. `tensormesh
//! serve` makes one from its flags (`ServeArgs::config` in flags.rs); the tests and
//! benchmarks build one directly. `App::build` takes nothing else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tm_gateway::LimitSettings;
use tm_llama::{GrammarEngine, SpillConfig};
use tm_money::{Nanos, Price};

#[derive(Debug, Clone)]
pub struct Config {
    pub inference_addr: SocketAddr,
    pub control_addr: SocketAddr,
    /// Where `GET /metrics` is served instead of the inference listener, when set.
    pub metrics_addr: Option<SocketAddr>,
    /// The Control Plane's address as browsers reach it, for sign-in links (None: the Host
    /// the CLI called).
    pub public_control_url: Option<String>,
    /// Where state is kept: the SQLite database by default, the spill tier's files.
    pub data_dir: PathBuf,
    pub database_url: String,
    pub first_admin: FirstAdmin,
    pub billing: Billing,
    pub serving: Serving,
    /// Lifetime of Control Plane access tokens.
    pub access_token_ttl: Duration,
    /// Signed-in Control Plane requests per user per minute (0: no limit).
    pub control_requests_per_minute: u32,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// How long in-flight requests may run on after SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    /// How long `GET /ready` answers 503 after SIGTERM/SIGINT, while everything is still
    /// served, before the listeners stop accepting: the time a load balancer needs to see
    /// it and send no more.
    pub drain_delay: Duration,
    /// Rate limits shared by the replicas in Redis (None: each process keeps its own).
    pub redis_limits: Option<RedisLimits>,
    /// A replica whose last heartbeat is older than this is taken for dead by the others:
    /// its holds are voided (see `tm_gateway::replica`).
    pub heartbeat_timeout: Duration,
    /// Timeouts and the connection cap of each listener.
    pub connections: Connections,
    /// When set, `GET /metrics` answers only `Authorization: Bearer <this>`.
    pub metrics_token: Option<String>,
}

/// The rate limits kept in Redis.
#[derive(Debug, Clone)]
pub struct RedisLimits {
    /// `redis://host:port/db`.
    pub url: String,
    /// How long a check may wait for Redis.
    pub timeout: Duration,
    pub outage: tm_gateway::Outage,
}

/// What a client may take from a listener: a connection that sends nothing useful is
/// closed, and the number open at once is bounded (more wait in the kernel's queue).
#[derive(Debug, Clone, Copy)]
pub struct Connections {
    /// To send a request's headers and, on a kept-alive connection, to start the next
    /// request (so it is also the idle timeout).
    pub header_timeout: Duration,
    /// To send a request's body.
    pub body_timeout: Duration,
    /// Open connections per listener.
    pub max_open: usize,
}

impl Default for Connections {
    fn default() -> Connections {
        Connections { header_timeout: Duration::from_secs(15), body_timeout: Duration::from_secs(60), max_open: 1024 }
    }
}

/// The first admin, created on first start with an empty database; what is None is
/// generated and printed once.
#[derive(Debug, Clone)]
pub struct FirstAdmin {
    pub email: String,
    pub password: Option<String>,
    /// An inference API key (any string of 16+ characters).
    pub api_key: Option<String>,
    /// Credited to it when it is created.
    pub credit: Nanos,
}

#[derive(Debug, Clone, Copy)]
pub struct Billing {
    /// The price of served models that have no pricing row yet.
    pub default_price: Price,
    /// Default rate limits per key and per user.
    pub limits: LimitSettings,
}

/// What is served, and how the embedded engines run.
#[derive(Debug, Clone)]
pub struct Serving {
    /// Where pulled models are cached.
    pub models_dir: PathBuf,
    /// Each NAME=PATH to a GGUF file, or the NAME of a pulled model. Empty: the default
    /// model, unless `upstreams` declares models.
    pub models: Vec<String>,
    /// A fleet file: models served by upstream engines.
    pub upstreams: Option<PathBuf>,
    /// CPU threads per model.
    pub threads: i32,
    /// Sequences decoded together per model.
    pub parallel: usize,
    /// Requests that may wait for a slot.
    pub queue: usize,
    /// Context length per request.
    pub ctx_size: usize,
    pub cache: Cache,
    pub grammar_engine: GrammarEngine,
    /// Speculative decoding with drafts from the context.
    pub speculative: bool,
}

/// The engines' KV cache and prompt scheduling.
#[derive(Debug, Clone)]
pub struct Cache {
    /// KV cells per model (None: parallel × ctx_size).
    pub kv_cache_tokens: Option<usize>,
    pub prefix_cache: bool,
    pub cache_sequences: usize,
    pub step_tokens: usize,
    pub kv_idle_tokens: usize,
    /// Snapshots of evicted prefixes: budgets and directory.
    pub spill: SpillConfig,
}
