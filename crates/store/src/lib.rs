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

mod error;

pub mod api_keys;
pub mod cli_logins;
pub mod sessions;
pub mod users;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};

pub use error::StoreError;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A connection pool to the one database of a deployment. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
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
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // WAL: readers never block the writer; the mode is kept in the file.
                        // Foreign keys and a busy wait are per connection in SQLite.
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Store { pool })
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

    /// Waits for connections to finish and closes the pool (SQLite checkpoints its WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests;
