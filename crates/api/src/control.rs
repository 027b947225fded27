//! Control Plane wire types: grpc-gateway's JSON as the official SDK and CLI read it
//! (docs/contracts.md §W4, §W5): lowerCamelCase keys, enums by their proto names, 64-bit
//! integers as strings, RFC 3339 times, `google.type.Money`, and the envelope keys the SDK
//! insists on. Field order is the order on the wire.

use serde::{Deserialize, Serialize};
use tm_money::{Nanos, UnixMs};

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub user_email: String,
    pub first_name: String,
    pub last_name: String,
    pub display_name: String,
    pub company: String,
    pub user_role: UserRole,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339_opt")]
    pub tos_accepted_at: Option<UnixMs>,
    #[serde(with = "rfc3339")]
    pub created_at: UnixMs,
    #[serde(with = "rfc3339")]
    pub updated_at: UnixMs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserRole {
    #[serde(rename = "USER_ROLE_UNSPECIFIED")]
    Unspecified,
    #[serde(rename = "USER_ROLE_USER")]
    User,
    #[serde(rename = "USER_ROLE_ADMIN")]
    Admin,
    #[serde(rename = "USER_ROLE_SUPER_ADMIN")]
    SuperAdmin,
}

/// An API key. `id` is its public id, except in the create response, the only place the
/// whole key is ever shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    #[serde(with = "rfc3339")]
    pub created_at: UnixMs,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339_opt")]
    pub expires_at: Option<UnixMs>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339_opt")]
    pub deleted_at: Option<UnixMs>,
}

/// `google.type.Money` in USD: `units` (a string: int64) and `nanos` share one sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Money {
    pub currency_code: String,
    #[serde(with = "int64")]
    pub units: i64,
    pub nanos: i64,
}

impl From<Nanos> for Money {
    fn from(amount: Nanos) -> Money {
        let (units, nanos) = amount.units_and_nanos();
        Money { currency_code: "USD".into(), units, nanos }
    }
}

/// `{"user": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserReply {
    pub user: User,
}

/// `GET /v1/admin/users`: a page of users; `total` is an int64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersPage {
    pub users: Vec<User>,
    pub page: i64,
    pub size: i64,
    #[serde(with = "int64")]
    pub total: i64,
}

/// `{"apiKeys": […]}`, the list present even when empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeys {
    pub api_keys: Vec<ApiKey>,
}

/// `{"apiKey": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyReply {
    pub api_key: ApiKey,
}

/// An entry of the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    pub activity_id: String,
    pub actor_type: ActorType,
    pub actor_id: String,
    pub actor_display: String,
    /// Whose data the action touched.
    pub user_id: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    pub description: String,
    /// A JSON object, as the action recorded it.
    pub metadata: serde_json::Value,
    #[serde(with = "rfc3339")]
    pub occurred_at: UnixMs,
    #[serde(with = "rfc3339")]
    pub recorded_at: UnixMs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActorType {
    #[serde(rename = "ACTOR_TYPE_UNSPECIFIED")]
    Unspecified,
    /// A signed-in user or admin, through the API.
    #[serde(rename = "ACTOR_TYPE_USER")]
    User,
    /// An operator at the server's command line.
    #[serde(rename = "ACTOR_TYPE_SYSTEM")]
    System,
}

/// `GET /v1/activities`: a page of the trail; `total` is an int64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivitiesPage {
    pub activities: Vec<Activity>,
    #[serde(with = "int64")]
    pub total: i64,
    pub page: i64,
    pub size: i64,
}

/// `{"activity": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityReply {
    pub activity: Activity,
}

/// A product (a GPU offering).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub id: String,
    pub name: String,
    /// A plain number on the wire, as the official clients send and read it.
    pub required_gpu_num: i64,
    pub family: String,
    pub is_active: bool,
    /// A JSON object.
    pub spec: serde_json::Value,
    #[serde(with = "rfc3339")]
    pub created_at: UnixMs,
    #[serde(with = "rfc3339")]
    pub updated_at: UnixMs,
}

/// `{"products": […]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Products {
    pub products: Vec<Product>,
}

/// `{"product": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductReply {
    pub product: Product,
}

/// `{"deleted": true}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub deleted: bool,
}

/// A support ticket and its conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    pub ticket_id: String,
    pub subject: String,
    pub requester_user_id: String,
    pub status: TicketStatus,
    #[serde(rename = "type")]
    pub ticket_type: TicketType,
    pub conversations: Vec<ConversationMessage>,
    #[serde(with = "rfc3339")]
    pub created_at: UnixMs,
    #[serde(with = "rfc3339")]
    pub updated_at: UnixMs,
}

/// One message of a ticket, with its author as they were when they wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationMessage {
    pub user_id: String,
    pub user_name: String,
    pub user_role: UserRole,
    pub content: String,
    #[serde(with = "rfc3339")]
    pub created_at: UnixMs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TicketStatus {
    #[serde(rename = "TICKET_STATUS_UNSPECIFIED")]
    Unspecified,
    #[serde(rename = "TICKET_STATUS_OPEN")]
    Open,
    #[serde(rename = "TICKET_STATUS_CLOSED")]
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TicketType {
    #[serde(rename = "TICKET_TYPE_UNSPECIFIED")]
    Unspecified,
    #[serde(rename = "TICKET_TYPE_GENERAL")]
    General,
    #[serde(rename = "TICKET_TYPE_TECHNICAL")]
    Technical,
    #[serde(rename = "TICKET_TYPE_BILLING")]
    Billing,
    #[serde(rename = "TICKET_TYPE_ACCOUNT")]
    Account,
    #[serde(rename = "TICKET_TYPE_FEATURE_REQUEST")]
    FeatureRequest,
    #[serde(rename = "TICKET_TYPE_RESERVED_DEPLOYMENT")]
    ReservedDeployment,
}

/// `GET /v1/support/tickets`: a page of tickets; `total` is an int64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketsPage {
    pub tickets: Vec<Ticket>,
    pub page: i64,
    pub size: i64,
    #[serde(with = "int64")]
    pub total: i64,
}

/// `{"ticket": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketReply {
    pub ticket: Ticket,
}

/// An enum by its proto name, or `fallback` for a name this version does not know.
pub fn enum_named<T: serde::de::DeserializeOwned>(name: &str, fallback: T) -> T {
    T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(name)).unwrap_or(fallback)
}

/// What a GPU type costs per hour at a cloud provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuPrice {
    pub gpu_type: String,
    pub cloud_provider: String,
    pub hourly_rate: Money,
    pub is_active: bool,
    #[serde(with = "rfc3339")]
    pub created_at: UnixMs,
    #[serde(with = "rfc3339")]
    pub updated_at: UnixMs,
}

/// `{"pricing": […]}`: GPU prices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuPrices {
    pub pricing: Vec<GpuPrice>,
}

/// `{"pricing": …}`: one GPU price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuPriceReply {
    pub pricing: GpuPrice,
}

/// A billing address (every field a string, empty when unset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressReply {
    pub address: Address,
}

/// `GET /v1/billing/balance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Balance {
    pub balance: Money,
    /// What is not held for requests in flight.
    pub available_balance: Money,
}

/// A page of billing transactions; an empty `nextPageToken` ends the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transactions {
    pub transactions: Vec<Transaction>,
    pub next_page_token: String,
}

/// A top-up, or one month's charges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transaction {
    pub transaction_id: String,
    #[serde(with = "rfc3339")]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransactionStatus {
    #[serde(rename = "TRANSACTION_STATUS_SUCCEEDED")]
    Succeeded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransactionType {
    #[serde(rename = "TRANSACTION_TYPE_TOP_UP")]
    TopUp,
    #[serde(rename = "TRANSACTION_TYPE_CHARGE")]
    Charge,
}

/// A charge's `details`: snake case inside, as the official `tm cost` reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeDetails {
    /// By model id, in the order the month's usage listed them.
    pub models: ModelCharges,
}

/// Model id to its charge, a JSON object whose key order is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelCharges(pub Vec<(String, ModelCharge)>);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spending {
    #[serde(rename = "spend24h")]
    pub spend_24h: Money,
    #[serde(rename = "spend7d")]
    pub spend_7d: Money,
    #[serde(rename = "spend30d")]
    pub spend_30d: Money,
}

/// `GET /v1/billing/spending/history`: spend per day, with what the KV cache saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendingHistory {
    pub buckets: Vec<SpendingBucket>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpendingBucket {
    #[serde(with = "rfc3339")]
    pub bucket_start: UnixMs,
    pub amount: Money,
    pub cost_saving: Money,
}

/// `GET /v1/billing/serverless-usage/history`: tokens per bucket and model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageHistory {
    pub rows: Vec<UsageRow>,
}

/// Token counts are uint64: strings, as grpc-gateway writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRow {
    #[serde(with = "rfc3339")]
    pub bucket_start: UnixMs,
    pub model_id: String,
    #[serde(with = "int64")]
    pub input_tokens: i64,
    #[serde(with = "int64")]
    pub output_tokens: i64,
    #[serde(with = "int64")]
    pub cached_tokens: i64,
    #[serde(with = "int64")]
    pub request_count: i64,
}

/// A serverless model's prices per million tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerlessPrices {
    pub pricing: Vec<ServerlessPrice>,
}

/// `{"pricing": …}`: one serverless price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerlessPriceReply {
    pub pricing: ServerlessPrice,
}

/// `{"balance": …}` (an admin's top-up answers with the new balance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceReply {
    pub balance: Money,
}

/// `POST /v1/admin/billing/balances`: each user's balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserBalances {
    pub balances: Vec<UserBalance>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserBalance {
    pub user_id: String,
    pub balance: Money,
}

/// `POST /v1/admin/billing/spending/summary`: each user's spending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSpendings {
    pub summaries: Vec<UserSpending>,
}

/// A user's spending: the `Spending` fields, then `userId`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserSpending {
    #[serde(flatten)]
    pub spending: Spending,
    pub user_id: String,
}

/// A deployment: a user's named handle on a model this installation serves (what the
/// Control Plane calls a "model").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub model_id: String,
    pub deployment_id: String,
    pub user_id: String,
    pub description: String,
    pub model_path: String,
    pub model_name: String,
    pub status: ModelStatus,
    pub events: Vec<serde_json::Value>,
    #[serde(with = "rfc3339")]
    pub created_at: UnixMs,
    #[serde(with = "rfc3339")]
    pub updated_at: UnixMs,
    /// JSON objects, as the owner gave them.
    pub model_spec: serde_json::Value,
    pub infra: serde_json::Value,
    pub gpu_count: i64,
    pub gpu_type: String,
    pub replicas: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelStatus {
    /// Served and healthy.
    #[serde(rename = "MODEL_STATUS_UP")]
    Up,
    #[serde(rename = "MODEL_STATUS_DOWN")]
    Down,
    #[serde(rename = "MODEL_STATUS_DELETED")]
    Deleted,
}

/// `{"models": […]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployments {
    pub models: Vec<Deployment>,
}

/// `GET /v1/admin/models`: a page; `total` is an int64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentsPage {
    pub models: Vec<Deployment>,
    pub page: i64,
    pub size: i64,
    #[serde(with = "int64")]
    pub total: i64,
}

/// `{"model": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentReply {
    pub model: Deployment,
}

/// `POST /v1/models:validate`: whether the name is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Validity {
    pub is_valid: bool,
}

/// `POST /v1/models/check`: memory the deployment's model needs, in GiB.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryCheck {
    pub required_gpu_memory_gib: f64,
    pub required_lm_cache_memory_gib: f64,
}

/// `POST /v1/models/{id}:chat`: the answer's text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatReply {
    pub response: String,
}

/// `{"metrics": […]}`: time series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub metrics: Vec<MetricSeries>,
}

/// One named series, a point per step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSeries {
    pub name: String,
    pub data: Vec<MetricPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    #[serde(with = "rfc3339")]
    pub timestamp: UnixMs,
    pub value: f64,
}

/// `{"logs": […]}`: a deployment's log lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logs {
    pub logs: Vec<LogLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    #[serde(with = "rfc3339")]
    pub timestamp: UnixMs,
    pub message: String,
}

/// `POST /auth/cli/start` (snake case, like every `/auth/cli/*` body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CliLoginStarted {
    /// Where the person signs in and approves.
    pub auth_url: String,
    /// What the CLI polls `/auth/cli/exchange` with.
    pub cli_code: String,
    /// Seconds between polls.
    pub interval: u64,
    pub expires_in: u64,
}

/// `POST /auth/cli/exchange` while the person has not answered (HTTP 202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CliLoginPending {
    /// `authorization_pending`.
    pub status: String,
}

/// The tokens of a granted sign-in or a refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CliTokens {
    pub access_token: String,
    pub refresh_token: String,
    /// `Bearer`.
    pub token_type: String,
    pub expires_in: i64,
}

/// An OAuth-style error of the `/auth/cli/*` routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthError {
    pub error: String,
    pub error_description: String,
}

/// `{"empty": {}}`: what the routes that return nothing answer (an empty object would make
/// the SDK raise).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {
    pub empty: EmptyObject,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyObject {}

/// Times as RFC 3339 strings.
mod rfc3339 {
    use serde::{de, Deserialize, Deserializer, Serializer};
    use tm_money::UnixMs;

    pub fn serialize<S: Serializer>(t: &UnixMs, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.rfc3339())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<UnixMs, D::Error> {
        let s = String::deserialize(d)?;
        UnixMs::parse_rfc3339(&s).ok_or_else(|| de::Error::custom(format!("{s:?} is not an RFC 3339 time")))
    }
}

mod rfc3339_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use tm_money::UnixMs;

    pub fn serialize<S: Serializer>(t: &Option<UnixMs>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::rfc3339::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<UnixMs>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::rfc3339")] UnixMs);
        Ok(Option::<Wrap>::deserialize(d)?.map(|Wrap(t)| t))
    }
}

/// 64-bit integers as JSON strings; plain numbers are read too (the clients accept both).
mod int64 {
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(n: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&n.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Number(i64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Number(n) => Ok(n),
            Either::Text(s) => s.trim().parse().map_err(|_| de::Error::custom(format!("{s:?} is not an int64"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn user() -> User {
        User {
            id: "u1".into(),
            user_email: "ann@example.com".into(),
            first_name: "Ann".into(),
            last_name: String::new(),
            display_name: String::new(),
            company: String::new(),
            user_role: UserRole::Admin,
            tos_accepted_at: None,
            created_at: UnixMs(1_700_000_000_000),
            updated_at: UnixMs(1_700_000_000_500),
        }
    }

    #[test]
    fn a_user_is_written_as_grpc_gateway_writes_it() {
        let text = serde_json::to_string(&UserReply { user: user() }).unwrap();
        assert_eq!(
            text,
            r#"{"user":{"id":"u1","userEmail":"ann@example.com","firstName":"Ann","lastName":"","displayName":"","company":"","userRole":"USER_ROLE_ADMIN","createdAt":"2023-11-14T22:13:20Z","updatedAt":"2023-11-14T22:13:20.5Z"}}"#
        );
        let back: UserReply = serde_json::from_str(&text).unwrap();
        assert_eq!(back.user, user());
    }

    #[test]
    fn int64_money_and_empty() {
        let page = UsersPage { users: vec![], page: 1, size: 50, total: 7 };
        assert_eq!(serde_json::to_value(&page).unwrap(), json!({"users": [], "page": 1, "size": 50, "total": "7"}));
        let read: UsersPage = serde_json::from_value(json!({"users": [], "page": 1, "size": 50, "total": 7})).unwrap();
        assert_eq!(read.total, 7);
        let money = Money::from(Nanos(-1_500_000_000));
        assert_eq!(
            serde_json::to_value(&money).unwrap(),
            json!({"currencyCode": "USD", "units": "-1", "nanos": -500_000_000})
        );
        assert_eq!(serde_json::to_string(&Empty::default()).unwrap(), r#"{"empty":{}}"#);
    }

    #[test]
    fn model_charges_keep_their_order_both_ways() {
        let charge = |name: &str| ModelCharge {
            name: name.into(),
            event_count: 1,
            input_tokens: 2,
            output_tokens: 3,
            cached_tokens: 0,
            total_amount: "0.5".into(),
        };
        let details =
            ChargeDetails { models: ModelCharges(vec![("zeta".into(), charge("Z")), ("alpha".into(), charge("A"))]) };
        let text = serde_json::to_string(&details).unwrap();
        assert!(text.starts_with(r#"{"models":{"zeta":{"name":"Z","event_count":1,"#), "{text}");
        assert_eq!(serde_json::from_str::<ChargeDetails>(&text).unwrap(), details);
    }

    #[test]
    fn enums_are_read_by_their_proto_names() {
        assert_eq!(enum_named("TICKET_TYPE_BILLING", TicketType::Unspecified), TicketType::Billing);
        assert_eq!(enum_named("USER_ROLE_SUPER_ADMIN", UserRole::Unspecified), UserRole::SuperAdmin);
        assert_eq!(enum_named("TICKET_STATUS_LOST", TicketStatus::Unspecified), TicketStatus::Unspecified);
    }

    #[test]
    fn optional_times_are_left_out_when_unset() {
        let key = ApiKey {
            id: "tm_sk_abc".into(),
            name: "laptop".into(),
            scopes: vec![],
            created_at: UnixMs(0),
            expires_at: Some(UnixMs(1_000)),
            deleted_at: None,
        };
        let v = serde_json::to_value(ApiKeys { api_keys: vec![key.clone()] }).unwrap();
        assert_eq!(
            v,
            json!({"apiKeys": [{"id": "tm_sk_abc", "name": "laptop", "scopes": [], "createdAt": "1970-01-01T00:00:00Z", "expiresAt": "1970-01-01T00:00:01Z"}]})
        );
        let back: ApiKeys = serde_json::from_value(v).unwrap();
        assert_eq!(back.api_keys, vec![key]);
    }
}
