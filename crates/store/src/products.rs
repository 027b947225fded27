//! The product catalogue (GPU deployment offerings), managed by admins.

use sqlx::AnyPool;

use crate::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ProductRow {
    pub id: String,
    pub name: String,
    pub required_gpu_num: i64,
    pub family: String,
    /// 0 or 1.
    pub is_active: i64,
    /// JSON object.
    pub spec: String,
    pub created_at: i64,
    pub updated_at: i64,
}

macro_rules! select_products {
    ($tail:literal) => {
        concat!(
            "SELECT id, name, required_gpu_num, family, is_active, spec, created_at, updated_at FROM products ",
            $tail
        )
    };
}

pub struct Products<'a>(pub(crate) &'a AnyPool);

impl Products<'_> {
    /// By family, then name.
    pub async fn list(&self, active_only: bool) -> Result<Vec<ProductRow>, StoreError> {
        Ok(sqlx::query_as(select_products!("WHERE ($1 = 0 OR is_active = 1) ORDER BY family, name, id"))
            .bind(i64::from(active_only))
            .fetch_all(self.0)
            .await?)
    }

    pub async fn by_id(&self, id: &str) -> Result<Option<ProductRow>, StoreError> {
        Ok(sqlx::query_as(select_products!("WHERE id = $1")).bind(id).fetch_optional(self.0).await?)
    }

    /// Inserts, or replaces every field but `created_at`.
    pub async fn upsert(&self, p: &ProductRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO products (id, name, required_gpu_num, family, is_active, spec, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, required_gpu_num = excluded.required_gpu_num, \
             family = excluded.family, is_active = excluded.is_active, spec = excluded.spec, \
             updated_at = excluded.updated_at",
        )
        .bind(&p.id)
        .bind(&p.name)
        .bind(p.required_gpu_num)
        .bind(&p.family)
        .bind(p.is_active)
        .bind(&p.spec)
        .bind(p.created_at)
        .bind(p.updated_at)
        .execute(self.0)
        .await?;
        Ok(())
    }

    /// Returns whether it existed.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query("DELETE FROM products WHERE id = $1").bind(id).execute(self.0).await?.rows_affected() == 1)
    }
}
