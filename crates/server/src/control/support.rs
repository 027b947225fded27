//! `/v1/support/*`: tickets and reserved-deployment requests. The domain decides who
//! sees which ticket (the requester and admins).

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{Map, Value};
use tm_api::control::{
    enum_named, ConversationMessage, ReservedDeploymentRequest, ReservedDeploymentSubmitted, ReservedDeploymentsPage,
    Ticket, TicketReply, TicketStatus, TicketType, TicketsPage,
};
use tm_control::support::Ticket as TicketRecord;
use utoipa::ToSchema;

use super::error::CpError;
use super::extract::{Body, Params, SignedIn};
use super::query::{ForUser, Page};
use super::wire;
use super::ControlState;

const MAX_PAGE_SIZE: i64 = 100;

#[utoipa::path(get, path = "/v1/support/tickets", tag = "support",
    params(ForUser, Page, ("status" = Option<String>, Query)),
    responses((status = 200, body = TicketsPage)),
)]
pub async fn list(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<TicketsPage>, CpError> {
    let (page, size) = params.page(20, MAX_PAGE_SIZE)?;
    let (tickets, total) =
        state.control.support().list(&me, params.str("userId"), params.str("status"), page, size).await?;
    Ok(Json(TicketsPage { tickets: tickets.iter().map(ticket).collect(), page, size, total }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewTicket {
    #[serde(default)]
    subject: String,
    #[serde(default)]
    message: Value,
    user_id: Option<String>,
    #[serde(rename = "type")]
    ticket_type: Option<String>,
}

#[utoipa::path(post, path = "/v1/support/tickets", tag = "support",
    request_body = NewTicket,
    responses((status = 200, body = TicketReply)),
)]
pub async fn create(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Body(t): Body<NewTicket>,
) -> Result<Json<TicketReply>, CpError> {
    let message = message_text(&t.message)?;
    let created =
        state.control.support().open(&me, t.user_id.as_deref(), &t.subject, &message, t.ticket_type.as_deref()).await?;
    Ok(Json(TicketReply { ticket: ticket(&created) }))
}

#[utoipa::path(get, path = "/v1/support/tickets/{ticket_id}", tag = "support",
    params(("ticket_id" = String, Path)),
    responses((status = 200, body = TicketReply)),
)]
pub async fn get(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Path(id): Path<String>,
) -> Result<Json<TicketReply>, CpError> {
    Ok(Json(TicketReply { ticket: ticket(&state.control.support().get(&me, &id).await?) }))
}

#[derive(Deserialize, ToSchema)]
pub struct NewMessage {
    #[serde(default)]
    message: Value,
}

#[utoipa::path(post, path = "/v1/support/tickets/{ticket_id}/messages", tag = "support",
    params(("ticket_id" = String, Path)),
    request_body = NewMessage,
    responses((status = 200, body = TicketReply)),
)]
pub async fn add_message(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Path(id): Path<String>,
    Body(m): Body<NewMessage>,
) -> Result<Json<TicketReply>, CpError> {
    let content = message_text(&m.message)?;
    Ok(Json(TicketReply { ticket: ticket(&state.control.support().reply(&me, &id, &content).await?) }))
}

#[utoipa::path(delete, path = "/v1/support/tickets/{ticket_id}", tag = "support",
    params(("ticket_id" = String, Path)),
    responses((status = 200, body = TicketReply)),
)]
pub async fn close(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Path(id): Path<String>,
) -> Result<Json<TicketReply>, CpError> {
    Ok(Json(TicketReply { ticket: ticket(&state.control.support().close(&me, &id).await?) }))
}

#[utoipa::path(post, path = "/v1/support/reserved-deployments", tag = "support",
    request_body(content = Object, description = "The request's fields, kept as sent."),
    responses((status = 200, body = ReservedDeploymentSubmitted)),
)]
pub async fn submit_reserved_deployment(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Body(fields): Body<Map<String, Value>>,
) -> Result<Json<ReservedDeploymentSubmitted>, CpError> {
    let request_id = state.control.support().submit_reserved_deployment(&me, &fields).await?;
    Ok(Json(ReservedDeploymentSubmitted { request_id }))
}

/// `GET /v1/admin/support/reserved-deployments` (ours; the official clients have no list).
#[utoipa::path(get, path = "/v1/admin/support/reserved-deployments", tag = "admin",
    params(Page),
    responses((status = 200, body = ReservedDeploymentsPage)),
)]
pub async fn list_reserved_deployments(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<ReservedDeploymentsPage>, CpError> {
    let (page, size) = params.page(20, MAX_PAGE_SIZE)?;
    let (rows, total) = state.control.support().reserved_deployments(&me, page, size).await?;
    let requests = rows
        .into_iter()
        .map(|r| ReservedDeploymentRequest {
            request_id: r.id,
            user_id: r.user_id,
            details: r.details,
            created_at: r.created_at,
        })
        .collect();
    Ok(Json(ReservedDeploymentsPage { requests, page, size, total }))
}

/// A message is a string (ticket create) or a ConversationMessage `{"content": ...}`.
fn message_text(v: &Value) -> Result<String, CpError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Object(m) => match m.get("content") {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(CpError::invalid("message.content", "is required")),
        },
        Value::Null => Err(CpError::invalid("message", "is required")),
        _ => Err(CpError::invalid("message", "must be a string or an object with `content`")),
    }
}

fn ticket(t: &TicketRecord) -> Ticket {
    let conversations = t
        .messages
        .iter()
        .map(|m| ConversationMessage {
            user_id: m.author_id.clone(),
            user_name: m.author_name.clone(),
            user_role: wire::user_role(m.author_role),
            content: m.content.clone(),
            created_at: m.created_at,
        })
        .collect();
    Ticket {
        ticket_id: t.id.clone(),
        subject: t.subject.clone(),
        requester_user_id: t.user_id.clone(),
        status: enum_named(&t.status, TicketStatus::Unspecified),
        ticket_type: enum_named(&t.ticket_type, TicketType::Unspecified),
        conversations,
        created_at: t.created_at,
        updated_at: t.updated_at,
    }
}
