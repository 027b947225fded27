//! Serverless prices per model (nano-USD per 1,000,000 tokens).

use sqlx::AnyPool;

use crate::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PriceRow {
    pub id: String,
    pub model: String,
    pub name: String,
    pub input_per_mtok: i64,
    pub output_per_mtok: i64,
    pub cached_per_mtok: i64,
    /// 0 or 1.
    pub is_active: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

macro_rules! select_prices {
    ($tail:literal) => {
        concat!(
            "SELECT id, model, name, input_per_mtok, output_per_mtok, cached_per_mtok, is_active, created_at, ",
            "updated_at FROM serverless_pricing ",
            $tail
        )
    };
}

pub struct Pricing<'a>(pub(crate) &'a AnyPool);

impl Pricing<'_> {
    /// Rows for `model` (all models when None), active ones only when asked; ordered by
    /// model, then newest first.
    pub async fn list(&self, model: Option<&str>, active_only: bool) -> Result<Vec<PriceRow>, StoreError> {
        let rows: Vec<PriceRow> = match model {
            Some(m) => {
                sqlx::query_as(select_prices!("WHERE model = $1 ORDER BY model, updated_at DESC, id"))
                    .bind(m)
                    .fetch_all(self.0)
                    .await?
            }
            None => sqlx::query_as(select_prices!("ORDER BY model, updated_at DESC, id")).fetch_all(self.0).await?,
        };
        Ok(rows.into_iter().filter(|r| !active_only || r.is_active != 0).collect())
    }

    /// The price a request for `model` pays: its newest active row.
    pub async fn active(&self, model: &str) -> Result<Option<PriceRow>, StoreError> {
        Ok(sqlx::query_as(select_prices!("WHERE model = $1 AND is_active <> 0 ORDER BY updated_at DESC, id LIMIT 1"))
            .bind(model)
            .fetch_optional(self.0)
            .await?)
    }

    pub async fn get(&self, id: &str) -> Result<Option<PriceRow>, StoreError> {
        Ok(sqlx::query_as(select_prices!("WHERE id = $1")).bind(id).fetch_optional(self.0).await?)
    }

    pub async fn insert(&self, p: &PriceRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO serverless_pricing (id, model, name, input_per_mtok, output_per_mtok, cached_per_mtok, \
             is_active, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&p.id)
        .bind(&p.model)
        .bind(&p.name)
        .bind(p.input_per_mtok)
        .bind(p.output_per_mtok)
        .bind(p.cached_per_mtok)
        .bind(p.is_active)
        .bind(p.created_at)
        .bind(p.updated_at)
        .execute(self.0)
        .await?;
        Ok(())
    }

    /// Replaces a row's fields (not `id` or `created_at`). Returns whether it existed.
    pub async fn update(&self, p: &PriceRow) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE serverless_pricing SET model = $2, name = $3, input_per_mtok = $4, output_per_mtok = $5, \
             cached_per_mtok = $6, is_active = $7, updated_at = $8 WHERE id = $1",
        )
        .bind(&p.id)
        .bind(&p.model)
        .bind(&p.name)
        .bind(p.input_per_mtok)
        .bind(p.output_per_mtok)
        .bind(p.cached_per_mtok)
        .bind(p.is_active)
        .bind(p.updated_at)
        .execute(self.0)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Returns whether the row existed.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM serverless_pricing WHERE id = $1").bind(id).execute(self.0).await?;
        Ok(done.rows_affected() == 1)
    }
}
