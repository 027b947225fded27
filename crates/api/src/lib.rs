//! Wire types, exactly as clients see them: the OpenAI-compatible Inference API, and
//! (in [`control`]) the Control Plane's grpc-gateway JSON.
//!
//! Layout:
//! - [`request`]: what clients send (chat, completions, responses, tokenize, detokenize) and
//!   the sampling fields shared by the generating routes.
//! - [`response`]: what the server answers, including SSE chunk bodies.
//! - [`error`]: the OpenAI error envelope.
//! - [`control`]: Control Plane messages (users, API keys, money, envelopes).
//!
//! This crate is pure data (serde, and tm-money's arithmetic): no I/O, no async, no HTTP types. Requests ignore
//! unknown fields, because raw clients forward arbitrary extras (docs/contracts.md §W1).

pub mod control;
mod error;
mod request;
mod response;

pub use error::{ErrorBody, ErrorDetail};
pub use request::*;
pub use response::*;
