//! Control Plane JSON as grpc-gateway writes it: lowerCamelCase keys, enum names, int64
//! as strings, RFC 3339 times, and the envelope keys the SDK insists on.

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tm_store::api_keys::ApiKeyRow;
use tm_store::users::UserRow;

use super::error::CpError;

/// Unix milliseconds as RFC 3339 UTC.
pub fn timestamp(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// RFC 3339 (a naive time is read as UTC, as the CLI does) to Unix milliseconds.
pub fn parse_timestamp(field: &'static str, s: &str) -> Result<i64, CpError> {
    let s = s.trim();
    let parsed = OffsetDateTime::parse(s, &Rfc3339).or_else(|_| OffsetDateTime::parse(&format!("{s}Z"), &Rfc3339));
    parsed
        .map(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX))
        .map_err(|_| CpError::invalid(field, format!("{s:?} is not an RFC 3339 time")))
}

pub fn user(u: &UserRow) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(u.id));
    out.insert("userEmail".into(), json!(u.email));
    out.insert("firstName".into(), json!(u.first_name));
    out.insert("lastName".into(), json!(u.last_name));
    out.insert("displayName".into(), json!(u.display_name));
    out.insert("company".into(), json!(u.company));
    out.insert("userRole".into(), json!(u.role));
    if let Some(t) = u.tos_accepted_at {
        out.insert("tosAcceptedAt".into(), json!(timestamp(t)));
    }
    out.insert("createdAt".into(), json!(timestamp(u.created_at)));
    out.insert("updatedAt".into(), json!(timestamp(u.updated_at)));
    Value::Object(out)
}

/// `id` is the key's public id; only the create response puts the whole key there.
pub fn api_key(k: &ApiKeyRow, id: &str) -> Value {
    let scopes: Value = serde_json::from_str(&k.scopes).unwrap_or_else(|_| json!([]));
    let mut out = Map::new();
    out.insert("id".into(), json!(id));
    out.insert("name".into(), json!(k.name));
    out.insert("scopes".into(), scopes);
    out.insert("createdAt".into(), json!(timestamp(k.created_at)));
    if let Some(t) = k.expires_at {
        out.insert("expiresAt".into(), json!(timestamp(t)));
    }
    if let Some(t) = k.deleted_at {
        out.insert("deletedAt".into(), json!(timestamp(t)));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_and_accept_naive_times() {
        assert_eq!(timestamp(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(parse_timestamp("t", "2023-11-14T22:13:20Z").ok(), Some(1_700_000_000_000));
        assert_eq!(parse_timestamp("t", "2023-11-14T22:13:20").ok(), Some(1_700_000_000_000));
        assert!(parse_timestamp("t", "tomorrow").is_err());
    }
}
