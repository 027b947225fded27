//! The audit trail. Every state-changing action of the control plane calls
//! [`Control::record`] once it has succeeded; users read the activities on their own data,
//! admins read all of them.

use serde_json::{Map, Value};
use tm_money::UnixMs;
use tm_store::activities::{ActivityFilter, ActivityRow};

use crate::{Control, ControlError, Principal};

/// Who did it.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// A signed-in user (or admin) through the API.
    User(&'a Principal),
    /// An operator at the server's command line (`tensormesh user ...`).
    Operator,
}

/// Who did it, as the trail stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    User,
    Operator,
    /// Written by a version that knew another kind.
    Unknown,
}

/// One entry of the trail, as users and admins read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    pub id: String,
    /// Whose data the action touched.
    pub user_id: String,
    pub actor: ActorKind,
    pub actor_id: String,
    pub actor_display: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    pub description: String,
    /// A JSON object.
    pub metadata: Value,
    pub occurred_at: UnixMs,
    pub recorded_at: UnixMs,
}

impl From<ActivityRow> for Activity {
    fn from(r: ActivityRow) -> Activity {
        Activity {
            actor: match r.actor_type.as_str() {
                ACTOR_USER => ActorKind::User,
                ACTOR_OPERATOR => ActorKind::Operator,
                _ => ActorKind::Unknown,
            },
            metadata: serde_json::from_str(&r.metadata).unwrap_or_else(|_| Value::Object(Map::new())),
            id: r.id,
            user_id: r.user_id,
            actor_id: r.actor_id,
            actor_display: r.actor_display,
            action: r.action,
            resource_type: r.resource_type,
            resource_id: r.resource_id,
            description: r.description,
            occurred_at: UnixMs(r.occurred_at),
            recorded_at: UnixMs(r.recorded_at),
        }
    }
}

/// What happened, to what, and whose data it touched.
#[derive(Debug, Clone)]
pub struct Event {
    /// The user whose data changed: who may read this activity.
    pub owner: String,
    pub action: &'static str,
    pub resource_type: &'static str,
    pub resource_id: String,
    pub description: String,
    pub metadata: Value,
}

/// Action names (`resource.verb`), as `tm activities list --action` filters them.
pub mod action {
    pub const LOGIN: &str = "user.login";
    pub const USER_CREATED: &str = "user.created";
    pub const PROFILE_UPDATED: &str = "user.profile_updated";
    pub const TOS_ACCEPTED: &str = "user.tos_accepted";
    pub const ROLE_CHANGED: &str = "user.role_changed";
    pub const LIMITS_CHANGED: &str = "user.limits_changed";
    pub const PASSWORD_RESET: &str = "user.password_reset";
    pub const USER_DISABLED: &str = "user.disabled";
    pub const USER_ENABLED: &str = "user.enabled";
    pub const LOGOUT: &str = "user.logout";
    pub const API_KEY_CREATED: &str = "api_key.created";
    pub const API_KEY_REVOKED: &str = "api_key.revoked";
    pub const BALANCE_ADDED: &str = "billing.balance_added";
    pub const ADDRESS_UPDATED: &str = "billing.address_updated";
    pub const PRICING_CREATED: &str = "pricing.created";
    pub const PRICING_UPDATED: &str = "pricing.updated";
    pub const PRICING_DELETED: &str = "pricing.deleted";
    pub const TICKET_OPENED: &str = "ticket.opened";
    pub const TICKET_MESSAGE_ADDED: &str = "ticket.message_added";
    pub const TICKET_CLOSED: &str = "ticket.closed";
    pub const RESERVED_DEPLOYMENT_SUBMITTED: &str = "reserved_deployment.submitted";
    pub const PRODUCT_UPSERTED: &str = "product.upserted";
    pub const PRODUCT_DELETED: &str = "product.deleted";
    pub const DEPLOYMENT_CREATED: &str = "deployment.created";
    pub const DEPLOYMENT_DELETED: &str = "deployment.deleted";
}

/// Resource types.
pub mod resource {
    pub const USER: &str = "user";
    pub const API_KEY: &str = "api_key";
    pub const BILLING_ACCOUNT: &str = "billing_account";
    pub const BILLING_ADDRESS: &str = "billing_address";
    pub const SERVERLESS_PRICING: &str = "serverless_pricing";
    pub const GPU_PRICING: &str = "gpu_pricing";
    pub const TICKET: &str = "ticket";
    pub const RESERVED_DEPLOYMENT: &str = "reserved_deployment";
    pub const PRODUCT: &str = "product";
    pub const DEPLOYMENT: &str = "deployment";
}

pub const ACTOR_USER: &str = "ACTOR_TYPE_USER";
pub const ACTOR_OPERATOR: &str = "ACTOR_TYPE_SYSTEM";

/// What `GET /v1/activities` filters on, besides the user.
#[derive(Debug, Clone, Default)]
pub struct Query<'a> {
    pub action: Option<&'a str>,
    pub resource_type: Option<&'a str>,
    pub resource_id: Option<&'a str>,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl Control {
    /// Appends the event to the trail. The action has already happened, so a failure to
    /// record it is logged rather than turned into an error the client would retry.
    pub(crate) async fn record(&self, actor: Actor<'_>, event: Event) {
        let (actor_type, actor_id, actor_display) = match actor {
            Actor::User(p) => {
                let display = match self.store.users().by_id(&p.user_id).await {
                    Ok(Some(u)) => u.email,
                    _ => String::new(),
                };
                (ACTOR_USER, p.user_id.clone(), display)
            }
            Actor::Operator => (ACTOR_OPERATOR, String::new(), "operator (command line)".to_owned()),
        };
        let now = self.now();
        let row = ActivityRow {
            // Time-ordered within this process: activities of the same millisecond list in
            // the order they happened.
            id: uuid::Uuid::now_v7().to_string(),
            user_id: event.owner,
            actor_type: actor_type.into(),
            actor_id,
            actor_display,
            action: event.action.into(),
            resource_type: event.resource_type.into(),
            resource_id: event.resource_id,
            description: event.description,
            metadata: event.metadata.to_string(),
            occurred_at: now,
            recorded_at: now,
        };
        if let Err(e) = self.store.activities().insert(&row).await {
            tracing::error!(error = %e, action = %row.action, resource = %row.resource_id, "cannot record activity");
        }
    }
}

/// The audit trail, as users and admins read it.
#[derive(Clone, Copy)]
pub struct Activities<'c> {
    pub(crate) control: &'c Control,
}

impl Activities<'_> {
    /// A page of activities: a user's own (or, for admins, anyone's when `user_id` names
    /// them, everyone's when it is absent).
    pub async fn list(
        &self,
        caller: &Principal,
        user_id: Option<&str>,
        q: Query<'_>,
        page: i64,
        size: i64,
    ) -> Result<(Vec<Activity>, i64), ControlError> {
        let owner = visible_owner(caller, user_id)?;
        let filter = ActivityFilter {
            user_id: owner.as_deref(),
            action: q.action,
            resource_type: q.resource_type,
            resource_id: q.resource_id,
            from: q.from,
            to: q.to,
        };
        let (rows, total) = self.control.store.activities().page(&filter, (page - 1) * size, size).await?;
        Ok((rows.into_iter().map(Activity::from).collect(), total))
    }

    /// One activity; another user's is "not found" (its existence is not revealed).
    pub async fn get(&self, caller: &Principal, id: &str) -> Result<Activity, ControlError> {
        match self.control.store.activities().by_id(id).await? {
            Some(a) if caller.role.is_admin() || a.user_id == caller.user_id => Ok(a.into()),
            _ => Err(ControlError::NotFound(format!("activity {id} not found"))),
        }
    }
}

/// Whose rows a list shows: the caller's; for admins the named user's, or all (`None`).
pub(crate) fn visible_owner(caller: &Principal, user_id: Option<&str>) -> Result<Option<String>, ControlError> {
    let named = user_id.map(str::trim).filter(|id| !id.is_empty());
    if caller.role.is_admin() && named.is_none() {
        return Ok(None);
    }
    caller.scope(named).map(Some)
}
