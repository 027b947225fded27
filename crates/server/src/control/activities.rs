//! `/v1/activities`: the audit trail (users read their own, admins everyone's).

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};
use tm_control::activity::Query;
use tm_store::activities::ActivityRow;

use super::error::CpError;
use super::extract::{Params, SignedIn};
use super::wire::timestamp;
use super::ControlState;

const MAX_PAGE_SIZE: i64 = 500;

pub async fn list(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<Value>, CpError> {
    let (page, size) = params.page(50, MAX_PAGE_SIZE)?;
    let q = Query {
        action: params.str("action"),
        resource_type: params.str("resourceType"),
        resource_id: params.str("resourceId"),
        from: params.time("startTime")?,
        to: params.time("endTime")?,
    };
    let (rows, total) = state.control.list_activities(&me, params.str("userId"), q, page, size).await?;
    let activities: Vec<Value> = rows.iter().map(activity).collect();
    Ok(Json(json!({"activities": activities, "total": total.to_string(), "page": page, "size": size})))
}

pub async fn get(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Path(id): Path<String>,
) -> Result<Json<Value>, CpError> {
    Ok(Json(json!({"activity": activity(&state.control.activity(&me, &id).await?)})))
}

fn activity(a: &ActivityRow) -> Value {
    let metadata: Value = serde_json::from_str(&a.metadata).unwrap_or_else(|_| json!({}));
    json!({
        "activityId": a.id,
        "actorType": a.actor_type,
        "actorId": a.actor_id,
        "actorDisplay": a.actor_display,
        "userId": a.user_id,
        "action": a.action,
        "resourceType": a.resource_type,
        "resourceId": a.resource_id,
        "description": a.description,
        "metadata": metadata,
        "occurredAt": timestamp(a.occurred_at),
        "recordedAt": timestamp(a.recorded_at),
    })
}
