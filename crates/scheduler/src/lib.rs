//! Continuous batching for one model on one engine thread.
//!
//! Layout:
//! - [`model`]: the [`Model`] trait the loop drives (llama.cpp in production, a fake in
//!   tests) and the batch it decodes.
//! - [`text`]: incremental UTF-8 decoding and stop-string matching across token boundaries.
//! - [`prefix`]: the radix tree of cached prompt prefixes over a shared pool of KV cells,
//!   with least-recently-used eviction.
//! - [`spill`]: evicted prefixes saved to host memory and disk, restored on a later hit.
//! - [`draft`]: drafts from a sequence's own context for speculative decoding.
//! - [`engine`]: the loop: admission with the longest cached prefix (copied into the new
//!   sequence, not recomputed) within the KV budget, one mixed decode batch per step
//!   (decode tokens of running sequences plus prompt chunks within a token budget, oldest
//!   first), sampling, cancellation of sequences whose receiver is gone.
//! - [`handle`]: the thread-safe front: bounded admission (slots + queue) and submission.
//! - `jobs`: what the handle sends the engine thread (requests, jobs, messages).
//! - [`metrics`]: what each engine reports on the Prometheus endpoint.

mod draft;
mod engine;
mod handle;
mod jobs;
mod metrics;
mod model;
mod prefix;
mod spill;
mod text;

pub use engine::EngineConfig;
pub use handle::{SchedulerHandle, Submitted};
pub use jobs::SeqRequest;
pub use metrics::EngineMetrics;
pub use model::{BatchEntry, KvCells, KvSnapshots, Logprobs, Model, ModelError, SeqId, Tier, Token};
pub use spill::SpillConfig;

#[cfg(test)]
mod tests;
