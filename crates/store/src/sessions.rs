//! Signed-in CLI sessions: an access token and a refresh token (public id + digest each),
//! rotated together. Rotated-away refresh tokens are remembered to detect their reuse.

use sqlx::AnyPool;

use crate::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionRow {
    pub id: String,
    pub user_id: String,
    #[sqlx(flatten)]
    pub tokens: TokenPair,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// The session's current tokens (public ids, digests, expiry times).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TokenPair {
    pub access_id: String,
    pub access_digest: String,
    pub access_expires_at: i64,
    pub refresh_id: String,
    pub refresh_digest: String,
    pub refresh_expires_at: i64,
}

macro_rules! select_sessions {
    ($tail:literal) => {
        concat!(
            "SELECT id, user_id, access_id, access_digest, access_expires_at, refresh_id, refresh_digest, ",
            "refresh_expires_at, created_at, revoked_at FROM sessions ",
            $tail
        )
    };
}

pub struct Sessions<'a>(pub(crate) &'a AnyPool);

impl Sessions<'_> {
    pub async fn insert(&self, s: &SessionRow) -> Result<(), StoreError> {
        insert(self.0, s).await
    }

    pub async fn by_access_id(&self, access_id: &str) -> Result<Option<SessionRow>, StoreError> {
        Ok(sqlx::query_as(select_sessions!("WHERE access_id = $1")).bind(access_id).fetch_optional(self.0).await?)
    }

    pub async fn by_refresh_id(&self, refresh_id: &str) -> Result<Option<SessionRow>, StoreError> {
        Ok(sqlx::query_as(select_sessions!("WHERE refresh_id = $1")).bind(refresh_id).fetch_optional(self.0).await?)
    }

    /// A rotated-away refresh token: its digest and its session.
    pub async fn retired(&self, refresh_id: &str) -> Result<Option<(String, String)>, StoreError> {
        Ok(sqlx::query_as("SELECT digest, session_id FROM retired_refresh_tokens WHERE refresh_id = $1")
            .bind(refresh_id)
            .fetch_optional(self.0)
            .await?)
    }

    /// Replaces the session's tokens if its refresh token is still `old_refresh_id`, and
    /// retires that token, atomically. Returns false when a concurrent refresh won.
    pub async fn rotate(&self, s: &SessionRow, new: &TokenPair) -> Result<bool, StoreError> {
        let mut tx = self.0.begin().await?;
        let update = sqlx::query(
            "UPDATE sessions SET access_id = $1, access_digest = $2, access_expires_at = $3, refresh_id = $4, \
             refresh_digest = $5, refresh_expires_at = $6 WHERE id = $7 AND refresh_id = $8 AND revoked_at IS NULL",
        );
        let done = bind_tokens(update, new).bind(&s.id).bind(&s.tokens.refresh_id).execute(&mut *tx).await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("INSERT INTO retired_refresh_tokens (refresh_id, digest, session_id) VALUES ($1, $2, $3)")
            .bind(&s.tokens.refresh_id)
            .bind(&s.tokens.refresh_digest)
            .bind(&s.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Ends every session of the user (a password reset, a role change, a disabled user).
    pub async fn revoke_user(&self, user_id: &str, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
            .bind(user_id)
            .bind(now)
            .execute(self.0)
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn revoke(&self, session_id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
            .bind(session_id)
            .bind(now)
            .execute(self.0)
            .await?;
        Ok(())
    }
}

pub(crate) async fn insert<'e, E>(executor: E, s: &SessionRow) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let insert = sqlx::query(
        "INSERT INTO sessions (access_id, access_digest, access_expires_at, refresh_id, refresh_digest, \
         refresh_expires_at, id, user_id, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    );
    bind_tokens(insert, &s.tokens)
        .bind(&s.id)
        .bind(&s.user_id)
        .bind(s.created_at)
        .bind(s.revoked_at)
        .execute(executor)
        .await?;
    Ok(())
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds $1..$6: access id, digest, expiry, then the same for refresh.
fn bind_tokens<'q>(query: AnyQuery<'q>, t: &'q TokenPair) -> AnyQuery<'q> {
    query
        .bind(&t.access_id)
        .bind(&t.access_digest)
        .bind(t.access_expires_at)
        .bind(&t.refresh_id)
        .bind(&t.refresh_digest)
        .bind(t.refresh_expires_at)
}
