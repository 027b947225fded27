//! `tm billing …`: balance, transactions, spending, prices, address and Stripe.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::input::{required_object, Input};
use super::support::given;
use super::users::body_from;
use super::{cp_call, query, required_arg};
use crate::error::{CliError, Result};
use crate::Ctx;

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Optional user id to scope authorization.
    #[arg(long, value_name = "TEXT")]
    user_id: Option<String>,
    /// HTTP timeout for this call.
    #[arg(long, value_name = "FLOAT", display_order = 900)]
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
    /// Billing address tools.
    #[command(subcommand)]
    Address(Address),
    /// Stripe-backed billing tools.
    #[command(subcommand)]
    Stripe(Stripe),
}

#[derive(Subcommand, Debug)]
pub enum Address {
    /// Get billing address (GET /v1/billing/address).
    Get(Common),
    /// Update billing address (PUT /v1/billing/address).
    Update {
        #[command(flatten)]
        input: Input,
        /// HTTP timeout for this call.
        #[arg(long, value_name = "FLOAT", display_order = 900)]
        timeout: Option<f64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum Stripe {
    /// Stripe customer tools.
    #[command(subcommand)]
    Customer(StripeCustomer),
    /// Stripe payment method tools.
    #[command(subcommand)]
    PaymentMethods(PaymentMethods),
    /// Stripe payment intent tools.
    #[command(subcommand)]
    PaymentIntents(PaymentIntents),
    /// Stripe setup intent tools.
    #[command(subcommand)]
    SetupIntents(SetupIntents),
}

#[derive(Subcommand, Debug)]
pub enum StripeCustomer {
    /// Get or create Stripe customer (GET /v1/billing/stripe/customers).
    Get(Common),
}

#[derive(Subcommand, Debug)]
pub enum PaymentMethods {
    /// List Stripe payment methods (GET /v1/billing/stripe/customers/payment-methods).
    List(Common),
    /// Attach Stripe payment method (POST /v1/billing/stripe/customers/payment-methods).
    Attach {
        /// Stripe payment method id to attach.
        #[arg(long, value_name = "TEXT")]
        stripe_payment_method_id: Option<String>,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        input: Input,
    },
    /// Detach Stripe payment method (DELETE /v1/billing/stripe/customers/payment-methods).
    Detach {
        /// Stripe payment method id to detach.
        #[arg(long, value_name = "TEXT")]
        stripe_payment_method_id: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand, Debug)]
pub enum PaymentIntents {
    /// Create Stripe payment intent (POST /v1/billing/stripe/payment-intents).
    Create {
        #[command(flatten)]
        input: Input,
        /// HTTP timeout for this call.
        #[arg(long, value_name = "FLOAT", display_order = 900)]
        timeout: Option<f64>,
    },
    /// Confirm Stripe payment intent (POST /v1/billing/stripe/payment-intents/confirm).
    Confirm {
        /// Stripe payment intent id to confirm.
        #[arg(long, value_name = "TEXT")]
        stripe_payment_intent_id: Option<String>,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        input: Input,
    },
}

#[derive(Subcommand, Debug)]
pub enum SetupIntents {
    /// Create Stripe setup intent (POST /v1/billing/stripe/setup-intents).
    Create {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        input: Input,
    },
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
    /// List GPU pricing (GET /v1/billing/gpu-pricing).
    List {
        /// Filter by cloud provider enum.
        #[arg(long, value_name = "TEXT")]
        cloud_provider: Option<String>,
        /// Filter by GPU type enum.
        #[arg(long, value_name = "TEXT")]
        gpu_type: Option<String>,
        /// Return active pricing only.
        #[arg(long)]
        active_only: bool,
        #[arg(long, value_name = "FLOAT", display_order = 900)]
        timeout: Option<f64>,
    },
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
        #[arg(long, value_name = "FLOAT", display_order = 900)]
        timeout: Option<f64>,
    },
}

/// A body from JSON input or the flags, with `field` required (`missing`: the usage error).
fn body_with(
    input: &Input,
    field: &str,
    value: Option<String>,
    user_id: Option<String>,
    missing: &str,
) -> Result<Value> {
    let body =
        body_from(input, &[(field, Some(json!(value.unwrap_or_default()))), ("userId", user_id.map(Value::String))])?;
    if !given(&body, field) {
        return Err(CliError::usage(missing));
    }
    Ok(Value::Object(body))
}

/// `key` must be present in a JSON-input body (the official CLI's `'key'` error otherwise).
fn require_key(body: Map<String, Value>, key: &str) -> Result<Value> {
    if body.contains_key(key) {
        Ok(Value::Object(body))
    } else {
        Err(CliError::usage(format!("'{key}'")))
    }
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
        BillingCommand::Pricing(Pricing::List { cloud_provider, gpu_type, active_only, timeout }) => {
            let q = query(&[
                ("cloudProvider", cloud_provider),
                ("gpuType", gpu_type),
                ("activeOnly", active_only.then(|| "true".to_owned())),
            ]);
            get("/v1/billing/gpu-pricing", q, timeout).await
        }
        BillingCommand::Address(Address::Get(c)) => {
            get("/v1/billing/address", query(&[("userId", c.user_id)]), c.timeout).await
        }
        BillingCommand::Address(Address::Update { input, timeout }) => {
            let body = required_object(&input, "Billing address update request must be a JSON object.")?;
            if body.get("address").is_some_and(|a| !a.is_object()) {
                return Err(CliError::usage("Expected a mapping."));
            }
            let body = require_key(body, "address")?;
            cp_call(ctx, Method::PUT, "/v1/billing/address", Vec::new(), Some(&body), timeout).await
        }
        BillingCommand::Stripe(s) => stripe(ctx, s).await,
    }
}

async fn stripe(ctx: &Ctx, command: Stripe) -> Result<()> {
    const PATH_METHODS: &str = "/v1/billing/stripe/customers/payment-methods";
    match command {
        Stripe::Customer(StripeCustomer::Get(c)) => {
            let q = query(&[("userId", c.user_id)]);
            cp_call(ctx, Method::GET, "/v1/billing/stripe/customers", q, None, c.timeout).await
        }
        Stripe::PaymentMethods(PaymentMethods::List(c)) => {
            cp_call(ctx, Method::GET, PATH_METHODS, query(&[("userId", c.user_id)]), None, c.timeout).await
        }
        Stripe::PaymentMethods(PaymentMethods::Attach { stripe_payment_method_id, common: c, input }) => {
            let missing = "Missing Stripe payment method id. Provide --stripe-payment-method-id or a JSON body.";
            let body = body_with(&input, "stripePaymentMethodId", stripe_payment_method_id, c.user_id, missing)?;
            cp_call(ctx, Method::POST, PATH_METHODS, Vec::new(), Some(&body), c.timeout).await
        }
        Stripe::PaymentMethods(PaymentMethods::Detach { stripe_payment_method_id, common: c }) => {
            let id = required_arg(stripe_payment_method_id.as_deref().unwrap_or(""), "STRIPE_PAYMENT_METHOD_ID")?;
            let q = query(&[("stripePaymentMethodId", Some(id)), ("userId", c.user_id)]);
            cp_call(ctx, Method::DELETE, PATH_METHODS, q, None, c.timeout).await
        }
        Stripe::PaymentIntents(PaymentIntents::Create { input, timeout }) => {
            let body = required_object(&input, "Stripe payment intent request must be a JSON object.")?;
            let body = require_key(body, "amount")?;
            cp_call(ctx, Method::POST, "/v1/billing/stripe/payment-intents", Vec::new(), Some(&body), timeout).await
        }
        Stripe::PaymentIntents(PaymentIntents::Confirm { stripe_payment_intent_id, common: c, input }) => {
            let missing = "Missing Stripe payment intent id. Provide --stripe-payment-intent-id or a JSON body.";
            let body = body_with(&input, "stripePaymentIntentId", stripe_payment_intent_id, c.user_id, missing)?;
            let path = "/v1/billing/stripe/payment-intents/confirm";
            cp_call(ctx, Method::POST, path, Vec::new(), Some(&body), c.timeout).await
        }
        Stripe::SetupIntents(SetupIntents::Create { common: c, input }) => {
            let body = Value::Object(body_from(&input, &[("userId", c.user_id.map(Value::String))])?);
            cp_call(ctx, Method::POST, "/v1/billing/stripe/setup-intents", Vec::new(), Some(&body), c.timeout).await
        }
    }
}
