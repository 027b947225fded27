//! The audit trail.

use serde::{Deserialize, Serialize};
use tm_money::UnixMs;
use utoipa::ToSchema;

use crate::control::{int64, rfc3339};

/// An entry of the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    pub activity_id: String,
    pub actor_type: ActorType,
    pub actor_id: String,
    pub actor_display: String,
    /// Whose data the action touched.
    pub user_id: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    pub description: String,
    /// A JSON object, as the action recorded it.
    pub metadata: serde_json::Value,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: UnixMs,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub recorded_at: UnixMs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum ActorType {
    #[serde(rename = "ACTOR_TYPE_UNSPECIFIED")]
    Unspecified,
    /// A signed-in user or admin, through the API.
    #[serde(rename = "ACTOR_TYPE_USER")]
    User,
    /// An operator at the server's command line.
    #[serde(rename = "ACTOR_TYPE_SYSTEM")]
    System,
}

/// `GET /v1/activities`: a page of the trail; `total` is an int64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ActivitiesPage {
    pub activities: Vec<Activity>,
    #[serde(with = "int64")]
    #[schema(value_type = String, format = Int64)]
    pub total: i64,
    pub page: i64,
    pub size: i64,
}

/// `{"activity": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ActivityReply {
    pub activity: Activity,
}
