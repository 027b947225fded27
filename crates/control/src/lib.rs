//! The control-plane domain, between the HTTP handlers (in `tm-server`) and the store.
//!
//! Layout:
//! - [`accounts`]: users, profiles, roles, operator commands, the first admin.
//! - [`login`]: the CLI browser login, access/refresh tokens and their rotation.
//! - [`keys`]: inference API keys and their (revocation-aware) cache.
//! - [`billing`]: balances, top-ups, billing addresses, the billing views; serverless and GPU
//!   prices in [`billing::pricing`] and [`billing::gpu`].
//! - [`support`]: tickets and reserved-deployment requests.
//! - [`activity`]: the audit trail every state-changing action writes to.
//! - [`products`]: the product catalogue.
//! - [`deployments`]: users' named handles on served models (the Control Plane's models).
//! - [`observability`]: a user's request metrics, from the usage records.
//! - [`secret`], [`password`]: how secrets are made, stored and checked.
//! - [`role`]: roles and the one place that decides whose data a request may touch.
//! - `changes`: what one replica changes that the others cache, sent as change notices
//!   ([`Control::apply_notice`]).
//!
//! [`Control`] holds the store, the clock and the caches; each aggregate is a small view over
//! it, reached by its noun (`control.keys().delete(…)`, `control.billing().balance(…)`), so
//! a method is found in the module its service is named after.

mod error;

pub mod accounts;
pub mod activity;
pub mod billing;
mod changes;
pub mod clock;
pub mod deployments;
pub mod keys;
pub mod login;
pub mod observability;
mod password;
pub mod products;
mod role;
pub mod secret;
pub mod support;
pub mod throttle;

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
    /// How long a session lives at most from its sign-in, however often it is refreshed.
    pub session_max_age: Duration,
    /// How long a `tm auth login` request waits for approval.
    pub login_ttl: Duration,
    /// How long a web console sign-in lasts (it is not refreshed: sign in again after).
    pub console_session_ttl: Duration,
    /// How long an API key check (and a model's active price) is reused before the store is
    /// asked again. Deletions take effect at once in this process, and in the others on a
    /// PostgreSQL database as their change notice arrives; this bounds how long another
    /// process may still accept a deleted key when notices do not arrive (SQLite).
    pub key_cache_ttl: Duration,
    /// Signed-in Control Plane requests per user per minute (0: no limit): one user's
    /// script cannot keep the database busy for everyone.
    pub requests_per_minute: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            access_token_ttl: Duration::from_secs(3600),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            session_max_age: Duration::from_secs(90 * 24 * 3600),
            login_ttl: Duration::from_secs(600),
            console_session_ttl: Duration::from_secs(12 * 3600),
            key_cache_ttl: Duration::from_secs(5),
            requests_per_minute: 600,
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
    price_cache: Arc<billing::pricing::PriceCache>,
    hasher: password::Hasher,
    throttle: Arc<throttle::Throttle>,
}

impl Control {
    pub fn new(store: Store, clock: Arc<dyn Clock>, settings: Settings) -> Control {
        Control {
            store,
            clock,
            settings,
            key_cache: Arc::default(),
            price_cache: Arc::default(),
            hasher: password::Hasher::default(),
            throttle: Arc::default(),
        }
    }

    /// Users and their profiles, roles and limits.
    pub fn accounts(&self) -> accounts::Accounts<'_> {
        accounts::Accounts { control: self }
    }

    /// The CLI browser login and its sessions.
    pub fn logins(&self) -> login::Logins<'_> {
        login::Logins { control: self }
    }

    /// Inference API keys.
    pub fn keys(&self) -> keys::Keys<'_> {
        keys::Keys { control: self }
    }

    /// Balances, top-ups, addresses, transactions, spending and usage history.
    pub fn billing(&self) -> billing::Billing<'_> {
        billing::Billing { control: self }
    }

    /// Serverless prices per model.
    pub fn pricing(&self) -> billing::pricing::Pricing<'_> {
        billing::pricing::Pricing { control: self }
    }

    /// GPU prices of reserved deployments.
    pub fn gpu_pricing(&self) -> billing::gpu::GpuPricing<'_> {
        billing::gpu::GpuPricing { control: self }
    }

    /// Tickets and reserved-deployment requests.
    pub fn support(&self) -> support::Support<'_> {
        support::Support { control: self }
    }

    /// The audit trail.
    pub fn activities(&self) -> activity::Activities<'_> {
        activity::Activities { control: self }
    }

    /// The product catalogue.
    pub fn products(&self) -> products::Products<'_> {
        products::Products { control: self }
    }

    /// Users' named handles on served models.
    pub fn deployments(&self) -> deployments::Deployments<'_> {
        deployments::Deployments { control: self }
    }

    /// Request metrics from the usage records.
    pub fn observability(&self) -> observability::Observability<'_> {
        observability::Observability { control: self }
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
