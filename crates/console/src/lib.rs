//! The web console: where people look at their money, usage and keys, served by the
//! Control Plane listener at its root.
//!
//! Server-rendered HTML (minijinja templates compiled into the binary) with a little
//! script (copy buttons, the playground's streaming), charts drawn on the server as SVG
//! (plotters): nothing is fetched from anywhere else, and every page works without script
//! except the playground's streaming, which falls back to a whole answer. Why this and not
//! a compiled front end: docs/console.md.
//!
//! Layout:
//! - [`session`]: the session cookie, sign-in and sign-out, the CSRF token every
//!   state-changing request carries ([`form::Posted`] checks it).
//! - `render`: the templates and the page shell; `error`: every failure as a page, in one
//!   place; `charts`: the SVG charts.
//! - `pages`: one module per section (overview, usage, keys, billing, support, playground,
//!   admin), each over the typed `tm-control` services.

mod assets;
mod charts;
mod error;
mod form;
mod pages;
mod render;
pub mod session;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use tm_backend::Backend;
use tm_control::Control;
use tm_gateway::Gateway;

/// The serving side of this process, for the playground.
#[derive(Clone)]
pub struct Serving {
    pub gateway: Gateway,
    pub backend: Arc<dyn Backend>,
}

/// What every console handler reads.
#[derive(Clone)]
pub struct Console {
    control: Control,
    serving: Option<Serving>,
    /// Cookies get `Secure` (the console is reached over TLS, at a proxy in front).
    secure_cookies: bool,
    views: Arc<render::Views>,
}

impl Console {
    pub fn new(control: Control, serving: Option<Serving>, secure_cookies: bool) -> Console {
        Console { control, serving, secure_cookies, views: Arc::new(render::Views::new()) }
    }
}

/// The console's routes: `/` and everything under `/console/`.
pub fn router(console: Console) -> Router {
    use pages::{admin, billing, keys, overview, playground, support, usage};
    Router::new()
        .route("/", get(overview::show))
        .route("/console", get(overview::show))
        .route("/console/sign-in", get(session::sign_in_page).post(session::sign_in))
        .route("/console/sign-out", post(session::sign_out))
        .route("/console/usage", get(usage::show))
        .route("/console/keys", get(keys::show).post(keys::create))
        .route("/console/keys/{id}/revoke", post(keys::revoke))
        .route("/console/billing", get(billing::show))
        .route("/console/billing/transactions.csv", get(billing::csv))
        .route("/console/support", get(support::list).post(support::open))
        .route("/console/support/{id}", get(support::show))
        .route("/console/support/{id}/reply", post(support::reply))
        .route("/console/support/{id}/close", post(support::close))
        .route("/console/playground", get(playground::show).post(playground::answer))
        .route("/console/playground/stream", post(playground::stream))
        .route("/console/admin/users", get(admin::users).post(admin::create_user))
        .route("/console/admin/users/{id}", post(admin::change_user))
        .route("/console/admin/prices", get(admin::prices).post(admin::create_price))
        .route("/console/admin/tickets", get(admin::tickets))
        .route("/console/admin/activities", get(admin::activities))
        .route("/console/assets/{name}", get(assets::serve))
        .with_state(console)
}
