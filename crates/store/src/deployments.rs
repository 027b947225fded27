//! Deployments: users' named handles on served models. Soft-deleted, names unique per user
//! among live ones (a partial unique index).

use sqlx::AnyPool;

use crate::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeploymentRow {
    pub id: String,
    pub user_id: String,
    pub model_name: String,
    pub model_path: String,
    pub description: String,
    /// JSON object.
    pub model_spec: String,
    /// JSON object.
    pub infra: String,
    pub gpu_count: i64,
    pub gpu_type: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
}

macro_rules! select_deployments {
    ($tail:literal) => {
        concat!(
            "SELECT id, user_id, model_name, model_path, description, model_spec, infra, gpu_count, gpu_type, ",
            "created_at, updated_at, deleted_at FROM deployments ",
            $tail
        )
    };
}

pub struct Deployments<'a>(pub(crate) &'a AnyPool);

impl Deployments<'_> {
    /// Fails with [`StoreError::Conflict`] when the user has a live deployment of that name.
    pub async fn insert(&self, d: &DeploymentRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO deployments (id, user_id, model_name, model_path, description, model_spec, infra, gpu_count, \
             gpu_type, created_at, updated_at, deleted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&d.id)
        .bind(&d.user_id)
        .bind(&d.model_name)
        .bind(&d.model_path)
        .bind(&d.description)
        .bind(&d.model_spec)
        .bind(&d.infra)
        .bind(d.gpu_count)
        .bind(&d.gpu_type)
        .bind(d.created_at)
        .bind(d.updated_at)
        .bind(d.deleted_at)
        .execute(self.0)
        .await?;
        Ok(())
    }

    pub async fn by_id(&self, id: &str) -> Result<Option<DeploymentRow>, StoreError> {
        Ok(sqlx::query_as(select_deployments!("WHERE id = $1")).bind(id).fetch_optional(self.0).await?)
    }

    /// The user's live deployment called `name`.
    pub async fn by_name(&self, user_id: &str, name: &str) -> Result<Option<DeploymentRow>, StoreError> {
        Ok(sqlx::query_as(select_deployments!("WHERE user_id = $1 AND model_name = $2 AND deleted_at IS NULL"))
            .bind(user_id)
            .bind(name)
            .fetch_optional(self.0)
            .await?)
    }

    /// Live deployments of one user (or everyone's), newest first, `limit` from `offset`,
    /// with their number.
    pub async fn page(
        &self,
        user_id: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<DeploymentRow>, i64), StoreError> {
        let rows = sqlx::query_as(select_deployments!(
            "WHERE ($1 IS NULL OR user_id = $1) AND deleted_at IS NULL ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        ))
        .bind(user_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(self.0)
        .await?;
        let total = sqlx::query_scalar(
            "SELECT COUNT(*) FROM deployments WHERE ($1 IS NULL OR user_id = $1) AND deleted_at IS NULL",
        )
        .bind(user_id)
        .fetch_one(self.0)
        .await?;
        Ok((rows, total))
    }

    /// Returns whether it was live.
    pub async fn delete(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE deployments SET deleted_at = $2, updated_at = $2 WHERE id = $1 AND deleted_at IS NULL")
                .bind(id)
                .bind(now)
                .execute(self.0)
                .await?;
        Ok(done.rows_affected() == 1)
    }
}
