//! Posted forms. [`Posted`] is the only way a console handler reads a state-changing
//! request: it needs a signed-in session and that session's CSRF token (the form's `csrf`
//! field or the `x-csrf-token` header) before the form is even parsed, so no handler can
//! forget the check.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::PageError;
use crate::session::Session;
use crate::Console;

/// The longest form the console takes (a ticket message, a playground prompt).
const MAX_FORM_BYTES: usize = 256 * 1024;

/// A form with no fields of its own (sign-out, close, revoke).
#[derive(Deserialize)]
pub struct Nothing {}

/// A form posted by a signed-in person, its CSRF token checked.
pub struct Posted<T> {
    pub session: Session,
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<Console> for Posted<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, console: &Console) -> Result<Self, PageError> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, console).await?;
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|_| PageError::BadForm(format!("the form is larger than {} KiB", MAX_FORM_BYTES / 1024)))?;
        let fields: Vec<(String, String)> =
            serde_urlencoded::from_bytes(&bytes).map_err(|e| PageError::BadForm(e.to_string()))?;
        let header = parts.headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
        let field = fields.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str());
        session.check_csrf(field.or(header))?;
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|e| PageError::BadForm(e.to_string()))?;
        Ok(Posted { session, form })
    }
}

/// A form posted without a session (the sign-in form, which checks its own token).
pub struct Plain<T> {
    pub parts: Parts,
    pub form: T,
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Plain<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, _: &S) -> Result<Self, PageError> {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|_| PageError::BadForm(format!("the form is larger than {} KiB", MAX_FORM_BYTES / 1024)))?;
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|e| PageError::BadForm(e.to_string()))?;
        Ok(Plain { parts, form })
    }
}
