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
mod query;
mod stripe;
mod support;
mod users;
mod wire;

use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::Router;
use tm_api::control::RpcStatus;
use tm_control::{Control, ControlError};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::openapi;

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

/// The listener's OpenAPI document: what [`routes`] generates, completed.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tensormesh Control Plane API",
        description = "Accounts, API keys, billing, support, models and \
        administration, in grpc-gateway's JSON (lowerCamelCase, int64 as strings, `google.type.Money`). Routes \
        take an access token from the CLI sign-in (`Authorization: Bearer ...`), except `/auth/cli/*`."
    ),
    components(schemas(RpcStatus)),
    // Every route but `/auth/cli/*`, which say so.
    security(("bearer" = []))
)]
struct ControlApi;

/// The routes, each registered with its OpenAPI operation.
fn routes() -> (Router<ControlState>, utoipa::openapi::OpenApi) {
    let (router, doc) = OpenApiRouter::with_openapi(ControlApi::openapi())
        .routes(routes!(cli_login::start))
        .routes(routes!(cli_login::exchange))
        .routes(routes!(cli_login::refresh))
        .routes(routes!(cli_login::logout))
        .routes(routes!(login_page::show, login_page::decide))
        .routes(routes!(users::profile))
        .routes(routes!(users::accept_tos))
        .routes(routes!(users::list_keys, users::create_key, users::delete_key))
        .routes(routes!(users::update))
        .routes(routes!(billing::balance))
        .routes(routes!(billing::transactions))
        .routes(routes!(billing::spending_summary))
        .routes(routes!(billing::spending_history))
        .routes(routes!(billing::usage_history))
        .routes(routes!(billing::pricing))
        .routes(routes!(gpu_pricing::list))
        .routes(routes!(address::get, address::put))
        .routes(routes!(stripe::customers))
        .routes(routes!(stripe::payment_methods))
        .routes(routes!(stripe::setup_intents))
        .routes(routes!(stripe::payment_intents))
        .routes(routes!(stripe::confirm_payment_intent))
        .routes(routes!(support::list, support::create))
        .routes(routes!(support::get, support::close))
        .routes(routes!(support::add_message))
        .routes(routes!(support::submit_reserved_deployment))
        .routes(routes!(activities::list))
        .routes(routes!(activities::get))
        .routes(routes!(observability::user_metrics))
        .routes(routes!(observability::deployment_metrics))
        .routes(routes!(observability::deployment_logs))
        .routes(routes!(deployments::list, deployments::deploy))
        .routes(routes!(deployments::validate))
        .routes(routes!(deployments::search_by_infra))
        .routes(routes!(deployments::check))
        .routes(routes!(deployments::get, deployments::delete, deployments::post_verb))
        .routes(routes!(deployments::admin_list))
        .routes(routes!(deployments::admin_delete))
        .routes(routes!(products::list))
        .routes(routes!(products::delete))
        .routes(routes!(
            admin_billing::list_pricing,
            admin_billing::create_pricing,
            admin_billing::update_pricing,
            admin_billing::delete_pricing
        ))
        .routes(routes!(gpu_pricing::create, gpu_pricing::update))
        .routes(routes!(gpu_pricing::delete))
        .routes(routes!(admin_billing::balances))
        .routes(routes!(admin_billing::add_balance))
        .routes(routes!(admin_billing::spending_summaries))
        .routes(routes!(admin::list_users))
        .routes(routes!(admin::change_role))
        .routes(routes!(products::admin_list, products::upsert))
        .routes(routes!(support::list_reserved_deployments))
        .split_for_parts();
    let mut doc = openapi::finish(doc, "An access token from the CLI sign-in (`tm auth login`).", "RpcStatus");
    openapi::optional_json_bodies(&mut doc);
    (router, doc)
}

pub fn router(state: ControlState) -> Router {
    let (routes, doc) = routes();
    let serving =
        state.serving.as_ref().map(|s| tm_console::Serving { gateway: s.gateway.clone(), backend: s.backend.clone() });
    // Behind a TLS proxy (an https public URL) the console's cookies are `Secure`.
    let secure = state.public_url.as_deref().is_some_and(|u| u.starts_with("https://"));
    let console = tm_console::router(tm_console::Console::new(state.control.clone(), serving, secure));
    routes
        .route("/openapi.json", openapi::route(&doc))
        .fallback(|uri: Uri| async move { CpError(ControlError::NotFound(format!("no route for {}", uri.path()))) })
        .with_state(state)
        .merge(console)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(CpError(ControlError::Internal("handler panicked".into())))
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}
