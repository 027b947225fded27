//! Deployments (what the Control Plane calls models) and products.

use serde::{Deserialize, Serialize};
use tm_money::UnixMs;
use utoipa::ToSchema;

use crate::control::{int64, rfc3339};

/// A deployment: a user's named handle on a model this installation serves (what the
/// Control Plane calls a "model").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub model_id: String,
    pub deployment_id: String,
    pub user_id: String,
    pub description: String,
    pub model_path: String,
    pub model_name: String,
    pub status: ModelStatus,
    pub events: Vec<serde_json::Value>,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: UnixMs,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: UnixMs,
    /// JSON objects, as the owner gave them.
    pub model_spec: serde_json::Value,
    pub infra: serde_json::Value,
    pub gpu_count: i64,
    pub gpu_type: String,
    pub replicas: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum ModelStatus {
    /// Served and healthy.
    #[serde(rename = "MODEL_STATUS_UP")]
    Up,
    #[serde(rename = "MODEL_STATUS_DOWN")]
    Down,
    #[serde(rename = "MODEL_STATUS_DELETED")]
    Deleted,
}

/// `{"models": […]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Deployments {
    pub models: Vec<Deployment>,
}

/// `GET /v1/admin/models`: a page; `total` is an int64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeploymentsPage {
    pub models: Vec<Deployment>,
    pub page: i64,
    pub size: i64,
    #[serde(with = "int64")]
    #[schema(value_type = String, format = Int64)]
    pub total: i64,
}

/// `{"model": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeploymentReply {
    pub model: Deployment,
}

/// `POST /v1/models:validate`: whether the name is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Validity {
    pub is_valid: bool,
}

/// `POST /v1/models/check`: memory the deployment's model needs, in GiB.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryCheck {
    pub required_gpu_memory_gib: f64,
    pub required_lm_cache_memory_gib: f64,
}

/// `POST /v1/models/{id}:chat`: the answer's text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChatReply {
    pub response: String,
}

/// A product (a GPU offering).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub id: String,
    pub name: String,
    /// A plain number on the wire, as the official clients send and read it.
    pub required_gpu_num: i64,
    pub family: String,
    pub is_active: bool,
    /// A JSON object.
    pub spec: serde_json::Value,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: UnixMs,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: UnixMs,
}

/// `{"products": […]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Products {
    pub products: Vec<Product>,
}

/// `{"product": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProductReply {
    pub product: Product,
}

/// `{"deleted": true}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    pub deleted: bool,
}
