//! `tm infer …`: the serverless OpenAI-compatible API (contract §A.8, §E.1).

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::input::{read_input, Input};
use crate::error::{CliError, Result};
use crate::http::{http_error, Call};
use crate::output::{self, Format};
use crate::settings::DEFAULT_SERVERLESS;
use crate::{files, Ctx};

const HINT_401: &str = "set --api-key explicitly or configure gateway_api_key. Control plane tokens \
                        (`tm auth login`) do not authenticate the serverless endpoint.";

#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Serverless API key (else `gateway_api_key` from config.toml).
    #[arg(long, value_name = "TEXT")]
    api_key: Option<String>,
    /// Serverless base URL.
    #[arg(long, value_name = "TEXT")]
    base_url: Option<String>,
    /// Connect (and, without streaming, read) timeout.
    #[arg(long, value_name = "FLOAT")]
    timeout: Option<f64>,
    /// Only `serverless` in this build.
    #[arg(long, default_value = "serverless", value_parser = ["serverless"])]
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
    #[arg(long, value_name = "TEXT")]
    model: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct Generate {
    #[command(flatten)]
    request: Request,
    /// Print tokens as they arrive.
    #[arg(long)]
    stream: bool,
    /// Seconds without a stream event before giving up.
    #[arg(long, default_value_t = 300.0, value_name = "FLOAT")]
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
        #[arg(long, default_value = "serverless", value_parser = ["serverless"])]
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
            doctor(ctx, model, api_key, base_url, exit_status)
        }
    }
}

fn non_blank(v: &Option<String>) -> Option<String> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
}

/// `tm infer doctor`: what the next serverless request would use, and what is missing.
fn doctor(
    ctx: &Ctx,
    model: Option<String>,
    api_key: Option<String>,
    base_url: Option<String>,
    exit_status: bool,
) -> Result<()> {
    let settings = ctx.settings()?;
    let option = |v: &Option<String>, name: &str| non_blank(v).map(|_| format!("option:{name}"));
    let base = non_blank(&base_url).unwrap_or(DEFAULT_SERVERLESS.to_owned()).trim_end_matches('/').to_owned();
    let key = non_blank(&api_key).or(settings.gateway_api_key.value.clone());
    let model_value = non_blank(&model);
    let mut warnings = Vec::new();
    if key.is_none() {
        warnings.push(
            "inference API key is not configured. Set gateway_api_key or pass --api-key when sending a request."
                .to_owned(),
        );
    }
    if model_value.is_none() {
        warnings.push(
            "serverless requests require --model because model names are not resolved from local config.".to_owned(),
        );
    }
    warnings.push(
        "Local readiness only. `tm infer doctor` does not live-validate the current inference endpoint or API key."
            .to_owned(),
    );
    let mut first = "tm infer chat --surface serverless ".to_owned();
    if let Some(b) = base_url.as_deref().filter(|b| !b.is_empty()) {
        first += &format!("--base-url \"{b}\" ");
    }
    if key.is_none() {
        first += "--api-key \"YOUR_INFERENCE_API_KEY\" ";
    }
    first += &format!("--model \"{}\" ", model_value.as_deref().unwrap_or("YOUR_SERVERLESS_MODEL_NAME"));
    first += "--json '[{\"role\":\"user\",\"content\":\"Say hello.\"}]'";
    let ready = key.is_some() && model_value.is_some();
    let present = |p: bool| if p { "present" } else { "missing" };
    if ctx.format == Format::Text {
        let line = format!(
            "Serverless: base={base} api_key={} model={}",
            present(key.is_some()),
            present(model_value.is_some())
        );
        ctx.print(&output::screen("tm infer doctor", &[line], &warnings, &[first]));
    } else {
        let data = json!({
            "surface": "serverless",
            "ready_for_direct_request": ready,
            "serverless": {
                "base": base,
                "base_source": option(&base_url, "--base-url").unwrap_or("default:serverless-base".into()),
                "api_key_present": key.is_some(),
                "api_key_source": option(&api_key, "--api-key").or(settings.gateway_api_key.source.clone()),
                "api_key_value": key.as_deref().map(crate::settings::redact),
                "model_id_present": model_value.is_some(),
                "model_id_source": option(&model, "--model"),
                "model_id_value": model_value,
                "model_requirement": "explicit --model required",
            },
            "warnings": warnings,
            "next_steps": [first],
        });
        ctx.print(&output::value_in(ctx.format, &data));
    }
    if exit_status && !ready {
        return Err(CliError::Exit(1));
    }
    Ok(())
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
    stream(ctx, kind, &g, &key, Value::Object(body)).await
}

async fn post(ctx: &Ctx, kind: Kind, r: Request) -> Result<()> {
    let key = require_key(ctx, &r.target)?;
    let body = request(kind, read_input(&r.input)?, r.model.clone())?;
    send_and_render(ctx, kind, &r.target, &key, Value::Object(body)).await
}

async fn send_and_render(ctx: &Ctx, kind: Kind, t: &Target, key: &str, body: Value) -> Result<()> {
    let settings = ctx.settings()?;
    let http = ctx.http(&settings)?;
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
        .await?;
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
        Some(t) => println!("{t}"),
        None => ctx.print(&output::yaml(&parsed)),
    }
    Ok(())
}

/// The first `output_text` of an `output` message, else the first non-blank text.
fn response_text(v: &Value) -> Option<String> {
    let mut fallback = None;
    for item in v["output"].as_array()? {
        for chunk in item["content"].as_array().into_iter().flatten() {
            let Some(text) = chunk["text"].as_str().filter(|t| !t.trim().is_empty()) else { continue };
            if item["type"] == "message" && chunk["type"] == "output_text" {
                return Some(text.to_owned());
            }
            fallback.get_or_insert_with(|| text.to_owned());
        }
    }
    fallback
}

/// A leading `<think>…</think>` block is the model's reasoning, not its answer.
fn strip_think(text: &str) -> String {
    let trimmed = text.trim_start();
    match (trimmed.strip_prefix("<think>"), trimmed.find("</think>")) {
        (Some(_), Some(end)) => trimmed[end + "</think>".len()..].to_owned(),
        _ => text.to_owned(),
    }
}

async fn stream(ctx: &Ctx, kind: Kind, g: &Generate, key: &str, body: Value) -> Result<()> {
    let settings = ctx.settings()?;
    let url = format!("{}{}", base_url(&g.request.target), kind.path());
    if ctx.debug && !ctx.quiet {
        eprintln!(
            "debug: POST {url} stream=true headers={{'Authorization': 'Bearer ***', 'Accept': 'text/event-stream'}}"
        );
    }
    let connect = Duration::from_secs_f64(g.request.target.timeout.unwrap_or(settings.timeout()));
    let client = reqwest::Client::builder()
        .connect_timeout(connect)
        .read_timeout(Duration::from_secs_f64(g.stream_idle_timeout))
        .build()
        .map_err(|e| CliError::failed(format!("Cannot start the HTTP client: {e}")))?;
    let mut response = client
        .post(&url)
        .bearer_auth(key)
        .header("Accept", "text/event-stream")
        .json(&body)
        .send()
        .await
        .map_err(|e| CliError::failed(format!("Request failed (network error): {e}")))?;
    if !response.status().is_success() {
        let reply = crate::http::Reply {
            status: response.status(),
            request_id: response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned),
            url: url.clone(),
            text: response.text().await.unwrap_or_default(),
        };
        return Err(CliError::failed(http_error(&reply, Some(HINT_401))));
    }
    let mut pending = String::new();
    let mut thinking = ThinkFilter::default();
    let mut out = std::io::stdout();
    'read: loop {
        let chunk =
            response.chunk().await.map_err(|e| CliError::failed(format!("Request failed (network error): {e}")))?;
        let Some(chunk) = chunk else { break };
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            let Some(data) = line.trim_end().strip_prefix("data:").map(str::trim) else { continue };
            if data == "[DONE]" {
                break 'read;
            }
            let event: Value = serde_json::from_str(data)
                .map_err(|_| CliError::failed(format!("Invalid stream event JSON: {data}")))?;
            if let Some(error) = event.get("error") {
                let _ = writeln!(out);
                return Err(CliError::failed(format!("Stream error: {}", output::json_compact(error))));
            }
            let piece = match kind {
                Kind::Chat => event["choices"][0]["delta"]["content"].as_str().map(|t| thinking.push(t)),
                // As the official CLI: the non-streaming extractor on each event (quirk Q9).
                Kind::Responses => response_text(&event),
                _ => event["choices"][0]["text"].as_str().map(str::to_owned),
            };
            if let Some(p) = piece.filter(|p| !p.is_empty()) {
                let _ = out.write_all(p.as_bytes());
                let _ = out.flush();
            }
        }
    }
    let _ = writeln!(out);
    Ok(())
}

/// Drops a leading `<think>…</think>` block even when it arrives split across chunks.
#[derive(Default)]
struct ThinkFilter {
    held: String,
    done: bool,
}

impl ThinkFilter {
    fn push(&mut self, piece: &str) -> String {
        if self.done {
            return piece.to_owned();
        }
        self.held.push_str(piece);
        let start = self.held.trim_start();
        if "<think>".starts_with(start) && start.len() < "<think>".len() {
            return String::new(); // could still become a think block
        }
        if !start.starts_with("<think>") {
            self.done = true;
            return std::mem::take(&mut self.held);
        }
        match start.find("</think>") {
            Some(end) => {
                self.done = true;
                let rest = start[end + "</think>".len()..].to_owned();
                self.held.clear();
                rest
            }
            None => String::new(),
        }
    }
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
                println!("{v}");
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
    fn think_blocks_are_dropped_across_chunks() {
        let mut f = ThinkFilter::default();
        let out: String =
            ["<think>hidden", " reasoning</think>", "Hello", " from", " mock", "!"].iter().map(|p| f.push(p)).collect();
        assert_eq!(out, "Hello from mock!");
        let mut plain = ThinkFilter::default();
        assert_eq!(plain.push("<t"), "");
        assert_eq!(plain.push("able>"), "<table>");
        assert_eq!(strip_think("<think>x</think>Hi"), "Hi");
    }

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
