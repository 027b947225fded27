//! `/v1/admin/*` user management; every handler checks the role in the domain.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use tm_api::control::{UserReply, UsersPage};
use tm_control::Role;
use utoipa::ToSchema;

use super::error::CpError;
use super::extract::{Body, Params, SignedIn};
use super::query::Page;
use super::{wire, ControlState};

const MAX_PAGE_SIZE: i64 = 500;

#[utoipa::path(get, path = "/v1/admin/users", tag = "admin",
    params(Page),
    responses((status = 200, body = UsersPage)),
)]
pub async fn list_users(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<UsersPage>, CpError> {
    let (page, size) = params.page(50, MAX_PAGE_SIZE)?;
    let (users, total) = state.control.accounts().page(&me, page, size).await?;
    Ok(Json(UsersPage { users: users.iter().map(wire::user).collect(), page, size, total }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeRole {
    target_user_id: String,
    target_user_role: String,
}

#[utoipa::path(post, path = "/v1/admin/users/change_role", tag = "admin",
    request_body = ChangeRole,
    responses((status = 200, body = UserReply)),
)]
pub async fn change_role(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Body(c): Body<ChangeRole>,
) -> Result<Json<UserReply>, CpError> {
    let role = Role::parse(&c.target_user_role).ok_or_else(|| {
        CpError::invalid("targetUserRole", "must be USER_ROLE_USER, USER_ROLE_ADMIN or USER_ROLE_SUPER_ADMIN")
    })?;
    let user = state.control.accounts().change_role(&me, &c.target_user_id, role).await?;
    Ok(Json(UserReply { user: wire::user(&user) }))
}
