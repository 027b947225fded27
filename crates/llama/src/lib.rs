//! The embedded engine: llama.cpp through `llama-cpp-2`. The only crate that touches FFI.
//!
//! Layout:
//! - [`load`]: loading a GGUF file once per process, with load progress.
//! - [`template`]: the chat template from the GGUF (`tokenizer.chat_template`), rendered
//!   with minijinja as vLLM and llama.cpp do.
//! - [`sampler`]: a llama.cpp sampler chain from [`tm_backend::SamplingParams`].
//! - [`engine_model`]: [`tm_scheduler::Model`] over a llama.cpp context and batch.
//! - [`backend`]: [`EmbeddedBackend`], the [`tm_backend::Backend`] that serves many models,
//!   each on its own engine thread.

pub mod backend;
pub mod engine_model;
pub mod load;
pub mod sampler;
pub mod template;

pub use backend::{EmbeddedBackend, ModelConfig};
pub use tm_scheduler::SpillConfig;
