//! Prepaid accounts: credits, held money and settlement.
//!
//! Money for requests in flight is first *held* (`held_nanos`; one conditional statement,
//! and the table's CHECK refuses an overdraft whatever happens). A finished request is then
//! *settled*: its usage record is inserted and its cost moved out of both balance and held
//! money in one transaction; the usage record's primary key (the request id) makes a
//! second settlement of the same request a no-op. Unused held money is *released*. How
//! much a gateway holds per request is its business (it holds in leases, see
//! `tm-gateway`).
//!
//! Held money belongs to the serving process that held it (`holds`, per instance and user;
//! `accounts.held_nanos` is their sum), so that the holds of a dead replica are voided
//! without touching those of the living (see [`crate::instances`]). Every transaction
//! opens with a write, so SQLite takes its write lock up front and never fails a
//! read-to-write upgrade.

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

/// What a finished request used and costs; becomes its usage record. Serializable: a
/// gateway keeps the ones the database could not take yet in a local journal.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
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
    /// The request was recorded (and charged what it says) before: nothing changed. A
    /// settlement retried after an attempt whose outcome was unknown (it did commit) ends
    /// here, and learns what left the hold then.
    Duplicate { recorded_cost_nanos: i64 },
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

    /// Holds `amount_nanos` of the user's available balance for `instance`. Returns false,
    /// changing nothing, when the available balance does not cover it. The account's
    /// conditional update decides, so concurrent holds (from any process) cannot overdraw.
    pub async fn hold(&self, instance: &str, user_id: &str, amount_nanos: i64) -> Result<bool, StoreError> {
        if amount_nanos <= 0 {
            return Ok(amount_nanos == 0);
        }
        // Locks in one order everywhere, the replica's hold before the account, so that
        // concurrent holds and settlements on PostgreSQL never deadlock.
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO holds (instance_id, user_id, held_nanos) VALUES ($1, $2, $3) \
             ON CONFLICT (instance_id, user_id) DO UPDATE SET held_nanos = holds.held_nanos + excluded.held_nanos",
        )
        .bind(instance)
        .bind(user_id)
        .bind(amount_nanos)
        .execute(&mut *tx)
        .await?;
        let held = sqlx::query(
            "UPDATE accounts SET held_nanos = held_nanos + $2 WHERE user_id = $1 AND balance_nanos - held_nanos >= $2",
        )
        .bind(user_id)
        .bind(amount_nanos)
        .execute(&mut *tx)
        .await?;
        if held.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Gives back money `instance` held and no request will use. Nothing happens when its
    /// holds were voided meanwhile (it was taken for dead).
    pub async fn release(&self, instance: &str, user_id: &str, amount_nanos: i64) -> Result<(), StoreError> {
        if amount_nanos > 0 {
            let mut tx = self.writer.begin().await?;
            if take_from_hold(&mut tx, instance, user_id, amount_nanos).await? {
                sqlx::query("UPDATE accounts SET held_nanos = held_nanos - $2 WHERE user_id = $1")
                    .bind(user_id)
                    .bind(amount_nanos)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// Settles finished requests in one transaction: records each one's usage and charges
    /// its cost from the money `instance` held (it held at least that much); a request
    /// recorded before is left alone. `releases` gives back unused held money in the same
    /// transaction. A few statements per user, whatever the batch size.
    ///
    /// When `instance`'s hold is gone (it was taken for dead while these requests ran, and
    /// a sweeper voided it), the usage is still recorded and charged from the available
    /// balance; what the balance cannot cover is written off as an `uncollected` credit, so
    /// that a balance stays its credits minus its usage.
    pub async fn settle(
        &self,
        instance: &str,
        usage: &[UsageRow],
        releases: &[(String, i64)],
    ) -> Result<Vec<Settled>, StoreError> {
        let mut out = vec![Settled::Duplicate { recorded_cost_nanos: 0 }; usage.len()];
        if usage.is_empty() && releases.is_empty() {
            return Ok(out);
        }
        // Per user: (charged, released, the first request charged).
        let mut per_user: HashMap<&str, (i64, i64, Option<&str>)> = HashMap::new();
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
            let mut duplicates = Vec::new();
            for (i, u) in usage.iter().enumerate() {
                // `remove`: a request named twice in one batch is charged once.
                if inserted.remove(&u.request_id) {
                    let charged = u.cost_nanos.max(0);
                    let user = per_user.entry(&u.user_id).or_default();
                    user.0 += charged;
                    user.2.get_or_insert(&u.request_id);
                    out[i] = Settled::Charged { charged_nanos: charged };
                } else {
                    duplicates.push(i);
                }
            }
            if !duplicates.is_empty() {
                let sql = format!(
                    "SELECT request_id, cost_nanos FROM usage_records WHERE request_id IN ({})",
                    placeholders(duplicates.len(), 1)
                );
                let mut select = sqlx::query_as::<_, (String, i64)>(&sql);
                for &i in &duplicates {
                    select = select.bind(&usage[i].request_id);
                }
                let recorded: HashMap<String, i64> = select.fetch_all(&mut *tx).await?.into_iter().collect();
                for i in duplicates {
                    let recorded_cost_nanos = recorded.get(&usage[i].request_id).copied().unwrap_or(0);
                    out[i] = Settled::Duplicate { recorded_cost_nanos };
                }
            }
        }
        for (user_id, amount) in releases {
            per_user.entry(user_id).or_default().1 += amount.max(&0);
        }
        let at = usage.iter().map(|u| u.finished_at).max().unwrap_or(0);
        // In one order (see `hold`).
        let mut per_user: Vec<_> = per_user.into_iter().collect();
        per_user.sort_unstable_by_key(|(user_id, _)| *user_id);
        for (user_id, (charged, released, first)) in per_user {
            if charged == 0 && released == 0 {
                continue;
            }
            if take_from_hold(&mut tx, instance, user_id, charged + released).await? {
                sqlx::query(
                    "UPDATE accounts SET balance_nanos = balance_nanos - $2, held_nanos = held_nanos - $3 \
                     WHERE user_id = $1",
                )
                .bind(user_id)
                .bind(charged)
                .bind(charged + released)
                .execute(&mut *tx)
                .await?;
            } else {
                let entry_id = format!("uncollected-{}", first.unwrap_or_default());
                charge_without_hold(&mut tx, instance, user_id, charged, &entry_id, at).await?;
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// What `instance` holds for the user.
    pub async fn held_by(&self, instance: &str, user_id: &str) -> Result<i64, StoreError> {
        let held: Option<i64> =
            sqlx::query_scalar("SELECT held_nanos FROM holds WHERE instance_id = $1 AND user_id = $2")
                .bind(instance)
                .bind(user_id)
                .fetch_optional(self.reader)
                .await?;
        Ok(held.unwrap_or(0))
    }

    /// Money held over all accounts (zero once a server is idle).
    pub async fn total_held(&self) -> Result<i64, StoreError> {
        let sum: Option<i64> =
            sqlx::query_scalar("SELECT CAST(SUM(held_nanos) AS BIGINT) FROM accounts").fetch_one(self.reader).await?;
        Ok(sum.unwrap_or(0))
    }
}

type Tx<'t> = sqlx::Transaction<'t, sqlx::Any>;

/// Takes `amount` from what `instance` holds for the user; false (nothing changed) when it
/// holds less: its holds were voided.
async fn take_from_hold(tx: &mut Tx<'_>, instance: &str, user_id: &str, amount: i64) -> Result<bool, StoreError> {
    let taken = sqlx::query(
        "UPDATE holds SET held_nanos = held_nanos - $3 WHERE instance_id = $1 AND user_id = $2 AND held_nanos >= $3",
    )
    .bind(instance)
    .bind(user_id)
    .bind(amount)
    .execute(&mut **tx)
    .await?;
    Ok(taken.rows_affected() == 1)
}

/// Charges `charged` to a user whose hold by `instance` is (partly) gone: what is left of
/// the hold is released, the charge comes from the available balance, and what that cannot
/// cover is credited back as `uncollected` (entry `entry_id`), logged for the operator.
async fn charge_without_hold(
    tx: &mut Tx<'_>,
    instance: &str,
    user_id: &str,
    charged: i64,
    entry_id: &str,
    at: i64,
) -> Result<(), StoreError> {
    let left: Option<i64> =
        sqlx::query_scalar("DELETE FROM holds WHERE instance_id = $1 AND user_id = $2 RETURNING held_nanos")
            .bind(instance)
            .bind(user_id)
            .fetch_optional(&mut **tx)
            .await?;
    // A write first: it locks the row (PostgreSQL) before it is read.
    sqlx::query("UPDATE accounts SET held_nanos = held_nanos - $2 WHERE user_id = $1")
        .bind(user_id)
        .bind(left.unwrap_or(0))
        .execute(&mut **tx)
        .await?;
    // No account: never credited, nothing to charge from.
    let (balance, held): (i64, i64) =
        sqlx::query_as("SELECT balance_nanos, held_nanos FROM accounts WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&mut **tx)
            .await?
            .unwrap_or_default();
    let shortfall = (charged - (balance - held).max(0)).max(0);
    let balance_after = balance - charged + shortfall;
    sqlx::query("UPDATE accounts SET balance_nanos = $2 WHERE user_id = $1")
        .bind(user_id)
        .bind(balance_after)
        .execute(&mut **tx)
        .await?;
    if shortfall > 0 {
        tracing::error!(
            user = %user_id,
            instance = %instance,
            shortfall_nanos = shortfall,
            "usage settled after its hold was voided exceeds the balance: written off as uncollected"
        );
        sqlx::query(
            "INSERT INTO ledger_entries (id, user_id, amount_nanos, kind, description, fingerprint, \
             balance_after_nanos, created_at) VALUES ($1, $2, $3, 'uncollected', $4, '', $5, $6)",
        )
        .bind(entry_id)
        .bind(user_id)
        .bind(shortfall)
        .bind("Usage not covered by the balance: its held money was voided while the requests ran")
        .bind(balance_after)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// `$first, $first+1, ...` (`n` of them): numbered placeholders for a statement whose
/// number of values varies. Only placeholders are formatted into SQL, never values.
fn placeholders(n: usize, first: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}
