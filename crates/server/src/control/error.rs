//! The Control Plane's one error mapping: grpc-gateway's `{"code","message","details"}`
//! with the HTTP status of the gRPC code (docs/contracts.md §W6).

use axum::http::header::RETRY_AFTER;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tm_api::control::RpcStatus;
use tm_control::ControlError;

#[derive(Debug)]
pub struct CpError(pub ControlError);

impl From<ControlError> for CpError {
    fn from(e: ControlError) -> Self {
        CpError(e)
    }
}

impl CpError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> CpError {
        CpError(ControlError::invalid(field, message))
    }
}

impl IntoResponse for CpError {
    fn into_response(self) -> Response {
        let (status, code) = match &self.0 {
            ControlError::InvalidArgument { .. } => (StatusCode::BAD_REQUEST, 3),
            ControlError::Unauthenticated => (StatusCode::UNAUTHORIZED, 16),
            ControlError::PermissionDenied(_) => (StatusCode::FORBIDDEN, 7),
            ControlError::NotFound(_) => (StatusCode::NOT_FOUND, 5),
            ControlError::AlreadyExists(_) => (StatusCode::CONFLICT, 6),
            ControlError::FailedPrecondition(_) => (StatusCode::BAD_REQUEST, 9),
            ControlError::Unimplemented(_) => (StatusCode::NOT_IMPLEMENTED, 12),
            ControlError::ResourceExhausted { .. } => (StatusCode::TOO_MANY_REQUESTS, 8),
            ControlError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, 14),
            ControlError::Internal(detail) => {
                // The detail is for the log, not the client (no internals in 5xx bodies).
                tracing::error!(error = %detail, "control plane request failed");
                let body = RpcStatus { code: 13, message: "internal error".into(), details: Vec::new() };
                return (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response();
            }
        };
        let body = Json(RpcStatus { code, message: self.0.to_string(), details: Vec::new() });
        match &self.0 {
            ControlError::ResourceExhausted { retry_after_secs, .. }
            | ControlError::Unavailable { retry_after_secs, .. } => {
                (status, [(RETRY_AFTER, retry_after_secs.max(&1).to_string())], body).into_response()
            }
            _ => (status, body).into_response(),
        }
    }
}
