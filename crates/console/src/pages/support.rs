//! Support tickets: the list with a form to open one, a ticket's conversation with reply
//! and close.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::{Deserialize, Serialize};
use tm_control::support::{Ticket, TYPES};

use crate::error::PageError;
use crate::form::{Nothing, Posted};
use crate::render::page;
use crate::session::Session;
use crate::Console;

const PAGE_SIZE: i64 = 50;

#[derive(Serialize)]
pub(crate) struct TicketRow {
    id: String,
    subject: String,
    kind: String,
    open: bool,
    updated_at: i64,
    messages: usize,
    user_id: String,
}

impl From<&Ticket> for TicketRow {
    fn from(t: &Ticket) -> TicketRow {
        TicketRow {
            id: t.id.clone(),
            subject: t.subject.clone(),
            kind: type_label(&t.ticket_type),
            open: t.status == tm_control::support::STATUS_OPEN,
            updated_at: t.updated_at.0,
            messages: t.messages.len(),
            user_id: t.user_id.clone(),
        }
    }
}

pub async fn list(State(console): State<Console>, session: Session) -> Result<Response, PageError> {
    let me = &session.principal;
    let (tickets, total) = console.control.support().list(me, Some(&me.user_id), None, 1, PAGE_SIZE).await?;
    let tickets: Vec<TicketRow> = tickets.iter().map(TicketRow::from).collect();
    let types: Vec<(&str, String)> = TYPES.iter().map(|t| (*t, type_label(t))).collect();
    page(&console, &session, "support.html", "support", "Support", context! { tickets, total, types })
}

#[derive(Deserialize)]
pub struct NewTicket {
    #[serde(default)]
    subject: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    message: String,
}

pub async fn open(State(console): State<Console>, posted: Posted<NewTicket>) -> Result<Response, PageError> {
    let Posted { session, form } = posted;
    let ticket = console
        .control
        .support()
        .open(&session.principal, None, &form.subject, &form.message, Some(&form.kind))
        .await?;
    Ok(Redirect::to(&format!("/console/support/{}", ticket.id)).into_response())
}

pub async fn show(
    State(console): State<Console>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let t = console.control.support().get(&session.principal, &id).await?;
    let messages: Vec<_> = t
        .messages
        .iter()
        .map(|m| context! { author => m.author_name.clone(), staff => m.author_role.is_admin(), content => m.content.clone(), at => m.created_at.0 })
        .collect();
    let ticket = TicketRow::from(&t);
    page(&console, &session, "ticket.html", "support", &format!("Ticket: {}", t.subject), context! { ticket, messages })
}

#[derive(Deserialize)]
pub struct Reply {
    #[serde(default)]
    message: String,
}

pub async fn reply(
    State(console): State<Console>,
    Path(id): Path<String>,
    posted: Posted<Reply>,
) -> Result<Response, PageError> {
    console.control.support().reply(&posted.session.principal, &id, &posted.form.message).await?;
    Ok(Redirect::to(&format!("/console/support/{id}")).into_response())
}

pub async fn close(
    State(console): State<Console>,
    Path(id): Path<String>,
    posted: Posted<Nothing>,
) -> Result<Response, PageError> {
    console.control.support().close(&posted.session.principal, &id).await?;
    Ok(Redirect::to(&format!("/console/support/{id}")).into_response())
}

/// `TICKET_TYPE_BILLING` → `Billing`.
fn type_label(t: &str) -> String {
    let short = t.strip_prefix("TICKET_TYPE_").unwrap_or(t).replace('_', " ").to_lowercase();
    let mut chars = short.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}
