//! Serverless prices: what each model's input, output and cached tokens cost, and the
//! short-lived cache of active prices the inference path reads on every request.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tm_money::{Nanos, Price, UnixMs};
use tm_store::pricing::PriceRow;

use super::MAX_NAME_CHARS;
use crate::activity::{action, resource, Actor, Event};
use crate::changes::Change;
use crate::{millis, Control, ControlError, Principal};

/// A model's current price and display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivePrice {
    pub price: Price,
    pub name: String,
}

/// A model's serverless price as admins manage it (several per model; one active).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPrice {
    pub id: String,
    pub model: String,
    /// Display name.
    pub name: String,
    pub price: Price,
    pub is_active: bool,
    pub created_at: UnixMs,
    pub updated_at: UnixMs,
}

impl From<PriceRow> for ModelPrice {
    fn from(r: PriceRow) -> ModelPrice {
        ModelPrice {
            price: price_of(&r),
            is_active: r.is_active != 0,
            id: r.id,
            model: r.model,
            name: r.name,
            created_at: UnixMs(r.created_at),
            updated_at: UnixMs(r.updated_at),
        }
    }
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

/// Active prices by model, briefly reused; any pricing change clears it (in every process
/// on a PostgreSQL database, see `changes`).
#[derive(Debug, Default)]
pub(crate) struct PriceCache(Mutex<HashMap<String, (Option<ActivePrice>, i64)>>);

impl PriceCache {
    pub(crate) fn clear(&self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }
}

/// Serverless prices per model.
#[derive(Clone, Copy)]
pub struct Pricing<'c> {
    pub(crate) control: &'c Control,
}

impl Pricing<'_> {
    /// The price requests for `model` pay, or None when it has no active price (then it
    /// is not served).
    pub async fn active(&self, model: &str) -> Result<Option<ActivePrice>, ControlError> {
        let now = self.control.now();
        if let Some((price, at)) =
            self.control.price_cache.0.lock().unwrap_or_else(PoisonError::into_inner).get(model).cloned()
        {
            if now - at < millis(self.control.settings.key_cache_ttl) {
                return Ok(price);
            }
        }
        let row = self.control.store.pricing().active(model).await?;
        let price = row.map(|r| ActivePrice { price: price_of(&r), name: r.name });
        self.control
            .price_cache
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(model.to_owned(), (price.clone(), now));
        Ok(price)
    }

    /// Pricing rows, for anyone signed in.
    pub async fn list(&self, model: Option<&str>, active_only: bool) -> Result<Vec<ModelPrice>, ControlError> {
        let rows = self.control.store.pricing().list(model.filter(|m| !m.is_empty()), active_only).await?;
        Ok(rows.into_iter().map(ModelPrice::from).collect())
    }

    pub async fn create(&self, caller: &Principal, patch: PricePatch) -> Result<ModelPrice, ControlError> {
        caller.require_admin()?;
        let now = self.control.now();
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
        self.control.store.pricing().insert(&row).await.map_err(|e| match e {
            tm_store::StoreError::Conflict(_) => ControlError::AlreadyExists(format!("pricing {} exists", row.id)),
            other => other.into(),
        })?;
        self.control.publish(Change::Prices).await;
        self.control.record(Actor::User(caller), pricing_event(caller, &row, action::PRICING_CREATED, "Created")).await;
        Ok(row.into())
    }

    pub async fn update(&self, caller: &Principal, patch: PricePatch) -> Result<ModelPrice, ControlError> {
        caller.require_admin()?;
        let id = patch
            .id
            .clone()
            .filter(|id| !id.trim().is_empty())
            .ok_or(ControlError::invalid("pricing.id", "is required to update a pricing row"))?;
        let old =
            self.control.store.pricing().get(&id).await?.ok_or(ControlError::NotFound(format!("no pricing {id}")))?;
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
        let row = pricing_row(id, &input, old.created_at, self.control.now())?;
        self.control.store.pricing().update(&row).await?;
        self.control.publish(Change::Prices).await;
        self.control.record(Actor::User(caller), pricing_event(caller, &row, action::PRICING_UPDATED, "Updated")).await;
        Ok(row.into())
    }

    /// Deleting a row that is gone already succeeds (DELETE may be retried).
    pub async fn delete(&self, caller: &Principal, id: &str) -> Result<(), ControlError> {
        caller.require_admin()?;
        if id.trim().is_empty() {
            return Err(ControlError::invalid("id", "is required"));
        }
        if let Some(row) = self.control.store.pricing().get(id).await? {
            self.control.store.pricing().delete(id).await?;
            self.control.publish(Change::Prices).await;
            self.control
                .record(Actor::User(caller), pricing_event(caller, &row, action::PRICING_DELETED, "Deleted"))
                .await;
        }
        Ok(())
    }

    /// Gives each model that has no pricing row at all one at `price` (start-up).
    pub async fn seed(&self, models: &[String], price: Price) -> Result<Vec<String>, ControlError> {
        let mut seeded = Vec::new();
        for model in models {
            if self.control.store.pricing().list(Some(model), false).await?.is_empty() {
                let now = self.control.now();
                let input = PriceInput { model: model.clone(), name: model.clone(), price, is_active: true };
                self.control
                    .store
                    .pricing()
                    .insert(&pricing_row(uuid::Uuid::new_v4().to_string(), &input, now, now)?)
                    .await?;
                seeded.push(model.clone());
            }
        }
        self.control.publish(Change::Prices).await;
        Ok(seeded)
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
