//! `/v1/billing/stripe/*`. This installation has no payment processor: every route says so
//! with 501 (gRPC UNIMPLEMENTED), after checking the caller, instead of pretending. Money
//! comes in through admin top-ups.

use tm_control::ControlError;

use super::error::CpError;
use super::extract::SignedIn;

pub const NO_PROCESSOR: &str = "this installation has no payment processor configured, so Stripe customers, \
                                payment methods and intents are unavailable; an admin adds prepaid balance with \
                                `tm admin billing balances add` (POST /v1/admin/billing/balances:add)";

pub async fn unavailable(SignedIn(_): SignedIn) -> CpError {
    CpError(ControlError::Unimplemented(NO_PROCESSOR.into()))
}
