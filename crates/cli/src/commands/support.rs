//! `tm tickets …` and `tm reserved-deployments submit` (support).

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::auth::confirm;
use super::input::{object_or, Input};
use super::users::{body_from, Timeout};
use super::{cp_call, path_segment, py_repr, query, required_arg};
use crate::error::{CliError, Result};
use crate::Ctx;

#[derive(Subcommand, Debug)]
pub enum TicketsCommand {
    /// List tickets (GET /v1/support/tickets).
    List {
        /// Optional user id to scope tickets.
        #[arg(long, value_name = "TEXT")]
        user_id: Option<String>,
        /// Filter by ticket status.
        #[arg(long, value_name = "TEXT")]
        status: Option<String>,
        #[command(flatten)]
        page: Page,
        #[command(flatten)]
        t: Timeout,
    },
    /// Get a ticket (GET /v1/support/tickets/{ticketId}).
    Get {
        ticket_id: String,
        #[command(flatten)]
        t: Timeout,
    },
    /// Create a ticket (POST /v1/support/tickets).
    Create {
        /// Ticket subject.
        #[arg(long, value_name = "TEXT")]
        subject: Option<String>,
        /// Ticket type.
        #[arg(long = "type", value_name = "TEXT")]
        ticket_type: Option<String>,
        /// Initial message.
        #[arg(long, value_name = "TEXT")]
        message: Option<String>,
        /// Optional user id for authorization.
        #[arg(long, value_name = "TEXT")]
        user_id: Option<String>,
        #[command(flatten)]
        input: Input,
        #[command(flatten)]
        t: Timeout,
    },
    /// Append a message to a ticket (POST /v1/support/tickets/{ticketId}/messages).
    Message {
        ticket_id: String,
        /// Message to append.
        #[arg(long, value_name = "TEXT")]
        message: Option<String>,
        /// Optional user id for authorization.
        #[arg(long, value_name = "TEXT")]
        user_id: Option<String>,
        #[command(flatten)]
        input: Input,
        #[command(flatten)]
        t: Timeout,
    },
    /// Close/delete a ticket (DELETE /v1/support/tickets/{ticketId}).
    Close {
        ticket_id: String,
        /// Skip confirmation.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        t: Timeout,
    },
}

/// Numbered pages (`--page`, `--size`).
#[derive(Args, Debug, Clone)]
pub struct Page {
    /// Page number.
    #[arg(long, value_name = "INTEGER")]
    pub page: Option<i64>,
    /// Page size.
    #[arg(long, value_name = "INTEGER")]
    pub size: Option<i64>,
}

impl Page {
    pub fn query(&self) -> [(&'static str, Option<String>); 2] {
        [("page", self.page.map(|p| p.to_string())), ("size", self.size.map(|s| s.to_string()))]
    }
}

#[derive(Subcommand, Debug)]
pub enum ReservedDeploymentsCommand {
    /// Submit reserved deployment request (POST /v1/support/reserved-deployments).
    Submit(Box<ReservedDeployment>),
}

#[derive(Args, Debug)]
pub struct ReservedDeployment {
    /// Full name.
    #[arg(long, value_name = "TEXT")]
    full_name: Option<String>,
    /// Work email.
    #[arg(long, value_name = "TEXT")]
    work_email: Option<String>,
    /// Company name.
    #[arg(long, value_name = "TEXT")]
    company: Option<String>,
    /// Job title.
    #[arg(long, value_name = "TEXT")]
    job_title: Option<String>,
    /// Preferred GPU type enum.
    #[arg(long, value_name = "TEXT")]
    preferred_gpu: Option<String>,
    /// Total GPUs needed (freeform, e.g. '<8 GPUs').
    #[arg(long, value_name = "TEXT")]
    total_gpus_needed: Option<String>,
    /// Deployment timeline (freeform, e.g. '1-3 months').
    #[arg(long, value_name = "TEXT")]
    deployment_timeline: Option<String>,
    /// Workload / use case.
    #[arg(long, value_name = "TEXT")]
    workload_use_case: Option<String>,
    /// Networking / storage requirements.
    #[arg(long, value_name = "TEXT")]
    networking_storage: Option<String>,
    /// Additional notes.
    #[arg(long, value_name = "TEXT")]
    other_notes: Option<String>,
    #[command(flatten)]
    input: Input,
    #[command(flatten)]
    t: Timeout,
}

const MISSING_TICKET_FIELDS: &str =
    "Missing required fields. Provide --subject and --message (or pass JSON via --json/--file/stdin).";
const MISSING_MESSAGE: &str = "Missing message. Provide --message or pass JSON via --json/--file/stdin.";

/// Whether a body field counts as given, as the official CLI's `str(value or "").strip()`.
pub fn given(body: &Map<String, Value>, field: &str) -> bool {
    match body.get(field) {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.trim().is_empty(),
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

fn text(v: Option<String>) -> Option<Value> {
    v.map(Value::String)
}

pub async fn tickets(ctx: &Ctx, command: TicketsCommand) -> Result<()> {
    match command {
        TicketsCommand::List { user_id, status, page, t } => {
            let [p, s] = page.query();
            let q = query(&[("userId", user_id), ("status", status), p, s]);
            cp_call(ctx, Method::GET, "/v1/support/tickets", q, None, t.timeout).await
        }
        TicketsCommand::Get { ticket_id, t } => {
            let id = required_arg(&ticket_id, "TICKET_ID")?;
            let path = format!("/v1/support/tickets/{}", path_segment(&id));
            cp_call(ctx, Method::GET, &path, Vec::new(), None, t.timeout).await
        }
        TicketsCommand::Create { subject, ticket_type, message, user_id, input, t } => {
            let body = body_from(
                &input,
                &[
                    ("subject", Some(json!(subject.unwrap_or_default()))),
                    ("message", Some(json!(message.unwrap_or_default()))),
                    ("type", text(ticket_type)),
                    ("userId", text(user_id)),
                ],
            )?;
            if !given(&body, "subject") || !given(&body, "message") {
                return Err(CliError::usage(MISSING_TICKET_FIELDS));
            }
            cp_call(ctx, Method::POST, "/v1/support/tickets", Vec::new(), Some(&Value::Object(body)), t.timeout).await
        }
        TicketsCommand::Message { ticket_id, message, user_id, input, t } => {
            let id = required_arg(&ticket_id, "TICKET_ID")?;
            let given = object_or(&input, "Ticket message request must be a JSON object.")?;
            let mut body = match given {
                Some(body) => body,
                None => {
                    let mut body = Map::new();
                    body.insert("message".into(), json!(message.unwrap_or_default()));
                    if let Some(u) = user_id {
                        body.insert("userId".into(), json!(u));
                    }
                    body
                }
            };
            // A plain string is the message's content (as the SDK sends it).
            if let Some(Value::String(s)) = body.get("message") {
                let content = json!({"content": s});
                body.insert("message".into(), content);
            }
            let content_ok = body
                .get("message")
                .and_then(|m| m.get("content"))
                .and_then(Value::as_str)
                .is_some_and(|c| !c.trim().is_empty());
            if !content_ok {
                return Err(CliError::usage(MISSING_MESSAGE));
            }
            let path = format!("/v1/support/tickets/{}/messages", path_segment(&id));
            cp_call(ctx, Method::POST, &path, Vec::new(), Some(&Value::Object(body)), t.timeout).await
        }
        TicketsCommand::Close { ticket_id, yes, t } => {
            let id = required_arg(&ticket_id, "TICKET_ID")?;
            if !yes {
                confirm(&format!("Close ticket {}?", py_repr(&id)))?;
            }
            let path = format!("/v1/support/tickets/{}", path_segment(&id));
            cp_call(ctx, Method::DELETE, &path, Vec::new(), None, t.timeout).await
        }
    }
}

pub async fn reserved_deployments(ctx: &Ctx, command: ReservedDeploymentsCommand) -> Result<()> {
    let ReservedDeploymentsCommand::Submit(r) = command;
    let r = *r;
    let body = body_from(
        &r.input,
        &[
            ("fullName", text(r.full_name)),
            ("workEmail", text(r.work_email)),
            ("company", text(r.company)),
            ("jobTitle", text(r.job_title)),
            ("preferredGpu", text(r.preferred_gpu)),
            ("totalGpusNeeded", text(r.total_gpus_needed)),
            ("deploymentTimeline", text(r.deployment_timeline)),
            ("workloadUseCase", text(r.workload_use_case)),
            ("networkingStorage", text(r.networking_storage)),
            ("otherNotes", text(r.other_notes)),
        ],
    )?;
    let path = "/v1/support/reserved-deployments";
    cp_call(ctx, Method::POST, path, Vec::new(), Some(&Value::Object(body)), r.t.timeout).await
}
