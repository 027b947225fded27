//! Requests-per-minute limits on every authenticated route, and the OpenAI-style
//! `x-ratelimit-*` headers on every response to a key holder (tokens are counted when a
//! generation is admitted, in the gateway).

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tm_control::keys::KeyHolder;
use tm_gateway::limiter::Headroom;

use super::error::ApiError;
use super::AppState;

/// Resolves the caller's limit buckets once; the handler finds them in the request
/// extensions for the tokens check.
pub async fn limit(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(holder) = req.extensions().get::<KeyHolder>().cloned() else { return next.run(req).await };
    let scopes = match state.gateway.scopes(&holder).await {
        Ok(s) => s,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let mut response = match state.gateway.check_request(&scopes).await {
        Ok(()) => {
            req.extensions_mut().insert(scopes.clone());
            next.run(req).await
        }
        Err(e) => ApiError::from(e).into_response(),
    };
    let status = state.gateway.rate_status(&scopes).await;
    let headers = response.headers_mut();
    if let Some(h) = status.requests {
        set(headers, "requests", h);
    }
    if let Some(h) = status.tokens {
        set(headers, "tokens", h);
    }
    response
}

fn set(headers: &mut HeaderMap, what: &str, h: Headroom) {
    let mut put = |name: String, value: String| {
        if let (Ok(name), Ok(value)) = (axum::http::HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.insert(name, value);
        }
    };
    put(format!("x-ratelimit-limit-{what}"), h.limit.to_string());
    put(format!("x-ratelimit-remaining-{what}"), h.remaining.to_string());
    put(format!("x-ratelimit-reset-{what}"), duration(h.reset));
}

/// OpenAI's reset format: `1s`, `6m0s`, `250ms`.
fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{}s", trim(ms as f64 / 1000.0)),
        _ => format!("{}m{}s", ms / 60_000, trim((ms % 60_000) as f64 / 1000.0)),
    }
}

fn trim(secs: f64) -> String {
    let s = format!("{secs:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn resets_read_like_openai() {
        use std::time::Duration;
        assert_eq!(super::duration(Duration::from_millis(250)), "250ms");
        assert_eq!(super::duration(Duration::from_millis(1_500)), "1.5s");
        assert_eq!(super::duration(Duration::from_secs(360)), "6m0s");
    }
}
