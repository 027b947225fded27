//! `tm billing …` (read commands; address and Stripe follow).

use clap::{Args, Subcommand};
use reqwest::Method;

use super::{cp_call, query};
use crate::error::Result;
use crate::Ctx;

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Optional user id to scope authorization.
    #[arg(long, value_name = "TEXT")]
    user_id: Option<String>,
    /// HTTP timeout for this call.
    #[arg(long, value_name = "FLOAT")]
    timeout: Option<f64>,
}

#[derive(Subcommand, Debug)]
pub enum BillingCommand {
    /// Get current balance (GET /v1/billing/balance).
    Balance(Common),
    /// Billing transactions.
    #[command(subcommand)]
    Transactions(Transactions),
    /// Spending summaries.
    #[command(subcommand)]
    Spending(Spending),
    /// Prices.
    #[command(subcommand)]
    Pricing(Pricing),
}

#[derive(Subcommand, Debug)]
pub enum Transactions {
    /// List billing transactions (GET /v1/billing/transactions).
    List {
        #[command(flatten)]
        common: Common,
        /// Number of items per page.
        #[arg(long, value_name = "INTEGER")]
        page_size: Option<i64>,
        /// Pagination token.
        #[arg(long, value_name = "TEXT")]
        page_token: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum Spending {
    /// Get spending summary (GET /v1/billing/spending/summary).
    Summary(Common),
    /// Get spending history (GET /v1/billing/spending/history).
    History(Common),
}

#[derive(Subcommand, Debug)]
pub enum Pricing {
    /// Serverless prices.
    #[command(subcommand)]
    Serverless(Serverless),
}

#[derive(Subcommand, Debug)]
pub enum Serverless {
    /// List serverless prices (GET /v1/billing/serverless-pricing).
    List {
        /// Only this model.
        #[arg(long, value_name = "TEXT")]
        model: Option<String>,
        /// Only active prices.
        #[arg(long)]
        active_only: bool,
        #[arg(long, value_name = "FLOAT")]
        timeout: Option<f64>,
    },
}

pub async fn run(ctx: &Ctx, command: BillingCommand) -> Result<()> {
    let get = |path: &'static str, q: Vec<(String, String)>, timeout: Option<f64>| {
        cp_call(ctx, Method::GET, path, q, None, timeout)
    };
    match command {
        BillingCommand::Balance(c) => get("/v1/billing/balance", query(&[("userId", c.user_id)]), c.timeout).await,
        BillingCommand::Transactions(Transactions::List { common: c, page_size, page_token }) => {
            let q = query(&[
                ("userId", c.user_id),
                ("pageSize", page_size.map(|n| n.to_string())),
                ("pageToken", page_token),
            ]);
            get("/v1/billing/transactions", q, c.timeout).await
        }
        BillingCommand::Spending(Spending::Summary(c)) => {
            get("/v1/billing/spending/summary", query(&[("userId", c.user_id)]), c.timeout).await
        }
        BillingCommand::Spending(Spending::History(c)) => {
            get("/v1/billing/spending/history", query(&[("userId", c.user_id)]), c.timeout).await
        }
        BillingCommand::Pricing(Pricing::Serverless(Serverless::List { model, active_only, timeout })) => {
            let q = query(&[("model", model), ("activeOnly", active_only.then(|| "true".to_owned()))]);
            get("/v1/billing/serverless-pricing", q, timeout).await
        }
    }
}
