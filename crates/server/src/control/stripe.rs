//! `/v1/billing/stripe/*`. This installation has no payment processor: every route says so
//! with 501 (gRPC UNIMPLEMENTED), after checking the caller, instead of pretending. Money
//! comes in through admin top-ups. One handler per path, so that each is in the OpenAPI
//! document.

use tm_api::control::RpcStatus;
use tm_control::ControlError;

use super::error::CpError;
use super::extract::SignedIn;

pub const NO_PROCESSOR: &str = "this installation has no payment processor configured, so Stripe customers, \
                                payment methods and intents are unavailable; an admin adds prepaid balance with \
                                `tm admin billing balances add` (POST /v1/admin/billing/balances:add)";

fn unavailable() -> CpError {
    CpError(ControlError::Unimplemented(NO_PROCESSOR.into()))
}

#[utoipa::path(get, path = "/v1/billing/stripe/customers", tag = "billing",
    responses((status = 501, description = "No payment processor.", body = RpcStatus)))]
pub async fn customers(SignedIn(_): SignedIn) -> CpError {
    unavailable()
}

#[utoipa::path(method(get, post, delete), path = "/v1/billing/stripe/customers/payment-methods", tag = "billing",
    responses((status = 501, description = "No payment processor.", body = RpcStatus)))]
pub async fn payment_methods(SignedIn(_): SignedIn) -> CpError {
    unavailable()
}

#[utoipa::path(post, path = "/v1/billing/stripe/setup-intents", tag = "billing",
    responses((status = 501, description = "No payment processor.", body = RpcStatus)))]
pub async fn setup_intents(SignedIn(_): SignedIn) -> CpError {
    unavailable()
}

#[utoipa::path(post, path = "/v1/billing/stripe/payment-intents", tag = "billing",
    responses((status = 501, description = "No payment processor.", body = RpcStatus)))]
pub async fn payment_intents(SignedIn(_): SignedIn) -> CpError {
    unavailable()
}

#[utoipa::path(post, path = "/v1/billing/stripe/payment-intents/confirm", tag = "billing",
    responses((status = 501, description = "No payment processor.", body = RpcStatus)))]
pub async fn confirm_payment_intent(SignedIn(_): SignedIn) -> CpError {
    unavailable()
}
