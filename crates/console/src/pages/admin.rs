//! Admin pages (by role; anyone else gets "not found"): users (create, role, limits,
//! disable, top-up with a reason), prices, every ticket, the audit trail. Every change goes
//! through the same caller-checked `tm-control` services as the admin API, so the role
//! rules are the domain's, not the page's.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::{Deserialize, Serialize};
use tm_control::accounts::NewUser;
use tm_control::activity;
use tm_control::billing::pricing::PricePatch;
use tm_control::{ControlError, Role};
use tm_money::Nanos;

use super::support::TicketRow;
use super::{given, nonce};
use crate::error::PageError;
use crate::form::Posted;
use crate::render::page;
use crate::session::Session;
use crate::Console;

const PAGE_SIZE: i64 = 50;

#[derive(Deserialize, Default)]
pub struct PageQuery {
    #[serde(default)]
    page: Option<i64>,
}

impl PageQuery {
    fn number(&self) -> i64 {
        self.page.unwrap_or(1).clamp(1, 1_000_000)
    }
}

#[derive(Serialize)]
struct UserView {
    id: String,
    email: String,
    name: String,
    role: &'static str,
    disabled: bool,
    created_at: i64,
    balance: i64,
    held: i64,
}

pub async fn users(
    State(console): State<Console>,
    session: Session,
    Query(q): Query<PageQuery>,
) -> Result<Response, PageError> {
    session.require_admin()?;
    let me = &session.principal;
    let (users, total) = console.control.accounts().page(me, q.number(), PAGE_SIZE).await?;
    let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
    let balances = console.control.billing().balances(me, &ids).await?;
    let users: Vec<UserView> = users
        .into_iter()
        .zip(balances)
        .map(|(u, (_, account))| UserView {
            name: u.shown_name(),
            role: u.role.as_str(),
            disabled: u.disabled_at.is_some(),
            created_at: u.created_at.0,
            balance: account.balance_nanos,
            held: account.held_nanos,
            id: u.id,
            email: u.email,
        })
        .collect();
    let roles = [Role::User, Role::Admin, Role::SuperAdmin].map(Role::as_str);
    let pages = (total + PAGE_SIZE - 1) / PAGE_SIZE;
    let ctx = context! { users, total, roles, page => q.number(), pages, nonce => nonce(), me => me.user_id.clone() };
    page(&console, &session, "admin_users.html", "admin", "Users", ctx)
}

#[derive(Deserialize)]
pub struct NewUserForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
}

pub async fn create_user(State(console): State<Console>, posted: Posted<NewUserForm>) -> Result<Response, PageError> {
    let Posted { session, form } = posted;
    session.require_admin()?;
    let role = Role::parse(&form.role).ok_or_else(|| ControlError::invalid("role", "is not a role"))?;
    if form.password.chars().count() < 8 {
        return Err(ControlError::invalid("password", "must have at least 8 characters").into());
    }
    let new = NewUser {
        email: form.email,
        password: form.password,
        role,
        first_name: form.first_name,
        last_name: form.last_name,
    };
    console.control.accounts().create_as(&session.principal, new).await?;
    Ok(Redirect::to("/console/admin/users").into_response())
}

/// One of a user row's forms: `action` says which.
#[derive(Deserialize)]
pub struct UserChange {
    #[serde(default)]
    action: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    requests_per_minute: String,
    #[serde(default)]
    tokens_per_minute: String,
    /// US dollars.
    #[serde(default)]
    amount: String,
    #[serde(default)]
    reason: String,
    /// Makes a top-up posted twice (a double click, a reload) credit once.
    #[serde(default)]
    nonce: String,
}

pub async fn change_user(
    State(console): State<Console>,
    Path(id): Path<String>,
    posted: Posted<UserChange>,
) -> Result<Response, PageError> {
    let Posted { session, form } = posted;
    session.require_admin()?;
    let me = &session.principal;
    let accounts = console.control.accounts();
    match form.action.as_str() {
        "role" => {
            let role = Role::parse(&form.role).ok_or_else(|| ControlError::invalid("role", "is not a role"))?;
            accounts.change_role(me, &id, role).await?;
        }
        "limits" => {
            let rpm = limit("requests_per_minute", &form.requests_per_minute)?;
            let tpm = limit("tokens_per_minute", &form.tokens_per_minute)?;
            accounts.set_limits_as(me, &id, rpm, tpm).await?;
        }
        "disable" | "enable" => {
            accounts.set_disabled_as(me, &id, form.action == "disable").await?;
        }
        "top_up" => {
            let amount = usd("amount", &form.amount)?;
            let key = given(&form.nonce).map(|n| format!("console:{n}"));
            console.control.billing().add_balance(me, &id, amount.0, key, given(&form.reason)).await?;
        }
        _ => return Err(ControlError::invalid("action", "is not role, limits, disable, enable or top_up").into()),
    }
    Ok(Redirect::to("/console/admin/users").into_response())
}

#[derive(Serialize)]
struct PriceView {
    id: String,
    model: String,
    name: String,
    input: i64,
    cached: i64,
    output: i64,
    active: bool,
    updated_at: i64,
}

pub async fn prices(State(console): State<Console>, session: Session) -> Result<Response, PageError> {
    session.require_admin()?;
    let prices: Vec<PriceView> = console
        .control
        .pricing()
        .list(None, false)
        .await?
        .into_iter()
        .map(|p| PriceView {
            id: p.id,
            model: p.model,
            name: p.name,
            input: p.price.input.0,
            cached: p.price.cached.0,
            output: p.price.output.0,
            active: p.is_active,
            updated_at: p.updated_at.0,
        })
        .collect();
    page(&console, &session, "admin_prices.html", "admin", "Prices", context! { prices })
}

#[derive(Deserialize)]
pub struct NewPrice {
    #[serde(default)]
    model: String,
    #[serde(default)]
    name: String,
    /// US dollars per million tokens.
    #[serde(default)]
    input: String,
    #[serde(default)]
    cached: String,
    #[serde(default)]
    output: String,
}

pub async fn create_price(State(console): State<Console>, posted: Posted<NewPrice>) -> Result<Response, PageError> {
    let Posted { session, form } = posted;
    session.require_admin()?;
    let patch = PricePatch {
        model: given(&form.model).map(str::to_owned),
        name: given(&form.name).map(str::to_owned),
        input: Some(usd("input", &form.input)?.0),
        output: Some(usd("output", &form.output)?.0),
        cached: given(&form.cached).map(|c| usd("cached", c)).transpose()?.map(|n| n.0),
        is_active: Some(true),
        id: None,
    };
    console.control.pricing().create(&session.principal, patch).await?;
    Ok(Redirect::to("/console/admin/prices").into_response())
}

pub async fn tickets(
    State(console): State<Console>,
    session: Session,
    Query(q): Query<PageQuery>,
) -> Result<Response, PageError> {
    session.require_admin()?;
    let (tickets, total) =
        console.control.support().list(&session.principal, None, None, q.number(), PAGE_SIZE).await?;
    let tickets: Vec<TicketRow> = tickets.iter().map(TicketRow::from).collect();
    let pages = (total + PAGE_SIZE - 1) / PAGE_SIZE;
    page(
        &console,
        &session,
        "admin_tickets.html",
        "admin",
        "All tickets",
        context! { tickets, total, page => q.number(), pages },
    )
}

pub async fn activities(
    State(console): State<Console>,
    session: Session,
    Query(q): Query<PageQuery>,
) -> Result<Response, PageError> {
    session.require_admin()?;
    let query = activity::Query::default();
    let (items, total) =
        console.control.activities().list(&session.principal, None, query, q.number(), PAGE_SIZE).await?;
    let items: Vec<_> = items
        .into_iter()
        .map(|a| {
            context! {
                at => a.occurred_at.0, user_id => a.user_id, actor => a.actor_display, action => a.action,
                resource => format!("{} {}", a.resource_type, a.resource_id), description => a.description,
            }
        })
        .collect();
    let pages = (total + PAGE_SIZE - 1) / PAGE_SIZE;
    page(
        &console,
        &session,
        "admin_activities.html",
        "admin",
        "Activities",
        context! { items, total, page => q.number(), pages },
    )
}

/// A per-minute limit: empty → the server's default, 0 → unlimited.
fn limit(field: &'static str, s: &str) -> Result<Option<u32>, PageError> {
    match given(s) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| ControlError::invalid(field, "is not a whole number").into()),
    }
}

/// A positive amount of US dollars, to the nano-dollar.
fn usd(field: &'static str, s: &str) -> Result<Nanos, PageError> {
    let s = s.trim().trim_start_matches('$');
    let (units, fraction) = s.split_once('.').unwrap_or((s, ""));
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(units) || !(fraction.is_empty() || digits(fraction)) || fraction.len() > 9 {
        return Err(ControlError::invalid(field, "is not an amount of US dollars (like 12.50)").into());
    }
    let units: i64 = units.parse().map_err(|_| ControlError::invalid(field, "is too large"))?;
    let nanos: i64 = format!("{fraction:0<9}").parse().unwrap_or(0);
    Nanos::from_units_and_nanos(units, nanos)
        .filter(|n| n.0 >= 0)
        .ok_or_else(|| ControlError::invalid(field, "is too large").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_amounts_are_read_exactly() {
        assert_eq!(usd("a", "12.5").ok(), Some(Nanos(12_500_000_000)));
        assert_eq!(usd("a", "$0.000000001").ok(), Some(Nanos(1)));
        assert_eq!(usd("a", "3").ok(), Some(Nanos(3_000_000_000)));
        for bad in ["", "-1", "1.2.3", "abc", "0.0000000001", "1e3"] {
            assert!(usd("a", bad).is_err(), "{bad}");
        }
        assert_eq!(limit("r", " ").ok(), Some(None));
        assert_eq!(limit("r", "0").ok(), Some(Some(0)));
        assert!(limit("r", "-1").is_err());
    }
}
