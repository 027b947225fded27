//! Support: tickets with a conversation (users see and answer their own, admins all of
//! them) and reserved-deployment requests.

use serde_json::{json, Map, Value};
use tm_money::UnixMs;
use tm_store::tickets::{MessageRow, ReservedDeploymentRow, TicketFilter, TicketRow};

use crate::activity::{action, resource, visible_owner, Actor, Event};
use crate::{Control, ControlError, Principal, Role};

pub const STATUS_OPEN: &str = "TICKET_STATUS_OPEN";
pub const STATUS_CLOSED: &str = "TICKET_STATUS_CLOSED";
const STATUSES: [&str; 2] = [STATUS_OPEN, STATUS_CLOSED];
pub const TYPES: [&str; 6] = [
    "TICKET_TYPE_GENERAL",
    "TICKET_TYPE_TECHNICAL",
    "TICKET_TYPE_BILLING",
    "TICKET_TYPE_ACCOUNT",
    "TICKET_TYPE_FEATURE_REQUEST",
    "TICKET_TYPE_RESERVED_DEPLOYMENT",
];
const MAX_SUBJECT_CHARS: usize = 200;
/// Open tickets one user may have, and messages one ticket may hold.
pub const MAX_OPEN_TICKETS_PER_USER: i64 = 50;
pub const MAX_MESSAGES_PER_TICKET: i64 = 500;
const MAX_MESSAGE_CHARS: usize = 20_000;
/// The fields of a reserved-deployment request, as the clients send them.
pub const RESERVED_DEPLOYMENT_FIELDS: [&str; 10] = [
    "fullName",
    "workEmail",
    "company",
    "jobTitle",
    "preferredGpu",
    "totalGpusNeeded",
    "deploymentTimeline",
    "workloadUseCase",
    "networkingStorage",
    "otherNotes",
];
const MAX_RESERVED_FIELD_CHARS: usize = 2_000;

/// A ticket and its conversation, oldest message first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub id: String,
    /// Who asked.
    pub user_id: String,
    pub subject: String,
    /// One of [`TYPES`].
    pub ticket_type: String,
    /// [`STATUS_OPEN`] or [`STATUS_CLOSED`].
    pub status: String,
    pub created_at: UnixMs,
    pub updated_at: UnixMs,
    pub messages: Vec<Message>,
}

impl Ticket {
    fn new(row: TicketRow, messages: Vec<MessageRow>) -> Ticket {
        Ticket {
            id: row.id,
            user_id: row.user_id,
            subject: row.subject,
            ticket_type: row.r#type,
            status: row.status,
            created_at: UnixMs(row.created_at),
            updated_at: UnixMs(row.updated_at),
            messages: messages.into_iter().map(Message::from).collect(),
        }
    }
}

/// One message of a ticket's conversation, with its author as they were shown then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub author_id: String,
    pub author_name: String,
    pub author_role: Role,
    pub content: String,
    pub created_at: UnixMs,
}

impl From<MessageRow> for Message {
    fn from(m: MessageRow) -> Message {
        Message {
            author_role: Role::parse(&m.author_role).unwrap_or(Role::User),
            author_id: m.author_id,
            author_name: m.author_name,
            content: m.content,
            created_at: UnixMs(m.created_at),
        }
    }
}

/// A request for a reserved deployment, as submitted.
#[derive(Debug, Clone, PartialEq)]
pub struct ReservedDeploymentRequest {
    pub id: String,
    pub user_id: String,
    /// The fields of [`RESERVED_DEPLOYMENT_FIELDS`] that were given.
    pub details: Map<String, Value>,
    pub created_at: UnixMs,
}

impl From<ReservedDeploymentRow> for ReservedDeploymentRequest {
    fn from(r: ReservedDeploymentRow) -> ReservedDeploymentRequest {
        ReservedDeploymentRequest {
            // Written only by `submit_reserved_deployment`, from a JSON object.
            details: serde_json::from_str(&r.details).unwrap_or_default(),
            id: r.id,
            user_id: r.user_id,
            created_at: UnixMs(r.created_at),
        }
    }
}

/// Support tickets and reserved-deployment requests.
#[derive(Clone, Copy)]
pub struct Support<'c> {
    pub(crate) control: &'c Control,
}

impl Support<'_> {
    pub async fn open(
        &self,
        caller: &Principal,
        user_id: Option<&str>,
        subject: &str,
        message: &str,
        ticket_type: Option<&str>,
    ) -> Result<Ticket, ControlError> {
        let owner = caller.scope(user_id)?;
        let subject = text("subject", subject, MAX_SUBJECT_CHARS)?;
        let open = TicketFilter { user_id: Some(&owner), status: Some(STATUS_OPEN) };
        if self.control.store.tickets().page(&open, 0, 1).await?.1 >= MAX_OPEN_TICKETS_PER_USER {
            return Err(ControlError::FailedPrecondition(format!(
                "you have {MAX_OPEN_TICKETS_PER_USER} open tickets, the most one user may have; close one first"
            )));
        }
        let ticket_type = match ticket_type.map(str::trim).filter(|t| !t.is_empty()) {
            None => TYPES[0],
            Some(t) => enum_name("type", "TICKET_TYPE_", t, &TYPES)?,
        };
        let now = self.control.now();
        let row = TicketRow {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: owner.clone(),
            subject: subject.clone(),
            r#type: ticket_type.into(),
            status: STATUS_OPEN.into(),
            created_at: now,
            updated_at: now,
        };
        let first = self.message(caller, &row.id, message).await?;
        self.control.store.tickets().create(&row, &first).await?;
        let event = self.ticket_event(&row, action::TICKET_OPENED, format!("Opened ticket \"{subject}\""));
        self.control.record(Actor::User(caller), event).await;
        Ok(Ticket::new(row, vec![first]))
    }

    /// A page of tickets, newest first: the caller's own; for admins the named user's, or
    /// everyone's.
    pub async fn list(
        &self,
        caller: &Principal,
        user_id: Option<&str>,
        status: Option<&str>,
        page: i64,
        size: i64,
    ) -> Result<(Vec<Ticket>, i64), ControlError> {
        let owner = visible_owner(caller, user_id)?;
        let status = status.map(|s| enum_name("status", "TICKET_STATUS_", s, &STATUSES)).transpose()?;
        let filter = TicketFilter { user_id: owner.as_deref(), status };
        let (rows, total) = self.control.store.tickets().page(&filter, (page - 1) * size, size).await?;
        let ids: Vec<String> = rows.iter().map(|t| t.id.clone()).collect();
        let mut messages = self.control.store.tickets().messages(&ids).await?;
        let tickets = rows
            .into_iter()
            .map(|row| {
                let (mine, rest) = messages.drain(..).partition(|m| m.ticket_id == row.id);
                messages = rest;
                Ticket::new(row, mine)
            })
            .collect();
        Ok((tickets, total))
    }

    pub async fn get(&self, caller: &Principal, id: &str) -> Result<Ticket, ControlError> {
        let row = self.visible_ticket(caller, id).await?;
        let messages = self.control.store.tickets().messages(std::slice::from_ref(&row.id)).await?;
        Ok(Ticket::new(row, messages))
    }

    /// Adds a message from the caller (the requester or an admin) to an open ticket.
    pub async fn reply(&self, caller: &Principal, id: &str, content: &str) -> Result<Ticket, ControlError> {
        let row = self.visible_ticket(caller, id).await?;
        let message = self.message(caller, &row.id, content).await?;
        if self.control.store.tickets().message_count(&row.id).await? >= MAX_MESSAGES_PER_TICKET {
            return Err(ControlError::FailedPrecondition(format!(
                "ticket {id} has {MAX_MESSAGES_PER_TICKET} messages, the most one ticket may hold; open a new one"
            )));
        }
        if !self.control.store.tickets().append(&message).await? {
            return Err(ControlError::FailedPrecondition(format!("ticket {id} is closed; open a new one")));
        }
        let event = self.ticket_event(&row, action::TICKET_MESSAGE_ADDED, format!("Replied to \"{}\"", row.subject));
        self.control.record(Actor::User(caller), event).await;
        self.get(caller, id).await
    }

    /// Closes the ticket; closing a closed ticket changes nothing.
    pub async fn close(&self, caller: &Principal, id: &str) -> Result<Ticket, ControlError> {
        let row = self.visible_ticket(caller, id).await?;
        if self.control.store.tickets().close(&row.id, self.control.now()).await? {
            let event = self.ticket_event(&row, action::TICKET_CLOSED, format!("Closed ticket \"{}\"", row.subject));
            self.control.record(Actor::User(caller), event).await;
        }
        self.get(caller, id).await
    }

    /// Stores a reserved-deployment request (`fields` keyed as the clients send them);
    /// returns its id. Contact details default to the caller's profile.
    pub async fn submit_reserved_deployment(
        &self,
        caller: &Principal,
        fields: &Map<String, Value>,
    ) -> Result<String, ControlError> {
        let mut details = Map::new();
        for (key, value) in fields {
            let Some(name) = RESERVED_DEPLOYMENT_FIELDS.iter().find(|f| **f == key.as_str()) else { continue };
            let value = match value {
                Value::Null => continue,
                Value::String(s) => s.trim().to_owned(),
                Value::Number(n) => n.to_string(),
                _ => return Err(ControlError::invalid(name, "must be a string")),
            };
            if value.chars().count() > MAX_RESERVED_FIELD_CHARS {
                return Err(ControlError::invalid(
                    name,
                    format!("is longer than {MAX_RESERVED_FIELD_CHARS} characters"),
                ));
            }
            if !value.is_empty() {
                details.insert((*name).to_owned(), Value::String(value));
            }
        }
        if RESERVED_DEPLOYMENT_FIELDS[4..].iter().all(|f| !details.contains_key(*f)) {
            return Err(ControlError::invalid(
                "body",
                "say what you need: give at least one of preferredGpu, totalGpusNeeded, deploymentTimeline, \
                 workloadUseCase, networkingStorage, otherNotes",
            ));
        }
        let user = self.control.accounts().get(&caller.user_id).await?;
        details.entry("workEmail").or_insert_with(|| json!(user.email));
        details.entry("fullName").or_insert_with(|| json!(user.shown_name()));
        let row = ReservedDeploymentRow {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: caller.user_id.clone(),
            details: Value::Object(details).to_string(),
            created_at: self.control.now(),
        };
        self.control.store.tickets().insert_reserved_deployment(&row).await?;
        let event = Event {
            owner: caller.user_id.clone(),
            action: action::RESERVED_DEPLOYMENT_SUBMITTED,
            resource_type: resource::RESERVED_DEPLOYMENT,
            resource_id: row.id.clone(),
            description: "Requested a reserved deployment".into(),
            metadata: json!({}),
        };
        self.control.record(Actor::User(caller), event).await;
        Ok(row.id)
    }

    /// Admins only; newest first.
    pub async fn reserved_deployments(
        &self,
        caller: &Principal,
        page: i64,
        size: i64,
    ) -> Result<(Vec<ReservedDeploymentRequest>, i64), ControlError> {
        caller.require_admin()?;
        let (rows, total) = self.control.store.tickets().reserved_deployments((page - 1) * size, size).await?;
        Ok((rows.into_iter().map(ReservedDeploymentRequest::from).collect(), total))
    }

    /// The ticket if the caller may see it; "not found" otherwise, so that ticket ids of
    /// other users are not revealed.
    async fn visible_ticket(&self, caller: &Principal, id: &str) -> Result<TicketRow, ControlError> {
        match self.control.store.tickets().by_id(id.trim()).await? {
            Some(t) if caller.role.is_admin() || t.user_id == caller.user_id => Ok(t),
            _ => Err(ControlError::NotFound(format!("ticket {id} not found"))),
        }
    }

    async fn message(&self, caller: &Principal, ticket_id: &str, content: &str) -> Result<MessageRow, ControlError> {
        let content = text("message", content, MAX_MESSAGE_CHARS)?;
        let author = self.control.accounts().get(&caller.user_id).await?;
        Ok(MessageRow {
            id: uuid::Uuid::new_v4().to_string(),
            ticket_id: ticket_id.to_owned(),
            seq: 1,
            author_id: author.id.clone(),
            author_name: author.shown_name(),
            author_role: author.role.as_str().into(),
            content,
            created_at: self.control.now(),
        })
    }

    fn ticket_event(&self, t: &TicketRow, action: &'static str, description: String) -> Event {
        Event {
            owner: t.user_id.clone(),
            action,
            resource_type: resource::TICKET,
            resource_id: t.id.clone(),
            description,
            metadata: json!({"subject": t.subject}),
        }
    }
}

/// Trimmed, non-blank, at most `max` characters.
fn text(field: &'static str, value: &str, max: usize) -> Result<String, ControlError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ControlError::invalid(field, "is required"));
    }
    if value.chars().count() > max {
        return Err(ControlError::invalid(field, format!("is longer than {max} characters")));
    }
    Ok(value.to_owned())
}

/// An enum value by its name or short form (`billing` for `TICKET_TYPE_BILLING`), any case.
fn enum_name(
    field: &'static str,
    prefix: &str,
    value: &str,
    allowed: &[&'static str],
) -> Result<&'static str, ControlError> {
    let upper = value.trim().to_ascii_uppercase().replace(['-', ' '], "_");
    let short = upper.strip_prefix(prefix).unwrap_or(&upper);
    allowed
        .iter()
        .copied()
        .find(|name| name.strip_prefix(prefix) == Some(short))
        .ok_or_else(|| ControlError::invalid(field, format!("{value:?} is not one of {}", allowed.join(", "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_names_accept_short_forms_and_name_the_choices() {
        assert_eq!(enum_name("type", "TICKET_TYPE_", "billing", &TYPES).ok(), Some("TICKET_TYPE_BILLING"));
        assert_eq!(
            enum_name("type", "TICKET_TYPE_", "feature-request", &TYPES).ok(),
            Some("TICKET_TYPE_FEATURE_REQUEST")
        );
        assert_eq!(enum_name("status", "TICKET_STATUS_", "TICKET_STATUS_OPEN", &STATUSES).ok(), Some(STATUS_OPEN));
        let err = enum_name("type", "TICKET_TYPE_", "urgent", &TYPES).unwrap_err().to_string();
        assert!(err.contains("invalid type") && err.contains("TICKET_TYPE_GENERAL"), "{err}");
    }
}
