//! Serving processes (replicas) on one database. Each registers at start and beats while
//! it runs; the money it holds for requests is kept per instance (see [`crate::ledger`]).
//! A process whose last beat is older than the timeout is taken for dead: any replica's
//! sweep voids its holds (its requests died with it, unbilled) and forgets it.

use sqlx::AnyPool;

use crate::StoreError;

/// What a sweep voided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Instances forgotten (expired, or holding money without being registered).
    pub instances: Vec<String>,
    /// Money released, over all of them.
    pub voided_nanos: i64,
}

pub struct Instances<'a> {
    pub(crate) writer: &'a AnyPool,
}

impl Instances<'_> {
    /// Registers `id` as alive at `now_ms` (again, if it was swept).
    pub async fn register(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO instances (id, started_at, heartbeat_at) VALUES ($1, $2, $2) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        )
        .bind(id)
        .bind(now_ms)
        .execute(self.writer)
        .await?;
        Ok(())
    }

    /// Records that `id` is alive at `now_ms`. False when it is not registered: it was
    /// taken for dead and its holds are gone.
    pub async fn beat(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let beat = sqlx::query("UPDATE instances SET heartbeat_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now_ms)
            .execute(self.writer)
            .await?;
        Ok(beat.rows_affected() == 1)
    }

    /// Voids the holds of every instance whose last beat is before `expired_before_ms`, and
    /// of holds whose instance is not registered, and forgets those instances.
    pub async fn sweep(&self, expired_before_ms: i64) -> Result<Swept, StoreError> {
        let dead: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM instances WHERE heartbeat_at < $1 \
             UNION SELECT DISTINCT instance_id FROM holds WHERE instance_id NOT IN (SELECT id FROM instances)",
        )
        .bind(expired_before_ms)
        .fetch_all(self.writer)
        .await?;
        let mut swept = Swept::default();
        for id in dead {
            // A replica that beat since (or one another sweeper got to first) is skipped.
            if let Some(voided) = self.void(&id, Some(expired_before_ms)).await? {
                swept.voided_nanos += voided;
                swept.instances.push(id);
            }
        }
        Ok(swept)
    }

    /// Voids the holds of `id` and forgets it, whatever its last beat (a process retiring
    /// itself, or its successor on the same data dir). Returns the money released.
    pub async fn retire(&self, id: &str) -> Result<i64, StoreError> {
        Ok(self.void(id, None).await?.unwrap_or(0))
    }

    /// One transaction: forgets the instance (only when its beat is still older than
    /// `expired_before`, if given: None when it beat since), then deletes its holds, which
    /// waits for any settlement of theirs in flight and reads what it left, and takes each
    /// from its account's held total.
    async fn void(&self, id: &str, expired_before: Option<i64>) -> Result<Option<i64>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let forgotten = match expired_before {
            Some(before) => {
                sqlx::query("DELETE FROM instances WHERE id = $1 AND heartbeat_at < $2")
                    .bind(id)
                    .bind(before)
                    .execute(&mut *tx)
                    .await?
            }
            None => sqlx::query("DELETE FROM instances WHERE id = $1").bind(id).execute(&mut *tx).await?,
        }
        .rows_affected();
        if forgotten == 0 && expired_before.is_some() {
            let registered: Option<i64> = sqlx::query_scalar("SELECT heartbeat_at FROM instances WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            if registered.is_some() {
                // It beat since: alive.
                tx.rollback().await?;
                return Ok(None);
            }
        }
        let mut holds: Vec<(String, i64)> =
            sqlx::query_as("DELETE FROM holds WHERE instance_id = $1 RETURNING user_id, held_nanos")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        // Accounts in one order (see `Ledger::hold`).
        holds.sort_unstable();
        if forgotten == 0 && holds.is_empty() {
            // Another sweeper got to it first.
            tx.rollback().await?;
            return Ok(None);
        }
        let mut voided = 0;
        for (user_id, held) in holds {
            sqlx::query("UPDATE accounts SET held_nanos = held_nanos - $2 WHERE user_id = $1")
                .bind(&user_id)
                .bind(held)
                .execute(&mut *tx)
                .await?;
            voided += held;
        }
        tx.commit().await?;
        Ok(Some(voided))
    }
}
