//! `tm products list` and `tm admin products …`.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::auth::confirm;
use super::input::{optional_input, Input};
use super::users::Timeout;
use super::{cp_call, path_segment, py_repr, required_arg};
use crate::error::{CliError, Result};
use crate::Ctx;

#[derive(Subcommand, Debug)]
pub enum ProductsCommand {
    /// List products (GET /v1/products).
    List(Timeout),
}

#[derive(Subcommand, Debug)]
pub enum AdminProducts {
    /// List products (GET /v1/admin/products).
    List(Timeout),
    /// Upsert a product (POST /v1/admin/products).
    Upsert {
        /// Product id.
        #[arg(long, value_name = "TEXT")]
        id: Option<String>,
        /// Product name.
        #[arg(long, value_name = "TEXT")]
        name: Option<String>,
        /// Required GPU count.
        #[arg(long, value_name = "INTEGER")]
        required_gpu_num: Option<i64>,
        /// Product family.
        #[arg(long, value_name = "TEXT")]
        family: Option<String>,
        /// Set the product active.
        #[arg(long, overrides_with = "inactive")]
        active: bool,
        /// Set the product inactive.
        #[arg(long, overrides_with = "active")]
        inactive: bool,
        /// JSON object for product-specific configuration.
        #[arg(long, value_name = "TEXT")]
        spec_json: Option<String>,
        /// Skip confirmation.
        #[arg(long)]
        yes: bool,
        /// JSON request body (either {"product":{...}} or a raw product object) or @file.json.
        #[command(flatten)]
        input: Input,
        #[command(flatten)]
        t: Timeout,
    },
    /// Delete a product (DELETE /v1/products/{id}).
    Delete {
        product_id: String,
        /// Skip confirmation.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        t: Timeout,
    },
}

pub async fn products(ctx: &Ctx, command: ProductsCommand) -> Result<()> {
    let ProductsCommand::List(t) = command;
    cp_call(ctx, Method::GET, "/v1/products", Vec::new(), None, t.timeout).await
}

pub async fn admin(ctx: &Ctx, command: AdminProducts) -> Result<()> {
    match command {
        AdminProducts::List(t) => cp_call(ctx, Method::GET, "/v1/admin/products", Vec::new(), None, t.timeout).await,
        AdminProducts::Upsert { id, name, required_gpu_num, family, active, inactive, spec_json, yes, input, t } => {
            let spec = match spec_json {
                Some(text) => {
                    let parsed = optional_input(&Input { json: Some(text), file: None })?;
                    parsed.filter(Value::is_object)
                }
                None => None,
            };
            let product = match optional_input(&input)? {
                Some(Value::Object(mut body)) => match body.remove("product") {
                    Some(p) => p,
                    None => Value::Object(body),
                },
                Some(_) => return Err(CliError::usage("Request body must define a product.")),
                None => {
                    let fields = [
                        ("id", id.map(Value::String)),
                        ("name", name.map(Value::String)),
                        ("requiredGpuNum", required_gpu_num.map(|n| json!(n))),
                        ("family", family.map(Value::String)),
                        ("isActive", (active || inactive).then_some(Value::Bool(active))),
                        ("spec", spec),
                    ];
                    Value::Object(fields.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v))).collect())
                }
            };
            if product.as_object().is_none_or(Map::is_empty) {
                return Err(CliError::usage("Request body must define a product."));
            }
            if !yes {
                confirm("Upsert product? This may affect billing/admin behavior.")?;
            }
            let body = json!({"product": product});
            cp_call(ctx, Method::POST, "/v1/admin/products", Vec::new(), Some(&body), t.timeout).await
        }
        AdminProducts::Delete { product_id, yes, t } => {
            let id = required_arg(&product_id, "PRODUCT_ID")?;
            if !yes {
                confirm(&format!("Delete product {}?", py_repr(&id)))?;
            }
            let path = format!("/v1/products/{}", path_segment(&id));
            cp_call(ctx, Method::DELETE, &path, Vec::new(), None, t.timeout).await
        }
    }
}
