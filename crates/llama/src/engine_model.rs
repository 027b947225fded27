//! [`Model`] over a llama.cpp context: the engine thread's view of a model.

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use std::num::NonZeroU32;
use tm_backend::SamplingParams;
use tm_scheduler::{BatchEntry, Model, ModelError, SeqId, Token};

use crate::load::llama_backend;

/// Tokens per decode call. Also llama.cpp's micro-batch: larger prompt chunks do not
/// speed up a CPU and would delay the decode tokens sharing the step.
pub const BATCH_TOKENS: usize = 512;

pub struct LlamaEngineModel {
    model: &'static LlamaModel,
    ctx: LlamaContext<'static>,
    batch: LlamaBatch<'static>,
    /// The vocabulary's end-of-generation tokens, for `ignore_eos`.
    end_of_generation: Vec<Token>,
}

impl LlamaEngineModel {
    /// Creates the context: one KV sequence per slot, each able to hold `ctx_per_slot`
    /// tokens. Must run on the engine thread.
    pub fn new(
        model: &'static LlamaModel,
        slots: usize,
        ctx_per_slot: usize,
        threads: i32,
    ) -> Result<Self, ModelError> {
        let backend = llama_backend().map_err(ModelError)?;
        let n_ctx = u32::try_from(ctx_per_slot * slots).map_err(|_| ModelError("context too large".into()))?;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(BATCH_TOKENS as u32)
            .with_n_ubatch(BATCH_TOKENS as u32)
            .with_n_seq_max(slots as u32)
            .with_n_threads(threads)
            .with_n_threads_batch(threads)
            // One KV pool for all slots, so that a sequence's prefix can be trimmed and
            // reused by the next request of that slot.
            .with_kv_unified(true)
            // Keep full-length KV for sliding-window layers (gemma 3): otherwise trimming a
            // sequence back to a shared prefix may need entries that were already evicted.
            .with_swa_full(true);
        let ctx = model
            .new_context(backend, params)
            .map_err(|e| ModelError(format!("cannot create llama.cpp context: {e}")))?;
        let vocab = model.vocab();
        let end_of_generation = (0..model.n_vocab()).filter(|&t| vocab.is_eog(LlamaToken(t))).collect();
        Ok(LlamaEngineModel { model, ctx, batch: LlamaBatch::new(BATCH_TOKENS, 1), end_of_generation })
    }
}

impl Model for LlamaEngineModel {
    type Sampler = LlamaSampler;

    fn batch_capacity(&self) -> usize {
        BATCH_TOKENS
    }

    fn new_sampler(&self, params: &SamplingParams) -> Result<LlamaSampler, ModelError> {
        crate::sampler::build(self.model, params, &self.end_of_generation).map_err(ModelError)
    }

    fn decode(&mut self, entries: &[BatchEntry]) -> Result<(), ModelError> {
        self.batch.clear();
        for e in entries {
            self.batch
                .add(LlamaToken(e.token), e.pos as i32, &[e.seq], e.logits)
                .map_err(|err| ModelError(format!("batch: {err}")))?;
        }
        self.ctx.decode(&mut self.batch).map_err(|e| ModelError(format!("llama_decode: {e}")))
    }

    fn sample(&mut self, sampler: &mut LlamaSampler, index: usize) -> Token {
        sampler.sample(&self.ctx, index as i32).0
    }

    fn is_end_of_generation(&self, token: Token) -> bool {
        self.model.vocab().is_eog(LlamaToken(token))
    }

    fn token_bytes(&self, token: Token) -> Vec<u8> {
        self.model.vocab().token_to_piece(LlamaToken(token), false, None)
    }

    fn truncate(&mut self, seq: SeqId, from: usize) -> bool {
        if from == 0 {
            return matches!(self.ctx.clear_kv_cache_seq(Some(seq as u32), None, None), Ok(true));
        }
        // A sequence whose first positions were evicted cannot be resumed from a prefix.
        if self.ctx.kv_cache_seq_pos_min(seq) > 0 {
            return false;
        }
        self.ctx.kv_cache_seq_rm(seq, Some(from as u32), None).is_ok()
    }
}
