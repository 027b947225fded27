//! The engine seam. The HTTP layer speaks only to [`Backend`]: the embedded llama.cpp engine
//! implements it, `tm-upstream` forwards to fleets of OpenAI-compatible engines (vLLM /
//! SGLang / llama-server), and [`ByModel`] puts several behind one seam.
//!
//! - `request`: engine-neutral requests (prompt, sampling, output options, tools).
//! - `types`: engine-neutral events, receipts and model descriptions.
//! - [`validate`]: wire sampling fields -> [`SamplingParams`], with errors naming the field.
//! - [`error`]: [`BackendError`], mapped to HTTP in exactly one place by the server.

mod by_model;
mod error;
mod request;
mod types;
pub mod validate;

pub use by_model::ByModel;
pub use error::BackendError;
pub use request::*;
pub use types::*;

use async_trait::async_trait;

/// What an inference engine offers the gateway. Implementations own tokenization and
/// prompt rendering because only they know their tokenizer and chat template.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The models this backend serves, in a stable order.
    fn models(&self) -> Vec<ModelInfo>;

    /// Checks a generation request and sizes it (prompt rendered, tokenized, checked
    /// against the context) without starting it; [`Prepared::launch`] starts it. Text then
    /// arrives on [`Generation::events`]; dropping that receiver cancels the generation.
    async fn prepare(&self, request: GenerateRequest) -> Result<Prepared, BackendError>;

    /// Prepares and launches at once (callers that meter nothing).
    async fn generate(&self, request: GenerateRequest) -> Result<Generation, BackendError> {
        self.prepare(request).await?.launch().await
    }

    async fn tokenize(&self, request: TokenizeInput) -> Result<Tokenized, BackendError>;

    async fn detokenize(&self, model: &str, tokens: &[i64]) -> Result<String, BackendError>;

    /// True when every model can take work.
    fn healthy(&self) -> bool;

    /// True when `model` can take work.
    fn model_healthy(&self, _model: &str) -> bool {
        self.healthy()
    }

    /// Requests admitted and not yet finished, over all models.
    fn in_flight(&self) -> usize;

    /// Called once when the server stops, after the last request: a backend saves what
    /// it wants the next process to find (the embedded engine: its cached prefixes).
    async fn shutdown(&self) {}
}
