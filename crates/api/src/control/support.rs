//! Support tickets.

use serde::{Deserialize, Serialize};
use tm_money::UnixMs;
use utoipa::ToSchema;

use crate::control::{int64, rfc3339, UserRole};

/// A support ticket and its conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    pub ticket_id: String,
    pub subject: String,
    pub requester_user_id: String,
    pub status: TicketStatus,
    #[serde(rename = "type")]
    pub ticket_type: TicketType,
    pub conversations: Vec<ConversationMessage>,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: UnixMs,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: UnixMs,
}

/// One message of a ticket, with its author as they were when they wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationMessage {
    pub user_id: String,
    pub user_name: String,
    pub user_role: UserRole,
    pub content: String,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: UnixMs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum TicketStatus {
    #[serde(rename = "TICKET_STATUS_UNSPECIFIED")]
    Unspecified,
    #[serde(rename = "TICKET_STATUS_OPEN")]
    Open,
    #[serde(rename = "TICKET_STATUS_CLOSED")]
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum TicketType {
    #[serde(rename = "TICKET_TYPE_UNSPECIFIED")]
    Unspecified,
    #[serde(rename = "TICKET_TYPE_GENERAL")]
    General,
    #[serde(rename = "TICKET_TYPE_TECHNICAL")]
    Technical,
    #[serde(rename = "TICKET_TYPE_BILLING")]
    Billing,
    #[serde(rename = "TICKET_TYPE_ACCOUNT")]
    Account,
    #[serde(rename = "TICKET_TYPE_FEATURE_REQUEST")]
    FeatureRequest,
    #[serde(rename = "TICKET_TYPE_RESERVED_DEPLOYMENT")]
    ReservedDeployment,
}

/// `POST /v1/support/reserved-deployments`: the new request's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservedDeploymentSubmitted {
    pub request_id: String,
}

/// A reserved-deployment request as an admin lists it: the fields the user sent, between
/// its id and owner and its time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservedDeploymentRequest {
    pub request_id: String,
    pub user_id: String,
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: UnixMs,
}

/// `GET /v1/admin/support/reserved-deployments`; `total` is an int64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReservedDeploymentsPage {
    pub requests: Vec<ReservedDeploymentRequest>,
    pub page: i64,
    pub size: i64,
    #[serde(with = "int64")]
    #[schema(value_type = String, format = Int64)]
    pub total: i64,
}

/// `GET /v1/support/tickets`: a page of tickets; `total` is an int64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TicketsPage {
    pub tickets: Vec<Ticket>,
    pub page: i64,
    pub size: i64,
    #[serde(with = "int64")]
    #[schema(value_type = String, format = Int64)]
    pub total: i64,
}

/// `{"ticket": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TicketReply {
    pub ticket: Ticket,
}
