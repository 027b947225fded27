//! Usage per day and model: stacked tokens, the cache hit rate over time, and a table;
//! filtered by date range, model and API key.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::response::Response;
use minijinja::context;
use serde::{Deserialize, Serialize};
use tm_control::ControlError;
use tm_store::usage::{UsageFilter, DAY_MS};

use super::given;
use crate::charts::{self, Series};
use crate::error::PageError;
use crate::render::page;
use crate::session::Session;
use crate::Console;

#[derive(Deserialize, Default)]
pub struct Filter {
    /// First day, `YYYY-MM-DD` (UTC); default 29 days before `to`.
    #[serde(default)]
    from: String,
    /// Last day, included; default today.
    #[serde(default)]
    to: String,
    #[serde(default)]
    model: String,
    /// A key's public id, or `control-plane:<user id>` for the console and Control Plane.
    #[serde(default)]
    key: String,
}

#[derive(Serialize)]
struct Row {
    day: i64,
    model: String,
    requests: i64,
    input: i64,
    cached: i64,
    output: i64,
    cost: i64,
}

pub async fn show(
    State(console): State<Console>,
    session: Session,
    Query(f): Query<Filter>,
) -> Result<Response, PageError> {
    let today = console.control.now_ms() / DAY_MS;
    let to = match given(&f.to) {
        Some(s) => parse_day("to", s)?,
        None => today,
    };
    let from = match given(&f.from) {
        Some(s) => parse_day("from", s)?,
        None => to - 29,
    };
    if from > to {
        return Err(ControlError::invalid("from", "is after to").into());
    }
    let filter =
        UsageFilter { model: given(&f.model).map(str::to_owned), api_key_id: given(&f.key).map(str::to_owned) };
    let me = &session.principal;
    let totals = console.control.billing().daily_usage(me, from * DAY_MS, (to + 1) * DAY_MS, &filter).await?;

    let days: Vec<i64> = (from..=to).collect();
    let mut per_day: BTreeMap<i64, (f64, f64, f64)> = BTreeMap::new();
    for t in &totals {
        let e = per_day.entry(t.day).or_default();
        e.0 += (t.prompt_tokens - t.cached_tokens) as f64;
        e.1 += t.cached_tokens as f64;
        e.2 += t.completion_tokens as f64;
    }
    let pick = |i: usize| -> Vec<f64> {
        days.iter().map(|d| per_day.get(d).map_or(0.0, |v| [v.0, v.1, v.2].get(i).copied().unwrap_or(0.0))).collect()
    };
    let labels: Vec<String> = days.iter().map(|d| super::day_label(*d)).collect();
    let tokens_chart = charts::stacked_bars(
        "Tokens per day: uncached input, cached input and output",
        &labels,
        &[
            Series { name: "input (uncached)", color: charts::BLUE, values: pick(0) },
            Series { name: "input (cached)", color: charts::GREEN, values: pick(1) },
            Series { name: "output", color: charts::ORANGE, values: pick(2) },
        ],
        "tokens",
    );
    let hit_rates: Vec<Option<f64>> =
        days.iter().map(|d| per_day.get(d).filter(|v| v.0 + v.1 > 0.0).map(|v| 100.0 * v.1 / (v.0 + v.1))).collect();
    let hit_chart = charts::percent_line(
        "Cache hit rate per day: cached share of input tokens",
        &labels,
        &hit_rates,
        "cache hit rate",
    );

    let rows: Vec<Row> = totals
        .iter()
        .rev()
        .map(|t| Row {
            day: t.day * DAY_MS,
            model: t.model.clone(),
            requests: t.requests,
            input: t.prompt_tokens,
            cached: t.cached_tokens,
            output: t.completion_tokens,
            cost: t.cost_nanos,
        })
        .collect();
    let sum = |g: fn(&Row) -> i64| rows.iter().map(g).sum::<i64>();
    let total = context! {
        requests => sum(|r| r.requests), input => sum(|r| r.input), cached => sum(|r| r.cached),
        output => sum(|r| r.output), cost => sum(|r| r.cost),
    };
    let mut models: Vec<String> =
        console.control.pricing().list(None, false).await?.into_iter().map(|p| p.model).collect();
    models.sort();
    models.dedup();
    let keys: Vec<(String, String)> = console
        .control
        .keys()
        .list(me, None, true)
        .await?
        .into_iter()
        .map(|k| (k.public_id.clone(), format!("{} ({})", k.name, k.public_id)))
        .chain([(format!("control-plane:{}", me.user_id), "Console and Control Plane chats".to_owned())])
        .collect();
    let ctx = context! {
        from => iso_day(from), to => iso_day(to), model => f.model, key => f.key,
        models, keys, rows, total,
        tokens_chart => minijinja::Value::from_safe_string(tokens_chart),
        hit_chart => minijinja::Value::from_safe_string(hit_chart),
    };
    page(&console, &session, "usage.html", "usage", "Usage", ctx)
}

/// Days since the epoch of a `YYYY-MM-DD` date.
fn parse_day(field: &'static str, s: &str) -> Result<i64, PageError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(s, &format).map_err(|_| ControlError::invalid(field, "is not a date (YYYY-MM-DD)"))?;
    Ok(date.midnight().assume_utc().unix_timestamp().div_euclid(86_400))
}

fn iso_day(day: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(day * 86_400).map(|t| t.date().to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_read_and_write_back() {
        let day = parse_day("from", "2026-12-07").ok();
        assert_eq!(day.map(iso_day).as_deref(), Some("2026-12-07"));
        assert!(parse_day("from", "07/12/2026").is_err());
    }
}
