//! `tm activities …` (the audit trail) and `tm metrics user` (request metrics).

use clap::Subcommand;
use reqwest::Method;

use super::support::Page;
use super::users::Timeout;
use super::{cp_call, path_segment, query};
use crate::error::Result;
use crate::Ctx;

#[derive(Subcommand, Debug)]
pub enum ActivitiesCommand {
    /// List activities (GET /v1/activities).
    List {
        /// Filter by user id.
        #[arg(long, value_name = "TEXT")]
        user_id: Option<String>,
        /// Filter by action.
        #[arg(long, value_name = "TEXT")]
        action: Option<String>,
        /// Filter by resource type.
        #[arg(long, value_name = "TEXT")]
        resource_type: Option<String>,
        /// Filter by resource id.
        #[arg(long, value_name = "TEXT")]
        resource_id: Option<String>,
        /// Filter by start time (RFC 3339).
        #[arg(long, value_name = "TEXT")]
        start_time: Option<String>,
        /// Filter by end time (RFC 3339).
        #[arg(long, value_name = "TEXT")]
        end_time: Option<String>,
        #[command(flatten)]
        page: Page,
        #[command(flatten)]
        t: Timeout,
    },
    /// Get an activity (GET /v1/activities/{activityId}).
    Get {
        activity_id: String,
        #[command(flatten)]
        t: Timeout,
    },
}

#[derive(Subcommand, Debug)]
pub enum MetricsCommand {
    /// Fetch user metrics (GET /v1/observability/users/metrics).
    User {
        /// Optional user id to scope results.
        #[arg(long, value_name = "TEXT")]
        user_id: Option<String>,
        /// Start time (RFC 3339).
        #[arg(long, value_name = "TEXT")]
        start_time: Option<String>,
        /// End time (RFC 3339).
        #[arg(long, value_name = "TEXT")]
        end_time: Option<String>,
        /// Metrics step size in seconds.
        #[arg(long, value_name = "INTEGER")]
        step_seconds: Option<i64>,
        #[command(flatten)]
        t: Timeout,
    },
}

pub async fn activities(ctx: &Ctx, command: ActivitiesCommand) -> Result<()> {
    match command {
        ActivitiesCommand::List { user_id, action, resource_type, resource_id, start_time, end_time, page, t } => {
            let [p, s] = page.query();
            let q = query(&[
                ("userId", user_id),
                ("action", action),
                ("resourceType", resource_type),
                ("resourceId", resource_id),
                ("startTime", start_time),
                ("endTime", end_time),
                p,
                s,
            ]);
            cp_call(ctx, Method::GET, "/v1/activities", q, None, t.timeout).await
        }
        ActivitiesCommand::Get { activity_id, t } => {
            let path = format!("/v1/activities/{}", path_segment(&activity_id));
            cp_call(ctx, Method::GET, &path, Vec::new(), None, t.timeout).await
        }
    }
}

pub async fn metrics(ctx: &Ctx, command: MetricsCommand) -> Result<()> {
    let MetricsCommand::User { user_id, start_time, end_time, step_seconds, t } = command;
    let q = query(&[
        ("userId", user_id),
        ("startTime", start_time),
        ("endTime", end_time),
        ("stepSeconds", step_seconds.map(|s| s.to_string())),
    ]);
    cp_call(ctx, Method::GET, "/v1/observability/users/metrics", q, None, t.timeout).await
}
