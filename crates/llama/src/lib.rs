//! The embedded engine: llama.cpp through `llama-cpp-2`. The only crate that touches FFI.
//!
//! Layout:
//! - [`load`]: loading a GGUF file once per process, with load progress.
//! - [`template`]: the chat template from the GGUF (`tokenizer.chat_template`), rendered
//!   with minijinja as vLLM and llama.cpp do.
//! - [`constraint`]: structured outputs and tool calls compiled into grammars (llguidance,
//!   or llama.cpp's GBNF for comparison).
//! - [`sampler`]: a llama.cpp sampler chain from [`tm_backend::SamplingParams`], with the
//!   request's constraint enforced around it.
//! - [`tools`]: declared tools and call history in the prompt (natively, or by the
//!   fallback convention); [`tool_parser`]: calls read back out of generated text.
//! - [`engine_model`]: [`tm_scheduler::Model`] over a llama.cpp context and batch.
//! - [`output`]: a request's choices joined into one generation, tool calls parsed.
//! - [`backend`]: [`EmbeddedBackend`], the [`tm_backend::Backend`] that serves many models,
//!   each on its own engine thread.

mod backend;
mod constraint;
mod engine_model;
mod load;
mod output;
mod sampler;
mod template;
mod tool_parser;
mod tools;

pub use backend::{EmbeddedBackend, ModelConfig};
pub use constraint::GrammarEngine;
pub use tm_scheduler::SpillConfig;
