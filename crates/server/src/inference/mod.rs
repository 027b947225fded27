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

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::routing::get;
use axum::{middleware, Extension, Router};
use prometheus_client::registry::Registry;
use tm_api::{ChatCompletionChunk, ErrorBody};
use tm_backend::Backend;
use tm_control::Control;
use tm_gateway::Gateway;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::openapi;

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
    /// Set once shutdown began: `GET /ready` answers 503 from then on.
    pub draining: Arc<AtomicBool>,
}

pub struct RouterConfig {
    pub body_limit: usize,
    /// Whether `GET /metrics` is one of this listener's routes (else [`metrics_router`]
    /// serves it on its own address).
    pub with_metrics: bool,
}

/// The listener's OpenAPI document: what [`routes`] generates, completed.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tensormesh Inference API",
        description = "OpenAI-compatible inference. POSTs take an API key \
        (`Authorization: Bearer tm_sk_...`); the GETs are public."
    ),
    components(schemas(ErrorBody, ChatCompletionChunk)),
    // The POSTs; the public GETs say so.
    security(("bearer" = []))
)]
struct InferenceApi;

/// The routes, each registered with its OpenAPI operation.
fn routes(with_metrics: bool) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let routes = OpenApiRouter::with_openapi(InferenceApi::openapi())
        .routes(routes!(chat::create))
        .routes(routes!(completions::create))
        .routes(routes!(responses::create))
        .routes(routes!(tokenize::tokenize))
        .routes(routes!(tokenize::detokenize))
        .routes(routes!(meta::models))
        .routes(routes!(meta::health))
        .routes(routes!(meta::ready))
        .routes(routes!(meta::version));
    let routes = if with_metrics { routes.routes(routes!(meta::metrics)) } else { routes };
    let (router, doc) = routes.split_for_parts();
    (router, openapi::finish(doc, "An API key (`tm_sk_...`), for the POST routes.", "ErrorBody"))
}

pub fn router(state: AppState, config: RouterConfig) -> Router {
    let (routes, doc) = routes(config.with_metrics);
    routes
        .route("/openapi.json", openapi::route(&doc))
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

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// Public means: `{}` (anonymous) among the operation's security alternatives, or the
    /// document's when the operation has none of its own.
    fn public_operations(doc: &Value) -> Vec<(String, String)> {
        let mut public = Vec::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                let anonymous = match op.get("security").or_else(|| doc.get("security")).and_then(Value::as_array) {
                    None => true,
                    Some(alternatives) => alternatives.iter().any(|a| a.as_object().is_some_and(|a| a.is_empty())),
                };
                if anonymous {
                    public.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        public
    }

    #[test]
    fn the_document_marks_public_exactly_the_routes_the_key_check_lets_through() {
        let doc = serde_json::to_value(super::routes(true).1).unwrap_or_default();
        let mut documented = public_operations(&doc);
        // The document itself is served beside the generated routes.
        documented.push(("GET".into(), "/openapi.json".into()));
        documented.sort();
        let mut allowed: Vec<(String, String)> =
            super::auth::PUBLIC_ROUTES.iter().map(|(m, p)| (m.to_string(), (*p).to_owned())).collect();
        allowed.sort();
        assert_eq!(documented, allowed);
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"]["/v1/chat/completions"]["post"]["responses"]["default"].is_object());
    }
}
