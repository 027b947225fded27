//! `--stream`: SSE events printed as they arrive.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

use super::text::{response_text, ThinkFilter};
use super::{base_url, Generate, Kind, HINT_401};
use crate::error::{CliError, Result};
use crate::http::http_error;
use crate::{output, Ctx};

pub(super) async fn stream(ctx: &Ctx, kind: Kind, g: &Generate, key: &str, body: Value) -> Result<()> {
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
