//! Users, their API keys, and the `/auth/cli/*` sign-in bodies.

use serde::{Deserialize, Serialize};
use tm_money::UnixMs;
use utoipa::ToSchema;

use crate::control::{int64, rfc3339, rfc3339_opt};

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub user_email: String,
    pub first_name: String,
    pub last_name: String,
    pub display_name: String,
    pub company: String,
    pub user_role: UserRole,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub tos_accepted_at: Option<UnixMs>,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: UnixMs,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: UnixMs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum UserRole {
    #[serde(rename = "USER_ROLE_UNSPECIFIED")]
    Unspecified,
    #[serde(rename = "USER_ROLE_USER")]
    User,
    #[serde(rename = "USER_ROLE_ADMIN")]
    Admin,
    #[serde(rename = "USER_ROLE_SUPER_ADMIN")]
    SuperAdmin,
}

/// An API key. `id` is its public id, except in the create response, the only place the
/// whole key is ever shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: UnixMs,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<UnixMs>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub deleted_at: Option<UnixMs>,
}

/// `{"user": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserReply {
    pub user: User,
}

/// `GET /v1/admin/users`: a page of users; `total` is an int64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsersPage {
    pub users: Vec<User>,
    pub page: i64,
    pub size: i64,
    #[serde(with = "int64")]
    #[schema(value_type = String, format = Int64)]
    pub total: i64,
}

/// `{"apiKeys": […]}`, the list present even when empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeys {
    pub api_keys: Vec<ApiKey>,
}

/// `{"apiKey": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyReply {
    pub api_key: ApiKey,
}

/// `POST /auth/cli/start` (snake case, like every `/auth/cli/*` body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CliLoginStarted {
    /// Where the person signs in and approves.
    pub auth_url: String,
    /// What the CLI polls `/auth/cli/exchange` with.
    pub cli_code: String,
    /// Seconds between polls.
    pub interval: u64,
    pub expires_in: u64,
    /// What the person checks on the sign-in page (RFC 8628's name). `auth_url` carries it
    /// too, so that a CLI that prints only the URL (the official one) shows it as well.
    pub user_code: String,
}

/// `POST /auth/cli/exchange` while the person has not answered (HTTP 202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CliLoginPending {
    /// `authorization_pending`.
    pub status: String,
}

/// The tokens of a granted sign-in or a refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CliTokens {
    pub access_token: String,
    pub refresh_token: String,
    /// `Bearer`.
    pub token_type: String,
    pub expires_in: i64,
}

/// What a `/auth/cli/*` route answers with a 4xx: the OAuth-style error for what the
/// sign-in itself refuses, the Control Plane's [`RpcStatus`] for the rest (a body that is
/// not JSON, too many attempts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum CliLoginError {
    OAuth(OAuthError),
    Status(crate::control::RpcStatus),
}

/// An OAuth-style error of the `/auth/cli/*` routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OAuthError {
    pub error: String,
    pub error_description: String,
}
