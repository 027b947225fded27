//! Wire types of the OpenAI-compatible Inference API, exactly as clients see them.
//!
//! Layout:
//! - [`request`]: what clients send (chat, completions, responses, tokenize, detokenize) and
//!   the sampling fields shared by the generating routes.
//! - [`response`]: what the server answers, including SSE chunk bodies.
//! - [`error`]: the OpenAI error envelope.
//!
//! This crate is pure data (serde only): no I/O, no async, no HTTP types. Requests ignore
//! unknown fields, because raw clients forward arbitrary extras (docs/contracts.md §W1).

pub mod error;
pub mod request;
pub mod response;

pub use error::{ErrorBody, ErrorDetail};
pub use request::*;
pub use response::*;
