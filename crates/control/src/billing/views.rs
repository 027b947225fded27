//! Billing views folded from per-day usage totals: monthly charge transactions (the shape
//! `tm cost` reads), spending buckets and usage history rows.

use std::collections::{BTreeMap, HashMap};

use tm_store::ledger::EntryRow;
use tm_store::usage::{DayTotals, DAY_MS};

/// Days from 0000-... to the Unix epoch in the Julian day count `time` uses.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Day,
    Week,
    Month,
}

impl Bucket {
    /// `USAGE_BUCKET_DAY` / `_WEEK` / `_MONTH` (or the short form, any case).
    pub fn parse(s: &str) -> Option<Bucket> {
        let upper = s.trim().to_ascii_uppercase();
        match upper.strip_prefix("USAGE_BUCKET_").unwrap_or(&upper) {
            "DAY" => Some(Bucket::Day),
            "WEEK" => Some(Bucket::Week),
            "MONTH" => Some(Bucket::Month),
            _ => None,
        }
    }

    /// The first day (since the epoch) of the bucket holding `day`: weeks start on Monday.
    fn start(self, day: i64) -> i64 {
        match self {
            Bucket::Day => day,
            Bucket::Week => day - (day + 3).rem_euclid(7), // 1970-01-01 was a Thursday
            Bucket::Month => {
                let (year, month) = year_month(day);
                first_of_month(year, month)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionKind {
    TopUp,
    Charge,
}

/// One model's share of a monthly charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCharge {
    pub model: String,
    pub name: String,
    pub events: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub total_nanos: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub id: String,
    pub kind: TransactionKind,
    /// Unix ms: the credit's time, or a monthly charge's first request.
    pub created_at: i64,
    pub amount_nanos: i64,
    pub description: String,
    /// Charges only.
    pub models: Vec<ModelCharge>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spending {
    pub last_24h: i64,
    pub last_7d: i64,
    pub last_30d: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendingBucket {
    /// Unix ms of the day's start (UTC).
    pub start: i64,
    pub amount_nanos: i64,
    pub cost_saving_nanos: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageHistoryRow {
    /// Unix ms of the bucket's start (UTC).
    pub start: i64,
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub requests: i64,
}

/// Credits as top-ups, usage as one charge per calendar month; newest first.
pub fn transactions(entries: &[EntryRow], days: &[DayTotals], names: &HashMap<String, String>) -> Vec<Transaction> {
    let mut out: Vec<Transaction> = entries
        .iter()
        .map(|e| Transaction {
            id: e.id.clone(),
            kind: TransactionKind::TopUp,
            created_at: e.created_at,
            amount_nanos: e.amount_nanos,
            description: e.description.clone(),
            models: Vec::new(),
        })
        .collect();
    let mut months: BTreeMap<(i32, u8), Vec<&DayTotals>> = BTreeMap::new();
    for d in days {
        months.entry(year_month(d.day)).or_default().push(d);
    }
    for ((year, month), days) in months {
        let mut models: BTreeMap<&str, ModelCharge> = BTreeMap::new();
        for d in &days {
            let m = models.entry(&d.model).or_insert_with(|| ModelCharge {
                model: d.model.clone(),
                name: names.get(&d.model).cloned().unwrap_or_else(|| d.model.clone()),
                events: 0,
                input_tokens: 0,
                output_tokens: 0,
                cached_tokens: 0,
                total_nanos: 0,
            });
            m.events += d.requests;
            m.input_tokens += d.prompt_tokens;
            m.output_tokens += d.completion_tokens;
            m.cached_tokens += d.cached_tokens;
            m.total_nanos += d.cost_nanos;
        }
        out.push(Transaction {
            id: format!("charge-{year:04}-{month:02}"),
            kind: TransactionKind::Charge,
            created_at: days.iter().map(|d| d.first_at).min().unwrap_or(0),
            amount_nanos: models.values().map(|m| m.total_nanos).sum(),
            description: format!("Serverless inference, {year:04}-{month:02}"),
            models: models.into_values().collect(),
        });
    }
    out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
    out
}

/// Spend and savings per day, oldest first.
pub fn spending_buckets(days: &[DayTotals]) -> Vec<SpendingBucket> {
    let mut by_day: BTreeMap<i64, SpendingBucket> = BTreeMap::new();
    for d in days {
        let b = by_day.entry(d.day).or_insert(SpendingBucket {
            start: d.day * DAY_MS,
            amount_nanos: 0,
            cost_saving_nanos: 0,
        });
        b.amount_nanos += d.cost_nanos;
        b.cost_saving_nanos += d.cache_saving_nanos;
    }
    by_day.into_values().collect()
}

/// Token counts per (bucket, model), oldest bucket first.
pub fn usage_rows(days: &[DayTotals], bucket: Bucket) -> Vec<UsageHistoryRow> {
    let mut rows: BTreeMap<(i64, &str), UsageHistoryRow> = BTreeMap::new();
    for d in days {
        let start = bucket.start(d.day) * DAY_MS;
        let r = rows.entry((start, &d.model)).or_insert_with(|| UsageHistoryRow {
            start,
            model: d.model.clone(),
            input_tokens: 0,
            output_tokens: 0,
            cached_tokens: 0,
            requests: 0,
        });
        r.input_tokens += d.prompt_tokens;
        r.output_tokens += d.completion_tokens;
        r.cached_tokens += d.cached_tokens;
        r.requests += d.requests;
    }
    rows.into_values().collect()
}

fn date(day: i64) -> time::Date {
    i32::try_from(day + UNIX_EPOCH_JULIAN_DAY)
        .ok()
        .and_then(|j| time::Date::from_julian_day(j).ok())
        .unwrap_or(time::Date::MIN)
}

fn year_month(day: i64) -> (i32, u8) {
    let d = date(day);
    (d.year(), u8::from(d.month()))
}

fn first_of_month(year: i32, month: u8) -> i64 {
    time::Month::try_from(month)
        .ok()
        .and_then(|m| time::Date::from_calendar_date(year, m, 1).ok())
        .map_or(0, |d| i64::from(d.to_julian_day()) - UNIX_EPOCH_JULIAN_DAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(model: &str, day: i64, cost: i64) -> DayTotals {
        DayTotals {
            day,
            model: model.into(),
            requests: 2,
            prompt_tokens: 10,
            cached_tokens: 4,
            completion_tokens: 5,
            cost_nanos: cost,
            cache_saving_nanos: 1,
            first_at: day * DAY_MS + 1_000,
        }
    }

    #[test]
    fn buckets_start_on_day_monday_and_first_of_month() {
        let d = 20_418; // 2025-11-26, a Wednesday
        assert_eq!(date(d), time::macros::date!(2025 - 11 - 26));
        assert_eq!(date(Bucket::Week.start(d)), time::macros::date!(2025 - 11 - 24));
        assert_eq!(date(Bucket::Month.start(d)), time::macros::date!(2025 - 11 - 01));
        assert_eq!(Bucket::parse("USAGE_BUCKET_WEEK"), Some(Bucket::Week));
        assert_eq!(Bucket::parse("hour"), None);
    }

    #[test]
    fn usage_is_charged_once_per_month_with_model_details() {
        let nov = 20_418; // 2025-11-26
        let dec = nov + 10; // 2025-12-06
        let days = [day("a", nov, 100), day("b", nov, 50), day("a", nov + 1, 7), day("a", dec, 3)];
        let names = HashMap::from([("a".to_owned(), "Model A".to_owned())]);
        let tx = transactions(&[], &days, &names);
        assert_eq!(tx.len(), 2);
        assert_eq!((tx[0].id.as_str(), tx[0].amount_nanos), ("charge-2025-12", 3));
        let nov_tx = &tx[1];
        assert_eq!(nov_tx.amount_nanos, 157);
        assert_eq!(nov_tx.created_at, nov * DAY_MS + 1_000);
        let a = &nov_tx.models[0];
        assert_eq!(
            (a.name.as_str(), a.events, a.input_tokens, a.output_tokens, a.total_nanos),
            ("Model A", 4, 20, 10, 107)
        );
        assert_eq!(nov_tx.models[1].name, "b");
    }

    #[test]
    fn usage_rows_fold_days_into_weeks() {
        let mon = 20_416; // 2025-11-24
        let rows = usage_rows(&[day("a", mon, 1), day("a", mon + 2, 1), day("a", mon + 7, 1)], Bucket::Week);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].start, rows[0].requests, rows[0].cached_tokens), (mon * DAY_MS, 4, 8));
    }
}
