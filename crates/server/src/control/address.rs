//! `/v1/billing/address`: the caller's billing address (or, for an admin, `userId`'s).

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use tm_api::control::{AddressReply, Empty};
use tm_control::billing::address::Address;
use utoipa::ToSchema;

use super::error::CpError;
use super::extract::{Body, Params, SignedIn};
use super::query::ForUser;
use super::ControlState;

#[utoipa::path(get, path = "/v1/billing/address", tag = "billing",
    params(ForUser),
    responses((status = 200, body = AddressReply)),
)]
pub async fn get(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<AddressReply>, CpError> {
    let a = state.control.billing().address(&me, params.str("userId")).await?;
    Ok(Json(AddressReply {
        address: tm_api::control::Address {
            name: a.name,
            company: a.company,
            line1: a.line1,
            line2: a.line2,
            city: a.city,
            state: a.state,
            postal_code: a.postal_code,
            country: a.country,
            phone: a.phone,
        },
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Update {
    user_id: Option<String>,
    address: Option<Fields>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fields {
    name: Option<String>,
    company: Option<String>,
    line1: Option<String>,
    line2: Option<String>,
    city: Option<String>,
    state: Option<String>,
    postal_code: Option<String>,
    country: Option<String>,
    phone: Option<String>,
}

#[utoipa::path(put, path = "/v1/billing/address", tag = "billing",
    request_body = Update,
    responses((status = 200, body = Empty)),
)]
pub async fn put(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Body(u): Body<Update>,
) -> Result<Json<Empty>, CpError> {
    let f = u.address.ok_or_else(|| CpError::invalid("address", "is required"))?;
    let address = Address {
        name: f.name,
        company: f.company,
        line1: f.line1,
        line2: f.line2,
        city: f.city,
        state: f.state,
        postal_code: f.postal_code,
        country: f.country,
        phone: f.phone,
    };
    state.control.billing().set_address(&me, u.user_id.as_deref(), address).await?;
    Ok(Json(Empty::default()))
}
