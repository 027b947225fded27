//! The playground: chat with a served model as the signed-in person, through the metered
//! path (`Gateway::signed_in_chat`: the same limits, hold and usage record as an API
//! request, under the pseudo key `control-plane:<user id>`). The script streams the answer
//! from `/console/playground/stream`; without script the form posts to the page and gets
//! the whole answer.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tm_backend::{GenerationEvent, Output};
use tm_control::ControlError;
use tm_gateway::Metered;

use crate::error::PageError;
use crate::form::Posted;
use crate::render::page;
use crate::session::Session;
use crate::{Console, Serving};

/// The longest answer of one turn.
const MAX_ANSWER_TOKENS: u32 = 512;
/// Earlier turns a conversation may carry.
const MAX_TURNS: usize = 64;
/// What the temperature field starts at: small models ramble at their default of 1.
const DEFAULT_TEMPERATURE: f64 = 0.7;

#[derive(Deserialize, Serialize, Clone)]
struct Turn {
    role: String,
    content: String,
}

#[derive(Deserialize, Default)]
pub struct Say {
    #[serde(default)]
    model: String,
    #[serde(default)]
    message: String,
    /// The conversation so far: a JSON array of `{role, content}` (empty: a new one).
    #[serde(default)]
    history: String,
    /// 0 to 2; empty: the model's default.
    #[serde(default)]
    temperature: String,
}

pub async fn show(State(console): State<Console>, session: Session) -> Result<Response, PageError> {
    render(&console, &session, &Say { temperature: DEFAULT_TEMPERATURE.to_string(), ..Say::default() }, &[], None)
}

/// Without script: the whole answer, in the page.
pub async fn answer(State(console): State<Console>, posted: Posted<Say>) -> Result<Response, PageError> {
    let Posted { session, form } = posted;
    let (serving, mut turns) = conversation(&console, &form)?;
    let mut generation = start(serving, &session, &form, &turns).await?;
    let mut text = String::new();
    let mut failure = None;
    while let Some(step) = next_text(&mut generation).await {
        match step {
            Step::Text(t) => text.push_str(&t),
            Step::Failed(e) => failure = Some(e),
        }
    }
    turns.push(Turn { role: "assistant".into(), content: text });
    render(&console, &session, &form, &turns, failure.as_deref())
}

/// With script: the answer's text as it is generated (`text/plain`, chunked).
pub async fn stream(State(console): State<Console>, posted: Posted<Say>) -> Result<Response, PageError> {
    let Posted { session, form } = posted;
    let (serving, turns) = conversation(&console, &form)?;
    let generation = start(serving, &session, &form, &turns).await?;
    // A reader that goes away drops the stream, and with it the generation: what was
    // generated is billed, as for an API stream cut by its client.
    let body = futures::stream::unfold(Some(generation), |state| async move {
        let mut generation = state?;
        match next_text(&mut generation).await? {
            Step::Text(t) => Some((Ok::<_, Infallible>(Bytes::from(t)), Some(generation))),
            Step::Failed(e) => Some((Ok(Bytes::from(format!("\n[the model failed: {e}]"))), None)),
        }
    });
    let headers = [
        (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    Ok((headers, Body::from_stream(body)).into_response())
}

enum Step {
    Text(String),
    Failed(String),
}

/// The next piece of the answer; `None` once it ended (sealed: billed before the last
/// bytes go out).
async fn next_text(generation: &mut Metered) -> Option<Step> {
    loop {
        match generation.recv().await {
            Some(GenerationEvent::Output { choice: 0, output: Output::Text { text, .. } }) => {
                if !text.is_empty() {
                    return Some(Step::Text(text));
                }
            }
            Some(GenerationEvent::Finished { .. }) => {
                generation.seal().await;
                return None;
            }
            Some(GenerationEvent::Failed(e)) => {
                generation.waive();
                tracing::warn!(error = %e, "playground generation failed");
                return Some(Step::Failed(e));
            }
            Some(_) => {}
            None => {
                generation.waive();
                return Some(Step::Failed("the engine dropped the request".into()));
            }
        }
    }
}

/// The serving side and the conversation with the new message at its end.
fn conversation<'c>(console: &'c Console, form: &Say) -> Result<(&'c Serving, Vec<Turn>), PageError> {
    let serving = console.serving.as_ref().ok_or_else(|| ControlError::Unavailable {
        message: "this server serves no models".into(),
        retry_after_secs: 60,
    })?;
    let mut turns: Vec<Turn> = match form.history.trim() {
        "" => Vec::new(),
        h => {
            serde_json::from_str(h).map_err(|_| ControlError::invalid("history", "is not a list of {role, content}"))?
        }
    };
    if turns.len() > MAX_TURNS {
        return Err(ControlError::invalid("history", format!("has more than {MAX_TURNS} turns")).into());
    }
    if let Some(t) = turns.iter().find(|t| !matches!(t.role.as_str(), "user" | "assistant" | "system")) {
        return Err(ControlError::invalid("history", format!("has a turn with role {:?}", t.role)).into());
    }
    if form.message.trim().is_empty() {
        return Err(ControlError::invalid("message", "is empty").into());
    }
    turns.push(Turn { role: "user".into(), content: form.message.clone() });
    Ok((serving, turns))
}

async fn start(serving: &Serving, session: &Session, form: &Say, turns: &[Turn]) -> Result<Metered, PageError> {
    let messages: Vec<Value> = turns.iter().map(|t| json!({"role": t.role, "content": t.content})).collect();
    let temperature = temperature(&form.temperature)?;
    let model = form.model.trim().to_owned();
    serving
        .gateway
        .signed_in_chat(session.principal.clone(), model, messages, MAX_ANSWER_TOKENS, temperature)
        .await
        .map_err(|e| e.into_control().into())
}

/// The form's temperature: empty is the model's default; else 0 to 2.
fn temperature(field: &str) -> Result<Option<f64>, PageError> {
    match field.trim() {
        "" => Ok(None),
        t => t
            .parse::<f64>()
            .ok()
            .filter(|t| (0.0..=2.0).contains(t))
            .map(Some)
            .ok_or_else(|| ControlError::invalid("temperature", "must be a number from 0 to 2").into()),
    }
}

fn render(
    console: &Console,
    session: &Session,
    form: &Say,
    turns: &[Turn],
    failure: Option<&str>,
) -> Result<Response, PageError> {
    let models: Vec<String> =
        console.serving.as_ref().map(|s| s.backend.models().into_iter().map(|m| m.id).collect()).unwrap_or_default();
    let history = serde_json::to_string(turns).unwrap_or_default();
    let ctx = context! {
        models, model => form.model.clone(), temperature => form.temperature.clone(), turns, history, failure,
        max_tokens => MAX_ANSWER_TOKENS,
    };
    page(console, session, "playground.html", "playground", "Playground", ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_temperature_field_is_checked() {
        assert_eq!(temperature("").ok(), Some(None));
        assert_eq!(temperature(" 0.7 ").ok(), Some(Some(0.7)));
        for bad in ["-0.1", "2.5", "hot", "NaN"] {
            assert!(temperature(bad).is_err(), "{bad}");
        }
    }
}
