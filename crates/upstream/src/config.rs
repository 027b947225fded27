//! The fleet file (`tensormesh serve --upstreams FILE`): which models are served by which
//! OpenAI-compatible endpoints, and how requests are routed, timed out and retried.
//!
//! ```toml
//! [[model]]
//! name = "qwen2.5-7b-instruct"          # the name clients send
//! upstream_model = "Qwen/Qwen2.5-7B-Instruct"   # the name the engines know (default: name)
//! routing = "prefix"                    # prefix | least-loaded | round-robin
//!
//! [[model.endpoint]]
//! url = "http://10.0.0.5:8000"          # the engine's base URL (its /v1/... routes below it)
//! api_key_env = "VLLM_KEY"              # or api_key = "..."
//! weight = 2
//! max_concurrency = 64
//! ```

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: {error}")]
    Parse { path: String, error: String },
    #[error("{path}: model `{model}`: {message}")]
    Invalid { path: String, model: String, message: String },
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    #[serde(rename = "model", default)]
    pub models: Vec<ModelConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub name: String,
    /// The model name sent to the engines (default: `name`).
    pub upstream_model: Option<String>,
    /// Prompt + completion tokens of one request. Default: the engines' `max_model_len`
    /// from their `/v1/models`, else 4096.
    pub max_context: Option<u64>,
    #[serde(default)]
    pub routing: Routing,
    #[serde(rename = "endpoint")]
    pub endpoints: Vec<EndpointConfig>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub health: HealthConfig,
    /// Prompt bytes per routing block: prompts that share their first blocks go to the
    /// endpoint that served them (about 4 bytes per token).
    #[serde(default = "defaults::block_bytes")]
    pub prefix_block_bytes: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Routing {
    /// To the endpoint that served the longest prefix of the prompt, unless it is much
    /// busier than the least loaded one; new prefixes go to the least loaded.
    #[default]
    Prefix,
    /// Fewest requests in flight per unit of weight.
    LeastLoaded,
    /// Weighted round robin.
    RoundRobin,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub url: String,
    pub api_key: Option<String>,
    /// An environment variable holding the key (keeps it out of the file).
    pub api_key_env: Option<String>,
    #[serde(default = "defaults::weight")]
    pub weight: u32,
    /// Requests in flight at once; beyond it the endpoint is skipped.
    #[serde(default = "defaults::max_concurrency")]
    pub max_concurrency: usize,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    pub connect_ms: u64,
    /// From sending the request to the first event of the response (prefill included).
    pub first_byte_ms: u64,
    /// Longest silence between two events of a streaming response.
    pub idle_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect_ms: 2_000, first_byte_ms: 60_000, idle_ms: 30_000 }
    }
}

impl Timeouts {
    pub fn connect(&self) -> Duration {
        Duration::from_millis(self.connect_ms)
    }
    pub fn first_byte(&self) -> Duration {
        Duration::from_millis(self.first_byte_ms)
    }
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms)
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Tries per request, the first included; only before the first byte reached the client.
    pub attempts: u32,
    /// Retries allowed as a share of recent requests (so a failing fleet is not hit twice
    /// as hard), on top of `min_per_second`.
    pub budget_ratio: f64,
    pub min_per_second: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { attempts: 3, budget_ratio: 0.2, min_per_second: 5 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Active check: GET this path on every endpoint (vLLM, SGLang, llama-server and
    /// tensormesh all answer `/health`).
    pub path: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Passive check: this many failures in a row eject an endpoint ...
    pub eject_after_failures: u32,
    /// ... for this long (doubling on each ejection in a row, up to 16x).
    pub eject_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            path: "/health".into(),
            interval_ms: 5_000,
            timeout_ms: 2_000,
            eject_after_failures: 3,
            eject_ms: 10_000,
        }
    }
}

mod defaults {
    pub fn weight() -> u32 {
        1
    }
    pub fn max_concurrency() -> usize {
        256
    }
    pub fn block_bytes() -> usize {
        256
    }
}

impl FleetConfig {
    /// Reads and checks the fleet file.
    pub fn load(path: &Path) -> Result<FleetConfig, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: shown.clone(), error })?;
        FleetConfig::parse(&text, &shown)
    }

    pub fn parse(text: &str, shown: &str) -> Result<FleetConfig, ConfigError> {
        let config: FleetConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: shown.into(), error: e.to_string() })?;
        let mut names = std::collections::HashSet::new();
        for m in &config.models {
            let invalid = |message: String| ConfigError::Invalid { path: shown.into(), model: m.name.clone(), message };
            if m.name.trim().is_empty() {
                return Err(invalid("`name` is empty".into()));
            }
            if !names.insert(m.name.as_str()) {
                return Err(invalid("declared twice".into()));
            }
            if m.endpoints.is_empty() {
                return Err(invalid("no `[[model.endpoint]]`".into()));
            }
            for e in &m.endpoints {
                let url = url::Url::parse(&e.url).map_err(|err| invalid(format!("endpoint `{}`: {err}", e.url)))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(invalid(format!("endpoint `{}`: the URL must be http or https", e.url)));
                }
                if e.weight == 0 || e.max_concurrency == 0 {
                    return Err(invalid(format!("endpoint `{}`: `weight` and `max_concurrency` must be > 0", e.url)));
                }
                if e.api_key.is_some() && e.api_key_env.is_some() {
                    return Err(invalid(format!("endpoint `{}`: give `api_key` or `api_key_env`, not both", e.url)));
                }
                if let Some(var) = &e.api_key_env {
                    if std::env::var(var).is_err() {
                        return Err(invalid(format!("endpoint `{}`: `{var}` is not set", e.url)));
                    }
                }
            }
            if m.retry.attempts == 0 || !(0.0..=10.0).contains(&m.retry.budget_ratio) {
                return Err(invalid("`retry.attempts` must be >= 1 and `retry.budget_ratio` in 0..=10".into()));
            }
            if m.timeouts.connect_ms == 0 || m.timeouts.first_byte_ms == 0 || m.timeouts.idle_ms == 0 {
                return Err(invalid("timeouts must be > 0 ms".into()));
            }
            if m.health.interval_ms == 0 || m.health.eject_after_failures == 0 || m.prefix_block_bytes == 0 {
                return Err(invalid(
                    "`health.interval_ms`, `health.eject_after_failures` and `prefix_block_bytes` must be > 0".into(),
                ));
            }
        }
        Ok(config)
    }
}

impl EndpointConfig {
    /// The key to send, read from the environment when `api_key_env` names it.
    pub fn key(&self) -> Option<String> {
        self.api_key.clone().or_else(|| self.api_key_env.as_ref().and_then(|v| std::env::var(v).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_file_gets_the_defaults() {
        let c = FleetConfig::parse("[[model]]\nname = \"m\"\n[[model.endpoint]]\nurl = \"http://127.0.0.1:1\"\n", "f")
            .unwrap();
        let m = &c.models[0];
        assert_eq!(m.routing, Routing::Prefix);
        assert_eq!(m.endpoints[0].weight, 1);
        assert_eq!(m.retry.attempts, 3);
        assert_eq!(m.health.path, "/health");
    }

    #[test]
    fn mistakes_name_the_model_and_field() {
        let cases = [
            ("[[model]]\nname = \"m\"\nendpoint = []\n", "no `[[model.endpoint]]`"),
            ("[[model]]\nname = \"m\"\n[[model.endpoint]]\nurl = \"ftp://x\"\n", "http or https"),
            ("[[model]]\nname = \"m\"\n[[model.endpoint]]\nurl = \"http://x\"\nweight = 0\n", "`weight`"),
            ("[[model]]\nname = \"m\"\nrouting = \"random\"\n[[model.endpoint]]\nurl = \"http://x\"\n", "routing"),
            ("[[model]]\nname = \"m\"\nport = 1\n[[model.endpoint]]\nurl = \"http://x\"\n", "port"),
            (
                "[[model]]\nname = \"m\"\n[[model.endpoint]]\nurl = \"http://x\"\napi_key_env = \"TM_NO_SUCH_VAR_9\"\n",
                "not set",
            ),
        ];
        for (text, needle) in cases {
            let err = FleetConfig::parse(text, "fleet.toml").unwrap_err().to_string();
            assert!(err.contains(needle) && err.starts_with("fleet.toml"), "{text}: {err}");
        }
    }
}
