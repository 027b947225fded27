//! The control-plane domain, between the HTTP handlers (in `tm-server`) and the store.
//!
//! Layout:
//! - [`accounts`]: users, profiles, roles, operator commands, the first admin.
//! - [`login`]: the CLI browser login, access/refresh tokens and their rotation.
//! - [`keys`]: inference API keys and their (revocation-aware) cache.
//! - [`billing`]: prices, balances, top-ups, billing addresses and the billing views.
//! - [`support`]: tickets and reserved-deployment requests.
//! - [`activity`]: the audit trail every state-changing action writes to.
//! - [`products`]: the product catalogue.
//! - [`deployments`]: users' named handles on served models (the Control Plane's models).
//! - [`observability`]: a user's request metrics, from the usage records.
//! - [`secret`], [`password`]: how secrets are made, stored and checked.
//! - [`role`]: roles and the one place that decides whose data a request may touch.

mod error;

pub mod accounts;
pub mod activity;
pub mod billing;
pub mod clock;
pub mod deployments;
pub mod keys;
pub mod login;
pub mod observability;
pub mod password;
pub mod products;
pub mod role;
pub mod secret;
pub mod support;

use std::sync::Arc;
use std::time::Duration;

pub use error::ControlError;
pub use role::{Principal, Role};
use tm_store::Store;

use crate::clock::Clock;

/// Lifetimes of what the control plane hands out.
#[derive(Debug, Clone)]
pub struct Settings {
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// How long a `tm auth login` request waits for approval.
    pub login_ttl: Duration,
    /// How long an API key check (and a model's active price) is reused before the store is asked again. Deletions
    /// through this process take effect at once; this bounds how long another server
    /// process sharing the database may still accept a deleted key.
    pub key_cache_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            access_token_ttl: Duration::from_secs(3600),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            login_ttl: Duration::from_secs(600),
            key_cache_ttl: Duration::from_secs(5),
        }
    }
}

/// The control plane's services over one store. Cheap to clone.
#[derive(Clone)]
pub struct Control {
    store: Store,
    clock: Arc<dyn Clock>,
    settings: Settings,
    key_cache: Arc<keys::KeyCache>,
    price_cache: Arc<billing::PriceCache>,
}

impl Control {
    pub fn new(store: Store, clock: Arc<dyn Clock>, settings: Settings) -> Control {
        Control { store, clock, settings, key_cache: Arc::default(), price_cache: Arc::default() }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The control plane's clock (Unix ms), which billing records use too.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
