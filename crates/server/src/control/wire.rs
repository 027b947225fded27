//! Control Plane JSON as grpc-gateway writes it: lowerCamelCase keys, enum names, int64
//! as strings, RFC 3339 times, and the envelope keys the SDK insists on.

use serde_json::Value;
use tm_api::control::{ApiKey, Money, User, UserRole};
use tm_control::Role;
use tm_money::{Nanos, UnixMs, NANOS_PER_USD};

use super::error::CpError;

/// RFC 3339 (a naive time is read as UTC, as the CLI does) to Unix milliseconds.
pub fn parse_timestamp(field: &'static str, s: &str) -> Result<i64, CpError> {
    UnixMs::parse_rfc3339(s)
        .map(UnixMs::get)
        .ok_or_else(|| CpError::invalid(field, format!("{:?} is not an RFC 3339 time", s.trim())))
}

pub fn user(u: &tm_control::accounts::User) -> User {
    User {
        id: u.id.clone(),
        user_email: u.email.clone(),
        first_name: u.first_name.clone(),
        last_name: u.last_name.clone(),
        display_name: u.display_name.clone(),
        company: u.company.clone(),
        user_role: user_role(u.role),
        tos_accepted_at: u.tos_accepted_at,
        created_at: u.created_at,
        updated_at: u.updated_at,
    }
}

pub fn user_role(role: Role) -> UserRole {
    match role {
        Role::User => UserRole::User,
        Role::Admin => UserRole::Admin,
        Role::SuperAdmin => UserRole::SuperAdmin,
    }
}

/// `id` is the key's public id; only the create response puts the whole key there.
pub fn api_key(k: &tm_control::keys::ApiKey, id: &str) -> ApiKey {
    ApiKey {
        id: id.to_owned(),
        name: k.name.clone(),
        scopes: k.scopes.clone(),
        created_at: k.created_at,
        expires_at: k.expires_at,
        deleted_at: k.deleted_at,
    }
}

/// Nano-USD as `google.type.Money` (units and nanos carry the same sign).
pub fn money(nanos: i64) -> Money {
    Money::from(Nanos(nanos))
}

/// A request's amount: a Money object (`units` string or number, `nanos`, `currencyCode`
/// USD or absent) or a bare number of USD, as the CLI sends `--amount 5`.
pub fn parse_money(field: &'static str, value: &Value) -> Result<i64, CpError> {
    let bad = |why: &str| CpError::invalid(field, why.to_owned());
    match value {
        Value::Number(n) => {
            n.as_f64().and_then(Nanos::from_usd).map(Nanos::get).ok_or_else(|| bad("must be an amount of USD"))
        }
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(Nanos::from_usd)
            .map(Nanos::get)
            .ok_or_else(|| bad("must be an amount of USD")),
        Value::Object(m) => {
            if let Some(code) = m.get("currencyCode").and_then(Value::as_str).filter(|c| !c.is_empty()) {
                if !code.eq_ignore_ascii_case("USD") {
                    return Err(bad("only USD is supported"));
                }
            }
            let units = match m.get("units") {
                None | Some(Value::Null) => 0,
                Some(Value::Number(n)) => n.as_i64().ok_or_else(|| bad("`units` must be a whole number"))?,
                Some(Value::String(s)) => s.trim().parse::<i64>().map_err(|_| bad("`units` must be a whole number"))?,
                Some(_) => return Err(bad("`units` must be a whole number")),
            };
            let nanos = match m.get("nanos") {
                None | Some(Value::Null) => 0,
                Some(v) => v
                    .as_i64()
                    .filter(|n| n.abs() < NANOS_PER_USD)
                    .ok_or_else(|| bad("`nanos` must be a whole number below 1e9"))?,
            };
            Nanos::from_units_and_nanos(units, nanos).map(Nanos::get).ok_or_else(|| bad("is out of range"))
        }
        _ => Err(bad("must be a Money object or a number")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn money_round_trips_and_bare_numbers_are_usd() {
        let money = |n| serde_json::to_value(money(n)).unwrap();
        assert_eq!(money(12_500_000_000), json!({"currencyCode": "USD", "units": "12", "nanos": 500_000_000}));
        assert_eq!(money(-1_500_000_000)["nanos"], json!(-500_000_000));
        assert_eq!(parse_money("amount", &json!(5.0)).ok(), Some(5_000_000_000));
        assert_eq!(parse_money("amount", &json!({"units": "5", "nanos": 1})).ok(), Some(5_000_000_001));
        assert_eq!(parse_money("amount", &json!({"units": 2, "currencyCode": "USD"})).ok(), Some(2_000_000_000));
        assert!(parse_money("amount", &json!({"units": "5", "currencyCode": "EUR"})).is_err());
        assert!(parse_money("amount", &json!(true)).is_err());
        assert!(parse_money("amount", &json!(f64::MAX)).is_err());
    }

    #[test]
    fn timestamps_round_trip_and_accept_naive_times() {
        assert_eq!(UnixMs(1_700_000_000_000).rfc3339(), "2023-11-14T22:13:20Z");
        assert_eq!(parse_timestamp("t", "2023-11-14T22:13:20Z").ok(), Some(1_700_000_000_000));
        assert_eq!(parse_timestamp("t", "2023-11-14T22:13:20").ok(), Some(1_700_000_000_000));
        assert!(parse_timestamp("t", "tomorrow").is_err());
    }
}
