//! Opening a response on one endpoint: connect, send, and read up to the first event,
//! within the first-byte timeout. Until that event nothing has reached the client, so a
//! failure here may be retried elsewhere.

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::Value;
use tm_backend::BackendError;

use crate::pool::InFlight;
use crate::wire::{parse_event, Chunk, SseReader};

pub type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A response whose first event has arrived.
pub struct Opened {
    pub slot: InFlight,
    pub bytes: ByteStream,
    pub reader: SseReader,
    /// The first event's chunks, not yet relayed.
    pub first: Vec<Chunk>,
}

/// Why an attempt failed.
pub enum AttemptError {
    /// The request's own fault (a 4xx other than 408/429): the same answer would come from
    /// every endpoint, so it goes back to the client as it is.
    Refused(BackendError),
    /// This endpoint could not serve it; another may. `endpoint_fault` is false for an
    /// endpoint that said it was busy (429), which is no sign of a broken one.
    Failed { message: String, endpoint_fault: bool, outcome: &'static str },
}

impl AttemptError {
    fn failed(outcome: &'static str, message: impl Into<String>) -> AttemptError {
        AttemptError::Failed { message: message.into(), endpoint_fault: true, outcome }
    }
}

/// Sends `body` to `path` on the slot's endpoint and reads up to its first event.
pub async fn open(
    client: &reqwest::Client,
    slot: InFlight,
    path: &str,
    body: &Value,
    request_id: &str,
) -> Result<Opened, AttemptError> {
    let endpoint = slot.endpoint().clone();
    let mut request = client.post(format!("{}{path}", endpoint.base)).header("x-request-id", request_id).json(body);
    if let Some(key) = &endpoint.key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.map_err(|e| {
        let outcome = if e.is_connect() { "connect_error" } else { "send_error" };
        AttemptError::failed(outcome, format!("{}: {}", endpoint.base, error_chain(&e)))
    })?;
    let status = response.status();
    if !status.is_success() {
        let text = error_body(response).await;
        let message = upstream_message(&text).unwrap_or_else(|| status.to_string());
        let message = format!("{} answered {}: {message}", endpoint.base, status.as_u16());
        return Err(match status.as_u16() {
            429 => AttemptError::Failed { message, endpoint_fault: false, outcome: "busy" },
            408 => AttemptError::failed("status_5xx", message),
            400..=499 => AttemptError::Refused(BackendError::invalid(
                upstream_param(&text).unwrap_or_else(|| "body".into()),
                format!("the model's engine refused the request: {message}"),
            )),
            _ => AttemptError::failed("status_5xx", message),
        });
    }
    let mut bytes: ByteStream = Box::pin(response.bytes_stream());
    let mut reader = SseReader::default();
    loop {
        if let Some(event) = reader.next_event() {
            let first = event
                .and_then(|data| parse_event(&data))
                .map_err(|e| AttemptError::failed("malformed", format!("{}: {e}", endpoint.base)))?;
            if let Some(Chunk::Error(e)) = first.first() {
                return Err(AttemptError::failed("error_event", format!("{}: {e}", endpoint.base)));
            }
            return Ok(Opened { slot, bytes, reader, first });
        }
        match bytes.next().await {
            Some(Ok(b)) => reader.push(&b),
            Some(Err(e)) => {
                return Err(AttemptError::failed("broken_stream", format!("{}: {}", endpoint.base, error_chain(&e))))
            }
            None => {
                return Err(AttemptError::failed(
                    "empty_stream",
                    format!("{}: the response had no events", endpoint.base),
                ))
            }
        }
    }
}

/// The start of an error response's body (enough for its message; the rest is not read).
pub async fn error_body(response: reqwest::Response) -> String {
    const LIMIT: usize = 64 * 1024;
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() >= LIMIT {
            body.truncate(LIMIT);
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// `error.message` of an OpenAI-shaped error body.
fn upstream_message(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    v.pointer("/error/message").or_else(|| v.get("message")).and_then(Value::as_str).map(str::to_owned)
}

fn upstream_param(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    v.pointer("/error/param").and_then(Value::as_str).map(str::to_owned)
}

/// An error with its causes (reqwest's own message says little: "error sending request").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
