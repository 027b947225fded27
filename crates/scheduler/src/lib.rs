//! Continuous batching for one model on one engine thread.
//!
//! Layout:
//! - [`model`]: the [`Model`] trait the loop drives (llama.cpp in production, a fake in
//!   tests) and the batch it decodes.
//! - [`text`]: incremental UTF-8 decoding and stop-string matching across token boundaries.
//! - [`engine`]: the loop: admission into KV slots with per-slot prefix reuse, one mixed
//!   decode batch per step (decode tokens of running sequences plus prefill chunks of new
//!   ones), sampling, cancellation of sequences whose receiver is gone.
//! - [`handle`]: the thread-safe front: bounded admission (slots + queue) and submission.

pub mod engine;
pub mod handle;
pub mod model;
pub mod text;

pub use engine::EngineConfig;
pub use handle::{SchedulerHandle, SeqRequest};
pub use model::{BatchEntry, Model, ModelError, SeqId, Token};

#[cfg(test)]
mod tests;
