//! HTTP as the official CLI does it: one timeout per call, retries only for idempotent
//! methods on connection errors and 429/5xx (honouring `Retry-After`, clamped to 8 s),
//! `--debug` lines with secrets redacted, and the error shapes of contract §F.3.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::error::{CliError, Result};

pub struct Http {
    client: reqwest::Client,
    pub timeout: Duration,
    max_retries: u32,
    debug: bool,
}

/// A response body and what the error messages need.
pub struct Reply {
    pub status: StatusCode,
    pub text: String,
    pub request_id: Option<String>,
    pub url: String,
}

pub struct Call<'a> {
    pub method: Method,
    pub url: String,
    pub query: Vec<(String, String)>,
    pub body: Option<&'a Value>,
    pub bearer: Option<&'a str>,
    /// Printed under an HTTP error of this status.
    pub hint_401: Option<&'a str>,
    pub timeout: Option<f64>,
}

impl Http {
    pub fn new(timeout: f64, max_retries: i64, ca_bundle: Option<&str>, debug: bool) -> Result<Http> {
        let mut builder = reqwest::Client::builder();
        if let Some(path) = ca_bundle {
            let pem = std::fs::read(path).map_err(|_| {
                CliError::usage(format!(
                    "CA bundle path does not exist: {path}\nHint: set --ca-bundle or TENSORMESH_CA_BUNDLE to a readable PEM file."
                ))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| CliError::usage(format!("Invalid CA bundle: {path}: {e}")))?;
            builder = builder.tls_built_in_root_certs(false);
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder.build().map_err(|e| CliError::failed(format!("Cannot start the HTTP client: {e}")))?;
        Ok(Http {
            client,
            timeout: Duration::from_secs_f64(timeout),
            max_retries: u32::try_from(max_retries).unwrap_or(0),
            debug,
        })
    }

    /// Sends a call, retrying idempotent ones; HTTP errors become `Request failed: …`.
    pub async fn send(&self, call: Call<'_>) -> Result<Reply> {
        let reply = self.send_raw(&call).await?;
        if reply.status.is_success() {
            Ok(reply)
        } else {
            Err(CliError::failed(http_error(&reply, call.hint_401)))
        }
    }

    /// Like `send`, without turning HTTP errors into errors.
    pub async fn send_raw(&self, call: &Call<'_>) -> Result<Reply> {
        let idempotent =
            matches!(call.method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE);
        let attempts = if idempotent { self.max_retries + 1 } else { 1 };
        let timeout = call.timeout.map_or(self.timeout, Duration::from_secs_f64);
        for attempt in 1..=attempts {
            let mut req = self.client.request(call.method.clone(), &call.url).timeout(timeout);
            if !call.query.is_empty() {
                req = req.query(&call.query);
            }
            if let Some(token) = call.bearer {
                req = req.bearer_auth(token);
            }
            if let Some(body) = call.body {
                req = req.json(body);
            }
            if self.debug {
                let auth = if call.bearer.is_some() { "{'Authorization': 'Bearer ***'}" } else { "{}" };
                let params = if call.query.is_empty() {
                    String::new()
                } else {
                    format!(
                        " params={{{}}}",
                        call.query.iter().map(|(k, v)| format!("'{k}': '{v}'")).collect::<Vec<_>>().join(", ")
                    )
                };
                eprintln!("debug: {} {} headers={auth}{params} attempt={attempt}/{attempts}", call.method, call.url);
            }
            let last = attempt == attempts;
            match req.send().await {
                Ok(response) => {
                    let status = response.status();
                    let retry = !last && matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504);
                    let wait = retry_after(response.headers()).unwrap_or_else(|| backoff(attempt));
                    let request_id =
                        response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
                    let url = response.url().to_string();
                    let text = response.text().await.map_err(network)?;
                    if retry {
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Ok(Reply { status, text, request_id, url });
                }
                Err(e) if !last => {
                    let _ = e;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => return Err(network(e)),
            }
        }
        Err(CliError::failed("Request failed (network error): no attempt was made"))
    }
}

fn network(e: reqwest::Error) -> CliError {
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        detail = format!("{detail}: {s}");
        source = s.source();
    }
    CliError::failed(format!("Request failed (network error): {detail}"))
}

/// 0.5 s, 1 s, 2 s, 4 s, 8 s, capped at 8 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_secs_f64((0.5 * 2f64.powi(attempt.saturating_sub(1) as i32)).min(8.0))
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: f64 = headers.get("retry-after")?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs_f64(secs.clamp(0.0, 8.0)))
}

/// `Request failed: HTTP <status> (request_id=<id>): <body>` + hint + `url=…`.
pub fn http_error(reply: &Reply, hint_401: Option<&str>) -> String {
    let mut body = match serde_json::from_str::<Value>(&reply.text) {
        Ok(v) => crate::output::json_compact(&v),
        Err(_) => reply.text.trim().to_owned(),
    };
    if body.chars().count() > 4000 {
        body = format!("{}...", body.chars().take(4000).collect::<String>());
    }
    let mut out = format!("Request failed: HTTP {}", reply.status.as_u16());
    if let Some(id) = &reply.request_id {
        out += &format!(" (request_id={id})");
    }
    if !body.is_empty() {
        out += &format!(": {body}");
    }
    if let (401, Some(hint)) = (reply.status.as_u16(), hint_401) {
        out += &format!("\nHint: {hint}");
    }
    out + &format!("\nurl={}", reply.url)
}
