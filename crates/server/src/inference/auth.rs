//! API-key authentication for the inference surface: deny by default, with the public GET
//! routes listed once. Keys are the Control Plane's (hashed at rest, revocable); the
//! caller's [`KeyHolder`] is put in the request extensions for what comes after.

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use tm_control::keys::KeyHolder;
use tm_control::{Control, ControlError};
use tm_gateway::{Caller, Scopes};

use super::error::ApiError;
use crate::bearer::bearer;

/// Routes anyone may call without a key (docs/contracts.md §W2); the OpenAPI document
/// marks the same ones public (a test holds the two together).
pub(super) const PUBLIC_ROUTES: &[(Method, &str)] = &[
    (Method::GET, "/v1/models"),
    (Method::GET, "/health"),
    (Method::GET, "/ready"),
    (Method::GET, "/version"),
    (Method::GET, "/metrics"),
    (Method::GET, "/openapi.json"),
];

pub async fn require_key(State(control): State<Control>, mut req: Request, next: Next) -> Result<Response, ApiError> {
    let public = PUBLIC_ROUTES.iter().any(|(m, p)| req.method() == m && req.uri().path() == *p);
    if !public {
        let presented = bearer(req.headers()).ok_or(ApiError::Unauthorized)?;
        let holder = control.keys().authenticate(presented).await.map_err(|e| match e {
            ControlError::Unauthenticated => ApiError::Unauthorized,
            other => ApiError::Internal(other.to_string()),
        })?;
        req.extensions_mut().insert(holder);
    }
    Ok(next.run(req).await)
}

/// The caller of an authenticated generation request: its key holder, limit buckets and
/// request id, as the gateway takes them.
pub struct Authenticated(pub Caller);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        let holder = parts.extensions.get::<KeyHolder>().cloned().ok_or(ApiError::Unauthorized)?;
        let scopes = parts.extensions.get::<Scopes>().cloned().ok_or(ApiError::Unauthorized)?;
        Ok(Authenticated(Caller { holder, scopes, request_id: super::request_id(&parts.headers) }))
    }
}
