//! Hourly GPU prices, one row per (GPU type, cloud provider).

use sqlx::AnyPool;

use crate::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct GpuPriceRow {
    pub gpu_type: String,
    pub cloud_provider: String,
    pub hourly_rate_nanos: i64,
    /// 0 or 1.
    pub is_active: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

macro_rules! select_gpu_prices {
    ($tail:literal) => {
        concat!(
            "SELECT gpu_type, cloud_provider, hourly_rate_nanos, is_active, created_at, updated_at FROM gpu_pricing ",
            $tail
        )
    };
}

pub struct GpuPricing<'a>(pub(crate) &'a AnyPool);

impl GpuPricing<'_> {
    /// Filtered by what is given; ordered by provider, then GPU type.
    pub async fn list(
        &self,
        gpu_type: Option<&str>,
        cloud_provider: Option<&str>,
        active_only: bool,
    ) -> Result<Vec<GpuPriceRow>, StoreError> {
        Ok(sqlx::query_as(select_gpu_prices!(
            "WHERE ($1 IS NULL OR gpu_type = $1) AND ($2 IS NULL OR cloud_provider = $2) \
             AND ($3 = 0 OR is_active = 1) ORDER BY cloud_provider, gpu_type"
        ))
        .bind(gpu_type)
        .bind(cloud_provider)
        .bind(i64::from(active_only))
        .fetch_all(self.0)
        .await?)
    }

    pub async fn get(&self, gpu_type: &str, cloud_provider: &str) -> Result<Option<GpuPriceRow>, StoreError> {
        Ok(sqlx::query_as(select_gpu_prices!("WHERE gpu_type = $1 AND cloud_provider = $2"))
            .bind(gpu_type)
            .bind(cloud_provider)
            .fetch_optional(self.0)
            .await?)
    }

    /// Fails with [`StoreError::Conflict`] when the pair has a price already.
    pub async fn insert(&self, r: &GpuPriceRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO gpu_pricing (gpu_type, cloud_provider, hourly_rate_nanos, is_active, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&r.gpu_type)
        .bind(&r.cloud_provider)
        .bind(r.hourly_rate_nanos)
        .bind(r.is_active)
        .bind(r.created_at)
        .bind(r.updated_at)
        .execute(self.0)
        .await?;
        Ok(())
    }

    pub async fn update(&self, r: &GpuPriceRow) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE gpu_pricing SET hourly_rate_nanos = $3, is_active = $4, updated_at = $5 \
             WHERE gpu_type = $1 AND cloud_provider = $2",
        )
        .bind(&r.gpu_type)
        .bind(&r.cloud_provider)
        .bind(r.hourly_rate_nanos)
        .bind(r.is_active)
        .bind(r.updated_at)
        .execute(self.0)
        .await?;
        Ok(())
    }

    /// Returns whether it existed.
    pub async fn delete(&self, gpu_type: &str, cloud_provider: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM gpu_pricing WHERE gpu_type = $1 AND cloud_provider = $2")
            .bind(gpu_type)
            .bind(cloud_provider)
            .execute(self.0)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
