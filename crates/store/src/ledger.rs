//! Prepaid accounts: credits, holds and settlement, each one transaction.
//!
//! A request first *reserves* its worst-case cost (the database refuses an overdraft), then
//! is *settled* exactly once: the hold is deleted, the usage record inserted and the balance
//! charged in one transaction, and the deleted hold is what makes a second settlement of the
//! same request a no-op. Every statement that opens a transaction writes, so SQLite takes
//! its write lock up front and never fails a read-to-write upgrade.

use std::collections::{HashMap, HashSet};

use sqlx::{AnyConnection, AnyPool};

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Charged `charged_nanos` (the cost, never more than the hold).
    Charged { charged_nanos: i64 },
    /// No hold for this request: it was settled, released or voided before.
    NoHold,
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

    /// Reserves `amount_nanos` of the user's available balance for `request_id`. Returns
    /// false, changing nothing, when the available balance does not cover it.
    ///
    /// The check-and-reserve is one statement, so concurrent reservations cannot overdraw
    /// (and the table's CHECK would refuse it anyway); the hold row follows in a second
    /// one. Two round trips instead of a four-statement transaction: if the process dies
    /// between them, the start-up void (which resets every `held`) repairs it.
    pub async fn reserve(
        &self,
        request_id: &str,
        user_id: &str,
        amount_nanos: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        if amount_nanos > 0 {
            let held = sqlx::query(
                "UPDATE accounts SET held_nanos = held_nanos + $2 WHERE user_id = $1 AND balance_nanos - held_nanos >= $2",
            )
            .bind(user_id)
            .bind(amount_nanos)
            .execute(self.writer)
            .await?;
            if held.rows_affected() != 1 {
                return Ok(false);
            }
        }
        let inserted =
            sqlx::query("INSERT INTO holds (request_id, user_id, amount_nanos, created_at) VALUES ($1, $2, $3, $4)")
                .bind(request_id)
                .bind(user_id)
                .bind(amount_nanos)
                .bind(now)
                .execute(self.writer)
                .await;
        if let Err(e) = inserted {
            if amount_nanos > 0 {
                sqlx::query("UPDATE accounts SET held_nanos = held_nanos - $2 WHERE user_id = $1")
                    .bind(user_id)
                    .bind(amount_nanos)
                    .execute(self.writer)
                    .await?;
            }
            return Err(e.into());
        }
        Ok(true)
    }

    /// Settles requests in one transaction: deletes their holds, records their usage and
    /// charges each its cost (capped at its hold). A request without a hold (settled,
    /// released or voided before) is left alone. Set-based, so a batch costs a few
    /// statements whatever its size.
    pub async fn settle(&self, usage: &[UsageRow]) -> Result<Vec<Settled>, StoreError> {
        let mut out = vec![Settled::NoHold; usage.len()];
        if usage.is_empty() {
            return Ok(out);
        }
        let mut tx = self.writer.begin().await?;
        let sql = format!(
            "DELETE FROM holds WHERE request_id IN ({}) RETURNING request_id, user_id, amount_nanos",
            placeholders(usage.len(), 1)
        );
        let mut delete = sqlx::query_as::<_, (String, String, i64)>(&sql);
        for u in usage {
            delete = delete.bind(&u.request_id);
        }
        let mut holds: HashMap<String, (String, i64)> =
            delete.fetch_all(&mut *tx).await?.into_iter().map(|(r, user, amount)| (r, (user, amount))).collect();
        // Per user: (charged, released hold).
        let mut rows: Vec<(usize, String, i64, i64)> = Vec::new();
        for (i, u) in usage.iter().enumerate() {
            // `remove`: a request named twice in one batch is settled once.
            if let Some((user_id, hold)) = holds.remove(&u.request_id) {
                let charged = u.cost_nanos.clamp(0, hold);
                rows.push((i, user_id, hold, charged));
            }
        }
        // Per user: (charged, released hold).
        let mut per_user: HashMap<&str, (i64, i64)> = HashMap::new();
        for (_, user_id, hold, _) in &rows {
            per_user.entry(user_id.as_str()).or_default().1 += hold;
        }
        if !rows.is_empty() {
            let sql = format!(
                "INSERT INTO usage_records (request_id, user_id, api_key_id, model, prompt_tokens, cached_tokens, \
                 completion_tokens, cost_nanos, cache_saving_nanos, status, started_at, finished_at) VALUES {} \
                 ON CONFLICT (request_id) DO NOTHING RETURNING request_id",
                (0..rows.len()).map(|r| format!("({})", placeholders(12, 1 + 12 * r))).collect::<Vec<_>>().join(", ")
            );
            let mut insert = sqlx::query_scalar::<_, String>(&sql);
            for (i, user_id, _, charged) in &rows {
                let u = &usage[*i];
                insert = insert
                    .bind(&u.request_id)
                    .bind(user_id)
                    .bind(&u.api_key_id)
                    .bind(&u.model)
                    .bind(u.prompt_tokens)
                    .bind(u.cached_tokens)
                    .bind(u.completion_tokens)
                    .bind(*charged)
                    .bind(u.cache_saving_nanos)
                    .bind(&u.status)
                    .bind(u.started_at)
                    .bind(u.finished_at);
            }
            let inserted: HashSet<String> = insert.fetch_all(&mut *tx).await?.into_iter().collect();
            for (i, user_id, _, charged) in &rows {
                if inserted.contains(&usage[*i].request_id) {
                    per_user.entry(user_id.as_str()).or_default().0 += charged;
                    out[*i] = Settled::Charged { charged_nanos: *charged };
                }
            }
        }
        for (user_id, (charged, held)) in per_user {
            if charged != 0 || held != 0 {
                sqlx::query(
                    "UPDATE accounts SET balance_nanos = balance_nanos - $2, held_nanos = held_nanos - $3 \
                     WHERE user_id = $1",
                )
                .bind(user_id)
                .bind(charged)
                .bind(held)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Gives a request's hold back without charging (it was refused after reserving).
    pub async fn release(&self, request_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        let released = take_hold(&mut tx, request_id).await?.is_some();
        tx.commit().await?;
        Ok(released)
    }

    /// Voids every hold (at start-up: their requests died with the previous process).
    /// Returns how many there were.
    pub async fn void_all_holds(&self) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        let voided = sqlx::query("DELETE FROM holds").execute(&mut *tx).await?.rows_affected();
        sqlx::query("UPDATE accounts SET held_nanos = 0 WHERE held_nanos <> 0").execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(voided)
    }

    /// Holds not yet settled, over all users.
    pub async fn open_holds(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM holds").fetch_one(self.reader).await?)
    }
}

/// Deletes the request's hold and gives its amount back to the available balance.
/// Returns the hold (user, amount), or None when there was none.
async fn take_hold(conn: &mut AnyConnection, request_id: &str) -> Result<Option<(String, i64)>, StoreError> {
    let hold: Option<(String, i64)> =
        sqlx::query_as("DELETE FROM holds WHERE request_id = $1 RETURNING user_id, amount_nanos")
            .bind(request_id)
            .fetch_optional(&mut *conn)
            .await?;
    if let Some((user_id, amount)) = &hold {
        if *amount > 0 {
            sqlx::query("UPDATE accounts SET held_nanos = held_nanos - $2 WHERE user_id = $1")
                .bind(user_id)
                .bind(amount)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(hold)
}

/// `$first, $first+1, ...` (`n` of them): numbered placeholders for a statement whose
/// number of values varies. Only placeholders are formatted into SQL, never values.
fn placeholders(n: usize, first: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}
