//! Metrics and deployment logs.

use serde::{Deserialize, Serialize};
use tm_money::UnixMs;
use utoipa::ToSchema;

use crate::control::rfc3339;

/// `{"metrics": […]}`: time series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Metrics {
    pub metrics: Vec<MetricSeries>,
}

/// One named series, a point per step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricSeries {
    pub name: String,
    pub data: Vec<MetricPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricPoint {
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: UnixMs,
    pub value: f64,
}

/// `{"logs": […]}`: a deployment's log lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Logs {
    pub logs: Vec<LogLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: UnixMs,
    pub message: String,
}
