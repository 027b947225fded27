//! Money and time, as every other crate counts them.
//!
//! - [`Nanos`]: an amount of USD in integer nano-dollars (balances, holds, costs). Never a
//!   float: a float is only parsed from what people type (`--usd 2.5`).
//! - [`Price`]: nano-dollars per million tokens, and what a request costs, rounded once.
//! - [`UnixMs`]: a time as Unix milliseconds, and its RFC 3339 form.

mod nanos;
mod price;
mod unix_ms;

pub use nanos::{Nanos, NANOS_PER_USD};
pub use price::{Price, PRICE_UNIT_TOKENS};
pub use unix_ms::UnixMs;
