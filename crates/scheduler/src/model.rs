//! The interface between the batching loop and a concrete model.

use tm_backend::SamplingParams;

pub type Token = i32;
/// A KV-cache sequence id; the engine uses one per slot (0..slots).
pub type SeqId = i32;

/// One token of a decode batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchEntry {
    pub token: Token,
    /// Position of the token in its sequence.
    pub pos: usize,
    pub seq: SeqId,
    /// Compute logits for this entry (the last prompt token, or a decode token).
    pub logits: bool,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct ModelError(pub String);

/// What the engine needs from a model. Not `Send`: a model lives and dies on the engine
/// thread (llama.cpp contexts are not thread-safe).
pub trait Model {
    /// Per-request sampling state (penalty history, grammar, RNG).
    type Sampler;

    /// Most tokens one [`Model::decode`] call accepts.
    fn batch_capacity(&self) -> usize;

    fn new_sampler(&self, params: &SamplingParams) -> Result<Self::Sampler, ModelError>;

    /// Runs the model over a batch, appending each entry to its sequence's KV cache.
    fn decode(&mut self, batch: &[BatchEntry]) -> Result<(), ModelError>;

    /// Samples a token from the logits of batch entry `index` of the last decode, and
    /// records it in the sampler's history.
    fn sample(&mut self, sampler: &mut Self::Sampler, index: usize) -> Token;

    fn is_end_of_generation(&self, token: Token) -> bool;

    /// The text bytes of a token as generated output (special tokens render empty).
    fn token_bytes(&self, token: Token) -> Vec<u8>;

    /// Drops the KV entries of `seq` at positions `>= from`. Returns false when that is not
    /// possible for this sequence; the engine then clears it and recomputes the prompt.
    fn truncate(&mut self, seq: SeqId, from: usize) -> bool;
}
