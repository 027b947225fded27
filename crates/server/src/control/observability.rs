//! `/v1/observability/users/metrics`: the caller's request metrics over a window.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use tm_control::observability::Window;

use super::error::CpError;
use super::extract::{Caller, Params};
use super::wire::timestamp;
use super::ControlState;

pub async fn user_metrics(
    State(state): State<ControlState>,
    Caller(me): Caller,
    params: Params,
) -> Result<Json<Value>, CpError> {
    let window = Window {
        start_ms: params.time("startTime")?,
        end_ms: params.time("endTime")?,
        step_seconds: params
            .str("stepSeconds")
            .map(|_| params.int("stepSeconds", 0, 1, 10 * 365 * 86_400))
            .transpose()?,
    };
    let series = state.control.user_metrics(&me, params.str("userId"), window).await?;
    let metrics: Vec<Value> = series
        .iter()
        .map(|s| {
            let data: Vec<Value> =
                s.points.iter().map(|(t, v)| json!({"timestamp": timestamp(*t), "value": v})).collect();
            json!({"name": s.name, "data": data})
        })
        .collect();
    Ok(Json(json!({"metrics": metrics})))
}
