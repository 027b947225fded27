//! `/v1/activities`: the audit trail (users read their own, admins everyone's).

use axum::extract::{Path, State};
use axum::Json;
use tm_api::control::{ActivitiesPage, Activity, ActivityReply, ActorType};
use tm_control::activity::{ActorKind, Query};

use super::error::CpError;
use super::extract::{Params, SignedIn};
use super::query::{ForUser, Page, TimeRange};
use super::ControlState;

const MAX_PAGE_SIZE: i64 = 500;

#[utoipa::path(get, path = "/v1/activities", tag = "activities",
    params(
        ForUser,
        Page,
        TimeRange,
        ("action" = Option<String>, Query),
        ("resourceType" = Option<String>, Query),
        ("resourceId" = Option<String>, Query),
    ),
    responses((status = 200, body = ActivitiesPage)),
)]
pub async fn list(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<ActivitiesPage>, CpError> {
    let (page, size) = params.page(50, MAX_PAGE_SIZE)?;
    let q = Query {
        action: params.str("action"),
        resource_type: params.str("resourceType"),
        resource_id: params.str("resourceId"),
        from: params.time("startTime")?,
        to: params.time("endTime")?,
    };
    let (rows, total) = state.control.activities().list(&me, params.str("userId"), q, page, size).await?;
    Ok(Json(ActivitiesPage { activities: rows.iter().map(activity).collect(), total, page, size }))
}

#[utoipa::path(get, path = "/v1/activities/{activity_id}", tag = "activities",
    params(("activity_id" = String, Path)),
    responses((status = 200, body = ActivityReply)),
)]
pub async fn get(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Path(id): Path<String>,
) -> Result<Json<ActivityReply>, CpError> {
    Ok(Json(ActivityReply { activity: activity(&state.control.activities().get(&me, &id).await?) }))
}

fn activity(a: &tm_control::activity::Activity) -> Activity {
    Activity {
        activity_id: a.id.clone(),
        actor_type: match a.actor {
            ActorKind::User => ActorType::User,
            ActorKind::Operator => ActorType::System,
            ActorKind::Unknown => ActorType::Unspecified,
        },
        actor_id: a.actor_id.clone(),
        actor_display: a.actor_display.clone(),
        user_id: a.user_id.clone(),
        action: a.action.clone(),
        resource_type: a.resource_type.clone(),
        resource_id: a.resource_id.clone(),
        description: a.description.clone(),
        metadata: a.metadata.clone(),
        occurred_at: a.occurred_at,
        recorded_at: a.recorded_at,
    }
}
