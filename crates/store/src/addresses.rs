//! Billing addresses, one per user.

use sqlx::AnyPool;

use crate::StoreError;

#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct AddressRow {
    pub user_id: String,
    pub name: String,
    pub company: String,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub state: String,
    pub postal_code: String,
    pub country: String,
    pub phone: String,
    pub updated_at: i64,
}

pub struct Addresses<'a>(pub(crate) &'a AnyPool);

impl Addresses<'_> {
    pub async fn get(&self, user_id: &str) -> Result<Option<AddressRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT user_id, name, company, line1, line2, city, state, postal_code, country, phone, updated_at \
             FROM billing_addresses WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(self.0)
        .await?)
    }

    /// Replaces the user's address.
    pub async fn put(&self, a: &AddressRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO billing_addresses (user_id, name, company, line1, line2, city, state, postal_code, country, \
             phone, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (user_id) DO UPDATE SET name = excluded.name, company = excluded.company, \
             line1 = excluded.line1, line2 = excluded.line2, city = excluded.city, state = excluded.state, \
             postal_code = excluded.postal_code, country = excluded.country, phone = excluded.phone, \
             updated_at = excluded.updated_at",
        )
        .bind(&a.user_id)
        .bind(&a.name)
        .bind(&a.company)
        .bind(&a.line1)
        .bind(&a.line2)
        .bind(&a.city)
        .bind(&a.state)
        .bind(&a.postal_code)
        .bind(&a.country)
        .bind(&a.phone)
        .bind(a.updated_at)
        .execute(self.0)
        .await?;
        Ok(())
    }
}
