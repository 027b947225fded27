//! Billing: transactions grouped by month (a charge's per-model details inside), the CSV
//! export of the same, and the price of each model.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use minijinja::context;
use serde::Serialize;
use tm_control::billing::{Transaction, TransactionKind};

use crate::error::PageError;
use crate::render::page;
use crate::session::Session;
use crate::Console;

#[derive(Serialize)]
struct Month {
    month: String,
    credits: i64,
    charges: i64,
    transactions: Vec<TransactionView>,
}

#[derive(Serialize)]
struct TransactionView {
    id: String,
    kind: &'static str,
    created_at: i64,
    amount: i64,
    description: String,
    models: Vec<ModelView>,
}

#[derive(Serialize)]
struct ModelView {
    model: String,
    name: String,
    requests: i64,
    input: i64,
    cached: i64,
    output: i64,
    amount: i64,
}

#[derive(Serialize)]
struct PriceView {
    model: String,
    name: String,
    input: i64,
    cached: i64,
    output: i64,
}

pub async fn show(State(console): State<Console>, session: Session) -> Result<Response, PageError> {
    let transactions = console.control.billing().transactions(&session.principal, None).await?;
    let mut months: Vec<Month> = Vec::new();
    for t in transactions {
        let month = month_of(t.created_at);
        if months.last().is_none_or(|m| m.month != month) {
            months.push(Month { month: month.clone(), credits: 0, charges: 0, transactions: Vec::new() });
        }
        if let Some(m) = months.last_mut() {
            match t.kind {
                TransactionKind::TopUp => m.credits += t.amount_nanos,
                TransactionKind::Charge => m.charges += t.amount_nanos,
            }
            m.transactions.push(view(t));
        }
    }
    let prices: Vec<PriceView> = console
        .control
        .pricing()
        .list(None, true)
        .await?
        .into_iter()
        .map(|p| PriceView {
            model: p.model,
            name: p.name,
            input: p.price.input.0,
            cached: p.price.cached.0,
            output: p.price.output.0,
        })
        .collect();
    page(&console, &session, "billing.html", "billing", "Billing", context! { months, prices })
}

/// The transactions as CSV: one row per top-up, one per model of each monthly charge.
pub async fn csv(State(console): State<Console>, session: Session) -> Result<Response, PageError> {
    let transactions = console.control.billing().transactions(&session.principal, None).await?;
    let mut out = String::from(
        "date,type,transaction_id,description,model,requests,input_tokens,cached_tokens,output_tokens,amount_usd\r\n",
    );
    for t in &transactions {
        let date = crate::render::iso_time(t.created_at);
        match t.kind {
            TransactionKind::TopUp => {
                let amount = tm_money::Nanos(t.amount_nanos).to_string();
                row(&mut out, &[&date, "top_up", &t.id, &t.description, "", "", "", "", "", &amount]);
            }
            TransactionKind::Charge => {
                for m in &t.models {
                    let amount = tm_money::Nanos(m.total_nanos).to_string();
                    let counts = [m.events, m.input_tokens, m.cached_tokens, m.output_tokens].map(|n| n.to_string());
                    let [requests, input, cached, output] = &counts;
                    row(
                        &mut out,
                        &[&date, "charge", &t.id, &t.description, &m.model, requests, input, cached, output, &amount],
                    );
                }
            }
        }
    }
    let headers = [
        (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
        (header::CONTENT_DISPOSITION, "attachment; filename=\"tensormesh-transactions.csv\""),
        (header::CACHE_CONTROL, "no-store"),
    ];
    Ok((headers, out).into_response())
}

fn view(t: Transaction) -> TransactionView {
    TransactionView {
        kind: match t.kind {
            TransactionKind::TopUp => "Top-up",
            TransactionKind::Charge => "Charge",
        },
        id: t.id,
        created_at: t.created_at,
        amount: t.amount_nanos,
        description: t.description,
        models: t
            .models
            .into_iter()
            .map(|m| ModelView {
                model: m.model,
                name: m.name,
                requests: m.events,
                input: m.input_tokens,
                cached: m.cached_tokens,
                output: m.output_tokens,
                amount: m.total_nanos,
            })
            .collect(),
    }
}

fn month_of(ms: i64) -> String {
    crate::render::iso_time(ms).get(..7).unwrap_or_default().to_owned()
}

/// One CSV line (RFC 4180 quoting). A field that a spreadsheet would run as a formula
/// gets a leading `'` (descriptions carry text an admin typed).
fn row(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let guarded = if f.starts_with(['=', '+', '-', '@', '\t', '\r']) && f.parse::<f64>().is_err() {
            format!("'{f}")
        } else {
            (*f).to_owned()
        };
        if guarded.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&guarded.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&guarded);
        }
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        let mut out = String::new();
        row(&mut out, &["a,b", "say \"hi\"", "=1+1", "-0.5", "plain"]);
        assert_eq!(out, "\"a,b\",\"say \"\"hi\"\"\",'=1+1,-0.5,plain\r\n");
    }
}
