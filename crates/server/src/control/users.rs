//! `/auth/profile` and `/v1/users/*`: the caller's own account and API keys. A `userId`
//! naming someone else is for admins only ([`tm_control::Principal::scope`]).

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use tm_api::control::{ApiKeyReply, ApiKeys, Empty, UserReply};
use tm_store::users::ProfileUpdate;
use utoipa::ToSchema;

use super::error::CpError;
use super::extract::{Body, Params, SignedIn};
use super::query::{ForUser, IncludeDeleted};
use super::{wire, ControlState};

#[utoipa::path(get, path = "/auth/profile", tag = "users",
    responses((status = 200, body = UserReply)),
)]
pub async fn profile(State(state): State<ControlState>, SignedIn(me): SignedIn) -> Result<Json<UserReply>, CpError> {
    let user = state.control.accounts().get(&me.user_id).await?;
    Ok(Json(UserReply { user: wire::user(&user) }))
}

#[utoipa::path(post, path = "/v1/users/accept-tos", tag = "users",
    params(ForUser),
    responses((status = 200, body = UserReply)),
)]
pub async fn accept_tos(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<UserReply>, CpError> {
    let user = state.control.accounts().accept_tos(&me, params.str("userId")).await?;
    Ok(Json(UserReply { user: wire::user(&user) }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Update {
    first_name: Option<String>,
    last_name: Option<String>,
    display_name: Option<String>,
    company: Option<String>,
}

#[utoipa::path(put, path = "/v1/users/{user_id}", tag = "users",
    params(("user_id" = String, Path)),
    request_body = Update,
    responses((status = 200, body = Empty)),
)]
pub async fn update(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Path(user_id): Path<String>,
    Body(u): Body<Update>,
) -> Result<Json<Empty>, CpError> {
    let update = ProfileUpdate {
        first_name: u.first_name,
        last_name: u.last_name,
        display_name: u.display_name,
        company: u.company,
    };
    state.control.accounts().update_profile(&me, &user_id, update).await?;
    Ok(Json(Empty::default()))
}

#[utoipa::path(get, path = "/v1/users/api-keys", tag = "users",
    params(ForUser, IncludeDeleted),
    responses((status = 200, body = ApiKeys)),
)]
pub async fn list_keys(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<ApiKeys>, CpError> {
    let keys = state.control.keys().list(&me, params.str("userId"), params.bool("includeDeleted")?).await?;
    Ok(Json(ApiKeys { api_keys: keys.iter().map(|k| wire::api_key(k, &k.public_id)).collect() }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewKey {
    user_id: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    expires_at: Option<String>,
}

#[utoipa::path(post, path = "/v1/users/api-keys", tag = "users",
    request_body = NewKey,
    responses(
        (status = 200, description = "The only answer that shows the whole key, as `apiKey.id`.", body = ApiKeyReply),
    ),
)]
pub async fn create_key(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Body(k): Body<NewKey>,
) -> Result<Json<ApiKeyReply>, CpError> {
    let expires_at = k.expires_at.as_deref().map(|t| wire::parse_timestamp("expiresAt", t)).transpose()?;
    let created = state.control.keys().create(&me, k.user_id.as_deref(), k.name, k.scopes, expires_at).await?;
    // The only time the whole key is shown.
    Ok(Json(ApiKeyReply { api_key: wire::api_key(&created.key, &created.token) }))
}

#[utoipa::path(delete, path = "/v1/users/api-keys", tag = "users",
    params(ForUser, ("apiKey" = String, Query, description = "The key's public id.")),
    responses((status = 200, body = Empty)),
)]
pub async fn delete_key(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<Empty>, CpError> {
    let key = params.str("apiKey").ok_or_else(|| CpError::invalid("apiKey", "is required"))?;
    state.control.keys().delete(&me, params.str("userId"), key).await?;
    Ok(Json(Empty::default()))
}
