/// What can go wrong below the domain. Unique-key clashes are told apart because the
/// domain turns them into 409s (a duplicate email, say).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("already exists: {0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(db.message().to_owned()),
            _ => StoreError::Database(e),
        }
    }
}
