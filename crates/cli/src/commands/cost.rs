//! `tm cost`: per-model serverless spend (from the monthly charge transactions) and what
//! the KV cache saved (cached tokens from the usage history × the model's input price),
//! computed in decimal exactly as the official CLI does (contract §E.6).

use clap::{Args, ValueEnum};
use reqwest::Method;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use crate::decimal::Dec;
use crate::error::{CliError, Result};
use crate::http::{Call, Http};
use crate::output::{self, Format};
use crate::{files, Ctx};

const NOTE: &str = "Note: cache savings reflects the exact window; per-model dollar spend comes from the \
                    overlapping calendar-month transaction(s) and is not prorated to the window.";
const DAY_SECONDS: i64 = 86_400;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Window {
    #[value(name = "24h")]
    Day,
    #[value(name = "7d")]
    Week,
    #[value(name = "30d")]
    Month,
}

impl Window {
    fn days(self) -> i64 {
        match self {
            Window::Day => 1,
            Window::Week => 7,
            Window::Month => 30,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Window::Day => "24h",
            Window::Week => "7d",
            Window::Month => "30d",
        }
    }
}

#[derive(Args, Debug)]
pub struct CostArgs {
    /// Optional user id to scope the report (defaults to the authenticated user).
    #[arg(long, value_name = "TEXT")]
    user_id: Option<String>,
    /// Rolling window (default 30d; exclusive with --month and --start/--end).
    #[arg(long, value_enum, ignore_case = true)]
    window: Option<Window>,
    /// A calendar month, YYYY-MM.
    #[arg(long, value_name = "TEXT")]
    month: Option<String>,
    /// Range start (ISO 8601).
    #[arg(long, value_name = "TEXT")]
    start: Option<String>,
    /// Range end (ISO 8601; default now).
    #[arg(long, value_name = "TEXT")]
    end: Option<String>,
    #[arg(long, value_name = "FLOAT", display_order = 900)]
    timeout: Option<f64>,
}

#[derive(Debug, Clone)]
struct ModelTotal {
    model: String,
    name: Option<String>,
    events: i64,
    input_tokens: i64,
    output_tokens: i64,
    cached_tokens: i64,
    total: Dec,
    saving: Dec,
}

impl ModelTotal {
    fn new(model: &str) -> ModelTotal {
        ModelTotal {
            model: model.to_owned(),
            name: None,
            events: 0,
            input_tokens: 0,
            output_tokens: 0,
            cached_tokens: 0,
            total: Dec::ZERO,
            saving: Dec::ZERO,
        }
    }
}

/// The models in first-seen order.
#[derive(Default)]
struct PerModel(Vec<ModelTotal>);

impl PerModel {
    fn entry(&mut self, model: &str) -> &mut ModelTotal {
        let i = match self.0.iter().position(|m| m.model == model) {
            Some(i) => i,
            None => {
                self.0.push(ModelTotal::new(model));
                self.0.len() - 1
            }
        };
        &mut self.0[i]
    }
}

pub async fn run(ctx: &Ctx, args: CostArgs) -> Result<()> {
    let range_given = args.start.is_some() || args.end.is_some();
    let modes = [args.month.is_some(), range_given, args.window.is_some()].iter().filter(|m| **m).count();
    if modes > 1 {
        return Err(CliError::usage("Choose one of --window, --month, or --start/--end."));
    }
    let month = args.month.as_deref().map(parse_month).transpose()?;
    let start = args.start.as_deref().map(|s| parse_bound(s, "--start")).transpose()?;
    let end = args.end.as_deref().map(|s| parse_bound(s, "--end")).transpose()?;
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or(OffsetDateTime::now_utc());

    let token = files::access_token()?;
    let settings = ctx.settings()?;
    let http = ctx.http(&settings)?;
    let base = settings.controlplane_base.value.clone().unwrap_or_default();
    let get = |path: &str, query: Vec<(String, String)>| {
        let (http, token, url) = (&http, token.clone(), format!("{base}{path}"));
        async move { get_json(http, url, query, &token, args.timeout).await }
    };

    let mut transactions = Vec::new();
    let mut page_token: Option<String> = None;
    loop {
        let mut q = user_query(&args.user_id);
        if let Some(t) = &page_token {
            q.push(("pageToken".into(), t.clone()));
        }
        let page = get("/v1/billing/transactions", q).await?;
        transactions.extend(page["transactions"].as_array().cloned().unwrap_or_default());
        match page["nextPageToken"].as_str().filter(|t| !t.is_empty()) {
            Some(next) => page_token = Some(next.to_owned()),
            None => break,
        }
    }
    let pricing = get("/v1/billing/serverless-pricing", vec![("activeOnly".into(), "false".into())]).await?;
    let rates = input_rates(&pricing);

    let (view, selected, label, note, start_rfc, end_rfc) = if let Some((year, mon)) = month {
        let first = first_of(year, mon);
        let next = if mon == 12 { first_of(year + 1, 1) } else { first_of(year, mon + 1) };
        let label = format!("{year:04}-{mon:02}");
        let selected = charges(&transactions, |t| t.year() == year && u8::from(t.month()) == mon);
        (json!({"view": "month", "month": label}), selected, label, None, Some(rfc(first)), rfc(next.min(now)))
    } else if range_given {
        let range_end = end.unwrap_or(now);
        let lower = start.map(|s| s - time::Duration::days(31));
        let selected = charges(&transactions, |t| t <= range_end && lower.is_none_or(|l| t >= l));
        let (s, e) = (start.map(rfc), rfc(range_end));
        let label = format!("{} .. {e}", s.clone().unwrap_or_else(|| "earliest".into()));
        (json!({"view": "range", "start": s, "end": e}), selected, label, Some(NOTE), s, e)
    } else {
        let window = args.window.unwrap_or(Window::Month);
        let from = now - time::Duration::seconds(window.days() * DAY_SECONDS);
        let lower = from - time::Duration::days(31);
        let selected = charges(&transactions, |t| t <= now && t >= lower);
        let label = format!("last {}", window.name());
        (json!({"view": "window", "window": window.name()}), selected, label, Some(NOTE), Some(rfc(from)), rfc(now))
    };

    let mut per_model = PerModel::default();
    for tx in &selected {
        let Some(models) = tx["details"]["models"].as_object() else { continue };
        for (id, summary) in models {
            if !summary.is_object() {
                continue;
            }
            let m = per_model.entry(id);
            if m.name.is_none() {
                m.name = summary["name"].as_str().filter(|n| !n.is_empty()).map(str::to_owned);
            }
            m.events += int(&summary["event_count"]);
            m.input_tokens += int(&summary["input_tokens"]);
            m.output_tokens += int(&summary["output_tokens"]);
            m.total = m.total.add(decimal(&summary["total_amount"]));
        }
    }
    let mut q = user_query(&args.user_id);
    q.push(("bucket".into(), "USAGE_BUCKET_DAY".into()));
    if let Some(s) = &start_rfc {
        q.push(("startTime".into(), s.clone()));
    }
    q.push(("endTime".into(), end_rfc));
    let usage = get("/v1/billing/serverless-usage/history", q).await?;
    for row in usage["rows"].as_array().into_iter().flatten() {
        let Some(model) = row["modelId"].as_str().filter(|m| !m.is_empty()) else { continue };
        per_model.entry(model).cached_tokens += int(&row["cachedTokens"]);
    }
    for m in &mut per_model.0 {
        if let (Some(rate), true) = (rates.iter().find(|(model, _)| *model == m.model), m.cached_tokens != 0) {
            m.saving = rate.1.mul_int(i128::from(m.cached_tokens)).div_pow10(6);
        }
    }
    let subtotal = per_model.0.iter().fold(Dec::ZERO, |acc, m| acc.add(m.total));
    let saving = per_model.0.iter().fold(Dec::ZERO, |acc, m| acc.add(m.saving));

    if ctx.format == Format::Text {
        ctx.print(&render_text(&label, &per_model.0, subtotal, saving, note));
        return Ok(());
    }
    let mut payload = view.as_object().cloned().unwrap_or_default();
    let rows: Vec<Value> = per_model
        .0
        .iter()
        .map(|m| {
            json!({"model": m.model, "name": m.name, "events": m.events, "input_tokens": m.input_tokens,
                   "output_tokens": m.output_tokens, "cached_tokens": m.cached_tokens,
                   "spend": m.total.to_string(), "cache_saving": m.saving.to_string()})
        })
        .collect();
    payload.insert("per_model".into(), Value::Array(rows));
    payload.insert("spend_subtotal".into(), json!(subtotal.to_string()));
    payload.insert("cache_saving_total".into(), json!(saving.to_string()));
    ctx.print(&output::value_in(ctx.format, &Value::Object(payload)));
    Ok(())
}

async fn get_json(
    http: &Http,
    url: String,
    query: Vec<(String, String)>,
    token: &str,
    timeout: Option<f64>,
) -> Result<Value> {
    let reply = http
        .send(Call {
            method: Method::GET,
            url,
            query,
            body: None,
            bearer: Some(token),
            hint_401: Some(super::CP_HINT_401),
            timeout,
        })
        .await?;
    serde_json::from_str(&reply.text)
        .map_err(|_| CliError::failed(format!("Invalid JSON response: expected JSON. Raw response: {}", reply.text)))
}

fn user_query(user_id: &Option<String>) -> Vec<(String, String)> {
    super::query(&[("userId", user_id.clone())])
}

/// Input price per model (per 1,000,000 tokens); an active row wins over an inactive one.
fn input_rates(pricing: &Value) -> Vec<(String, Dec)> {
    let mut rates: Vec<(String, Dec)> = Vec::new();
    for row in pricing["pricing"].as_array().into_iter().flatten() {
        let Some(model) = row["model"].as_str().filter(|m| !m.is_empty()) else { continue };
        let active = row["isActive"].as_bool().unwrap_or(false);
        let known = rates.iter().position(|(m, _)| m == model);
        if known.is_some() && !active {
            continue;
        }
        let price = &row["inputTokenPrice"];
        let units = match &price["units"] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => "0".into(),
        };
        let rate = Dec::money(if units.is_empty() { "0" } else { &units }, price["nanos"].as_i64().unwrap_or(0));
        match known {
            Some(i) => rates[i].1 = rate,
            None => rates.push((model.to_owned(), rate)),
        }
    }
    rates
}

/// Charge transactions whose `createdAt` passes `keep`.
fn charges(transactions: &[Value], keep: impl Fn(OffsetDateTime) -> bool) -> Vec<Value> {
    transactions
        .iter()
        .filter(|t| t["type"] == "TRANSACTION_TYPE_CHARGE")
        .filter(|t| t["createdAt"].as_str().and_then(parse_time).is_some_and(&keep))
        .cloned()
        .collect()
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

fn decimal(v: &Value) -> Dec {
    match v {
        Value::String(s) if !s.is_empty() => Dec::parse(s).unwrap_or(Dec::ZERO),
        Value::Number(n) => Dec::parse(&n.to_string()).unwrap_or(Dec::ZERO),
        _ => Dec::ZERO,
    }
}

fn rfc(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn first_of(year: i32, month: u8) -> OffsetDateTime {
    Month::try_from(month)
        .ok()
        .and_then(|m| Date::from_calendar_date(year, m, 1).ok())
        .map_or(OffsetDateTime::UNIX_EPOCH, |d| PrimitiveDateTime::new(d, Time::MIDNIGHT).assume_utc())
}

fn parse_month(s: &str) -> Result<(i32, u8)> {
    let bad = || CliError::usage(format!("--month must be YYYY-MM (got: '{s}')"));
    let (y, m) = s.split_once('-').ok_or_else(bad)?;
    let year: i32 = (y.len() == 4).then(|| y.parse().ok()).flatten().ok_or_else(bad)?;
    let month: u8 = (1..=2)
        .contains(&m.len())
        .then(|| m.parse().ok())
        .flatten()
        .filter(|m| (1..=12).contains(m))
        .ok_or_else(bad)?;
    Ok((year, month))
}

fn parse_bound(s: &str, flag: &str) -> Result<OffsetDateTime> {
    parse_time(s).ok_or_else(|| CliError::usage(format!("{flag} must be ISO 8601 (got: '{s}')")))
}

/// ISO 8601 as Python's `fromisoformat` reads it: a date, or a date and time, with `Z`,
/// an offset, or nothing (UTC).
fn parse_time(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t.to_offset(UtcOffset::UTC));
    }
    let (date, rest) = s.split_at(s.find(['T', ' ']).unwrap_or(s.len()));
    let mut parts = date.split('-');
    let (y, m, d) =
        (parts.next()?.parse::<i32>().ok()?, parts.next()?.parse::<u8>().ok()?, parts.next()?.parse::<u8>().ok()?);
    let date = Date::from_calendar_date(y, Month::try_from(m).ok()?, d).ok()?;
    let rest = rest.trim_start_matches(['T', ' ']);
    if rest.is_empty() {
        return Some(PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_utc());
    }
    let naive = rest.trim_end_matches('Z');
    let mut hms = naive.split(':');
    let h = hms.next()?.parse::<u8>().ok()?;
    let min = hms.next().map_or(Some(0), |v| v.parse::<u8>().ok())?;
    let sec = hms.next().map_or(Some(0.0), |v| v.parse::<f64>().ok())?;
    let time = Time::from_hms(h, min, sec as u8).ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_utc())
}

fn money(d: Dec) -> String {
    format!("${} USD", d.quantize(-4))
}

fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn render_text(label: &str, per_model: &[ModelTotal], subtotal: Dec, saving: Dec, note: Option<&str>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "Spend + cache savings — {label}\n");
    if per_model.is_empty() {
        let _ = writeln!(out, "  (no serverless charges in window)");
        if let Some(n) = note {
            let _ = writeln!(out, "\n{n}");
        }
        return out;
    }
    let headers = ["Model", "Events", "Input", "Output", "Cached", "Spend", "Cache saved"];
    let mut sorted: Vec<&ModelTotal> = per_model.iter().collect();
    sorted.sort_by_key(|m| std::cmp::Reverse(m.total));
    let rows: Vec<[String; 7]> = sorted
        .iter()
        .map(|m| {
            [
                m.model.clone(),
                thousands(m.events),
                thousands(m.input_tokens),
                thousands(m.output_tokens),
                thousands(m.cached_tokens),
                money(m.total),
                money(m.saving),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([headers[i].len()]).max().unwrap_or(0))
        .collect();
    let line =
        |cells: Vec<String>| cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ");
    let _ = writeln!(out, "{}", line(headers.iter().map(|h| (*h).to_owned()).collect()));
    let _ = writeln!(out, "{}", line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for r in rows {
        let _ = writeln!(out, "{}", line(r.to_vec()));
    }
    let _ = writeln!(out, "\n  {:<22} {}", "Serverless subtotal:", money(subtotal));
    let base = subtotal.add(saving);
    let mut saved = format!("  {:<22} {}", "Cache saved:", money(saving));
    if base > Dec::ZERO {
        saved += &format!("  ({}% of pre-cache serverless cost)", saving.percent_of(base));
    }
    let _ = writeln!(out, "{saved}");
    if let Some(n) = note {
        let _ = writeln!(out, "\n{n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_like_fromisoformat() {
        assert_eq!(rfc(parse_time("2026-05-01").unwrap()), "2026-05-01T00:00:00Z");
        assert_eq!(rfc(parse_time("2026-05-01T10:20:30Z").unwrap()), "2026-05-01T10:20:30Z");
        assert_eq!(rfc(parse_time("2026-05-01T10:20:30+02:00").unwrap()), "2026-05-01T08:20:30Z");
        assert!(parse_time("yesterday").is_none());
        assert_eq!(parse_month("2026-05").ok(), Some((2026, 5)));
        assert!(parse_month("2026/05").is_err());
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
