//! `tensormesh serve` flags. Every flag has a `TENSORMESH_*` environment variable.
//! [`ServeArgs::config`] resolves them into the plain [`Config`] the process runs with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use tm_gateway::{LimitSettings, Limits};
use tm_llama::SpillConfig;
use tm_money::{Nanos, Price};

use crate::config::{Billing, Cache, Config, Connections, FirstAdmin, RedisLimits, Serving};

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the OpenAI-compatible inference listener (port 0: pick a free port).
    #[arg(long, env = "TENSORMESH_INFERENCE_ADDR", default_value = "127.0.0.1:8000")]
    pub inference_addr: SocketAddr,

    /// Address of the Control Plane listener (users, login, API keys).
    #[arg(long, env = "TENSORMESH_CONTROL_ADDR", default_value = "127.0.0.1:8080")]
    pub control_addr: SocketAddr,

    /// The Control Plane's address as browsers reach it, for the sign-in links handed to
    /// `tm auth login` (e.g. behind a proxy). Default: the Host the CLI called.
    #[arg(long, env = "TENSORMESH_PUBLIC_CONTROL_URL")]
    pub public_control_url: Option<String>,

    /// Where the server keeps its state (the SQLite database, unless --database-url).
    #[arg(long, env = "TENSORMESH_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub admin: AdminArgs,

    #[command(flatten)]
    pub billing: BillingArgs,

    #[command(flatten)]
    pub models_dir: ModelsDirArg,

    /// A model to serve: NAME=PATH to a GGUF file, or the NAME of a pulled model.
    /// Repeatable. Default: qwen2.5-coder-0.5b-instruct, unless --upstreams serves models.
    #[arg(long = "model", env = "TENSORMESH_MODELS", value_delimiter = ',')]
    pub models: Vec<String>,

    /// A fleet file (TOML): models served by upstream OpenAI-compatible engines (vLLM,
    /// SGLang, llama-server, other tensormesh nodes), with routing, timeouts and retries.
    /// See docs/fleets.md.
    #[arg(long, env = "TENSORMESH_UPSTREAMS")]
    pub upstreams: Option<PathBuf>,

    /// CPU threads per model for llama.cpp. Default: all cores.
    #[arg(long, env = "TENSORMESH_THREADS")]
    pub threads: Option<i32>,

    /// Sequences decoded together per model (engine slots).
    #[arg(long, env = "TENSORMESH_PARALLEL", default_value_t = 4)]
    pub parallel: usize,

    /// Requests that may wait for a slot; beyond slots + queue new requests get 503.
    #[arg(long, env = "TENSORMESH_QUEUE", default_value_t = 16)]
    pub queue: usize,

    /// Context length per request (prompt + completion), capped at the model's own.
    #[arg(long, env = "TENSORMESH_CTX_SIZE", default_value_t = 4096)]
    pub ctx_size: usize,

    #[command(flatten)]
    pub cache: CacheArgs,

    /// What enforces structured outputs (`response_format` / `text.format`):
    /// llguidance, or llama.cpp's GBNF grammars (measured against each other by
    /// `tm-bench features`). Tool calls always use llguidance.
    #[arg(long, env = "TENSORMESH_GRAMMAR_ENGINE", value_enum, default_value_t = GrammarEngineArg::Llguidance)]
    pub grammar_engine: GrammarEngineArg,

    /// Speculative decoding: `ngram` drafts tokens from each request's own prompt and output
    /// (prompt lookup) and verifies them in one batch; `off` decodes one token a step.
    #[arg(long, env = "TENSORMESH_SPECULATIVE", value_enum, default_value_t = SpeculativeArg::Ngram)]
    pub speculative: SpeculativeArg,

    /// Lifetime of Control Plane access tokens, in seconds (refresh tokens live 30 days).
    #[arg(long, env = "TENSORMESH_ACCESS_TOKEN_TTL", default_value_t = 3600)]
    pub access_token_ttl: u64,

    /// Signed-in Control Plane requests per user per minute (0: no limit); more get 429.
    #[arg(long, env = "TENSORMESH_CONTROL_REQUESTS_PER_MINUTE", default_value_t = 600)]
    pub control_requests_per_minute: u32,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "TENSORMESH_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT.
    #[arg(long, env = "TENSORMESH_SHUTDOWN_TIMEOUT", default_value_t = 30)]
    pub shutdown_timeout: u64,

    /// Seconds after SIGTERM/SIGINT during which `GET /ready` says 503 while requests are
    /// still accepted, before the drain: set it above the load balancer's health-check
    /// interval when replicas sit behind one.
    #[arg(long, env = "TENSORMESH_DRAIN_DELAY", default_value_t = 0)]
    pub drain_delay: u64,

    /// `redis://HOST:PORT/DB`: keep the requests- and tokens-per-minute limits in this Redis,
    /// shared by every replica (default: each process keeps its own).
    #[arg(long, env = "TENSORMESH_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// While Redis does not answer: `allow` serves requests, each replica enforcing the
    /// limits on its own (fail open); `refuse` answers 503 with Retry-After (fail closed).
    #[arg(long, env = "TENSORMESH_REDIS_OUTAGE", value_enum, default_value_t = RedisOutageArg::Allow)]
    pub redis_outage: RedisOutageArg,

    /// Milliseconds a rate-limit check waits for Redis before the outage policy applies.
    #[arg(long, env = "TENSORMESH_REDIS_TIMEOUT_MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub redis_timeout_ms: u64,

    /// Seconds without a heartbeat after which the other replicas on the database take this
    /// one for dead and void the money it held for running requests. Beats go every fifth
    /// of it.
    #[arg(long, env = "TENSORMESH_HEARTBEAT_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_timeout: u64,

    /// Seconds a client has to send a request's headers, and to start the next request on
    /// a kept-alive connection; then the connection is closed.
    #[arg(long, env = "TENSORMESH_HEADER_TIMEOUT", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout: u64,

    /// Seconds a client has to send a request's body.
    #[arg(long, env = "TENSORMESH_BODY_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout: u64,

    /// Serve `GET /metrics` on this address only (e.g. one the internet cannot reach)
    /// instead of on the inference listener.
    #[arg(long, env = "TENSORMESH_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// A token `GET /metrics` requires (`Authorization: Bearer …`); unset, it is public, as
    /// the listener's other GETs. Its series name models and fleet endpoints.
    #[arg(long, env = "TENSORMESH_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// Connections open at once, per listener; more wait to be accepted.
    #[arg(long, env = "TENSORMESH_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
}

impl ServeArgs {
    /// The configuration these flags describe: defaults resolved (database, models
    /// directory, threads, spill directory) and amounts of USD checked.
    pub fn config(&self) -> Result<Config> {
        let b = &self.billing;
        let cache = &self.cache;
        Ok(Config {
            inference_addr: self.inference_addr,
            control_addr: self.control_addr,
            metrics_addr: self.metrics_addr,
            public_control_url: self.public_control_url.clone(),
            data_dir: self.data_dir.clone(),
            database_url: self.database.url(&self.data_dir),
            first_admin: FirstAdmin {
                email: self.admin.admin_email.clone(),
                password: self.admin.admin_password.clone(),
                api_key: self.admin.admin_api_key.clone(),
                credit: usd("--admin-credit", b.admin_credit)?,
            },
            billing: Billing {
                default_price: Price {
                    input: usd("--default-input-price", b.default_input_price)?,
                    output: usd("--default-output-price", b.default_output_price)?,
                    cached: usd("--default-cached-price", b.default_cached_price)?,
                },
                limits: LimitSettings {
                    per_key: Limits { requests_per_minute: b.key_rpm, tokens_per_minute: b.key_tpm },
                    per_user: Limits { requests_per_minute: b.user_rpm, tokens_per_minute: b.user_tpm },
                    concurrent_per_user: b.user_concurrency,
                },
            },
            serving: Serving {
                models_dir: self.models_dir.resolve(),
                models: self.models.clone(),
                upstreams: self.upstreams.clone(),
                threads: self
                    .threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as i32)),
                parallel: self.parallel,
                queue: self.queue,
                ctx_size: self.ctx_size,
                cache: Cache {
                    kv_cache_tokens: cache.kv_cache_tokens,
                    prefix_cache: cache.prefix_cache,
                    cache_sequences: cache.cache_sequences,
                    step_tokens: cache.step_tokens,
                    kv_idle_tokens: cache.kv_idle_tokens,
                    spill: SpillConfig {
                        ram_bytes: cache.kv_spill_ram_mb << 20,
                        dir: Some(cache.kv_spill_dir.clone().unwrap_or_else(|| self.data_dir.join("kv-cache"))),
                        disk_bytes: cache.kv_spill_disk_mb << 20,
                    },
                },
                grammar_engine: self.grammar_engine.into(),
                speculative: self.speculative == SpeculativeArg::Ngram,
            },
            access_token_ttl: Duration::from_secs(self.access_token_ttl),
            control_requests_per_minute: self.control_requests_per_minute,
            max_body_bytes: self.max_body_bytes,
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout),
            drain_delay: Duration::from_secs(self.drain_delay),
            heartbeat_timeout: Duration::from_secs(self.heartbeat_timeout),
            redis_limits: self.redis_url.clone().filter(|u| !u.is_empty()).map(|url| RedisLimits {
                url,
                timeout: Duration::from_millis(self.redis_timeout_ms),
                outage: self.redis_outage.into(),
            }),
            metrics_token: self.metrics_token.clone().filter(|t| !t.is_empty()),
            connections: Connections {
                header_timeout: Duration::from_secs(self.header_timeout),
                body_timeout: Duration::from_secs(self.body_timeout),
                max_open: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            },
        })
    }
}

/// A non-negative amount of USD given by `flag`.
fn usd(flag: &str, usd: f64) -> Result<Nanos> {
    match Nanos::from_usd(usd) {
        Some(n) if n >= Nanos::ZERO => Ok(n),
        _ => bail!("{flag} must be a non-negative amount of USD, got {usd}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SpeculativeArg {
    Ngram,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RedisOutageArg {
    Allow,
    Refuse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GrammarEngineArg {
    Llguidance,
    Gbnf,
}

impl From<RedisOutageArg> for tm_gateway::Outage {
    fn from(a: RedisOutageArg) -> Self {
        match a {
            RedisOutageArg::Allow => tm_gateway::Outage::Allow,
            RedisOutageArg::Refuse => tm_gateway::Outage::Refuse,
        }
    }
}

impl From<GrammarEngineArg> for tm_llama::GrammarEngine {
    fn from(a: GrammarEngineArg) -> Self {
        match a {
            GrammarEngineArg::Llguidance => tm_llama::GrammarEngine::Llguidance,
            GrammarEngineArg::Gbnf => tm_llama::GrammarEngine::Gbnf,
        }
    }
}

/// The engine's KV cache and prompt scheduling.
#[derive(Debug, Clone, Args)]
pub struct CacheArgs {
    /// KV cache size per model, in tokens: running requests and cached prompt prefixes
    /// share it. Default: --parallel x --ctx-size.
    #[arg(long, env = "TENSORMESH_KV_CACHE_TOKENS")]
    pub kv_cache_tokens: Option<usize>,

    /// Reuse the KV of earlier prompts' prefixes (`false`: compute every prompt in full).
    #[arg(long, env = "TENSORMESH_PREFIX_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    pub prefix_cache: bool,

    /// Cached prefixes kept beside the running requests (each holds a sequence).
    #[arg(long, env = "TENSORMESH_CACHE_SEQUENCES", default_value_t = 32)]
    pub cache_sequences: usize,

    /// Prompt tokens computed per step while other requests are generating, so that a
    /// long prompt does not stall running streams.
    #[arg(long, env = "TENSORMESH_STEP_TOKENS", default_value_t = 256)]
    pub step_tokens: usize,

    /// Cached tokens that running requests do not read, kept in the KV cache while
    /// requests run; the rest move to host memory (every cached cell slows each step's
    /// attention a little; restoring a snapshot takes milliseconds).
    #[arg(long, env = "TENSORMESH_KV_IDLE_TOKENS", default_value_t = 256)]
    pub kv_idle_tokens: usize,

    /// Host memory for KV snapshots of evicted prefixes, per model, in MiB (0: none).
    #[arg(long, env = "TENSORMESH_KV_SPILL_RAM_MB", default_value_t = 512)]
    pub kv_spill_ram_mb: u64,

    /// Disk space for KV snapshots of evicted prefixes (and, at shutdown, of every cached
    /// one), per model, in MiB (0: none). They survive restarts.
    #[arg(long, env = "TENSORMESH_KV_SPILL_DISK_MB", default_value_t = 2048)]
    pub kv_spill_disk_mb: u64,

    /// Where the disk tier keeps its files. Default: DATA_DIR/kv-cache.
    #[arg(long, env = "TENSORMESH_KV_SPILL_DIR")]
    pub kv_spill_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ModelsDirArg {
    /// Where pulled models are cached. Default: $XDG_CACHE_HOME/tensormesh/models
    /// (~/.cache/tensormesh/models).
    #[arg(long = "models-dir", env = "TENSORMESH_MODELS_DIR")]
    pub path: Option<PathBuf>,
}

impl ModelsDirArg {
    pub fn resolve(&self) -> PathBuf {
        if let Some(p) = &self.path {
            return p.clone();
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from("."));
        cache.join("tensormesh").join("models")
    }
}

/// Which database to use; shared by `serve` and the `user` commands.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// `postgres://USER@HOST/DB` to use PostgreSQL; default: SQLite at DATA_DIR/tensormesh.db.
    /// Global, like `--data-dir`: `tensormesh user list --database-url …` works too.
    #[arg(long, env = "TENSORMESH_DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
}

impl DatabaseArgs {
    pub fn url(&self, data_dir: &std::path::Path) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", data_dir.join("tensormesh.db").display()))
    }
}

/// The first admin, created on first start with an empty database. What is not given is
/// generated and printed once.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    #[arg(long, env = "TENSORMESH_ADMIN_EMAIL", default_value = "admin@localhost")]
    pub admin_email: String,
    #[arg(long, env = "TENSORMESH_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// An inference API key for the admin (any string of 16+ characters).
    #[arg(long, env = "TENSORMESH_ADMIN_API_KEY", hide_env_values = true)]
    pub admin_api_key: Option<String>,
}

/// Prices seeded for served models, the first admin's credit, and default rate limits.
#[derive(Debug, Clone, Args)]
pub struct BillingArgs {
    /// USD per 1,000,000 prompt tokens, for served models that have no pricing row yet
    /// (later changes: `tm admin billing pricing serverless upsert`).
    #[arg(long, env = "TENSORMESH_DEFAULT_INPUT_PRICE", default_value_t = 0.10)]
    pub default_input_price: f64,
    /// USD per 1,000,000 completion tokens, for the same seeded rows.
    #[arg(long, env = "TENSORMESH_DEFAULT_OUTPUT_PRICE", default_value_t = 0.40)]
    pub default_output_price: f64,
    /// USD per 1,000,000 prompt tokens served from the KV cache, for the same seeded rows.
    #[arg(long, env = "TENSORMESH_DEFAULT_CACHED_PRICE", default_value_t = 0.0)]
    pub default_cached_price: f64,
    /// USD credited to the first admin when it is created.
    #[arg(long, env = "TENSORMESH_ADMIN_CREDIT", default_value_t = 100.0)]
    pub admin_credit: f64,
    /// Requests per minute per API key (0: unlimited).
    #[arg(long, env = "TENSORMESH_KEY_RPM", default_value_t = 3_000)]
    pub key_rpm: u64,
    /// Tokens (prompt + max_tokens) per minute per API key (0: unlimited).
    #[arg(long, env = "TENSORMESH_KEY_TPM", default_value_t = 2_000_000)]
    pub key_tpm: u64,
    /// Requests per minute per user, over all their keys (0: unlimited).
    #[arg(long, env = "TENSORMESH_USER_RPM", default_value_t = 6_000)]
    pub user_rpm: u64,
    /// Tokens per minute per user, over all their keys (0: unlimited).
    #[arg(long, env = "TENSORMESH_USER_TPM", default_value_t = 4_000_000)]
    pub user_tpm: u64,
    /// Generations one user may have running at once, over all their keys (0: unlimited);
    /// beyond it, 429. Keeps one user's long streams from taking every engine slot.
    #[arg(long, env = "TENSORMESH_USER_CONCURRENCY", default_value_t = 8)]
    pub user_concurrency: u32,
}
