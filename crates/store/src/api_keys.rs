//! Inference API keys. A row holds the key's public id and a digest of the whole key,
//! never the key itself.

use sqlx::AnyPool;

use crate::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub public_id: String,
    pub digest: String,
    pub user_id: String,
    pub name: String,
    /// JSON array of strings.
    pub scopes: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub deleted_at: Option<i64>,
}

macro_rules! select_keys {
    ($tail:literal) => {
        concat!(
            "SELECT public_id, digest, user_id, name, scopes, created_at, expires_at, deleted_at FROM api_keys ",
            $tail
        )
    };
}

pub struct ApiKeys<'a>(pub(crate) &'a AnyPool);

impl ApiKeys<'_> {
    pub async fn insert(&self, k: &ApiKeyRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (public_id, digest, user_id, name, scopes, created_at, expires_at, deleted_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&k.public_id)
        .bind(&k.digest)
        .bind(&k.user_id)
        .bind(&k.name)
        .bind(&k.scopes)
        .bind(k.created_at)
        .bind(k.expires_at)
        .bind(k.deleted_at)
        .execute(self.0)
        .await?;
        Ok(())
    }

    pub async fn by_public_id(&self, public_id: &str) -> Result<Option<ApiKeyRow>, StoreError> {
        Ok(sqlx::query_as(select_keys!("WHERE public_id = $1")).bind(public_id).fetch_optional(self.0).await?)
    }

    /// A user's keys, oldest first; deleted ones only when asked for.
    pub async fn of_user(&self, user_id: &str, include_deleted: bool) -> Result<Vec<ApiKeyRow>, StoreError> {
        let rows: Vec<ApiKeyRow> = sqlx::query_as(select_keys!("WHERE user_id = $1 ORDER BY created_at, public_id"))
            .bind(user_id)
            .fetch_all(self.0)
            .await?;
        Ok(rows.into_iter().filter(|k| include_deleted || k.deleted_at.is_none()).collect())
    }

    /// Marks a user's key deleted (keeping the first deletion time). Returns whether the
    /// user has such a key, deleted before or not, so that a repeated DELETE succeeds.
    pub async fn delete(&self, user_id: &str, public_id: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_keys SET deleted_at = COALESCE(deleted_at, $3) WHERE user_id = $1 AND public_id = $2",
        )
        .bind(user_id)
        .bind(public_id)
        .bind(now)
        .execute(self.0)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
