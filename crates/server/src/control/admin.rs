//! `/v1/admin/*` user management; every handler checks the role in the domain.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tm_control::Role;

use super::error::CpError;
use super::extract::{Body, Params, SignedIn};
use super::{wire, ControlState};

const MAX_PAGE_SIZE: i64 = 500;

pub async fn list_users(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<Value>, CpError> {
    let (page, size) = params.page(50, MAX_PAGE_SIZE)?;
    let (users, total) = state.control.list_users(&me, page, size).await?;
    let users: Vec<Value> = users.iter().map(wire::user).collect();
    Ok(Json(json!({"users": users, "page": page, "size": size, "total": total.to_string()})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeRole {
    target_user_id: String,
    target_user_role: String,
}

pub async fn change_role(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Body(c): Body<ChangeRole>,
) -> Result<Json<Value>, CpError> {
    let role = Role::parse(&c.target_user_role).ok_or_else(|| {
        CpError::invalid("targetUserRole", "must be USER_ROLE_USER, USER_ROLE_ADMIN or USER_ROLE_SUPER_ADMIN")
    })?;
    let user = state.control.change_role(&me, &c.target_user_id, role).await?;
    Ok(Json(json!({"user": wire::user(&user)})))
}
