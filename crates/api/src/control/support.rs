//! Support tickets.

use serde::{Deserialize, Serialize};
use tm_money::UnixMs;

use crate::control::{int64, rfc3339, UserRole};

/// A support ticket and its conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    pub created_at: UnixMs,
    #[serde(with = "rfc3339")]
    pub updated_at: UnixMs,
}

/// One message of a ticket, with its author as they were when they wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationMessage {
    pub user_id: String,
    pub user_name: String,
    pub user_role: UserRole,
    pub content: String,
    #[serde(with = "rfc3339")]
    pub created_at: UnixMs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TicketStatus {
    #[serde(rename = "TICKET_STATUS_UNSPECIFIED")]
    Unspecified,
    #[serde(rename = "TICKET_STATUS_OPEN")]
    Open,
    #[serde(rename = "TICKET_STATUS_CLOSED")]
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// `GET /v1/support/tickets`: a page of tickets; `total` is an int64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketsPage {
    pub tickets: Vec<Ticket>,
    pub page: i64,
    pub size: i64,
    #[serde(with = "int64")]
    pub total: i64,
}

/// `{"ticket": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketReply {
    pub ticket: Ticket,
}
