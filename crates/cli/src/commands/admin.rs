//! `tm admin …`: users and roles, balances, spending, serverless prices.

use clap::{Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{json, Value};

use super::auth::confirm;
use super::input::{read_input, Input};
use super::users::{body_from, required, Timeout};
use super::{cp_call, path_segment, py_repr, query};
use crate::error::{CliError, Result};
use crate::Ctx;

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Users.
    #[command(subcommand)]
    Users(Users),
    /// Billing administration.
    #[command(subcommand)]
    Billing(Billing),
    /// Products.
    #[command(subcommand)]
    Products(super::products::AdminProducts),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleChoice {
    #[value(name = "user_role_user")]
    User,
    #[value(name = "user_role_admin")]
    Admin,
    #[value(name = "user_role_super_admin")]
    SuperAdmin,
}

#[derive(Subcommand, Debug)]
pub enum Users {
    /// List users (GET /v1/admin/users).
    List(Timeout),
    /// Change a user's role (POST /v1/admin/users/change_role).
    ChangeRole {
        #[arg(long)]
        target_user_id: Option<String>,
        #[arg(long, value_enum, ignore_case = true)]
        target_user_role: Option<RoleChoice>,
        #[arg(long)]
        user_id: Option<String>,
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        input: Input,
        #[command(flatten)]
        t: Timeout,
    },
}

#[derive(Subcommand, Debug)]
pub enum Billing {
    /// User balances.
    #[command(subcommand)]
    Balances(Balances),
    /// Spending of users.
    #[command(subcommand)]
    Spending(Spending),
    /// Prices.
    #[command(subcommand)]
    Pricing(Pricing),
}

#[derive(Subcommand, Debug)]
pub enum Balances {
    /// Balances of users (POST /v1/admin/billing/balances).
    Get {
        #[arg(long)]
        user_id: Option<String>,
        /// Repeatable.
        #[arg(long = "target-user-id")]
        target_user_ids: Vec<String>,
        #[command(flatten)]
        input: Input,
        #[command(flatten)]
        t: Timeout,
    },
    /// Add to a user's balance (POST /v1/admin/billing/balances:add).
    Add {
        #[arg(long)]
        user_id: Option<String>,
        #[arg(long)]
        target_user_id: Option<String>,
        /// USD.
        #[arg(long)]
        amount: Option<f64>,
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        input: Input,
        #[command(flatten)]
        t: Timeout,
    },
}

#[derive(Subcommand, Debug)]
pub enum Spending {
    /// Spending summaries of users (POST /v1/admin/billing/spending/summary).
    Summary {
        #[arg(long)]
        user_id: Option<String>,
        #[arg(long = "target-user-id")]
        target_user_ids: Vec<String>,
        #[command(flatten)]
        input: Input,
        #[command(flatten)]
        t: Timeout,
    },
}

#[derive(Subcommand, Debug)]
pub enum Pricing {
    /// Insert/update GPU pricing (POST|PUT /v1/admin/billing/gpu-pricing).
    Upsert {
        #[arg(long, value_enum, ignore_case = true, default_value = "post")]
        method: HttpMethod,
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        input: Input,
        #[command(flatten)]
        t: Timeout,
    },
    /// Delete GPU pricing (DELETE /v1/admin/billing/gpu-pricing/{gpuType}/{cloudProvider}).
    Delete {
        /// GPU type enum (path param).
        #[arg(long, value_name = "TEXT")]
        gpu_type: String,
        /// Cloud provider enum (path param).
        #[arg(long, value_name = "TEXT")]
        cloud_provider: String,
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        t: Timeout,
    },
    /// Serverless prices.
    #[command(subcommand)]
    Serverless(Serverless),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum HttpMethod {
    Post,
    Put,
}

#[derive(Subcommand, Debug)]
pub enum Serverless {
    /// List prices (GET /v1/admin/billing/serverless-pricing).
    List {
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        active_only: bool,
        #[command(flatten)]
        t: Timeout,
    },
    /// Create (post) or update (put) a price from JSON.
    Upsert {
        #[arg(long, value_enum, ignore_case = true, default_value = "post")]
        method: HttpMethod,
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        input: Input,
        #[command(flatten)]
        t: Timeout,
    },
    /// Delete a price (DELETE /v1/admin/billing/serverless-pricing?id=…).
    Delete {
        #[arg(long)]
        id: String,
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        t: Timeout,
    },
}

const ADD_MISSING: &str =
    "Missing required fields. Provide --target-user-id and --amount (or pass JSON via --json/--file/stdin).";

pub async fn run(ctx: &Ctx, command: AdminCommand) -> Result<()> {
    let post = |path: &'static str, body: Value, timeout: Option<f64>| async move {
        cp_call(ctx, Method::POST, path, Vec::new(), Some(&body), timeout).await
    };
    match command {
        AdminCommand::Users(Users::List(t)) => {
            cp_call(ctx, Method::GET, "/v1/admin/users", Vec::new(), None, t.timeout).await
        }
        AdminCommand::Users(Users::ChangeRole { target_user_id, target_user_role, user_id, yes, input, t }) => {
            let role = target_user_role
                .and_then(|r| r.to_possible_value())
                .map(|v| Value::String(v.get_name().to_uppercase()));
            let body = body_from(
                &input,
                &[
                    ("targetUserId", target_user_id.map(Value::String)),
                    ("targetUserRole", role),
                    ("userId", user_id.map(Value::String)),
                ],
            )?;
            let target =
                required(&body, "targetUserId", "Missing target user id. Provide --target-user-id or pass JSON.")?;
            let role =
                required(&body, "targetUserRole", "Missing target role. Provide --target-user-role or pass JSON.")?;
            if !yes {
                confirm(&format!("Change role for user '{target}' to {role}?"))?;
            }
            post("/v1/admin/users/change_role", Value::Object(body), t.timeout).await
        }
        AdminCommand::Products(c) => super::products::admin(ctx, c).await,
        AdminCommand::Billing(Billing::Balances(Balances::Get { user_id, target_user_ids, input, t })) => {
            let body = body_from(
                &input,
                &[("targetUserIds", Some(json!(target_user_ids))), ("userId", user_id.map(Value::String))],
            )?;
            post("/v1/admin/billing/balances", Value::Object(body), t.timeout).await
        }
        AdminCommand::Billing(Billing::Balances(Balances::Add { user_id, target_user_id, amount, yes, input, t })) => {
            let body = body_from(
                &input,
                &[
                    ("targetUserId", target_user_id.map(Value::String)),
                    ("amount", amount.map(|a| json!(a))),
                    ("userId", user_id.map(Value::String)),
                ],
            )?;
            required(&body, "targetUserId", ADD_MISSING)?;
            if body.get("amount").is_none_or(Value::is_null) {
                return Err(CliError::usage(ADD_MISSING));
            }
            if !yes {
                confirm("Add user balance? This affects billing and may impact costs.")?;
            }
            post("/v1/admin/billing/balances:add", Value::Object(body), t.timeout).await
        }
        AdminCommand::Billing(Billing::Spending(Spending::Summary { user_id, target_user_ids, input, t })) => {
            let body = body_from(
                &input,
                &[("targetUserIds", Some(json!(target_user_ids))), ("userId", user_id.map(Value::String))],
            )?;
            post("/v1/admin/billing/spending/summary", Value::Object(body), t.timeout).await
        }
        AdminCommand::Billing(Billing::Pricing(Pricing::Serverless(s))) => serverless(ctx, s).await,
        AdminCommand::Billing(Billing::Pricing(Pricing::Upsert { method, yes, input, t })) => {
            let body = pricing_body(&input)?;
            if !yes {
                confirm("Upsert GPU pricing? This affects billing and may impact costs.")?;
            }
            cp_call(ctx, method.into(), "/v1/admin/billing/gpu-pricing", Vec::new(), Some(&body), t.timeout).await
        }
        AdminCommand::Billing(Billing::Pricing(Pricing::Delete { gpu_type, cloud_provider, yes, t })) => {
            if !yes {
                confirm(&format!(
                    "Delete GPU pricing gpuType={} cloudProvider={}?",
                    py_repr(&gpu_type),
                    py_repr(&cloud_provider)
                ))?;
            }
            let path =
                format!("/v1/admin/billing/gpu-pricing/{}/{}", path_segment(&gpu_type), path_segment(&cloud_provider));
            cp_call(ctx, Method::DELETE, &path, Vec::new(), None, t.timeout).await
        }
    }
}

impl From<HttpMethod> for Method {
    fn from(m: HttpMethod) -> Method {
        match m {
            HttpMethod::Post => Method::POST,
            HttpMethod::Put => Method::PUT,
        }
    }
}

/// `{"pricing": {...}}` as given, or the given object wrapped in it.
fn pricing_body(input: &Input) -> Result<Value> {
    match read_input(input)? {
        Value::Object(m) if m.get("pricing").is_some_and(Value::is_object) => Ok(Value::Object(m)),
        Value::Object(m) => Ok(json!({"pricing": m})),
        _ => Err(CliError::usage("Request body must be a JSON object.")),
    }
}

async fn serverless(ctx: &Ctx, command: Serverless) -> Result<()> {
    const PATH: &str = "/v1/admin/billing/serverless-pricing";
    match command {
        Serverless::List { model, active_only, t } => {
            let q = query(&[("model", model), ("activeOnly", active_only.then(|| "true".to_owned()))]);
            cp_call(ctx, Method::GET, PATH, q, None, t.timeout).await
        }
        Serverless::Upsert { method, yes, input, t } => {
            let body = pricing_body(&input)?;
            if !yes {
                confirm("Upsert serverless pricing? This affects billing and may impact costs.")?;
            }
            cp_call(ctx, method.into(), PATH, Vec::new(), Some(&body), t.timeout).await
        }
        Serverless::Delete { id, yes, t } => {
            if !yes {
                confirm(&format!("Delete serverless pricing id='{id}'?"))?;
            }
            cp_call(ctx, Method::DELETE, PATH, query(&[("id", Some(id))]), None, t.timeout).await
        }
    }
}
