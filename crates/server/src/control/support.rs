//! `/v1/support/*`: tickets and reserved-deployment requests. The domain decides who
//! sees which ticket (the requester and admins).

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tm_api::control::{enum_named, ConversationMessage, Ticket, TicketReply, TicketStatus, TicketType, TicketsPage};
use tm_control::support::Ticket as TicketRecord;

use super::error::CpError;
use super::extract::{Body, Params, SignedIn};
use super::wire;
use super::ControlState;

const MAX_PAGE_SIZE: i64 = 100;

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

#[derive(Deserialize)]
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

pub async fn get(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Path(id): Path<String>,
) -> Result<Json<TicketReply>, CpError> {
    Ok(Json(TicketReply { ticket: ticket(&state.control.support().get(&me, &id).await?) }))
}

#[derive(Deserialize)]
pub struct NewMessage {
    #[serde(default)]
    message: Value,
}

pub async fn add_message(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Path(id): Path<String>,
    Body(m): Body<NewMessage>,
) -> Result<Json<TicketReply>, CpError> {
    let content = message_text(&m.message)?;
    Ok(Json(TicketReply { ticket: ticket(&state.control.support().reply(&me, &id, &content).await?) }))
}

pub async fn close(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Path(id): Path<String>,
) -> Result<Json<TicketReply>, CpError> {
    Ok(Json(TicketReply { ticket: ticket(&state.control.support().close(&me, &id).await?) }))
}

pub async fn submit_reserved_deployment(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Body(fields): Body<Map<String, Value>>,
) -> Result<Json<Value>, CpError> {
    let id = state.control.support().submit_reserved_deployment(&me, &fields).await?;
    Ok(Json(json!({"requestId": id})))
}

/// `GET /v1/admin/support/reserved-deployments` (ours; the official clients have no list).
pub async fn list_reserved_deployments(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<Value>, CpError> {
    let (page, size) = params.page(20, MAX_PAGE_SIZE)?;
    let (rows, total) = state.control.support().reserved_deployments(&me, page, size).await?;
    let requests: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut out = Map::new();
            out.insert("requestId".into(), json!(r.id));
            out.insert("userId".into(), json!(r.user_id));
            out.extend(r.details.clone());
            out.insert("createdAt".into(), json!(r.created_at.rfc3339()));
            Value::Object(out)
        })
        .collect();
    Ok(Json(json!({"requests": requests, "page": page, "size": size, "total": total.to_string()})))
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
