//! Resolving settings from flags, environment, `config.toml` (`[overrides]` before
//! `[managed]`) and defaults, remembering where each came from (contract §B.2, §C).

use std::path::PathBuf;

use serde_json::{json, Map, Value};

use crate::error::{CliError, Result};
use crate::files;

pub const DEFAULT_CONTROL_PLANE: &str = "https://api.tensormesh.ai";
pub const DEFAULT_SERVERLESS: &str = "https://serverless.tensormesh.ai";
const PROVIDERS: &[(&str, &str)] = &[
    ("nebius", "https://external.nebius.tensormesh.ai"),
    ("lambda", "https://external.lambda.tensormesh.ai"),
    ("yotta", "https://external.yotta.tensormesh.ai"),
];

/// The root flags that feed settings.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub config: Option<String>,
    pub controlplane_base: Option<String>,
    pub timeout: Option<f64>,
    pub max_retries: Option<i64>,
    pub ca_bundle: Option<String>,
}

/// A resolved value and its source label (`--timeout-seconds`, `config:…`, `built-in:…`).
#[derive(Debug, Clone)]
pub struct Sourced<T> {
    pub value: Option<T>,
    pub source: Option<String>,
}

impl<T> Sourced<T> {
    fn unset() -> Self {
        Sourced { value: None, source: None }
    }
    fn from(value: T, source: impl Into<String>) -> Self {
        Sourced { value: Some(value), source: Some(source.into()) }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub config_path: Sourced<String>,
    pub controlplane_base: Sourced<String>,
    pub gateway_provider: Sourced<String>,
    pub gateway_base: Sourced<String>,
    pub auth_json: PathBuf,
    pub gateway_api_key: Sourced<String>,
    pub gateway_user_id: Sourced<String>,
    pub gateway_model_id: Sourced<String>,
    pub ca_bundle: Sourced<String>,
    pub timeout_seconds: Sourced<f64>,
    pub max_retries: Sourced<i64>,
}

fn non_blank(s: Option<String>) -> Option<String> {
    s.filter(|v| !v.trim().is_empty())
}

fn env(name: &str) -> Option<String> {
    non_blank(std::env::var(name).ok())
}

impl Settings {
    pub fn resolve(flags: &Flags) -> Result<Settings> {
        let default_path = files::home().join("config.toml");
        let config_path = match non_blank(flags.config.clone()) {
            Some(p) if files::expand(&p) == default_path => Sourced::from(p, "built-in:config_path"),
            Some(p) => Sourced::from(p, "--config"),
            None => Sourced::from(default_path.display().to_string(), "built-in:config_path"),
        };
        let path = files::expand(config_path.value.as_deref().unwrap_or_default());
        let file = read_config(&path)?;
        let top = |key: &str| file.top.get(key).cloned();

        let controlplane_base = first_string(&[
            (non_blank(flags.controlplane_base.clone()), "--controlplane-base".into()),
            (env("TENSORMESH_CONTROL_PLANE_BASE_URL"), "TENSORMESH_CONTROL_PLANE_BASE_URL".into()),
            (
                string_key(top("controlplane_base"), "controlplane_base", "config:controlplane_base")?,
                "config:controlplane_base".into(),
            ),
        ])
        .or(DEFAULT_CONTROL_PLANE, "built-in:controlplane_base");
        let controlplane_base = Sourced {
            value: controlplane_base.value.map(|v| v.trim().trim_end_matches('/').to_owned()),
            ..controlplane_base
        };

        let timeout_seconds = layered(
            flags.timeout,
            "--timeout-seconds",
            "TENSORMESH_TIMEOUT_SECONDS",
            top("timeout_seconds"),
            "timeout_seconds",
            number,
            30.0,
        )?;
        if timeout_seconds.value.is_some_and(|t| t <= 0.0 || !t.is_finite()) {
            return Err(CliError::failed("Timeout must be greater than 0 seconds."));
        }
        let max_retries = layered(
            flags.max_retries,
            "--max-retries",
            "TENSORMESH_MAX_RETRIES",
            top("max_retries"),
            "max_retries",
            integer,
            0,
        )?;
        if max_retries.value.is_some_and(|n| n < 0) {
            return Err(CliError::failed("Max retries must be greater than or equal to 0."));
        }
        let ca_bundle = first_string(&[
            (non_blank(flags.ca_bundle.clone()), "--ca-bundle".into()),
            (env("TENSORMESH_CA_BUNDLE"), "TENSORMESH_CA_BUNDLE".into()),
            (
                string_key(top("ca_bundle"), "ca_bundle", "config:ca_bundle")?
                    .map(|p| files::expand(&p).display().to_string()),
                "config:ca_bundle".into(),
            ),
        ]);

        let gateway = |key: &str| -> Result<Sourced<String>> {
            let label = format!("config:{key}");
            let managed = format!("managed:{key}");
            Ok(first_string(&[
                (string_key(file.overrides.get(key).cloned(), key, &label)?, label.clone()),
                (string_key(file.managed.get(key).cloned(), key, &managed)?, managed.clone()),
            ]))
        };
        let provider = gateway("gateway_provider")?;
        if let Some(p) = &provider.value {
            if !PROVIDERS.iter().any(|(name, _)| name == p) {
                return Err(CliError::failed(format!(
                    "Invalid value for gateway_provider from {}: '{p}'. Expected one of: nebius, lambda, yotta.",
                    provider.source.as_deref().unwrap_or_default()
                )));
            }
        }
        let gateway_provider = provider.or("nebius", "built-in:gateway_provider");
        let base_source = format!("derived-from:{}", gateway_provider.source.as_deref().unwrap_or_default());
        let gateway_base = PROVIDERS
            .iter()
            .find(|(name, _)| Some(*name) == gateway_provider.value.as_deref())
            .map_or(Sourced::unset(), |(_, base)| Sourced::from((*base).to_owned(), base_source));
        Ok(Settings {
            config_path,
            controlplane_base,
            gateway_provider,
            gateway_base,
            auth_json: files::auth_path(),
            gateway_api_key: gateway("gateway_api_key")?,
            gateway_user_id: gateway("gateway_user_id")?,
            gateway_model_id: gateway("gateway_model_id")?,
            ca_bundle,
            timeout_seconds,
            max_retries,
        })
    }

    /// `tm config show` values, in the contract's key order, the API key redacted.
    pub fn values(&self) -> Value {
        json!({
            "config_path": self.config_path.value,
            "controlplane_base": self.controlplane_base.value,
            "gateway_provider": self.gateway_provider.value,
            "gateway_base": self.gateway_base.value,
            "controlplane_auth_json": self.auth_json.display().to_string(),
            "gateway_api_key": self.gateway_api_key.value.as_deref().map(redact),
            "gateway_user_id": self.gateway_user_id.value,
            "gateway_model_id": self.gateway_model_id.value,
            "ca_bundle": self.ca_bundle.value,
            "timeout_seconds": self.timeout_seconds.value,
            "max_retries": self.max_retries.value,
        })
    }

    pub fn sources(&self) -> Value {
        json!({
            "config_path": self.config_path.source,
            "controlplane_base": self.controlplane_base.source,
            "controlplane_auth_json": "built-in:controlplane_auth_json",
            "gateway_provider": self.gateway_provider.source,
            "gateway_base": self.gateway_base.source,
            "gateway_api_key": self.gateway_api_key.source,
            "gateway_user_id": self.gateway_user_id.source,
            "gateway_model_id": self.gateway_model_id.source,
            "ca_bundle": self.ca_bundle.source,
            "timeout_seconds": self.timeout_seconds.source,
            "max_retries": self.max_retries.source,
        })
    }

    pub fn timeout(&self) -> f64 {
        self.timeout_seconds.value.unwrap_or(30.0)
    }
}

impl Sourced<String> {
    fn or(self, default: &str, source: &str) -> Sourced<String> {
        if self.value.is_some() {
            self
        } else {
            Sourced::from(default.to_owned(), source)
        }
    }
}

/// A numeric setting: the flag, else the environment variable, else the top-level config
/// key, else the default; values from text are parsed (and refused) alike.
fn layered<T>(
    flag: Option<T>,
    flag_label: &str,
    env_name: &str,
    config: Option<Value>,
    key: &str,
    parse: fn(&Value, &str, &str) -> Result<T>,
    default: T,
) -> Result<Sourced<T>> {
    if let Some(v) = flag {
        return Ok(Sourced::from(v, flag_label));
    }
    if let Some(v) = env(env_name) {
        return Ok(Sourced::from(parse(&Value::String(v), key, env_name)?, env_name));
    }
    match config.filter(|v| !is_blank(v)) {
        Some(v) => {
            let label = format!("config:{key}");
            Ok(Sourced::from(parse(&v, key, &label)?, label))
        }
        None => Ok(Sourced::from(default, format!("built-in:{key}"))),
    }
}

fn first_string(layers: &[(Option<String>, String)]) -> Sourced<String> {
    layers
        .iter()
        .find_map(|(v, label)| non_blank(v.clone()).map(|v| Sourced::from(v, label.clone())))
        .unwrap_or(Sourced::unset())
}

/// Displayed API keys: up to 8 characters `***`, else `first4...last4`.
pub fn redact(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        "***".into()
    } else {
        format!("{}...{}", chars[..4].iter().collect::<String>(), chars[chars.len() - 4..].iter().collect::<String>())
    }
}

fn is_blank(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.trim().is_empty())
}

fn python_repr(v: &Value) -> String {
    match v {
        Value::String(s) => format!("'{s}'"),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        other => other.to_string(),
    }
}

fn number(v: &Value, key: &str, source: &str) -> Result<f64> {
    let parsed = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| {
        CliError::failed(format!("Invalid value for {key} from {source}: {}. Expected a number.", python_repr(v)))
    })
}

fn integer(v: &Value, key: &str, source: &str) -> Result<i64> {
    let parsed = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| {
        CliError::failed(format!("Invalid value for {key} from {source}: {}. Expected an integer.", python_repr(v)))
    })
}

fn string_key(v: Option<Value>, key: &str, source: &str) -> Result<Option<String>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(non_blank(Some(s))),
        Some(other) => Err(CliError::failed(format!(
            "Invalid value for {key} from {source}: {}. Expected a string.",
            python_repr(&other)
        ))),
    }
}

struct ConfigFile {
    top: Map<String, Value>,
    overrides: Map<String, Value>,
    managed: Map<String, Value>,
}

fn read_config(path: &std::path::Path) -> Result<ConfigFile> {
    let empty = || ConfigFile { top: Map::new(), overrides: Map::new(), managed: Map::new() };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(empty()),
        Err(e) => return Err(CliError::failed(format!("Failed to read config file: {}: {e}", path.display()))),
    };
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        CliError::failed(format!("Invalid config file (TOML): {}: {}", path.display(), e.message()))
    })?;
    let value = serde_json::to_value(&table).unwrap_or(Value::Null);
    let Value::Object(mut top) = value else { return Ok(empty()) };
    let rejected: Vec<&str> =
        ["profile", "profiles", "controlplane_auth_json"].into_iter().filter(|k| top.contains_key(*k)).collect();
    if !rejected.is_empty() {
        let hints: Vec<String> = rejected
            .iter()
            .map(|k| match *k {
                "controlplane_auth_json" => {
                    format!("- {k}: control plane auth always uses ~/.config/tensormesh/auth.json.")
                }
                _ => format!("- {k}: profiles are no longer supported; use one config file per environment."),
            })
            .collect();
        return Err(CliError::failed(format!(
            "Unsupported keys in {}: {}\n{}",
            path.display(),
            rejected.join(", "),
            hints.join("\n")
        )));
    }
    let mut table_of = |name: &str| -> Result<Map<String, Value>> {
        match top.remove(name) {
            None => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m),
            Some(_) => Err(CliError::failed(format!("Invalid config file: [{name}] must be a TOML table."))),
        }
    };
    let overrides = table_of("overrides")?;
    let managed = table_of("managed")?;
    Ok(ConfigFile { top, overrides, managed })
}

/// The starter `config.toml` (`tm config init`); `--force` keeps only `[managed]` values.
pub fn template(managed: &Map<String, Value>) -> String {
    let mut out = String::from(
        "# Tensormesh CLI config (TOML)\n\
         # Precedence: CLI flags > env vars > [overrides] > [managed] > defaults\n\
         # Supported env vars: TENSORMESH_CONTROL_PLANE_BASE_URL, TENSORMESH_TIMEOUT_SECONDS,\n\
         #   TENSORMESH_MAX_RETRIES, TENSORMESH_CA_BUNDLE\n\n\
         # controlplane_base = \"https://api.tensormesh.ai\"\n\
         timeout_seconds = 30\n\
         max_retries = 0\n\
         # ca_bundle = \"~/.config/tensormesh/ca-bundle.pem\"\n\n\
         [overrides]\n\
         # gateway_api_key = \"...\"\n\n\
         [managed]\n",
    );
    if managed.is_empty() {
        out.push_str("# gateway_api_key = \"...\"\n");
    } else if let Ok(text) = toml::to_string(managed) {
        out.push_str(&text);
    }
    out
}

/// The `[managed]` table of an existing config (for `config init --force`).
pub fn existing_managed(path: &std::path::Path) -> Map<String, Value> {
    read_config(path).map(|c| c.managed).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_redacted_like_the_official_cli() {
        assert_eq!(redact("short"), "***");
        assert_eq!(redact("overrideabcdefghij"), "over...ghij");
    }

    #[test]
    fn template_round_trips_managed_values() {
        let mut managed = Map::new();
        managed.insert("gateway_api_key".into(), json!("k123456789"));
        let text = template(&managed);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(existing_managed(&path), managed);
        assert!(text.contains("timeout_seconds = 30"));
    }
}
