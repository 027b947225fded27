//! Persistence for the control plane: SQLite by default (a file in the data dir, WAL,
//! created and migrated on first open), PostgreSQL when given a `postgres://` URL. Both run
//! the same portable migrations through sqlx's `Any` driver, and every statement binds its
//! values (`$1`, ...), never formats them into SQL.
//!
//! Layout: one repository per aggregate, borrowed from [`Store`]:
//! - [`users`]: accounts, roles, profile.
//! - [`api_keys`]: inference keys (public id + digest only).
//! - [`sessions`]: CLI access/refresh token pairs and their rotation.
//! - [`cli_logins`]: pending browser-login requests.
//! - [`pricing`]: serverless prices per model.
//! - [`gpu_pricing`]: hourly GPU prices per cloud.
//! - [`ledger`]: prepaid accounts, credits, holds and exactly-once settlement.
//! - [`instances`]: the serving processes on this database, their heartbeats, and the
//!   sweep that voids a dead one's holds.
//! - [`usage`]: usage records read back for billing views.
//! - [`rate_limits`]: per-user rate-limit overrides.
//! - [`tickets`]: support tickets, their conversations, reserved-deployment requests.
//! - [`activities`]: the audit trail.
//! - [`addresses`]: billing addresses.
//! - [`products`]: the product catalogue.
//! - [`deployments`]: users' named handles on served models.
//!
//! [`notices`]: [`Store::notify`] and [`Store::notices`] carry notices between the
//! processes on one PostgreSQL database.

mod error;
pub mod notices;

pub mod activities;
pub mod addresses;
pub mod api_keys;
pub mod cli_logins;
pub mod deployments;
pub mod gpu_pricing;
pub mod instances;
pub mod ledger;
pub mod pricing;
pub mod products;
pub mod rate_limits;
pub mod sessions;
pub mod tickets;
pub mod usage;
pub mod users;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};

pub use error::StoreError;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a statement waits for a pooled connection (the database may be away).
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A connection pool to the one database of a deployment. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// Where money moves. For SQLite a single connection: writers queue here, in order,
    /// instead of sleeping in SQLite's busy handler. For PostgreSQL the main pool.
    ledger_writer: AnyPool,
    /// The database's URL when it is PostgreSQL: change notices listen on a connection of
    /// their own (see [`notices`]).
    postgres_url: Option<String>,
}

/// Without the URL, which may hold a password.
impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("postgres", &self.postgres_url.is_some()).finish_non_exhaustive()
    }
}

impl Store {
    /// Connects to `url` (`sqlite://PATH` or `postgres://...`), creating a SQLite file when
    /// missing, and applies pending migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url = if sqlite && !url.contains("mode=") {
            format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
        } else {
            url.to_owned()
        };
        let pool = Self::pool(8, sqlite).connect(&url).await?;
        MIGRATOR.run(&pool).await?;
        let ledger_writer = if sqlite { Self::pool(1, sqlite).connect(&url).await? } else { pool.clone() };
        let postgres_url = (!sqlite).then_some(url);
        Ok(Store { pool, ledger_writer, postgres_url })
    }

    fn pool(max_connections: u32, sqlite: bool) -> AnyPoolOptions {
        // A database that does not answer fails a request within seconds instead of holding
        // it for sqlx's default 30 s.
        let options = AnyPoolOptions::new().max_connections(max_connections).acquire_timeout(ACQUIRE_TIMEOUT);
        options.after_connect(move |conn, _| {
            Box::pin(async move {
                if sqlite {
                    // WAL: readers never block the writer; the mode is kept in the file.
                    // Foreign keys and a busy wait are per connection in SQLite.
                    // synchronous=NORMAL: a commit survives the process being killed
                    // (the WAL is written before COMMIT returns); only a power loss can
                    // take the last commits before a checkpoint. It saves an fsync per
                    // transaction, which the per-request hold and settlement need.
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                             PRAGMA busy_timeout = 5000",
                    )
                    .await?;
                }
                Ok(())
            })
        })
    }

    pub fn users(&self) -> users::Users<'_> {
        users::Users(&self.pool)
    }

    pub fn api_keys(&self) -> api_keys::ApiKeys<'_> {
        api_keys::ApiKeys(&self.pool)
    }

    pub fn sessions(&self) -> sessions::Sessions<'_> {
        sessions::Sessions(&self.pool)
    }

    pub fn cli_logins(&self) -> cli_logins::CliLogins<'_> {
        cli_logins::CliLogins(&self.pool)
    }

    pub fn pricing(&self) -> pricing::Pricing<'_> {
        pricing::Pricing(&self.pool)
    }

    pub fn deployments(&self) -> deployments::Deployments<'_> {
        deployments::Deployments(&self.pool)
    }

    pub fn gpu_pricing(&self) -> gpu_pricing::GpuPricing<'_> {
        gpu_pricing::GpuPricing(&self.pool)
    }

    pub fn ledger(&self) -> ledger::Ledger<'_> {
        ledger::Ledger { reader: &self.pool, writer: &self.ledger_writer }
    }

    pub fn instances(&self) -> instances::Instances<'_> {
        instances::Instances { writer: &self.ledger_writer }
    }

    pub fn usage(&self) -> usage::Usage<'_> {
        usage::Usage(&self.pool)
    }

    pub fn rate_limits(&self) -> rate_limits::RateLimits<'_> {
        rate_limits::RateLimits(&self.pool)
    }

    pub fn tickets(&self) -> tickets::Tickets<'_> {
        tickets::Tickets(&self.pool)
    }

    pub fn activities(&self) -> activities::Activities<'_> {
        activities::Activities(&self.pool)
    }

    pub fn addresses(&self) -> addresses::Addresses<'_> {
        addresses::Addresses(&self.pool)
    }

    pub fn products(&self) -> products::Products<'_> {
        products::Products(&self.pool)
    }

    /// One round trip to the database (readiness checks).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Waits for connections to finish and closes the pool (SQLite checkpoints its WAL).
    pub async fn close(&self) {
        self.ledger_writer.close().await;
        self.pool.close().await;
    }
}

#[cfg(test)]
mod ledger_tests;
#[cfg(test)]
mod tests;
