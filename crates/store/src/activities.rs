//! The audit trail: rows are inserted, read and never changed.

use sqlx::AnyPool;

use crate::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ActivityRow {
    pub id: String,
    /// Whose data the action touched: who may read this row.
    pub user_id: String,
    pub actor_type: String,
    pub actor_id: String,
    pub actor_display: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    pub description: String,
    /// JSON object.
    pub metadata: String,
    pub occurred_at: i64,
    pub recorded_at: i64,
}

/// Which activities a page lists; `None` matches all. Times are Unix ms, `[from, to)`.
#[derive(Debug, Clone, Default)]
pub struct ActivityFilter<'a> {
    pub user_id: Option<&'a str>,
    pub action: Option<&'a str>,
    pub resource_type: Option<&'a str>,
    pub resource_id: Option<&'a str>,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

macro_rules! select_activities {
    ($tail:literal) => {
        concat!(
            "SELECT id, user_id, actor_type, actor_id, actor_display, action, resource_type, resource_id, ",
            "description, metadata, occurred_at, recorded_at FROM activities ",
            $tail
        )
    };
}

macro_rules! matching {
    () => {
        "WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR action = $2) AND ($3 IS NULL OR resource_type = $3) \
         AND ($4 IS NULL OR resource_id = $4) AND ($5 IS NULL OR occurred_at >= $5) AND ($6 IS NULL OR occurred_at < $6) "
    };
}

pub struct Activities<'a>(pub(crate) &'a AnyPool);

impl Activities<'_> {
    pub async fn insert(&self, a: &ActivityRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO activities (id, user_id, actor_type, actor_id, actor_display, action, resource_type, \
             resource_id, description, metadata, occurred_at, recorded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&a.id)
        .bind(&a.user_id)
        .bind(&a.actor_type)
        .bind(&a.actor_id)
        .bind(&a.actor_display)
        .bind(&a.action)
        .bind(&a.resource_type)
        .bind(&a.resource_id)
        .bind(&a.description)
        .bind(&a.metadata)
        .bind(a.occurred_at)
        .bind(a.recorded_at)
        .execute(self.0)
        .await?;
        Ok(())
    }

    pub async fn by_id(&self, id: &str) -> Result<Option<ActivityRow>, StoreError> {
        Ok(sqlx::query_as(select_activities!("WHERE id = $1")).bind(id).fetch_optional(self.0).await?)
    }

    /// Newest first, `limit` rows from `offset`, with the number of matching rows.
    pub async fn page(
        &self,
        f: &ActivityFilter<'_>,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<ActivityRow>, i64), StoreError> {
        let rows = sqlx::query_as(concat!(
            select_activities!(""),
            matching!(),
            "ORDER BY occurred_at DESC, id DESC LIMIT $7 OFFSET $8"
        ))
        .bind(f.user_id)
        .bind(f.action)
        .bind(f.resource_type)
        .bind(f.resource_id)
        .bind(f.from)
        .bind(f.to)
        .bind(limit)
        .bind(offset)
        .fetch_all(self.0)
        .await?;
        let total = sqlx::query_scalar(concat!("SELECT COUNT(*) FROM activities ", matching!()))
            .bind(f.user_id)
            .bind(f.action)
            .bind(f.resource_type)
            .bind(f.resource_id)
            .bind(f.from)
            .bind(f.to)
            .fetch_one(self.0)
            .await?;
        Ok((rows, total))
    }
}
