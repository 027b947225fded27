//! `tensormesh serve` flags. Every flag has a `TENSORMESH_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the OpenAI-compatible inference listener (port 0: pick a free port).
    #[arg(long, env = "TENSORMESH_INFERENCE_ADDR", default_value = "127.0.0.1:8000")]
    pub inference_addr: SocketAddr,

    /// Address of the Control Plane listener (served from the Control Plane release on).
    #[arg(long, env = "TENSORMESH_CONTROL_ADDR", default_value = "127.0.0.1:8080")]
    pub control_addr: SocketAddr,

    /// Where the server keeps its state.
    #[arg(long, env = "TENSORMESH_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    #[command(flatten)]
    pub models_dir: ModelsDirArg,

    /// A model to serve: NAME=PATH to a GGUF file, or the NAME of a pulled model.
    /// Repeatable. Default: qwen2.5-coder-0.5b-instruct.
    #[arg(long = "model", env = "TENSORMESH_MODELS", value_delimiter = ',')]
    pub models: Vec<String>,

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

    /// API keys accepted on POST routes (comma-separated). When none is given, one is
    /// generated and printed at startup.
    #[arg(long = "api-key", env = "TENSORMESH_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<String>,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "TENSORMESH_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT.
    #[arg(long, env = "TENSORMESH_SHUTDOWN_TIMEOUT", default_value_t = 30)]
    pub shutdown_timeout: u64,
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
