//! Inference API over real HTTP against the real engine and model.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod cache;
mod choices;
mod concurrency;
mod errors;
mod generation;
mod logprobs;
mod shutdown;
mod speculative;
mod structured;
mod tokens;
mod tools;
mod upstream;
