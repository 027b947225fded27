//! `/v1/admin/billing/*`: prices, balances, top-ups and spending of any user. The domain
//! checks the admin role.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use tm_api::control::{
    BalanceReply, Empty, ServerlessPriceReply, ServerlessPrices, UserBalance, UserBalances, UserSpending, UserSpendings,
};
use tm_control::billing::pricing::PricePatch;
use utoipa::ToSchema;

use super::billing::{price, pricing_list, spending};
use super::error::CpError;
use super::extract::{Body, Params, SignedIn};
use super::query::ActiveOnly;
use super::wire::{money, parse_money};
use super::ControlState;

const MAX_IDEMPOTENCY_KEY: usize = 255;

#[utoipa::path(get, path = "/v1/admin/billing/serverless-pricing", tag = "admin",
    params(("model" = Option<String>, Query), ActiveOnly),
    responses((status = 200, body = ServerlessPrices)),
)]
pub async fn list_pricing(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<ServerlessPrices>, CpError> {
    me.require_admin()?;
    pricing_list(&state, &params).await
}

#[utoipa::path(post, path = "/v1/admin/billing/serverless-pricing", tag = "admin",
    request_body(
        content = Object,
        description = "`{\"pricing\": {...}}` or the price itself: `id`, `model`, `name` (strings), `inputTokenPrice`, `outputTokenPrice`, `cachedTokenPrice` (Money or decimal strings, per 1M tokens), `isActive`.",
    ),
    responses((status = 200, body = ServerlessPriceReply)),
)]
pub async fn create_pricing(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Body(body): Body<Value>,
) -> Result<Json<ServerlessPriceReply>, CpError> {
    let row = state.control.pricing().create(&me, price_patch(&body)?).await?;
    Ok(Json(ServerlessPriceReply { pricing: price(&row) }))
}

#[utoipa::path(put, path = "/v1/admin/billing/serverless-pricing", tag = "admin",
    request_body(
        content = Object,
        description = "`{\"pricing\": {...}}` or the price itself: `id`, `model`, `name` (strings), `inputTokenPrice`, `outputTokenPrice`, `cachedTokenPrice` (Money or decimal strings, per 1M tokens), `isActive`.",
    ),
    responses((status = 200, body = ServerlessPriceReply)),
)]
pub async fn update_pricing(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Body(body): Body<Value>,
) -> Result<Json<ServerlessPriceReply>, CpError> {
    let row = state.control.pricing().update(&me, price_patch(&body)?).await?;
    Ok(Json(ServerlessPriceReply { pricing: price(&row) }))
}

#[utoipa::path(delete, path = "/v1/admin/billing/serverless-pricing", tag = "admin",
    params(("id" = String, Query)),
    responses((status = 200, body = Empty)),
)]
pub async fn delete_pricing(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<Empty>, CpError> {
    state.control.pricing().delete(&me, params.str("id").unwrap_or_default()).await?;
    Ok(Json(Empty::default()))
}

/// `{"pricing": {...}}`, or the row itself.
fn price_patch(body: &Value) -> Result<PricePatch, CpError> {
    let p = body.get("pricing").unwrap_or(body);
    if !p.is_object() {
        return Err(CpError::invalid("pricing", "must be an object"));
    }
    let text = |k: &'static str| -> Result<Option<String>, CpError> {
        match p.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(CpError::invalid(k, "must be a string")),
        }
    };
    let amount = |k: &'static str| p.get(k).filter(|v| !v.is_null()).map(|v| parse_money(k, v)).transpose();
    let is_active = match p.get("isActive") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(CpError::invalid("isActive", "must be true or false")),
    };
    Ok(PricePatch {
        id: text("id")?,
        model: text("model")?,
        name: text("name")?,
        input: amount("inputTokenPrice")?,
        output: amount("outputTokenPrice")?,
        cached: amount("cachedTokenPrice")?,
        is_active,
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Targets {
    #[serde(default)]
    target_user_ids: Vec<String>,
}

#[utoipa::path(post, path = "/v1/admin/billing/balances", tag = "admin",
    request_body = Targets,
    responses((status = 200, body = UserBalances)),
)]
pub async fn balances(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Body(t): Body<Targets>,
) -> Result<Json<UserBalances>, CpError> {
    let balances = state.control.billing().balances(&me, &t.target_user_ids).await?;
    let balances =
        balances.iter().map(|(id, a)| UserBalance { user_id: id.clone(), balance: money(a.balance_nanos) }).collect();
    Ok(Json(UserBalances { balances }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddBalance {
    #[serde(default)]
    target_user_id: String,
    amount: Option<Value>,
    /// Ours: why, kept in the target's activity trail.
    #[serde(default)]
    reason: Option<String>,
}

/// Money-moving: an `Idempotency-Key` header makes retries safe (Stripe's rules).
#[utoipa::path(post, path = "/v1/admin/billing/balances:add", tag = "admin",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key adds once.")),
    request_body = AddBalance,
    responses((status = 200, body = BalanceReply)),
)]
pub async fn add_balance(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    headers: HeaderMap,
    Body(a): Body<AddBalance>,
) -> Result<Json<BalanceReply>, CpError> {
    let amount = a.amount.as_ref().ok_or_else(|| CpError::invalid("amount", "is required"))?;
    let amount = parse_money("amount", amount)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v.to_str().map_err(|_| CpError::invalid("Idempotency-Key", "must be visible ASCII"))?.trim();
            if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY {
                return Err(CpError::invalid(
                    "Idempotency-Key",
                    format!("must be 1 to {MAX_IDEMPOTENCY_KEY} characters"),
                ));
            }
            Some(format!("balances:add:{}:{k}", me.user_id))
        }
    };
    let balance = state.control.billing().add_balance(&me, &a.target_user_id, amount, key, a.reason.as_deref()).await?;
    Ok(Json(BalanceReply { balance: money(balance) }))
}

#[utoipa::path(post, path = "/v1/admin/billing/spending/summary", tag = "admin",
    request_body = Targets,
    responses((status = 200, body = UserSpendings)),
)]
pub async fn spending_summaries(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Body(t): Body<Targets>,
) -> Result<Json<UserSpendings>, CpError> {
    let summaries = state.control.billing().spendings(&me, &t.target_user_ids).await?;
    let summaries =
        summaries.iter().map(|(id, s)| UserSpending { spending: spending(s), user_id: id.clone() }).collect();
    Ok(Json(UserSpendings { summaries }))
}
