//! Inference API over real HTTP against the real engine and model.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod cache;
mod concurrency;
mod errors;
mod generation;
mod shutdown;
mod tokens;
mod upstream;
