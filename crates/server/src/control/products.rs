//! `/v1/products` (read by users, deleted by admins) and `/v1/admin/products`.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::Value;
use tm_api::control::{Deleted, Product, ProductReply, Products};
use tm_control::products::ProductPatch;

use super::error::CpError;
use super::extract::{Body, SignedIn};
use super::ControlState;

#[utoipa::path(get, path = "/v1/products", tag = "products",
    responses((status = 200, body = Products)),
)]
pub async fn list(State(state): State<ControlState>, SignedIn(me): SignedIn) -> Result<Json<Products>, CpError> {
    let rows = state.control.products().list(&me, false).await?;
    Ok(Json(Products { products: rows.iter().map(product).collect() }))
}

#[utoipa::path(get, path = "/v1/admin/products", tag = "admin",
    responses((status = 200, body = Products)),
)]
pub async fn admin_list(State(state): State<ControlState>, SignedIn(me): SignedIn) -> Result<Json<Products>, CpError> {
    let rows = state.control.products().list(&me, true).await?;
    Ok(Json(Products { products: rows.iter().map(product).collect() }))
}

/// `{"product": {...}}`, or the product itself.
#[utoipa::path(post, path = "/v1/admin/products", tag = "admin",
    request_body(
        content = Object,
        description = "`{\"product\": {...}}` or the product itself: `id`, `name`, `family` (strings), `requiredGpuNum` (a whole number), `isActive`, `spec` (an object).",
    ),
    responses((status = 200, body = ProductReply)),
)]
pub async fn upsert(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Body(body): Body<Value>,
) -> Result<Json<ProductReply>, CpError> {
    me.require_admin()?;
    let p = body.get("product").unwrap_or(&body);
    let p = p.as_object().ok_or_else(|| CpError::invalid("product", "must be an object"))?;
    let text = |key: &'static str| -> Result<Option<String>, CpError> {
        match p.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(CpError::invalid(field(key), "must be a string")),
        }
    };
    let required_gpu_num = match p.get("requiredGpuNum") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or_else(|| CpError::invalid("product.requiredGpuNum", "must be a whole number"))?,
        ),
    };
    let is_active = match p.get("isActive") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(CpError::invalid("product.isActive", "must be true or false")),
    };
    let spec = match p.get("spec") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => return Err(CpError::invalid("product.spec", "must be an object")),
    };
    let patch = ProductPatch {
        id: text("id")?,
        name: text("name")?,
        required_gpu_num,
        family: text("family")?,
        is_active,
        spec,
    };
    let row = state.control.products().upsert(&me, patch).await?;
    Ok(Json(ProductReply { product: product(&row) }))
}

#[utoipa::path(delete, path = "/v1/products/{product_id}", tag = "products",
    params(("product_id" = String, Path)),
    responses((status = 200, body = Deleted)),
)]
pub async fn delete(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, CpError> {
    state.control.products().delete(&me, &id).await?;
    Ok(Json(Deleted { deleted: true }))
}

fn field(key: &'static str) -> &'static str {
    match key {
        "id" => "product.id",
        "name" => "product.name",
        "family" => "product.family",
        _ => "product",
    }
}

fn product(p: &tm_control::products::Product) -> Product {
    Product {
        id: p.id.clone(),
        name: p.name.clone(),
        required_gpu_num: p.required_gpu_num,
        family: p.family.clone(),
        is_active: p.is_active,
        spec: p.spec.clone(),
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}
