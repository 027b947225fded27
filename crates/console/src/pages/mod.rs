//! One module per console section. Handlers read through the typed `tm-control`
//! services as the signed-in person, and hand plain values to the templates.

pub mod admin;
pub mod billing;
pub mod keys;
pub mod overview;
pub mod playground;
pub mod support;
pub mod usage;

use tm_store::usage::DAY_MS;

/// `MM-DD` of a day since the epoch (the charts' x labels).
fn day_label(day: i64) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp(day * DAY_MS / 1000).map(|t| t.date()).ok();
    date.map(|d| format!("{:02}-{:02}", u8::from(d.month()), d.day())).unwrap_or_default()
}

/// A random token for forms that must not act twice (a top-up posted twice).
fn nonce() -> String {
    let mut bytes = [0u8; 16];
    let _ = getrandom::getrandom(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A form's optional text: `None` when empty or blank.
fn given(s: &str) -> Option<&str> {
    Some(s.trim()).filter(|s| !s.is_empty())
}
