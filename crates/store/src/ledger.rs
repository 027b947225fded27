//! Prepaid accounts: credits, held money and settlement.
//!
//! Money for requests in flight is first *held* (`held_nanos`; one conditional statement,
//! and the table's CHECK refuses an overdraft whatever happens). A finished request is then
//! *settled*: its usage record is inserted and its cost moved out of both balance and held
//! money in one transaction; the usage record's primary key (the request id) makes a
//! second settlement of the same request a no-op. Unused held money is *released*. How
//! much a gateway holds per request is its business (it holds in leases, see
//! `tm-gateway`); held money left by a dead process is voided at the next start. Every
//! transaction opens with a write, so SQLite takes its write lock up front and never fails
//! a read-to-write upgrade.

use std::collections::{HashMap, HashSet};

use sqlx::AnyPool;

use crate::StoreError;

/// A user's money, in nano-USD. `available = balance - held` never goes below zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Account {
    pub balance_nanos: i64,
    pub held_nanos: i64,
}

impl Account {
    pub fn available_nanos(&self) -> i64 {
        self.balance_nanos - self.held_nanos
    }
}

/// Money put into an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credit {
    pub id: String,
    pub user_id: String,
    pub amount_nanos: i64,
    pub kind: String,
    pub description: String,
    /// A client-chosen key that makes a retried credit harmless.
    pub idempotency_key: Option<String>,
    /// Digest of what was asked, so that a reused key with another request is caught.
    pub fingerprint: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreditOutcome {
    Applied {
        balance_after_nanos: i64,
    },
    /// The idempotency key was seen with the same request: nothing new was credited.
    Replayed {
        balance_after_nanos: i64,
    },
    /// The idempotency key was seen with a different request.
    KeyReused,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EntryRow {
    pub id: String,
    pub user_id: String,
    pub amount_nanos: i64,
    pub kind: String,
    pub description: String,
    pub balance_after_nanos: i64,
    pub created_at: i64,
}

/// What a finished request used and costs; becomes its usage record.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UsageRow {
    pub request_id: String,
    pub user_id: String,
    pub api_key_id: String,
    pub model: String,
    pub prompt_tokens: i64,
    pub cached_tokens: i64,
    pub completion_tokens: i64,
    pub cost_nanos: i64,
    pub cache_saving_nanos: i64,
    pub status: String,
    pub started_at: i64,
    pub finished_at: i64,
    /// `engine`, or `counted` / `estimated` by the gateway (an upstream reported no usage).
    pub usage_source: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Recorded and charged.
    Charged { charged_nanos: i64 },
    /// The request was recorded (and charged) before: nothing changed.
    Duplicate,
}

/// Ledger operations. Writes go through `writer` (for SQLite a one-connection pool, so
/// money movements queue in the process instead of spinning on SQLite's busy lock).
pub struct Ledger<'a> {
    pub(crate) reader: &'a AnyPool,
    pub(crate) writer: &'a AnyPool,
}

impl Ledger<'_> {
    /// The user's account (zero when nothing was ever credited).
    pub async fn account(&self, user_id: &str) -> Result<Account, StoreError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT balance_nanos, held_nanos FROM accounts WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(self.reader)
                .await?;
        Ok(row.map(|(balance_nanos, held_nanos)| Account { balance_nanos, held_nanos }).unwrap_or_default())
    }

    /// Credits an account. With an idempotency key, a retry (even a concurrent one) is
    /// answered from the first credit.
    pub async fn credit(&self, c: &Credit) -> Result<CreditOutcome, StoreError> {
        match self.try_credit(c).await {
            Err(StoreError::Conflict(_)) if c.idempotency_key.is_some() => {
                let seen: Option<(String, i64)> = sqlx::query_as(
                    "SELECT fingerprint, balance_after_nanos FROM ledger_entries WHERE idempotency_key = $1",
                )
                .bind(&c.idempotency_key)
                .fetch_optional(self.writer)
                .await?;
                match seen {
                    Some((fingerprint, balance_after_nanos)) if fingerprint == c.fingerprint => {
                        Ok(CreditOutcome::Replayed { balance_after_nanos })
                    }
                    Some(_) => Ok(CreditOutcome::KeyReused),
                    None => Err(StoreError::Conflict("ledger entry id".into())),
                }
            }
            other => other,
        }
    }

    async fn try_credit(&self, c: &Credit) -> Result<CreditOutcome, StoreError> {
        let mut tx = self.writer.begin().await?;
        let balance_after_nanos: i64 = sqlx::query_scalar(
            "INSERT INTO accounts (user_id, balance_nanos, held_nanos) VALUES ($1, $2, 0) \
             ON CONFLICT (user_id) DO UPDATE SET balance_nanos = accounts.balance_nanos + excluded.balance_nanos \
             RETURNING balance_nanos",
        )
        .bind(&c.user_id)
        .bind(c.amount_nanos)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO ledger_entries (id, user_id, amount_nanos, kind, description, idempotency_key, fingerprint, \
             balance_after_nanos, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&c.id)
        .bind(&c.user_id)
        .bind(c.amount_nanos)
        .bind(&c.kind)
        .bind(&c.description)
        .bind(&c.idempotency_key)
        .bind(&c.fingerprint)
        .bind(balance_after_nanos)
        .bind(c.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(CreditOutcome::Applied { balance_after_nanos })
    }

    /// A user's credits, newest first.
    pub async fn entries(&self, user_id: &str) -> Result<Vec<EntryRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, user_id, amount_nanos, kind, description, balance_after_nanos, created_at \
             FROM ledger_entries WHERE user_id = $1 ORDER BY created_at DESC, id DESC",
        )
        .bind(user_id)
        .fetch_all(self.reader)
        .await?)
    }

    /// Holds `amount_nanos` of the user's available balance. Returns false, changing
    /// nothing, when the available balance does not cover it. One statement, so concurrent
    /// holds cannot overdraw.
    pub async fn hold(&self, user_id: &str, amount_nanos: i64) -> Result<bool, StoreError> {
        if amount_nanos <= 0 {
            return Ok(amount_nanos == 0);
        }
        let held = sqlx::query(
            "UPDATE accounts SET held_nanos = held_nanos + $2 WHERE user_id = $1 AND balance_nanos - held_nanos >= $2",
        )
        .bind(user_id)
        .bind(amount_nanos)
        .execute(self.writer)
        .await?;
        Ok(held.rows_affected() == 1)
    }

    /// Gives back held money that no request will use.
    pub async fn release(&self, user_id: &str, amount_nanos: i64) -> Result<(), StoreError> {
        if amount_nanos > 0 {
            sqlx::query("UPDATE accounts SET held_nanos = held_nanos - $2 WHERE user_id = $1")
                .bind(user_id)
                .bind(amount_nanos)
                .execute(self.writer)
                .await?;
        }
        Ok(())
    }

    /// Settles finished requests in one transaction: records each one's usage and charges
    /// its cost from held money (the caller held at least that much); a request recorded
    /// before is left alone. `releases` gives back unused held money in the same
    /// transaction. Set-based: a few statements whatever the batch size.
    pub async fn settle(&self, usage: &[UsageRow], releases: &[(String, i64)]) -> Result<Vec<Settled>, StoreError> {
        let mut out = vec![Settled::Duplicate; usage.len()];
        if usage.is_empty() && releases.is_empty() {
            return Ok(out);
        }
        // Per user: (charged, released).
        let mut per_user: HashMap<&str, (i64, i64)> = HashMap::new();
        let mut tx = self.writer.begin().await?;
        if !usage.is_empty() {
            let sql = format!(
                "INSERT INTO usage_records (request_id, user_id, api_key_id, model, prompt_tokens, cached_tokens, \
                 completion_tokens, cost_nanos, cache_saving_nanos, status, started_at, finished_at, usage_source) \
                 VALUES {} ON CONFLICT (request_id) DO NOTHING RETURNING request_id",
                (0..usage.len()).map(|r| format!("({})", placeholders(13, 1 + 13 * r))).collect::<Vec<_>>().join(", ")
            );
            let mut insert = sqlx::query_scalar::<_, String>(&sql);
            for u in usage {
                insert = insert
                    .bind(&u.request_id)
                    .bind(&u.user_id)
                    .bind(&u.api_key_id)
                    .bind(&u.model)
                    .bind(u.prompt_tokens)
                    .bind(u.cached_tokens)
                    .bind(u.completion_tokens)
                    .bind(u.cost_nanos.max(0))
                    .bind(u.cache_saving_nanos)
                    .bind(&u.status)
                    .bind(u.started_at)
                    .bind(u.finished_at)
                    .bind(&u.usage_source);
            }
            let mut inserted: HashSet<String> = insert.fetch_all(&mut *tx).await?.into_iter().collect();
            for (i, u) in usage.iter().enumerate() {
                // `remove`: a request named twice in one batch is charged once.
                if inserted.remove(&u.request_id) {
                    let charged = u.cost_nanos.max(0);
                    per_user.entry(&u.user_id).or_default().0 += charged;
                    out[i] = Settled::Charged { charged_nanos: charged };
                }
            }
        }
        for (user_id, amount) in releases {
            per_user.entry(user_id).or_default().1 += amount.max(&0);
        }
        for (user_id, (charged, released)) in per_user {
            if charged != 0 || released != 0 {
                sqlx::query(
                    "UPDATE accounts SET balance_nanos = balance_nanos - $2, held_nanos = held_nanos - $3 \
                     WHERE user_id = $1",
                )
                .bind(user_id)
                .bind(charged)
                .bind(charged + released)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Voids all held money (at start-up: its requests died with the previous process,
    /// unbilled). Returns how many accounts had some.
    pub async fn void_all_holds(&self) -> Result<u64, StoreError> {
        let voided = sqlx::query("UPDATE accounts SET held_nanos = 0 WHERE held_nanos <> 0")
            .execute(self.writer)
            .await?
            .rows_affected();
        Ok(voided)
    }

    /// Money held over all accounts (zero once a server is idle).
    pub async fn total_held(&self) -> Result<i64, StoreError> {
        let sum: Option<i64> =
            sqlx::query_scalar("SELECT CAST(SUM(held_nanos) AS BIGINT) FROM accounts").fetch_one(self.reader).await?;
        Ok(sum.unwrap_or(0))
    }
}

/// `$first, $first+1, ...` (`n` of them): numbered placeholders for a statement whose
/// number of values varies. Only placeholders are formatted into SQL, never values.
fn placeholders(n: usize, first: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}
