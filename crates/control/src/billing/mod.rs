//! Prepaid billing: serverless prices, balances and top-ups, and the views built from
//! usage records (transactions, spending, usage history). The inference path's holds and
//! settlements live in the gateway; what they write is read back here.

pub mod address;
pub mod gpu;
pub mod views;

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tm_money::{Nanos, Price};
use tm_store::ledger::{Account, Credit, CreditOutcome};
use tm_store::pricing::PriceRow;

pub use views::{Bucket, ModelCharge, Spending, SpendingBucket, Transaction, TransactionKind, UsageHistoryRow};

use crate::activity::{action, resource, Actor, Event};
use crate::{millis, Control, ControlError, Principal};

const MAX_NAME_CHARS: usize = 200;
const MAX_TARGETS: usize = 1_000;

/// A model's current price and display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivePrice {
    pub price: Price,
    pub name: String,
}

/// A pricing row as an admin writes it: on create, `model`, `input` and `output` are
/// required; on update (`id` names the row) what is None keeps its value.
#[derive(Debug, Clone, Default)]
pub struct PricePatch {
    pub id: Option<String>,
    pub model: Option<String>,
    pub name: Option<String>,
    pub input: Option<i64>,
    pub output: Option<i64>,
    pub cached: Option<i64>,
    pub is_active: Option<bool>,
}

/// A pricing row's content before it is stored.
struct PriceInput {
    model: String,
    name: String,
    price: Price,
    is_active: bool,
}

/// Active prices by model, briefly reused; any pricing change through this process clears it.
#[derive(Debug, Default)]
pub(crate) struct PriceCache(Mutex<HashMap<String, (Option<ActivePrice>, i64)>>);

impl Control {
    /// The price requests for `model` pay, or None when it has no active price (then it
    /// is not served).
    pub async fn active_price(&self, model: &str) -> Result<Option<ActivePrice>, ControlError> {
        let now = self.now();
        if let Some((price, at)) = self.price_cache.0.lock().unwrap_or_else(PoisonError::into_inner).get(model).cloned()
        {
            if now - at < millis(self.settings.key_cache_ttl) {
                return Ok(price);
            }
        }
        let row = self.store.pricing().active(model).await?;
        let price = row.map(|r| ActivePrice { price: price_of(&r), name: r.name });
        self.price_cache
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(model.to_owned(), (price.clone(), now));
        Ok(price)
    }

    /// Pricing rows, for anyone signed in.
    pub async fn list_pricing(&self, model: Option<&str>, active_only: bool) -> Result<Vec<PriceRow>, ControlError> {
        Ok(self.store.pricing().list(model.filter(|m| !m.is_empty()), active_only).await?)
    }

    pub async fn create_pricing(&self, caller: &Principal, patch: PricePatch) -> Result<PriceRow, ControlError> {
        caller.require_admin()?;
        let now = self.now();
        let id = match patch.id.as_deref().map(str::trim).filter(|id| !id.is_empty()) {
            Some(id) => id.to_owned(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let model = patch.model.ok_or(ControlError::invalid("pricing.model", "is required"))?;
        let input = PriceInput {
            name: patch.name.unwrap_or_else(|| model.clone()),
            price: Price {
                input: Nanos(patch.input.ok_or(ControlError::invalid("pricing.inputTokenPrice", "is required"))?),
                output: Nanos(patch.output.ok_or(ControlError::invalid("pricing.outputTokenPrice", "is required"))?),
                cached: Nanos(patch.cached.unwrap_or(0)),
            },
            is_active: patch.is_active.unwrap_or(true),
            model,
        };
        let row = pricing_row(id, &input, now, now)?;
        self.store.pricing().insert(&row).await.map_err(|e| match e {
            tm_store::StoreError::Conflict(_) => ControlError::AlreadyExists(format!("pricing {} exists", row.id)),
            other => other.into(),
        })?;
        self.forget_prices();
        self.record(Actor::User(caller), pricing_event(caller, &row, action::PRICING_CREATED, "Created")).await;
        Ok(row)
    }

    pub async fn update_pricing(&self, caller: &Principal, patch: PricePatch) -> Result<PriceRow, ControlError> {
        caller.require_admin()?;
        let id = patch
            .id
            .clone()
            .filter(|id| !id.trim().is_empty())
            .ok_or(ControlError::invalid("pricing.id", "is required to update a pricing row"))?;
        let old = self.store.pricing().get(&id).await?.ok_or(ControlError::NotFound(format!("no pricing {id}")))?;
        let input = PriceInput {
            model: patch.model.unwrap_or(old.model),
            name: patch.name.unwrap_or(old.name),
            price: Price {
                input: Nanos(patch.input.unwrap_or(old.input_per_mtok)),
                output: Nanos(patch.output.unwrap_or(old.output_per_mtok)),
                cached: Nanos(patch.cached.unwrap_or(old.cached_per_mtok)),
            },
            is_active: patch.is_active.unwrap_or(old.is_active != 0),
        };
        let row = pricing_row(id, &input, old.created_at, self.now())?;
        self.store.pricing().update(&row).await?;
        self.forget_prices();
        self.record(Actor::User(caller), pricing_event(caller, &row, action::PRICING_UPDATED, "Updated")).await;
        Ok(row)
    }

    /// Deleting a row that is gone already succeeds (DELETE may be retried).
    pub async fn delete_pricing(&self, caller: &Principal, id: &str) -> Result<(), ControlError> {
        caller.require_admin()?;
        if id.trim().is_empty() {
            return Err(ControlError::invalid("id", "is required"));
        }
        if let Some(row) = self.store.pricing().get(id).await? {
            self.store.pricing().delete(id).await?;
            self.forget_prices();
            self.record(Actor::User(caller), pricing_event(caller, &row, action::PRICING_DELETED, "Deleted")).await;
        }
        Ok(())
    }

    /// Gives each model that has no pricing row at all one at `price` (start-up).
    pub async fn seed_prices(&self, models: &[String], price: Price) -> Result<Vec<String>, ControlError> {
        let mut seeded = Vec::new();
        for model in models {
            if self.store.pricing().list(Some(model), false).await?.is_empty() {
                let now = self.now();
                let input = PriceInput { model: model.clone(), name: model.clone(), price, is_active: true };
                self.store.pricing().insert(&pricing_row(uuid::Uuid::new_v4().to_string(), &input, now, now)?).await?;
                seeded.push(model.clone());
            }
        }
        self.forget_prices();
        Ok(seeded)
    }

    fn forget_prices(&self) {
        self.price_cache.0.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    pub async fn balance(&self, caller: &Principal, user_id: Option<&str>) -> Result<Account, ControlError> {
        let user = caller.scope(user_id)?;
        Ok(self.store.ledger().account(&user).await?)
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
            out.push((t.clone(), self.store.ledger().account(&t.to_ascii_lowercase()).await?));
        }
        Ok(out)
    }

    /// Adds money to a user's balance (admin). With an idempotency key a retry returns the
    /// first answer; the same key with another request is refused. Returns the balance
    /// after the credit.
    pub async fn add_balance(
        &self,
        caller: &Principal,
        target: &str,
        amount_nanos: i64,
        idempotency_key: Option<String>,
    ) -> Result<i64, ControlError> {
        caller.require_admin()?;
        let target = target.trim().to_ascii_lowercase();
        if target.is_empty() {
            return Err(ControlError::invalid("targetUserId", "is required"));
        }
        if amount_nanos <= 0 {
            return Err(ControlError::invalid("amount", "must be more than zero"));
        }
        if self.store.users().by_id(&target).await?.is_none() {
            return Err(ControlError::NotFound(format!("no user {target}")));
        }
        let fingerprint = format!("{target}:{amount_nanos}");
        let description = format!("Balance added by {}", caller.user_id);
        let (balance, applied) =
            self.credit(&target, amount_nanos, "top_up", description, idempotency_key, fingerprint).await?;
        if applied {
            let event = Event {
                owner: target.clone(),
                action: action::BALANCE_ADDED,
                resource_type: resource::BILLING_ACCOUNT,
                resource_id: target,
                description: format!("Added {} USD to the balance", Nanos(amount_nanos)),
                metadata: serde_json::json!({"amountNanos": amount_nanos.to_string(), "balanceAfterNanos": balance.to_string()}),
            };
            self.record(Actor::User(caller), event).await;
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
            created_at: self.now(),
        };
        match self.store.ledger().credit(&credit).await? {
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
        let entries = self.store.ledger().entries(&user).await?;
        let days = self.store.usage().day_totals(&user, 0, i64::MAX).await?;
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
        let now = self.now();
        let usage = self.store.usage();
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
        let now = self.now();
        let from = (now / tm_store::usage::DAY_MS - 29) * tm_store::usage::DAY_MS;
        let days = self.store.usage().day_totals(&user, from, now + 1).await?;
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
        let end = end.unwrap_or_else(|| self.now() + 1);
        let start = start.unwrap_or(end - 30 * tm_store::usage::DAY_MS);
        if start > end {
            return Err(ControlError::invalid("startTime", "is after endTime"));
        }
        let days = self.store.usage().day_totals(&user, start, end).await?;
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
                let rows = self.store.pricing().list(Some(model), false).await?;
                let best = rows.iter().find(|r| r.is_active != 0).or(rows.first());
                let name = best.map(|r| r.name.clone()).filter(|n| !n.is_empty()).unwrap_or_else(|| model.to_owned());
                names.insert(model.to_owned(), name);
            }
        }
        Ok(names)
    }
}

fn price_of(r: &PriceRow) -> Price {
    Price { input: Nanos(r.input_per_mtok), output: Nanos(r.output_per_mtok), cached: Nanos(r.cached_per_mtok) }
}

fn pricing_row(id: String, input: &PriceInput, created_at: i64, updated_at: i64) -> Result<PriceRow, ControlError> {
    let model = input.model.trim();
    if model.is_empty() {
        return Err(ControlError::invalid("pricing.model", "is required"));
    }
    if input.name.chars().count() > MAX_NAME_CHARS {
        return Err(ControlError::invalid("pricing.name", format!("is longer than {MAX_NAME_CHARS} characters")));
    }
    for (field, value) in [
        ("pricing.inputTokenPrice", input.price.input),
        ("pricing.outputTokenPrice", input.price.output),
        ("pricing.cachedTokenPrice", input.price.cached),
    ] {
        if value < Nanos::ZERO {
            return Err(ControlError::invalid(field, "must not be negative"));
        }
    }
    Ok(PriceRow {
        id,
        model: model.to_owned(),
        name: input.name.trim().to_owned(),
        input_per_mtok: input.price.input.get(),
        output_per_mtok: input.price.output.get(),
        cached_per_mtok: input.price.cached.get(),
        is_active: i64::from(input.is_active),
        created_at,
        updated_at,
    })
}

fn check_targets(targets: &[String]) -> Result<(), ControlError> {
    if targets.len() > MAX_TARGETS {
        return Err(ControlError::invalid("targetUserIds", format!("names more than {MAX_TARGETS} users")));
    }
    Ok(())
}

fn pricing_event(caller: &Principal, row: &PriceRow, action: &'static str, verb: &str) -> Event {
    Event {
        owner: caller.user_id.clone(),
        action,
        resource_type: resource::SERVERLESS_PRICING,
        resource_id: row.id.clone(),
        description: format!("{verb} the serverless price of {}", row.model),
        metadata: serde_json::json!({"model": row.model}),
    }
}
