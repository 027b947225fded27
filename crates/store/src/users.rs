//! Accounts. Emails are unique and stored lowercased; roles are the proto enum names.

use sqlx::AnyPool;

use crate::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub first_name: String,
    pub last_name: String,
    pub display_name: String,
    pub company: String,
    pub role: String,
    pub tos_accepted_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// When an operator disabled the user; None while enabled.
    pub disabled_at: Option<i64>,
}

/// Profile fields a user may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProfileUpdate {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub display_name: Option<String>,
    pub company: Option<String>,
}

/// SQL stays a compile-time literal (no `format!` ever reaches a query).
macro_rules! select_users {
    ($tail:literal) => {
        concat!(
            "SELECT id, email, password_hash, first_name, last_name, display_name, company, role, ",
            "tos_accepted_at, created_at, updated_at, disabled_at FROM users ",
            $tail
        )
    };
}

pub struct Users<'a>(pub(crate) &'a AnyPool);

impl Users<'_> {
    /// Fails with [`StoreError::Conflict`] when the email is taken.
    pub async fn insert(&self, u: &UserRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, first_name, last_name, display_name, company, role, \
             tos_accepted_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&u.id)
        .bind(&u.email)
        .bind(&u.password_hash)
        .bind(&u.first_name)
        .bind(&u.last_name)
        .bind(&u.display_name)
        .bind(&u.company)
        .bind(&u.role)
        .bind(u.tos_accepted_at)
        .bind(u.created_at)
        .bind(u.updated_at)
        .execute(self.0)
        .await?;
        Ok(())
    }

    pub async fn by_id(&self, id: &str) -> Result<Option<UserRow>, StoreError> {
        Ok(sqlx::query_as(select_users!("WHERE id = $1")).bind(id).fetch_optional(self.0).await?)
    }

    pub async fn by_email(&self, email: &str) -> Result<Option<UserRow>, StoreError> {
        Ok(sqlx::query_as(select_users!("WHERE email = $1")).bind(email).fetch_optional(self.0).await?)
    }

    /// Oldest first, `limit` rows from `offset`, with the total count.
    pub async fn page(&self, offset: i64, limit: i64) -> Result<(Vec<UserRow>, i64), StoreError> {
        let rows = sqlx::query_as(select_users!("ORDER BY created_at, id LIMIT $1 OFFSET $2"))
            .bind(limit)
            .bind(offset)
            .fetch_all(self.0)
            .await?;
        Ok((rows, self.count().await?))
    }

    pub async fn count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(self.0).await?)
    }

    /// Returns whether the user exists.
    pub async fn update_profile(&self, id: &str, p: &ProfileUpdate, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE users SET first_name = COALESCE($2, first_name), last_name = COALESCE($3, last_name), \
             display_name = COALESCE($4, display_name), company = COALESCE($5, company), updated_at = $6 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(p.first_name.as_deref())
        .bind(p.last_name.as_deref())
        .bind(p.display_name.as_deref())
        .bind(p.company.as_deref())
        .bind(now)
        .execute(self.0)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Keeps the first acceptance time when accepted again.
    pub async fn accept_tos(&self, id: &str, now: i64) -> Result<Option<UserRow>, StoreError> {
        sqlx::query("UPDATE users SET tos_accepted_at = COALESCE(tos_accepted_at, $2), updated_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(self.0)
            .await?;
        self.by_id(id).await
    }

    pub async fn set_role(&self, id: &str, role: &str, now: i64) -> Result<Option<UserRow>, StoreError> {
        sqlx::query("UPDATE users SET role = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(role)
            .bind(now)
            .execute(self.0)
            .await?;
        self.by_id(id).await
    }

    /// Disables (`Some(time)`) or enables (`None`) the user; returns whether it exists.
    pub async fn set_disabled(&self, id: &str, disabled_at: Option<i64>, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET disabled_at = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(disabled_at)
            .bind(now)
            .execute(self.0)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Returns whether the user exists.
    pub async fn set_password_hash(&self, id: &str, hash: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(hash)
            .bind(now)
            .execute(self.0)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
