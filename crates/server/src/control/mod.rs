//! The Control Plane listener: browser login, users, API keys, billing, support,
//! activities, products, observability, admin. Handlers take a
//! [`extract::SignedIn`] (access token) and return [`error::CpError`], the one status
//! mapping of this surface.

mod activities;
mod address;
mod admin;
mod admin_billing;
mod billing;
mod cli_login;
mod deployments;
pub mod error;
mod extract;
mod gpu_pricing;
mod login_page;
mod observability;
mod products;
mod stripe;
mod support;
mod users;
mod wire;

use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::routing::{delete, get, post, put};
use axum::Router;
use tm_control::{Control, ControlError};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use error::CpError;

/// Shared by every Control Plane handler.
#[derive(Clone)]
pub struct ControlState {
    pub control: Control,
    /// `--public-control-url`, for sign-in links.
    pub public_url: Option<String>,
    /// The listener's address, for sign-in links when a request has no Host header.
    pub listen_host: String,
    /// The inference side of this process, when it runs one: which models are served and
    /// up, and the metered path one-shot chats go through.
    pub serving: Option<crate::inference::AppState>,
}

const BODY_LIMIT: usize = 1024 * 1024;

pub fn router(state: ControlState) -> Router {
    Router::new()
        .route("/auth/cli/start", post(cli_login::start))
        .route("/auth/cli/exchange", post(cli_login::exchange))
        .route("/auth/cli/refresh", post(cli_login::refresh))
        .route("/auth/cli/logout", post(cli_login::logout))
        .route("/auth/cli/login", get(login_page::show).post(login_page::decide))
        .route("/auth/profile", get(users::profile))
        .route("/v1/users/accept-tos", post(users::accept_tos))
        .route("/v1/users/api-keys", get(users::list_keys).post(users::create_key).delete(users::delete_key))
        .route("/v1/users/{user_id}", put(users::update))
        .route("/v1/billing/balance", get(billing::balance))
        .route("/v1/billing/transactions", get(billing::transactions))
        .route("/v1/billing/spending/summary", get(billing::spending_summary))
        .route("/v1/billing/spending/history", get(billing::spending_history))
        .route("/v1/billing/serverless-usage/history", get(billing::usage_history))
        .route("/v1/billing/serverless-pricing", get(billing::pricing))
        .route("/v1/billing/gpu-pricing", get(gpu_pricing::list))
        .route("/v1/billing/address", get(address::get).put(address::put))
        .route("/v1/billing/stripe/customers", get(stripe::unavailable))
        .route(
            "/v1/billing/stripe/customers/payment-methods",
            get(stripe::unavailable).post(stripe::unavailable).delete(stripe::unavailable),
        )
        .route("/v1/billing/stripe/setup-intents", post(stripe::unavailable))
        .route("/v1/billing/stripe/payment-intents", post(stripe::unavailable))
        .route("/v1/billing/stripe/payment-intents/confirm", post(stripe::unavailable))
        .route("/v1/support/tickets", get(support::list).post(support::create))
        .route("/v1/support/tickets/{ticket_id}", get(support::get).delete(support::close))
        .route("/v1/support/tickets/{ticket_id}/messages", post(support::add_message))
        .route("/v1/support/reserved-deployments", post(support::submit_reserved_deployment))
        .route("/v1/activities", get(activities::list))
        .route("/v1/activities/{activity_id}", get(activities::get))
        .route("/v1/observability/users/metrics", get(observability::user_metrics))
        .route("/v1/observability/deployments/{deployment_id}/metrics", get(observability::deployment_metrics))
        .route("/v1/observability/deployments/{deployment_id}/logs", get(observability::deployment_logs))
        .route("/v1/models", get(deployments::list).post(deployments::deploy))
        .route("/v1/models:validate", post(deployments::validate))
        .route("/v1/models:search-by-infra", post(deployments::search_by_infra))
        .route("/v1/models/check", post(deployments::check))
        .route("/v1/models/{model_id}", get(deployments::get).delete(deployments::delete).post(deployments::post_verb))
        .route("/v1/admin/models", get(deployments::admin_list))
        .route("/v1/admin/models/{model_id}", delete(deployments::admin_delete))
        .route("/v1/products", get(products::list))
        .route("/v1/products/{product_id}", delete(products::delete))
        .route(
            "/v1/admin/billing/serverless-pricing",
            get(admin_billing::list_pricing)
                .post(admin_billing::create_pricing)
                .put(admin_billing::update_pricing)
                .delete(admin_billing::delete_pricing),
        )
        .route("/v1/admin/billing/gpu-pricing", post(gpu_pricing::create).put(gpu_pricing::update))
        .route("/v1/admin/billing/gpu-pricing/{gpu_type}/{cloud_provider}", delete(gpu_pricing::delete))
        .route("/v1/admin/billing/balances", post(admin_billing::balances))
        .route("/v1/admin/billing/balances:add", post(admin_billing::add_balance))
        .route("/v1/admin/billing/spending/summary", post(admin_billing::spending_summaries))
        .route("/v1/admin/users", get(admin::list_users))
        .route("/v1/admin/users/change_role", post(admin::change_role))
        .route("/v1/admin/products", get(products::admin_list).post(products::upsert))
        .route("/v1/admin/support/reserved-deployments", get(support::list_reserved_deployments))
        .fallback(|uri: Uri| async move { CpError(ControlError::NotFound(format!("no route for {}", uri.path()))) })
        .with_state(state)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(CpError(ControlError::Internal("handler panicked".into())))
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}
