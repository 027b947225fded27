//! `/v1/observability/users/metrics` (the caller's request metrics over a window) and, per
//! deployment the caller owns, `…/deployments/{id}/metrics` and `…/logs`.

use axum::extract::{Path, State};
use axum::Json;
use tm_api::control::{LogLine, Logs, MetricPoint, MetricSeries, Metrics};
use tm_control::observability::{Series, Window};
use tm_money::UnixMs;

use super::error::CpError;
use super::extract::{Params, SignedIn};
use super::query::{ForUser, TimeRange};
use super::ControlState;
use crate::model_logs::{ModelLogs, Query};

#[utoipa::path(get, path = "/v1/observability/users/metrics", tag = "observability",
    params(ForUser, TimeRange, ("stepSeconds" = Option<i64>, Query, minimum = 1)),
    responses((status = 200, body = Metrics)),
)]
pub async fn user_metrics(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<Metrics>, CpError> {
    let series = state.control.observability().of_user(&me, params.str("userId"), window(&params)?).await?;
    Ok(Json(Metrics { metrics: metrics(&series) }))
}

#[utoipa::path(get, path = "/v1/observability/deployments/{deployment_id}/metrics", tag = "observability",
    params(("deployment_id" = String, Path), TimeRange, ("stepSeconds" = Option<i64>, Query, minimum = 1)),
    responses((status = 200, body = Metrics)),
)]
pub async fn deployment_metrics(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Path(id): Path<String>,
    params: Params,
) -> Result<Json<Metrics>, CpError> {
    let series = state.control.observability().of_deployment(&me, &id, window(&params)?).await?;
    Ok(Json(Metrics { metrics: metrics(&series) }))
}

/// The newest lines first unless `direction` is `LOG_DIRECTION_FORWARD`; `limit` 1-1000
/// (default 100).
#[utoipa::path(get, path = "/v1/observability/deployments/{deployment_id}/logs", tag = "observability",
    params(
        ("deployment_id" = String, Path),
        TimeRange,
        ("direction" = Option<String>, Query, description = "`FORWARD` or `BACKWARD` (newest first)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000),
    ),
    responses((status = 200, body = Logs)),
)]
pub async fn deployment_logs(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Path(id): Path<String>,
    params: Params,
) -> Result<Json<Logs>, CpError> {
    let d = state.control.deployments().get(&me, &id).await?;
    let newest_first = match params.str("direction").map(str::to_ascii_uppercase).as_deref() {
        None | Some("LOG_DIRECTION_UNSPECIFIED" | "LOG_DIRECTION_BACKWARD" | "BACKWARD" | "DESC") => true,
        Some("LOG_DIRECTION_FORWARD" | "FORWARD" | "ASC") => false,
        Some(other) => {
            return Err(CpError::invalid(
                "direction",
                format!("{other:?} is not LOG_DIRECTION_FORWARD or LOG_DIRECTION_BACKWARD"),
            ))
        }
    };
    let query = Query {
        model: &d.model_path,
        // Admins read every line of the model; its owner only those about their requests.
        user: (!me.role.is_admin()).then_some(d.user_id.as_str()),
        from: params.time("startTime")?,
        to: params.time("endTime")?,
        limit: params.int("limit", 100, 1, 1000)? as usize,
        newest_first,
    };
    let logs = ModelLogs::global()
        .query(query)
        .iter()
        .map(|e| LogLine { timestamp: UnixMs(e.at), message: e.message.clone() })
        .collect();
    Ok(Json(Logs { logs }))
}

fn window(params: &Params) -> Result<Window, CpError> {
    Ok(Window {
        start_ms: params.time("startTime")?,
        end_ms: params.time("endTime")?,
        step_seconds: params
            .str("stepSeconds")
            .map(|_| params.int("stepSeconds", 0, 1, 10 * 365 * 86_400))
            .transpose()?,
    })
}

fn metrics(series: &[Series]) -> Vec<MetricSeries> {
    series
        .iter()
        .map(|s| MetricSeries {
            name: s.name.to_owned(),
            data: s.points.iter().map(|&(t, value)| MetricPoint { timestamp: UnixMs(t), value }).collect(),
        })
        .collect()
}
