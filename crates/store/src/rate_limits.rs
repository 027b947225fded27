//! Per-user rate-limit overrides.

use sqlx::AnyPool;

use crate::StoreError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitOverride {
    pub requests_per_minute: Option<i64>,
    pub tokens_per_minute: Option<i64>,
}

pub struct RateLimits<'a>(pub(crate) &'a AnyPool);

impl RateLimits<'_> {
    pub async fn get(&self, user_id: &str) -> Result<LimitOverride, StoreError> {
        let row: Option<(Option<i64>, Option<i64>)> =
            sqlx::query_as("SELECT requests_per_minute, tokens_per_minute FROM rate_limits WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(self.0)
                .await?;
        Ok(row.map(|(r, t)| LimitOverride { requests_per_minute: r, tokens_per_minute: t }).unwrap_or_default())
    }

    pub async fn set(&self, user_id: &str, limits: LimitOverride) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO rate_limits (user_id, requests_per_minute, tokens_per_minute) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET requests_per_minute = excluded.requests_per_minute, \
             tokens_per_minute = excluded.tokens_per_minute",
        )
        .bind(user_id)
        .bind(limits.requests_per_minute)
        .bind(limits.tokens_per_minute)
        .execute(self.0)
        .await?;
        Ok(())
    }
}
