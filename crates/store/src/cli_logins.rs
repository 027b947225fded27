//! Browser-login requests started by `tm auth login`.

use sqlx::AnyPool;

use crate::sessions::SessionRow;
use crate::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginState {
    Pending,
    Approved,
    Denied,
    /// Exchanged for tokens: a code works once.
    Consumed,
}

impl LoginState {
    fn as_str(self) -> &'static str {
        match self {
            LoginState::Pending => "pending",
            LoginState::Approved => "approved",
            LoginState::Denied => "denied",
            LoginState::Consumed => "consumed",
        }
    }

    fn parse(s: &str) -> LoginState {
        match s {
            "approved" => LoginState::Approved,
            "denied" => LoginState::Denied,
            "consumed" => LoginState::Consumed,
            _ => LoginState::Pending,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliLoginRow {
    pub public_id: String,
    pub digest: String,
    pub state: LoginState,
    pub user_id: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    /// What the person compares between the terminal and the sign-in page; `None` for
    /// requests started before it existed (they cannot be approved).
    pub user_code: Option<String>,
    /// The client address that started the request, shown on the sign-in page.
    pub started_from: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Raw {
    public_id: String,
    digest: String,
    state: String,
    user_id: Option<String>,
    created_at: i64,
    expires_at: i64,
    user_code: Option<String>,
    started_from: Option<String>,
}

impl From<Raw> for CliLoginRow {
    fn from(r: Raw) -> Self {
        CliLoginRow {
            public_id: r.public_id,
            digest: r.digest,
            state: LoginState::parse(&r.state),
            user_id: r.user_id,
            created_at: r.created_at,
            expires_at: r.expires_at,
            user_code: r.user_code,
            started_from: r.started_from,
        }
    }
}

pub struct CliLogins<'a>(pub(crate) &'a AnyPool);

impl CliLogins<'_> {
    /// Also forgets requests that expired a day or more ago.
    pub async fn insert(&self, l: &CliLoginRow) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM cli_logins WHERE expires_at < $1")
            .bind(l.created_at - 86_400_000)
            .execute(self.0)
            .await?;
        sqlx::query(
            "INSERT INTO cli_logins \
             (public_id, digest, state, user_id, created_at, expires_at, user_code, started_from) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&l.public_id)
        .bind(&l.digest)
        .bind(l.state.as_str())
        .bind(l.user_id.as_deref())
        .bind(l.created_at)
        .bind(l.expires_at)
        .bind(l.user_code.as_deref())
        .bind(l.started_from.as_deref())
        .execute(self.0)
        .await?;
        Ok(())
    }

    pub async fn get(&self, public_id: &str) -> Result<Option<CliLoginRow>, StoreError> {
        let raw: Option<Raw> = sqlx::query_as(
            "SELECT public_id, digest, state, user_id, created_at, expires_at, user_code, started_from \
             FROM cli_logins WHERE public_id = $1",
        )
        .bind(public_id)
        .fetch_optional(self.0)
        .await?;
        Ok(raw.map(Into::into))
    }

    /// Approves (with the approving user) or denies a request that is still pending and
    /// unexpired at `now`. Returns whether it was.
    pub async fn decide(&self, public_id: &str, approve_as: Option<&str>, now: i64) -> Result<bool, StoreError> {
        let state = if approve_as.is_some() { LoginState::Approved } else { LoginState::Denied };
        let done = sqlx::query(
            "UPDATE cli_logins SET state = $2, user_id = $3 WHERE public_id = $1 AND state = 'pending' AND expires_at > $4",
        )
        .bind(public_id)
        .bind(state.as_str())
        .bind(approve_as)
        .bind(now)
        .execute(self.0)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks an approved request consumed and opens its session, atomically: of two
    /// concurrent exchanges of one code, exactly one gets tokens.
    pub async fn consume(&self, public_id: &str, session: &SessionRow) -> Result<bool, StoreError> {
        let mut tx = self.0.begin().await?;
        let done = sqlx::query("UPDATE cli_logins SET state = 'consumed' WHERE public_id = $1 AND state = 'approved'")
            .bind(public_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        crate::sessions::insert(&mut *tx, session).await?;
        tx.commit().await?;
        Ok(true)
    }
}
