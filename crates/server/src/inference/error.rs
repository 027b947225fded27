//! The single mapping from errors to HTTP on the inference surface (OpenAI error shape).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tm_api::{ErrorBody, ErrorDetail};
use tm_backend::BackendError;
use tm_gateway::GatewayError;

#[derive(Debug)]
pub enum ApiError {
    Backend(BackendError),
    /// The body is not valid JSON, or a field has the wrong type; `param` names it.
    BadRequest {
        param: Option<String>,
        message: String,
    },
    Unauthorized,
    NotFound(String),
    MethodNotAllowed,
    PayloadTooLarge {
        limit: usize,
    },
    /// Refused by the gateway: price, rate limit or balance.
    Gateway(GatewayError),
    Internal(String),
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        ApiError::Backend(e)
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::Backend(b) => ApiError::Backend(b),
            other => ApiError::Gateway(other),
        }
    }
}

impl ApiError {
    /// A 400; with a `param`, the message starts with it, as validation errors do.
    pub fn bad_request(param: Option<String>, message: impl Into<String>) -> Self {
        let message = match &param {
            Some(p) => format!("`{p}`: {}", message.into()),
            None => message.into(),
        };
        ApiError::BadRequest { param, message }
    }

    /// Status, OpenAI `type`, `param`, `code`, message and `Retry-After` seconds.
    fn parts(&self) -> (StatusCode, &'static str, Option<String>, Option<&'static str>, String, Option<u64>) {
        use BackendError as B;
        use GatewayError as G;
        let msg = self.message();
        match self {
            ApiError::Backend(B::ModelNotFound(_)) | ApiError::Gateway(G::NotPriced(_)) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model".into()),
                Some("model_not_found"),
                msg,
                None,
            ),
            ApiError::Backend(B::InvalidInput { param, .. }) => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", Some(param.clone()), None, msg, None)
            }
            ApiError::Backend(B::ContextLengthExceeded { .. }) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("messages".into()),
                Some("context_length_exceeded"),
                msg,
                None,
            ),
            ApiError::Backend(B::Overloaded { retry_after_secs, .. }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_overloaded",
                None,
                Some("overloaded"),
                msg,
                Some(*retry_after_secs),
            ),
            // Another replica, or the same one a moment later, may well answer.
            ApiError::Backend(B::UpstreamFailed(_)) => {
                (StatusCode::BAD_GATEWAY, "server_error", None, Some("upstream_failed"), msg, Some(1))
            }
            ApiError::Backend(B::UpstreamTimeout(_)) => {
                (StatusCode::GATEWAY_TIMEOUT, "server_error", None, Some("upstream_timeout"), msg, Some(1))
            }
            ApiError::Backend(B::Unavailable) => {
                (StatusCode::SERVICE_UNAVAILABLE, "server_error", None, Some("unavailable"), msg, Some(5))
            }
            ApiError::BadRequest { param, .. } => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", param.clone(), None, msg, None)
            }
            ApiError::Unauthorized => {
                (StatusCode::UNAUTHORIZED, "invalid_request_error", None, Some("invalid_api_key"), msg, None)
            }
            ApiError::NotFound(_) => {
                (StatusCode::NOT_FOUND, "invalid_request_error", None, Some("not_found"), msg, None)
            }
            ApiError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", None, Some("method_not_allowed"), msg, None)
            }
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", None, Some("payload_too_large"), msg, None)
            }
            ApiError::Gateway(G::RateLimited { what, retry_after, .. }) => (
                StatusCode::TOO_MANY_REQUESTS,
                what,
                None,
                Some("rate_limit_exceeded"),
                msg,
                // Whole seconds, rounded up: retrying at the indicated time succeeds.
                Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)),
            ),
            ApiError::Gateway(G::TooManyAtOnce { .. }) => {
                (StatusCode::TOO_MANY_REQUESTS, "requests", None, Some("too_many_concurrent_requests"), msg, Some(1))
            }
            ApiError::Gateway(G::LimitsUnavailable) => {
                (StatusCode::SERVICE_UNAVAILABLE, "server_error", None, Some("rate_limits_unavailable"), msg, Some(1))
            }
            ApiError::Gateway(G::TooLarge { .. }) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("max_tokens".into()),
                Some("request_too_large"),
                msg,
                None,
            ),
            ApiError::Gateway(G::InsufficientBalance { .. }) => {
                (StatusCode::PAYMENT_REQUIRED, "insufficient_quota", None, Some("insufficient_balance"), msg, None)
            }
            ApiError::Backend(B::Internal(_))
            | ApiError::Internal(_)
            | ApiError::Gateway(G::Internal(_) | G::Backend(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, None, "internal server error".into(), None)
            }
        }
    }

    fn message(&self) -> String {
        match self {
            // The detail names the engines' addresses and quotes their errors: it goes to the
            // log (each attempt is logged as it fails), not to the client.
            ApiError::Backend(BackendError::UpstreamFailed(_)) => {
                "The model's engines failed to answer; retry in a moment".into()
            }
            ApiError::Backend(BackendError::UpstreamTimeout(_)) => {
                "The model's engines did not answer in time; retry in a moment".into()
            }
            ApiError::Backend(e) => e.to_string(),
            ApiError::Gateway(e) => e.to_string(),
            ApiError::BadRequest { message, .. } => message.clone(),
            ApiError::Unauthorized => "Incorrect or missing API key. Send `Authorization: Bearer <API key>`.".into(),
            ApiError::NotFound(path) => format!("no route for {path}"),
            ApiError::MethodNotAllowed => "method not allowed for this route".into(),
            ApiError::PayloadTooLarge { limit } => format!("request body is larger than the limit of {limit} bytes"),
            ApiError::Internal(m) => m.clone(),
        }
    }

    /// The body of an `{"error": ...}` event ending a stream that failed after it started.
    pub fn stream_event(message: &str) -> serde_json::Value {
        serde_json::json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, param, code, message, retry_after) = self.parts();
        if status.is_server_error() {
            // The detail goes to the log, never to the client.
            tracing::error!(error = ?self, "request failed");
        }
        let body = ErrorBody { error: ErrorDetail { message, kind: kind.into(), param, code: code.map(Into::into) } };
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
