//! The `tensormesh` server.
//!
//! Layout:
//! - [`config`]: the `serve` flags (each with a `TENSORMESH_*` env var).
//! - [`models`]: the known default models, `model pull` (from PyPI packages) and `model list`.
//! - [`inference`]: the OpenAI-compatible router: auth, errors (the one OpenAI-shape
//!   mapping), the JSON extractor, one module per route group.
//! - [`control`]: the Control Plane router (login, users, API keys, admin) and its
//!   grpc-gateway error mapping.
//! - [`serve`]: opening the store, binding, graceful shutdown with a deadline.
//! - [`model_logs`]: the in-memory log lines per served model (deployment logs).

pub mod app;
pub mod bearer;
pub mod config;
pub mod control;
pub mod inference;
pub mod model_logs;
pub mod models;
pub mod serve;
