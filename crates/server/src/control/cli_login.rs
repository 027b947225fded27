//! `/auth/cli/*`: the endpoints `tm auth login` and `tm auth refresh` call (no
//! Authorization header; snake_case bodies; OAuth-style error codes).

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use tm_api::control::{CliLoginError, CliLoginPending, CliLoginStarted, CliTokens, Empty, OAuthError};
use tm_control::login::{Exchange, Tokens};
use tm_control::ControlError;
use utoipa::ToSchema;

use super::error::CpError;
use super::extract::{Body, Client};
use super::ControlState;

/// Seconds between the CLI's polls.
const POLL_INTERVAL_SECS: u64 = 2;

#[utoipa::path(post, path = "/auth/cli/start", tag = "auth", security(()),
    responses((status = 200, body = CliLoginStarted)),
)]
pub async fn start(
    State(state): State<ControlState>,
    Client(address): Client,
    headers: HeaderMap,
) -> Result<Response, CpError> {
    let started = state.control.logins().start(address).await?;
    let base = match &state.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or(&state.listen_host);
            format!("http://{host}")
        }
    };
    // Both parts are URL-safe as issued (base62 with underscores; consonants and a hyphen).
    let auth_url = format!("{base}/auth/cli/login?request={}&code={}", started.request_id, started.user_code);
    let body = CliLoginStarted {
        auth_url,
        cli_code: started.cli_code,
        interval: POLL_INTERVAL_SECS,
        expires_in: state.control.settings().login_ttl.as_secs(),
        user_code: started.user_code,
    };
    Ok(Json(body).into_response())
}

#[derive(Deserialize, ToSchema)]
pub struct ExchangeBody {
    #[serde(default)]
    cli_code: String,
}

#[utoipa::path(post, path = "/auth/cli/exchange", tag = "auth", security(()),
    request_body = ExchangeBody,
    responses(
        (status = 200, description = "Approved: the tokens.", body = CliTokens),
        (status = 202, description = "Not answered yet: poll again after `interval`.", body = CliLoginPending),
        (status = 400, body = CliLoginError),
        (status = 401, body = CliLoginError),
    ),
)]
pub async fn exchange(
    State(state): State<ControlState>,
    Client(address): Client,
    Body(body): Body<ExchangeBody>,
) -> Result<Response, CpError> {
    if body.cli_code.trim().is_empty() {
        return Ok(oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "cli_code is required"));
    }
    Ok(match state.control.logins().exchange(&body.cli_code, address).await? {
        Exchange::Pending => {
            (StatusCode::ACCEPTED, Json(CliLoginPending { status: "authorization_pending".into() })).into_response()
        }
        Exchange::Granted(tokens) => token_response(tokens),
        Exchange::Denied => oauth_error(StatusCode::BAD_REQUEST, "access_denied", "the sign-in request was denied"),
        Exchange::Expired => oauth_error(StatusCode::BAD_REQUEST, "expired_token", "the sign-in request expired"),
        Exchange::Invalid => oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown or already used cli_code"),
    })
}

#[derive(Deserialize, ToSchema)]
pub struct RefreshBody {
    #[serde(default)]
    refresh_token: String,
}

#[utoipa::path(post, path = "/auth/cli/refresh", tag = "auth", security(()),
    request_body = RefreshBody,
    responses(
        (status = 200, body = CliTokens),
        (status = 400, body = CliLoginError),
        (status = 401, body = CliLoginError),
    ),
)]
pub async fn refresh(State(state): State<ControlState>, Body(body): Body<RefreshBody>) -> Result<Response, CpError> {
    if body.refresh_token.trim().is_empty() {
        return Ok(oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "refresh_token is required"));
    }
    match state.control.logins().refresh(&body.refresh_token).await {
        Ok(tokens) => Ok(token_response(tokens)),
        Err(ControlError::Unauthenticated) => {
            Ok(oauth_error(StatusCode::UNAUTHORIZED, "invalid_grant", "invalid, expired or already used refresh_token"))
        }
        Err(other) => Err(other.into()),
    }
}

/// `POST /auth/cli/logout` (ours; `tm auth logout` calls it): ends the refresh token's
/// session. Always `{"empty": {}}`: a token that is unknown or spent has nothing left to end.
#[utoipa::path(post, path = "/auth/cli/logout", tag = "auth", security(()),
    request_body = RefreshBody,
    responses((status = 200, body = Empty)),
)]
pub async fn logout(State(state): State<ControlState>, Body(body): Body<RefreshBody>) -> Result<Response, CpError> {
    state.control.logins().logout(&body.refresh_token).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(Empty::default())).into_response())
}

fn token_response(t: Tokens) -> Response {
    let body = CliTokens {
        access_token: t.access_token,
        refresh_token: t.refresh_token,
        token_type: "Bearer".into(),
        expires_in: t.expires_in_secs,
    };
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, Json(OAuthError { error: error.into(), error_description: description.into() })).into_response()
}
