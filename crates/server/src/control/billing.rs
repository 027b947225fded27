//! `/v1/billing/*`: balance, transactions, spending, usage history and prices, each for
//! the caller (or, for an admin, the user `userId` names).

use axum::extract::State;
use axum::Json;
use tm_api::control::{
    Balance, ChargeDetails, ModelCharge, ModelCharges, Money, ServerlessPrice, ServerlessPrices, Spending,
    SpendingBucket, SpendingHistory, Transaction, TransactionStatus, TransactionType, Transactions, UsageHistory,
    UsageRow,
};
use tm_control::billing::pricing::ModelPrice;
use tm_control::billing::{Bucket, TransactionKind};
use tm_money::{Nanos, UnixMs};

use super::error::CpError;
use super::extract::{Params, SignedIn};
use super::query::{ActiveOnly, ForUser, TimeRange};
use super::wire::{money, parse_timestamp};
use super::ControlState;

const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 500;

#[utoipa::path(get, path = "/v1/billing/balance", tag = "billing",
    params(ForUser),
    responses((status = 200, body = Balance)),
)]
pub async fn balance(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<Balance>, CpError> {
    let account = state.control.billing().balance(&me, params.str("userId")).await?;
    Ok(Json(Balance { balance: money(account.balance_nanos), available_balance: money(account.available_nanos()) }))
}

/// Token-paged: `pageToken` is the offset the previous page ended at.
#[utoipa::path(get, path = "/v1/billing/transactions", tag = "billing",
    params(ForUser, ("pageSize" = Option<i64>, Query, minimum = 1), ("pageToken" = Option<String>, Query)),
    responses((status = 200, body = Transactions)),
)]
pub async fn transactions(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<Transactions>, CpError> {
    let size = params.int("pageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)? as usize;
    let all = state.control.billing().transactions(&me, params.str("userId")).await?;
    // A token is the offset where the previous page ended: never past the end, as the list
    // only grows.
    let offset = match params.str("pageToken") {
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|&offset| offset <= all.len())
            .ok_or_else(|| CpError::invalid("pageToken", "is not a token this server issued"))?,
    };
    let transactions = all.iter().skip(offset).take(size).map(transaction).collect();
    let end = offset.saturating_add(size);
    let next_page_token = if end < all.len() { end.to_string() } else { String::new() };
    Ok(Json(Transactions { transactions, next_page_token }))
}

fn transaction(t: &tm_control::billing::Transaction) -> Transaction {
    let charge = t.kind == TransactionKind::Charge;
    Transaction {
        transaction_id: t.id.clone(),
        created_at: UnixMs(t.created_at),
        amount: money(t.amount_nanos),
        description: t.description.clone(),
        status: TransactionStatus::Succeeded,
        transaction_type: if charge { TransactionType::Charge } else { TransactionType::TopUp },
        details: charge.then(|| ChargeDetails {
            models: ModelCharges(
                t.models
                    .iter()
                    .map(|m| {
                        let charge = ModelCharge {
                            name: m.name.clone(),
                            event_count: m.events,
                            input_tokens: m.input_tokens,
                            output_tokens: m.output_tokens,
                            cached_tokens: m.cached_tokens,
                            total_amount: Nanos(m.total_nanos).usd_decimal(),
                        };
                        (m.model.clone(), charge)
                    })
                    .collect(),
            ),
        }),
    }
}

#[utoipa::path(get, path = "/v1/billing/spending/summary", tag = "billing",
    params(ForUser),
    responses((status = 200, body = Spending)),
)]
pub async fn spending_summary(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<Spending>, CpError> {
    let s = state.control.billing().spending(&me, params.str("userId")).await?;
    Ok(Json(spending(&s)))
}

pub fn spending(s: &tm_control::billing::Spending) -> Spending {
    Spending { spend_24h: money(s.last_24h), spend_7d: money(s.last_7d), spend_30d: money(s.last_30d) }
}

#[utoipa::path(get, path = "/v1/billing/spending/history", tag = "billing",
    params(ForUser),
    responses((status = 200, body = SpendingHistory)),
)]
pub async fn spending_history(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<SpendingHistory>, CpError> {
    let buckets = state.control.billing().spending_history(&me, params.str("userId")).await?;
    let buckets = buckets
        .iter()
        .map(|b| SpendingBucket {
            bucket_start: UnixMs(b.start),
            amount: money(b.amount_nanos),
            cost_saving: money(b.cost_saving_nanos),
        })
        .collect();
    Ok(Json(SpendingHistory { buckets }))
}

#[utoipa::path(get, path = "/v1/billing/serverless-usage/history", tag = "billing",
    params(
        ForUser,
        TimeRange,
        ("bucket" = Option<String>, Query, description = "`USAGE_BUCKET_DAY` (default), `USAGE_BUCKET_WEEK` or `USAGE_BUCKET_MONTH`"),
    ),
    responses((status = 200, body = UsageHistory)),
)]
pub async fn usage_history(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<UsageHistory>, CpError> {
    let bucket = match params.str("bucket") {
        None => Bucket::Day,
        Some(b) => Bucket::parse(b).ok_or_else(|| {
            CpError::invalid("bucket", "must be USAGE_BUCKET_DAY, USAGE_BUCKET_WEEK or USAGE_BUCKET_MONTH")
        })?,
    };
    let start = params.str("startTime").map(|s| parse_timestamp("startTime", s)).transpose()?;
    let end = params.str("endTime").map(|s| parse_timestamp("endTime", s)).transpose()?;
    let rows = state.control.billing().usage_history(&me, params.str("userId"), bucket, start, end).await?;
    let rows = rows
        .iter()
        .map(|r| UsageRow {
            bucket_start: UnixMs(r.start),
            model_id: r.model.clone(),
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cached_tokens: r.cached_tokens,
            request_count: r.requests,
        })
        .collect();
    Ok(Json(UsageHistory { rows }))
}

#[utoipa::path(get, path = "/v1/billing/serverless-pricing", tag = "billing",
    params(("model" = Option<String>, Query), ActiveOnly),
    responses((status = 200, body = ServerlessPrices)),
)]
pub async fn pricing(
    State(state): State<ControlState>,
    _: SignedIn,
    params: Params,
) -> Result<Json<ServerlessPrices>, CpError> {
    pricing_list(&state, &params).await
}

/// `{"pricing": [...]}` for `model` / `activeOnly`; the admin route shares it.
pub async fn pricing_list(state: &ControlState, params: &Params) -> Result<Json<ServerlessPrices>, CpError> {
    let rows = state.control.pricing().list(params.str("model"), params.bool("activeOnly")?).await?;
    Ok(Json(ServerlessPrices { pricing: rows.iter().map(price).collect() }))
}

pub fn price(p: &ModelPrice) -> ServerlessPrice {
    ServerlessPrice {
        id: p.id.clone(),
        name: p.name.clone(),
        model: p.model.clone(),
        input_token_price: Money::from(p.price.input),
        output_token_price: Money::from(p.price.output),
        cached_token_price: Money::from(p.price.cached),
        is_active: p.is_active,
    }
}
