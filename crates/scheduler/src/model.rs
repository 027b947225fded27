//! The interface between the batching loop and a concrete model.

use std::path::Path;

pub type Token = i32;
/// A KV-cache sequence id: `0..EngineConfig::sequences`.
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
pub enum ModelError {
    /// The KV cache has no free cell for a batch token.
    #[error("no free KV cache cell for the batch")]
    NoKvSpace,
    #[error("{0}")]
    Other(String),
}

impl ModelError {
    pub fn other(message: impl Into<String>) -> Self {
        ModelError::Other(message.into())
    }
}

/// Sequence operations on a KV cache whose cells may belong to several sequences at once
/// (llama.cpp's unified KV cache): what prefix reuse is built from.
pub trait KvCells {
    /// Drops the cells of `seq` at positions `>= from` (a cell no sequence holds is free).
    fn remove(&mut self, seq: SeqId, from: usize);
    /// Makes `src`'s cells at positions `< len` cells of `dst` too (`dst` holds none): no
    /// data moves. False when that cannot give `dst` a usable prefix (then the caller
    /// computes it).
    fn copy(&mut self, src: SeqId, dst: SeqId, len: usize) -> bool;
    /// Empties the cache.
    fn clear(&mut self);
}

/// Log-probabilities at one place of the last decode, from the model's own distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct Logprobs {
    /// Of the token that was chosen (or that came next in the prompt).
    pub chosen: f32,
    /// The likeliest tokens, likeliest first.
    pub top: Vec<(Token, f32)>,
}

/// What the engine needs from a model. Not `Send`: a model lives and dies on the engine
/// thread (llama.cpp contexts are not thread-safe).
pub trait Model: KvCells + KvSnapshots {
    /// Per-request sampling state (penalty history, grammar, RNG).
    type Sampler;

    /// How a request picks its tokens, as the caller built it before the request reached
    /// the engine thread (where anything slow, such as compiling a grammar, must not run).
    type SamplerSpec: Send + 'static;

    /// Most tokens one [`Model::decode`] call accepts.
    fn batch_capacity(&self) -> usize;

    /// KV cells in the context: tokens all sequences may hold together.
    fn kv_capacity(&self) -> usize;

    fn new_sampler(&self, spec: Self::SamplerSpec) -> Result<Self::Sampler, ModelError>;

    /// Runs the model over a batch, appending each entry to its sequence's KV cache.
    fn decode(&mut self, batch: &[BatchEntry]) -> Result<(), ModelError>;

    /// Samples a token from the logits of batch entry `index` of the last decode, and
    /// records it in the sampler's history.
    fn sample(&mut self, sampler: &mut Self::Sampler, index: usize) -> Token;

    /// The log-probability of `token` at batch entry `index` of the last decode, and the
    /// `top` likeliest tokens there (the entry must have had its logits computed).
    fn logprobs(&self, index: usize, token: Token, top: usize) -> Logprobs;

    fn is_end_of_generation(&self, token: Token) -> bool;

    /// The text bytes of a token as generated output (special tokens render empty).
    fn token_bytes(&self, token: Token) -> Vec<u8>;

    /// The token as a log-probability entry names it (special tokens by their text).
    fn token_label(&self, token: Token) -> Vec<u8> {
        self.token_bytes(token)
    }
}

/// Saving and restoring one sequence's KV outside the context.
pub trait KvSnapshots: KvCells {
    /// A sequence's KV in host memory.
    type Snapshot;
    /// Copies out everything `seq` holds.
    fn snapshot(&mut self, seq: SeqId) -> Option<Self::Snapshot>;
    fn snapshot_bytes(snapshot: &Self::Snapshot) -> u64;
    /// Puts a snapshot into `seq` (which holds nothing). False on failure.
    fn restore(&mut self, snapshot: &Self::Snapshot, seq: SeqId) -> bool;
    /// Writes what `seq` holds (`tokens`) to `path`; returns the file's size.
    fn save_file(&mut self, seq: SeqId, tokens: &[Token], path: &Path) -> Option<u64>;
    /// Loads a file written by [`KvSnapshots::save_file`] into `seq` (which holds
    /// nothing); true when it held exactly `tokens`.
    fn load_file(&mut self, path: &Path, seq: SeqId, tokens: &[Token]) -> bool;
}

/// Where a reused prefix's KV came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Still in the context (another sequence's cells).
    Kv,
    /// Restored from a snapshot in host memory.
    Ram,
    /// Restored from a snapshot on disk.
    Disk,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Kv, Tier::Ram, Tier::Disk];

    pub fn label(self) -> &'static str {
        match self {
            Tier::Kv => "kv",
            Tier::Ram => "ram",
            Tier::Disk => "disk",
        }
    }
}
