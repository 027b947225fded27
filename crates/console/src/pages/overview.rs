//! The first page: balance, spend over three windows, what the KV cache saved, daily spend.

use axum::extract::State;
use axum::response::Response;
use minijinja::context;
use tm_store::usage::DAY_MS;

use crate::charts::{self, Series};
use crate::error::PageError;
use crate::render::page;
use crate::session::Session;
use crate::Console;

pub async fn show(State(console): State<Console>, session: Session) -> Result<Response, PageError> {
    let o = console.control.billing().overview(&session.principal).await?;
    let today = console.control.now_ms() / DAY_MS;
    let days: Vec<i64> = (today - 29..=today).collect();
    let spend: Vec<f64> = days
        .iter()
        .map(|d| o.daily.iter().find(|b| b.start / DAY_MS == *d).map_or(0.0, |b| b.amount_nanos as f64 / 1e9))
        .collect();
    let labels: Vec<String> = days.iter().map(|d| super::day_label(*d)).collect();
    let chart = charts::stacked_bars(
        "Spend per day over the last 30 days, in US dollars",
        &labels,
        &[Series { name: "spend (USD)", color: charts::BLUE, values: spend }],
        "USD",
    );
    let ctx = context! {
        balance => o.account.balance_nanos,
        held => o.account.held_nanos,
        available => o.account.available_nanos(),
        today => o.spent_today_nanos,
        week => o.spent_7d_nanos,
        month => o.spent_30d_nanos,
        cache_saved => o.cache_saved_30d_nanos,
        cached_tokens => o.cached_tokens_30d,
        chart => minijinja::Value::from_safe_string(chart),
    };
    page(&console, &session, "overview.html", "overview", "Overview", ctx)
}
