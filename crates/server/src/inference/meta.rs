//! The public GETs: `/v1/models`, `/health`, `/version`, `/metrics` (behind a token when
//! `--metrics-token` is set).

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use tm_api::{ModelCard, ModelList, Version};

use super::error::ApiError;
use super::AppState;
use crate::bearer::bearer;

/// The served models that have an active price (the others are refused).
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
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let healthy = state.backend.healthy();
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({"status": if healthy { "ok" } else { "unavailable" }, "in_flight": state.backend.in_flight()});
    (status, Json(body))
}

pub async fn version() -> Json<Version> {
    Json(Version { version: env!("CARGO_PKG_VERSION") })
}

/// The engines' metrics in the Prometheus (OpenMetrics) text format.
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
