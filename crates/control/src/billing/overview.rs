//! What the console shows a signed-in user about their money and usage: the overview
//! (balance, spend over three windows, what the KV cache saved, daily spend) and usage per
//! day and model, filtered by model and API key.

use std::collections::HashMap;

use tm_store::ledger::Account;
use tm_store::usage::{DayTotals, UsageFilter, DAY_MS};

use super::{views, Billing, SpendingBucket};
use crate::{ControlError, Principal};

/// The console's first page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overview {
    pub account: Account,
    /// Since midnight UTC.
    pub spent_today_nanos: i64,
    pub spent_7d_nanos: i64,
    pub spent_30d_nanos: i64,
    /// Cached prompt tokens of the last 30 days at each model's current input price, as
    /// `tm cost` computes it.
    pub cache_saved_30d_nanos: i64,
    pub cached_tokens_30d: i64,
    /// The last 30 days, oldest first; days without requests are left out.
    pub daily: Vec<SpendingBucket>,
}

/// The longest window the usage views read at once.
pub const MAX_USAGE_DAYS: i64 = 366;

impl Billing<'_> {
    pub async fn overview(&self, caller: &Principal) -> Result<Overview, ControlError> {
        let user = caller.scope(None)?;
        let now = self.control.now();
        let today = now / DAY_MS * DAY_MS;
        let from = today - 29 * DAY_MS;
        let account = self.control.store.ledger().account(&user).await?;
        let usage = self.control.store.usage();
        let days = usage.day_totals(&user, from, now + 1).await?;
        let spent_since = |start: i64| days.iter().filter(|d| d.day * DAY_MS >= start).map(|d| d.cost_nanos).sum();
        let mut cached_by_model: HashMap<&str, i64> = HashMap::new();
        for d in &days {
            *cached_by_model.entry(&d.model).or_default() += d.cached_tokens;
        }
        let mut cache_saved = 0i64;
        for (model, cached) in &cached_by_model {
            if let Some(active) = self.control.pricing().active(model).await? {
                let tokens = u64::try_from(*cached).unwrap_or(0);
                cache_saved = cache_saved.saturating_add(active.price.input_cost(tokens).0);
            }
        }
        Ok(Overview {
            account,
            spent_today_nanos: spent_since(today),
            // Exact windows, as the Control Plane's spending summary computes them.
            spent_7d_nanos: usage.spend_since(&user, now - 7 * DAY_MS).await?,
            spent_30d_nanos: usage.spend_since(&user, now - 30 * DAY_MS).await?,
            cache_saved_30d_nanos: cache_saved,
            cached_tokens_30d: cached_by_model.values().sum(),
            daily: views::spending_buckets(&days),
        })
    }

    /// Usage per (UTC day, model) of the caller's requests finished in `[from, to)` (Unix
    /// ms) that `filter` keeps, oldest day first.
    pub async fn daily_usage(
        &self,
        caller: &Principal,
        from: i64,
        to: i64,
        filter: &UsageFilter,
    ) -> Result<Vec<DayTotals>, ControlError> {
        let user = caller.scope(None)?;
        if from >= to {
            return Err(ControlError::invalid("from", "is not before to"));
        }
        if to - from > MAX_USAGE_DAYS * DAY_MS {
            return Err(ControlError::invalid("from", format!("spans more than {MAX_USAGE_DAYS} days")));
        }
        Ok(self.control.store.usage().day_totals_of(&user, from, to, filter).await?)
    }

    /// When each of the caller's keys last finished a request (Unix ms), by public id.
    pub async fn keys_last_used(&self, caller: &Principal) -> Result<HashMap<String, i64>, ControlError> {
        let user = caller.scope(None)?;
        Ok(self.control.store.usage().last_used_by_key(&user).await?.into_iter().collect())
    }
}
