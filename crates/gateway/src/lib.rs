//! What every inference request goes through between authentication and the engine:
//!
//! - [`infer`]: validate, prepare, admit and launch: the one path every surface takes.
//! - [`limiter`]: requests and tokens per minute, per API key and per user;
//!   [`limits`]: kept in this process or in Redis, shared by the replicas.
//! - [`meter`]: the price check, the per-user concurrency cap and the hold for the
//!   worst-case cost.
//! - `metered`: [`Metered`], the generation that settles itself exactly once however it
//!   ends.
//! - [`settler`]: the background task that turns engine receipts into usage records and
//!   charges, in batches; a finished request's last bytes wait for its batch.
//! - [`journal`]: where settlements the database does not take wait, on disk, until it
//!   does (replayed at the next start when the process dies first).
//! - `wallet`: the money this process holds for each user's requests (leases).
//! - [`replica`]: this process among the replicas on one database: registration,
//!   heartbeat, and the sweep that voids a dead replica's holds.

mod error;
pub mod infer;
pub mod journal;
pub mod limiter;
pub mod limits;
mod meter;
mod metered;
pub mod replica;
mod settler;
mod wallet;

pub use error::GatewayError;
pub use infer::{Ask, Caller, Overrides};
pub use limiter::{Limits, RateLimiter, RateStatus};
pub use limits::{Outage, SharedLimits};
pub use meter::{Gateway, LimitSettings, Scopes};
pub use metered::Metered;
pub use replica::Replica;
pub use settler::Settler;
