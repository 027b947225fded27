//! `tm infer …`: the serverless OpenAI-compatible API (contract §A.8, §E.1).

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::input::{read_input, Input};
use crate::error::{CliError, Result};
use crate::http::Call;
use crate::output::{self, Format};
use crate::progress::Spinner;
use crate::settings::DEFAULT_SERVERLESS;
use crate::{files, Ctx};

mod doctor;
mod stream;
mod text;

use text::{response_text, strip_think};

const HINT_401: &str = "set --api-key explicitly or configure gateway_api_key. Control plane tokens \
                        (`tm auth login`) do not authenticate the serverless endpoint.";

#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Serverless API key (else `gateway_api_key` from config.toml).
    #[arg(long, value_name = "TEXT", display_order = 3)]
    api_key: Option<String>,
    /// Serverless base URL.
    #[arg(long, value_name = "TEXT", display_order = 4)]
    base_url: Option<String>,
    /// Connect (and, without streaming, read) timeout.
    #[arg(long, value_name = "FLOAT", display_order = 900)]
    timeout: Option<f64>,
    /// Only `serverless` in this build.
    #[arg(long, default_value = "serverless", value_parser = ["serverless"], display_order = 1)]
    surface: String,
}

/// Where to send, what, and for which model.
#[derive(Args, Debug, Clone)]
pub struct Request {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    input: Input,
    /// Model name (else the body's `model`).
    #[arg(long, value_name = "TEXT", display_order = 2)]
    model: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct Generate {
    #[command(flatten)]
    request: Request,
    /// Print tokens as they arrive.
    #[arg(long, display_order = 5)]
    stream: bool,
    /// Seconds without a stream event before giving up.
    #[arg(long, default_value_t = 300.0, value_name = "FLOAT", display_order = 6)]
    stream_idle_timeout: f64,
}

#[derive(Subcommand, Debug)]
pub enum InferCommand {
    /// Chat completion (POST /v1/chat/completions); input: messages array or request object.
    Chat(Generate),
    /// Text completion (POST /v1/completions).
    Completions(Generate),
    /// Responses API (POST /v1/responses).
    Responses(Generate),
    /// Tokenize (POST /tokenize).
    Tokenize(Request),
    /// Detokenize (POST /detokenize).
    Detokenize(Request),
    /// List models (GET /v1/models).
    Models(Target),
    /// Server health (GET /health).
    Health(Target),
    /// Server version (GET /version).
    Version(Target),
    /// Local readiness for the next request (no network).
    Doctor {
        #[arg(long, default_value = "serverless", value_parser = ["serverless"], display_order = 1)]
        surface: String,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        api_key: Option<String>,
        #[arg(long)]
        base_url: Option<String>,
        /// Exit 1 unless a request could be sent.
        #[arg(long)]
        exit_status: bool,
    },
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completions,
    Responses,
    Tokenize,
    Detokenize,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Chat => "/v1/chat/completions",
            Kind::Completions => "/v1/completions",
            Kind::Responses => "/v1/responses",
            Kind::Tokenize => "/tokenize",
            Kind::Detokenize => "/detokenize",
        }
    }
}

pub async fn run(ctx: &Ctx, command: InferCommand) -> Result<()> {
    match command {
        InferCommand::Chat(g) => generate(ctx, Kind::Chat, g).await,
        InferCommand::Completions(g) => generate(ctx, Kind::Completions, g).await,
        InferCommand::Responses(g) => generate(ctx, Kind::Responses, g).await,
        InferCommand::Tokenize(t) => post(ctx, Kind::Tokenize, t).await,
        InferCommand::Detokenize(t) => post(ctx, Kind::Detokenize, t).await,
        InferCommand::Models(t) => get(ctx, "/v1/models", None, t).await,
        InferCommand::Health(t) => get(ctx, "/health", Some("status"), t).await,
        InferCommand::Version(t) => get(ctx, "/version", Some("version"), t).await,
        InferCommand::Doctor { model, api_key, base_url, exit_status, .. } => {
            doctor::doctor(ctx, model, api_key, base_url, exit_status)
        }
    }
}

fn base_url(t: &Target) -> String {
    t.base_url
        .as_deref()
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .unwrap_or(DEFAULT_SERVERLESS)
        .trim_end_matches('/')
        .to_owned()
}

fn api_key(ctx: &Ctx, t: &Target) -> Result<Option<String>> {
    match t.api_key.clone().filter(|k| !k.trim().is_empty()) {
        Some(k) => Ok(Some(k)),
        None => Ok(ctx.settings()?.gateway_api_key.value),
    }
}

fn require_key(ctx: &Ctx, t: &Target) -> Result<String> {
    api_key(ctx, t)?.ok_or_else(|| {
        let logged_in = matches!(files::read_auth(), Ok(Some(a)) if a.contains_key("access_token"));
        let note = if logged_in {
            " Note: you appear logged into the control plane; that token is not a serverless API key."
        } else {
            ""
        };
        CliError::usage(format!("Missing serverless API key. Set --api-key or configure gateway_api_key.{note}"))
    })
}

/// The request body: `model` set (a new key goes last), for chat a messages array wrapped.
fn request(kind: Kind, input: Value, model: Option<String>) -> Result<Map<String, Value>> {
    let mut body = match (kind, input) {
        (Kind::Chat, Value::Array(messages)) => {
            let mut m = Map::new();
            m.insert("model".into(), Value::Null);
            m.insert("messages".into(), Value::Array(messages));
            m
        }
        (_, Value::Object(m)) => m,
        (Kind::Chat, _) => {
            return Err(CliError::usage("Input JSON must be an object (request) or an array (messages)."))
        }
        _ => return Err(CliError::usage("Request body must be a JSON object.")),
    };
    let model = model
        .filter(|m| !m.trim().is_empty())
        .or_else(|| body.get("model").and_then(Value::as_str).filter(|m| !m.trim().is_empty()).map(str::to_owned));
    let Some(model) = model else {
        return Err(CliError::usage(if kind == Kind::Chat {
            "Missing serverless model name. Set --model when using --surface serverless."
        } else {
            "Missing serverless model name. Set --model or include `model` in the JSON request body."
        }));
    };
    body.insert("model".into(), Value::String(model));
    if kind == Kind::Chat && !body.contains_key("messages") {
        return Err(CliError::usage("Missing messages. Provide a messages array or include it in the JSON payload."));
    }
    Ok(body)
}

async fn generate(ctx: &Ctx, kind: Kind, g: Generate) -> Result<()> {
    let name = match kind {
        Kind::Chat => "chat",
        Kind::Responses => "responses",
        _ => "completions",
    };
    if g.stream && ctx.format != Format::Text {
        return Err(CliError::usage(format!("`tm infer {name} --stream` currently supports only `--output text`.")));
    }
    if !(g.stream_idle_timeout.is_finite() && g.stream_idle_timeout > 0.0) {
        return Err(CliError::usage("`--stream-idle-timeout` must be a finite number greater than 0."));
    }
    let r = &g.request;
    let key = require_key(ctx, &r.target)?;
    let mut body = request(kind, read_input(&r.input)?, r.model.clone())?;
    if body.get("stream").and_then(Value::as_bool) == Some(true) && !g.stream {
        return Err(CliError::usage(
            "Input JSON enables streaming. Re-run with `--stream` or remove `stream` from the JSON payload.",
        ));
    }
    if !g.stream {
        return send_and_render(ctx, kind, &r.target, &key, Value::Object(body)).await;
    }
    body.insert("stream".into(), Value::Bool(true));
    stream::stream(ctx, kind, &g, &key, Value::Object(body)).await
}

async fn post(ctx: &Ctx, kind: Kind, r: Request) -> Result<()> {
    let key = require_key(ctx, &r.target)?;
    let body = request(kind, read_input(&r.input)?, r.model.clone())?;
    send_and_render(ctx, kind, &r.target, &key, Value::Object(body)).await
}

async fn send_and_render(ctx: &Ctx, kind: Kind, t: &Target, key: &str, body: Value) -> Result<()> {
    let settings = ctx.settings()?;
    let http = ctx.http(&settings)?;
    let spinner = Spinner::start(ctx.quiet, "Waiting for the model…");
    let reply = http
        .send(Call {
            method: Method::POST,
            url: format!("{}{}", base_url(t), kind.path()),
            query: Vec::new(),
            body: Some(&body),
            bearer: Some(key),
            hint_401: Some(HINT_401),
            timeout: t.timeout,
        })
        .await;
    drop(spinner);
    let reply = reply?;
    if ctx.format != Format::Text {
        ctx.print(&output::body(ctx.format, &reply.text)?);
        return Ok(());
    }
    let parsed: Value = serde_json::from_str(&reply.text)
        .map_err(|_| CliError::failed(format!("Invalid JSON response: expected JSON. Raw response: {}", reply.text)))?;
    let text = match kind {
        Kind::Chat => parsed["choices"][0]["message"]["content"].as_str().map(strip_think),
        Kind::Completions => parsed["choices"][0]["text"].as_str().map(str::to_owned),
        Kind::Responses => response_text(&parsed),
        Kind::Detokenize => parsed["prompt"].as_str().map(str::to_owned),
        Kind::Tokenize => None,
    };
    match text.filter(|t| !t.trim().is_empty()) {
        Some(t) => ctx.print(&format!("{t}\n")),
        None => ctx.print(&output::yaml(&parsed)),
    }
    Ok(())
}

async fn get(ctx: &Ctx, path: &str, field: Option<&str>, t: Target) -> Result<()> {
    let settings = ctx.settings()?;
    let http = ctx.http(&settings)?;
    let key = api_key(ctx, &t)?;
    let reply = http
        .send(Call {
            method: Method::GET,
            url: format!("{}{path}", base_url(&t)),
            query: Vec::new(),
            body: None,
            bearer: key.as_deref(),
            hint_401: Some(HINT_401),
            timeout: t.timeout,
        })
        .await?;
    if ctx.format == Format::Text {
        if let Some(field) = field {
            let parsed: Value = serde_json::from_str(&reply.text).unwrap_or(json!(null));
            if let Some(v) = parsed.get(field).and_then(Value::as_str).filter(|v| !v.is_empty()) {
                ctx.print(&format!("{v}\n"));
                return Ok(());
            }
        }
    }
    ctx.print(&output::body(ctx.format, &reply.text)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_input_is_wrapped_and_model_resolved() {
        let body = request(Kind::Chat, json!([{"role": "user", "content": "hi"}]), Some("m".into())).unwrap();
        assert_eq!(Value::Object(body), json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        let body = request(Kind::Completions, json!({"prompt": "p", "max_tokens": 8}), Some("m1".into())).unwrap();
        assert_eq!(body.keys().collect::<Vec<_>>(), ["prompt", "max_tokens", "model"]);
        assert!(matches!(request(Kind::Chat, json!([]), None), Err(CliError::Usage(_))));
        assert!(matches!(request(Kind::Chat, json!({"model": "m"}), None), Err(CliError::Usage(_))));
    }
}
