//! Control Plane wire types: grpc-gateway's JSON as the official SDK and CLI read it
//! (docs/contracts.md §W4, §W5): lowerCamelCase keys, enums by their proto names, 64-bit
//! integers as strings, RFC 3339 times, `google.type.Money`, and the envelope keys the SDK
//! insists on. Field order is the order on the wire.
//!
//! - [`accounts`]: users, API keys, the CLI sign-in bodies.
//! - [`billing`]: balances, transactions, spending, usage, prices, addresses.
//! - [`support`]: support tickets and their conversations.
//! - [`deployments`]: deployments and products.
//! - [`activity`], [`observability`]: the audit trail, metrics and logs.
//!
//! Here: money, the empty answer, and the serde helpers for times, int64 and enums.

use serde::{Deserialize, Serialize};
use tm_money::Nanos;
use utoipa::ToSchema;

pub mod accounts;
pub mod activity;
pub mod billing;
pub mod deployments;
pub mod observability;
pub mod support;

pub use accounts::*;
pub use activity::*;
pub use billing::*;
pub use deployments::*;
pub use observability::*;
pub use support::*;

/// `google.type.Money` in USD: `units` (a string: int64) and `nanos` share one sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Money {
    pub currency_code: String,
    #[serde(with = "int64")]
    #[schema(value_type = String, format = Int64)]
    pub units: i64,
    pub nanos: i64,
}

impl From<Nanos> for Money {
    fn from(amount: Nanos) -> Money {
        let (units, nanos) = amount.units_and_nanos();
        Money { currency_code: "USD".into(), units, nanos }
    }
}

/// grpc-gateway's error body (`google.rpc.Status`): the gRPC code, a message naming the
/// field at fault, and `details` (always empty here). Every Control Plane error has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RpcStatus {
    /// The gRPC status code (3 invalid argument, 5 not found, 16 unauthenticated, ...).
    pub code: i32,
    pub message: String,
    pub details: Vec<serde_json::Value>,
}

/// An enum by its proto name, or `fallback` for a name this version does not know.
pub fn enum_named<T: serde::de::DeserializeOwned>(name: &str, fallback: T) -> T {
    T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(name)).unwrap_or(fallback)
}

/// `{"empty": {}}`: what the routes that return nothing answer (an empty object would make
/// the SDK raise).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Empty {
    pub empty: EmptyObject,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EmptyObject {}

/// Times as RFC 3339 strings.
pub(crate) mod rfc3339 {
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

pub(crate) mod rfc3339_opt {
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
pub(crate) mod int64 {
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
    use tm_money::UnixMs;

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
