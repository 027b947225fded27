//! `/v1/billing/*`: balance, transactions, spending, usage history and prices, each for
//! the caller (or, for an admin, the user `userId` names).

use axum::extract::State;
use axum::Json;
use serde_json::{json, Map, Value};
use tm_control::billing::{Bucket, Transaction, TransactionKind};
use tm_money::Nanos;
use tm_store::pricing::PriceRow;

use super::error::CpError;
use super::extract::{Params, SignedIn};
use super::wire::{money, parse_timestamp, timestamp};
use super::ControlState;

const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 500;

pub async fn balance(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<Value>, CpError> {
    let account = state.control.balance(&me, params.str("userId")).await?;
    Ok(Json(json!({"balance": money(account.balance_nanos), "availableBalance": money(account.available_nanos())})))
}

/// Token-paged: `pageToken` is the offset the previous page ended at.
pub async fn transactions(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<Value>, CpError> {
    let size = params.int("pageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)? as usize;
    let offset = match params.str("pageToken") {
        None => 0,
        Some(t) => {
            t.parse::<usize>().map_err(|_| CpError::invalid("pageToken", "is not a token this server issued"))?
        }
    };
    let all = state.control.transactions(&me, params.str("userId")).await?;
    let page: Vec<Value> = all.iter().skip(offset).take(size).map(transaction).collect();
    let next = if offset + size < all.len() { (offset + size).to_string() } else { String::new() };
    Ok(Json(json!({"transactions": page, "nextPageToken": next})))
}

fn transaction(t: &Transaction) -> Value {
    let kind = match t.kind {
        TransactionKind::TopUp => "TRANSACTION_TYPE_TOP_UP",
        TransactionKind::Charge => "TRANSACTION_TYPE_CHARGE",
    };
    let mut out = json!({
        "transactionId": t.id,
        "createdAt": timestamp(t.created_at),
        "amount": money(t.amount_nanos),
        "description": t.description,
        "status": "TRANSACTION_STATUS_SUCCEEDED",
        "type": kind,
    });
    if t.kind == TransactionKind::Charge {
        // Snake case inside `details`, as `tm cost` reads it.
        let models: Map<String, Value> = t
            .models
            .iter()
            .map(|m| {
                let detail = json!({
                    "name": m.name,
                    "event_count": m.events,
                    "input_tokens": m.input_tokens,
                    "output_tokens": m.output_tokens,
                    "cached_tokens": m.cached_tokens,
                    "total_amount": Nanos(m.total_nanos).usd_decimal(),
                });
                (m.model.clone(), detail)
            })
            .collect();
        out["details"] = json!({"models": models});
    }
    out
}

pub async fn spending_summary(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<Value>, CpError> {
    let s = state.control.spending(&me, params.str("userId")).await?;
    Ok(Json(spending(&s)))
}

pub fn spending(s: &tm_control::billing::Spending) -> Value {
    json!({"spend24h": money(s.last_24h), "spend7d": money(s.last_7d), "spend30d": money(s.last_30d)})
}

pub async fn spending_history(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<Value>, CpError> {
    let buckets = state.control.spending_history(&me, params.str("userId")).await?;
    let buckets: Vec<Value> = buckets
        .iter()
        .map(|b| {
            json!({"bucketStart": timestamp(b.start), "amount": money(b.amount_nanos),
                   "costSaving": money(b.cost_saving_nanos)})
        })
        .collect();
    Ok(Json(json!({"buckets": buckets})))
}

pub async fn usage_history(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<Value>, CpError> {
    let bucket = match params.str("bucket") {
        None => Bucket::Day,
        Some(b) => Bucket::parse(b).ok_or_else(|| {
            CpError::invalid("bucket", "must be USAGE_BUCKET_DAY, USAGE_BUCKET_WEEK or USAGE_BUCKET_MONTH")
        })?,
    };
    let start = params.str("startTime").map(|s| parse_timestamp("startTime", s)).transpose()?;
    let end = params.str("endTime").map(|s| parse_timestamp("endTime", s)).transpose()?;
    let rows = state.control.usage_history(&me, params.str("userId"), bucket, start, end).await?;
    // Token counts are uint64: strings, as grpc-gateway writes them.
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "bucketStart": timestamp(r.start),
                "modelId": r.model,
                "inputTokens": r.input_tokens.to_string(),
                "outputTokens": r.output_tokens.to_string(),
                "cachedTokens": r.cached_tokens.to_string(),
                "requestCount": r.requests.to_string(),
            })
        })
        .collect();
    Ok(Json(json!({"rows": rows})))
}

pub async fn pricing(State(state): State<ControlState>, _: SignedIn, params: Params) -> Result<Json<Value>, CpError> {
    pricing_list(&state, &params).await
}

/// `{"pricing": [...]}` for `model` / `activeOnly`; the admin route shares it.
pub async fn pricing_list(state: &ControlState, params: &Params) -> Result<Json<Value>, CpError> {
    let rows = state.control.list_pricing(params.str("model"), params.bool("activeOnly")?).await?;
    Ok(Json(json!({"pricing": rows.iter().map(price).collect::<Vec<_>>()})))
}

pub fn price(r: &PriceRow) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "model": r.model,
        "inputTokenPrice": money(r.input_per_mtok),
        "outputTokenPrice": money(r.output_per_mtok),
        "cachedTokenPrice": money(r.cached_per_mtok),
        "isActive": r.is_active != 0,
    })
}
