//! Reading usage records back: per-day totals (the grain every billing view is folded
//! from) and plain sums.

use sqlx::AnyPool;

use crate::ledger::UsageRow;
use crate::StoreError;

pub const DAY_MS: i64 = 86_400_000;

/// One model's usage on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DayTotals {
    /// Days since the Unix epoch.
    pub day: i64,
    pub model: String,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub cached_tokens: i64,
    pub completion_tokens: i64,
    pub cost_nanos: i64,
    pub cache_saving_nanos: i64,
    /// When the first request of that day finished (Unix ms).
    pub first_at: i64,
}

/// A user's requests that finished in one time step, over all models.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StepTotals {
    /// Steps since the start of the window.
    pub step: i64,
    pub requests: i64,
    /// Requests that ended without a finish reason (engine failures).
    pub errors: i64,
    pub prompt_tokens: i64,
    pub cached_tokens: i64,
    pub completion_tokens: i64,
    /// Sum of start-to-finish times, ms.
    pub latency_ms: i64,
}

/// Which requests a view counts: all when a field is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilter {
    pub model: Option<String>,
    /// The key's public id (or a pseudo key such as `control-plane:<user id>`).
    pub api_key_id: Option<String>,
}

pub struct Usage<'a>(pub(crate) &'a AnyPool);

impl Usage<'_> {
    /// Per (day, model) totals of the user's requests finished in `[from, to)` (Unix ms),
    /// oldest day first.
    pub async fn day_totals(&self, user_id: &str, from: i64, to: i64) -> Result<Vec<DayTotals>, StoreError> {
        self.day_totals_of(user_id, from, to, &UsageFilter::default()).await
    }

    /// [`Usage::day_totals`] of the requests `filter` keeps.
    pub async fn day_totals_of(
        &self,
        user_id: &str,
        from: i64,
        to: i64,
        filter: &UsageFilter,
    ) -> Result<Vec<DayTotals>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT finished_at / 86400000 AS day, model, COUNT(*) AS requests, \
             CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens, CAST(SUM(cached_tokens) AS BIGINT) AS cached_tokens, \
             CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens, CAST(SUM(cost_nanos) AS BIGINT) AS cost_nanos, \
             CAST(SUM(cache_saving_nanos) AS BIGINT) AS cache_saving_nanos, MIN(finished_at) AS first_at \
             FROM usage_records WHERE user_id = $1 AND finished_at >= $2 AND finished_at < $3 \
             AND ($4 IS NULL OR model = $4) AND ($5 IS NULL OR api_key_id = $5) \
             GROUP BY finished_at / 86400000, model ORDER BY day, model",
        )
        .bind(user_id)
        .bind(from)
        .bind(to)
        .bind(filter.model.as_deref())
        .bind(filter.api_key_id.as_deref())
        .fetch_all(self.0)
        .await?)
    }

    /// When each of the user's API keys (and pseudo keys) last finished a request (Unix ms).
    pub async fn last_used_by_key(&self, user_id: &str) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT api_key_id, MAX(finished_at) FROM usage_records WHERE user_id = $1 GROUP BY api_key_id",
        )
        .bind(user_id)
        .fetch_all(self.0)
        .await?)
    }

    /// Per-step totals of the user's requests (to `model` only, when given) finished in
    /// `[from, to)` (Unix ms), steps of `step_ms` from `from`; steps without requests are
    /// left out.
    pub async fn step_totals(
        &self,
        user_id: &str,
        model: Option<&str>,
        from: i64,
        to: i64,
        step_ms: i64,
    ) -> Result<Vec<StepTotals>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT (finished_at - $2) / $4 AS step, COUNT(*) AS requests, \
             CAST(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS BIGINT) AS errors, \
             CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens, CAST(SUM(cached_tokens) AS BIGINT) AS cached_tokens, \
             CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens, \
             CAST(SUM(finished_at - started_at) AS BIGINT) AS latency_ms \
             FROM usage_records WHERE user_id = $1 AND finished_at >= $2 AND finished_at < $3 \
             AND ($5 IS NULL OR model = $5) GROUP BY 1 ORDER BY 1",
        )
        .bind(user_id)
        .bind(from)
        .bind(to)
        .bind(step_ms)
        .bind(model)
        .fetch_all(self.0)
        .await?)
    }

    /// The user's spend on requests finished at or after `since` (Unix ms).
    pub async fn spend_since(&self, user_id: &str, since: i64) -> Result<i64, StoreError> {
        let sum: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(SUM(cost_nanos) AS BIGINT) FROM usage_records WHERE user_id = $1 AND finished_at >= $2",
        )
        .bind(user_id)
        .bind(since)
        .fetch_one(self.0)
        .await?;
        Ok(sum.unwrap_or(0))
    }

    /// Every usage record of a user, oldest first (audits and tests).
    pub async fn records(&self, user_id: &str) -> Result<Vec<UsageRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT request_id, user_id, api_key_id, model, prompt_tokens, cached_tokens, completion_tokens, \
             cost_nanos, cache_saving_nanos, status, started_at, finished_at, usage_source FROM usage_records \
             WHERE user_id = $1 ORDER BY finished_at, request_id",
        )
        .bind(user_id)
        .fetch_all(self.0)
        .await?)
    }

    pub async fn by_request(&self, request_id: &str) -> Result<Option<UsageRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT request_id, user_id, api_key_id, model, prompt_tokens, cached_tokens, completion_tokens, \
             cost_nanos, cache_saving_nanos, status, started_at, finished_at, usage_source FROM usage_records \
             WHERE request_id = $1",
        )
        .bind(request_id)
        .fetch_optional(self.0)
        .await?)
    }
}
