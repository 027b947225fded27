//! The public GETs: `/v1/models`, `/health`, `/version`, `/metrics` (behind a token when
//! `--metrics-token` is set).

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tm_api::{ErrorBody, Health, ModelCard, ModelList, Readiness, Version};

use super::error::ApiError;
use super::AppState;
use crate::bearer::bearer;

/// The served models that have an active price (the others are refused).
#[utoipa::path(get, path = "/v1/models", tag = "meta", security(()), responses((status = 200, body = ModelList)))]
pub async fn models(State(state): State<AppState>) -> Json<ModelList> {
    let mut priced = Vec::new();
    for m in state.backend.models() {
        if matches!(state.control.pricing().active(&m.id).await, Ok(Some(_))) {
            priced.push(m);
        }
    }
    let data = priced
        .into_iter()
        .map(|m| ModelCard {
            id: m.id,
            object: "model",
            created: state.started,
            owned_by: m.owned_by,
            max_model_len: m.max_context,
        })
        .collect();
    Json(ModelList { object: "list", data })
}

/// `status` is what clients read; `in_flight` (requests admitted and not finished) helps
/// operators and tests see load without a metrics scrape.
#[utoipa::path(get, path = "/health", tag = "meta", security(()), responses(
    (status = 200, description = "Every engine is up.", body = Health),
    (status = 503, description = "An engine is down.", body = Health),
))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let healthy = state.backend.healthy();
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body =
        Health { status: if healthy { "ok" } else { "unavailable" }, in_flight: state.backend.in_flight() as u64 };
    (status, Json(body))
}

/// Readiness, for load balancers: 503 while shutting down (from SIGTERM, for
/// `--drain-delay`, while requests are still served), while the database does not answer
/// within a second, or while an engine is down; else 200. `/health` says only the last.
#[utoipa::path(get, path = "/ready", tag = "meta", security(()), responses(
    (status = 200, description = "Send requests here.", body = Readiness),
    (status = 503, description = "Send none: `draining`, `database unreachable` or `engine unavailable`.", body = Readiness),
))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let ping = tokio::time::timeout(READY_DATABASE_TIMEOUT, state.control.store().ping());
    let status = if state.draining.load(Ordering::Relaxed) {
        "draining"
    } else if !matches!(ping.await, Ok(Ok(()))) {
        "database unreachable"
    } else if !state.backend.healthy() {
        "engine unavailable"
    } else {
        "ready"
    };
    let code = if status == "ready" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(Readiness { status }))
}

/// How long `/ready` waits for the database.
const READY_DATABASE_TIMEOUT: Duration = Duration::from_secs(1);

#[utoipa::path(get, path = "/version", tag = "meta", security(()), responses((status = 200, body = Version)))]
pub async fn version() -> Json<Version> {
    Json(Version { version: env!("CARGO_PKG_VERSION") })
}

/// The engines' metrics in the Prometheus (OpenMetrics) text format.
#[utoipa::path(get, path = "/metrics", tag = "meta", security((), ("bearer" = [])), responses(
    (status = 200, description = "OpenMetrics text.", content_type = "application/openmetrics-text", body = String),
    (status = 401, description = "`--metrics-token` is set and was not presented.", body = ErrorBody),
))]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<impl IntoResponse, ApiError> {
    if let Some(token) = &state.metrics_token {
        let presented = bearer(&headers).unwrap_or_default();
        if !tm_control::secret::digests_match(token, presented) {
            return Err(ApiError::Unauthorized);
        }
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &state.metrics)
        .map_err(|e| ApiError::Internal(format!("cannot encode metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text))
}
