//! The `tensormesh` server.
//!
//! Layout:
//! - [`app`]: the process, assembled once (`App::build`, `App::run`): main, the tests and
//!   the benchmarks start the same thing.
//! - [`config`]: what a process runs with, resolved; [`flags`]: the `serve` flags (each with
//!   a `TENSORMESH_*` env var) that `tensormesh serve` turns into one.
//! - [`models`]: the known default models, `model pull` (from PyPI packages) and `model list`.
//! - [`inference`]: the OpenAI-compatible router: auth, errors (the one OpenAI-shape
//!   mapping), the JSON extractor, one module per route group.
//! - [`control`]: the Control Plane router (login, users, API keys, admin) and its
//!   grpc-gateway error mapping.
//! - [`bearer`]: the bearer token of a request, for both listeners.
//! - `notices`: what the other replicas on the database tell this one (changes, lease
//!   requests).
//! - [`serve`]: the parts an app is built from, and the drain of a listener.
//! - [`model_logs`]: the in-memory log lines per served model (deployment logs).

pub mod app;
mod bearer;
pub mod config;
mod control;
pub mod downloads;
pub mod flags;
mod inference;
mod listener;
pub mod model_logs;
mod notices;
mod openapi;
pub mod serve;
