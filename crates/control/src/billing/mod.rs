//! Prepaid billing: serverless prices, balances and top-ups, and the views built from
//! usage records (transactions, spending, usage history). The inference path's holds and
//! settlements live in the gateway; what they write is read back here.

pub mod address;
pub mod gpu;
pub mod overview;
pub mod pricing;
pub mod views;

use std::collections::HashMap;

use tm_money::Nanos;
use tm_store::ledger::{Account, Credit, CreditOutcome};

pub use views::{Bucket, ModelCharge, Spending, SpendingBucket, Transaction, TransactionKind, UsageHistoryRow};

use crate::activity::{action, resource, Actor, Event};
use crate::{Control, ControlError, Principal, Role};

pub(crate) const MAX_NAME_CHARS: usize = 200;
const MAX_REASON_CHARS: usize = 500;
const MAX_TARGETS: usize = 1_000;

/// Balances, top-ups, billing addresses and the views over what was spent.
#[derive(Clone, Copy)]
pub struct Billing<'c> {
    pub(crate) control: &'c Control,
}

impl Billing<'_> {
    pub async fn balance(&self, caller: &Principal, user_id: Option<&str>) -> Result<Account, ControlError> {
        let user = caller.scope(user_id)?;
        Ok(self.control.store.ledger().account(&user).await?)
    }

    /// Balances of several users (admin).
    pub async fn balances(
        &self,
        caller: &Principal,
        targets: &[String],
    ) -> Result<Vec<(String, Account)>, ControlError> {
        caller.require_admin()?;
        check_targets(targets)?;
        let mut out = Vec::with_capacity(targets.len());
        for t in targets {
            out.push((t.clone(), self.control.store.ledger().account(&t.to_ascii_lowercase()).await?));
        }
        Ok(out)
    }

    /// Adds money to a user's balance (admin; to their own balance, a super admin only).
    /// With an idempotency key a retry returns the first answer; the same key with another
    /// request is refused. Recorded in the target's trail with the admin and the reason.
    /// Returns the balance after the credit.
    pub async fn add_balance(
        &self,
        caller: &Principal,
        target: &str,
        amount_nanos: i64,
        idempotency_key: Option<String>,
        reason: Option<&str>,
    ) -> Result<i64, ControlError> {
        caller.require_admin()?;
        let target = target.trim().to_ascii_lowercase();
        if target.is_empty() {
            return Err(ControlError::invalid("targetUserId", "is required"));
        }
        if target == caller.user_id && caller.role != Role::SuperAdmin {
            return Err(ControlError::PermissionDenied("only a super admin can add to their own balance".into()));
        }
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        if reason.is_some_and(|r| r.chars().count() > MAX_REASON_CHARS) {
            return Err(ControlError::invalid("reason", format!("is longer than {MAX_REASON_CHARS} characters")));
        }
        if amount_nanos <= 0 {
            return Err(ControlError::invalid("amount", "must be more than zero"));
        }
        if self.control.store.users().by_id(&target).await?.is_none() {
            return Err(ControlError::NotFound(format!("no user {target}")));
        }
        let fingerprint = format!("{target}:{amount_nanos}");
        // The reason shows in the user's transactions too, not only in the trail.
        let description = match reason {
            Some(r) => format!("Balance added by {}: {r}", caller.user_id),
            None => format!("Balance added by {}", caller.user_id),
        };
        let (balance, applied) =
            self.credit(&target, amount_nanos, "top_up", description, idempotency_key, fingerprint).await?;
        if applied {
            let event = Event {
                owner: target.clone(),
                action: action::BALANCE_ADDED,
                resource_type: resource::BILLING_ACCOUNT,
                resource_id: target,
                description: match reason {
                    Some(r) => format!("Added {} USD to the balance: {r}", Nanos(amount_nanos)),
                    None => format!("Added {} USD to the balance", Nanos(amount_nanos)),
                },
                metadata: serde_json::json!({
                    "amountNanos": amount_nanos.to_string(),
                    "balanceAfterNanos": balance.to_string(),
                    "reason": reason,
                }),
            };
            self.control.record(Actor::User(caller), event).await;
        }
        Ok(balance)
    }

    /// Credits a user outside any request (the first admin's starting credit).
    pub async fn grant(&self, user_id: &str, amount_nanos: i64, description: &str) -> Result<i64, ControlError> {
        Ok(self.credit(user_id, amount_nanos, "grant", description.into(), None, String::new()).await?.0)
    }

    async fn credit(
        &self,
        user_id: &str,
        amount_nanos: i64,
        kind: &str,
        description: String,
        idempotency_key: Option<String>,
        fingerprint: String,
    ) -> Result<(i64, bool), ControlError> {
        let credit = Credit {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: user_id.into(),
            amount_nanos,
            kind: kind.into(),
            description,
            idempotency_key,
            fingerprint,
            created_at: self.control.now(),
        };
        match self.control.store.ledger().credit(&credit).await? {
            CreditOutcome::Applied { balance_after_nanos } => Ok((balance_after_nanos, true)),
            CreditOutcome::Replayed { balance_after_nanos } => Ok((balance_after_nanos, false)),
            CreditOutcome::KeyReused => {
                Err(ControlError::AlreadyExists("the Idempotency-Key was already used with a different request".into()))
            }
        }
    }

    /// Top-ups and one charge per calendar month (with per-model details), newest first.
    pub async fn transactions(
        &self,
        caller: &Principal,
        user_id: Option<&str>,
    ) -> Result<Vec<Transaction>, ControlError> {
        let user = caller.scope(user_id)?;
        let entries = self.control.store.ledger().entries(&user).await?;
        let days = self.control.store.usage().day_totals(&user, 0, i64::MAX).await?;
        let names = self.model_names(days.iter().map(|d| d.model.as_str())).await?;
        Ok(views::transactions(&entries, &days, &names))
    }

    pub async fn spending(&self, caller: &Principal, user_id: Option<&str>) -> Result<Spending, ControlError> {
        let user = caller.scope(user_id)?;
        self.spending_of(&user).await
    }

    /// Spending of several users (admin).
    pub async fn spendings(
        &self,
        caller: &Principal,
        targets: &[String],
    ) -> Result<Vec<(String, Spending)>, ControlError> {
        caller.require_admin()?;
        check_targets(targets)?;
        let mut out = Vec::with_capacity(targets.len());
        for t in targets {
            out.push((t.clone(), self.spending_of(&t.to_ascii_lowercase()).await?));
        }
        Ok(out)
    }

    async fn spending_of(&self, user: &str) -> Result<Spending, ControlError> {
        const DAY: i64 = tm_store::usage::DAY_MS;
        let now = self.control.now();
        let usage = self.control.store.usage();
        Ok(Spending {
            last_24h: usage.spend_since(user, now - DAY).await?,
            last_7d: usage.spend_since(user, now - 7 * DAY).await?,
            last_30d: usage.spend_since(user, now - 30 * DAY).await?,
        })
    }

    /// Spend and cache savings per day over the last 30 days, oldest first.
    pub async fn spending_history(
        &self,
        caller: &Principal,
        user_id: Option<&str>,
    ) -> Result<Vec<SpendingBucket>, ControlError> {
        let user = caller.scope(user_id)?;
        let now = self.control.now();
        let from = (now / tm_store::usage::DAY_MS - 29) * tm_store::usage::DAY_MS;
        let days = self.control.store.usage().day_totals(&user, from, now + 1).await?;
        Ok(views::spending_buckets(&days))
    }

    /// Token counts per (bucket, model) of requests finished in `[start, end)` (Unix ms;
    /// default: the last 30 days).
    pub async fn usage_history(
        &self,
        caller: &Principal,
        user_id: Option<&str>,
        bucket: Bucket,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Result<Vec<UsageHistoryRow>, ControlError> {
        let user = caller.scope(user_id)?;
        let end = end.unwrap_or_else(|| self.control.now() + 1);
        let start = start.unwrap_or(end - 30 * tm_store::usage::DAY_MS);
        if start > end {
            return Err(ControlError::invalid("startTime", "is after endTime"));
        }
        let days = self.control.store.usage().day_totals(&user, start, end).await?;
        Ok(views::usage_rows(&days, bucket))
    }

    /// Display names of models, from their pricing rows (the model id when none).
    async fn model_names<'a>(
        &self,
        models: impl Iterator<Item = &'a str>,
    ) -> Result<HashMap<String, String>, ControlError> {
        let mut names = HashMap::new();
        for model in models {
            if !names.contains_key(model) {
                let rows = self.control.store.pricing().list(Some(model), false).await?;
                let best = rows.iter().find(|r| r.is_active != 0).or(rows.first());
                let name = best.map(|r| r.name.clone()).filter(|n| !n.is_empty()).unwrap_or_else(|| model.to_owned());
                names.insert(model.to_owned(), name);
            }
        }
        Ok(names)
    }
}

fn check_targets(targets: &[String]) -> Result<(), ControlError> {
    if targets.len() > MAX_TARGETS {
        return Err(ControlError::invalid("targetUserIds", format!("names more than {MAX_TARGETS} users")));
    }
    Ok(())
}
