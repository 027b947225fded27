//! Every way a console request fails, as a page: the one place statuses are chosen.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use tm_control::ControlError;

#[derive(Debug)]
pub enum PageError {
    /// No session (or an ended one): to the sign-in page, and back to `next` after.
    SignedOut {
        next: String,
    },
    /// A state-changing request without the session's CSRF token.
    Forgery,
    /// Not there, or not the caller's to see (the two are not told apart).
    NotFound,
    /// A form that cannot be read.
    BadForm(String),
    Control(ControlError),
    /// A template failed: a bug, logged.
    Render(minijinja::Error),
}

impl From<ControlError> for PageError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotFound(_) => PageError::NotFound,
            other => PageError::Control(other),
        }
    }
}

impl From<minijinja::Error> for PageError {
    fn from(e: minijinja::Error) -> Self {
        PageError::Render(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, message, retry_after) = match self {
            PageError::SignedOut { next } => {
                return Redirect::to(&crate::session::sign_in_link(&next)).into_response();
            }
            PageError::Forgery => (
                StatusCode::FORBIDDEN,
                "This form was not sent by a console page of this session (CSRF check). Reload the page and try again."
                    .to_owned(),
                None,
            ),
            PageError::NotFound => {
                (StatusCode::NOT_FOUND, "There is no such page, or it is not yours.".to_owned(), None)
            }
            PageError::BadForm(why) => (StatusCode::BAD_REQUEST, format!("The form could not be read: {why}"), None),
            PageError::Render(e) => {
                tracing::error!(error = %e, "console template failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong. Try again.".to_owned(), None)
            }
            PageError::Control(e) => match e {
                ControlError::InvalidArgument { .. } => (StatusCode::BAD_REQUEST, e.to_string(), None),
                ControlError::Unauthenticated => (StatusCode::UNAUTHORIZED, e.to_string(), None),
                ControlError::PermissionDenied(m) => (StatusCode::FORBIDDEN, m, None),
                ControlError::NotFound(m) => (StatusCode::NOT_FOUND, m, None),
                ControlError::AlreadyExists(m) => (StatusCode::CONFLICT, m, None),
                ControlError::FailedPrecondition(m) => (StatusCode::CONFLICT, m, None),
                ControlError::Unimplemented(m) => (StatusCode::NOT_IMPLEMENTED, m, None),
                ControlError::ResourceExhausted { message, retry_after_secs } => {
                    (StatusCode::TOO_MANY_REQUESTS, message, Some(retry_after_secs))
                }
                ControlError::Unavailable { message, retry_after_secs } => {
                    (StatusCode::SERVICE_UNAVAILABLE, message, Some(retry_after_secs))
                }
                ControlError::Internal(m) => {
                    tracing::error!(error = %m, "console request failed");
                    (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong. Try again.".to_owned(), None)
                }
            },
        };
        let mut response = crate::render::html(status, crate::render::error_page(status, &message));
        if let Some(secs) = retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
            response.headers_mut().insert(header::RETRY_AFTER, secs);
        }
        response
    }
}
