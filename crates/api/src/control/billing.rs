//! Balances, transactions, spending, usage, serverless and GPU prices, addresses.

use serde::{Deserialize, Serialize};
use tm_money::UnixMs;
use utoipa::ToSchema;

use crate::control::{int64, rfc3339, Money};

/// What a GPU type costs per hour at a cloud provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuPrice {
    pub gpu_type: String,
    pub cloud_provider: String,
    pub hourly_rate: Money,
    pub is_active: bool,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: UnixMs,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: UnixMs,
}

/// `{"pricing": […]}`: GPU prices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GpuPrices {
    pub pricing: Vec<GpuPrice>,
}

/// `{"pricing": …}`: one GPU price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GpuPriceReply {
    pub pricing: GpuPrice,
}

/// A billing address (every field a string, empty when unset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    pub name: String,
    pub company: String,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub state: String,
    pub postal_code: String,
    pub country: String,
    pub phone: String,
}

/// `{"address": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AddressReply {
    pub address: Address,
}

/// `GET /v1/billing/balance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Balance {
    pub balance: Money,
    /// What is not held for requests in flight.
    pub available_balance: Money,
}

/// A page of billing transactions; an empty `nextPageToken` ends the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transactions {
    pub transactions: Vec<Transaction>,
    pub next_page_token: String,
}

/// A top-up, or one month's charges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transaction {
    pub transaction_id: String,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: UnixMs,
    pub amount: Money,
    pub description: String,
    pub status: TransactionStatus,
    #[serde(rename = "type")]
    pub transaction_type: TransactionType,
    /// For a charge: what each model cost (what `tm cost` reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<ChargeDetails>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum TransactionStatus {
    #[serde(rename = "TRANSACTION_STATUS_SUCCEEDED")]
    Succeeded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum TransactionType {
    #[serde(rename = "TRANSACTION_TYPE_TOP_UP")]
    TopUp,
    #[serde(rename = "TRANSACTION_TYPE_CHARGE")]
    Charge,
}

/// A charge's `details`: snake case inside, as the official `tm cost` reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChargeDetails {
    /// By model id, in the order the month's usage listed them.
    #[schema(value_type = std::collections::BTreeMap<String, ModelCharge>)]
    pub models: ModelCharges,
}

/// Model id to its charge, a JSON object whose key order is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelCharges(pub Vec<(String, ModelCharge)>);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ModelCharge {
    pub name: String,
    pub event_count: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    /// Exact decimal USD.
    pub total_amount: String,
}

impl Serialize for ModelCharges {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (model, charge) in &self.0 {
            map.serialize_entry(model, charge)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ModelCharges {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ModelCharges, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = ModelCharges;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of model charges")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ModelCharges, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(ModelCharges(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// Spend over the last 24 hours, 7 and 30 days.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Spending {
    #[serde(rename = "spend24h")]
    pub spend_24h: Money,
    #[serde(rename = "spend7d")]
    pub spend_7d: Money,
    #[serde(rename = "spend30d")]
    pub spend_30d: Money,
}

/// `GET /v1/billing/spending/history`: spend per day, with what the KV cache saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SpendingHistory {
    pub buckets: Vec<SpendingBucket>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpendingBucket {
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub bucket_start: UnixMs,
    pub amount: Money,
    pub cost_saving: Money,
}

/// `GET /v1/billing/serverless-usage/history`: tokens per bucket and model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageHistory {
    pub rows: Vec<UsageRow>,
}

/// Token counts are uint64: strings, as grpc-gateway writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageRow {
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub bucket_start: UnixMs,
    pub model_id: String,
    #[serde(with = "int64")]
    #[schema(value_type = String, format = Int64)]
    pub input_tokens: i64,
    #[serde(with = "int64")]
    #[schema(value_type = String, format = Int64)]
    pub output_tokens: i64,
    #[serde(with = "int64")]
    #[schema(value_type = String, format = Int64)]
    pub cached_tokens: i64,
    #[serde(with = "int64")]
    #[schema(value_type = String, format = Int64)]
    pub request_count: i64,
}

/// A serverless model's prices per million tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerlessPrice {
    pub id: String,
    pub name: String,
    pub model: String,
    pub input_token_price: Money,
    pub output_token_price: Money,
    pub cached_token_price: Money,
    pub is_active: bool,
}

/// `{"pricing": […]}`: serverless prices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServerlessPrices {
    pub pricing: Vec<ServerlessPrice>,
}

/// `{"pricing": …}`: one serverless price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServerlessPriceReply {
    pub pricing: ServerlessPrice,
}

/// `{"balance": …}` (an admin's top-up answers with the new balance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BalanceReply {
    pub balance: Money,
}

/// `POST /v1/admin/billing/balances`: each user's balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserBalances {
    pub balances: Vec<UserBalance>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserBalance {
    pub user_id: String,
    pub balance: Money,
}

/// `POST /v1/admin/billing/spending/summary`: each user's spending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserSpendings {
    pub summaries: Vec<UserSpending>,
}

/// A user's spending: the `Spending` fields, then `userId`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserSpending {
    #[serde(flatten)]
    pub spending: Spending,
    pub user_id: String,
}
