//! The OpenAI-compatible inference listener. One module per route group; handlers get a
//! [`JsonBody`] and return [`ApiError`], whose `IntoResponse` is the only status mapping.

pub mod auth;
mod chat;
mod completions;
pub mod error;
mod generation;
pub mod json;
mod logprobs;
mod meta;
mod rate_limit;
mod responses;
mod tokenize;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::routing::{get, post};
use axum::{middleware, Extension, Router};
use prometheus_client::registry::Registry;
use tm_backend::Backend;
use tm_control::Control;
use tm_gateway::Gateway;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use error::ApiError;
use json::BodyLimit;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub backend: Arc<dyn Backend>,
    /// Rate limits, holds and settlement.
    pub gateway: Gateway,
    /// API keys and prices.
    pub control: Control,
    /// Unix time the server started; reported as the models' `created`.
    pub started: u64,
    /// What `GET /metrics` reports.
    pub metrics: Arc<Registry>,
    /// What `GET /metrics` requires, when set.
    pub metrics_token: Option<Arc<str>>,
}

pub struct RouterConfig {
    pub body_limit: usize,
    /// Whether `GET /metrics` is one of this listener's routes (else [`metrics_router`]
    /// serves it on its own address).
    pub with_metrics: bool,
}

pub fn router(state: AppState, config: RouterConfig) -> Router {
    let routes = Router::new()
        .route("/v1/chat/completions", post(chat::create))
        .route("/v1/completions", post(completions::create))
        .route("/v1/responses", post(responses::create))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .route("/v1/models", get(meta::models))
        .route("/health", get(meta::health))
        .route("/version", get(meta::version));
    let routes = if config.with_metrics { routes.route("/metrics", get(meta::metrics)) } else { routes };
    routes
        .fallback(|uri: Uri| async move { ApiError::NotFound(uri.path().to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Layers run bottom-up: the request id is set first so every response (errors,
        // 401s, panics) carries it; the key is checked before its rate limits.
        .layer(middleware::from_fn_with_state(state.clone(), rate_limit::limit))
        .layer(middleware::from_fn_with_state(state.control.clone(), auth::require_key))
        .with_state(state)
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(Extension(BodyLimit(config.body_limit)))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::Internal("handler panicked".into()))
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        // The request id is the settlement key, so it is always ours: a client that sent
        // an id it had used before could otherwise collide with its earlier, settled request.
        .layer(middleware::map_request(|mut req: axum::extract::Request| async move {
            req.headers_mut().remove("x-request-id");
            req
        }))
}

/// `GET /metrics` alone, for its own listener (`--metrics-addr`); `--metrics-token` still
/// applies.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(meta::metrics))
        .fallback(|uri: Uri| async move { ApiError::NotFound(uri.path().to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::Internal("handler panicked".into()))
        }))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A fresh id with an OpenAI-style prefix.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The request's id (set by the request-id layer); it is also its settlement key.
pub fn request_id(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}
