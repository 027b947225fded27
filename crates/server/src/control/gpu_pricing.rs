//! `GET /v1/billing/gpu-pricing` and the admin routes that write it.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::Value;
use tm_api::control::{Empty, GpuPrice, GpuPriceReply, GpuPrices, Money};
use tm_control::billing::gpu::GpuPricePatch;

use super::error::CpError;
use super::extract::{Body, Params, SignedIn};
use super::query::ActiveOnly;
use super::wire::parse_money;
use super::ControlState;

#[utoipa::path(get, path = "/v1/billing/gpu-pricing", tag = "billing",
    params(
        ("gpuType" = Option<String>, Query),
        ("cloudProvider" = Option<String>, Query),
        ActiveOnly,
    ),
    responses((status = 200, body = GpuPrices)),
)]
pub async fn list(
    State(state): State<ControlState>,
    SignedIn(_): SignedIn,
    params: Params,
) -> Result<Json<GpuPrices>, CpError> {
    let rows = state
        .control
        .gpu_pricing()
        .list(params.str("gpuType"), params.str("cloudProvider"), params.bool("activeOnly")?)
        .await?;
    Ok(Json(GpuPrices { pricing: rows.iter().map(price).collect() }))
}

#[utoipa::path(post, path = "/v1/admin/billing/gpu-pricing", tag = "admin",
    request_body(
        content = Object,
        description = "`{\"pricing\": {...}}` or the price itself: `gpuType`, `cloudProvider` (required strings), `hourlyRate` (Money or a decimal string), `isActive`.",
    ),
    responses((status = 200, body = GpuPriceReply)),
)]
pub async fn create(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Body(body): Body<Value>,
) -> Result<Json<GpuPriceReply>, CpError> {
    me.require_admin()?;
    let row = state.control.gpu_pricing().create(&me, patch(&body)?).await?;
    Ok(Json(GpuPriceReply { pricing: price(&row) }))
}

#[utoipa::path(put, path = "/v1/admin/billing/gpu-pricing", tag = "admin",
    request_body(
        content = Object,
        description = "`{\"pricing\": {...}}` or the price itself: `gpuType`, `cloudProvider` (required strings), `hourlyRate` (Money or a decimal string), `isActive`.",
    ),
    responses((status = 200, body = GpuPriceReply)),
)]
pub async fn update(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Body(body): Body<Value>,
) -> Result<Json<GpuPriceReply>, CpError> {
    me.require_admin()?;
    let row = state.control.gpu_pricing().update(&me, patch(&body)?).await?;
    Ok(Json(GpuPriceReply { pricing: price(&row) }))
}

#[utoipa::path(delete, path = "/v1/admin/billing/gpu-pricing/{gpu_type}/{cloud_provider}", tag = "admin",
    params(("gpu_type" = String, Path), ("cloud_provider" = String, Path)),
    responses((status = 200, body = Empty)),
)]
pub async fn delete(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Path((gpu_type, cloud_provider)): Path<(String, String)>,
) -> Result<Json<Empty>, CpError> {
    state.control.gpu_pricing().delete(&me, &gpu_type, &cloud_provider).await?;
    Ok(Json(Empty::default()))
}

/// `{"pricing": {...}}`, or the price itself.
fn patch(body: &Value) -> Result<GpuPricePatch, CpError> {
    let p = body.get("pricing").unwrap_or(body);
    let p = p.as_object().ok_or_else(|| CpError::invalid("pricing", "must be an object"))?;
    let text = |key: &str, field: &'static str| match p.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(CpError::invalid(field, "is required")),
        Some(_) => Err(CpError::invalid(field, "must be a string")),
    };
    Ok(GpuPricePatch {
        gpu_type: text("gpuType", "pricing.gpuType")?,
        cloud_provider: text("cloudProvider", "pricing.cloudProvider")?,
        hourly_rate_nanos: match p.get("hourlyRate") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_money("pricing.hourlyRate", v)?),
        },
        is_active: match p.get("isActive") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => return Err(CpError::invalid("pricing.isActive", "must be true or false")),
        },
    })
}

fn price(p: &tm_control::billing::gpu::GpuPrice) -> GpuPrice {
    GpuPrice {
        gpu_type: p.gpu_type.clone(),
        cloud_provider: p.cloud_provider.clone(),
        hourly_rate: Money::from(p.hourly_rate),
        is_active: p.is_active,
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}
