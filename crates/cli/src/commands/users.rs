//! `tm users …`: profile updates, terms of service, API keys.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::auth::confirm;
use super::input::{optional_object, Input};
use super::{cp_call, path_segment, query};
use crate::error::{CliError, Result};
use crate::Ctx;

#[derive(Args, Debug, Clone)]
pub struct Timeout {
    /// HTTP timeout for this call.
    #[arg(long, value_name = "FLOAT", display_order = 900)]
    pub timeout: Option<f64>,
}

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Update a user's profile (PUT /v1/users/{USER_ID}).
    Update {
        user_id: String,
        #[arg(long)]
        first_name: Option<String>,
        #[arg(long)]
        last_name: Option<String>,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        company: Option<String>,
        #[command(flatten)]
        input: Input,
        #[command(flatten)]
        t: Timeout,
    },
    /// Accept the terms of service (POST /v1/users/accept-tos).
    AcceptTos(Timeout),
    /// User API keys.
    #[command(subcommand)]
    ApiKeys(ApiKeys),
}

#[derive(Subcommand, Debug)]
pub enum ApiKeys {
    /// List API keys (GET /v1/users/api-keys).
    List {
        #[arg(long)]
        user_id: Option<String>,
        #[arg(long)]
        include_deleted: bool,
        #[command(flatten)]
        t: Timeout,
    },
    /// Create an API key (POST /v1/users/api-keys).
    Create {
        #[arg(long)]
        user_id: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// Repeatable.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        #[arg(long)]
        expires_at: Option<String>,
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        input: Input,
        #[command(flatten)]
        t: Timeout,
    },
    /// Delete an API key (DELETE /v1/users/api-keys).
    Delete {
        #[arg(long)]
        api_key: Option<String>,
        #[arg(long)]
        user_id: Option<String>,
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        input: Input,
        #[command(flatten)]
        t: Timeout,
    },
}

/// The body from flags (unset ones left out), unless JSON input replaces it.
pub fn body_from(input: &Input, fields: &[(&str, Option<Value>)]) -> Result<Map<String, Value>> {
    if let Some(body) = optional_object(input)? {
        return Ok(body);
    }
    Ok(fields.iter().filter_map(|(k, v)| v.clone().map(|v| ((*k).to_owned(), v))).collect())
}

/// A non-blank string field of the body, or the usage error `message`.
pub fn required(body: &Map<String, Value>, field: &str, message: &str) -> Result<String> {
    body.get(field)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| CliError::usage(message))
}

fn text(v: Option<String>) -> Option<Value> {
    v.map(Value::String)
}

pub async fn run(ctx: &Ctx, command: UsersCommand) -> Result<()> {
    match command {
        UsersCommand::Update { user_id, first_name, last_name, display_name, company, input, t } => {
            let body = body_from(
                &input,
                &[
                    ("firstName", text(first_name)),
                    ("lastName", text(last_name)),
                    ("displayName", text(display_name)),
                    ("company", text(company)),
                ],
            )?;
            if body.is_empty() {
                return Err(CliError::usage("No updates provided. Use flags or pass JSON via --json/--file/stdin."));
            }
            let path = format!("/v1/users/{}", path_segment(&user_id));
            cp_call(ctx, Method::PUT, &path, Vec::new(), Some(&Value::Object(body)), t.timeout).await
        }
        UsersCommand::AcceptTos(t) => {
            cp_call(ctx, Method::POST, "/v1/users/accept-tos", Vec::new(), Some(&json!({})), t.timeout).await
        }
        UsersCommand::ApiKeys(ApiKeys::List { user_id, include_deleted, t }) => {
            let q = query(&[("userId", user_id), ("includeDeleted", include_deleted.then(|| "true".to_owned()))]);
            cp_call(ctx, Method::GET, "/v1/users/api-keys", q, None, t.timeout).await
        }
        UsersCommand::ApiKeys(ApiKeys::Create { user_id, name, scopes, expires_at, yes, input, t }) => {
            let scopes = (!scopes.is_empty()).then(|| json!(scopes));
            let body = body_from(
                &input,
                &[
                    ("userId", text(user_id.map(|u| u.trim().to_owned()))),
                    ("name", text(name)),
                    ("scopes", scopes),
                    ("expiresAt", text(expires_at)),
                ],
            )?;
            required(&body, "userId", "Missing user id. Provide --user-id or pass JSON via --json/--file/stdin.")?;
            if !yes {
                confirm("Create a user API key?")?;
            }
            cp_call(ctx, Method::POST, "/v1/users/api-keys", Vec::new(), Some(&Value::Object(body)), t.timeout).await
        }
        UsersCommand::ApiKeys(ApiKeys::Delete { api_key, user_id, yes, input, t }) => {
            let body = body_from(&input, &[("apiKey", text(api_key)), ("userId", text(user_id))])?;
            let key =
                required(&body, "apiKey", "Missing API key. Provide --api-key or pass JSON via --json/--file/stdin.")?;
            if !yes {
                confirm(&format!("Delete user API key '{key}'?"))?;
            }
            let user =
                body.get("userId").and_then(Value::as_str).map(|u| u.trim().to_owned()).filter(|u| !u.is_empty());
            let q = query(&[("apiKey", Some(key)), ("userId", user)]);
            cp_call(ctx, Method::DELETE, "/v1/users/api-keys", q, None, t.timeout).await
        }
    }
}
