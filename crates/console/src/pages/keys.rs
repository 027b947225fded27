//! API keys: the list (with when each was last used), creating one (its secret shown once),
//! revoking one.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::{Deserialize, Serialize};
use tm_control::ControlError;

use super::given;
use crate::error::PageError;
use crate::form::{Nothing, Posted};
use crate::render::page;
use crate::session::Session;
use crate::Console;

/// The longest expiry the form offers, in days.
const MAX_EXPIRY_DAYS: i64 = 3650;

#[derive(Serialize)]
struct KeyView {
    name: String,
    public_id: String,
    created_at: i64,
    last_used: Option<i64>,
    scopes: Vec<String>,
    expires_at: Option<i64>,
}

pub async fn show(State(console): State<Console>, session: Session) -> Result<Response, PageError> {
    render(&console, &session, None).await
}

#[derive(Deserialize)]
pub struct NewKey {
    #[serde(default)]
    name: String,
    /// Comma- or space-separated.
    #[serde(default)]
    scopes: String,
    /// Days from now; empty: never.
    #[serde(default)]
    expires_in_days: String,
}

pub async fn create(State(console): State<Console>, posted: Posted<NewKey>) -> Result<Response, PageError> {
    let Posted { session, form } = posted;
    let scopes: Vec<String> =
        form.scopes.split([',', ' ']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
    let expires_at = match given(&form.expires_in_days) {
        None => None,
        Some(d) => {
            let days: i64 = d.parse().ok().filter(|d| (1..=MAX_EXPIRY_DAYS).contains(d)).ok_or_else(|| {
                ControlError::invalid("expires_in_days", format!("must be 1 to {MAX_EXPIRY_DAYS} days"))
            })?;
            Some(console.control.now_ms() + days * tm_store::usage::DAY_MS)
        }
    };
    let name = form.name.trim().to_owned();
    let created = console.control.keys().create(&session.principal, None, name, scopes, expires_at).await?;
    render(&console, &session, Some((created.key.name, created.token))).await
}

pub async fn revoke(
    State(console): State<Console>,
    Path(id): Path<String>,
    posted: Posted<Nothing>,
) -> Result<Response, PageError> {
    console.control.keys().delete(&posted.session.principal, None, &id).await?;
    Ok(Redirect::to("/console/keys").into_response())
}

/// The page; `created`: a key just made (name, secret), shown once.
async fn render(
    console: &Console,
    session: &Session,
    created: Option<(String, String)>,
) -> Result<Response, PageError> {
    let me = &session.principal;
    let last_used = console.control.billing().keys_last_used(me).await?;
    let keys: Vec<KeyView> = console
        .control
        .keys()
        .list(me, None, false)
        .await?
        .into_iter()
        .map(|k| KeyView {
            last_used: last_used.get(&k.public_id).copied(),
            name: k.name,
            public_id: k.public_id,
            created_at: k.created_at.0,
            scopes: k.scopes,
            expires_at: k.expires_at.map(|e| e.0),
        })
        .collect();
    let created = created.map(|(name, token)| context! { name, token });
    page(console, session, "keys.html", "keys", "API keys", context! { keys, created })
}
