//! [`Model`] over a llama.cpp context: the engine thread's view of a model.

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::{DecodeError, LlamaStateSeqFlags, SeqState};
use std::num::NonZeroU32;
use std::path::Path;
use tm_scheduler::{BatchEntry, KvCells, KvSnapshots, Logprobs, Model, ModelError, SeqId, Token};

use crate::load::llama_backend;
use crate::sampler::{Sampler, SamplerSpec};

/// Tokens per decode call. Also llama.cpp's micro-batch: larger prompt chunks do not
/// speed up a CPU and would delay the decode tokens sharing the step.
pub const BATCH_TOKENS: usize = 512;

/// The context's shape.
#[derive(Debug, Clone, Copy)]
pub struct ContextShape {
    /// KV cells shared by all sequences.
    pub kv_cells: usize,
    /// Sequence ids (running requests and cached prefixes).
    pub sequences: usize,
    pub threads: i32,
}

pub struct LlamaEngineModel {
    model: &'static LlamaModel,
    ctx: LlamaContext<'static>,
    batch: LlamaBatch<'static>,
    /// The vocabulary's end-of-generation tokens, for `ignore_eos`.
    end_of_generation: Vec<Token>,
    kv_cells: usize,
}

impl LlamaEngineModel {
    /// Creates the context. Must run on the engine thread.
    pub fn new(model: &'static LlamaModel, shape: ContextShape) -> Result<Self, ModelError> {
        let backend = llama_backend().map_err(ModelError::Other)?;
        let n_ctx = u32::try_from(shape.kv_cells).map_err(|_| ModelError::other("context too large"))?;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(BATCH_TOKENS as u32)
            .with_n_ubatch(BATCH_TOKENS as u32)
            .with_n_seq_max(shape.sequences as u32)
            .with_n_threads(shape.threads)
            .with_n_threads_batch(shape.threads)
            // One pool of KV cells for all sequences: a cell copied to several sequences is
            // stored once, which is what sharing a cached prefix is.
            .with_kv_unified(true)
            // Keep full-length KV for sliding-window layers (gemma 3): otherwise a prefix's
            // early cells may be overwritten while a longer sequence holds them.
            .with_swa_full(true);
        let ctx = model
            .new_context(backend, params)
            .map_err(|e| ModelError::other(format!("cannot create llama.cpp context: {e}")))?;
        let vocab = model.vocab();
        let end_of_generation = (0..model.n_vocab()).filter(|&t| vocab.is_eog(LlamaToken(t))).collect();
        let kv_cells = ctx.n_ctx() as usize;
        Ok(LlamaEngineModel { model, ctx, batch: LlamaBatch::new(BATCH_TOKENS, 1), end_of_generation, kv_cells })
    }
}

impl KvCells for LlamaEngineModel {
    fn remove(&mut self, seq: SeqId, from: usize) {
        let from = u32::try_from(from).ok();
        // Removing a whole sequence or its tail from the unified cache cannot fail.
        let _ = self.ctx.kv_cache_seq_rm(seq, from.filter(|&p| p > 0), None);
    }

    fn copy(&mut self, src: SeqId, dst: SeqId, len: usize) -> bool {
        let Ok(len) = u32::try_from(len) else { return false };
        if self.ctx.kv_cache_seq_cp(src, dst, Some(0), Some(len)).is_err() {
            return false;
        }
        // A sliding-window layer may have reused some of `src`'s early cells: then the
        // copy lacks positions the new tokens would attend to.
        if self.ctx.kv_cache_seq_pos_min(dst) != 0 {
            let _ = self.ctx.kv_cache_seq_rm(dst, None, None);
            return false;
        }
        true
    }

    fn clear(&mut self) {
        self.ctx.clear_kv_cache();
    }
}

/// Snapshots are llama.cpp's per-sequence state: in memory as an opaque [`SeqState`],
/// on disk as its sequence state file (which also records the tokens).
impl KvSnapshots for LlamaEngineModel {
    type Snapshot = SeqState;

    fn snapshot(&mut self, seq: SeqId) -> Option<SeqState> {
        self.ctx.state_seq_get(seq, LlamaStateSeqFlags::empty()).ok()
    }

    fn snapshot_bytes(snapshot: &SeqState) -> u64 {
        snapshot.byte_len() as u64
    }

    fn restore(&mut self, snapshot: &SeqState, seq: SeqId) -> bool {
        let restored = self.ctx.state_seq_set(snapshot, seq).is_ok();
        if !restored {
            let _ = self.ctx.kv_cache_seq_rm(seq, None, None);
        }
        restored
    }

    fn save_file(&mut self, seq: SeqId, tokens: &[Token], path: &Path) -> Option<u64> {
        let tokens: Vec<LlamaToken> = tokens.iter().map(|&t| LlamaToken(t)).collect();
        self.ctx.state_seq_save_file(path, seq, &tokens).ok().map(|n| n as u64)
    }

    fn load_file(&mut self, path: &Path, seq: SeqId, tokens: &[Token]) -> bool {
        match self.ctx.state_seq_load_file(path, seq, tokens.len()) {
            Ok((read, _)) if read.iter().map(|t| t.0).eq(tokens.iter().copied()) => true,
            _ => {
                let _ = self.ctx.kv_cache_seq_rm(seq, None, None);
                false
            }
        }
    }
}

impl Model for LlamaEngineModel {
    type Sampler = Sampler;
    type SamplerSpec = SamplerSpec;

    fn batch_capacity(&self) -> usize {
        BATCH_TOKENS
    }

    fn kv_capacity(&self) -> usize {
        self.kv_cells
    }

    fn new_sampler(&self, spec: SamplerSpec) -> Result<Sampler, ModelError> {
        Sampler::new(self.model, spec, &self.end_of_generation).map_err(ModelError::Other)
    }

    fn decode(&mut self, entries: &[BatchEntry]) -> Result<(), ModelError> {
        self.batch.clear();
        for e in entries {
            self.batch
                .add(LlamaToken(e.token), e.pos as i32, &[e.seq], e.logits)
                .map_err(|err| ModelError::other(format!("batch: {err}")))?;
        }
        self.ctx.decode(&mut self.batch).map_err(|e| match e {
            DecodeError::NoKvCacheSlot => ModelError::NoKvSpace,
            e => ModelError::other(format!("llama_decode: {e}")),
        })
    }

    fn sample(&mut self, sampler: &mut Sampler, index: usize) -> Token {
        sampler.sample(&self.ctx, index)
    }

    fn logprobs(&self, index: usize, token: Token, top: usize) -> Logprobs {
        log_softmax_at(self.ctx.get_logits_ith(index as i32), token, top)
    }

    fn is_end_of_generation(&self, token: Token) -> bool {
        self.model.vocab().is_eog(LlamaToken(token))
    }

    fn token_bytes(&self, token: Token) -> Vec<u8> {
        self.model.vocab().token_to_piece(LlamaToken(token), false, None)
    }

    fn token_label(&self, token: Token) -> Vec<u8> {
        self.model.vocab().token_to_piece(LlamaToken(token), true, None)
    }
}

/// `token`'s log-probability under the softmax of `logits`, and the `top` likeliest tokens.
fn log_softmax_at(logits: &[f32], token: Token, top: usize) -> Logprobs {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let log_z = f64::from(max) + sum.ln();
    let logprob = |l: f32| (f64::from(l) - log_z) as f32;
    // The top few by insertion into a short sorted list: one pass, no sort of the vocabulary.
    let mut best: Vec<(Token, f32)> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (i, &l) in logits.iter().enumerate() {
            if best.len() < top || best.last().is_some_and(|&(_, worst)| l > worst) {
                let at = best.partition_point(|&(_, b)| b >= l);
                best.insert(at, (i as Token, l));
                best.truncate(top);
            }
        }
    }
    let chosen = logits.get(token as usize).copied().map_or(f32::NEG_INFINITY, logprob);
    Logprobs { chosen, top: best.into_iter().map(|(t, l)| (t, logprob(l))).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_matches_the_definition() {
        let logits = [1.0f32, 3.0, 2.0, 3.0];
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        let lp = log_softmax_at(&logits, 2, 3);
        assert!((lp.chosen - (2.0f32.exp() / z).ln()).abs() < 1e-6);
        assert_eq!(lp.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 3, 2], "likeliest first, ties by id");
        assert!((lp.top[0].1 - (3.0f32.exp() / z).ln()).abs() < 1e-6);
        assert!(log_softmax_at(&logits, 0, 0).top.is_empty());
    }
}
